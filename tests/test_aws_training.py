"""SageMaker training against moto's server: spot attempts, resume, reattach, stop.

The job lifecycle is scripted per attempt (tests/sagemaker_lifecycle.py); the assertions
are on the requests moto received over HTTP.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto_server import MotoServer
from sagemaker_lifecycle import (
    COMPLETED,
    IN_PROGRESS,
    THROTTLE,
    Lifecycle,
    lifecycle,
    model_archive,
)

from cloudtrain.backends.aws.backend import AwsBackend
from cloudtrain.backoff import Backoff
from cloudtrain.config import load_config
from cloudtrain.data import upload_channels
from cloudtrain.errors import ConfigError, TrainingError
from cloudtrain.recovery import Outcome
from cloudtrain.results import AttemptSpec, TrainingResult
from cloudtrain.training import run_training

__all__ = ["lifecycle"]  # the fixture, imported for pytest

BUCKET = "cloudtrain-test-bucket"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
RUN_ID = "feedc0de00000000"
DONE: dict[str, Any] = {
    **COMPLETED,
    "metrics": {"val_accuracy": 0.97},
    "model": model_archive({"model.pkl": b"weights"}),
}


@pytest.fixture
def aws_config(tmp_path: Path, aws: MotoServer) -> Callable[..., Path]:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    create_role("SageMakerRole", "sagemaker.amazonaws.com")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print('val_accuracy=0.9')\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("x,y\n1,2\n")

    def write(**sections: Any) -> Path:
        config: dict[str, Any] = {
            "name": "unit",
            "cloud": "aws",
            "code": {"source_dir": "src", "entry_point": "train.py"},
            "hyperparameters": {"epochs": 3, "optimizer": "adam"},
            "data": {"train": "data/train.csv"},
            "metrics": ["val_accuracy"],
            "environment": {"framework": "sklearn", "framework_version": "1.2"},
            "compute": {
                "instance_type": "ml.m5.large",
                "spot": True,
                "max_run": 600,
                "max_wait": 1200,
            },
            "retry": {"max_attempts": 3, "on_demand_fallback": True},
            "aws": {"region": "us-east-1", "role": ROLE, "bucket": BUCKET, "prefix": "ct"},
        }
        for key, value in sections.items():
            config[key] = {**config[key], **value} if isinstance(value, dict) else value
        path = tmp_path / "cloudtrain.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write


def create_role(name: str, service: str) -> None:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
        ],
    }
    boto3.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))


def prepare(config_path: Path) -> tuple[Any, AwsBackend, dict[str, str], Any, Any]:
    """Stages 1 to 3 on moto, polling without waiting."""
    config = load_config(config_path)
    backend = AwsBackend.from_config(config)
    backend.validate(config)
    backend.poll = Backoff(0.0, 0.0, jitter=0.0)
    channels = {c: d.uri for c, d in upload_channels(backend, config).items()}
    compute = backend.ensure_compute(config)
    return config, backend, channels, compute, backend.resolve_environment(config, compute)


def train(
    config_path: Path, run_id: str = RUN_ID
) -> tuple[TrainingResult | TrainingError, list[str]]:
    config, backend, channels, compute, environment = prepare(config_path)
    lines: list[str] = []
    try:
        result = run_training(
            backend,
            config,
            run_id=run_id,
            channels=channels,
            compute=compute,
            environment=environment,
            log=lines.append,
        )
    except TrainingError as exc:
        return exc, lines
    return result, lines


def created(aws: MotoServer) -> list[dict[str, Any]]:
    return [entry.json() for entry in aws.log.actions("CreateTrainingJob")]


def test_spot_lost_twice_then_the_on_demand_fallback_completes(
    aws_config: Callable[..., Path], aws: MotoServer, lifecycle: Lifecycle
) -> None:
    lifecycle.script(
        "a1",
        IN_PROGRESS,
        IN_PROGRESS,
        {"status": "Stopped", "secondary": "MaxWaitTimeExceeded", "training": 300, "billable": 90},
    )
    lifecycle.script(
        "a2",
        IN_PROGRESS,
        {
            "status": "Failed",
            "reason": "CapacityError: Unable to provision requested ML compute capacity. Please retry using a different ML instance type.",
        },
    )
    lifecycle.script("a3", IN_PROGRESS, {**DONE, "training": 600, "billable": 600})
    result, lines = train(aws_config())
    assert isinstance(result, TrainingResult), result
    assert [a.outcome for a in result.attempts] == [
        Outcome.NO_CAPACITY,
        Outcome.NO_CAPACITY,
        Outcome.SUCCEEDED,
    ]
    assert "MaxWaitTimeExceeded" in result.attempts[0].reason
    assert "CapacityError" in result.attempts[1].reason

    requests = created(aws)
    assert [r["TrainingJobName"] for r in requests] == [
        "unit-feedc0de-a1",
        "unit-feedc0de-a2",
        "unit-feedc0de-a3",
    ]
    assert [r["EnableManagedSpotTraining"] for r in requests] == [True, True, False]
    assert [r["StoppingCondition"] for r in requests] == [
        {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200},
        {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200},
        {"MaxRuntimeInSeconds": 600},
    ]
    checkpoints = {r["CheckpointConfig"]["S3Uri"] for r in requests}
    assert checkpoints == {f"s3://{BUCKET}/ct/unit/checkpoints/{RUN_ID}/"}
    first = requests[0]
    assert first["AlgorithmSpecification"]["MetricDefinitions"] == [
        {
            "Name": "val_accuracy",
            "Regex": r"(?<![\w.-])val_accuracy=([-+]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)"
            r"(?:[eE][-+]?[0-9]+)?|[nN]a[nN]|[iI]nf(?:inity)?))(?=$|\s|[,;:)\]}|](?![0-9]))",
        }
    ]
    assert (
        "sagemaker-scikit-learn:1.2-1-cpu-py3" in first["AlgorithmSpecification"]["TrainingImage"]
    )
    hps = first["HyperParameters"]
    assert json.loads(hps["epochs"]) == 3 and json.loads(hps["optimizer"]) == "adam"
    assert json.loads(hps["sagemaker_program"]) == "train.py"
    assert json.loads(hps["sagemaker_submit_directory"]).startswith(f"s3://{BUCKET}/ct/unit/code/")
    assert (
        first["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
        == f"s3://{BUCKET}/ct/unit/data/train/"
    )
    assert first["Environment"]["SM_CHECKPOINT_DIR"] == "/opt/ml/checkpoints"
    tags = {t["Key"]: t["Value"] for t in requests[2]["Tags"]}
    assert tags == {
        "cloudtrain:pipeline": "unit",
        "cloudtrain:run": RUN_ID,
        "cloudtrain:attempt": "3",
        "cloudtrain:capacity": "on-demand",
    }
    assert any("console.aws.amazon.com/sagemaker" in line for line in lines)


def test_a_script_failure_is_not_retried(
    aws_config: Callable[..., Path], aws: MotoServer, lifecycle: Lifecycle
) -> None:
    lifecycle.script(
        "a1",
        IN_PROGRESS,
        {
            "status": "Failed",
            "reason": "AlgorithmError: ExecuteUserScriptError: ExitCode 1 KeyError: 'target'",
        },
    )
    error, _ = train(aws_config())
    assert isinstance(error, TrainingError)
    assert [a.outcome for a in error.result.attempts] == [Outcome.FAILED]
    assert "KeyError: 'target'" in str(error) and "not retried" in str(error)
    assert len(created(aws)) == 1


def test_a_job_stopped_by_a_person_is_not_a_success_and_not_retried(
    aws_config: Callable[..., Path], aws: MotoServer, lifecycle: Lifecycle
) -> None:
    lifecycle.script("a1", IN_PROGRESS, {"status": "Stopped", "secondary": "Stopped"})
    error, _ = train(aws_config())
    assert isinstance(error, TrainingError)
    assert [a.outcome for a in error.result.attempts] == [Outcome.STOPPED]
    assert len(created(aws)) == 1


def test_throttled_describes_do_not_fail_the_run(
    aws_config: Callable[..., Path],
    aws: MotoServer,
    lifecycle: Lifecycle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # botocore retries twice (its sleeps kept short), the control-plane policy calls
    # twice, then the poll loop takes over
    monkeypatch.setattr(
        "cloudtrain.backends.aws.clients.BOTOCORE_RETRIES", {"mode": "standard", "max_attempts": 2}
    )
    monkeypatch.setattr("cloudtrain.retrying.CONTROL_ATTEMPTS", 2)
    monkeypatch.setattr("cloudtrain.retrying.sleep_seconds", lambda seconds: None)
    lifecycle.script("a1", IN_PROGRESS, *[THROTTLE] * 12, DONE)
    result, lines = train(aws_config())
    assert isinstance(result, TrainingResult), result
    assert result.succeeded
    assert any("throttled" in line for line in lines)
    assert len(aws.log.actions("DescribeTrainingJob")) >= 13


def test_a_rerun_reattaches_instead_of_launching_again(
    aws_config: Callable[..., Path], aws: MotoServer, lifecycle: Lifecycle
) -> None:
    path = aws_config()
    config, backend, channels, compute, environment = prepare(path)
    # An earlier orchestrator for this flow run submitted attempt 1, then died hard.
    backend.submit_attempt(
        config,
        AttemptSpec(
            run_id=RUN_ID,
            number=1,
            spot=True,
            job_name="unit-feedc0de-a1",
            checkpoint_uri=backend.checkpoint_location(config, RUN_ID),
            channels=channels,
            compute=compute,
            environment=environment,
        ),
    )
    assert len(created(aws)) == 1
    aws.log.clear()
    lifecycle.script("a1", IN_PROGRESS, DONE)

    result, lines = train(path)  # the restarted orchestrator: same run, same job names
    assert isinstance(result, TrainingResult) and result.succeeded
    assert created(aws) == []
    assert any(line.startswith("reattached to unit-feedc0de-a1") for line in lines)


def test_cancelling_the_flow_stops_the_job(
    aws_config: Callable[..., Path], aws: MotoServer, lifecycle: Lifecycle
) -> None:
    lifecycle.script("a1", IN_PROGRESS)
    config, backend, channels, compute, environment = prepare(aws_config())

    class Cancelled(BaseException):
        """What Prefect raises inside the task when the flow is cancelled or times out."""

    def sleep(_: float) -> None:
        if len(aws.log.actions("DescribeTrainingJob")) >= 3:
            raise Cancelled

    backend.poll = Backoff(0.0, 0.0, jitter=0.0, sleep=sleep)
    with pytest.raises(Cancelled):
        run_training(
            backend,
            config,
            run_id=RUN_ID,
            channels=channels,
            compute=compute,
            environment=environment,
            log=lambda line: None,
        )
    assert lifecycle.stopped == ["unit-feedc0de-a1"]
    assert len(aws.log.actions("StopTrainingJob")) == 1


def test_a_missing_role_is_refused_before_any_job(
    aws_config: Callable[..., Path], aws: MotoServer
) -> None:
    config = load_config(aws_config(aws={"role": "arn:aws:iam::123456789012:role/Typo"}))
    backend = AwsBackend.from_config(config)
    with pytest.raises(
        ConfigError, match=r"^aws.role: arn:aws:iam::123456789012:role/Typo does not exist"
    ):
        backend.ensure_compute(config)
    assert created(aws) == []


def test_a_role_sagemaker_cannot_assume_is_refused(
    aws_config: Callable[..., Path], aws: MotoServer
) -> None:
    create_role("LambdaRole", "lambda.amazonaws.com")
    config = load_config(aws_config(aws={"role": "arn:aws:iam::123456789012:role/LambdaRole"}))
    with pytest.raises(ConfigError, match="does not trust sagemaker.amazonaws.com"):
        AwsBackend.from_config(config).ensure_compute(config)


def test_compute_names_the_caller_and_the_accelerator(
    aws_config: Callable[..., Path], aws: MotoServer
) -> None:
    config = load_config(aws_config(compute={"instance_type": "ml.g4dn.xlarge"}))
    compute = AwsBackend.from_config(config).ensure_compute(config)
    assert compute.details["accelerator"] == "gpu"
    assert compute.details["caller"] == "arn:aws:sts::123456789012:user/moto"


def test_a_rerun_after_a_cancel_resumes_with_the_next_attempt(
    aws_config: Callable[..., Path], aws: MotoServer, lifecycle: Lifecycle
) -> None:
    """Cancelled and retried (same flow run): a1 was stopped by us, so a2 resumes it."""
    lifecycle.script("a1", IN_PROGRESS)
    path = aws_config()
    config, backend, channels, compute, environment = prepare(path)

    def cancel(_: float) -> None:
        raise KeyboardInterrupt

    backend.poll = Backoff(0.0, 0.0, jitter=0.0, sleep=cancel)
    with pytest.raises(KeyboardInterrupt):
        run_training(
            backend,
            config,
            run_id=RUN_ID,
            channels=channels,
            compute=compute,
            environment=environment,
            log=lambda line: None,
        )
    assert lifecycle.stopped == ["unit-feedc0de-a1"]

    lifecycle.script("a2", IN_PROGRESS, DONE)
    result, _ = train(path)
    assert isinstance(result, TrainingResult), result
    assert [a.outcome for a in result.attempts] == [Outcome.INTERRUPTED, Outcome.SUCCEEDED]
    assert "orchestrator was cancelled" in result.attempts[0].reason
    names = [r["TrainingJobName"] for r in created(aws)]
    assert names == ["unit-feedc0de-a1", "unit-feedc0de-a2"]
    assert created(aws)[1]["CheckpointConfig"] == created(aws)[0]["CheckpointConfig"]


def test_the_jobs_cloudwatch_lines_reach_the_log_once_each(
    aws_config: Callable[..., Path], aws: MotoServer, lifecycle: Lifecycle
) -> None:
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    stream = "unit-feedc0de-a1/algo-1-1700000000"
    logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream)
    now_ms = int(time.time() * 1000)  # CloudWatch drops events older than 14 days
    logs.put_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs",
        logStreamName=stream,
        logEvents=[
            {"timestamp": now_ms + i, "message": f"epoch={i} val_accuracy=0.{i}"}
            for i in range(1, 4)
        ],
    )
    lifecycle.script("a1", IN_PROGRESS, IN_PROGRESS, IN_PROGRESS, DONE)
    config, backend, channels, compute, environment = prepare(aws_config())
    script_lines: list[str] = []
    result = run_training(
        backend,
        config,
        run_id=RUN_ID,
        channels=channels,
        compute=compute,
        environment=environment,
        log=lambda line: None,
        script_log=script_lines.append,
    )
    assert result.succeeded
    epochs = [line for line in script_lines if line.startswith("epoch=")]
    assert epochs == [
        "epoch=1 val_accuracy=0.1",
        "epoch=2 val_accuracy=0.2",
        "epoch=3 val_accuracy=0.3",
    ]


def test_each_run_ships_its_own_code_through_a_backend_handed_to_both(
    aws_config: Callable[..., Path], aws: MotoServer, lifecycle: Lifecycle
) -> None:
    """A backend handed in (use_backend) serves several runs; each packs its own code."""
    from cloudtrain.backend import build_backend, use_backend

    lifecycle.script("a1", DONE)
    path = aws_config(retry={"max_attempts": 1})
    config, backend, channels, compute, environment = prepare(path)
    with use_backend(backend):
        for run_id, script in (("1111111111111111", "v1"), ("2222222222222222", "v2")):
            (path.parent / "src" / "train.py").write_text(
                f"print('val_accuracy=0.9')  # {script}\n"
            )
            edited = load_config(path)
            run_training(
                build_backend(edited),
                edited,
                run_id=run_id,
                channels=channels,
                compute=compute,
                environment=environment,
                log=lambda line: None,
            )
    first, second = (
        json.loads(r["HyperParameters"]["sagemaker_submit_directory"]) for r in created(aws)
    )
    assert first != second
    s3 = boto3.client("s3")
    for uri, script in ((first, "v1"), (second, "v2")):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        archive = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            member = tar.extractfile("train.py")
            assert member is not None and script in member.read().decode()
