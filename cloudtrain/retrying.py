"""One retry policy for every control-plane call, on every cloud.

The SDKs retry a throttled or failing call a few times on their own (botocore's standard
mode, azure-core's RetryPolicy), within seconds. When a call is still throttled after
that, ``call_with_retries`` waits and calls again, with the polling backoff: 2 s growing
to 30 s, +-20 %; ``CONTROL_ATTEMPTS`` calls cover about 6 minutes of waiting (2 + 3 +
4.5 + 6.8 + 10 + 15 + 23 + 30 * 10 s) on top of the SDK's own retries, so a throttled
account slows a run down instead of failing it; each wait is logged as a warning.
Only what the cloud's ``transient`` test accepts is retried (throttling, 5xx, a dropped
connection); a validation error, denied access or a missing resource fails at once.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from cloudtrain.backoff import Backoff

T = TypeVar("T")
logger = logging.getLogger(__name__)

#: Calls of one operation before a transient error is given up on (the SDK's own retries
#: happen inside each), and the waits between them. Read at each call, so tests can
#: monkeypatch them.
CONTROL_ATTEMPTS = 18
CONTROL_INITIAL_SECONDS = 2.0
CONTROL_MAX_SECONDS = 30.0
sleep_seconds: Callable[[float], None] = time.sleep


def call_with_retries(
    call: Callable[[], T],
    *,
    transient: Callable[[BaseException], bool],
    what: str,
    backoff: Backoff | None = None,
) -> T:
    """``call()``, called again after a wait while it raises a transient error; the last
    error is raised as it is, for the caller to map."""
    delays = backoff or Backoff(
        initial_seconds=CONTROL_INITIAL_SECONDS,
        max_seconds=CONTROL_MAX_SECONDS,
        sleep=sleep_seconds,
    )
    attempts = CONTROL_ATTEMPTS
    attempt = 1
    while True:
        try:
            return call()
        except Exception as exc:
            if attempt >= attempts or not transient(exc):
                raise
            delay = delays.wait()
            logger.warning(
                "%s: %s; waited %.1f s, calling again (%d of %d)",
                what,
                str(exc)[:200],
                delay,
                attempt + 1,
                attempts,
            )
        attempt += 1


class RetryingProxy:
    """An SDK client (or one of its operation groups) whose methods retry transient errors.

    Attributes named in ``groups`` are wrapped too (azure-ai-ml's ``ml_client.jobs``);
    everything else that is callable is treated as an operation. ``raw`` is the client.
    """

    def __init__(
        self,
        raw: Any,
        transient: Callable[[BaseException], bool],
        *,
        groups: frozenset[str] = frozenset(),
        passthrough: frozenset[str] = frozenset(),
    ) -> None:
        self.raw = raw
        self._transient = transient
        self._groups = groups
        self._passthrough = passthrough

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.raw, name)
        if name in self._groups:
            return RetryingProxy(value, self._transient, passthrough=self._passthrough)
        if name.startswith("_") or name in self._passthrough or not callable(value):
            return value

        @functools.wraps(value)
        def operation(*args: Any, **kwargs: Any) -> Any:
            return call_with_retries(
                lambda: value(*args, **kwargs), transient=self._transient, what=name
            )

        return operation
