"""The backends, by cloud name; each is imported only when it is asked for."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from cloudtrain.errors import UnsupportedError

if TYPE_CHECKING:
    from cloudtrain.backend import Backend
    from cloudtrain.config import PipelineConfig

_BACKENDS: dict[str, str] = {
    "local": "cloudtrain.backends.local:LocalBackend",
    "aws": "cloudtrain.backends.aws.backend:AwsBackend",
    "azure": "cloudtrain.backends.azure.backend:AzureBackend",
}


def available_clouds() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(config: PipelineConfig) -> Backend:
    """The backend for ``config.cloud``, built from the config."""
    target = _BACKENDS.get(config.cloud)
    if target is None:
        raise UnsupportedError(
            "cloud",
            f"the {config.cloud} backend is not in this version of cloudtrain yet; "
            f"available: {', '.join(available_clouds())}",
        )
    module_name, _, class_name = target.partition(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = backend_class.from_config(config)
    return backend
