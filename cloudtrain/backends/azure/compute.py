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

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cloudtrain.backends.azure.errors import service_error, text
from cloudtrain.backends.azure.settings import AzureConfig
from cloudtrain.backends.azure.vm_sizes import vm_size
from cloudtrain.backoff import Backoff
from cloudtrain.errors import (
    BackendError,
    ConfigError,
    TransientError,
    UnsupportedError,
    quote,
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
CLUSTER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,14}[A-Za-z0-9]")
#: Cluster fields Azure ML updates in place; the others need delete and create.
IN_PLACE_FIELDS: tuple[str, ...] = ("min_instances", "max_instances", "idle_time_before_scale_down")
CREATED_BY_TAG = ("created-by", "cloudtrain")

_TERMINAL_FAILURES = frozenset({"failed", "canceled"})
_INSTANCE_TRANSITIONS = frozenset(
    {"creating", "starting", "restarting", "settingup", "usersettingup", "resizing"}
)


# --- offline checks --------------------------------------------------------------------------


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
                f"{quote(compute.instance_type)} is a SageMaker instance type; on kubernetes "
                "compute "
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
                f"azure.compute: {quote(azure.compute)} is ignored, serverless jobs run on "
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
    if not CLUSTER_NAME.fullmatch(azure.compute):
        raise ConfigError(
            "azure.compute",
            f"{quote(azure.compute)} is not a valid cluster name: it can include letters, digits "
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
            f"{what} {quote(azure.compute)} does not exist in workspace "
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
