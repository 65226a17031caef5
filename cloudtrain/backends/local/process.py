"""One attempt on this machine: the script under its supervisor, the output reader, the watchdog.

A reclaim is what SageMaker does to a spot instance: SIGTERM to the script, SIGKILL after
the grace period. The script runs under ``cloudtrain/supervisor.py``, so an attempt ends
with its whole process tree (whatever the script spawned, in any session), and the tree
dies with the orchestrator, saying why in the attempt's log.

The reader takes the output in large blocks: every byte goes to the attempt's log file,
every line through metric parsing (only lines naming a metric are decoded), and only a
bounded, rate-limited share (``cloudtrain.logshare``) and a short tail stay in memory.
The watchdog enforces ``compute.max_run`` and time-triggered reclaims.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from cloudtrain import contract, supervisor
from cloudtrain.errors import BackendError
from cloudtrain.launcher import RANK_PREFIX, ended
from cloudtrain.logshare import LogShare
from cloudtrain.recovery import Outcome
from cloudtrain.results import AttemptStatus

LOG_TAIL_LINES = 5  # in a failed attempt's reason
TAIL_KEEP_LINES = 50  # kept in memory for it
TAIL_LINE_CHARS = 500
WATCH_TICK_SECONDS = 0.05  # how often the watchdog checks deadlines
READ_BLOCK_BYTES = 1 << 20
PIPE_BYTES = 1 << 20  # a larger pipe: fewer wake-ups for a loud script (Linux)
MAX_LINE_BYTES = 1 << 20  # a longer line is parsed in pieces of this size
#: After a small read, wait this long for more: a script writing line by line (python -u)
#: is then read in blocks, not one wake-up and one Python round per line.
COALESCE_SECONDS = 0.01
SMALL_READ_BYTES = 1 << 16
#: After the supervisor is gone, how long the reader may still drain the pipe.
READER_DRAIN_SECONDS = 5.0
#: Beyond the grace period, how long the supervisor may take before its tree is killed here.
SUPERVISOR_SLACK_SECONDS = 5.0
_F_SETPIPE_SZ = 1031


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class LocalAttempt:
    """One supervised script process, its output reader and its watchdog."""

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
    #: Masks secret values in the output before it is logged, parsed or kept.
    redact: Callable[[str], str] | None = None
    #: Variables whose values the supervisor masks in what it writes to the log itself.
    mask_env: tuple[str, ...] = ()
    #: A multi-process job under ``cloudtrain/launcher.py``: its lines carry their rank,
    #: a reclaim pattern is matched against rank 0's, and a failed rank is named from
    #: the launcher's status file.
    ranked: bool = False
    status_path: Path | None = None
    share: LogShare = field(default_factory=LogShare)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_KEEP_LINES))
    _pending: list[str] = field(default_factory=list)
    _outcome: Outcome | None = None
    _reason: str = ""
    _signalled: tuple[Outcome, str] | None = None
    _started_at: datetime | None = None
    _ended_at: datetime | None = None
    _signalled_at: float = 0.0
    _log_bytes: int = 0

    def start(self) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._stop_reading = threading.Event()
        self._started_at = _now()
        self._start_monotonic = time.monotonic()
        self._log = self.log_path.open("ab", buffering=0)  # the supervisor appends too
        self._candidates = _metric_candidates(self.metrics.names)
        read_fd, write_fd = os.pipe()
        _enlarge(write_fd)
        command = [
            sys.executable,
            "-P",  # not its own folder first on sys.path: no shadowing of the stdlib
            supervisor.__file__,
            "run",
            "--grace",
            str(self.grace_period),
            "--log",
            str(self.log_path),
            "--drain-fd",
            str(read_fd),
            *(arg for name in self.mask_env for arg in ("--mask-env", name)),
            "--",
            *self.command,
        ]
        try:
            self._process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.PIPE,  # its end of file tells the supervisor we are gone
                stdout=write_fd,
                stderr=write_fd,
                pass_fds=(read_fd,),
                start_new_session=True,  # Ctrl-C in a terminal reaches the orchestrator only
            )
        except OSError as exc:
            self._log.close()
            raise BackendError(f"cannot start {self.command[0]}: {exc}") from exc
        finally:
            os.close(write_fd)
        self._read_fd = read_fd
        self._pattern = re.compile(self.trigger) if isinstance(self.trigger, str) else None
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._reader.start()
        self._watchdog.start()

    # -- threads --------------------------------------------------------------------

    def _read_output(self) -> None:
        partial = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self._read_fd, selectors.EVENT_READ)
            while not self._stop_reading.is_set():
                if not selector.select(timeout=0.2):
                    continue
                data = os.read(self._read_fd, READ_BLOCK_BYTES)
                if not data:
                    break
                if len(data) < SMALL_READ_BYTES and self._pattern is None:
                    time.sleep(COALESCE_SECONDS)  # an armed reclaim pattern is checked at once
                partial += data
                end = partial.rfind(b"\n") + 1
                if end == 0 and len(partial) < MAX_LINE_BYTES:
                    continue
                end = end or len(partial)
                block, partial = partial[:end], partial[end:]
                self._take(block)
        if partial:
            self._take(partial)
        os.close(self._read_fd)

    def _take(self, block: bytes) -> None:
        """One block of whole lines: to the log file, the metrics, the trigger, the share."""
        if self.redact is not None:  # bytes that are not UTF-8 survive the round trip
            block = self.redact(block.decode("utf-8", "surrogateescape")).encode(
                "utf-8", "surrogateescape"
            )
        with self._lock:
            self._log.write(block)
            self._log_bytes += len(block)
        self._feed_metrics(block)
        if self._pattern is not None:
            for line in block.decode("utf-8", "replace").splitlines():
                if self.ranked:  # rank 0's lines only, without their mark
                    match = RANK_PREFIX.match(line)
                    if match is None or match.group(2) != "0":
                        continue
                    line = line[match.end() :]
                if self._pattern is not None and self._pattern.search(line):
                    self._pattern = None
                    self._signal(
                        Outcome.INTERRUPTED,
                        f"simulated spot reclaim: the output matched {self.trigger!r}",
                    )
        count = block.count(b"\n") + (not block.endswith(b"\n"))
        with self._lock:
            allowed = min(self.share.allowance(), count)
            head = block.split(b"\n", allowed)[:allowed] if allowed else []
            for raw in head:
                shared = self.share.take(raw.decode("utf-8", "replace"))
                if shared is not None:
                    self._pending.append(shared)
            if count > allowed:
                self.share.cut(count - allowed, len(block) - sum(len(r) + 1 for r in head))
            for raw in block.rsplit(b"\n", TAIL_KEEP_LINES + 1)[-TAIL_KEEP_LINES - 1 :]:
                if raw.strip():
                    self.tail.append(raw.decode("utf-8", "replace")[:TAIL_LINE_CHARS])
        self.changed.set()

    def _feed_metrics(self, block: bytes) -> None:
        """Every line that names a metric goes through the parser, in order."""
        if self._candidates is None:
            return
        fed_to = -1
        for match in self._candidates.finditer(block):
            if match.start() < fed_to:
                continue
            start = block.rfind(b"\n", 0, match.start()) + 1
            end = block.find(b"\n", match.end())
            fed_to = len(block) if end < 0 else end
            self.metrics.feed(block[start:fed_to].decode("utf-8", "replace"))

    def _watch(self) -> None:
        """Enforce max_run, time-triggered reclaims and the end of the supervisor's tree."""
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
            elif now >= self._signalled_at + self.grace_period + SUPERVISOR_SLACK_SECONDS:
                self._kill_tree()
        self._reader.join(READER_DRAIN_SECONDS)
        if self._reader.is_alive():  # something outside the tree holds the pipe
            self._stop_reading.set()
            self._reader.join()
            self._note("the script's processes ended but its output stayed open; stopped reading")
        self._finish(self._process.returncode)

    # -- signals and state --------------------------------------------------------------

    def _signal(self, outcome: Outcome, reason: str) -> None:
        """SIGTERM the supervisor once; it stops the script's whole tree, with the grace period."""
        with self._lock:
            if self._signalled is not None or self._process.poll() is not None:
                return
            self._signalled = (outcome, reason)
            self._signalled_at = time.monotonic()
        self._note(f"{reason}: SIGTERM now, SIGKILL in {self.grace_period:g} s")
        try:
            self._process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    def _note(self, text: str) -> None:
        line = f"{supervisor.NOTE}{text}"
        with self._lock:
            self._log.write(line.encode() + b"\n")
            self._pending.append(line)
            self.tail.append(line)
        self.changed.set()

    def _kill_tree(self) -> None:
        """The last resort, should the supervisor itself hang: SIGKILL it and its tree."""
        try:
            root = psutil.Process(self._process.pid)
            for process in [*root.children(recursive=True), root]:
                process.kill()
        except psutil.Error:
            pass

    def _finish(self, returncode: int) -> None:
        if self._signalled is not None:
            outcome, reason = self._signalled
        elif returncode == 0:
            outcome, reason = Outcome.SUCCEEDED, "the script exited 0"
        else:
            outcome, reason = Outcome.FAILED, self._failure_reason(returncode)
        note = self.share.note(str(self.log_path), final=True)
        with self._lock:
            if note:
                self._pending.append(note)
            self._outcome, self._reason = outcome, reason
            self._ended_at = _now()
            self._log.close()
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._done.set()
        self.changed.set()

    def _failure_reason(self, returncode: int) -> str:
        if returncode < 0:
            cause = f"killed by {signal.Signals(-returncode).name}"
        else:
            cause = f"exit code {returncode}"
        tail = list(self.tail)[-LOG_TAIL_LINES:]
        failed = self._failed_rank()
        if failed is not None:
            return f"the script failed: {failed}" + (": " + " | ".join(tail) if tail else "")
        return f"the script failed ({cause})" + (": " + " | ".join(tail) if tail else "")

    def _failed_rank(self) -> str | None:
        """Which rank failed, as the launcher recorded it; None when no rank did."""
        if self.status_path is None:
            return None
        try:
            record = json.loads(self.status_path.read_text())
            rank, host, local = int(record["rank"]), str(record["host"]), record["local_rank"]
            how = ended(int(record["exit_code"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return f"rank {rank} on {host} (local rank {local}) {how}, and the other ranks were stopped"

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
            )

    def new_lines(self) -> list[str]:
        """The lines for Prefect since the last call, and a note of what was cut."""
        with self._lock:
            lines, self._pending = self._pending, []
            if self._outcome is None:
                note = self.share.note(str(self.log_path))
                if note:
                    lines.append(note)
        return lines

    def stop(self) -> None:
        """Stop as a person would: SIGTERM, then SIGKILL after the grace period; wait."""
        self._signal(Outcome.STOPPED, "stopped: the orchestrator was cancelled or timed out")
        if not self._done.wait(self.grace_period + SUPERVISOR_SLACK_SECONDS):
            self._kill_tree()
            self._done.wait(READER_DRAIN_SECONDS + 1)


def _metric_candidates(names: Iterable[str]) -> re.Pattern[bytes] | None:
    """``name=`` for any declared metric: the lines worth decoding and parsing."""
    listed = list(names)
    if not listed:
        return None
    return re.compile(b"|".join(re.escape(name.encode()) + b"=" for name in listed))


def _enlarge(fd: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size: the default pipe works, only slower
