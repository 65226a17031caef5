"""The Azure backend end to end: Azurite for storage, the fake MLClient for the control
plane (real entities, REST-checked), lifecycle driven per attempt by the test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure_fake import FakeMLClient

from cloudtrain.backend import use_backend
from cloudtrain.backends.azure.backend import AzureBackend
from cloudtrain.backends.azure.clients import AzureClients
from cloudtrain.backends.azure.settings import AzureConfig, azure_settings
from cloudtrain.backoff import Backoff
from cloudtrain.config import PipelineConfig, load_config
from cloudtrain.data import upload_channels
from cloudtrain.errors import TrainingError
from cloudtrain.recovery import Outcome
from cloudtrain.results import TrainingResult
from cloudtrain.training import run_training

RUN_ID = "c0ffee0000000000"


@pytest.fixture
def fake(azurite_container: str) -> FakeMLClient:
    """One fake workspace whose default datastore is a container on Azurite."""
    return FakeMLClient(
        datastore_account="devstoreaccount1",
        datastore_container=azurite_container,
        datastore_protocol="http",
    )


@pytest.fixture
def azure_backend(fake: FakeMLClient, azurite: str) -> Callable[[PipelineConfig], AzureBackend]:
    """The Azure backend of a config, its clients handed in: the fake workspace, Azurite."""

    def make(config: PipelineConfig) -> AzureBackend:
        clients = AzureClients(
            azure_settings(config),
            ml_client=fake,
            registry_client=fake,
            blob_connection_string=azurite,
        )
        return AzureBackend(config, clients=clients)

    return make


@pytest.fixture
def azure_config(tmp_path: Path) -> Callable[..., PipelineConfig]:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print('acc=0.9')\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("x,y\n1,2\n")

    def make(**sections: Any) -> PipelineConfig:
        raw: dict[str, Any] = {
            "name": "digits",
            "cloud": "azure",
            "code": {"source_dir": "src", "entry_point": "train.py"},
            "hyperparameters": {"epochs": 3},
            "data": {"train": "data/train.csv"},
            "metrics": ["acc"],
            "environment": {"framework": "sklearn", "framework_version": "1.5"},
            "compute": {"instance_type": "Standard_DS3_v2", "spot": True, "max_run": 600},
            "retry": {"max_attempts": 3, "on_demand_fallback": True},
            "azure": {
                "subscription_id": "00000000-0000-0000-0000-000000000000",
                "resource_group": "rg-cloudtrain-test",
                "workspace": "ws-cloudtrain-test",
                "compute": "cpu-cluster",
                "max_instances": 2,
            },
        }
        for key, value in sections.items():
            raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        return load_config(tmp_path / "c.yaml")

    return make


class Driver:
    """Moves each attempt's job through states on every poll, as the service would."""

    def __init__(self, fake: FakeMLClient) -> None:
        self.fake = fake
        self.scripts: dict[str, list[tuple[Any, ...]]] = {}

    def script(self, attempt: str, *steps: tuple[Any, ...]) -> None:
        """Steps are (status, error) or (status, error, files the job leaves behind)."""
        self.scripts[attempt] = list(steps)

    def __call__(self, _: float) -> None:
        for job in self.fake.jobs.list():
            steps = self.scripts.get(job.name.rsplit("-", 1)[-1])
            if steps and getattr(job.status, "value", job.status) not in (
                "Completed",
                "Failed",
                "Canceled",
            ):
                status, error, *files = steps.pop(0) if len(steps) > 1 else steps[0]
                for placed in files:
                    for output, content in placed.items():
                        self.fake.jobs.put_files(job.name, content, output_name=output or None)
                self.fake.jobs.set_status(job.name, status, error=error)


def train(
    backend: AzureBackend, config: PipelineConfig, driver: Driver
) -> tuple[AzureBackend, TrainingResult | TrainingError, list[str]]:
    backend.validate(config)
    backend.poll = Backoff(0.0, 0.0, jitter=0.0, sleep=driver)
    channels = {c: d.uri for c, d in upload_channels(backend, config).items()}
    compute = backend.ensure_compute(config)
    environment = backend.resolve_environment(config, compute)
    lines: list[str] = []
    try:
        result = run_training(
            backend,
            config,
            run_id=RUN_ID,
            channels=channels,
            compute=compute,
            environment=environment,
            log=lines.append,
        )
    except TrainingError as exc:
        return backend, exc, lines
    return backend, result, lines


def job_bodies(fake: FakeMLClient) -> list[dict[str, Any]]:
    return [
        call.body["properties"]
        for call in fake.calls
        if call.op == "jobs.create_or_update" and call.body
    ]


def test_preemption_then_resume_on_the_same_checkpoint_path_then_dedicated(
    fake: FakeMLClient,
    azure_config: Callable[..., PipelineConfig],
    azure_backend: Callable[[PipelineConfig], AzureBackend],
) -> None:
    driver = Driver(fake)
    driver.script(
        "a1", ("Running", None), ("Failed", "JobPreempted: low priority node was preempted")
    )
    driver.script("a2", ("Failed", "AllocationFailed: insufficient capacity in eastus"))
    driver.script(
        "a3",
        ("Running", None),
        (
            "Completed",
            None,
            {
                "": {"user_logs/std_log.txt": b"epoch=1\nacc=0.91\n"},
                "model": {"model.pkl": b"weights"},
            },
        ),
    )
    config = azure_config()
    backend, result, lines = train(azure_backend(config), config, driver)
    assert isinstance(result, TrainingResult), result
    assert [a.outcome for a in result.attempts] == [
        Outcome.INTERRUPTED,
        Outcome.NO_CAPACITY,
        Outcome.SUCCEEDED,
    ]
    assert result.metrics == {"acc": 0.91}

    bodies = job_bodies(fake)
    assert [b["computeId"].rsplit("/", 1)[-1] for b in bodies] == [
        "cpu-cluster",
        "cpu-cluster",
        "cpu-cluster-od",
    ]
    checkpoints = {b["outputs"]["checkpoints"]["uri"] for b in bodies}
    assert checkpoints == {
        f"azureml://datastores/workspaceblobstore/paths/cloudtrain/digits/checkpoints/{RUN_ID}/"
    }
    assert {b["outputs"]["checkpoints"]["mode"] for b in bodies} == {"ReadWriteMount"}
    assert [b["tags"]["cloudtrain:capacity"] for b in bodies] == [
        "low-priority",
        "low-priority",
        "dedicated",
    ]
    # the low-priority cluster and its dedicated twin were both ensured
    assert fake.compute.get("cpu-cluster").tier == "low_priority"
    assert fake.compute.get("cpu-cluster-od").tier == "dedicated"


def test_a_script_failure_is_not_retried(
    fake: FakeMLClient,
    azure_config: Callable[..., PipelineConfig],
    azure_backend: Callable[[PipelineConfig], AzureBackend],
) -> None:
    driver = Driver(fake)
    driver.script("a1", ("Failed", "UserError: Execution failed. KeyError: 'target'"))
    config = azure_config()
    _, error, _ = train(azure_backend(config), config, driver)
    assert isinstance(error, TrainingError)
    assert [a.outcome for a in error.result.attempts] == [Outcome.FAILED]
    assert "KeyError: 'target'" in str(error)
    assert len(job_bodies(fake)) == 1


def test_the_same_data_is_the_same_asset_version(
    fake: FakeMLClient,
    azure_config: Callable[..., PipelineConfig],
    azure_backend: Callable[[PipelineConfig], AzureBackend],
) -> None:
    config = azure_config()
    backend = azure_backend(config)
    first = upload_channels(backend, config)["train"]
    second = upload_channels(backend, config)["train"]
    assert first.uri == second.uri and first.uri.startswith("azureml:digits-train:")
    assert second.unchanged
    assert len([c for c in fake.calls if c.op == "data.create_or_update"]) == 1


def test_a_rerun_reattaches_and_a_cancel_stops_the_job(
    fake: FakeMLClient,
    azure_config: Callable[..., PipelineConfig],
    azure_backend: Callable[[PipelineConfig], AzureBackend],
) -> None:
    config = azure_config()
    driver = Driver(fake)
    driver.script("a1", ("Running", None))

    class Cancelled(BaseException):
        pass

    def cancel(_: float) -> None:
        driver(0)
        raise Cancelled

    backend = azure_backend(config)
    channels = {c: d.uri for c, d in upload_channels(backend, config).items()}
    compute = backend.ensure_compute(config)
    environment = backend.resolve_environment(config, compute)
    backend.poll = Backoff(0.0, 0.0, jitter=0.0, sleep=cancel)
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
    job = fake.jobs.get("digits-c0ffee00-a1")
    assert getattr(job.status, "value", job.status) == "Canceled"

    # the rerun reattaches to a1 (canceled by us: resumed as the next attempt), no new a1
    driver.script("a2", ("Running", None), ("Completed", None))
    _, result, lines = train(azure_backend(config), config, driver)
    assert isinstance(result, TrainingResult), result
    assert [a.outcome for a in result.attempts] == [Outcome.INTERRUPTED, Outcome.SUCCEEDED]
    assert any(line.startswith("reattached to digits-c0ffee00-a1") for line in lines)
    assert [b["displayName"] for b in job_bodies(fake)] == [
        "digits attempt 1 (spot)",
        "digits attempt 2 (spot)",
    ]


@pytest.mark.prefect
def test_azure_flow_collects_the_model_metrics_cost_and_studio_link(
    prefect_server: str,
    fake: FakeMLClient,
    azure_config: Callable[..., PipelineConfig],
    azure_backend: Callable[[PipelineConfig], AzureBackend],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.azure_training import azure_training

    driver = Driver(fake)
    driver.script(
        "a1", ("Running", None), ("Failed", "Preempted: the low priority node was preempted")
    )
    driver.script(
        "a2",
        ("Running", None),
        (
            "Completed",
            None,
            {
                "": {"user_logs/std_log.txt": "acc=0.5\nacc=0.93\n"},
                "model": {"model.pkl": b"weights", "meta/info.json": b"{}"},
            },
        ),
    )
    monkeypatch.setattr("cloudtrain.backoff.sleep_seconds", driver)
    monkeypatch.setattr("cloudtrain.backoff.POLL_INITIAL_SECONDS", 0.0)
    monkeypatch.setattr("cloudtrain.backoff.POLL_MAX_SECONDS", 0.0)
    config = azure_config(azure={"register_model": True})
    with use_backend(azure_backend(config)):
        state = azure_training(config=config, return_state=True)
    assert state.is_completed(), state
    summary = state.result()
    assert [a["outcome"] for a in summary["attempts"]] == ["interrupted", "succeeded"]
    assert summary["metrics"] == {"acc": 0.93}
    model = summary["model"]
    assert (Path(model["local_model_dir"]) / "model.pkl").read_bytes() == b"weights"
    assert Path(model["model_archive"]).is_file()
    assert model["links"]["Azure ML studio"].startswith("https://ml.azure.com/runs/digits-")
    assert model["cost"]["dedicated_usd"] >= model["cost"]["billed_usd"]
    assert model["links"]["registered model"] == "azureml:digits:1"
    registered = fake.models.get("digits", version="1")
    assert registered.path.endswith(
        "/jobs/digits-" + summary["run_id"].replace("-", "")[:8] + "-a2/outputs/model"
    )


@pytest.mark.prefect
def test_a_prefect_azure_block_gives_a_service_principal_credential(prefect_server: str) -> None:
    """The block is read through Prefect's API: prefect-azure itself need not be installed."""
    from azure.identity import ClientSecretCredential
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        BlockDocumentCreate,
        BlockSchemaCreate,
        BlockTypeCreate,
    )

    from cloudtrain.backends.azure.clients import AZUREML_BLOCK_TYPE
    from cloudtrain.errors import ConfigError

    secret = "sp-secret-value-never-printed"
    with get_client(sync_client=True) as client:
        try:
            block_type = client.read_block_type_by_slug(AZUREML_BLOCK_TYPE)
        except Exception:
            block_type = client.create_block_type(
                BlockTypeCreate(name="AzureML Credentials", slug=AZUREML_BLOCK_TYPE)
            )
        schema = client.create_block_schema(
            BlockSchemaCreate(
                block_type_id=block_type.id,
                capabilities=[],
                fields={
                    "title": "AzureMlCredentials",
                    "type": "object",
                    "properties": {
                        "tenant_id": {"type": "string"},
                        "service_principal_id": {"type": "string"},
                        "service_principal_password": {"type": "string", "format": "password"},
                    },
                    "secret_fields": ["service_principal_password"],
                    "block_type_slug": AZUREML_BLOCK_TYPE,
                    "block_schema_references": {},
                },
            )
        )
        client.create_block_document(
            BlockDocumentCreate(
                name="ct-azure-sp",
                block_type_id=block_type.id,
                block_schema_id=schema.id,
                data={
                    "tenant_id": "11111111-1111-1111-1111-111111111111",
                    "service_principal_id": "22222222-2222-2222-2222-222222222222",
                    "service_principal_password": secret,
                },
            )
        )

    credential = AzureClients(AzureConfig(credentials_block="ct-azure-sp")).credential
    assert isinstance(credential, ClientSecretCredential)
    assert secret not in repr(credential)
    with pytest.raises(
        ConfigError, match="azure.credentials_block: no azureml-credentials block named 'missing'"
    ):
        AzureClients(AzureConfig(credentials_block="missing")).credential  # noqa: B018


def test_a_distributed_job_keeps_its_distribution_through_the_rest_round_trip(
    fake: FakeMLClient,
    azure_config: Callable[..., PipelineConfig],
    azure_backend: Callable[[PipelineConfig], AzureBackend],
) -> None:
    """Each node count and process count reaches the service as azure-ai-ml sends it, and
    the job read back (the SDK's entity from the stored REST body) still has them, also
    after a preemption resubmits the attempt."""
    from azure.ai.ml import PyTorchDistribution

    driver = Driver(fake)
    driver.script("a1", ("Running", None), ("Failed", "JobPreempted: low priority node lost"))
    driver.script("a2", ("Completed", None, {"model": {"model.pt": b"weights"}}))
    config = azure_config(
        compute={"instance_count": 2, "distribution": {"type": "torchrun", "processes_per_host": 2}}
    )
    _, result, _ = train(azure_backend(config), config, driver)
    assert isinstance(result, TrainingResult), result
    assert [a.outcome for a in result.attempts] == [Outcome.INTERRUPTED, Outcome.SUCCEEDED]
    for body in job_bodies(fake):
        assert body["distribution"] == {"distributionType": "PyTorch", "processCountPerInstance": 2}
        assert body["resources"]["instanceCount"] == 2
    for attempt in result.attempts:
        job = fake.jobs.get(attempt.job_name)
        assert isinstance(job.distribution, PyTorchDistribution)
        assert job.distribution.process_count_per_instance == 2
        assert job.resources.instance_count == 2
