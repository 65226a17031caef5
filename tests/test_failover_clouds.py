"""One flow run from SageMaker to Azure ML: the checkpoint follows it, byte for byte.

AWS is moto's server (jobs driven by tests/sagemaker_lifecycle.py, the job's checkpoint
folder "synced" to S3 the way SageMaker does it); Azure is Azurite for the datastore and
the fake MLClient (tests/azure_fake.py) for the control plane; both backends are handed
to the flow with ``use_backend``. Every byte is checked against sha256 computed here.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from azure.storage.blob import ContainerClient
from azure_fake import FakeMLClient
from moto_server import MotoServer
from sagemaker_lifecycle import IN_PROGRESS, Lifecycle, lifecycle
from test_aws_training import BUCKET, ROLE, create_role
from test_azure_training import Driver, fake, job_bodies

from cloudtrain.backend import use_backend
from cloudtrain.backends.aws.backend import AwsBackend
from cloudtrain.backends.azure.backend import AzureBackend
from cloudtrain.backends.azure.clients import AzureClients
from cloudtrain.backends.azure.settings import azure_settings
from cloudtrain.backoff import Backoff
from cloudtrain.config import PipelineConfig, load_config
from cloudtrain.store import manifest_json

__all__ = ["fake", "lifecycle"]  # fixtures, imported for pytest

#: What SageMaker's last attempt left in its checkpoint location (nested, one binary).
CHECKPOINT: dict[str, bytes] = {
    "epoch.txt": b"4",
    "model/weights.pt": os.urandom(200_000),
    "model/optimizer/state.bin": os.urandom(5_000),
}
RECLAIMED: dict[str, Any] = {
    "status": "Stopped",
    "secondary": "Interrupted",
    "training": 1200,
    "billable": 400,
    "checkpoints": CHECKPOINT,
}
COMPLETED_ON_AZURE = (
    "Completed",
    None,
    {
        "": {"user_logs/std_log.txt": b"starting at epoch 5\nepoch=5\nval_accuracy=0.96\n"},
        "model": {"model.pkl": b"weights"},
    },
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(files: dict[str, bytes]) -> str:
    entries = {name: {"sha256": sha256(data), "size": len(data)} for name, data in files.items()}
    return sha256(manifest_json(entries).encode())


@pytest.fixture
def route_config(tmp_path: Path, aws: MotoServer) -> PipelineConfig:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    create_role("SageMakerRole", "sagemaker.amazonaws.com")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print('val_accuracy=0.9')\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("x,y\n1,2\n")
    raw = {
        "name": "unit",
        "clouds": ["aws", "azure"],
        "code": {"source_dir": "src", "entry_point": "train.py"},
        "hyperparameters": {"epochs": 8},
        "data": {"train": "data/train.csv"},
        "metrics": ["val_accuracy"],
        "environment": {"framework": "sklearn", "framework_version": "1.2"},
        "compute": {
            "instance_type": {"aws": "ml.m5.large", "azure": "Standard_DS3_v2"},
            "spot": True,
            "max_run": 600,
            "max_wait": 1200,
        },
        "retry": {"strategy": "failover", "max_attempts": 3, "reclaims_per_cloud": 1},
        "aws": {"region": "us-east-1", "role": ROLE, "bucket": BUCKET, "prefix": "ct"},
        "azure": {
            "subscription_id": "00000000-0000-0000-0000-000000000000",
            "resource_group": "rg-cloudtrain-test",
            "workspace": "ws-cloudtrain-test",
            "compute": "cpu-cluster",
            "max_instances": 2,
        },
    }
    (tmp_path / "cloudtrain.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(tmp_path / "cloudtrain.yaml")


def backends(
    config: PipelineConfig, fake: FakeMLClient, azurite: str, driver: Driver
) -> tuple[AwsBackend, AzureBackend]:
    """Each cloud's backend as a run builds it, on the emulators, polling without waiting
    (Azure's jobs move when the driver is called between polls)."""
    aws = AwsBackend(config)
    aws.poll = Backoff(0.0, 0.0, jitter=0.0)
    pinned = config.on_cloud("azure")
    clients = AzureClients(
        azure_settings(pinned), ml_client=fake, registry_client=fake, blob_connection_string=azurite
    )
    azure = AzureBackend(pinned, clients=clients)
    azure.poll = Backoff(0.0, 0.0, jitter=0.0, sleep=driver)
    return aws, azure


def blobs(container: ContainerClient, prefix: str) -> dict[str, Any]:
    return {b.name[len(prefix) :]: b for b in container.list_blobs(name_starts_with=prefix)}


def report_of(flow_run_id: Any) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return str({a.key: a for a in artifacts}["unit-report"].data)


@pytest.mark.prefect
def test_a_reclaim_on_sagemaker_fails_over_to_azure_ml_with_the_checkpoint(
    prefect_server: str,
    route_config: PipelineConfig,
    aws: MotoServer,
    lifecycle: Lifecycle,
    fake: FakeMLClient,
    azurite: str,
) -> None:
    from flows.aws_training import aws_training

    lifecycle.script("a1", IN_PROGRESS, RECLAIMED)
    driver = Driver(fake)
    driver.script("a2", ("Running", None), COMPLETED_ON_AZURE)
    container = ContainerClient.from_connection_string(
        azurite, container_name=fake.datastores.get_default().container_name
    )
    s3 = boto3.client("s3")

    with use_backend(*backends(route_config, fake, azurite, driver)):
        state = aws_training(config=route_config, return_state=True)
    assert state.is_completed(), state
    summary = state.result()
    run_id = summary["run_id"]
    source = f"s3://{BUCKET}/ct/unit/checkpoints/{run_id}/"
    target = (
        f"azureml://datastores/workspaceblobstore/paths/cloudtrain/unit/checkpoints/{run_id}-leg2/"
    )

    # The attempts: reclaimed on SageMaker spot, then Azure low priority from the copy.
    assert [
        (a["cloud"], a["capacity"], a["outcome"], a["checkpoint_uri"], a["checkpoint_from"])
        for a in summary["attempts"]
    ] == [
        ("aws", "spot", "interrupted", source, None),
        ("azure", "spot", "succeeded", target, source),
    ]
    assert [a["instance_type"] for a in summary["attempts"]] == ["ml.m5.large", "Standard_DS3_v2"]
    assert [a["resumed_from_checkpoint_files"] for a in summary["attempts"]] == [0, 3]
    assert summary["metrics"] == {"val_accuracy": 0.96}
    assert summary["checkpoint_uri"] == target

    # What arrived on Azure is what SageMaker's attempt left in S3, byte for byte.
    left = {
        key.removeprefix(f"ct/unit/checkpoints/{run_id}/"): s3.get_object(Bucket=BUCKET, Key=key)[
            "Body"
        ].read()
        for key in (
            o["Key"]
            for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"ct/unit/checkpoints/{run_id}/")[
                "Contents"
            ]
        )
    }
    assert left == CHECKPOINT
    path = f"cloudtrain/unit/checkpoints/{run_id}-leg2/"
    arrived = {
        name: container.download_blob(path + name).readall() for name in blobs(container, path)
    }
    assert {n: sha256(d) for n, d in arrived.items()} == {n: sha256(d) for n, d in left.items()}
    [copy] = summary["checkpoint_copies"]
    assert copy["digest"] == digest_of(CHECKPOINT)
    assert copy["sha256"] == {name: sha256(data) for name, data in sorted(CHECKPOINT.items())}
    assert (copy["source"], copy["target"], copy["files"]) == (source, target, 3)
    assert (copy["source_cloud"], copy["target_cloud"]) == ("aws", "azure")

    # The Azure job was given that location as its read-write checkpoint folder.
    [body] = job_bodies(fake)
    assert body["outputs"]["checkpoints"]["uri"] == target
    assert body["outputs"]["checkpoints"]["mode"] == "ReadWriteMount"
    assert body["computeId"].rsplit("/", 1)[-1] == "cpu-cluster"  # low priority

    # The data went to each cloud once: S3 for SageMaker, the datastore for Azure ML.
    assert s3.get_object(Bucket=BUCKET, Key="ct/unit/data/train/train.csv")["Body"].read() == (
        b"x,y\n1,2\n"
    )
    data_path = "cloudtrain/unit/data/train/"
    assert container.download_blob(data_path + "train.csv").readall() == b"x,y\n1,2\n"
    azure_data = summary["legs"]["2:azure"]["data"]["train"]
    assert summary["data"]["train"]["digest"] == azure_data["digest"]
    assert not summary["data"]["train"]["unchanged"] and not azure_data["unchanged"]

    # Cost per cloud adds up the attempts' own estimates (the budget policy prices them).
    expected: dict[str, float] = {}
    for attempt in summary["attempts"]:
        if attempt["cost_usd"] is not None:
            expected[attempt["cloud"]] = expected.get(attempt["cloud"], 0.0) + attempt["cost_usd"]
    assert summary["cost_per_cloud"] == pytest.approx(expected)
    assert set(summary["cost_per_cloud"]) == {"aws", "azure"}  # both priced from the tables

    report = report_of(state.state_details.flow_run_id)
    assert "| 1 | aws | spot | interrupted | spot capacity reclaimed (Interrupted) |" in report
    assert "| 2 | azure | spot | succeeded |" in report
    assert f"3 file(s) copied from `{source}`" in report
    assert "checkpoint copied aws -> azure: 3 file(s)" in report and copy["digest"][:16] in report

    # A second run (forced: same data, code and config) uploads no data to either cloud:
    # each store's manifest says it holds this content already.
    etags = {name: blob.etag for name, blob in blobs(container, data_path).items()}
    aws.log.clear()
    with use_backend(*backends(route_config, fake, azurite, driver)):
        again = aws_training(config=route_config, force=True, return_state=True)
    assert again.is_completed(), again
    second = again.result()
    assert [a["cloud"] for a in second["attempts"]] == ["aws", "azure"]
    assert second["data"]["train"]["unchanged"]
    assert second["legs"]["2:azure"]["data"]["train"]["unchanged"]
    assert [e.path for e in aws.log.s3("PUT") if "/ct/unit/data/" in e.path] == []
    assert {name: blob.etag for name, blob in blobs(container, data_path).items()} == etags
    container.close()
