"""Every control-plane call goes through one retry policy (cloudtrain/retrying.py).

A call throttled beyond the SDK's own retries is called again after a wait, the very
first one included (the reattach check before a job exists); an error that is not
transient fails at once, with the operation and the service's reason in the message.
Faults are injected in front of moto's server (tests/moto_server.py) and into the fake
MLClient (tests/azure_fake.py), so every call still goes through the real SDK code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from azure_fake import FakeMLClient, http_error
from moto_server import MotoServer
from sagemaker_lifecycle import IN_PROGRESS, Lifecycle, lifecycle
from test_aws_training import DONE, RUN_ID, aws_config, prepare
from test_azure_training import Driver, azure_backend, azure_config, fake
from test_azure_training import train as train_on_azure

from cloudtrain.backends.azure.backend import AzureBackend
from cloudtrain.config import PipelineConfig
from cloudtrain.errors import BackendError, TransientError
from cloudtrain.results import TrainingResult
from cloudtrain.training import run_training

__all__ = ["aws_config", "azure_backend", "azure_config", "fake", "lifecycle"]  # fixtures

#: More throttled answers in a row than the SDK's own retries (2 calls, below) absorb.
THROTTLED = 5


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The policy's waits, recorded instead of slept; botocore tries each call twice."""
    seen: list[float] = []
    monkeypatch.setattr("cloudtrain.retrying.sleep_seconds", seen.append)
    monkeypatch.setattr(
        "cloudtrain.backends.aws.clients.BOTOCORE_RETRIES",
        {"mode": "standard", "total_max_attempts": 2},
    )
    return seen


def train_and_collect_on_aws(path: Path) -> TrainingResult:
    config, backend, channels, compute, environment = prepare(path)
    result = run_training(
        backend,
        config,
        run_id=RUN_ID,
        channels=channels,
        compute=compute,
        environment=environment,
        log=lambda line: None,
    )
    backend.collect_artifacts(config, result)
    return result


@pytest.mark.parametrize(
    "action",
    [
        "DescribeTrainingJob",  # the first is the reattach check, before the job exists
        "CreateTrainingJob",
        "GetCallerIdentity",  # STS
        "GetRole",  # IAM
        "S3:GET",  # the channel's manifest
        "S3:HEAD",  # the code archive
    ],
)
def test_a_throttled_first_aws_call_does_not_fail_the_run(
    action: str,
    aws_config: Callable[..., Path],
    aws: MotoServer,
    lifecycle: Lifecycle,
    waits: list[float],
) -> None:
    path = aws_config(retry={"max_attempts": 1, "on_demand_fallback": False})
    lifecycle.script("a1", IN_PROGRESS, DONE)
    aws.faults.throttle(action, THROTTLED)
    result = train_and_collect_on_aws(path)
    assert result.succeeded
    calls = [e for e in aws.log.entries if e.action == action or f"S3:{e.method}" == action]
    assert len(calls) > THROTTLED  # every throttled answer was followed by another call
    assert len(waits) >= 2  # botocore gave up twice; the policy waited and called again


def test_a_non_retryable_aws_error_fails_at_once_naming_the_call(
    aws_config: Callable[..., Path], aws: MotoServer, lifecycle: Lifecycle, waits: list[float]
) -> None:
    path = aws_config()
    aws.faults.add(
        "CreateTrainingJob", 1, 400, "ValidationException", "RoleArn is not valid for this job"
    )
    with pytest.raises(
        BackendError, match=r"CreateTrainingJob unit-.*ValidationException.*RoleArn"
    ):
        train_and_collect_on_aws(path)
    assert len(aws.log.actions("CreateTrainingJob")) == 1
    assert waits == []


def test_throttling_that_never_ends_fails_after_the_policys_calls(
    aws_config: Callable[..., Path],
    aws: MotoServer,
    waits: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("cloudtrain.retrying.CONTROL_ATTEMPTS", 3)
    path = aws_config()
    aws.faults.throttle("GetCallerIdentity", 1000)
    with pytest.raises(TransientError, match="GetCallerIdentity.*ThrottlingException"):
        train_and_collect_on_aws(path)
    assert len(aws.log.actions("GetCallerIdentity")) == 3 * 2  # 3 policy calls, 2 botocore
    assert len(waits) == 2


AZURE_OPERATIONS = [
    "datastores.get",
    "data.get",
    "data.create_or_update",
    "compute.get",
    "compute.begin_create_or_update",
    "environments.list",
    "environments.get",
    "jobs.get",  # the first is the reattach check, before the job exists
    "jobs.create_or_update",
    "runs.get_run_details",
    "jobs.download",
]


def train_and_collect_on_azure(
    fake: FakeMLClient, config: PipelineConfig, backend: AzureBackend
) -> TrainingResult | Exception:
    driver = Driver(fake)
    driver.script(
        "a1",
        ("Running", None),
        (
            "Completed",
            None,
            {"": {"user_logs/std_log.txt": b"acc=0.9\n"}, "model": {"model.pkl": b"w"}},
        ),
    )
    _, result, _ = train_on_azure(backend, config, driver)
    if isinstance(result, TrainingResult):
        backend.collect_artifacts(config, result)
    return result


@pytest.mark.parametrize("operation", AZURE_OPERATIONS)
def test_a_throttled_first_azure_call_does_not_fail_the_run(
    operation: str,
    fake: FakeMLClient,
    azure_config: Callable[..., PipelineConfig],
    azure_backend: Callable[[PipelineConfig], AzureBackend],
    waits: list[float],
) -> None:
    config = azure_config(retry={"max_attempts": 1, "on_demand_fallback": False})
    fake.throttle(operation, 3)
    result = train_and_collect_on_azure(fake, config, azure_backend(config))
    assert isinstance(result, TrainingResult) and result.succeeded, result
    assert fake.ops().count(operation) >= 4
    assert len(waits) == 3


def test_a_non_retryable_azure_error_fails_at_once_naming_the_call(
    fake: FakeMLClient,
    azure_config: Callable[..., PipelineConfig],
    azure_backend: Callable[[PipelineConfig], AzureBackend],
    waits: list[float],
) -> None:
    config = azure_config()
    fake.fail("jobs.create_or_update", http_error(400, "UserError", "The compute is not valid."))
    with pytest.raises(BackendError, match="compute is not valid"):
        train_and_collect_on_azure(fake, config, azure_backend(config))
    assert fake.ops().count("jobs.create_or_update") == 1
    assert waits == []


def test_a_create_whose_answer_was_lost_is_not_created_twice(
    aws_config: Callable[..., Path], aws: MotoServer, lifecycle: Lifecycle, waits: list[float]
) -> None:
    """SageMaker made the job but the answer was a 500; the retry hears ResourceInUse."""
    path = aws_config(retry={"max_attempts": 1, "on_demand_fallback": False})
    lifecycle.script("a1", IN_PROGRESS, DONE)
    aws.faults.add("CreateTrainingJob", 1, 500, "InternalFailure", "lost", after=True)
    aws.faults.add(
        "CreateTrainingJob", 1, 400, "ResourceInUse", "Training job names must be unique"
    )
    result = train_and_collect_on_aws(path)
    assert result.succeeded
    assert len(aws.log.actions("CreateTrainingJob")) == 2
