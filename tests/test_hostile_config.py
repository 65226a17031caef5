"""Hostile and careless configs: each is one short ConfigError naming the field or the
line, before anything is created (issue 9, items 1 to 5)."""

from __future__ import annotations

import math
import os
import tracemalloc
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import base_config

from cloudtrain import backends
from cloudtrain.cli import main
from cloudtrain.config import (
    ComputeConfig,
    RetryConfig,
    apply_override,
    check_parameter_size,
    load_config,
    validate_config,
)
from cloudtrain.errors import ConfigError

#: What "short" means for one problem line: a field, a sentence, a few dozen characters
#: of a quoted value.
SHORT = 300


def _write(tmp_path: Path, text: str | bytes | None = None, **sections: Any) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "train.py").write_text("print('ok')\n")
    path = tmp_path / "cloudtrain.yaml"
    if text is None:
        text = yaml.safe_dump(base_config(**sections), sort_keys=False)
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return path


def _refused(path: Path, overrides: tuple[str, ...] = ()) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path, list(overrides))
    for problem in caught.value.problems:  # one short line each
        assert "\n" not in str(problem) and len(str(problem)) < SHORT, str(problem)[:500]
    return caught.value


def _bomb(levels: int = 6, width: int = 10) -> str:
    """A flow-style alias bomb: width**levels values from a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines)


BASE = """\
name: unit
code: {source_dir: src, entry_point: train.py}
environment: {framework: sklearn}
"""


def _indented(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


# --- 1. YAML that costs more than it says --------------------------------------------


@pytest.mark.parametrize(
    ("where", "text", "field"),
    [
        ("hyperparameters", BASE + "hyperparameters:\n" + _indented(_bomb(), 2), "hyperparameters"),
        ("data", BASE + "data:\n" + _indented(_bomb(), 2), "data"),
        ("metrics", BASE + "metrics:\n  - " + _bomb().replace("\n", "\n    "), "metrics"),
        ("top level", BASE + _bomb(), "l"),
    ],
)
def test_an_alias_bomb_is_one_short_error_naming_the_field(
    tmp_path: Path, where: str, text: str, field: str
) -> None:
    path = _write(tmp_path, text)
    tracemalloc.start()
    try:
        error = _refused(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error.field.startswith(field), error
    assert "expands to more than" in error.message
    assert peak < 20 * 1024 * 1024  # the values were never constructed


def test_an_alias_bomb_in_a_set_value_names_the_override(tmp_path: Path) -> None:
    path = _write(tmp_path)
    bomb = "{" + _bomb().replace("\n", ", ") + "}"
    error = _refused(path, (f"hyperparameters.x={bomb}",))
    assert error.field.startswith("--set hyperparameters.x"), error
    with pytest.raises(ConfigError, match="expands to more than"):
        apply_override({}, f"data.train={bomb}")


@pytest.mark.parametrize(
    ("case", "text", "message"),
    [
        ("deep nesting", BASE + "hyperparameters: {x: " + "[" * 5000 + "]" * 5000 + "}", "deeper"),
        ("a cycle", BASE + "hyperparameters: {x: &a [*a]}", "deeper"),
        (
            "deep through aliases",
            BASE
            + "a: &a [[[[[[[[1]]]]]]]]\n"
            + "".join(
                f"{n}: &{n} [[[[[*{p}]]]]]\n" for p, n in zip("abcdef", "bcdefg", strict=True)
            ),
            "deeper",
        ),
        ("an int of 5,000 digits", BASE + "compute: {max_run: " + "9" * 5000 + "}", "line 4"),
        ("many aliases", BASE + "a: &a 1\nb: [" + ", ".join(["*a"] * 2000) + "]", "aliases"),
        ("a file over a megabyte", BASE + "# " + "x" * (1024 * 1024) + "\n", "bytes"),
    ],
)
def test_yaml_beyond_the_bounds_is_refused(
    tmp_path: Path, case: str, text: str, message: str
) -> None:
    assert message in str(_refused(_write(tmp_path, text)))


# --- 2. bytes that are not text, keys given twice -------------------------------------


def test_a_byte_that_is_not_utf8_names_its_line_even_in_a_comment(tmp_path: Path) -> None:
    text = BASE.encode() + b"# caf\xe9\nhyperparameters: {a: 1}\n"
    error = _refused(_write(tmp_path, text))
    offset = len(BASE.encode()) + 5
    assert f"byte 0xe9 on line 4 (offset {offset})" in error.message


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (BASE + 'hyperparameters: {greeting: "a\\0b"}', "hyperparameters.greeting"),
        (BASE + 'hyperparameters: {greeting: "bell\\a"}', "hyperparameters.greeting"),
        (BASE + 'data: {train: "data\\0"}', "data.train"),
        (BASE + 'data: {train: "\\ud800"}', "data.train"),
        (BASE + 'metrics: ["acc\\0"]', "metrics[0]"),
        (BASE + 'work_dir: "out\\0"', "work_dir"),
        (BASE + 'aws: {prefix: "p\\x1b[31m"}', "aws.prefix"),
    ],
)
def test_a_control_character_is_refused_naming_the_field(
    tmp_path: Path, text: str, field: str
) -> None:
    error = _refused(_write(tmp_path, text))
    assert error.field == field, error
    assert "control character" in error.message


def test_a_raw_nul_byte_in_the_file_names_its_line(tmp_path: Path) -> None:
    error = _refused(_write(tmp_path, BASE.encode() + b"hyperparameters: {a: x\x00y}\n"))
    assert "line 4" in error.message


def test_a_nul_in_a_hyperparameter_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, BASE + 'hyperparameters: {greeting: "a\\0b"}\nwork_dir: out\n')
    assert main(["run", str(path)]) == 2
    assert "hyperparameters.greeting: " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "field", "lines"),
    [
        (BASE + "compute: {spot: true}\ncompute: {spot: false}\n", "compute", "lines 4 and 5"),
        (
            BASE + "hyperparameters:\n  lr: 1\n  epochs: 2\n  lr: 3\n",
            "hyperparameters.lr",
            "lines 5 and 7",
        ),
        (BASE + "hyperparameters: {lr: 1, lr: 2}\n", "hyperparameters.lr", "lines 4 and 4"),
    ],
)
def test_a_key_given_twice_is_refused_naming_both_lines(
    tmp_path: Path, text: str, field: str, lines: str
) -> None:
    error = _refused(_write(tmp_path, text))
    assert error.field == field and lines in error.message, error


def test_merge_keys_may_still_override(tmp_path: Path) -> None:
    text = BASE + "base: &hp {lr: 1, epochs: 2}\n"
    path = _write(tmp_path, text.replace("base:", "hyperparameters:"))
    assert load_config(path).hyperparameters == {"lr": 1, "epochs": 2}
    text = BASE + "hyperparameters: {<<: {lr: 1, epochs: 2}, lr: 3}\n"
    assert load_config(_write(tmp_path, text)).hyperparameters == {"lr": 3, "epochs": 2}


# --- 3. values that become something else ---------------------------------------------


def _numeric_fields() -> list[tuple[str, bool, bool]]:
    """(dotted field, is a list, takes fractions) for every number of the config and of
    every registered cloud's section: a field added later is covered too."""
    models: dict[str, Any] = {"compute": ComputeConfig, "retry": RetryConfig}
    models.update(backends.section_models())
    found = []
    for prefix, model in models.items():
        for name, field in model.model_fields.items():
            annotation = field.annotation
            is_list = typing.get_origin(annotation) is list
            members = typing.get_args(annotation)[0] if is_list else annotation
            kinds = {getattr(a, "__origin__", a) for a in typing.get_args(members) or (members,)}
            kinds = {typing.get_args(k)[0] if typing.get_origin(k) else k for k in kinds}
            if kinds & {int, float}:
                found.append((f"{prefix}.{name}", is_list, float in kinds))
    return found


NUMERIC_FIELDS = _numeric_fields()


def test_the_numeric_fields_are_found() -> None:
    names = {name for name, _, _ in NUMERIC_FIELDS}
    assert {"compute.max_run", "retry.max_attempts", "local.spot_interruptions"} <= names
    assert {"azure.idle_time_before_scale_down", "local.grace_period"} <= names


def _with(field: str, value: Any, is_list: bool) -> dict[str, Any]:
    section, name = field.split(".")
    extra: dict[str, Any] = {"compute": {"spot": True}} if section == "local" else {}
    return base_config(**{**extra, section: {name: [value] if is_list else value}})


@pytest.mark.parametrize(("field", "is_list", "fractions"), NUMERIC_FIELDS)
def test_a_boolean_is_never_a_number(
    write_config: Any, field: str, is_list: bool, fractions: bool
) -> None:
    path = write_config()
    with pytest.raises(ConfigError) as caught:
        validate_config(_with(field, True, is_list), base_dir=path.parent)
    assert any(p.field.startswith(field) for p in caught.value.problems), caught.value


@pytest.mark.parametrize(("field", "is_list", "fractions"), NUMERIC_FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nan_and_infinity_are_never_a_number(
    write_config: Any, field: str, is_list: bool, fractions: bool, value: float
) -> None:
    path = write_config()
    with pytest.raises(ConfigError) as caught:
        validate_config(_with(field, value, is_list), base_dir=path.parent)
    assert any(p.field.startswith(field) for p in caught.value.problems), caught.value


@pytest.mark.parametrize(("field", "is_list", "fractions"), NUMERIC_FIELDS)
def test_a_number_past_what_the_clouds_take_is_refused(
    write_config: Any, field: str, is_list: bool, fractions: bool
) -> None:
    """Every count and time has an upper bound (int32 at most: what the clouds' APIs
    carry), so 10**30 is one line naming the field, not an SDK's OverflowError."""
    path = write_config()
    with pytest.raises(ConfigError) as caught:
        validate_config(_with(field, 10**30, is_list), base_dir=path.parent)
    problems = [p for p in caught.value.problems if p.field.startswith(field)]
    assert problems and all(len(str(p)) < SHORT for p in problems), caught.value


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("compute.max_wait", 28 * 24 * 3600 + 1),  # SageMaker: at most 28 days
        ("azure.idle_time_before_scale_down", 2**31),
        ("azure.max_instances", 2**31),
        # A field's own bound beside the int32 one (pydantic kept only the last ``le``).
        ("compute.instance_count", 101),
        ("retry.max_attempts", 101),
        ("retry.reclaims_per_cloud", 101),
    ],
)
def test_a_number_past_the_limit_exits_2_in_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: int
) -> None:
    azure = {"subscription_id": "s", "resource_group": "g", "workspace": "w", "compute": "cpu"}
    path = _write(tmp_path, azure=azure, compute={"spot": True})
    assert main(["plan", str(path), "--cloud", "azure", "--set", f"{key}={value}"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(f"cloudtrain: invalid config: {key}: ")


def test_the_yaml_forms_of_nan_and_true(tmp_path: Path) -> None:
    text = BASE + "compute: {spot: true, max_run: true}\nlocal: {spot_interruptions: [.nan]}\n"
    problems = {p.field for p in _refused(_write(tmp_path, text)).problems}
    assert problems == {"compute.max_run", "local.spot_interruptions[0]"}
    error = _refused(_write(tmp_path, BASE + "hyperparameters: {lr: .inf}\n"))
    assert str(error) == "hyperparameters.lr: must be a finite number (got inf)"


def test_numbers_still_read_as_numbers(tmp_path: Path) -> None:
    text = BASE + "compute: {spot: true, max_run: 60}\nlocal: {grace_period: 2, "
    text += "spot_interruptions: [1.5, 3, '^epoch=2']}\nhyperparameters: {a: true, b: 1.0e-3}\n"
    config = load_config(_write(tmp_path, text))
    assert config.compute.max_run == 60 and config.hyperparameters == {"a": True, "b": 0.001}


# --- short messages whatever the value -----------------------------------------------

HUGE = "x" * 1_000_000


@pytest.mark.parametrize(
    "sections",
    [
        {"name": HUGE},
        {HUGE: 1},
        {"compute": {HUGE: 1}},
        {"compute": {"max_run": HUGE}},
        {"environment": {"framework": HUGE}},
        {"hyperparameters": {HUGE: 1}},
        {"hyperparameters": {"x": [HUGE]}},
        {"metrics": [HUGE]},
        {"data": {HUGE: "a"}},
        {"retry": {"strategy": HUGE}},
        {"cloud": HUGE},
        {"aws": {"region": HUGE, "bucket": HUGE}},
        {"azure": {"compute_type": HUGE}},
        {"local": {"spot_interruptions": [{"a": HUGE}]}},
    ],
    ids=lambda sections: ".".join(k[:8] for k in sections),
)
def test_every_message_quotes_a_few_dozen_characters_at_most(
    write_config: Any, sections: dict[str, Any]
) -> None:
    path = write_config()
    with pytest.raises(ConfigError) as caught:
        validate_config(base_config(**sections), base_dir=path.parent)
    for problem in caught.value.problems:
        assert len(str(problem)) < SHORT, str(problem)[:500]


def test_a_bad_set_key_is_quoted_short(tmp_path: Path) -> None:
    error = _refused(_write(tmp_path), (f"{HUGE}=1",))
    assert len(str(error)) < SHORT


# --- 4. sizes the rest of the stack refuses -------------------------------------------


def test_a_config_over_prefects_parameter_limit_names_where_the_bulk_is(
    write_config: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config()
    raw = base_config(hyperparameters={f"p{i}": "v" * 2000 for i in range(300)})
    config = validate_config(raw, base_dir=path.parent)
    with pytest.raises(ConfigError, match="Prefect takes at most 524,288") as caught:
        check_parameter_size(config)
    assert caught.value.field == "hyperparameters"
    text = path.read_text() + "hyperparameters:\n"
    text += "".join(f"  p{i}: {'v' * 2000}\n" for i in range(300))
    path.write_text(text)
    assert main(["plan", str(path)]) == 2
    assert "hyperparameters: the config is" in capsys.readouterr().err


def test_prefects_parameter_limit_follows_its_setting(
    write_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = validate_config(base_config(), base_dir=write_config().parent)
    check_parameter_size(config)
    monkeypatch.setenv("PREFECT_SERVER_API_MAX_PARAMETER_SIZE", "300")
    with pytest.raises(ConfigError, match="at most 300"):
        check_parameter_size(config)
    monkeypatch.setenv("PREFECT_SERVER_API_MAX_PARAMETER_SIZE", "0")
    check_parameter_size(config)


# --- 5. paths that leave the project --------------------------------------------------


@pytest.mark.parametrize(
    "entry_point", ["../../../../etc/passwd", "/etc/passwd", "../outside.py", "link.py", " "]
)
def test_the_entry_point_must_live_inside_source_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], entry_point: str
) -> None:
    (tmp_path / "outside.py").write_text("print('outside')\n")
    path = _write(tmp_path, code={"source_dir": "src", "entry_point": entry_point})
    (tmp_path / "src" / "link.py").symlink_to(tmp_path / "outside.py")
    assert _refused(path).field == "code.entry_point"
    assert main(["plan", str(path), "--cloud", "local"]) == 2
    assert "code.entry_point: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("entry_point", "normal"),
    [
        ("pkg/../train.py", "train.py"),
        ("train.py/", "train.py"),
        ("./train.py", "train.py"),
        ("pkg/./run.py", "pkg/run.py"),
        ("pkg//run.py", "pkg/run.py"),
    ],
)
def test_the_entry_point_is_normalized_as_the_clouds_receive_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], entry_point: str, normal: str
) -> None:
    """SageMaker runs sagemaker_program as written: "train.py/" or "./train.py" there
    is not the file that ran locally."""
    code = {"source_dir": "src", "entry_point": entry_point}
    path = _write(tmp_path, code=code, aws=AWS, data={"train": "s3://my-bucket/train/"})
    (tmp_path / "src" / "pkg").mkdir()
    (tmp_path / "src" / "pkg" / "run.py").write_text("print('ok')\n")
    assert load_config(path).code.entry_point == normal
    assert main(["plan", str(path), "--cloud", "aws", "--json"]) == 0
    assert f'"sagemaker_program": "\\"{normal}\\""' in capsys.readouterr().out


def test_an_entry_point_through_a_link_and_dotdot_is_refused(tmp_path: Path) -> None:
    """``link/../train.py`` names a different file on disk than it reads; refuse it."""
    path = _write(tmp_path, code={"source_dir": "src", "entry_point": "link/../train.py"})
    (tmp_path / "src" / "deep" / "er").mkdir(parents=True)
    (tmp_path / "src" / "deep" / "train.py").write_text("print('other')\n")
    (tmp_path / "src" / "link").symlink_to(tmp_path / "src" / "deep" / "er")
    assert _refused(path).field == "code.entry_point"


@pytest.mark.parametrize("entry_point", ["pkg", "pkg/", "missing.py"])
def test_the_entry_point_names_a_regular_file(tmp_path: Path, entry_point: str) -> None:
    path = _write(tmp_path, code={"source_dir": "src", "entry_point": entry_point})
    (tmp_path / "src" / "pkg").mkdir()
    assert _refused(path).field == "code.entry_point"


@pytest.mark.parametrize("source_dir", ["/", "/proc/self"])
def test_source_dir_is_not_a_system_folder(tmp_path: Path, source_dir: str) -> None:
    path = _write(tmp_path, code={"source_dir": source_dir, "entry_point": "train.py"})
    assert _refused(path).field == "code.source_dir"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("work_dir", "/proc/self/cloudtrain"),
        ("work_dir", "/proc"),
        ("work_dir", "/sys/kernel/cloudtrain"),
        ("work_dir", "src/train.py/inside"),
        ("local.root", "/proc/self"),
        ("local.root", "src/train.py"),
    ],
)
def test_work_dir_in_a_place_that_cannot_hold_it_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: str
) -> None:
    path = _write(tmp_path)
    assert main(["run", str(path), "--set", f"{key}={value}"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" not in line]
    assert lines == [lines[0]] and lines[0].startswith(f"cloudtrain: invalid config: {key}: ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_work_dir_where_we_cannot_write(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    path = _write(tmp_path, work_dir="locked/state")
    assert "cannot write in" in str(_refused(path))


@pytest.mark.parametrize("location", ["/dev/zero", "/proc/self/status", "/sys/kernel"])
def test_a_data_path_that_is_no_file_or_folder_of_ours(tmp_path: Path, location: str) -> None:
    if not Path(location).exists():
        pytest.skip(f"{location} is not on this machine")
    error = _refused(_write(tmp_path, data={"train": location}))
    assert error.field == "data.train" and "not a regular file or folder" in error.message


def test_a_config_built_in_python_is_held_to_the_same_rules(write_config: Any) -> None:
    base = write_config().parent
    raw = base_config(code={"source_dir": "src", "entry_point": "../cloudtrain.yaml"})
    with pytest.raises(ConfigError, match="code.entry_point: "):
        validate_config(raw, base_dir=base)


AWS = {"role": "arn:aws:iam::123456789012:role/R", "bucket": "my-bucket"}


@pytest.mark.parametrize(
    ("sections", "field", "limit"),
    [
        ({"hyperparameters": {f"p{i}": i for i in range(96)}}, "hyperparameters", "at most 100"),
        ({"hyperparameters": {"notes": "n" * 2600}}, "hyperparameters.notes", "at most 2,500"),
        ({"metrics": [f"m{i}" for i in range(41)]}, "metrics", "at most 40"),
        ({"metrics": ["a" + ".-" * 127]}, "metrics[0]", "at most 500"),
        ({"aws": {"prefix": "p" * 1000}}, "aws.prefix", "at most 1,024"),
        (
            {"data": {f"c{i}": f"s3://b/{i}" for i in range(21)}},
            "data",
            "at most 20",
        ),
    ],
)
def test_sagemakers_limits_are_checked_before_anything_runs(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    sections: dict[str, Any],
    field: str,
    limit: str,
) -> None:
    """As SageMaker counts them: our sagemaker_* hyperparameters included (96 + 5 > 100)."""
    sections = {"data": {"train": "s3://my-bucket/train/"}, **sections}
    sections["aws"] = {**AWS, **sections.get("aws", {})}
    path = _write(tmp_path, cloud="aws", **sections)
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if f" {field}: " in line and limit in line]
    assert lines, err[:2000]


def test_a_request_within_sagemakers_limits_plans(tmp_path: Path) -> None:
    hyperparameters = {f"p{i}": "v" * 2400 for i in range(95)}
    data = {"train": "s3://my-bucket/train/"}
    path = _write(tmp_path, cloud="aws", aws=AWS, hyperparameters=hyperparameters, data=data)
    assert main(["plan", str(path), "--json"]) == 0


def test_hyperparameters_a_local_process_cannot_be_given_are_refused_before_the_run(
    write_config: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under Prefect's limit but over Linux's 128 KiB per string: E2BIG at process start."""
    path = write_config()
    text = path.read_text() + "hyperparameters:\n"
    text += "".join(f"  p{i}: {'v' * 2000}\n" for i in range(70))  # ~140 KB in SM_HPS
    path.write_text(text)
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "hyperparameters:" in err and "SM_HPS" in err
    assert "p69" not in err  # named by where it goes, not by dumping the values
    text = path.read_text().replace("v" * 2000, "v" * 1000)  # ~70 KB fits
    path.write_text(text)
    assert main(["plan", str(path)]) == 0


# --- names that end in a newline (Python's ``$`` matches before a final "\n") ---------

SECRET = {"env": "HOME"}


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"name": "unit\n"}, "name"),
        ({"hyperparameters": {"epochs\n": 1}}, "hyperparameters"),
        ({"data": {"train\n": "s3://my-bucket/train/"}}, "data"),
        ({"metrics": ["loss\n"]}, "metrics"),
        ({"secrets": {"FOO\n": SECRET}}, "secrets"),
        ({"secrets": {"FOO": {"env": "HOME\n"}}}, "secrets.FOO.env"),
        ({"secrets": {"FOO": {"prefect_secret": "block\n"}}}, "secrets.FOO.prefect_secret"),
        ({"secrets": {"FOO": {"aws_secrets_manager": "s\n"}}}, "secrets.FOO.aws_secrets_manager"),
        (
            {"secrets": {"FOO": {"azure_key_vault": {"vault": "vault\n", "name": "n"}}}},
            "secrets.FOO.azure_key_vault.vault",
        ),
        (
            {"secrets": {"FOO": {"azure_key_vault": {"vault": "vault", "name": "n\n"}}}},
            "secrets.FOO.azure_key_vault.name",
        ),
        ({"aws": {"bucket": "my-bucket\n"}}, "aws.bucket"),
        ({"aws": {"role": "arn:aws:iam::123456789012:role/R\n"}}, "aws.role"),
        ({"aws": {"region": "us-east-1\n"}}, "aws.region"),
    ],
    ids=lambda value: ".".join(value) if isinstance(value, dict) else value,
)
def test_a_name_ending_in_a_newline_is_refused(
    write_config: Any, sections: dict[str, Any], field: str
) -> None:
    path = write_config()
    with pytest.raises(ConfigError) as caught:
        validate_config(base_config(**sections), base_dir=path.parent)
    assert any(p.field.startswith(field) for p in caught.value.problems), caught.value
    for problem in caught.value.problems:
        assert "\n" not in str(problem), str(problem)


def test_no_pattern_in_cloudtrain_ends_with_a_dollar_sign() -> None:
    """The class, not the examples: a pattern anchored with ``$`` lets "name\\n" through;
    validation uses ``fullmatch`` (or ``\\Z``)."""
    import re

    import cloudtrain

    root = Path(cloudtrain.__file__).parent
    found = [
        f"{path.relative_to(root)}:{number}"
        for path in sorted(root.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"""\$["']\)?""", line) and re.search(r"re\.|PATTERN|compile", line)
    ]
    assert found == []


def test_a_name_ending_in_a_newline_exits_2_in_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path)
    assert main(["plan", str(path), "--set", 'name="unit\\n"']) == 2
    assert "name: " in capsys.readouterr().err


# --- YAML types a config cannot carry ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!binary AGFiYwA=", "!!binary"),
        ("!!set {a: null}", "!!set"),
        ("!!omap [a: 1]", "!!omap"),
        ("!!pairs [a: 1]", "!!pairs"),
    ],
)
def test_a_yaml_type_the_config_cannot_carry_is_refused_naming_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    """A NUL reached the script through !!binary: pydantic turned the bytes into text
    after the control-character check had looked only at strings."""
    path = _write(tmp_path, BASE + f"hyperparameters: {{x: {value}}}\nwork_dir: out\n")
    error = _refused(path)
    assert message in error.message and "line 4" in error.message, error
    assert main(["run", str(path)]) == 2
    assert not (tmp_path / "out").exists()


def test_a_date_is_read_as_the_text_written(tmp_path: Path) -> None:
    """YAML 1.1 reads 2024-01-02 as a date and 2024-01-02 10:00:00 as a timestamp; a
    config means the text (as YAML 1.2 does)."""
    text = BASE + "hyperparameters: {day: 2024-01-02, at: 2024-01-02 10:00:00}\n"
    config = load_config(_write(tmp_path, text))
    assert config.hyperparameters == {"day": "2024-01-02", "at": "2024-01-02 10:00:00"}


def test_bytes_in_a_config_built_in_python_are_refused(write_config: Any) -> None:
    raw = base_config(hyperparameters={"x": b"\x00abc"}, data={"train": b"data"})
    with pytest.raises(ConfigError) as caught:
        validate_config(raw, base_dir=write_config().parent)
    fields = {p.field for p in caught.value.problems}
    assert fields == {"hyperparameters.x", "data.train"}, caught.value


# --- paths the file system cannot take -------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("data.train", "d" * 300),
        ("data.train", "d/" * 3000),
        ("code.source_dir", "s" * 300),
        ("code.source_dir", "s/" * 3000),
        ("code.entry_point", "e" * 300),
        ("code.entry_point", "e/" * 3000),
        ("work_dir", "A/" * 3000),
        ("work_dir", "w" * 300),
    ],
    ids=lambda value: value[:12],
)
def test_a_path_too_long_for_the_file_system_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: str
) -> None:
    """ENAMETOOLONG (a name over 255 bytes, a path over PATH_MAX) is an OSError from
    any check that touches the path: one line naming the field, a short quote."""
    path = _write(tmp_path)
    assert _refused(path, (f"{key}={value}",)).field == key
    assert main(["plan", str(path), "--set", f"{key}={value}"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(f"cloudtrain: invalid config: {key}: ")
    assert len(lines[0]) < SHORT, lines[0][:500]


# --- work_dir inside code.source_dir (the default layout) ------------------------------


def test_work_dir_inside_source_dir_is_not_code(tmp_path: Path) -> None:
    """With source_dir ``.`` and work_dir ``.cloudtrain`` (the defaults), what a run
    writes there (logs, the data store, models) changed the code digest every run, so
    retraining was never skipped, and it shipped in the SageMaker source archive."""
    import io
    import tarfile

    from cloudtrain.backends.aws.training_job import source_archive
    from cloudtrain.changes import code_digest, fingerprint
    from cloudtrain.config import code_exclusions

    path = _write(tmp_path, code={"source_dir": ".", "entry_point": "src/train.py"})
    config = load_config(path)
    assert config.work_dir == tmp_path / ".cloudtrain"
    excluded = code_exclusions(config)
    before = fingerprint(config, {})
    archive_before = source_archive(tmp_path, None, excluded)
    (tmp_path / ".cloudtrain" / "logs").mkdir(parents=True)
    (tmp_path / ".cloudtrain" / "logs" / "run.log").write_text("a run's log\n")
    after = fingerprint(config, {})
    assert before is not None and after is not None
    assert before.parts["code"] == after.parts["code"]
    archive = source_archive(tmp_path, None, excluded)
    assert archive == archive_before
    names = tarfile.open(fileobj=io.BytesIO(archive)).getnames()
    assert "src/train.py" in names and not any(n.startswith(".cloudtrain") for n in names)
    (tmp_path / "src" / "train.py").write_text("print('changed')\n")  # code still counts
    assert code_digest(tmp_path, config.work_dir, excluded) != before.parts["code"]


def test_a_work_dir_outside_source_dir_excludes_nothing(tmp_path: Path) -> None:
    from cloudtrain.config import code_exclusions

    assert code_exclusions(load_config(_write(tmp_path))) == ()
