"""One attempt on this machine: the script's process, its output reader and its watchdog.

A reclaim is what SageMaker does to a spot instance: SIGTERM to the script's process
group, SIGKILL after the grace period. The watchdog enforces ``compute.max_run`` and
time-triggered reclaims; the reader parses metrics and fires output-triggered ones.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cloudtrain import contract
from cloudtrain.errors import BackendError
from cloudtrain.recovery import Outcome
from cloudtrain.results import AttemptStatus

LOG_TAIL_LINES = 5
WATCH_TICK_SECONDS = 0.05  # how often the watchdog checks deadlines


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class LocalAttempt:
    """One script process, its output reader and its watchdog."""

    command: list[str]
    cwd: Path
    env: dict[str, str]
    log_path: Path
    checkpoint_dir: Path
    metrics: contract.MetricParser
    max_run: float
    grace_period: float
    trigger: float | str | None
    changed: threading.Event
    #: Masks secret values in each line before it is kept or written to the log file.
    redact: Callable[[str], str] = str
    lines: list[str] = field(default_factory=list)
    _read: int = 0
    _outcome: Outcome | None = None
    _reason: str = ""
    _signalled: tuple[Outcome, str] | None = None
    _started_at: datetime | None = None
    _ended_at: datetime | None = None
    _resumed_from: int = 0
    _signalled_at: float = 0.0

    def start(self) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._resumed_from = sum(1 for p in self.checkpoint_dir.rglob("*") if p.is_file())
        self._started_at = _now()
        self._start_monotonic = time.monotonic()
        self._log = self.log_path.open("w", buffering=1)
        try:
            self._process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                errors="replace",
                start_new_session=True,  # its own process group, signalled as one
            )
        except OSError as exc:
            self._log.close()
            raise BackendError(f"cannot start {self.command[0]}: {exc}") from exc
        self._pattern = re.compile(self.trigger) if isinstance(self.trigger, str) else None
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._reader.start()
        self._watchdog.start()

    # -- threads --------------------------------------------------------------------

    def _read_output(self) -> None:
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            line = self.redact(raw.rstrip("\n"))
            self.metrics.feed(line)
            self._append(line)
            if self._pattern is not None and self._pattern.search(line):
                self._pattern = None
                self._signal(
                    Outcome.INTERRUPTED,
                    f"simulated spot reclaim: the output matched {self.trigger!r}",
                )

    def _watch(self) -> None:
        """Enforce max_run, time-triggered reclaims and the SIGKILL after the grace period."""
        run_deadline = self._start_monotonic + self.max_run
        reclaim_at = (
            self._start_monotonic + float(self.trigger)
            if isinstance(self.trigger, int | float)
            else None
        )
        while True:
            try:
                self._process.wait(timeout=WATCH_TICK_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if self._signalled is None:
                if reclaim_at is not None and now >= reclaim_at:
                    self._signal(
                        Outcome.INTERRUPTED,
                        f"simulated spot reclaim {reclaim_at - self._start_monotonic:g} s "
                        "after start",
                    )
                elif now >= run_deadline:
                    self._signal(Outcome.TIMED_OUT, f"compute.max_run ({self.max_run:g} s) reached")
            elif now >= self._signalled_at + self.grace_period:
                self._kill(signal.SIGKILL)
        self._reader.join()
        self._log.close()
        self._finish(self._process.returncode)

    # -- signals and state --------------------------------------------------------------

    def _signal(self, outcome: Outcome, reason: str) -> None:
        """SIGTERM the process group once; the watchdog sends SIGKILL after the grace period."""
        with self._lock:
            if self._signalled is not None or self._process.poll() is not None:
                return
            self._signalled = (outcome, reason)
            self._signalled_at = time.monotonic()
        self._append(f"[cloudtrain] {reason}: SIGTERM now, SIGKILL in {self.grace_period:g} s")
        self._kill(signal.SIGTERM)

    def _append(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)
            self._log.write(line + "\n")
        self.changed.set()

    def _kill(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self._process.pid, sig)
        except ProcessLookupError:
            pass

    def _finish(self, returncode: int) -> None:
        if self._signalled is not None:
            outcome, reason = self._signalled
        elif returncode == 0:
            outcome, reason = Outcome.SUCCEEDED, "the script exited 0"
        else:
            outcome, reason = Outcome.FAILED, self._failure_reason(returncode)
        with self._lock:
            self._outcome, self._reason = outcome, reason
            self._ended_at = _now()
        self._done.set()
        self.changed.set()

    def _failure_reason(self, returncode: int) -> str:
        if returncode < 0:
            cause = f"killed by {signal.Signals(-returncode).name}"
        else:
            cause = f"exit code {returncode}"
        tail = [line for line in self.lines if line.strip()][-LOG_TAIL_LINES:]
        return f"the script failed ({cause})" + (": " + " | ".join(tail) if tail else "")

    def status(self) -> AttemptStatus:
        with self._lock:
            return AttemptStatus(
                outcome=self._outcome,
                reason=self._reason,
                metrics=self.metrics.final,
                started_at=self._started_at,
                ended_at=self._ended_at,
                billable_seconds=(
                    (self._ended_at - self._started_at).total_seconds()
                    if self._ended_at and self._started_at
                    else None
                ),
                resumed_from=self._resumed_from,
            )

    def new_lines(self) -> list[str]:
        with self._lock:
            lines, self._read = self.lines[self._read :], len(self.lines)
        return lines

    def stop(self) -> None:
        """Stop as a person would: SIGTERM, then SIGKILL after the grace period; wait."""
        self._signal(Outcome.STOPPED, "stopped: the orchestrator was cancelled or timed out")
        if not self._done.wait(self.grace_period + 5):
            self._kill(signal.SIGKILL)
            self._done.wait(5)
