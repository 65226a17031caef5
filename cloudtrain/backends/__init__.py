"""The backend registry: cloud name -> the class that runs the stages there.

A backend is one folder under ``cloudtrain/backends/`` plus one registration here (or
``register()`` at run time, or an entry point in the ``cloudtrain.backends`` group of an
installed package). Config validation, the CLI, flow names and messages all read this
registry, so a new cloud touches nothing else. Classes are imported only when a config
or a run asks for them.

This module knows names and classes only (no config, no protocol), so that the config
can validate ``cloud`` and its sections against it; ``cloudtrain.backend`` builds a run's
backend from it.
"""

from __future__ import annotations

import difflib
import importlib
import re
from functools import cache
from typing import TYPE_CHECKING, Any

from cloudtrain.errors import ConfigError, quote

if TYPE_CHECKING:
    from pydantic import BaseModel

#: The backends that come with cloudtrain: name -> "module:Class".
BUILT_IN: dict[str, str] = {
    "local": "cloudtrain.backends.local.backend:LocalBackend",
    "aws": "cloudtrain.backends.aws.backend:AwsBackend",
    "azure": "cloudtrain.backends.azure.backend:AzureBackend",
}
#: A cloud's name is a config key, part of flow names (``<name>-training``) and of file
#: names (``flows/<name>_training.py``).
CLOUD_NAME = re.compile(r"[a-z][a-z0-9]{1,30}")
#: The config's own top-level keys, which no cloud's section may take
#: (tests/test_config.py keeps this equal to PipelineConfig's fields).
RESERVED_NAMES = frozenset(
    {"name", "cloud", "code", "hyperparameters", "data", "metrics", "environment"}
    | {
        "compute",
        "retry",
        "work_dir",
        "secrets",
        "clouds",
        "budget",
        "input_modes",
        "sweep",
        "tracking",
    }
)
#: Installed packages add backends under this entry-point group (name = "module:Class").
ENTRY_POINT_GROUP = "cloudtrain.backends"

_registered: dict[str, str | type[Any]] = dict(BUILT_IN)


def register(name: str, backend: str | type[Any]) -> None:
    """Make ``cloud: <name>`` run on ``backend`` (a class, or "module:Class")."""
    if not _valid_name(name):
        raise ValueError(
            f"cloud name {quote(name)} must be lowercase letters and digits, like 'aws', and not "
            f"one of the config's own keys ({', '.join(sorted(RESERVED_NAMES))})"
        )
    _registered[name] = backend
    backend_class.cache_clear()


def unregister(name: str) -> None:
    _registered.pop(name, None)
    backend_class.cache_clear()


@cache
def _entry_points() -> dict[str, str]:
    """Backends of installed packages; read once, and only when a name is not known."""
    from importlib.metadata import entry_points

    found = entry_points(group=ENTRY_POINT_GROUP)
    return {point.name: point.value for point in found if _valid_name(point.name)}


def _valid_name(name: str) -> bool:
    return bool(CLOUD_NAME.fullmatch(name)) and name not in RESERVED_NAMES


def cloud_names() -> list[str]:
    """Every cloud a config may name, sorted."""
    return sorted({*_registered, *_entry_points()})


def is_cloud(name: str) -> bool:
    return name in _registered or name in _entry_points()


@cache
def backend_class(name: str) -> type[Any]:
    """The class registered for ``name`` (it implements ``cloudtrain.backend.Backend``);
    a ConfigError naming ``cloud`` when none is."""
    target = _registered.get(name) or _entry_points().get(name)
    if target is None:
        raise ConfigError("cloud", unknown_cloud_message(name))
    if isinstance(target, str):
        module_name, _, class_name = target.partition(":")
        try:
            target = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                "cloud", f"the {name} backend ({module_name}:{class_name}) cannot be loaded: {exc}"
            ) from exc
    declared = getattr(target, "name", None)
    if declared != name:
        raise ConfigError(
            "cloud", f"the {name} backend {target!r} declares another name, {declared!r}"
        )
    found: type[Any] = target
    return found


def settings_model(name: str) -> type[BaseModel] | None:
    """The model of the config section named ``name``, or None for a cloud without one."""
    model: type[BaseModel] | None = backend_class(name).settings
    return model


def section_models() -> dict[str, type[BaseModel]]:
    """Every cloud's section model, for forms and "did you mean": a backend that cannot be
    loaded is left out here (a config that names it gets the error)."""
    models: dict[str, type[BaseModel]] = {}
    for name in cloud_names():
        try:
            model = settings_model(name)
        except ConfigError:
            continue
        if model is not None:
            models[name] = model
    return models


def unknown_cloud_message(name: str) -> str:
    names = cloud_names()
    message = f"unknown cloud {quote(name)}; valid: {', '.join(names)}"
    close = difflib.get_close_matches(name, names, n=1)
    return message + (f" (did you mean {close[0]!r}?)" if close else "")
