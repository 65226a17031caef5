"""The AWS pipeline end to end on moto and a Prefect server, and its offline plan."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from moto_server import MotoServer
from sagemaker_lifecycle import COMPLETED, IN_PROGRESS, Lifecycle, lifecycle, model_archive
from test_aws_training import BUCKET, aws_config

from cloudtrain.config import load_config

__all__ = ["aws_config", "lifecycle"]  # fixtures, imported for pytest


def test_plan_prints_the_exact_requests_offline(aws_config: Callable[..., Path]) -> None:
    """No endpoint, no credentials: plan must not touch the network."""
    path = aws_config()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(path.parent),
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }  # anything sent would fail loudly
    done = subprocess.run(
        [sys.executable, "-m", "cloudtrain.cli", "plan", str(path), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    requests = [attempt["request"] for attempt in plan["attempts"]]
    assert [r["EnableManagedSpotTraining"] for r in requests] == [True, True, False]
    assert len({r["CheckpointConfig"]["S3Uri"] for r in requests}) == 1
    assert "MaxWaitTimeInSeconds" not in requests[2]["StoppingCondition"]
    assert plan["uploads"]["train"]["to"] == f"s3://{BUCKET}/ct/unit/data/train/"
    assert "secret" not in done.stdout.lower()


@pytest.mark.prefect
def test_aws_flow_resumes_after_a_reclaim_and_reports_the_spot_saving(
    prefect_server: str,
    aws_config: Callable[..., Path],
    aws: MotoServer,
    lifecycle: Lifecycle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.aws_training import aws_training

    monkeypatch.setattr("cloudtrain.backoff.POLL_INITIAL_SECONDS", 0.0)
    monkeypatch.setattr("cloudtrain.backoff.POLL_MAX_SECONDS", 0.0)
    lifecycle.script(
        "a1",
        IN_PROGRESS,
        {"status": "Stopped", "secondary": "Interrupted", "training": 1200, "billable": 400},
    )
    lifecycle.script(
        "a2",
        IN_PROGRESS,
        {
            **COMPLETED,
            "training": 1800,
            "billable": 600,
            "metrics": {"val_accuracy": 0.97},
            "model": model_archive({"model.pkl": b"weights"}),
        },
    )
    config = load_config(aws_config(compute={"instance_type": "ml.m5.xlarge"}))
    state = aws_training(config=config, return_state=True)
    assert state.is_completed(), state
    summary = state.result()
    assert [a["outcome"] for a in summary["attempts"]] == ["interrupted", "succeeded"]
    assert summary["metrics"] == {"val_accuracy": 0.97}
    model = summary["model"]
    assert (Path(model["local_model_dir"]) / "model.pkl").read_bytes() == b"weights"
    cost = model["cost"]
    assert cost["training_seconds"] == 3000 and cost["billable_seconds"] == 1000
    assert cost["saved_percent"] == pytest.approx(66.7, abs=0.05)
    assert cost["billed_usd"] < cost["on_demand_usd"]

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    by_key = {a.key: a for a in artifacts}
    assert "console.aws.amazon.com/sagemaker" in str(by_key["unit-sagemaker-console"].data)
    report = by_key["unit-report"].data
    assert "spot capacity reclaimed (Interrupted)" in report and "saved percent" in report


@pytest.mark.prefect
def test_a_credentials_block_signs_the_requests_and_its_secret_goes_nowhere(
    prefect_server: str,
    aws_config: Callable[..., Path],
    aws: MotoServer,
    lifecycle: Lifecycle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect_aws import AwsCredentials

    from flows.aws_training import aws_training

    key_id, secret = "AKIABLOCKTEST0000001", "block-secret-value-do-not-print"
    AwsCredentials(
        aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="us-east-1"
    ).save("cloudtrain-test-aws", overwrite=True)
    monkeypatch.setattr("cloudtrain.backoff.POLL_INITIAL_SECONDS", 0.0)
    monkeypatch.setattr("cloudtrain.backoff.POLL_MAX_SECONDS", 0.0)
    lifecycle.script("a1", IN_PROGRESS, {**COMPLETED, "model": model_archive({"m": b"1"})})
    path = aws_config(aws={"credentials_block": "cloudtrain-test-aws"})

    plan = subprocess.run(
        [sys.executable, "-m", "cloudtrain.cli", "plan", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plan.returncode == 0, plan.stderr
    aws.log.clear()  # the fixture made the bucket and role with the environment's keys
    state = aws_training(config=load_config(path), return_state=True)
    assert state.is_completed(), state

    signed = [e.header("authorization") for e in aws.log.entries if e.header("authorization")]
    assert signed and all(f"Credential={key_id}/" in value for value in signed)
    flow_run_id = state.state_details.flow_run_id
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs travel in batches: send what is queued before reading
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    everything = "\n".join(
        [
            plan.stdout,
            plan.stderr,
            json.dumps(state.result(), default=str),
            *(log.message for log in logs),
            *(str(a.data) for a in artifacts),
        ]
    )
    assert logs and artifacts
    assert secret not in everything
