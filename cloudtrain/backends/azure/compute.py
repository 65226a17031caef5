"""Make sure the Azure ML compute a job needs exists, without ever deleting anything.

``azure.compute_type`` picks the kind:

- ``amlcompute`` (default): a cluster cloudtrain creates when missing. When it exists but
  differs from the config, the difference is reported; min/max nodes and the idle time
  are updated in place, while the VM size and the tier (dedicated / low priority) are
  fixed at creation on Azure ML (changing them means delete and create), so they are
  reported and left alone.
- ``computeinstance``: a single VM someone created; it must exist and be running.
- ``kubernetes``: an attached cluster; it must exist. ``compute.instance_type`` then names
  an instance type defined on that cluster, not a VM size.
- ``serverless``: Azure ML picks the machines per job; there is nothing to ensure.

Everything that can be checked offline is checked in ``validate_compute`` first, so a typo
costs one line, not a failed request. azure-ai-ml is imported inside functions (~1.3 s).
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from cloudtrain.backends.azure.errors import service_error, text
from cloudtrain.backends.azure.settings import AzureConfig
from cloudtrain.backoff import Backoff
from cloudtrain.errors import (
    BackendError,
    ConfigError,
    TransientError,
    UnsupportedError,
)
from cloudtrain.results import ComputeTarget

if TYPE_CHECKING:
    from azure.ai.ml.entities import AmlCompute

    from cloudtrain.config import PipelineConfig

#: Seconds to wait for a cluster to provision or an instance to start (cluster creation
#: with min 0 nodes takes about a minute; a compute instance start about five).
DEFAULT_TIMEOUT_SECONDS = 15 * 60.0
#: Provisioning polls: 5 s, 7.5 s, 11 s, ... capped at 30 s (~10 polls in the first 3 min).
POLL_INITIAL_SECONDS = 5.0
POLL_MAX_SECONDS = 30.0

#: AmlCompute names, as the service words its rule: letters, digits and dashes, starting
#: with a letter, ending with a letter or digit, 2 to 16 characters.
CLUSTER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,14}[A-Za-z0-9]$")
#: Cluster fields Azure ML updates in place; the others need delete and create.
IN_PLACE_FIELDS: tuple[str, ...] = ("min_instances", "max_instances", "idle_time_before_scale_down")
CREATED_BY_TAG = ("created-by", "cloudtrain")

_TERMINAL_FAILURES = frozenset({"failed", "canceled"})
_INSTANCE_TRANSITIONS = frozenset(
    {"creating", "starting", "restarting", "settingup", "usersettingup", "resizing"}
)


@dataclass(frozen=True)
class VmSize:
    """One Azure VM size as Azure ML training uses it."""

    name: str
    vcpus: int
    memory_gib: float
    gpus: float = 0  # fractions for partitioned GPUs (NVadsA10 v5)
    gpu: str | None = None


def _sizes(*rows: VmSize) -> Mapping[str, VmSize]:
    return MappingProxyType({row.name.lower(): row for row in rows})


#: The VM sizes cloudtrain knows, from the Azure VM size documentation (vCPUs, memory,
#: GPUs). Sizes are case-insensitive on Azure, hence the lower-case keys.
SUPPORTED_VM_SIZES: Mapping[str, VmSize] = _sizes(
    # General purpose, Dv2 / DSv2
    VmSize("Standard_DS1_v2", 1, 3.5),
    VmSize("Standard_DS2_v2", 2, 7),
    VmSize("Standard_DS3_v2", 4, 14),
    VmSize("Standard_DS4_v2", 8, 28),
    VmSize("Standard_DS5_v2", 16, 56),
    # Memory optimized, DSv2 11-14
    VmSize("Standard_DS11_v2", 2, 14),
    VmSize("Standard_DS12_v2", 4, 28),
    VmSize("Standard_DS13_v2", 8, 56),
    VmSize("Standard_DS14_v2", 16, 112),
    # General purpose, Dsv3
    VmSize("Standard_D2s_v3", 2, 8),
    VmSize("Standard_D4s_v3", 4, 16),
    VmSize("Standard_D8s_v3", 8, 32),
    VmSize("Standard_D16s_v3", 16, 64),
    VmSize("Standard_D32s_v3", 32, 128),
    # Memory optimized, Esv3
    VmSize("Standard_E4s_v3", 4, 32),
    VmSize("Standard_E8s_v3", 8, 64),
    VmSize("Standard_E16s_v3", 16, 128),
    # Compute optimized, Fsv2
    VmSize("Standard_F2s_v2", 2, 4),
    VmSize("Standard_F4s_v2", 4, 8),
    VmSize("Standard_F8s_v2", 8, 16),
    VmSize("Standard_F16s_v2", 16, 32),
    VmSize("Standard_F32s_v2", 32, 64),
    VmSize("Standard_F72s_v2", 72, 144),
    # NVIDIA V100
    VmSize("Standard_NC6s_v3", 6, 112, 1, "V100 16 GB"),
    VmSize("Standard_NC12s_v3", 12, 224, 2, "V100 16 GB"),
    VmSize("Standard_NC24s_v3", 24, 448, 4, "V100 16 GB"),
    VmSize("Standard_NC24rs_v3", 24, 448, 4, "V100 16 GB, InfiniBand"),
    # NVIDIA T4
    VmSize("Standard_NC4as_T4_v3", 4, 28, 1, "T4 16 GB"),
    VmSize("Standard_NC8as_T4_v3", 8, 56, 1, "T4 16 GB"),
    VmSize("Standard_NC16as_T4_v3", 16, 110, 1, "T4 16 GB"),
    VmSize("Standard_NC64as_T4_v3", 64, 440, 4, "T4 16 GB"),
    # NVIDIA A10 (the smaller sizes get a partition of one GPU)
    VmSize("Standard_NV6ads_A10_v5", 6, 55, 1 / 6, "A10 1/6 partition"),
    VmSize("Standard_NV12ads_A10_v5", 12, 110, 1 / 3, "A10 1/3 partition"),
    VmSize("Standard_NV18ads_A10_v5", 18, 220, 1 / 2, "A10 1/2 partition"),
    VmSize("Standard_NV36ads_A10_v5", 36, 440, 1, "A10 24 GB"),
    # NVIDIA A100
    VmSize("Standard_NC24ads_A100_v4", 24, 220, 1, "A100 80 GB"),
    VmSize("Standard_NC48ads_A100_v4", 48, 440, 2, "A100 80 GB"),
    VmSize("Standard_NC96ads_A100_v4", 96, 880, 4, "A100 80 GB"),
    VmSize("Standard_ND96asr_v4", 96, 900, 8, "A100 40 GB, InfiniBand"),
    VmSize("Standard_ND96amsr_A100_v4", 96, 1900, 8, "A100 80 GB, InfiniBand"),
)

#: Sizes Azure has retired, with the usual replacement.
RETIRED_VM_SIZES: Mapping[str, str] = MappingProxyType(
    {
        "standard_nc6": "Standard_NC4as_T4_v3 or Standard_NC6s_v3",
        "standard_nc12": "Standard_NC8as_T4_v3 or Standard_NC12s_v3",
        "standard_nc24": "Standard_NC64as_T4_v3 or Standard_NC24s_v3",
        "standard_nc6s_v2": "Standard_NC6s_v3",
        "standard_nc12s_v2": "Standard_NC12s_v3",
        "standard_nc24s_v2": "Standard_NC24s_v3",
        "standard_nv6": "Standard_NV6ads_A10_v5",
        "standard_nv12": "Standard_NV12ads_A10_v5",
        "standard_nd6s": "Standard_NC24ads_A100_v4",
    }
)

#: SageMaker types people carry over, and the closest Azure size (vCPUs, memory, GPU).
SAGEMAKER_EQUIVALENTS: Mapping[str, str] = MappingProxyType(
    {
        "ml.m5.large": "Standard_D2s_v3",
        "ml.m5.xlarge": "Standard_D4s_v3",
        "ml.m5.2xlarge": "Standard_D8s_v3",
        "ml.m5.4xlarge": "Standard_D16s_v3",
        "ml.c5.xlarge": "Standard_F4s_v2",
        "ml.c5.2xlarge": "Standard_F8s_v2",
        "ml.c5.4xlarge": "Standard_F16s_v2",
        "ml.p3.2xlarge": "Standard_NC6s_v3",
        "ml.p3.8xlarge": "Standard_NC24s_v3",
        "ml.g4dn.xlarge": "Standard_NC4as_T4_v3",
        "ml.g4dn.2xlarge": "Standard_NC8as_T4_v3",
        "ml.g5.xlarge": "Standard_NV36ads_A10_v5",
        "ml.p4d.24xlarge": "Standard_ND96asr_v4",
    }
)


# --- offline checks --------------------------------------------------------------------------


def vm_size(name: str, field: str = "compute.instance_type") -> VmSize:
    """The known size for ``name`` (any case), or a ConfigError naming the closest ones."""
    key = name.strip().lower()
    found = SUPPORTED_VM_SIZES.get(key)
    if found is not None:
        return found
    if key.startswith("ml."):
        hint = SAGEMAKER_EQUIVALENTS.get(key)
        similar = f"; the closest Azure size is {hint}" if hint else ""
        raise ConfigError(
            field,
            f"{name!r} is a SageMaker instance type; Azure ML takes a VM size such as "
            f"Standard_DS3_v2{similar}",
        )
    if key in RETIRED_VM_SIZES:
        raise ConfigError(
            field, f"{name!r} has been retired by Azure; use {RETIRED_VM_SIZES[key]} instead"
        )
    close = difflib.get_close_matches(key, list(SUPPORTED_VM_SIZES), n=3, cutoff=0.75)
    message = f"unknown Azure ML VM size {name!r}"
    if close:
        names = " or ".join(repr(SUPPORTED_VM_SIZES[c].name) for c in close)
        raise ConfigError(field, f"{message}; did you mean {names}?")
    known = ", ".join(size.name for size in SUPPORTED_VM_SIZES.values())
    raise ConfigError(field, f"{message}; known sizes: {known}")


def is_gpu_size(vm_size_name: str) -> bool:
    """True for sizes with (a share of) an NVIDIA GPU: every Azure N-series size."""
    known = SUPPORTED_VM_SIZES.get(vm_size_name.strip().lower())
    if known is not None:
        return known.gpus > 0
    return vm_size_name.strip().lower().startswith("standard_n")


def validate_compute(config: PipelineConfig) -> list[str]:
    """Refuse, before any call, a compute section Azure ML would reject; return warnings."""
    azure = config.section("azure", AzureConfig) or AzureConfig()
    compute = config.compute
    kind = azure.compute_type
    warnings: list[str] = []
    if kind == "kubernetes":
        if compute.instance_type.lower().startswith("ml."):
            raise ConfigError(
                "compute.instance_type",
                f"{compute.instance_type!r} is a SageMaker instance type; on kubernetes compute "
                "it names an instance type defined on the attached cluster "
                "(e.g. defaultinstancetype)",
            )
    else:
        size = vm_size(compute.instance_type)
        if size.gpu and size.gpus < 1:
            warnings.append(
                f"compute.instance_type: {size.name} has a {size.gpu} of one GPU; "
                "frameworks see less GPU memory than a full card"
            )
    if kind == "serverless":
        if azure.compute:
            warnings.append(
                f"azure.compute: {azure.compute!r} is ignored, serverless jobs run on "
                "machines Azure ML picks per job"
            )
        return warnings
    if not azure.compute:
        raise ConfigError("azure.compute", f"is required for compute_type {kind}")
    if kind == "computeinstance":
        if compute.instance_count != 1:
            raise ConfigError(
                "compute.instance_count",
                f"a compute instance is one VM, so {compute.instance_count} nodes cannot run "
                "on it; use compute_type amlcompute for several nodes",
            )
        if compute.spot:
            raise UnsupportedError(
                "compute.spot",
                "compute instances have no low-priority tier; set compute.spot: false or "
                "use compute_type amlcompute",
            )
        return warnings
    if kind == "kubernetes":
        if compute.spot:
            raise UnsupportedError(
                "compute.spot",
                "kubernetes compute has no low-priority tier in Azure ML (spot is a node pool "
                "setting of the cluster itself); set compute.spot: false",
            )
        return warnings
    # amlcompute: a cluster cloudtrain may create, so its settings must be valid.
    if not CLUSTER_NAME.match(azure.compute):
        raise ConfigError(
            "azure.compute",
            f"{azure.compute!r} is not a valid cluster name: it can include letters, digits "
            "and dashes, must start with a letter, end with a letter or digit, and be "
            "between 2 and 16 characters in length",
        )
    if azure.min_instances > azure.max_instances:
        raise ConfigError(
            "azure.min_instances",
            f"{azure.min_instances} is more than azure.max_instances ({azure.max_instances})",
        )
    if compute.instance_count > azure.max_instances:
        raise ConfigError(
            "compute.instance_count",
            f"{compute.instance_count} nodes need azure.max_instances >= "
            f"{compute.instance_count} (it is {azure.max_instances})",
        )
    if azure.min_instances > 0:
        warnings.append(
            f"azure.min_instances: {azure.min_instances} node(s) stay allocated, and billed, "
            "while the cluster is idle"
        )
    if azure.idle_time_before_scale_down == 0:
        warnings.append(
            "azure.idle_time_before_scale_down: 0 is sent as 'not set' by azure-ai-ml, so "
            "the service's default applies"
        )
    return warnings


# --- the cluster we want ---------------------------------------------------------------------


def desired_cluster(config: PipelineConfig, *, low_priority: bool) -> AmlCompute:
    """The AmlCompute entity the config asks for (pure; validate_compute first)."""
    from azure.ai.ml.entities import AmlCompute

    azure = config.section("azure", AzureConfig) or AzureConfig()
    if not azure.compute:
        raise ConfigError("azure.compute", "is required for compute_type amlcompute")
    return AmlCompute(
        name=azure.compute,
        size=vm_size(config.compute.instance_type).name,
        min_instances=azure.min_instances,
        max_instances=azure.max_instances,
        idle_time_before_scale_down=azure.idle_time_before_scale_down,
        tier="low_priority" if low_priority else "dedicated",
        tags={CREATED_BY_TAG[0]: CREATED_BY_TAG[1]},
    )


def cluster_drift(existing: AmlCompute, desired: AmlCompute) -> list[tuple[str, Any, Any]]:
    """``(field, current, wanted)`` for every setting where the cluster differs from the
    config; sizes compare without case, tiers and idle times as the service normalises them."""
    drift: list[tuple[str, Any, Any]] = []
    if (existing.size or "").lower() != (desired.size or "").lower():
        drift.append(("size", existing.size, desired.size))
    if _tier(existing.tier) != _tier(desired.tier):
        drift.append(("tier", _tier(existing.tier), _tier(desired.tier)))
    for field in ("min_instances", "max_instances"):
        current, wanted = getattr(existing, field), getattr(desired, field)
        if current != wanted:
            drift.append((field, current, wanted))
    current_idle = _seconds(existing.idle_time_before_scale_down)
    wanted_idle = _seconds(desired.idle_time_before_scale_down)
    if wanted_idle and current_idle != wanted_idle:
        drift.append(("idle_time_before_scale_down", current_idle, wanted_idle))
    return drift


# --- ensure ----------------------------------------------------------------------------------


def ensure_compute(
    ml_client: Any,
    config: PipelineConfig,
    *,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    poll: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> ComputeTarget:
    """Make the config's compute ready to take a job; never deletes anything.

    ``details`` of the result say what was done (``action``: created, updated, unchanged,
    checked, none) and the ``drift`` found (each with ``applied``); ``warnings`` what the
    user should know (a size or tier that could not be applied, say).
    """
    warnings = validate_compute(config)
    azure = config.section("azure", AzureConfig) or AzureConfig()
    kind = azure.compute_type
    if kind == "serverless":
        size = vm_size(config.compute.instance_type).name
        return ComputeTarget(
            name="serverless",
            instance_type=size,
            instance_count=config.compute.instance_count,
            details={
                "compute_type": "serverless",
                "action": "none",
                "tier": "spot" if config.compute.spot else "standard",
            },
            warnings=tuple(warnings),
        )
    assert azure.compute is not None  # validate_compute
    waiter = _Waiter(ml_client, azure.compute, timeout_seconds, poll, log)
    if kind == "amlcompute":
        return _ensure_cluster(ml_client, config, waiter, warnings, log)
    existing = _get(ml_client, azure.compute)
    if existing is None:
        what = "compute instance" if kind == "computeinstance" else "attached kubernetes compute"
        raise ConfigError(
            "azure.compute",
            f"{what} {azure.compute!r} does not exist in workspace "
            f"{_workspace(ml_client)}; cloudtrain creates amlcompute clusters only, so "
            f"create or attach it first, or use compute_type amlcompute",
        )
    _require_type(existing, kind)
    if kind == "computeinstance":
        return _ensure_instance(config, existing, waiter, warnings)
    state = text(existing.provisioning_state)
    if state.lower() != "succeeded":
        existing = waiter.until_provisioned()
    return ComputeTarget(
        name=existing.name,
        instance_type=config.compute.instance_type,
        instance_count=config.compute.instance_count,
        details={
            "compute_type": "kubernetes",
            "action": "checked",
            "namespace": getattr(existing, "namespace", None),
            "provisioning_state": text(existing.provisioning_state),
        },
        warnings=tuple(warnings),
    )


def _ensure_cluster(
    ml_client: Any,
    config: PipelineConfig,
    waiter: _Waiter,
    warnings: list[str],
    log: Callable[[str], None],
) -> ComputeTarget:
    desired = desired_cluster(config, low_priority=config.compute.spot)
    name = waiter.name
    existing = _get(ml_client, name)
    drift: list[dict[str, Any]] = []
    if existing is None:
        log(
            f"compute {name}: creating {desired.size} {_tier(desired.tier)} cluster, "
            f"{desired.min_instances}..{desired.max_instances} nodes, idle "
            f"{desired.idle_time_before_scale_down} s"
        )
        waiter.begin(desired, "creating")
        action = "created"
    else:
        _require_type(existing, "amlcompute")
        state = text(existing.provisioning_state)
        if state.lower() in _TERMINAL_FAILURES:
            errors = existing.provisioning_errors or "no error code"
            raise BackendError(
                f"compute {name} is in state {state} ({errors}); cloudtrain never deletes a "
                "cluster: delete it in Azure ML studio or set azure.compute to another name"
            )
        found = cluster_drift(existing, desired)
        to_apply = [(f, cur, want) for f, cur, want in found if f in IN_PLACE_FIELDS]
        for field, current, wanted in found:
            applied = field in IN_PLACE_FIELDS
            drift.append({"field": field, "current": current, "wanted": wanted, "applied": applied})
            if not applied:
                warnings.append(_unapplied_warning(name, field, current, wanted))
                log(warnings[-1])
        if to_apply:
            for field, _, wanted in to_apply:
                setattr(existing, field, wanted)
            log(
                f"compute {name}: updating in place "
                + ", ".join(f"{f} {cur} -> {want}" for f, cur, want in to_apply)
            )
            waiter.begin(existing, "updating")
            action = "updated"
        else:
            action = "unchanged"
            if state.lower() != "succeeded":
                waiter.until_provisioned()
    ready = waiter.last or existing
    assert ready is not None
    return ComputeTarget(
        name=name,
        instance_type=str(ready.size or desired.size),
        instance_count=config.compute.instance_count,
        details={
            "compute_type": "amlcompute",
            "action": action,
            "size": ready.size,
            "tier": _tier(ready.tier),
            "min_instances": ready.min_instances,
            "max_instances": ready.max_instances,
            "idle_time_before_scale_down": _seconds(ready.idle_time_before_scale_down),
            "provisioning_state": text(ready.provisioning_state),
            "drift": drift,
        },
        warnings=tuple(warnings),
    )


def _ensure_instance(
    config: PipelineConfig, existing: Any, waiter: _Waiter, warnings: list[str]
) -> ComputeTarget:
    state = text(existing.state) or "Unknown"
    if state.lower() in _INSTANCE_TRANSITIONS:
        existing = waiter.until_running()
        state = text(existing.state)
    if state.lower() not in ("running", "jobrunning"):
        raise BackendError(
            f"compute instance {existing.name} is {state}, not Running; start it "
            f"(az ml compute start --name {existing.name}) and run again"
        )
    size = vm_size(config.compute.instance_type).name
    if existing.size and existing.size.lower() != size.lower():
        warnings.append(
            f"compute.instance_type: {size} differs from the size of compute instance "
            f"{existing.name} ({existing.size}); the job runs on {existing.size}"
        )
    return ComputeTarget(
        name=existing.name,
        instance_type=existing.size or size,
        instance_count=1,
        details={
            "compute_type": "computeinstance",
            "action": "checked",
            "state": state,
        },
        warnings=tuple(warnings),
    )


class _Waiter:
    """Sends the create/update and waits for the compute to settle, within one deadline.

    Time counts both the clock and the delays handed to ``poll``, so a test that passes a
    no-op ``poll`` still reaches the timeout after a fixed number of polls.
    """

    def __init__(
        self,
        ml_client: Any,
        name: str,
        timeout_seconds: float,
        poll: Callable[[float], None],
        log: Callable[[str], None],
    ) -> None:
        self.ml_client = ml_client
        self.name = name
        self.timeout = timeout_seconds
        self.log = log
        self.last: Any = None
        self._slept = 0.0
        self._start = time.monotonic()
        self._backoff = Backoff(
            initial_seconds=POLL_INITIAL_SECONDS,
            max_seconds=POLL_MAX_SECONDS,
            jitter=0.0,
            sleep=poll,
        )

    def begin(self, entity: Any, doing: str) -> Any:
        try:
            poller = self.ml_client.compute.begin_create_or_update(entity)
            self.last = poller.result(timeout=self.timeout)
        except Exception as exc:
            raise service_error(exc, f"{doing} compute {self.name}") from exc
        if self.last is None or text(self.last.provisioning_state).lower() != "succeeded":
            return self.until_provisioned()
        return self.last

    def until_provisioned(self) -> Any:
        while True:
            current = self._fetch()
            state = text(current.provisioning_state) or "Unknown"
            if state.lower() == "succeeded":
                return current
            if state.lower() in _TERMINAL_FAILURES:
                errors = current.provisioning_errors or "no error code"
                raise BackendError(
                    f"compute {self.name} provisioning {state} ({errors}); check the "
                    "workspace's vCPU quota for this VM family and region, or pick another "
                    "size. cloudtrain never deletes a cluster: delete it in Azure ML studio "
                    "or set azure.compute to another name"
                )
            self._sleep(f"provisioning state {state}")

    def until_running(self) -> Any:
        while True:
            current = self._fetch()
            state = text(getattr(current, "state", None)) or "Unknown"
            if state.lower() not in _INSTANCE_TRANSITIONS:
                return current
            self._sleep(f"state {state}")

    def _fetch(self) -> Any:
        current = _get(self.ml_client, self.name)
        if current is None:
            raise BackendError(f"compute {self.name} disappeared while waiting for it")
        self.last = current
        return current

    def _sleep(self, where: str) -> None:
        waited = max(self._slept, time.monotonic() - self._start)
        if waited >= self.timeout:
            raise TransientError(
                f"compute {self.name} still in {where} after {waited:.0f} s "
                f"(timeout {self.timeout:.0f} s); run again to keep waiting"
            )
        self.log(f"compute {self.name}: {where}, waiting")
        self._slept += self._backoff.wait()


# --- helpers ---------------------------------------------------------------------------------


def _get(ml_client: Any, name: str) -> Any:
    """The compute, or None when it does not exist."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return ml_client.compute.get(name)
    except ResourceNotFoundError:
        return None
    except Exception as exc:
        raise service_error(exc, f"reading compute {name}") from exc


def _require_type(existing: Any, wanted: str) -> None:
    kind = text(existing.type).lower()
    if kind != wanted:
        raise ConfigError(
            "azure.compute_type",
            f"compute {existing.name!r} is a {kind or 'compute of unknown type'}, not "
            f"{wanted}; set azure.compute_type: {kind} or use another azure.compute",
        )


def _unapplied_warning(name: str, field: str, current: Any, wanted: Any) -> str:
    consequence = {
        "tier": (
            "jobs run dedicated, at the full price"
            if wanted == "low_priority"
            else "jobs run on low priority and can be preempted"
        ),
        "size": f"jobs run on {current}",
    }[field]
    return (
        f"compute {name}: {field} is {current} but the config wants {wanted}; Azure ML cannot "
        f"change a cluster's {field} in place (it needs delete and create, which cloudtrain "
        f"never does), so {consequence}"
    )


def _tier(tier: str | None) -> str:
    """Service and SDK spellings (LowPriority, low_priority, None) as one name."""
    text = (tier or "dedicated").replace("_", "").replace("-", "").lower()
    return "low_priority" if text == "lowpriority" else text


def _seconds(value: float | int | None) -> int | None:
    return None if value is None else int(round(float(value)))


def _workspace(ml_client: Any) -> str:
    return str(getattr(ml_client, "workspace_name", None) or "?")
