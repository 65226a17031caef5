"""Planning and reading SageMaker training jobs: pure functions, no network.

Why boto3's ``create_training_job`` and not the SDK's ``ModelTrainer``: the request is
the product here. ``cloudtrain plan`` prints it exactly, botocore's own validator checks it
offline, and every field that matters for a bill (spot, stopping condition, checkpoint
URI, tags) is set by us and visible in one dict. ModelTrainer costs ~2 s and ~200 MB to
import, uploads the code its own way, and talks to an emulator only with three
workarounds (an endpoint variable, a session with a default bucket, role validation
turned off); the SDK is still used where it is the authority: the image URIs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudtrain import contract
from cloudtrain import secrets_launcher as launcher
from cloudtrain.backends.aws.distribution import ADDED as DISTRIBUTION_HYPERPARAMETERS
from cloudtrain.backends.aws.distribution import distribution_hyperparameters
from cloudtrain.backends.aws.input_modes import channel_input_mode
from cloudtrain.backends.aws.settings import aws_settings
from cloudtrain.config import HyperparameterValue, PipelineConfig, is_excluded, is_uri
from cloudtrain.errors import ConfigError
from cloudtrain.recovery import Outcome, capacity_label
from cloudtrain.results import AttemptSpec
from cloudtrain.secrets import job_references

CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
VOLUME_SIZE_GB = 30
CONTAINER_LOG_LEVEL = 20  # logging.INFO, as the SDK sets it
SOURCE_ARCHIVE = "sourcedir.tar.gz"
#: The secret references a SageMaker job resolves itself (with its execution role).
JOB_SECRET_KINDS = ("aws_secrets_manager",)

# FailureReason texts SageMaker uses when it could not get the instances.
_CAPACITY = re.compile(
    r"CapacityError|InsufficientCapacity|InsufficientInstanceCapacity|"
    r"Unable to provision requested ML compute capacity",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class S3Layout:
    """Where one pipeline keeps its things: s3://{bucket}/{prefix}/{name}/..."""

    bucket: str
    prefix: str
    name: str

    @classmethod
    def for_config(cls, config: PipelineConfig) -> S3Layout:
        aws = aws_settings(config)
        if not aws.bucket:
            raise ConfigError("aws.bucket", "is required for cloud aws")
        return cls(aws.bucket, aws.prefix.strip("/"), config.name)

    def key(self, *parts: str) -> str:
        return "/".join(part for part in (self.prefix, self.name, *parts) if part)

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    def data_key(self, channel: str) -> str:
        return self.key("data", channel)

    def manifest_key(self, channel: str) -> str:
        return self.key("manifests", f"{channel}.json")

    def code_key(self, digest: str) -> str:
        return self.key("code", digest[:16], SOURCE_ARCHIVE)

    def checkpoint_uri(self, run_id: str) -> str:
        """Stable across the attempts of one run: the next attempt resumes from it."""
        return self.uri("checkpoints", run_id) + "/"

    def output_uri(self) -> str:
        return self.uri("output")


def source_archive(
    source_dir: Path,
    extra: Mapping[str, bytes] | None = None,
    excluded: tuple[Path, ...] = (),
) -> bytes:
    """The source folder as a reproducible tar.gz: same files, same bytes, same digest;
    ``extra`` files (cloudtrain's secrets launcher) go at its root; ``excluded`` folders
    (``config.code_exclusions``: a work_dir inside source_dir) are left out."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped:
        # dereference: a link is archived as what it names, as the SageMaker SDK does
        with tarfile.open(fileobj=zipped, mode="w", dereference=True) as tar:
            for name, content in sorted((extra or {}).items()):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
            for path in sorted(source_dir.rglob("*")):
                relative = path.relative_to(source_dir)
                if any(part in {"__pycache__", ".git"} for part in relative.parts):
                    continue
                if is_excluded(path, excluded):
                    continue
                if not (path.is_file() or path.is_dir()):
                    continue  # sockets, FIFOs, devices, dangling links: as code_digest skips
                info = tar.gettarinfo(str(path), arcname=relative.as_posix())
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if path.is_file():
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
    return buffer.getvalue()


def archive_digest(archive: bytes) -> str:
    return hashlib.sha256(archive).hexdigest()


def hyperparameters(
    values: Mapping[str, HyperparameterValue], *, json_values: bool
) -> dict[str, str]:
    """Framework images get each value JSON-encoded (the training toolkit decodes it);
    built-in algorithms and BYOC containers read plain strings."""
    return {
        name: json.dumps(value) if json_values else contract.hyperparameter_value(value)
        for name, value in values.items()
    }


#: The request's hyperparameters cloudtrain adds, by the config field that makes each.
_ADDED_HYPERPARAMETERS = {
    "sagemaker_program": "code.entry_point",
    "sagemaker_submit_directory": "aws.prefix",
    "sagemaker_job_name": "name",
    "sagemaker_region": "aws.region",
    **dict.fromkeys(DISTRIBUTION_HYPERPARAMETERS, "compute.distribution"),
}


def request_field(config: PipelineConfig, path: str) -> str:
    """The config field that makes a value of the CreateTrainingJob request at ``path``
    (``HyperParameters.lr``, ``InputDataConfig[0].DataSource...``): where a user fixes a
    value that is over SageMaker's limits."""
    head, _, rest = path.partition(".")
    top = head.split("[")[0]
    if top == "HyperParameters":
        if not rest:
            return "hyperparameters"
        return _ADDED_HYPERPARAMETERS.get(rest, f"hyperparameters.{rest}")
    if top == "InputDataConfig":
        if "[" not in head:
            return "data"
        channel = list(config.data)[int(head.split("[")[1].rstrip("]"))]
        return f"data.{channel}" if is_uri(config.data[channel]) else "aws.prefix"
    if path.startswith("AlgorithmSpecification.MetricDefinitions"):
        index = path.partition("[")[2].partition("]")[0]
        return f"metrics[{index}]" if index else "metrics"
    return {
        "TrainingJobName": "name",
        "Tags": "name",
        "RoleArn": "aws.role",
        "AlgorithmSpecification": "environment.image",
        "CheckpointConfig": "aws.prefix",
        "OutputDataConfig": "aws.prefix",
        "ResourceConfig": "compute.instance_type",
    }.get(top, f"aws ({path})")


def create_training_job_request(
    config: PipelineConfig,
    spec: AttemptSpec,
    *,
    image_kind: str,
    script_mode: bool,
    code_uri: str | None,
    output_uri: str,
) -> dict[str, Any]:
    """The exact CreateTrainingJob request for the attempt ``spec``.

    ``image_kind`` is framework, builtin or image (BYOC); ``script_mode`` says whether the
    image (``spec.environment.uri``) runs ``code.entry_point`` (framework and BYOC do).
    """
    job_name, attempt, spot = spec.job_name, spec.number, spec.spot
    aws = aws_settings(config)
    assert aws.role
    builtin = image_kind == "builtin"
    # Framework images JSON-decode every value, as the SDK's estimators send them; a BYOC
    # container may not, and the training toolkit falls back to the raw string anyway.
    hps = hyperparameters(config.hyperparameters, json_values=image_kind == "framework")
    if script_mode:
        assert code_uri is not None
        # With secrets the launcher runs first: it reads them from Secrets Manager with the
        # job's role, then runs the entry point in its own process (secrets_launcher.py).
        program = launcher.FILE_NAME if config.secrets else config.code.entry_point
        hps.update(
            sagemaker_program=json.dumps(program),
            sagemaker_submit_directory=json.dumps(code_uri),
            sagemaker_region=json.dumps(aws.region),
            sagemaker_container_log_level=json.dumps(CONTAINER_LOG_LEVEL),
            sagemaker_job_name=json.dumps(job_name),
        )
        # torchrun or MPI, launched by the container's training toolkit on every host
        hps.update(distribution_hyperparameters(config))
    algorithm: dict[str, Any] = {
        "TrainingImage": spec.environment.uri,
        "TrainingInputMode": "File",
    }
    if config.metrics and not builtin:  # built-in algorithms publish their own metrics
        algorithm["MetricDefinitions"] = [
            {"Name": name, "Regex": contract.metric_regex(name)} for name in config.metrics
        ]
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": config.compute.max_run}
    if spot:
        stopping["MaxWaitTimeInSeconds"] = config.compute.effective_max_wait
    request: dict[str, Any] = {
        "TrainingJobName": job_name,
        "RoleArn": aws.role,
        "AlgorithmSpecification": algorithm,
        "HyperParameters": hps,
        "InputDataConfig": [
            _channel(config, channel, uri) for channel, uri in spec.channels.items()
        ],
        "OutputDataConfig": {"S3OutputPath": output_uri},
        "ResourceConfig": {
            "InstanceType": config.compute.instance_type,
            "InstanceCount": config.compute.instance_count,
            "VolumeSizeInGB": VOLUME_SIZE_GB,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": spot,
        "CheckpointConfig": {"S3Uri": spec.checkpoint_uri, "LocalPath": CHECKPOINT_LOCAL_PATH},
        "Tags": [
            {"Key": "cloudtrain:pipeline", "Value": config.name},
            {"Key": "cloudtrain:run", "Value": spec.run_id},
            {"Key": "cloudtrain:attempt", "Value": str(attempt)},
            {"Key": "cloudtrain:capacity", "Value": capacity_label(spot)},
        ],
    }
    if not request["InputDataConfig"]:  # SageMaker takes no channels, but not an empty list
        del request["InputDataConfig"]
    if not builtin:  # the script contract's names that SageMaker does not set itself
        request["Environment"] = {
            "SM_CHECKPOINT_DIR": CHECKPOINT_LOCAL_PATH,
            "CLOUDTRAIN_ATTEMPT": str(attempt),
            "CLOUDTRAIN_SPOT": "true" if spot else "false",
        }
        if config.secrets:  # references only: DescribeTrainingJob shows the Environment
            request["Environment"] |= {
                launcher.REFS_VARIABLE: job_references(config.secrets, JOB_SECRET_KINDS),
                launcher.ENTRY_VARIABLE: config.code.entry_point,
                launcher.REGION_VARIABLE: aws.region,
            }
    return request


def _channel(config: PipelineConfig, channel: str, uri: str) -> dict[str, Any]:
    """One InputDataConfig entry; ``InputMode`` only when ``input_modes`` names the
    channel (else the job's TrainingInputMode, File, applies, as before)."""
    entry: dict[str, Any] = {
        "ChannelName": channel,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
    }
    mode = channel_input_mode(config, channel)
    if mode:
        entry["InputMode"] = mode
    return entry


def validate_request(request: Mapping[str, Any]) -> None:
    """botocore's own parameter validation for CreateTrainingJob, offline."""
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    from cloudtrain.backends.aws.limits import sagemaker_model

    shape = sagemaker_model().operation_model("CreateTrainingJob").input_shape
    try:
        validate_parameters(dict(request), shape)
    except ParamValidationError as exc:
        raise ConfigError("", f"the CreateTrainingJob request is invalid: {exc}") from exc


def classify(
    job: Mapping[str, Any], *, stopped_by_us: Callable[[], bool] = lambda: False
) -> tuple[Outcome | None, str]:
    """An ended job's outcome and reason from DescribeTrainingJob; (None, status) while it
    runs. ``stopped_by_us`` is asked (one ListTags) only about a job that was stopped: one
    stopped when its orchestrator was cancelled is resumed by the next attempt."""
    status = job.get("TrainingJobStatus", "")
    secondary = job.get("SecondaryStatus", "")
    reason = job.get("FailureReason", "")
    if status in ("InProgress", "Stopping"):
        return None, f"{status} ({secondary})" if secondary else status
    if status == "Completed":
        return Outcome.SUCCEEDED, "Completed"
    if status == "Failed":
        if _CAPACITY.search(reason):
            return Outcome.NO_CAPACITY, f"no capacity: {reason}"
        return Outcome.FAILED, reason or "Failed (no FailureReason given)"
    if status == "Stopped":
        if secondary == "MaxWaitTimeExceeded":
            return Outcome.NO_CAPACITY, (
                "spot capacity not found within compute.max_wait (MaxWaitTimeExceeded)"
            )
        if secondary == "MaxRuntimeExceeded":
            return Outcome.TIMED_OUT, "compute.max_run reached (MaxRuntimeExceeded)"
        if secondary == "Interrupted":
            return Outcome.INTERRUPTED, "spot capacity reclaimed (Interrupted)"
        if stopped_by_us():
            return Outcome.INTERRUPTED, (
                "stopped when its orchestrator was cancelled; the next attempt resumes "
                "from the checkpoints"
            )
        return Outcome.STOPPED, "stopped (StopTrainingJob)"
    return Outcome.FAILED, f"unknown status {status!r}"
