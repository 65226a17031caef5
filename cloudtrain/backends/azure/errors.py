"""azure-core's errors in cloudtrain's tree, in one place for the control plane and storage.

Throttling, timeouts and 5xx are transient; a refused credential says so; the rest is a
BackendError naming what failed. Callers with a field to blame check their cases first.
"""

from __future__ import annotations

from typing import Any

from cloudtrain.errors import BackendError, CloudtrainError, TransientError

#: HTTP statuses worth another try.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def status_code(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None)


def is_not_found(exc: BaseException) -> bool:
    return status_code(exc) == 404 or type(exc).__name__ == "ResourceNotFoundError"


def text(value: Any) -> str:
    """An SDK enum (``JobStatus.RUNNING``) or string as the service spells it ("Running")."""
    return "" if value is None else str(getattr(value, "value", value))


def is_transient(exc: BaseException) -> bool:
    """Throttled (429), a passing fault (408, 5xx) or a dropped connection."""
    return status_code(exc) in TRANSIENT_STATUS or type(exc).__name__ in (
        "ServiceRequestError",
        "ServiceResponseError",
    )


def service_error(exc: BaseException, doing: str) -> CloudtrainError:
    """``exc`` as one of ours, for ``raise service_error(exc, "doing what") from exc``."""
    if isinstance(exc, CloudtrainError):
        return exc
    code = status_code(exc)
    name = type(exc).__name__
    if is_transient(exc):
        return TransientError(f"{doing}: {exc}")
    if code in (401, 403) or name == "ClientAuthenticationError":
        return BackendError(f"{doing}: check the Azure credentials and their role: {exc}")
    return BackendError(f"{doing}: {exc}")
