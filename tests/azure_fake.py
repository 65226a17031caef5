"""A fake azure-ai-ml ``MLClient`` for tests: it keeps state and speaks the SDK's entities.

Azure ML's control plane has no emulator, so this stands behind the backend's seam
(``AzureClients(azure, ml_client=FakeMLClient())``) and behaves like the service wherever
the backend can tell:

- Every write takes the SDK's real entity (``AmlCompute``, ``Environment``, ``Data``, a
  command job, ...), turns it into the REST model with the entity's own
  ``_to_rest_object()``, encodes it the way the SDK's HTTP pipeline does
  (``json.dumps(body, cls=SdkJSONEncoder, exclude_readonly=True)``) and checks the wire
  JSON against the REST model's declared fields (required fields, JSON types, enum values,
  ISO 8601 durations and dates, polymorphic discriminators), then against the service
  rules the backend meets (names, VM sizes, min <= max nodes, cluster fields that cannot
  change in place, reserved names, immutable versions). A refusal raises azure-core's
  ``HttpResponseError`` (400), ``ResourceNotFoundError`` (404) or ``ResourceExistsError``
  (409) carrying an ARM error body, as the SDK surfaces them. Where the service's exact
  wording is not known, the message is an approximation and says the same thing.
- Every read deserializes the stored wire JSON into the REST model and builds a fresh
  entity with the SDK's own ``Entity._from_rest_object(...)``, so callers get what a real
  round trip gives (e.g. ``tier="low_priority"``, idle time as float seconds).
- ``calls`` records every operation: ``Call(op, name, body)`` with the wire body of
  writes, so tests assert on exactly what was sent.

Curated environments: in a real workspace they are read from the ``azureml`` registry
(``MLClient(credential, registry_name="azureml")``; ids
``azureml://registries/azureml/environments/NAME/versions/N``). The backend looks them up
with ``environments.get(name, version=...)``, ``get(name, label="latest")`` and
``list()``; this fake serves those calls from one store holding the registry's curated
environments next to the workspace's own, so one fake can be both clients.
``CURATED_CATALOGUE`` below is a sample written for these tests after the registry's
naming convention; it was not fetched from Azure, and its version counts are made up.

Jobs: ``jobs.set_status(name, status, error=...)`` drives a job as the service would;
``jobs.put_files(name, files, output_name=None)`` places what ``jobs.download`` writes
(``artifacts/...`` for logs, ``named-outputs/<name>/...`` for outputs). Start, end and
error are served by ``jobs._runs_operations.get_run_details(name)``, as run history does.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import hashlib
import json
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from azure.ai.ml._restclient.arm_ml_service import models as rest
from azure.ai.ml._restclient.arm_ml_service._utils import model_base
from azure.ai.ml._restclient.arm_ml_service._utils.model_base import SdkJSONEncoder
from azure.ai.ml._restclient.runhistory import models as runhistory
from azure.ai.ml.entities import (
    AzureBlobDatastore,
    Compute,
    Data,
    Datastore,
    Environment,
    Job,
    Model,
)
from azure.ai.ml.exceptions import (
    ErrorCategory,
    ErrorTarget,
    JobException,
    ValidationErrorType,
    ValidationException,
)
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)

ARM_PROVIDER = "Microsoft.MachineLearningServices"

#: A sample of the azureml registry's curated environments (name, newest version),
#: written for these tests after the registry's naming convention; not fetched.
CURATED_CATALOGUE: tuple[tuple[str, int], ...] = (
    ("AzureML-sklearn-0.24-ubuntu18.04-py37-cpu", 48),
    ("AzureML-sklearn-1.0-ubuntu20.04-py38-cpu", 44),
    ("AzureML-sklearn-1.5-ubuntu22.04-py39-cpu", 12),
    ("AzureML-pytorch-1.10-ubuntu18.04-py38-cuda11-gpu", 40),
    ("AzureML-pytorch-1.13-ubuntu20.04-py38-cuda11.7-gpu", 30),
    ("AzureML-ACPT-pytorch-1.13-py38-cuda11.7-gpu", 20),
    ("AzureML-acpt-pytorch-2.2-cuda12.1", 25),
    ("AzureML-tensorflow-2.12-cuda11", 15),
    ("AzureML-tensorflow-2.16-cuda12", 8),
    ("AzureML-lightgbm-3.3", 30),
    ("AzureML-responsibleai-0.21-ubuntu20.04-py38-cpu", 10),
    ("AzureML-Minimal-Ubuntu20.04-py38-cpu-inference", 50),
)
CURATED_IMAGES = "mcr.microsoft.com/azureml/curated"

#: VM sizes the fake's region offers AmlCompute (a sample; the service checks its own).
REGION_VM_SIZES: frozenset[str] = frozenset(
    size.lower()
    for size in (
        "Standard_DS1_v2 Standard_DS2_v2 Standard_DS3_v2 Standard_DS4_v2 Standard_DS5_v2 "
        "Standard_DS11_v2 Standard_DS12_v2 Standard_D2s_v3 Standard_D4s_v3 Standard_D8s_v3 "
        "Standard_D16s_v3 Standard_E4s_v3 Standard_E8s_v3 Standard_F2s_v2 Standard_F4s_v2 "
        "Standard_F8s_v2 Standard_F16s_v2 Standard_NC6s_v3 Standard_NC12s_v3 "
        "Standard_NC24s_v3 Standard_NC4as_T4_v3 Standard_NC8as_T4_v3 Standard_NC16as_T4_v3 "
        "Standard_NC64as_T4_v3 Standard_NV6ads_A10_v5 Standard_NV12ads_A10_v5 "
        "Standard_NV36ads_A10_v5 Standard_NC24ads_A100_v4 Standard_ND96asr_v4"
    ).split()
)

_CLUSTER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,14}[A-Za-z0-9]$")
_INSTANCE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$")
_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
_TERMINAL = ("Completed", "Failed", "Canceled", "NotResponding", "Paused")
_JOB_STATUSES = frozenset(
    {
        "NotStarted",
        "Starting",
        "Provisioning",
        "Preparing",
        "Queued",
        "Running",
        "Finalizing",
        "CancelRequested",
        "Completed",
        "Failed",
        "Canceled",
        "NotResponding",
        "Paused",
        "Unknown",
    }
)


# --- the wire: encode, check against the REST model, decode -----------------------------------


def to_wire(rest_object: Any) -> dict[str, Any]:
    """The JSON the SDK would PUT for this REST model."""
    return json.loads(json.dumps(rest_object, cls=SdkJSONEncoder, exclude_readonly=True))


def rest_problems(model: type, wire: Any, path: str = "") -> list[str]:
    """What the service would refuse in ``wire`` as a body of ``model`` (empty: valid)."""
    if not isinstance(wire, Mapping):
        return [f"{path or 'body'}: expected an object, got {type(wire).__name__}"]
    concrete: Any = type(
        model_base._deserialize(model, dict(wire))
    )  # the SDK's pick by discriminator
    problems: list[str] = []
    hints = _hints(concrete)
    for attr, rest_field in concrete._attr_to_rest_field.items():
        key = rest_field._rest_name
        where = f"{path}.{key}" if path else key
        if (rest_field._visibility or []) == ["read"]:
            continue  # read-only: the SDK strips it, the service ignores it
        annotation = hints.get(attr, Any)
        if key not in wire or wire[key] is None:
            if not _optional(annotation) and not rest_field._is_discriminator:
                problems.append(f"{where}: required")
            continue
        problems += _value_problems(annotation, wire[key], where)
    return problems


@functools.cache
def _hints(model: type) -> dict[str, Any]:
    return typing.get_type_hints(model, localns={"_models": rest})


def _optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation) or annotation is Any


def _value_problems(annotation: Any, value: Any, where: str) -> list[str]:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if annotation is Any or annotation is object:
        return []
    if origin is typing.Union:
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and str in args:
            known = {str(e.value).lower() for enum in enums for e in enum}
            if not isinstance(value, str) or value.lower() not in known:
                valid = ", ".join(sorted(str(e.value) for enum in enums for e in enum))
                return [f"{where}: {value!r} is not one of {valid}"]
            return []
        attempts = [_value_problems(arg, value, where) for arg in args]
        return [] if any(not a for a in attempts) else attempts[0]
    if origin is typing.Literal:
        return [] if value in typing.get_args(annotation) else [f"{where}: {value!r} not allowed"]
    if origin in (list, typing.List):  # noqa: UP006
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [
            p
            for i, item in enumerate(value)
            for p in _value_problems(args[0], item, f"{where}[{i}]")
        ]
    if origin in (dict, typing.Dict):  # noqa: UP006
        if not isinstance(value, dict):
            return [f"{where}: expected an object"]
        return [
            p for k, item in value.items() for p in _value_problems(args[1], item, f"{where}.{k}")
        ]
    if annotation is bool:
        return [] if isinstance(value, bool) else [f"{where}: expected a boolean, got {value!r}"]
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected an integer, got {value!r}"]
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected a number, got {value!r}"]
    if annotation is str:
        return [] if isinstance(value, str) else [f"{where}: expected a string, got {value!r}"]
    if annotation is dt.timedelta:
        try:
            model_base._deserialize_duration(value)
        except Exception:
            return [f"{where}: {value!r} is not an ISO 8601 duration"]
        return []
    if annotation is dt.datetime:
        try:
            model_base._deserialize_datetime(value)
        except Exception:
            return [f"{where}: {value!r} is not an ISO 8601 date-time"]
        return []
    if isinstance(annotation, type) and issubclass(annotation, model_base.Model):
        return rest_problems(annotation, value, where)
    return []


def _check(model: type, wire: dict[str, Any]) -> None:
    problems = rest_problems(model, wire)
    if problems:
        raise http_error(
            400,
            "UserError",
            "The request is invalid: " + "; ".join(problems),
        )


def _decode(model: type, wire: Mapping[str, Any]) -> Any:
    return model_base._deserialize(model, json.loads(json.dumps(wire)))


# --- errors as azure-core raises them -----------------------------------------------------------


class _ErrorResponse:
    """Just enough of an HTTP response for azure-core to read an ARM error body."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        self.status_code = status_code
        self.reason = {400: "Bad Request", 404: "Not Found", 409: "Conflict"}.get(status_code, "")
        self.headers = {"content-type": "application/json"}
        self.content_type = "application/json"
        self.request = None
        self._body = json.dumps({"error": {"code": code, "message": message}}).encode()

    def text(self, encoding: str | None = None) -> str:
        return self._body.decode()

    def body(self) -> bytes:
        return self._body

    def json(self) -> Any:
        return json.loads(self._body)


def http_error(status: int, code: str, message: str) -> HttpResponseError:
    kind = {404: ResourceNotFoundError, 409: ResourceExistsError}.get(status, HttpResponseError)
    return kind(response=_ErrorResponse(status, code, message))


def _sdk_validation(message: str, *, not_found: bool = False) -> ValidationException:
    return ValidationException(
        message=message,
        no_personal_data_message=message,
        target=ErrorTarget.ASSET,  # type: ignore[arg-type]
        error_category=ErrorCategory.USER_ERROR,  # type: ignore[arg-type]
        error_type=(
            ValidationErrorType.RESOURCE_NOT_FOUND
            if not_found
            else ValidationErrorType.INVALID_VALUE
        ),
    )


# --- bookkeeping ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One operation the fake received; ``body`` is the wire JSON of a write."""

    op: str
    name: str | None = None
    body: dict[str, Any] | None = None


class Poller:
    """The part of azure-core's LROPoller callers use."""

    def __init__(self, result: Callable[[], Any]) -> None:
        self._result = result

    def result(self, timeout: float | None = None) -> Any:
        return self._result()

    def wait(self, timeout: float | None = None) -> None:
        return None

    def done(self) -> bool:
        return True

    def status(self) -> str:
        return "Succeeded"


@dataclass
class _Provisioning:
    """What a created or updated compute becomes, and after how many reads."""

    state: str = "Succeeded"
    after_reads: float = 1  # float("inf"): never settles
    code: str | None = None
    message: str | None = None


class _Ops:
    def __init__(self, client: FakeMLClient) -> None:
        self._client = client

    def _record(self, op: str, name: str | None = None, body: dict[str, Any] | None = None) -> None:
        """Note the call; answer it with an injected fault (``FakeMLClient.fail``) if any,
        before anything changes, as a throttled request changes nothing."""
        self._client.calls.append(Call(op, name, body))
        faults = self._client.faults.get(op)
        if faults:
            raise faults.pop(0)


# --- compute ---------------------------------------------------------------------------------


class ComputeOperations(_Ops):
    """``ml_client.compute``: get, list, begin_create_or_update, begin_update, begin_delete."""

    def __init__(self, client: FakeMLClient) -> None:
        super().__init__(client)
        self._items: dict[str, dict[str, Any]] = {}  # lower-case name -> stored wire
        self._pending: dict[str, tuple[_Provisioning, int]] = {}
        self._next: dict[str, _Provisioning] = {}
        self.default_provisioning = _Provisioning()

    # the SDK's surface

    def get(self, name: str) -> Compute:
        self._record("compute.get", name)
        return self._read(name)

    def list(self, *, compute_type: str | None = None) -> list[Compute]:
        self._record("compute.list")
        items = [self._entity(key) for key in sorted(self._items)]
        return [
            c for c in items if compute_type is None or str(c.type).lower() == compute_type.lower()
        ]

    def begin_create_or_update(self, compute: Compute) -> Poller:
        return self._write("compute.begin_create_or_update", compute)

    def begin_update(self, compute: Compute) -> Poller:
        return self._write("compute.begin_update", compute)

    def begin_delete(self, name: str, *, action: str = "Delete") -> Poller:
        self._record("compute.begin_delete", name, {"action": action})
        self._require(name)
        self._items.pop(name.lower())
        return Poller(lambda: None)

    # test hooks

    def add(
        self, compute: Compute, *, provisioning_state: str = "Succeeded", state: str | None = None
    ) -> None:
        """Seed a compute that already exists (not recorded as a call)."""
        wire = self._accept(compute)
        self._store(str(compute.name), wire, provisioning_state)
        if state is not None:
            self.set_state(str(compute.name), state)

    def set_state(self, name: str, state: str) -> None:
        """A compute instance's power state (Running, Stopped, Starting, ...)."""
        wire = self._require(name)
        wire["properties"].setdefault("properties", {})["state"] = state

    def next_provisioning(
        self,
        name: str,
        state: str = "Succeeded",
        *,
        after_reads: float = 1,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        """How the next create/update of ``name`` ends, after how many reads (inf: never)."""
        self._next[name.lower()] = _Provisioning(state, after_reads, code, message)

    def wire(self, name: str) -> dict[str, Any]:
        """The stored wire form (what a GET returns), for assertions."""
        return json.loads(json.dumps(self._require(name)))

    # inside

    def _write(self, op: str, compute: Compute) -> Poller:
        if not isinstance(compute, Compute):
            raise TypeError(
                f"expected an azure.ai.ml.entities.Compute, got {type(compute).__name__}"
            )
        if not compute.location:  # the SDK fills the workspace's location
            compute.location = self._client.location
        wire = self._accept(compute)
        name = str(compute.name)
        self._record(op, name, wire)
        key = name.lower()
        existing = self._items.get(key)
        if existing is not None:
            self._refuse_changes(name, existing, wire)
        self._store(name, wire, "Updating" if existing else "Creating")
        outcome = self._next.pop(key, self.default_provisioning)
        self._pending[key] = (outcome, 0)
        return Poller(lambda: self._entity(key))

    def _accept(self, compute: Compute) -> dict[str, Any]:
        wire = to_wire(compute._to_rest_object())
        _check(rest.ComputeResource, wire)
        props = wire["properties"]
        kind = props.get("computeType")
        name = compute.name
        if kind == "AmlCompute":
            if not _CLUSTER_NAME.match(name or ""):
                raise http_error(
                    400,
                    "UserError",
                    "Compute name is invalid. It can include letters, digits and dashes. It must "
                    "start with a letter, end with a letter or digit, and be between 2 and 16 "
                    "characters in length.",
                )
            inner = props.get("properties") or {}
            size = str(inner.get("vmSize", ""))
            if size.lower() not in REGION_VM_SIZES:
                raise http_error(
                    400,
                    "BadArgument",
                    f"The specified VM size {size} is not supported in region {self._client.location}.",
                )
            scale = inner.get("scaleSettings")
            if scale is None:
                raise http_error(400, "BadArgument", "Scale settings are required for AmlCompute.")
            low, high = scale.get("minNodeCount", 0), scale["maxNodeCount"]
            if low < 0 or high < 1 or low > high:
                raise http_error(
                    400,
                    "BadArgument",
                    f"Invalid scale settings: minNodeCount ({low}) must be >= 0 and <= maxNodeCount ({high}), and maxNodeCount >= 1.",
                )
        elif kind == "ComputeInstance" and not _INSTANCE_NAME.match(name or ""):
            raise http_error(
                400,
                "UserError",
                "Compute instance name is invalid: 3 to 24 letters, digits and dashes, starting with a letter.",
            )
        return wire

    def _refuse_changes(self, name: str, existing: dict[str, Any], wire: dict[str, Any]) -> None:
        before, after = existing["properties"], wire["properties"]
        if before.get("computeType") != after.get("computeType"):
            raise http_error(
                409,
                "Conflict",
                f"Compute {name} already exists with type {before.get('computeType')}; it cannot be changed to {after.get('computeType')}.",
            )
        old, new = before.get("properties") or {}, after.get("properties") or {}
        for key, label in (("vmSize", "VM size"), ("vmPriority", "VM priority")):
            if key in new and str(old.get(key, "")).lower() != str(new[key]).lower():
                # Approximate wording: the service refuses to change these on an existing cluster.
                raise http_error(
                    400,
                    "BadArgument",
                    f"Updating the {label} of an existing compute ({old.get(key)} to {new[key]}) is not supported; delete and recreate it.",
                )

    def _store(self, name: str, wire: dict[str, Any], provisioning_state: str) -> None:
        client = self._client
        stored = json.loads(json.dumps(wire))
        stored.update(
            id=client.arm_id("computes", name),
            name=name,
            type=f"{ARM_PROVIDER}/workspaces/computes",
        )
        props = stored["properties"]
        props["provisioningState"] = provisioning_state
        props.setdefault("computeLocation", stored.get("location") or client.location)
        previous = self._items.get(name.lower())
        props["createdOn"] = (
            (previous or {}).get("properties", {}).get("createdOn", client.now().isoformat())
        )
        if props.get("computeType") == "AmlCompute":
            inner = props.setdefault("properties", {})
            inner.setdefault("allocationState", "Steady")
            inner.setdefault("currentNodeCount", 0)
        if props.get("computeType") == "ComputeInstance":
            old_state = (previous or {}).get("properties", {}).get("properties", {}).get("state")
            props.setdefault("properties", {})["state"] = old_state or "Running"
        self._items[name.lower()] = stored

    def _require(self, name: str) -> dict[str, Any]:
        wire = self._items.get(name.lower())
        if wire is None:
            raise http_error(
                404,
                "ResourceNotFound",
                f"The Resource '{ARM_PROVIDER}/workspaces/{self._client.workspace_name}/computes/{name}' "
                f"under resource group '{self._client.resource_group_name}' was not found.",
            )
        return wire

    def _read(self, name: str) -> Compute:
        key = name.lower()
        wire = self._require(name)
        if key in self._pending:
            outcome, reads = self._pending[key]
            reads += 1
            if reads >= outcome.after_reads:
                wire["properties"]["provisioningState"] = outcome.state
                if outcome.code:
                    wire["properties"]["provisioningErrors"] = [
                        {
                            "error": {
                                "code": outcome.code,
                                "message": outcome.message or outcome.code,
                            }
                        }
                    ]
                del self._pending[key]
            else:
                self._pending[key] = (outcome, reads)
        return self._entity(key)

    def _entity(self, key: str) -> Compute:
        return Compute._from_rest_object(_decode(rest.ComputeResource, self._items[key]))


# --- versioned assets: environments and data ------------------------------------------------


@dataclass
class _Version:
    wire: dict[str, Any]
    order: int
    registry: str | None = None


class _AssetOperations(_Ops):
    """What environments and data share: versions, ``label="latest"``, immutability."""

    plural = ""
    rest_version: type = rest.EnvironmentVersion
    entity: Any = Environment

    def __init__(self, client: FakeMLClient) -> None:
        super().__init__(client)
        self._assets: dict[str, dict[str, _Version]] = {}

    def get(self, name: str, version: str | None = None, label: str | None = None) -> Any:
        self._record(f"{self.plural}.get", name, {"version": version, "label": label})
        if version and label:
            raise _sdk_validation("Cannot specify both version and label.")
        if label:
            if label != "latest":
                raise _sdk_validation(
                    f"Asset {name} with version label {label} does not exist in workspace.",
                    not_found=True,
                )
            versions = self._assets.get(name)
            if not versions:
                raise _sdk_validation(
                    f"Asset {name} does not exist in workspace {self._client.workspace_name}.",
                    not_found=True,
                )
            newest = max(versions.values(), key=lambda v: v.order)
            return self._to_entity(newest.wire)
        if not version:
            raise _sdk_validation("Must provide either version or label.")
        found = self._assets.get(name, {}).get(str(version))
        if found is None:
            # Approximate wording of the service's 404 for a missing asset version.
            raise http_error(
                404,
                "UserError",
                f"Could not find asset with name {name} and version {version} in workspace "
                f"{self._client.workspace_name} or in the azureml registry.",
            )
        return self._to_entity(found.wire)

    def list(self, name: str | None = None, **kwargs: Any) -> list[Any]:
        self._record(f"{self.plural}.list", name)
        if name:
            versions = sorted(self._assets.get(name, {}).values(), key=lambda v: v.order)
            return [self._to_entity(v.wire) for v in versions]
        return [self._container(n, versions) for n, versions in sorted(self._assets.items())]

    def create_or_update(self, asset: Any) -> Any:
        if not isinstance(asset, self.entity):
            raise TypeError(f"expected {self.entity.__name__}, got {type(asset).__name__}")
        if not asset.name:
            raise _sdk_validation(f"{self.entity.__name__} needs a name.")
        name = str(asset.name)
        if asset.version is None:  # the SDK auto-increments
            numbers = [int(v) for v in self._assets.get(name, {}) if v.isdigit()]
            asset.version = str(max(numbers, default=0) + 1)
        version = str(asset.version)
        wire = self._wire_of(asset)
        self._record(f"{self.plural}.create_or_update", f"{name}:{version}", wire)
        _check(self.rest_version, wire)
        self._rules(name, version, wire)
        existing = self._assets.get(name, {}).get(version)
        if existing is not None:
            if _content(existing.wire) != _content(wire):
                # Approximate wording: asset versions are immutable.
                raise http_error(
                    409,
                    "UserError",
                    f"{self.entity.__name__} {name} version {version} already exists with different content; "
                    "asset versions are immutable.",
                )
            return self._to_entity(existing.wire)
        stored = json.loads(json.dumps(wire))
        stored.update(
            id=self._client.arm_id(f"{self.plural}/{name}/versions", version),
            name=version,
            type=f"{ARM_PROVIDER}/workspaces/{self.plural}/versions",
            systemData=self._client.system_data(),
        )
        self._put(name, version, stored)
        return self._to_entity(stored)

    def _put(
        self, name: str, version: str, wire: dict[str, Any], registry: str | None = None
    ) -> None:
        self._client.counter += 1
        self._assets.setdefault(name, {})[version] = _Version(wire, self._client.counter, registry)

    def _wire_of(self, asset: Any) -> dict[str, Any]:
        return to_wire(asset._to_rest_object())

    def _rules(self, name: str, version: str, wire: dict[str, Any]) -> None:
        if not _ASSET_NAME.match(name):
            raise http_error(400, "UserError", f"{name!r} is not a valid asset name.")
        if not _ASSET_NAME.match(version):
            raise http_error(400, "UserError", f"{version!r} is not a valid asset version.")

    def _to_entity(self, wire: Mapping[str, Any]) -> Any:
        return self.entity._from_rest_object(_decode(self.rest_version, wire))

    def _container(self, name: str, versions: dict[str, _Version]) -> Any:
        newest = max(versions.values(), key=lambda v: v.order)
        registry = newest.registry
        container = {
            "id": (
                f"azureml://registries/{registry}/{self.plural}/{name}"
                if registry
                else self._client.arm_id(self.plural, name)
            ),
            "name": name,
            "type": f"{ARM_PROVIDER}/workspaces/{self.plural}",
            "systemData": self._client.system_data(),
            "properties": {"latestVersion": newest.wire["name"], "nextVersion": None},
        }
        return self._from_container(container)

    def _from_container(self, wire: dict[str, Any]) -> Any:
        return self.entity._from_container_rest_object(_decode(rest.EnvironmentContainer, wire))


class EnvironmentOperations(_AssetOperations):
    """``ml_client.environments``, serving the curated catalogue next to workspace ones."""

    plural = "environments"
    rest_version = rest.EnvironmentVersion
    entity = Environment

    def __init__(self, client: FakeMLClient, curated: Iterable[tuple[str, int]]) -> None:
        super().__init__(client)
        for name, newest in curated:
            for number in range(1, newest + 1):
                self.add_curated(name, str(number))

    def add_curated(self, name: str, version: str, *, image: str | None = None) -> None:
        """A curated environment version in the azureml registry (not recorded)."""
        short = name.lower().removeprefix("azureml-")
        wire = {
            "id": f"azureml://registries/azureml/environments/{name}/versions/{version}",
            "name": version,
            "type": f"{ARM_PROVIDER}/registries/environments/versions",
            "systemData": self._client.system_data(),
            "properties": {
                "image": image or f"{CURATED_IMAGES}/{short}:{version}",
                "osType": "Linux",
                "description": f"Curated environment {name} (sample written for tests)",
                "environmentType": "Curated",
                "isAnonymous": False,
                "isArchived": False,
                "tags": {"OS": "Ubuntu"},
            },
        }
        self._put(name, version, wire, registry="azureml")

    def _rules(self, name: str, version: str, wire: dict[str, Any]) -> None:
        super()._rules(name, version, wire)
        if name.lower().startswith("azureml"):
            # Approximate wording: the AzureML prefix is reserved for curated environments.
            raise http_error(
                400,
                "UserError",
                f"Environment name {name} is invalid: names starting with 'AzureML' are reserved for curated environments.",
            )

    def _to_entity(self, wire: Mapping[str, Any]) -> Any:
        return Environment._from_rest_object(_decode(rest.EnvironmentVersion, wire))


class DataOperations(_AssetOperations):
    """``ml_client.data``: registers URIs; it does not upload local paths."""

    plural = "data"
    rest_version = rest.DataVersionBase
    entity = Data

    def _wire_of(self, asset: Any) -> dict[str, Any]:
        path = str(asset.path or "")
        if not re.match(r"^(azureml|https?|wasbs?|abfss?|adl)://", path):
            raise NotImplementedError(
                f"FakeMLClient registers URIs only; {path!r} would need an upload "
                "(upload to the datastore, then register its azureml:// URI)"
            )
        return super()._wire_of(asset)

    def _from_container(self, wire: dict[str, Any]) -> Any:
        return Data._from_container_rest_object(_decode(rest.DataContainer, wire))


# --- datastores ----------------------------------------------------------------------------


class ModelOperations(_AssetOperations):
    """``ml_client.models``: registered models, versioned like the other assets."""

    plural = "models"
    rest_version = rest.ModelVersion
    entity = Model

    def _wire_of(self, asset: Any) -> dict[str, Any]:
        wire = to_wire(asset._to_rest_object())
        # The service answers with "flavors": {} when none were given; the SDK's reader
        # needs the key.
        wire.setdefault("properties", {}).setdefault("flavors", {})
        return wire

    def _from_container(self, wire: dict[str, Any]) -> Any:
        return self.entity._from_container_rest_object(_decode(rest.ModelContainer, wire))


class DatastoreOperations(_Ops):
    """``ml_client.datastores``: get, get_default, list; seeded with workspaceblobstore."""

    def __init__(self, client: FakeMLClient, default: AzureBlobDatastore) -> None:
        super().__init__(client)
        self._items: dict[str, dict[str, Any]] = {}
        self._default = str(default.name)
        self.add(default)

    def add(self, datastore: Datastore) -> None:
        wire = to_wire(datastore._to_rest_object())
        _check(rest.Datastore, wire)
        wire.update(
            id=self._client.arm_id("datastores", str(datastore.name)),
            name=datastore.name,
            type=f"{ARM_PROVIDER}/workspaces/datastores",
        )
        self._items[str(datastore.name)] = wire

    def get(self, name: str, *, include_secrets: bool = False) -> Datastore:
        self._record("datastores.get", name)
        wire = self._items.get(name)
        if wire is None:
            raise http_error(
                404,
                "UserError",
                f"Datastore {name} was not found in workspace {self._client.workspace_name}.",
            )
        return Datastore._from_rest_object(_decode(rest.Datastore, wire))

    def get_default(self, *, include_secrets: bool = False) -> Datastore:
        self._record("datastores.get_default", self._default)
        return Datastore._from_rest_object(_decode(rest.Datastore, self._items[self._default]))

    def list(self, *, include_secrets: bool = False) -> list[Datastore]:
        self._record("datastores.list")
        return [
            Datastore._from_rest_object(_decode(rest.Datastore, w))
            for _, w in sorted(self._items.items())
        ]


# --- jobs ------------------------------------------------------------------------------------


@dataclass
class _JobRecord:
    wire: dict[str, Any]
    code: dict[str, bytes] = field(default_factory=dict)
    files: dict[str | None, dict[str, bytes]] = field(default_factory=dict)
    started: dt.datetime | None = None
    ended: dt.datetime | None = None
    error: tuple[str, str] | None = None


class RunOperations(_Ops):
    """``ml_client.jobs._runs_operations``: run history's view (times and errors)."""

    def __init__(self, client: FakeMLClient, jobs: JobOperations) -> None:
        super().__init__(client)
        self._jobs = jobs

    def get_run_details(self, run_id: str) -> Any:
        self._record("runs.get_run_details", run_id)
        return runhistory.RunDetails(self._run_wire(run_id))

    def get_run(self, run_id: str) -> Any:
        self._record("runs.get_run", run_id)
        return runhistory.Run(self._run_wire(run_id))

    def _run_wire(self, run_id: str) -> dict[str, Any]:
        record = self._jobs._require(run_id)
        props = record.wire["properties"]
        wire: dict[str, Any] = {
            "runId": run_id,
            "status": props.get("status"),
            "target": str(props.get("computeId") or "serverless").rsplit("/", 1)[-1],
            "tags": props.get("tags") or {},
        }
        if record.started:
            wire["startTimeUtc"] = record.started.isoformat()
        if record.ended:
            wire["endTimeUtc"] = record.ended.isoformat()
        if record.error:
            wire["error"] = {"error": {"code": record.error[0], "message": record.error[1]}}
        return wire


class JobOperations(_Ops):
    """``ml_client.jobs``: create_or_update, get, list, begin_cancel, download."""

    def __init__(self, client: FakeMLClient) -> None:
        super().__init__(client)
        self._items: dict[str, _JobRecord] = {}
        self._runs_operations = RunOperations(client, self)

    # the SDK's surface

    def create_or_update(self, job: Any, **kwargs: Any) -> Job:
        from azure.ai.ml.entities._builders import BaseNode, Command
        from azure.ai.ml.entities._job.to_rest_functions import to_rest_job_object

        if isinstance(job, BaseNode) and not isinstance(job, Command):
            job = job._to_job()
        if not isinstance(job, Job | Command):
            raise TypeError(f"expected an azure.ai.ml Job, got {type(job).__name__}")
        for key in ("description", "compute", "tags", "experiment_name"):
            if kwargs.get(key) is not None:
                setattr(job, key, kwargs[key])
        if getattr(job, "id", None) and job.name in self._items:
            return self._update_metadata(job)
        name = job.name or f"fake_job_{self._client.counter + 1}"
        job.name = name
        if not _JOB_NAME.match(name):
            raise http_error(400, "UserError", f"Job name {name!r} is invalid.")
        if name in self._items:
            raise http_error(
                409, "UserError", f"A job named {name} already exists in this workspace."
            )
        code = self._resolve(job)
        wire = to_wire(to_rest_job_object(job))
        self._record("jobs.create_or_update", name, wire)
        _check(rest.JobBase, wire)
        stored = json.loads(json.dumps(wire))
        stored.update(
            id=self._client.arm_id("jobs", name), name=name, type=f"{ARM_PROVIDER}/workspaces/jobs"
        )
        stored["properties"]["status"] = "Starting"
        stored["properties"]["services"] = {
            "Studio": {"jobServiceType": "Studio", "endpoint": self._client.studio_url(name)}
        }
        self._client.counter += 1
        self._items[name] = _JobRecord(stored, code=code)
        return self._entity(name)

    def get(self, name: str) -> Job:
        self._record("jobs.get", name)
        self._require(name)
        return self._entity(name)

    def list(self, **kwargs: Any) -> list[Job]:
        self._record("jobs.list")
        return [self._entity(name) for name in self._items]

    def begin_cancel(self, name: str, **kwargs: Any) -> Poller:
        self._record("jobs.begin_cancel", name)
        record = self._require(name)
        if record.wire["properties"]["status"] not in _TERMINAL:
            self.set_status(name, "Canceled")
        return Poller(lambda: None)

    def download(
        self,
        name: str,
        *,
        download_path: str | PathLike[str] = ".",
        output_name: str | None = None,
        all: bool = False,  # noqa: A002  (the SDK's keyword)
    ) -> None:
        self._record("jobs.download", name, {"output_name": output_name, "all": all})
        record = self._require(name)
        status = record.wire["properties"]["status"]
        if status not in _TERMINAL:
            message = f"This job is in state {status}. Download is allowed only in states {list(_TERMINAL)}"
            raise JobException(
                message=message,
                no_personal_data_message=message,
                target=ErrorTarget.JOB,  # type: ignore[arg-type]
                error_category=ErrorCategory.USER_ERROR,  # type: ignore[arg-type]
            )
        root = Path(download_path)
        wanted: list[str | None]
        if output_name:
            wanted = [output_name]
        elif all:
            wanted = [None, *(o for o in record.files if o is not None)]
        else:
            wanted = [None]
        for output in wanted:
            target = root / "artifacts" if output is None else root / "named-outputs" / output
            for relative, content in record.files.get(output, {}).items():
                path = target / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)

    # test hooks

    def set_status(
        self,
        name: str,
        status: str,
        *,
        error: str | None = None,
        error_code: str = "UserError",
        started_at: dt.datetime | None = None,
        ended_at: dt.datetime | None = None,
    ) -> None:
        """Move a job as the service would; ``error`` is what run history reports."""
        if status not in _JOB_STATUSES:
            raise ValueError(f"{status!r} is not a job status: {sorted(_JOB_STATUSES)}")
        record = self._require(name)
        record.wire["properties"]["status"] = status
        now = self._client.now()
        if started_at or (status in ("Running", *_TERMINAL) and record.started is None):
            record.started = started_at or now
        if status in _TERMINAL:
            record.ended = ended_at or now
        if error is not None:
            record.error = (error_code, error)

    def put_files(
        self, name: str, files: Mapping[str, bytes | str], *, output_name: str | None = None
    ) -> None:
        """Files ``download`` writes: logs (output_name None) or a named output's."""
        record = self._require(name)
        bucket = record.files.setdefault(output_name, {})
        for relative, content in files.items():
            bucket[relative] = content.encode() if isinstance(content, str) else content

    def code_of(self, name: str) -> dict[str, bytes]:
        """The files the job's code snapshot held (the SDK would have uploaded them)."""
        return dict(self._require(name).code)

    def wire(self, name: str) -> dict[str, Any]:
        return json.loads(json.dumps(self._require(name).wire))

    # inside

    def _require(self, name: str) -> _JobRecord:
        record = self._items.get(name)
        if record is None:
            raise http_error(
                404,
                "UserError",
                f"Job {name} was not found in workspace {self._client.workspace_name}.",
            )
        return record

    def _entity(self, name: str) -> Job:
        wire = json.loads(json.dumps(self._items[name].wire))
        props = wire["properties"]
        # As the SDK's _resolve_azureml_id: ARM ids back to azureml:name:version and names.
        environment = str(props.get("environmentId") or "")
        match = re.search(r"/environments/([^/]+)/versions/([^/]+)$", environment)
        if match and not environment.startswith("azureml://"):
            props["environmentId"] = f"azureml:{match[1]}:{match[2]}"
        if props.get("computeId"):
            props["computeId"] = str(props["computeId"]).rsplit("/", 1)[-1]
        return Job._from_rest_object(_decode(rest.JobBase, wire))

    def _update_metadata(self, job: Any) -> Job:
        """The SDK's path for a fetched job with new tags etc.: a run history PATCH."""
        body = runhistory.CreateRun(
            display_name=getattr(job, "display_name", None),
            description=getattr(job, "description", None),
            tags=getattr(job, "tags", None),
            properties=getattr(job, "properties", None),
        ).as_dict()
        self._record("jobs.update_metadata", job.name, body)
        props = self._items[job.name].wire["properties"]
        for key, value in (
            ("displayName", body.get("displayName")),
            ("description", body.get("description")),
            ("tags", body.get("tags")),
        ):
            if value is not None:
                props[key] = value
        return self._entity(job.name)

    def _resolve(self, job: Any) -> dict[str, bytes]:
        """What the SDK does before the PUT: upload code, turn names into ARM ids."""
        client = self._client
        snapshot: dict[str, bytes] = {}
        if job.code is not None and not str(job.code).startswith(("azureml:", "/subscriptions/")):
            source = Path(job.code)
            if not source.is_absolute():
                source = Path(getattr(job, "_base_path", ".")) / source
            if not source.exists():
                raise _sdk_validation(f"Could not find code path {source}.")
            files = (
                [source]
                if source.is_file()
                else sorted(p for p in source.rglob("*") if p.is_file())
            )
            for path in files:
                relative = path.name if source.is_file() else path.relative_to(source).as_posix()
                snapshot[relative] = path.read_bytes()
            digest = hashlib.sha256(
                b"".join(k.encode() + v for k, v in sorted(snapshot.items()))
            ).hexdigest()
            job.code = (
                client.arm_id(
                    "codes",
                    f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}",
                )
                + "/versions/1"
            )
        job.environment = self._environment_id(job.environment)
        if job.compute:  # a name, or the ARM id a call before this one resolved it to
            client.compute._require(str(job.compute).rsplit("/", 1)[-1])
            job.compute = client.arm_id("computes", str(job.compute).rsplit("/", 1)[-1])
        for name, value in (job.inputs or {}).items():
            location = getattr(getattr(value, "_data", value), "path", None)  # literals have none
            if (
                isinstance(location, str)
                and location.startswith("azureml:")
                and not location.startswith("azureml://")
            ):
                asset, _, version = location.removeprefix("azureml:").partition(":")
                client.data.get(asset, version=version or None, label=None if version else "latest")
            elif isinstance(location, str) and not re.match(r"^[a-z]+://", location):
                raise NotImplementedError(
                    f"FakeMLClient does not upload job inputs; {name} is {location!r}"
                )
        return snapshot

    def _environment_id(self, environment: Any) -> str:
        environments = self._client.environments
        if isinstance(environment, Environment):
            created = environments.create_or_update(environment)
            return self._client.arm_id(
                f"environments/{created.name}/versions", str(created.version)
            )
        text = str(environment or "")
        registry = re.fullmatch(
            r"azureml://registries/azureml/environments/([^/]+)/versions/([^/]+)", text
        )
        if registry:
            environments.get(registry[1], version=registry[2])
            return text
        short = re.fullmatch(r"azureml:([^:@]+)(?::([^:@]+)|@latest)", text)
        if short:
            found = (
                environments.get(short[1], version=short[2])
                if short[2]
                else environments.get(short[1], label="latest")
            )
            return self._client.arm_id(f"environments/{found.name}/versions", str(found.version))
        raise http_error(
            400,
            "UserError",
            f"Environment {text!r} is not a valid reference (azureml:NAME:VERSION or a registry URI).",
        )


# --- the client ------------------------------------------------------------------------------


class FakeMLClient:
    """Stands in for ``azure.ai.ml.MLClient`` bound to one workspace."""

    def __init__(
        self,
        *,
        subscription_id: str = "00000000-0000-0000-0000-000000000000",
        resource_group_name: str = "rg-cloudtrain-test",
        workspace_name: str = "ws-cloudtrain-test",
        location: str = "eastus",
        curated: Iterable[tuple[str, int]] = CURATED_CATALOGUE,
        datastore_account: str = "fakeworkspacestorage",
        datastore_container: str = "azureml-blobstore-00000000-0000-0000-0000-000000000000",
        datastore_endpoint: str = "core.windows.net",
        datastore_protocol: str = "https",
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.subscription_id = subscription_id
        self.resource_group_name = resource_group_name
        self.workspace_name = workspace_name
        self.location = location
        self.calls: list[Call] = []
        self.faults: dict[str, list[Exception]] = {}
        self.counter = 0
        self._clock = clock
        self.compute = ComputeOperations(self)
        self.environments = EnvironmentOperations(self, curated)
        self.data = DataOperations(self)
        self.models = ModelOperations(self)
        self.datastores = DatastoreOperations(
            self,
            AzureBlobDatastore(
                name="workspaceblobstore",
                account_name=datastore_account,
                container_name=datastore_container,
                endpoint=datastore_endpoint,
                protocol=datastore_protocol,
            ),
        )
        self.jobs = JobOperations(self)

    def fail(self, op: str, error: Exception, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``op`` ("jobs.get") with ``error``."""
        self.faults.setdefault(op, []).extend([error] * times)

    def throttle(self, op: str, times: int = 1) -> None:
        """As ARM throttles: 429 TooManyRequests."""
        self.fail(op, http_error(429, "TooManyRequests", "Rate limit exceeded."), times)

    def ops(self, prefix: str = "") -> list[str]:
        """The recorded operation names, optionally only those starting with ``prefix``."""
        return [call.op for call in self.calls if call.op.startswith(prefix)]

    def writes(self) -> list[Call]:
        """The recorded calls that carried a body to the service."""
        reads = (".get", ".list", ".download", "get_run")
        return [call for call in self.calls if not any(r in call.op for r in reads)]

    def now(self) -> dt.datetime:
        return self._clock() if self._clock else dt.datetime.now(dt.UTC)

    def arm_id(self, kind: str, name: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group_name}"
            f"/providers/{ARM_PROVIDER}/workspaces/{self.workspace_name}/{kind}/{name}"
        )

    def studio_url(self, job: str) -> str:
        return (
            f"https://ml.azure.com/runs/{job}?wsid=/subscriptions/{self.subscription_id}"
            f"/resourcegroups/{self.resource_group_name}/workspaces/{self.workspace_name}"
        )

    def system_data(self) -> dict[str, Any]:
        stamp = self.now().isoformat()
        return {
            "createdAt": stamp,
            "createdBy": "fake@example.com",
            "createdByType": "User",
            "lastModifiedAt": stamp,
            "lastModifiedBy": "fake@example.com",
            "lastModifiedByType": "User",
        }


def _content(wire: Mapping[str, Any]) -> Any:
    """The part of an asset version that must not change (server fields aside)."""
    props = dict(wire.get("properties") or {})
    for key in (
        "environmentType",
        "provisioningState",
        "isArchived",
        "stage",
        "tags",
        "description",
    ):
        props.pop(key, None)
    return props
