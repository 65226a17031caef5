"""Following a triggered run: poll its state with backoff until it is final or the
timeout passes, and print its logs as they reach the API.

The constants are read when ``follow_run`` runs, so tests can shrink them by patching
this module (``cloudtrain.trigger.follow.POLL_INITIAL_SECONDS``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from uuid import UUID

from cloudtrain.backoff import Backoff

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

#: Following a run: 1 s, 1.5 s, 2.3 s, ... capped at 10 s (about 8 polls in the first
#: minute, then 6 a minute), from 1 s again whenever the state changes.
POLL_INITIAL_SECONDS = 1.0
POLL_MAX_SECONDS = 10.0
POLL_FACTOR = 1.5
POLL_JITTER = 0.1  # fraction of the delay, both ways
#: A run still waiting this long for a worker gets one hint about the work pool.
WAITING_HINT_SECONDS = 30.0
#: After the final state, logs can still be on their way from the worker (it ships
#: them in batches, every ~2 s): read them up to the flow's last line, at most this long.
LOG_DRAIN_SECONDS = 5.0
LOG_DRAIN_POLL_SECONDS = 0.5
LOG_PAGE = 200
LOG_LATE_SECONDS = 10.0  # how much earlier than the newest line printed a line may arrive


def follow_run(
    client: SyncPrefectClient,
    flow_run: FlowRun,
    timeout: float | None,
    deployment: Any,
    say: Callable[[str], None],
) -> tuple[FlowRun, bool]:
    """Poll the run with backoff until it is final or ``timeout`` seconds pass, passing
    state changes and log lines to ``say``; returns (the run as last read, timed out)."""
    started = time.monotonic()
    backoff = Backoff(
        initial_seconds=POLL_INITIAL_SECONDS,
        max_seconds=POLL_MAX_SECONDS,
        factor=POLL_FACTOR,
        jitter=POLL_JITTER,
    )
    delays = backoff.delays()
    logs = _LogFollower(client, flow_run.id)
    seen_state: str | None = None
    hinted = False
    timed_out = False
    while True:
        flow_run = client.read_flow_run(flow_run.id)
        state = flow_run.state
        if state is not None and state.name != seen_state:
            seen_state = state.name
            say(f"state: {state.name}")
            delays = backoff.delays()  # things move: look again soon
        for line in logs.new_lines():
            say(line)
        if state is not None and state.is_final():
            break
        waited = time.monotonic() - started
        if timeout is not None and waited >= timeout:
            timed_out = True
            break
        if not hinted and waited >= WAITING_HINT_SECONDS and state and state.is_scheduled():
            hinted = True
            say(_waiting_hint(client, deployment))
        delay = next(delays)
        if timeout is not None:  # cut short, so the timeout is noticed on time
            delay = max(0.0, min(delay, timeout - waited))
        backoff.sleep(delay)
    if state is not None and state.is_final():
        for line in logs.drain():
            say(line)
    return flow_run, timed_out


def _waiting_hint(client: SyncPrefectClient, deployment: Any) -> str:
    pool = deployment.work_pool_name or "?"
    hint = f"still waiting for a worker after {WAITING_HINT_SECONDS:g} s"
    try:
        work_pool = client.read_work_pool(pool)
    except Exception:  # a hint must never fail the command
        return hint
    if work_pool.is_paused:
        return f"{hint}: work pool {pool!r} is paused (prefect work-pool resume {pool})"
    status = getattr(work_pool.status, "value", work_pool.status)
    if status != "READY":
        return f"{hint}: no worker polls work pool {pool!r} (prefect worker start --pool {pool})"
    return f"{hint} (work pool {pool!r} has a worker; it may be busy)"


class _LogFollower:
    """The run's log lines, each once, as they reach the API.

    Each read goes back LOG_LATE_SECONDS before the newest line printed, because the
    flow run's and the worker's logs reach the API in separate batches; ids keep a line
    from being printed twice.
    """

    def __init__(self, client: SyncPrefectClient, flow_run_id: UUID) -> None:
        self.client = client
        self.flow_run_id = flow_run_id
        self.seen: set[UUID] = set()
        self.newest: Any = None  # the newest timestamp printed so far
        self.finished = False  # the flow run's own "Finished in state" line was printed

    def new_lines(self) -> Iterator[str]:
        from datetime import timedelta

        from prefect.client.schemas.filters import (
            LogFilter,
            LogFilterFlowRunId,
            LogFilterTimestamp,
        )
        from prefect.client.schemas.sorting import LogSort

        log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[self.flow_run_id]))
        if self.newest is not None:
            since = self.newest - timedelta(seconds=LOG_LATE_SECONDS)
            log_filter.timestamp = LogFilterTimestamp(after_=since)
        offset = 0
        while True:
            try:
                page = self.client.read_logs(
                    log_filter=log_filter, limit=LOG_PAGE, offset=offset, sort=LogSort.TIMESTAMP_ASC
                )
            except Exception:  # logs are a courtesy: the run's state decides the exit code
                return
            for log in page:
                if log.id in self.seen:
                    continue
                self.seen.add(log.id)
                self.newest = max(self.newest, log.timestamp) if self.newest else log.timestamp
                if log.task_run_id is None and log.message.startswith("Finished in state"):
                    self.finished = True
                yield _log_line(log)
            if len(page) < LOG_PAGE:
                return
            offset += len(page)

    def drain(self) -> Iterator[str]:
        """After the final state: the lines still on their way, up to the engine's last
        one (``Finished in state ...`` from the flow run itself), at most LOG_DRAIN_SECONDS."""
        deadline = time.monotonic() + LOG_DRAIN_SECONDS
        while not self.finished:
            yield from self.new_lines()
            if self.finished or time.monotonic() >= deadline:
                return
            time.sleep(LOG_DRAIN_POLL_SECONDS)


_LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


def _log_line(log: Any) -> str:
    """One line per log: Prefect's tracebacks repeat the error of the line that carries
    them, so only their size is printed (the UI has them whole)."""
    first, *rest = str(log.message).splitlines() or [""]
    more = f" [+{len(rest)} lines: traceback in the UI]" if rest else ""
    level = _LEVELS.get(log.level, str(log.level))
    return f"{log.timestamp:%H:%M:%S} | {level:7} | {first}{more}"
