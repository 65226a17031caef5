"""Azure ML command jobs per attempt: built and serialized by azure-ai-ml, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudtrain.backends.azure import jobs
from cloudtrain.config import PipelineConfig, load_config
from cloudtrain.recovery import Outcome
from cloudtrain.results import AttemptSpec, ComputeTarget, ResolvedEnvironment


def azure_config(tmp_path: Path, **azure: Any) -> PipelineConfig:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "train.py").write_text("print('acc=1')\n")
    raw = {
        "name": "digits",
        "cloud": "azure",
        "code": {"source_dir": "src", "entry_point": "train.py"},
        "hyperparameters": {"epochs": 3, "note": "two words"},
        "metrics": ["acc"],
        "environment": {"framework": "sklearn"},
        "compute": {"instance_type": "Standard_DS3_v2", "spot": True, "max_run": 5400},
        "azure": {
            "subscription_id": "00000000-0000-0000-0000-000000000000",
            "resource_group": "rg",
            "workspace": "ws",
            "compute": "cpu-cluster",
            **azure,
        },
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    return load_config(tmp_path / "c.yaml")


def body(config: PipelineConfig, compute: str | None, spot: bool = True) -> dict[str, Any]:
    spec = AttemptSpec(
        run_id="0123abcd",
        number=1,
        spot=spot,
        job_name="digits-0123abcd-a1",
        checkpoint_uri=jobs.datastore_uri(
            "workspaceblobstore", "cloudtrain/digits/checkpoints/0123abcd"
        ),
        channels={"train": "azureml:digits-train:ab12"},
        compute=ComputeTarget(compute or "serverless", "Standard_DS3_v2", 1),
        environment=ResolvedEnvironment(
            "curated", "azureml:AzureML-sklearn-1.5-ubuntu22.04-py39-cpu:3", "curated"
        ),
    )
    job = jobs.command_job(
        config,
        spec,
        compute=compute,
        inputs={"train": ("uri_folder", "azureml:digits-train:ab12")},
    )
    return jobs.rest_body(job)["properties"]


def test_the_command_binds_the_contract_paths_and_quotes_the_arguments(tmp_path: Path) -> None:
    props = body(azure_config(tmp_path), "cpu-cluster")
    assert props["command"] == (
        "env SM_CHANNEL_TRAIN=${{inputs.train}} SM_MODEL_DIR=${{outputs.model}} "
        "SM_OUTPUT_DATA_DIR=${{outputs.output_data}} SM_CHECKPOINT_DIR=${{outputs.checkpoints}} "
        "python train.py --epochs 3 --note 'two words'"
    )
    env = props["environmentVariables"]
    assert json.loads(env["SM_HPS"]) == {"epochs": 3, "note": "two words"}
    assert env["SM_HP_EPOCHS"] == "3" and env["CLOUDTRAIN_SPOT"] == "true"


def test_checkpoints_are_one_read_write_datastore_path_per_run(tmp_path: Path) -> None:
    props = body(azure_config(tmp_path), "cpu-cluster")
    assert props["outputs"]["checkpoints"] == {
        "uri": "azureml://datastores/workspaceblobstore/paths/cloudtrain/digits/checkpoints/0123abcd/",
        "mode": "ReadWriteMount",
        "jobOutputType": "uri_folder",
    }
    assert props["inputs"]["train"] == {
        "uri": "azureml:digits-train:ab12",
        "jobInputType": "uri_folder",
    }
    assert props["limits"] == {"timeout": "PT1H30M", "jobLimitsType": "Command"}
    assert props["computeId"] == "cpu-cluster" and "queueSettings" not in props
    assert props["experimentName"] == "digits"
    assert props["tags"]["cloudtrain:capacity"] == "low-priority"


def test_serverless_jobs_choose_their_tier(tmp_path: Path) -> None:
    config = azure_config(tmp_path, compute_type="serverless", compute=None)
    assert body(config, None, spot=True)["queueSettings"] == {"jobTier": "Spot"}
    on_demand = body(config, None, spot=False)
    assert on_demand["queueSettings"] == {"jobTier": "Standard"}
    assert on_demand["resources"]["instanceType"] == "Standard_DS3_v2"


@pytest.mark.parametrize(
    ("status", "error", "outcome"),
    [
        ("Running", "", None),
        ("Queued", "", None),
        ("Completed", "", Outcome.SUCCEEDED),
        ("Failed", "JobPreempted: the low priority node was preempted", Outcome.INTERRUPTED),
        (
            "Failed",
            "AllocationFailed: insufficient capacity for Standard_NC6s_v3",
            Outcome.NO_CAPACITY,
        ),
        ("Failed", "Job exceeded the maximum allowed time", Outcome.TIMED_OUT),
        ("Failed", "UserError: Execution failed. KeyError: 'target'", Outcome.FAILED),
        ("Canceled", "", Outcome.STOPPED),
    ],
)
def test_classification(status: str, error: str, outcome: Outcome | None) -> None:
    assert jobs.classify(status, error)[0] is outcome


def test_a_job_we_canceled_is_resumed_on_rerun() -> None:
    outcome, reason = jobs.classify("Canceled", "", canceled_by_us=True)
    assert outcome is Outcome.INTERRUPTED and "orchestrator was cancelled" in reason


def test_plan_prints_the_rest_bodies_offline(tmp_path: Path) -> None:
    """No credentials, no network: the SDK's own serializers build every body."""
    import subprocess
    import sys

    azure_config(tmp_path)  # writes c.yaml
    done = subprocess.run(
        [sys.executable, "-m", "cloudtrain.cli", "plan", str(tmp_path / "c.yaml"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    clusters = plan["compute"]
    assert clusters["cpu-cluster"]["properties"]["properties"]["vmPriority"] == "LowPriority"
    assert clusters["cpu-cluster-od"]["properties"]["properties"]["vmPriority"] == "Dedicated"
    jobs_sent = [attempt["request"]["properties"] for attempt in plan["attempts"]]
    assert [j["computeId"] for j in jobs_sent] == ["cpu-cluster", "cpu-cluster", "cpu-cluster-od"]
    assert len({j["outputs"]["checkpoints"]["uri"] for j in jobs_sent}) == 1


@pytest.mark.parametrize(
    ("cluster", "twin"),
    [
        ("cpu-cluster", "cpu-cluster-od"),
        ("gpu", "gpu-od"),
        ("abcdefghijklmnop", "abcdefghijklm-od"),  # cut to AmlCompute's 16 characters
        ("abcdefghijklm-od", "abcdefghijkld-od"),  # never the cluster itself
    ],
)
def test_the_dedicated_twin_of_a_cluster(cluster: str, twin: str) -> None:
    from cloudtrain.backends.azure.backend import fallback_compute_name

    assert fallback_compute_name(cluster) == twin
    assert len(twin) <= 16 and twin != cluster


def test_sm_channels_lists_every_channel_the_job_gets(tmp_path: Path) -> None:
    """DataFrame channels (the flow's ``dataframes``) are channels too, as locally."""
    config = azure_config(tmp_path)
    channels = {"train": "azureml:digits-train:1", "extra": "azureml:digits-extra:1"}
    spec = AttemptSpec(
        run_id="r",
        number=1,
        spot=True,
        job_name="digits-r-a1",
        checkpoint_uri="azureml://datastores/workspaceblobstore/paths/c/",
        channels=channels,
        compute=ComputeTarget("cpu-cluster", "Standard_DS3_v2", 1),
        environment=ResolvedEnvironment("curated", "azureml:env:1", "env"),
    )
    job = jobs.command_job(
        config,
        spec,
        compute="cpu-cluster",
        inputs={c: ("uri_folder", u) for c, u in channels.items()},
    )
    assert json.loads(job.environment_variables["SM_CHANNELS"]) == ["extra", "train"]
