"""The exceptions cloudtrain raises, so callers catch ours and never an SDK's.

::

    CloudtrainError
    ├── ConfigError            bad input: names the field; nothing was created (CLI exit 2)
    │   └── UnsupportedError   valid config, but this cloud cannot honour it
    ├── BackendError           a cloud or local operation failed (SDK errors mapped here)
    │   └── TransientError     worth retrying: throttling, capacity, preemption
    └── TrainingError          the training run ended without a model (CLI exit 1)

SDK errors (``ClientError``, ``HttpResponseError``) are mapped into this tree with
``raise ... from exc`` by the backend that called the SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudtrain.results import TrainingResult


class CloudtrainError(Exception):
    """Base of every error cloudtrain raises on purpose."""


class ConfigError(CloudtrainError, ValueError):
    """The config or an argument is invalid; ``field`` is its dotted path."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class UnsupportedError(ConfigError):
    """The config is valid, but the chosen cloud has no way to run it."""


class BackendError(CloudtrainError):
    """A backend operation failed; the SDK's exception is the ``__cause__``."""


class TransientError(BackendError):
    """A failure that a later try can get past (throttling, capacity, preemption)."""


class TrainingError(CloudtrainError):
    """The training stage ended without a model; ``result`` holds every attempt."""

    def __init__(self, message: str, result: TrainingResult | Any = None) -> None:
        self.result = result
        self.summary: dict[str, Any] | None = None  # the run summary, set by the flow
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect may pickle a failed flow's exception; keep what it carries.
        return (type(self), (str(self), self.result), {"summary": self.summary})
