"""Config validation: every bad config gets one line that names the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import base_config

from cloudtrain.config import PipelineConfig, apply_override, load_config
from cloudtrain.errors import ConfigError

BAD_CONFIGS: list[tuple[str, dict[str, Any], str]] = [
    ("name format", {"name": "Digits_SGD"}, "name: 'Digits_SGD' must be 2 to 40 lowercase"),
    ("name too long", {"name": "a" * 41}, "name: "),
    (
        "unknown top-level key",
        {"hyperparams": {}},
        "hyperparams: unknown key; did you mean 'hyperparameters'?",
    ),
    (
        "unknown nested key",
        {"compute": {"instnce_type": "x"}},
        "compute.instnce_type: unknown key; did you mean 'instance_type'?",
    ),
    (
        "max_wait below max_run",
        {"compute": {"max_run": 3600, "max_wait": 60}},
        "compute.max_wait: must be >= compute.max_run (3600)",
    ),
    (
        "instance_count zero",
        {"compute": {"instance_count": 0}},
        "compute.instance_count: Input should be greater than or equal to 1",
    ),
    (
        "max_attempts zero",
        {"retry": {"max_attempts": 0}},
        "retry.max_attempts: Input should be greater than or equal to 1",
    ),
    (
        "two environment kinds",
        {"environment": {"framework": "sklearn", "image": "x"}},
        "environment: set exactly one of framework, curated, image, builtin (got framework, image)",
    ),
    (
        "no environment kind",
        {"environment": {"framework": None}},
        "environment: set exactly one of framework, curated, image, builtin (got none)",
    ),
    (
        "unknown framework",
        {"environment": {"framework": "sklern"}},
        "environment.framework: unknown framework 'sklern'; valid: huggingface, pytorch, sklearn, tensorflow, xgboost (did you mean 'sklearn'?)",
    ),
    (
        "unquoted version",
        {"environment": {"framework": "sklearn", "framework_version": 1.2}},
        'environment.framework_version: quote the version ("1.2")',
    ),
    (
        "version without framework",
        {"environment": {"framework": None, "image": "x", "framework_version": "1.2"}},
        "environment.framework_version: needs environment.framework",
    ),
    (
        "missing entry point",
        {"code": {"source_dir": "src", "entry_point": "nope.py"}},
        "code.entry_point: ",
    ),
    (
        "missing source dir",
        {"code": {"source_dir": "nowhere", "entry_point": "train.py"}},
        "code.source_dir: ",
    ),
    ("missing data file", {"data": {"train": "data/missing.csv"}}, "data.train: "),
    (
        "bad channel name",
        {"data": {"train-set": "src"}},
        "data: channel 'train-set' must start with a letter",
    ),
    ("channels clash", {"data": {"train": "src", "TRAIN": "src"}}, "would share SM_CHANNEL_TRAIN"),
    ("unknown cloud", {"cloud": "gcp"}, "cloud: unknown cloud 'gcp'; valid: aws, azure, local"),
    (
        "unknown key in a cloud section",
        {"aws": {"regoin": "eu-west-1"}},
        "aws.regoin: unknown key; did you mean 'region'?",
    ),
    ("a section of no cloud", {"gcp": {"project": "p"}}, "gcp: unknown key"),
    (
        "unknown strategy",
        {"retry": {"strategy": "resume"}},
        "retry.strategy: unknown recovery strategy 'resume'; valid: checkpoint_resume, eager_on_demand",
    ),
    (
        "interruptions without spot",
        {"local": {"spot_interruptions": [1]}},
        "local.spot_interruptions: simulates spot reclaims, so it needs compute.spot: true",
    ),
    (
        "bad interruption regex",
        {"compute": {"spot": True}, "local": {"spot_interruptions": ["epoch=("]}},
        "local.spot_interruptions: [0] is not a regular expression",
    ),
    ("metric names repeat", {"metrics": ["acc", "acc"]}, "metrics: metric names repeat"),
    (
        "hyperparameter name",
        {"hyperparameters": {"learning rate": 1}},
        "hyperparameters: 'learning rate' is not a valid --argument name",
    ),
    ("missing name", {"name": None}, "name: "),
    ("work_dir of a list", {"work_dir": [1]}, "work_dir: Input is not a valid path"),
    ("work_dir of a number", {"work_dir": 3}, "work_dir: Input is not a valid path"),
    ("empty work_dir", {"work_dir": " "}, "work_dir: must name a folder"),
    ("work_dir a file", {"work_dir": "src/train.py"}, "train.py is a file, not a folder"),
    ("work_dir name too long", {"work_dir": "x" * 300}, "work_dir: a folder name in it is longer"),
    (
        "hyperparameter of a list",
        {"hyperparameters": {"epochs": [1]}},
        "hyperparameters.epochs: must be a string, a number or true/false (got [1])",
    ),
]


def _write(tmp_path: Path, sections: dict[str, Any]) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "train.py").write_text("print('ok')\n")
    raw = base_config(**sections)
    raw = {key: value for key, value in raw.items() if value is not None}
    path = tmp_path / "cloudtrain.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("case", "sections", "message"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_names_the_field(
    tmp_path: Path, case: str, sections: dict[str, Any], message: str
) -> None:
    path = _write(tmp_path, sections)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_good_config_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("a\n1\n")
    path = _write(tmp_path, {"data": {"train": "data/train.csv", "remote": "s3://bucket/key"}})
    config = load_config(path)
    assert config.code.source_dir == tmp_path / "src"
    assert config.data["train"] == str(tmp_path / "data" / "train.csv")
    assert config.data["remote"] == "s3://bucket/key"  # URIs are used as they are
    assert config.work_dir == tmp_path / ".cloudtrain"
    assert config.compute.effective_max_wait == config.compute.max_run


def test_defaults_are_safe(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, {}))
    assert config.cloud == "local"
    assert config.compute.spot is False and config.compute.instance_count == 1
    assert config.retry.max_attempts == 3 and config.retry.on_demand_fallback is True


def test_overrides_and_cloud_flag(tmp_path: Path) -> None:
    path = _write(tmp_path, {})
    config = load_config(
        path,
        [
            "compute.spot=true",
            "local.spot_interruptions=[2.5, 'epoch=3 ']",
            "hyperparameters.lr=0.1",
        ],
        cloud="local",
    )
    assert config.compute.spot is True
    assert config.local.spot_interruptions == [2.5, "epoch=3 "]
    assert config.hyperparameters == {"lr": 0.1}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("compute.spot", "--set: 'compute.spot' is not key.path=value"),
        ("name.first=x", "--set name.first: name is not a section"),
        ("compute.max_run=[", "--set compute.max_run: value is not valid YAML"),
    ],
)
def test_bad_overrides(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[")):
        apply_override({"name": "x"}, override)


def test_every_field_has_a_description() -> None:
    """Prefect renders the flow's parameters as a form from these descriptions."""
    from pydantic import BaseModel

    def walk(model: type[BaseModel]) -> None:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            for arg in getattr(field.annotation, "__args__", ()) or (field.annotation,):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk(arg)

    walk(PipelineConfig)
    from cloudtrain.backends import cloud_names, settings_model

    for cloud in cloud_names():  # each cloud's section is part of the same form
        model = settings_model(cloud)
        if model is not None:
            walk(model)


def test_every_problem_is_listed_at_once_one_line_each(tmp_path: Path) -> None:
    """A user fixes a config in one pass: every field's problem, not the first one."""
    path = _write(
        tmp_path,
        {
            "name": "Bad_Name",
            "compute": {"max_run": 3600, "max_wait": 60, "instnce_type": "x"},
            "retry": {"max_attempts": 0},
            "data": {"train": "data/missing.csv", "test": "data/gone/"},
            "aws": {"regoin": "eu-west-1"},
            "code": {"source_dir": "src", "entry_point": "nope.py"},
        },
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    fields = [problem.field for problem in caught.value.problems]
    assert sorted(fields) == sorted(
        [
            "name",
            "compute.max_wait",
            "compute.instnce_type",
            "retry.max_attempts",
            "data.train",
            "data.test",
            "aws.regoin",
            "code.entry_point",
        ]
    )
    lines = str(caught.value).splitlines()
    assert len(lines) == len(fields)
    assert "compute.max_wait: must be >= compute.max_run (3600)" in lines
    assert all(line.startswith(tuple(fields)) for line in lines)


def test_work_dir_is_resolved_against_the_config(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, {"work_dir": "state"}))
    assert config.work_dir == tmp_path / "state"


def test_local_root_still_works_and_says_it_is_now_work_dir(tmp_path: Path) -> None:
    path = _write(tmp_path, {"local": {"root": "old-place", "grace_period": 3}})
    with pytest.warns(FutureWarning, match="local.root is deprecated.*work_dir"):
        config = load_config(path)
    assert config.work_dir == tmp_path / "old-place"
    assert config.local.grace_period == 3


def test_local_root_and_work_dir_together_must_agree(tmp_path: Path) -> None:
    path = _write(tmp_path, {"local": {"root": "a"}, "work_dir": "b"})
    with pytest.warns(FutureWarning), pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.field == "local.root"


def test_sections_round_trip_through_prefect_parameters(tmp_path: Path) -> None:
    """A flow run validates its config from the JSON Prefect stored: sections survive."""
    config = load_config(
        _write(
            tmp_path,
            {
                "aws": {"bucket": "bucket-1"},
                "compute": {"spot": True},
                "local": {"spot_interruptions": [3]},
            },
        )
    )
    again = PipelineConfig.model_validate(config.model_dump(mode="json"))
    assert again == config
    assert again.section("aws", type(config.aws)) == config.aws
    assert again.aws.bucket == "bucket-1" and again.local.spot_interruptions == [3]


def test_the_json_schema_lists_every_registered_cloud_and_its_section() -> None:
    schema = PipelineConfig.model_json_schema()
    properties = schema["properties"]
    assert properties["cloud"]["enum"] == ["aws", "azure", "local"]
    assert {"aws", "azure", "local"} <= set(properties)
    assert schema["additionalProperties"] is False


def test_no_cloud_may_take_a_key_of_the_config_itself() -> None:
    from cloudtrain.backends import RESERVED_NAMES, register

    assert set(PipelineConfig.model_fields) == RESERVED_NAMES
    for name in ("code", "work_dir", "AWS", "my-cloud"):
        with pytest.raises(ValueError, match="must be lowercase letters and digits"):
            register(name, "x:Y")


def test_the_deprecated_local_root_does_not_hide_the_other_problems(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "name": "Bad_Name",
            "work_dir": "state",
            "local": {"root": "old-state"},
            "compute": {"max_run": 60, "max_wait": 30},
        },
    )
    with pytest.warns(FutureWarning), pytest.raises(ConfigError) as caught:
        load_config(path)
    assert {p.field for p in caught.value.problems} == {"local.root", "name", "compute.max_wait"}


def test_a_local_section_built_in_python_with_root_moves_it_to_work_dir(tmp_path: Path) -> None:
    from cloudtrain.backends.local.settings import LocalConfig

    raw = yaml.safe_load(_write(tmp_path, {}).read_text())
    raw["local"] = LocalConfig(root=tmp_path / "elsewhere", grace_period=3)
    with pytest.warns(FutureWarning, match="local.root is deprecated"):
        config = PipelineConfig.model_validate(raw, context={"base_dir": tmp_path})
    assert config.work_dir == tmp_path / "elsewhere"
    assert config.local.root is None and config.local.grace_period == 3


@pytest.mark.parametrize(
    ("override", "field"),
    [("compute.float=1", "compute.float"), ("aws.str=x", "aws.str"), ("data.int=3", "data.int")],
)
def test_a_key_named_like_a_type_is_reported_at_its_own_path(
    tmp_path: Path, override: str, field: str
) -> None:
    """Only a hyperparameter's value is a union whose members pydantic names int, str..."""
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, {}), [override])
    assert [p.field for p in caught.value.problems] == [field]


def test_simulated_reclaims_on_a_cloud_are_refused_for_what_they_are(tmp_path: Path) -> None:
    """Not 'needs compute.spot': on a cloud the simulation is refused outright."""
    from cloudtrain.backend import build_backend
    from cloudtrain.runnable import check_runnable

    role = "arn:aws:iam::123456789012:role/R"
    path = _write(
        tmp_path,
        {
            "cloud": "aws",
            "aws": {"role": role, "bucket": "my-bucket"},
            "local": {"spot_interruptions": [3]},
        },
    )
    config = load_config(path)  # compute.spot is false: no complaint about that here
    with pytest.raises(ConfigError) as caught:
        check_runnable(config, build_backend(config))
    assert str(caught.value) == (
        "local.spot_interruptions: simulates spot reclaims on the local backend only; "
        "cloud aws reclaims for real"
    )


def test_one_problem_per_field_when_one_check_would_answer_for_another(tmp_path: Path) -> None:
    from cloudtrain.backend import build_backend
    from cloudtrain.runnable import check_runnable

    path = _write(
        tmp_path,
        {
            "cloud": "aws",
            "aws": {"role": "arn:aws:iam::123456789012:role/R", "bucket": "bkt"},
            "compute": {"instance_type": "ml.t3.medium"},
            "environment": {"framework": "huggingface"},
        },
    )
    config = load_config(path)
    with pytest.raises(ConfigError) as caught:
        check_runnable(config, build_backend(config))
    assert [p.field for p in caught.value.problems] == ["compute.instance_type"]


def test_a_section_replaced_by_model_copy_is_validated_when_read(tmp_path: Path) -> None:
    from cloudtrain.backends.aws.settings import AwsConfig

    config = load_config(_write(tmp_path, {"aws": {"bucket": "bucket-1"}}))
    moved = config.model_copy(update={"aws": {"bucket": "bucket-2", "region": "eu-west-1"}})
    aws = moved.section("aws", AwsConfig)
    assert aws is not None and (aws.bucket, aws.region) == ("bucket-2", "eu-west-1")
    broken = config.model_copy(update={"aws": {"bucket": "Bad_Bucket"}})
    with pytest.raises(ConfigError) as caught:
        broken.section("aws", AwsConfig)
    assert caught.value.field == "aws.bucket"


def test_tracking_round_trips_through_prefect_parameters(tmp_path: Path) -> None:
    """The flow run validates its config from the JSON Prefect stored: tracking survives."""
    uri = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/team"
    config = load_config(
        _write(tmp_path, {"tracking": {"mlflow_uri": uri, "experiment": "e", "log_model": False}})
    )
    data = json.loads(json.dumps(config.model_dump(mode="json")))
    again = PipelineConfig.model_validate(data)
    assert again == config and again.tracking is not None
    assert (again.tracking.mlflow_uri, again.tracking.experiment) == (uri, "e")
    assert again.tracking.plugin == "sagemaker-mlflow"
    assert load_config(_write(tmp_path, {"tracking": {}})).tracking.enabled is True
    assert load_config(_write(tmp_path, {})).tracking is None


@pytest.mark.parametrize(
    ("tracking", "message"),
    [
        ({"mlflow_uri": "mlruns"}, "tracking.mlflow_uri: 'mlruns' is not a tracking URI"),
        ({"mlflow_uri": "file:///tmp/mlruns"}, "tracking.mlflow_uri: 'file:///tmp/mlruns' is not"),
        ({"mlflow_uri": "http://"}, "tracking.mlflow_uri: 'http://' names no host"),
        # urlsplit reads the port only when asked, and drops newlines and tabs silently:
        ({"mlflow_uri": "http://mlflow:99999"}, "tracking.mlflow_uri: 'http://mlflow:99999' has"),
        ({"mlflow_uri": "http://mlflow:abc"}, "tracking.mlflow_uri: 'http://mlflow:abc' has"),
        ({"mlflow_uri": "http://mlflow\n"}, "tracking.mlflow_uri: 'http://mlflow\\n' holds"),
        ({"mlflow_uri": "http://ml\tflow"}, "tracking.mlflow_uri: 'http://ml\\tflow' holds"),
        ({"experiment": ""}, "tracking.experiment:"),
        ({"uri": "http://x"}, "tracking.uri:"),
    ],
)
def test_bad_tracking_settings_name_the_field(
    tmp_path: Path, tracking: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, {"tracking": tracking}))
    assert message in str(caught.value)
