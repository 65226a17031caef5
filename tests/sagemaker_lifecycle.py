"""Drive SageMaker training jobs through their lifecycle inside moto's server.

moto creates every training job already Completed and has no StopTrainingJob. Tests
script, per attempt, the states DescribeTrainingJob returns in turn (the last one stays),
by setting moto's own job objects just before moto answers; StopTrainingJob is added
to moto's SageMaker responses. Every call still goes over HTTP through botocore.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from moto.core.exceptions import JsonRESTError
from moto.s3.models import s3_backends
from moto.sagemaker import responses as sagemaker_responses
from moto.sagemaker.models import SageMakerModelBackend
from moto_server import ACCOUNT_ID

Step = dict[str, Any]
IN_PROGRESS: Step = {"status": "InProgress", "secondary": "Training"}
COMPLETED: Step = {
    "status": "Completed",
    "secondary": "Completed",
    "training": 600,
    "billable": 200,
}
THROTTLE: Step = {"throttle": True}


@dataclass
class Lifecycle:
    """Per attempt suffix ("a1", "a2", ...), the states its job goes through."""

    scripts: dict[str, list[Step]] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)
    describes: dict[str, int] = field(default_factory=dict)

    def script(self, attempt: str, *steps: Step) -> None:
        self.scripts[attempt] = list(steps)

    def next_step(self, name: str) -> Step | None:
        self.describes[name] = self.describes.get(name, 0) + 1
        steps = self.scripts.get(name.rsplit("-", 1)[-1])
        if not steps:
            return None
        return steps.pop(0) if len(steps) > 1 else steps[0]


def _apply(job: Any, step: Step) -> None:
    job.training_job_status = step["status"]
    job.secondary_status = step.get("secondary", step["status"])
    if "reason" in step:
        job.failure_reason = step["reason"]
    if "training" in step:
        job.training_time_in_seconds = step["training"]
        job.billable_time_in_seconds = step.get("billable", step["training"])
    if "metrics" in step:
        job.final_metric_data_list = [
            {"MetricName": name, "Value": value, "Timestamp": job.creation_time}
            for name, value in step["metrics"].items()
        ]
    if "model" in step:  # what the container uploads when it finishes
        bucket, _, key = (
            job.model_artifacts["S3ModelArtifacts"].removeprefix("s3://").partition("/")
        )
        s3_backends[ACCOUNT_ID]["aws"].put_object(bucket, key, step["model"])
    if "checkpoints" in step:  # what the container's checkpoint folder synced to S3
        uri = job.checkpoint_config["S3Uri"]
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        for name, data in step["checkpoints"].items():
            key = f"{prefix.rstrip('/')}/{name}"
            s3_backends[ACCOUNT_ID]["aws"].put_object(bucket, key, data)
    job.secondary_status_transitions = job.secondary_status_transitions + [
        {
            "Status": job.secondary_status,
            "StartTime": job.creation_time,
            "StatusMessage": step.get("message", ""),
        }
    ]


@pytest.fixture
def lifecycle(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lifecycle]:
    state = Lifecycle()
    original = SageMakerModelBackend.describe_training_job

    def describe(self: SageMakerModelBackend, training_job_name: str) -> dict[str, Any]:
        job = self.training_jobs.get(training_job_name)
        step = state.next_step(training_job_name) if job is not None else None
        if step and step.get("throttle"):
            raise JsonRESTError("ThrottlingException", "Rate exceeded")
        if step:
            _apply(job, step)
        return original(self, training_job_name)

    def stop_training_job(self: Any) -> Any:
        name = json.loads(self.body)["TrainingJobName"]
        job = self.sagemaker_backend.training_jobs[name]
        state.stopped.append(name)
        state.script(name.rsplit("-", 1)[-1], {"status": "Stopped", "secondary": "Stopped"})
        _apply(job, {"status": "Stopping", "secondary": "Stopping"})
        return "{}"

    monkeypatch.setattr(SageMakerModelBackend, "describe_training_job", describe)
    monkeypatch.setattr(
        sagemaker_responses.SageMakerResponse, "stop_training_job", stop_training_job, raising=False
    )
    yield state


def model_archive(files: dict[str, bytes]) -> bytes:
    """A model.tar.gz as SageMaker packs SM_MODEL_DIR."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
