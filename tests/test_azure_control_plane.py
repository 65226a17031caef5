"""Azure ML control plane: compute, environments and prices, against FakeMLClient.

The fake takes and returns azure-ai-ml's real entities and checks each write against the
SDK's REST model (see tests/azure_fake.py), so a body the service would refuse fails here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.ai.ml.entities import AmlCompute, ComputeInstance, Environment, KubernetesCompute
from azure.ai.ml.exceptions import ValidationException
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure_fake import CURATED_CATALOGUE, FakeMLClient, rest_problems

from cloudtrain.backends.azure.compute import (
    cluster_drift,
    desired_cluster,
    ensure_compute,
    validate_compute,
)
from cloudtrain.backends.azure.environments import (
    parse_curated_name,
    plan_environment,
    resolve_environment,
)
from cloudtrain.backends.azure.pricing import (
    DEDICATED_USD_PER_HOUR,
    LOW_PRIORITY_USD_PER_HOUR,
    PRICES_AS_OF,
    estimate_cost,
)
from cloudtrain.backends.azure.vm_sizes import SUPPORTED_VM_SIZES, is_gpu_size
from cloudtrain.config import PipelineConfig, validate_config
from cloudtrain.errors import BackendError, ConfigError, TransientError, UnsupportedError

CLUSTER = "cpu-cluster"
SKLEARN_10 = "AzureML-sklearn-1.0-ubuntu20.04-py38-cpu"


@pytest.fixture
def fake() -> FakeMLClient:
    return FakeMLClient()


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., PipelineConfig]:
    """An Azure config in a tmp folder; sections are merged into the defaults."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print('ok')\n")

    def make(**sections: Any) -> PipelineConfig:
        raw: dict[str, Any] = {
            "name": "digits",
            "cloud": "azure",
            "code": {"source_dir": "src", "entry_point": "train.py"},
            "environment": {"framework": "sklearn", "framework_version": "1.5"},
            "compute": {"instance_type": "Standard_DS3_v2", "spot": True},
            "azure": {
                "subscription_id": "00000000-0000-0000-0000-000000000000",
                "resource_group": "rg",
                "workspace": "ws",
                "compute": CLUSTER,
            },
        }
        for key, value in sections.items():
            raw[key] = {**raw[key], **value} if key in ("compute", "azure") else value
        return validate_config(raw, base_dir=tmp_path)

    return make


def ensure(fake: FakeMLClient, config: PipelineConfig, **kwargs: Any) -> Any:
    kwargs.setdefault("poll", lambda seconds: None)
    kwargs.setdefault("log", lambda line: None)
    return ensure_compute(fake, config, **kwargs)


def existing_cluster(fake: FakeMLClient, **settings: Any) -> None:
    values = {"size": "Standard_DS3_v2", "tier": "low_priority", "max_instances": 4}
    fake.compute.add(AmlCompute(name=CLUSTER, **{**values, **settings}))


def sent(fake: FakeMLClient, op: str) -> list[dict[str, Any]]:
    return [call.body for call in fake.calls if call.op == op and call.body is not None]


# --- amlcompute ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("spot", "priority"), [(True, "LowPriority"), (False, "Dedicated")])
def test_missing_cluster_is_created_as_configured(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig], spot: bool, priority: str
) -> None:
    config = make_config(compute={"spot": spot}, azure={"min_instances": 0, "max_instances": 3})

    target = ensure(fake, config)

    assert fake.ops() == ["compute.get", "compute.begin_create_or_update", "compute.get"]
    (body,) = sent(fake, "compute.begin_create_or_update")
    assert body["properties"]["computeType"] == "AmlCompute"
    cluster = body["properties"]["properties"]
    assert cluster["vmSize"] == "Standard_DS3_v2"
    assert cluster["vmPriority"] == priority
    assert cluster["scaleSettings"] == {
        "minNodeCount": 0,
        "maxNodeCount": 3,
        "nodeIdleTimeBeforeScaleDown": "PT2M",
    }
    assert target.name == CLUSTER
    assert target.instance_type == "Standard_DS3_v2"
    assert target.details["action"] == "created"
    assert target.details["provisioning_state"] == "Succeeded"
    assert target.details["tier"] == ("low_priority" if spot else "dedicated")


def test_existing_cluster_drift_is_updated_in_place_except_the_tier(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    existing_cluster(fake, tier="dedicated", max_instances=2, idle_time_before_scale_down=600)
    config = make_config(azure={"max_instances": 4, "idle_time_before_scale_down": 120})
    lines: list[str] = []

    target = ensure(fake, config, log=lines.append)

    assert "compute.begin_delete" not in fake.ops()
    (body,) = sent(fake, "compute.begin_create_or_update")
    cluster = body["properties"]["properties"]
    assert cluster["scaleSettings"]["maxNodeCount"] == 4
    assert cluster["scaleSettings"]["nodeIdleTimeBeforeScaleDown"] == "PT2M"
    assert cluster["vmPriority"] == "Dedicated"  # the tier cannot change in place
    drift = {d["field"]: d for d in target.details["drift"]}
    assert drift["max_instances"] == {
        "field": "max_instances",
        "current": 2,
        "wanted": 4,
        "applied": True,
    }
    assert drift["idle_time_before_scale_down"]["current"] == 600
    assert drift["idle_time_before_scale_down"]["applied"] is True
    assert drift["tier"] == {
        "field": "tier",
        "current": "dedicated",
        "wanted": "low_priority",
        "applied": False,
    }
    assert target.details["action"] == "updated"
    assert target.details["tier"] == "dedicated"
    assert any("delete and create" in w and "full price" in w for w in target.warnings)
    assert any("max_instances 2 -> 4" in line for line in lines)
    stored = fake.compute.wire(CLUSTER)["properties"]["properties"]
    assert stored["vmPriority"] == "Dedicated"
    assert stored["scaleSettings"]["maxNodeCount"] == 4


def test_size_drift_is_reported_and_the_job_runs_on_the_existing_size(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    existing_cluster(fake, size="Standard_DS2_v2")

    target = ensure(fake, make_config())

    assert fake.ops() == ["compute.get"]  # nothing it could change, so nothing sent
    assert target.instance_type == "Standard_DS2_v2"
    assert target.details["drift"] == [
        {
            "field": "size",
            "current": "Standard_DS2_v2",
            "wanted": "Standard_DS3_v2",
            "applied": False,
        }
    ]
    assert "jobs run on Standard_DS2_v2" in target.warnings[0]


def test_unchanged_cluster_gets_no_write(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    existing_cluster(fake, size="STANDARD_DS3_V2")  # the service may answer in capitals

    target = ensure(fake, make_config())

    assert fake.ops() == ["compute.get"]
    assert target.details["action"] == "unchanged"
    assert target.details["drift"] == []


def test_failed_provisioning_is_a_clear_error(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    fake.compute.next_provisioning(
        CLUSTER, "Failed", code="QuotaExceeded", message="not enough LowPriority cores"
    )

    with pytest.raises(
        BackendError, match=r"cpu-cluster provisioning Failed \(QuotaExceeded\).*quota"
    ):
        ensure(fake, make_config())
    assert "compute.begin_delete" not in fake.ops()


def test_provisioning_that_never_settles_times_out(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    fake.compute.next_provisioning(CLUSTER, after_reads=float("inf"))
    slept: list[float] = []

    with pytest.raises(
        TransientError, match=r"cpu-cluster still in provisioning state Creating.*timeout 60 s"
    ):
        ensure(fake, make_config(), timeout_seconds=60, poll=slept.append)
    assert slept == [5.0, 7.5, 11.25, 16.875, 25.3125]  # the delays grow; their sum passes 60


def test_a_failed_cluster_is_reported_never_deleted(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    fake.compute.add(
        AmlCompute(name=CLUSTER, size="Standard_DS3_v2", tier="low_priority"),
        provisioning_state="Failed",
    )

    with pytest.raises(BackendError, match="never deletes"):
        ensure(fake, make_config())
    assert fake.ops() == ["compute.get"]


def test_a_name_taken_by_another_kind_of_compute_is_refused(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    fake.compute.add(ComputeInstance(name=CLUSTER, size="Standard_DS3_v2"))

    with pytest.raises(ConfigError, match="is a computeinstance, not amlcompute") as caught:
        ensure(fake, make_config())
    assert caught.value.field == "azure.compute_type"
    assert fake.ops() == ["compute.get"]


# --- compute instance, kubernetes, serverless ------------------------------------------------


def instance_config(make_config: Callable[..., PipelineConfig]) -> PipelineConfig:
    return make_config(
        compute={"spot": False}, azure={"compute_type": "computeinstance", "compute": "ci-alice"}
    )


def test_compute_instance_must_exist(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    with pytest.raises(ConfigError, match="compute instance 'ci-alice' does not exist"):
        ensure(fake, instance_config(make_config))
    assert "compute.begin_create_or_update" not in fake.ops()


def test_compute_instance_must_be_running(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    fake.compute.add(ComputeInstance(name="ci-alice", size="Standard_DS3_v2"), state="Stopped")

    with pytest.raises(BackendError, match="ci-alice is Stopped, not Running; start it"):
        ensure(fake, instance_config(make_config))


def test_a_starting_compute_instance_is_waited_for(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    fake.compute.add(ComputeInstance(name="ci-alice", size="Standard_DS11_v2"), state="Starting")

    target = ensure(
        fake,
        instance_config(make_config),
        poll=lambda s: fake.compute.set_state("ci-alice", "Running"),
    )

    assert target.details == {
        "compute_type": "computeinstance",
        "action": "checked",
        "state": "Running",
    }
    assert target.warnings == (
        "compute.instance_type: Standard_DS3_v2 differs from the size of compute instance "
        "ci-alice (Standard_DS11_v2); the job runs on Standard_DS11_v2",
    )
    assert target.instance_type == "Standard_DS11_v2"
    assert not fake.writes()


def test_compute_instance_is_one_node_without_spot(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    azure = {"compute_type": "computeinstance", "compute": "ci-alice"}
    with pytest.raises(ConfigError, match="one VM") as caught:
        ensure(fake, make_config(compute={"spot": False, "instance_count": 2}, azure=azure))
    assert caught.value.field == "compute.instance_count"
    with pytest.raises(UnsupportedError, match="no low-priority tier"):
        ensure(fake, make_config(compute={"spot": True}, azure=azure))
    assert fake.calls == []


def test_kubernetes_compute_must_be_attached(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    config = make_config(
        compute={"spot": False, "instance_type": "defaultinstancetype"},
        azure={"compute_type": "kubernetes", "compute": "aks-train"},
    )
    with pytest.raises(ConfigError, match="attached kubernetes compute 'aks-train' does not exist"):
        ensure(fake, config)

    fake.compute.add(
        KubernetesCompute(
            name="aks-train",
            resource_id="/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg"
            "/providers/Microsoft.ContainerService/managedClusters/aks-train",
            namespace="training",
        )
    )
    target = ensure(fake, config)
    assert target.instance_type == "defaultinstancetype"
    assert target.details["action"] == "checked"
    assert target.details["namespace"] == "training"
    assert not fake.writes()


def test_serverless_needs_no_compute(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    target = ensure(fake, make_config(azure={"compute_type": "serverless", "compute": None}))

    assert fake.calls == []
    assert target.name == "serverless"
    assert target.details == {
        "compute_type": "serverless",
        "action": "none",
        "tier": "spot",
    }
    assert target.warnings == ()


# --- refused before any call ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instance_type", "message"),
    [
        ("Standard_DS3v2", "did you mean 'Standard_DS3_v2'"),
        ("Standard_NC6s_v4", "did you mean 'Standard_NC6s_v3'"),
        ("ml.m5.large", "SageMaker instance type; .* closest Azure size is Standard_D2s_v3"),
        ("Standard_NC6", "retired by Azure; use Standard_NC4as_T4_v3 or Standard_NC6s_v3"),
        ("Standard_Z9", "unknown Azure ML VM size 'Standard_Z9'; known sizes: Standard_DS1_v2"),
    ],
)
def test_vm_size_typos_are_refused_before_any_call(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig], instance_type: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        ensure(fake, make_config(compute={"instance_type": instance_type}))
    assert caught.value.field == "compute.instance_type"
    assert fake.calls == []


def test_vm_sizes_match_without_case(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    target = ensure(fake, make_config(compute={"instance_type": "standard_ds3_v2"}))

    assert (
        sent(fake, "compute.begin_create_or_update")[0]["properties"]["properties"]["vmSize"]
        == "Standard_DS3_v2"
    )
    assert target.instance_type == "Standard_DS3_v2"


@pytest.mark.parametrize(
    ("sections", "field", "message"),
    [
        (
            {"azure": {"min_instances": 5, "max_instances": 2}},
            "azure.min_instances",
            "5 is more than azure.max_instances \\(2\\)",
        ),
        (
            {"compute": {"instance_count": 6}},
            "compute.instance_count",
            "6 nodes need azure.max_instances >= 6 \\(it is 4\\)",
        ),
        (
            {"azure": {"compute": "cluster_with_underscores"}},
            "azure.compute",
            "between 2 and 16 characters",
        ),
        ({"azure": {"compute": None}}, "azure.compute", "is required for compute_type amlcompute"),
    ],
)
def test_cluster_settings_are_refused_before_any_call(
    fake: FakeMLClient,
    make_config: Callable[..., PipelineConfig],
    sections: dict[str, Any],
    field: str,
    message: str,
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        ensure(fake, make_config(**sections))
    assert caught.value.field == field
    assert fake.calls == []


def test_validate_compute_warns_about_idle_nodes(
    make_config: Callable[..., PipelineConfig],
) -> None:
    warnings = validate_compute(make_config(azure={"min_instances": 1}))

    assert warnings == [
        "azure.min_instances: 1 node(s) stay allocated, and billed, while the cluster is idle"
    ]


def test_cluster_drift_compares_as_the_service_normalises(
    make_config: Callable[..., PipelineConfig],
) -> None:
    desired = desired_cluster(make_config(), low_priority=True)
    same = AmlCompute(name=CLUSTER, size="standard_ds3_v2", tier="LowPriority", max_instances=4)
    same.idle_time_before_scale_down = 120.0  # type: ignore[assignment]  # as a GET gives

    assert cluster_drift(same, desired) == []
    other = AmlCompute(
        name=CLUSTER, size="Standard_F4s_v2", tier=None, min_instances=1, max_instances=4
    )
    assert cluster_drift(other, desired) == [
        ("size", "Standard_F4s_v2", "Standard_DS3_v2"),
        ("tier", "dedicated", "low_priority"),
        ("min_instances", 1, 0),
    ]


def test_gpu_sizes() -> None:
    assert is_gpu_size("Standard_NC6s_v3")
    assert is_gpu_size("standard_nc4as_t4_v3")
    assert is_gpu_size("Standard_NV6ads_A10_v5")  # a sixth of an A10 is still a GPU
    assert not is_gpu_size("Standard_DS3_v2")
    assert not is_gpu_size("Standard_F4s_v2")


# --- environments ----------------------------------------------------------------------------


def resolve(fake: FakeMLClient, config: PipelineConfig, gpu: bool = False) -> Any:
    return resolve_environment(fake, config, gpu=gpu)


def test_curated_with_a_version(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    env = resolve(fake, make_config(environment={"curated": f"{SKLEARN_10}@40"}))

    assert env.reference == f"azureml://registries/azureml/environments/{SKLEARN_10}/versions/40"
    assert (env.name, env.version, env.kind, env.warnings) == (SKLEARN_10, "40", "curated", ())
    assert env.image == "mcr.microsoft.com/azureml/curated/sklearn-1.0-ubuntu20.04-py38-cpu:40"
    assert [(c.op, c.name, c.body) for c in fake.calls] == [
        ("environments.get", SKLEARN_10, {"version": "40", "label": None})
    ]


@pytest.mark.parametrize("spec", [f"{SKLEARN_10}@latest", SKLEARN_10])
def test_curated_latest_or_without_version(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig], spec: str
) -> None:
    env = resolve(fake, make_config(environment={"curated": spec}))

    assert env.version == "44"  # the newest in the catalogue
    assert env.reference.endswith(f"/{SKLEARN_10}/versions/44")
    assert env.warnings == (
        f"environment.curated: no version, so {SKLEARN_10} version 44 (the latest) is used; "
        f"pin it as {SKLEARN_10}@44 for repeatable runs",
    )
    assert fake.calls[0].body == {"version": None, "label": "latest"}


def test_curated_typo_gets_the_closest_names(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    with pytest.raises(ConfigError, match=f"closest: {SKLEARN_10}, ") as caught:
        resolve(
            fake, make_config(environment={"curated": "AzureML-sklern-1.0-ubuntu20.04-py38-cpu@44"})
        )
    assert caught.value.field == "environment.curated"
    with pytest.raises(ConfigError, match=r"has no version '99'; its versions: \.\.\., 35, .* 44"):
        resolve(fake, make_config(environment={"curated": f"{SKLEARN_10}@99"}))
    assert not fake.writes()


@pytest.mark.parametrize(
    ("framework", "version", "gpu", "expected"),
    [
        ("sklearn", "1.5", False, "AzureML-sklearn-1.5-ubuntu22.04-py39-cpu"),
        ("sklearn", "1.0.2", False, SKLEARN_10),
        ("pytorch", None, True, "AzureML-acpt-pytorch-2.2-cuda12.1"),
        ("pytorch", "1.13", True, "AzureML-pytorch-1.13-ubuntu20.04-py38-cuda11.7-gpu"),
        ("tensorflow", "2", True, "AzureML-tensorflow-2.16-cuda12"),
    ],
)
def test_framework_picks_the_best_curated_environment(
    fake: FakeMLClient,
    make_config: Callable[..., PipelineConfig],
    framework: str,
    version: str | None,
    gpu: bool,
    expected: str,
) -> None:
    environment = {"framework": framework, **({"framework_version": version} if version else {})}
    env = resolve(fake, make_config(environment=environment), gpu=gpu)

    assert (env.kind, env.name) == ("framework", expected)
    newest = dict(CURATED_CATALOGUE)[expected]
    assert (
        env.reference == f"azureml://registries/azureml/environments/{expected}/versions/{newest}"
    )
    assert any(w.startswith("environment.framework_version: not set") for w in env.warnings) == (
        version is None
    )
    assert not fake.writes()


def test_gpu_size_picks_gpu_and_warns_when_only_cpu_exists(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    gpu = is_gpu_size("Standard_NC6s_v3")
    env = resolve(
        fake, make_config(environment={"framework": "sklearn", "framework_version": "1.5"}), gpu=gpu
    )

    assert env.name == "AzureML-sklearn-1.5-ubuntu22.04-py39-cpu"
    assert "no curated sklearn environment for GPU sizes" in env.warnings[0]


def test_a_version_no_curated_environment_has_builds_a_custom_one(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    env = resolve(
        fake, make_config(environment={"framework": "sklearn", "framework_version": "1.2-1"})
    )

    assert env.kind == "custom"
    assert env.image == "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
    assert "scikit-learn==1.2.*" in (env.conda_file or "")
    assert "curated sklearn versions: 0.24, 1.0, 1.5" in env.warnings[0]
    (body,) = sent(fake, "environments.create_or_update")
    assert "scikit-learn==1.2.*" in body["properties"]["condaFile"]


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        (
            "AzureML-sklearn-1.5-ubuntu22.04-py39-cpu",
            ("sklearn", "1.5", "ubuntu22.04", "3.9", None, "cpu", False),
        ),
        (
            "AzureML-pytorch-1.13-ubuntu20.04-py38-cuda11.7-gpu",
            ("pytorch", "1.13", "ubuntu20.04", "3.8", "11.7", "gpu", False),
        ),
        ("AzureML-acpt-pytorch-2.2-cuda12.1", ("pytorch", "2.2", None, None, "12.1", "gpu", True)),
        ("AzureML-tensorflow-2.16-cuda12", ("tensorflow", "2.16", None, None, "12", "gpu", False)),
        ("AzureML-lightgbm-3.3", ("lightgbm", "3.3", None, None, None, "cpu", False)),
        (
            "AzureML-sklearn-1.0-ubuntu20.04-py310-cpu",
            ("sklearn", "1.0", "ubuntu20.04", "3.10", None, "cpu", False),
        ),
    ],
)
def test_curated_names_are_parsed(name: str, parsed: tuple[Any, ...]) -> None:
    result = parse_curated_name(name)
    assert result is not None
    assert (
        result.framework,
        result.version,
        result.os,
        result.python,
        result.cuda,
        result.accelerator,
        result.acpt,
    ) == parsed


def test_names_outside_the_convention_are_not_frameworks() -> None:
    assert parse_curated_name("AzureML-Minimal-Ubuntu20.04-py38-cpu-inference") is None
    assert parse_curated_name("AzureML-AI-Studio-Development") is None
    inference = parse_curated_name("AzureML-sklearn-1.0-ubuntu20.04-py38-cpu-inference")
    assert inference is not None and inference.extras == ("inference",)


def test_image_becomes_a_custom_environment_created_once(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    config = make_config(environment={"image": "contoso.azurecr.io/train:1.4"})

    first = resolve(fake, config)
    second = resolve(fake, config)

    assert first == second
    assert first.kind == "image"
    assert first.reference == f"azureml:cloudtrain-digits:{first.version}"
    assert fake.ops("environments.create_or_update") == ["environments.create_or_update"]
    (body,) = sent(fake, "environments.create_or_update")
    assert body["properties"]["image"] == "contoso.azurecr.io/train:1.4"
    assert body == plan_environment(config, gpu=False)["create_or_reuse"]  # plan is the request
    other = resolve(fake, make_config(environment={"image": "contoso.azurecr.io/train:1.5"}))
    assert other.version != first.version
    assert [e.version for e in fake.environments.list(name="cloudtrain-digits")] == [
        first.version,
        other.version,
    ]


def test_an_ecr_image_is_refused_before_any_call(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig]
) -> None:
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/train:1.0"
    with pytest.raises(UnsupportedError, match="Amazon ECR"):
        resolve(fake, make_config(environment={"image": image}))
    assert fake.calls == []


def test_requirements_make_a_custom_environment_on_the_chosen_base(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig], tmp_path: Path
) -> None:
    (tmp_path / "src" / "requirements.txt").write_text(
        "# extras\npandas>=2.2\nrich==13.7.1  # logs\n\n"
    )

    env = resolve(fake, make_config(environment={"curated": f"{SKLEARN_10}@44"}))

    assert env.kind == "custom"
    assert env.name == "cloudtrain-digits"
    assert env.image == "mcr.microsoft.com/azureml/curated/sklearn-1.0-ubuntu20.04-py38-cpu:44"
    (body,) = sent(fake, "environments.create_or_update")
    conda = body["properties"]["condaFile"]
    assert conda == env.conda_file
    assert "python=3.8" in conda  # the curated environment's Python, from its name
    for line in ("scikit-learn==1.0.*", "pandas>=2.2", "rich==13.7.1"):
        assert f"  - {line}\n" in conda
    assert any("new conda environment" in w for w in env.warnings)
    again = resolve(fake, make_config(environment={"curated": f"{SKLEARN_10}@44"}))
    assert again.version == env.version
    assert len(sent(fake, "environments.create_or_update")) == 1


def test_requirements_that_include_local_files_are_refused(
    fake: FakeMLClient, make_config: Callable[..., PipelineConfig], tmp_path: Path
) -> None:
    (tmp_path / "src" / "requirements.txt").write_text("numpy\n-r base.txt\n")

    with pytest.raises(ConfigError, match="line 2: '-r base.txt' refers to local files"):
        resolve(fake, make_config())
    assert fake.calls == []


def test_builtin_is_refused(fake: FakeMLClient, make_config: Callable[..., PipelineConfig]) -> None:
    config = make_config(environment={"builtin": "kmeans"})

    for attempt in (lambda: resolve(fake, config), lambda: plan_environment(config, gpu=False)):
        with pytest.raises(UnsupportedError, match="Azure ML has no built-in algorithms") as caught:
            attempt()
        assert caught.value.field == "environment.builtin"
    assert fake.calls == []


def test_plan_environment_is_offline(make_config: Callable[..., PipelineConfig]) -> None:
    assert plan_environment(
        make_config(environment={"curated": f"{SKLEARN_10}@44"}), gpu=False
    ) == {
        "kind": "curated",
        "lookup": {"registry": "azureml", "name": SKLEARN_10, "version": "44"},
    }
    framework = plan_environment(make_config(), gpu=True)
    assert framework["select"]["accelerator"] == "gpu"
    assert framework["select"]["version"] == "1.5"


# --- the fake refuses what the service would --------------------------------------------------


def test_the_fake_refuses_invalid_compute_entities(fake: FakeMLClient) -> None:
    with pytest.raises(
        HttpResponseError, match="vmPriority: 'Spot' is not one of Dedicated, LowPriority"
    ) as caught:
        fake.compute.begin_create_or_update(
            AmlCompute(name="spotty", size="Standard_DS3_v2", tier="spot")
        )
    assert caught.value.status_code == 400
    with pytest.raises(HttpResponseError, match="maxNodeCount: expected an integer, got 'four'"):
        wrong: Any = "four"
        fake.compute.begin_create_or_update(
            AmlCompute(name="typed", size="Standard_DS3_v2", max_instances=wrong)
        )
    with pytest.raises(HttpResponseError, match="VM size Standard_XL9 is not supported"):
        fake.compute.begin_create_or_update(AmlCompute(name="sized", size="Standard_XL9"))
    with pytest.raises(TypeError, match="expected an azure.ai.ml.entities.Compute"):
        fake.compute.begin_create_or_update({"name": "dict", "size": "Standard_DS3_v2"})  # type: ignore[arg-type]
    existing_cluster(fake)
    with pytest.raises(HttpResponseError, match="Updating the VM priority"):
        fake.compute.begin_create_or_update(
            AmlCompute(name=CLUSTER, size="Standard_DS3_v2", tier="dedicated")
        )
    assert fake.compute.list() and [c.name for c in fake.compute.list()] == [CLUSTER]


def test_the_fake_checks_the_rest_model_itself() -> None:
    from azure.ai.ml._restclient.arm_ml_service import models as rest

    assert rest_problems(rest.ScaleSettings, {"minNodeCount": 0}) == ["maxNodeCount: required"]
    assert rest_problems(
        rest.ScaleSettings, {"maxNodeCount": 2, "nodeIdleTimeBeforeScaleDown": "2 minutes"}
    ) == ["nodeIdleTimeBeforeScaleDown: '2 minutes' is not an ISO 8601 duration"]
    assert rest_problems(
        rest.ComputeResource,
        {"properties": {"computeType": "AmlCompute", "properties": {"vmSize": 4}}},
    ) == ["properties.properties.vmSize: expected a string, got 4"]


def test_the_fake_enforces_asset_rules(fake: FakeMLClient) -> None:
    with pytest.raises(HttpResponseError, match="reserved for curated environments"):
        fake.environments.create_or_update(
            Environment(name="AzureML-mine", version="1", image="python:3.11")
        )
    fake.environments.create_or_update(Environment(name="mine", version="1", image="python:3.11"))
    with pytest.raises(ResourceExistsError, match="immutable"):
        fake.environments.create_or_update(
            Environment(name="mine", version="1", image="python:3.12")
        )
    with pytest.raises(ValidationException, match="Must provide either version or label"):
        fake.environments.get("mine")
    with pytest.raises(ValidationException, match="Asset nothing does not exist"):
        fake.environments.get("nothing", label="latest")


def test_the_fake_runs_command_jobs(fake: FakeMLClient, tmp_path: Path) -> None:
    from azure.ai.ml import Input, Output, command
    from azure.ai.ml.entities import Data

    existing_cluster(fake)
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text("print('hi')\n")
    uri = "azureml://datastores/workspaceblobstore/paths/cloudtrain/digits/data/train/"
    fake.data.create_or_update(
        Data(name="digits-train", version="abc", type="uri_folder", path=uri)
    )

    def job(data: str) -> Any:
        return command(
            name="digits-run-a1",
            code=str(tmp_path / "code"),
            command="python train.py --epochs ${{inputs.epochs}}",
            inputs={"train": Input(type="uri_folder", path=data), "epochs": 3},
            environment=f"azureml://registries/azureml/environments/{SKLEARN_10}/versions/44",
            compute=CLUSTER,
            outputs={"model": Output(type="uri_folder")},
        )

    with pytest.raises(HttpResponseError, match="digits-train and version nope"):
        fake.jobs.create_or_update(job("azureml:digits-train:nope"))
    created = fake.jobs.create_or_update(job("azureml:digits-train:abc"))

    assert created.status == "Starting"
    assert fake.jobs.code_of("digits-run-a1") == {"train.py": b"print('hi')\n"}
    (body,) = sent(fake, "jobs.create_or_update")
    assert body["properties"]["jobType"] == "Command"
    assert body["properties"]["computeId"].endswith(f"/computes/{CLUSTER}")
    fake.jobs.put_files("digits-run-a1", {"user_logs/std_log.txt": "val_accuracy=0.9\n"})
    fake.jobs.put_files("digits-run-a1", {"model.joblib": b"\x00"}, output_name="model")
    fake.jobs.set_status("digits-run-a1", "Failed", error="low priority node preempted")

    assert fake.jobs.get("digits-run-a1").status == "Failed"
    details = fake.jobs._runs_operations.get_run_details("digits-run-a1")
    assert details.error.error.message == "low priority node preempted"
    assert details.start_time_utc is not None and details.end_time_utc is not None
    fake.jobs.download("digits-run-a1", download_path=str(tmp_path / "out"), all=True)
    assert (
        tmp_path / "out" / "artifacts" / "user_logs" / "std_log.txt"
    ).read_text() == "val_accuracy=0.9\n"
    assert (tmp_path / "out" / "named-outputs" / "model" / "model.joblib").read_bytes() == b"\x00"


# --- prices ------------------------------------------------------------------------------------


def test_every_supported_size_has_a_price() -> None:
    priced = {size.lower() for size in DEDICATED_USD_PER_HOUR}
    assert priced == set(SUPPORTED_VM_SIZES)
    assert all(size.usd_per_hour > 0 for size in SUPPORTED_VM_SIZES.values())
    assert set(LOW_PRIORITY_USD_PER_HOUR) == set(DEDICATED_USD_PER_HOUR)
    assert all(
        LOW_PRIORITY_USD_PER_HOUR[s] < DEDICATED_USD_PER_HOUR[s] for s in DEDICATED_USD_PER_HOUR
    )


def test_low_priority_cost_against_dedicated() -> None:
    cost = estimate_cost("standard_ds3_v2", nodes=2, seconds=1800, low_priority=True)

    assert cost is not None
    assert cost.vm_size == "Standard_DS3_v2"
    assert cost.dedicated_usd == pytest.approx(0.293)  # 2 nodes x half an hour
    assert cost.billed_usd == pytest.approx(0.293 * 0.2)
    assert cost.saved_usd == pytest.approx(0.293 * 0.8)
    assert cost.saved_percent == pytest.approx(80.0)
    assert cost.prices_as_of == PRICES_AS_OF
    dedicated = estimate_cost("Standard_DS3_v2", 2, 1800, False)
    assert (
        dedicated is not None
        and dedicated.saved_usd == 0
        and dedicated.billed_usd == cost.dedicated_usd
    )
    assert estimate_cost("Standard_Z9", 1, 60, True) is None
    assert json.dumps(cost.__dict__)  # plain values, fit for a run summary
