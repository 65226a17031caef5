"""botocore's errors in cloudtrain's tree, in one place for S3, SageMaker, ECR and IAM.

Throttling, capacity of the service and 5xx are transient (worth another try); denied
access and bad credentials say so; everything else is a BackendError naming what failed.
Callers with a field to blame (a bucket, a role) check their own codes first.
"""

from __future__ import annotations

from cloudtrain.errors import BackendError, CloudtrainError, TransientError

#: Error codes AWS services use for "slow down" or a passing fault.
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "ProvisionedThroughputExceededException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
#: Error codes for a caller who may not do what it asked.
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "Forbidden",
        "403",
        "AllAccessDisabled",
        "AccountProblem",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)


def error_code(exc: BaseException) -> str:
    """A ClientError's code ("ThrottlingException"), or "" for any other exception."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def http_status(exc: BaseException) -> int:
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def is_transient(exc: BaseException) -> bool:
    from botocore.exceptions import HTTPClientError

    if isinstance(exc, HTTPClientError):  # connection refused, reset, timed out
        return True
    code = error_code(exc)
    return code in TRANSIENT_CODES or code.startswith("5") or http_status(exc) >= 500


def mapped(exc: BaseException, doing: str) -> CloudtrainError:
    """``exc`` as one of ours, for ``raise mapped(exc, "doing what") from exc``."""
    if isinstance(exc, CloudtrainError):
        return exc
    code = error_code(exc)
    if is_transient(exc):
        return TransientError(f"{doing}: {code + ': ' if code else ''}{exc}")
    if code in DENIED_CODES:
        return BackendError(f"{doing}: {code}: check the AWS credentials and role: {exc}")
    if code == "ResourceLimitExceeded":
        return BackendError(f"{doing}: account quota reached: {exc}")
    return BackendError(f"{doing}: {code + ': ' if code else ''}{exc}")
