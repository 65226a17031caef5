"""``input_modes``: how each data channel is read, on every cloud.

The config's shape and its errors, the SageMaker request (botocore's validator), the Azure
ML job input (azure-ai-ml's serializer and the fake's REST round trip), the local backend
reading a channel in place, and proofs that a channel already in the cloud is never
downloaded to the orchestrator.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sagemaker_lifecycle import lifecycle
from test_aws_training import aws_config

from cloudtrain.config import PipelineConfig, load_config
from cloudtrain.errors import ConfigError, UnsupportedError

__all__ = ["aws_config", "lifecycle"]  # fixtures, imported for pytest

MODES = ["download", "fastfile", "mount", "pipe"]

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
AZURE = {
    "subscription_id": "00000000-0000-0000-0000-000000000000",
    "resource_group": "rg",
    "workspace": "ws",
    "compute": "cpu-cluster",
}


@pytest.fixture
def folder_config(tmp_path: Path) -> Callable[..., Path]:
    """A config with a folder channel (train) and a file channel (test), on any cloud."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print('acc=1')\n")
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "train" / "part-0.csv").write_text("x,y\n1,2\n")
    (tmp_path / "data" / "test.csv").write_text("x,y\n3,4\n")

    def write(**sections: Any) -> Path:
        raw: dict[str, Any] = {
            "name": "modes",
            "code": {"source_dir": "src", "entry_point": "train.py"},
            "data": {"train": "data/train", "test": "data/test.csv"},
            "environment": {"framework": "sklearn"},
            "compute": {"instance_type": "ml.m5.large", "max_run": 120},
            "retry": {"max_attempts": 1},
        }
        for key, value in sections.items():
            raw[key] = {**raw[key], **value} if key == "compute" else value
        path = tmp_path / "cloudtrain.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return write


# --- the config -------------------------------------------------------------------------


def test_a_mode_per_channel_and_none_by_default(folder_config: Callable[..., Path]) -> None:
    config = load_config(folder_config(input_modes={"train": "mount"}))
    assert config.input_modes == {"train": "mount"}
    assert config.input_mode("train") == "mount"
    assert config.input_mode("test") is None  # the cloud's own default
    assert load_config(folder_config()).input_modes == {}
    from cloudtrain.config import INPUT_MODES

    assert list(INPUT_MODES) == MODES


@pytest.mark.parametrize(
    ("modes", "message"),
    [
        (
            {"train": "stream"},
            "input_modes.train: Input should be 'download', 'fastfile', 'mount' or 'pipe'",
        ),
        ({"train": 3}, "input_modes.train: Input should be 'download'"),
        ({"train": None}, "input_modes.train: Input should be 'download'"),
        (["train"], "input_modes: Input should be a valid dictionary"),
        ("fastfile", "input_modes: Input should be a valid dictionary"),
        ({"valid": "mount"}, "input_modes.valid: names no channel of data (train, test)"),
    ],
)
def test_bad_input_modes_name_the_field(
    modes: Any, message: str, folder_config: Callable[..., Path]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(folder_config(input_modes=modes))
    assert message in str(caught.value)


def test_set_on_the_command_line(folder_config: Callable[..., Path]) -> None:
    config = load_config(folder_config(), ["input_modes.train=fastfile"])
    assert config.input_modes == {"train": "fastfile"}


def test_modes_round_trip_through_prefect_parameters(folder_config: Callable[..., Path]) -> None:
    """A flow run validates its config back from the JSON Prefect stored."""
    config = load_config(folder_config(input_modes={"train": "mount", "test": "download"}))
    stored = json.loads(json.dumps(config.model_dump(mode="json")))
    again = PipelineConfig.model_validate(stored)
    assert again == config
    assert again.input_modes == {"train": "mount", "test": "download"}


def test_the_ui_form_offers_the_modes() -> None:
    """Prefect draws the flow's parameters from this schema; the modes are its choices."""
    from prefect.utilities.callables import parameter_schema

    from flows.local_training import local_training

    schema = parameter_schema(local_training.fn).model_dump()
    config = schema["definitions"]["PipelineConfig"]["properties"]["input_modes"]
    assert config["additionalProperties"]["enum"] == MODES
    assert config["description"]


def test_modes_do_not_change_the_retrain_digest(folder_config: Callable[..., Path]) -> None:
    """How a job reads a channel is not what it reads: no retraining for a new mode, and
    an old config keeps its digest."""
    from cloudtrain.changes import config_digest

    plain = load_config(folder_config())
    mounted = load_config(folder_config(input_modes={"train": "mount"}))
    assert config_digest(plain) == config_digest(mounted)


# --- SageMaker ----------------------------------------------------------------------------


def aws_plan(
    folder_config: Callable[..., Path], environment: dict[str, Any], modes: dict[str, str]
) -> dict[str, Any]:
    from cloudtrain.backends.aws.backend import AwsBackend
    from cloudtrain.planning import plan

    path = folder_config(
        cloud="aws",
        data={"train": "s3://shared-bucket/datasets/train/", "test": "data/test.csv"},
        environment=environment,
        input_modes=modes,
        aws={"role": ROLE, "bucket": "my-bucket"},
    )
    config = load_config(path)
    backend = AwsBackend(config)
    backend.validate(config)
    return plan(backend, config)


def test_sagemaker_channels_carry_their_input_mode(folder_config: Callable[..., Path]) -> None:
    from cloudtrain.backends.aws.training_job import validate_request

    planned = aws_plan(
        folder_config, {"framework": "sklearn", "framework_version": "1.2"}, {"train": "fastfile"}
    )
    request = planned["attempts"][0]["request"]
    validate_request(request)  # botocore's own model of CreateTrainingJob
    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    assert channels["train"]["InputMode"] == "FastFile"
    assert "InputMode" not in channels["test"]  # the job's TrainingInputMode, as before
    assert request["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    source = channels["train"]["DataSource"]["S3DataSource"]
    assert source["S3DataDistributionType"] == "FullyReplicated"
    assert source["S3Uri"] == "s3://shared-bucket/datasets/train/"
    # a local channel with fastfile is uploaded, then streamed from its S3 prefix
    mounted = aws_plan(
        folder_config, {"framework": "sklearn", "framework_version": "1.2"}, {"test": "mount"}
    )
    request = mounted["attempts"][0]["request"]
    validate_request(request)
    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    assert channels["test"]["InputMode"] == "FastFile"
    assert mounted["uploads"]["test"]["to"] == "s3://my-bucket/cloudtrain/modes/data/test/"


@pytest.mark.parametrize(
    ("environment", "mode", "expected"),
    [
        ({"framework": "sklearn"}, "download", "File"),
        ({"framework": "sklearn"}, "mount", "FastFile"),
        ({"builtin": "kmeans"}, "pipe", "Pipe"),
        ({"builtin": "linear-learner"}, "pipe", "Pipe"),
        ({"builtin": "xgboost:1.2-1"}, "pipe", "Pipe"),
        ({"builtin": "forecasting-deepar"}, "fastfile", "FastFile"),
        ({"image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/train:1.0"}, "pipe", "Pipe"),
    ],
)
def test_modes_sagemaker_accepts(
    environment: dict[str, Any], mode: str, expected: str, folder_config: Callable[..., Path]
) -> None:
    from cloudtrain.backends.aws.training_job import validate_request

    request = aws_plan(folder_config, environment, {"train": mode})["attempts"][0]["request"]
    validate_request(request)
    assert request["InputDataConfig"][0]["InputMode"] == expected


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"framework": "sklearn"}, "input_modes.train: pipe streams the channel through a FIFO"),
        (
            {"builtin": "forecasting-deepar"},
            "input_modes.train: the built-in algorithm forecasting-deepar takes File input only",
        ),
        ({"builtin": "seq2seq"}, "input_modes.train: the built-in algorithm seq2seq"),
        ({"builtin": "xgboost:1.7-1"}, "input_modes.train: SageMaker documents Pipe for xgboost"),
    ],
)
def test_pipe_is_refused_where_nothing_reads_the_fifo(
    environment: dict[str, Any], message: str, folder_config: Callable[..., Path]
) -> None:
    with pytest.raises(UnsupportedError) as caught:
        aws_plan(folder_config, environment, {"train": "pipe"})
    assert message in str(caught.value)


def test_the_pipe_table_names_built_ins_the_sdk_knows() -> None:
    """A renamed or dropped algorithm in the SDK's image configs fails here, not a run."""
    from cloudtrain.backends.aws.images import builtin_algorithms
    from cloudtrain.backends.aws.input_modes import PIPE_ALGORITHMS

    assert PIPE_ALGORITHMS <= builtin_algorithms()
    assert {"forecasting-deepar", "ipinsights", "object2vec", "seq2seq"} <= (
        builtin_algorithms() - PIPE_ALGORITHMS
    )


def test_pipe_with_a_framework_exits_2_before_anything_is_created(
    folder_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from cloudtrain.cli import main

    path = folder_config(
        cloud="aws", input_modes={"train": "pipe"}, aws={"role": ROLE, "bucket": "my-bucket"}
    )
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "input_modes.train: pipe streams the channel through a FIFO" in err
    assert "Traceback" not in err


# --- Azure ML -------------------------------------------------------------------------------


def azure_job(config: PipelineConfig) -> Any:
    from cloudtrain.backends.azure import jobs
    from cloudtrain.results import AttemptSpec, ComputeTarget, ResolvedEnvironment

    spec = AttemptSpec(
        run_id="0123abcd",
        number=1,
        spot=False,
        job_name="modes-0123abcd-a1",
        checkpoint_uri=jobs.datastore_uri("workspaceblobstore", "cloudtrain/modes/checkpoints/x"),
        channels={"train": "azureml:modes-train:ab12", "test": "azureml:modes-test:cd34"},
        compute=ComputeTarget("serverless", "Standard_DS3_v2", 1),
        environment=ResolvedEnvironment(
            "curated",
            "azureml://registries/azureml/environments/AzureML-sklearn-0.24-ubuntu18.04-py37-cpu/versions/48",
            "curated",
        ),
    )
    return jobs.command_job(
        config,
        spec,
        compute=None,
        inputs={
            "train": ("uri_folder", "azureml:modes-train:ab12"),
            "test": ("uri_folder", "azureml:modes-test:cd34"),
        },
    )


def test_azure_inputs_carry_their_mode_in_the_rest_body(
    folder_config: Callable[..., Path],
) -> None:
    from cloudtrain.backends.azure import jobs

    config = load_config(
        folder_config(
            cloud="azure",
            compute={"instance_type": "Standard_DS3_v2"},
            azure=AZURE,
            input_modes={"train": "fastfile", "test": "download"},
        )
    )
    inputs = jobs.rest_body(azure_job(config))["properties"]["inputs"]
    assert inputs["train"]["mode"] == "ReadOnlyMount"
    assert inputs["test"]["mode"] == "Download"
    plain = load_config(
        folder_config(
            cloud="azure",
            compute={"instance_type": "Standard_DS3_v2"},
            azure=AZURE,
            input_modes={},
        )
    )
    assert "mode" not in jobs.rest_body(azure_job(plain))["properties"]["inputs"]["train"]


def test_azure_modes_survive_the_services_round_trip(folder_config: Callable[..., Path]) -> None:
    """The fake PUTs the SDK's REST body and reads the job back with the SDK's classes."""
    from azure_fake import FakeMLClient

    config = load_config(
        folder_config(
            cloud="azure",
            compute={"instance_type": "Standard_DS3_v2"},
            azure=AZURE,
            input_modes={"train": "mount", "test": "download"},
        )
    )
    fake = FakeMLClient()
    fake.data.create_or_update(_asset("modes-train", "ab12"))
    fake.data.create_or_update(_asset("modes-test", "cd34"))
    fake.jobs.create_or_update(azure_job(config))
    stored = fake.jobs.wire("modes-0123abcd-a1")["properties"]["inputs"]
    assert (stored["train"]["mode"], stored["test"]["mode"]) == ("ReadOnlyMount", "Download")
    job = fake.jobs.get("modes-0123abcd-a1")
    assert (job.inputs["train"].mode, job.inputs["test"].mode) == ("ro_mount", "download")


def _asset(name: str, version: str) -> Any:
    from azure.ai.ml.entities import Data

    return Data(
        name=name,
        version=version,
        type="uri_folder",
        path=f"azureml://datastores/workspaceblobstore/paths/cloudtrain/{name}/",
    )


def test_pipe_is_refused_on_azure(folder_config: Callable[..., Path]) -> None:
    from cloudtrain.backends.azure.backend import AzureBackend

    config = load_config(
        folder_config(
            cloud="azure",
            compute={"instance_type": "Standard_DS3_v2"},
            azure=AZURE,
            input_modes={"train": "pipe"},
        )
    )
    with pytest.raises(UnsupportedError) as caught:
        AzureBackend(config).validate(config)
    assert "input_modes.train: pipe is SageMaker's FIFO input" in str(caught.value)


# --- on this machine -----------------------------------------------------------------------

#: Reports where each channel is and what it holds; fails when a channel is missing.
SEES_ITS_CHANNELS = """\
import json, os, pathlib
seen = {}
for name in ("TRAIN", "TEST"):
    folder = pathlib.Path(os.environ["SM_CHANNEL_" + name])
    seen[name] = {"dir": str(folder), "files": sorted(p.name for p in folder.iterdir())}
    seen[name]["text"] = [p.read_text() for p in sorted(folder.iterdir())]
pathlib.Path(os.environ["SM_MODEL_DIR"], "seen.json").write_text(json.dumps(seen))
print("acc=1")
"""


def test_pipe_is_refused_locally(
    folder_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from cloudtrain.cli import main

    assert main(["run", str(folder_config(input_modes={"train": "pipe"}))]) == 2
    err = capsys.readouterr().err
    assert "input_modes.train: pipe is SageMaker's FIFO input (cloud aws)" in err
    assert "Traceback" not in err


@pytest.mark.prefect
def test_a_mounted_channel_is_read_where_it_is(
    prefect_server: str, folder_config: Callable[..., Path], tmp_path: Path
) -> None:
    """mount: SM_CHANNEL_TRAIN is the source folder, SM_CHANNEL_TEST a folder holding the
    one file; nothing of either is copied into the local store."""
    from flows.local_training import local_training

    (tmp_path / "src" / "train.py").write_text(SEES_ITS_CHANNELS)
    config = load_config(folder_config(input_modes={"train": "mount", "test": "fastfile"}))
    state = local_training(config=config, return_state=True)
    assert state.is_completed(), state
    summary = state.result()
    seen = json.loads((Path(summary["model"]["local_model_dir"]) / "seen.json").read_text())
    assert seen["TRAIN"]["dir"] == str(tmp_path / "data" / "train")
    assert seen["TRAIN"]["files"] == ["part-0.csv"]
    assert Path(seen["TEST"]["dir"]).parent.parent == config.work_dir / "mounts"
    assert seen["TEST"]["files"] == ["test.csv"] and seen["TEST"]["text"] == ["x,y\n3,4\n"]
    assert (Path(seen["TEST"]["dir"]) / "test.csv").resolve() == tmp_path / "data" / "test.csv"
    # nothing copied: no object and no channel folder in the store
    store = config.work_dir / "store" / "objects"
    assert not store.exists() or not any(p.is_file() for p in store.rglob("*"))
    channels = config.work_dir / "channels"
    assert not channels.exists() or not any(channels.iterdir())
    assert {name: data["copied_files"] for name, data in summary["data"].items()} == {
        "train": 0,
        "test": 0,
    }
    assert summary["data"]["train"]["uri"] == str(tmp_path / "data" / "train")


def test_a_mounted_channel_has_the_digest_of_its_copy(folder_config: Callable[..., Path]) -> None:
    """Switching a channel between download and mount does not retrain: same digest."""
    from cloudtrain.backends.local.backend import LocalBackend

    copied = load_config(folder_config())
    mounted = load_config(folder_config(input_modes={"train": "mount", "test": "mount"}))
    backend = LocalBackend.from_config(copied)
    for channel in ("train", "test"):
        source = Path(copied.data[channel])
        copy = backend.upload_channel(copied, channel, source, print)
        read_in_place = backend.upload_channel(mounted, channel, source, print)
        assert read_in_place.digest == copy.digest
        assert read_in_place.copied_files == 0 and read_in_place.unchanged


def test_the_local_plan_says_where_a_mounted_channel_is_read(
    folder_config: Callable[..., Path], tmp_path: Path
) -> None:
    from cloudtrain.backends.local.backend import LocalBackend
    from cloudtrain.planning import plan

    config = load_config(folder_config(input_modes={"train": "mount"}))
    planned = plan(LocalBackend.from_config(config), config)
    data = planned["data"]
    assert data["train"] == {
        "source": str(tmp_path / "data" / "train"),
        "mode": "mount",
        "reads": str(tmp_path / "data" / "train"),
    }
    assert "store" in data["test"]
    env = planned["attempts"][0]["request"]["environment_variables"]
    assert env["SM_CHANNEL_TRAIN"] == str(tmp_path / "data" / "train")


def test_the_report_names_a_channels_mode(folder_config: Callable[..., Path]) -> None:
    from cloudtrain.report import RunReport
    from cloudtrain.results import ChannelData

    config = load_config(folder_config(input_modes={"train": "mount"}))
    run = RunReport(config)
    run.channels = {
        name: ChannelData(name, f"/{name}", "ab" * 32, 1, 10) for name in ("train", "test")
    }
    rows = [line for line in run.markdown().splitlines() if line.startswith("| t")]
    assert rows[0].startswith("| train (mount) | 1 |")
    assert rows[1].startswith("| test | 1 |")  # no mode set: the row as before


# --- channels already in the cloud are never downloaded to the orchestrator ----------------


def _with_modes(path: Path, modes: dict[str, str]) -> Path:
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, "input_modes": modes}, sort_keys=False))
    return path


def test_an_s3_channel_is_never_downloaded_to_the_orchestrator(
    aws_config: Callable[..., Path], aws: Any, lifecycle: Any
) -> None:
    """The upload stage, the retrain fingerprint and a whole training on SageMaker (moto)
    send no GET or HEAD for an object under an s3:// channel's prefix."""
    import boto3
    from sagemaker_lifecycle import COMPLETED, IN_PROGRESS
    from test_aws_training import BUCKET, prepare, train

    from cloudtrain.changes import fingerprint
    from cloudtrain.data import upload_channels

    s3 = boto3.client("s3")
    for part in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"datasets/big/part-{part}.csv", Body=b"x,y\n1,2\n" * 100)
    path = _with_modes(
        aws_config(data={"train": f"s3://{BUCKET}/datasets/big/"}), {"train": "fastfile"}
    )
    aws.log.clear()
    config, backend, channels, _, _ = prepare(path)
    assert fingerprint(config, upload_channels(backend, config)) is None  # nothing hashed
    lifecycle.script("a1", IN_PROGRESS, COMPLETED)
    result, _ = train(path)
    assert [a.outcome.value for a in result.attempts] == ["succeeded"]  # type: ignore[union-attr]
    reads = [
        entry
        for entry in aws.log.entries
        if entry.method in ("GET", "HEAD") and entry.path.startswith(f"/{BUCKET}/datasets/")
    ]
    assert reads == []
    listed = [e for e in aws.log.s3("GET") if "prefix=datasets%2Fbig%2F" in e.query]
    assert listed, "the channel was checked to exist (a LIST), so the log does see it"
    job = aws.log.actions("CreateTrainingJob")[0].json()
    assert job["InputDataConfig"][0]["InputMode"] == "FastFile"
    assert job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == (
        f"s3://{BUCKET}/datasets/big/"
    )


class _RecordingContainer:
    """A blob container client that notes every blob it is asked to read."""

    def __init__(self, container: Any, reads: list[str]) -> None:
        self._container, self._reads = container, reads

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._container, name)
        if name not in ("download_blob", "get_blob_client", "list_blobs"):
            return attribute

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self._reads.append(f"{name} {args[0] if args else kwargs.get('name_starts_with')}")
            return attribute(*args, **kwargs)

        return recorded


def test_an_azureml_channel_is_never_downloaded_to_the_orchestrator(
    folder_config: Callable[..., Path], azurite: str, azurite_container: str
) -> None:
    """A datastore path channel (ro_mount) is handed to the job as it is: no blob of it is
    listed or read by the orchestrator, while the local channel is uploaded beside it."""
    from azure.storage.blob import ContainerClient
    from azure_fake import FakeMLClient
    from test_azure_training import Driver, train

    from cloudtrain.backends.azure.backend import AzureBackend
    from cloudtrain.backends.azure.clients import AzureClients
    from cloudtrain.backends.azure.settings import azure_settings

    container = ContainerClient.from_connection_string(azurite, azurite_container)
    for part in range(3):
        container.upload_blob(f"datasets/big/part-{part}.csv", b"x,y\n1,2\n" * 100)
    fake = FakeMLClient(
        datastore_account="devstoreaccount1",
        datastore_container=azurite_container,
        datastore_protocol="http",
    )
    reads: list[str] = []

    class Recording(AzureClients):
        def container_client(self, account_url: str, container: str) -> Any:
            return _RecordingContainer(super().container_client(account_url, container), reads)

    uri = "azureml://datastores/workspaceblobstore/paths/datasets/big/"
    config = load_config(
        folder_config(
            cloud="azure",
            data={"train": uri, "test": "data/test.csv"},
            compute={"instance_type": "Standard_DS3_v2"},
            environment={"framework": "sklearn", "framework_version": "1.5"},
            azure=AZURE,
            input_modes={"train": "mount"},
        )
    )
    clients = Recording(
        azure_settings(config), ml_client=fake, registry_client=fake, blob_connection_string=azurite
    )
    driver = Driver(fake)
    driver.script("a1", ("Running", None), ("Completed", None))
    _, result, _ = train(AzureBackend(config, clients=clients), config, driver)
    assert [a.outcome.value for a in result.attempts] == ["succeeded"]  # type: ignore[union-attr]
    assert reads, "the local channel went through the recorded container"
    assert [read for read in reads if "datasets/" in read] == []
    job = next(c.body for c in fake.calls if c.op == "jobs.create_or_update" and c.body)
    train_input = job["properties"]["inputs"]["train"]
    assert (train_input["uri"], train_input["mode"]) == (uri, "ReadOnlyMount")


@pytest.mark.parametrize(
    ("route", "channel", "message"),
    [
        (
            ["aws", "azure"],
            "s3://shared-bucket/datasets/train/",
            "data.train: s3://shared-bucket/datasets/train/: cloud azure reads azureml://",
        ),
        (
            ["azure", "aws"],
            "azureml://datastores/workspaceblobstore/paths/datasets/train/",
            "data.train: azureml://datastores/workspaceblobstore/paths/datasets/train/: "
            "cloud aws reads s3:// URIs",
        ),
    ],
)
def test_a_route_whose_later_cloud_cannot_read_a_channel_is_refused_up_front(
    route: list[str], channel: str, message: str, folder_config: Callable[..., Path]
) -> None:
    """Failing over would mean copying the channel through the orchestrator: refused
    before anything is created, with the rest of the route's problems."""
    from cloudtrain.backend import build_backend
    from cloudtrain.runnable import check_runnable

    config = load_config(
        folder_config(
            clouds=route,
            data={"train": channel},
            compute={"instance_type": {"aws": "ml.m5.large", "azure": "Standard_DS3_v2"}},
            retry={"max_attempts": 3},
            input_modes={"train": "fastfile"},
            aws={"role": ROLE, "bucket": "my-bucket"},
            azure=AZURE,
        )
    )
    with pytest.raises(ConfigError) as caught:
        check_runnable(config, build_backend(config))
    assert message in str(caught.value)


def test_pipe_on_a_route_is_refused_when_a_later_cloud_has_no_fifo(
    folder_config: Callable[..., Path],
) -> None:
    from cloudtrain.backend import build_backend
    from cloudtrain.runnable import check_runnable

    config = load_config(
        folder_config(
            clouds=["aws", "azure"],
            environment={"image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/train:1.0"},
            compute={"instance_type": {"aws": "ml.m5.large", "azure": "Standard_DS3_v2"}},
            retry={"max_attempts": 3},
            input_modes={"train": "pipe"},
            aws={"role": ROLE, "bucket": "my-bucket"},
            azure=AZURE,
        )
    )
    with pytest.raises(ConfigError) as caught:
        check_runnable(config, build_backend(config))
    assert "input_modes.train: pipe is SageMaker's FIFO input; Azure ML" in str(caught.value)
    assert config.on_cloud("aws").input_modes == {"train": "pipe"}  # fine on the aws leg


def test_the_azure_plan_shows_each_inputs_mode(folder_config: Callable[..., Path]) -> None:
    """``cloudtrain plan --cloud azure``: the attempts' REST bodies, offline."""
    from cloudtrain.backends.azure.backend import AzureBackend
    from cloudtrain.planning import plan

    config = load_config(
        folder_config(
            cloud="azure",
            data={"train": "azureml://datastores/workspaceblobstore/paths/big/", "test": "data"},
            compute={"instance_type": "Standard_DS3_v2"},
            azure=AZURE,
            input_modes={"train": "mount", "test": "download"},
        )
    )
    backend = AzureBackend(config)
    backend.validate(config)
    planned = plan(backend, config)
    inputs = planned["attempts"][0]["request"]["properties"]["inputs"]
    assert inputs["train"] == {
        "uri": "azureml://datastores/workspaceblobstore/paths/big/",
        "jobInputType": "uri_folder",
        "mode": "ReadOnlyMount",
    }
    assert inputs["test"]["mode"] == "Download"
    assert "train" not in planned["data"]  # used where it is: nothing uploaded


def test_a_mounted_file_channel_survives_concurrent_runs_of_one_pipeline(
    folder_config: Callable[..., Path],
) -> None:
    """A sweep's trials (one pipeline name) mount the same file channel at once: none
    fails (the folder was removed and made again per run: FileExistsError) and none
    pulls the folder from under another's running script."""
    from concurrent.futures import ThreadPoolExecutor

    from cloudtrain.backends.local.backend import LocalBackend

    config = load_config(folder_config(input_modes={"test": "mount"}))
    backend = LocalBackend(config.work_dir)
    first = backend.upload_channel(config, "test", Path(config.data["test"]), print)
    held = Path(first.uri) / "test.csv"
    assert held.read_text() == "x,y\n3,4\n"

    def mount(_: int) -> str:
        folder = backend.upload_channel(config, "test", Path(config.data["test"]), print).uri
        assert held.read_text() == "x,y\n3,4\n"  # the first run's script still reads it
        return folder

    with ThreadPoolExecutor(8) as pool:
        folders = set(pool.map(mount, range(64)))
    assert folders == {first.uri}
    assert [p.name for p in Path(first.uri).iterdir()] == ["test.csv"]
