"""How much of a script's output goes to Prefect: a bounded, rate-limited share.

Every line goes to the attempt's log file and through metric parsing; Prefect stores each
line it gets as a database row, so a script printing 200 MB would fill its database and
slow the run to the speed of log shipping. A token bucket (lines per second, with a burst)
and a cap on the bytes sent per attempt bound that share; what was cut is counted and said
in a note that names the full log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Lines per second sent to Prefect on average, and the burst allowed above it.
SHARE_LINES_PER_SECOND = 50.0
SHARE_BURST_LINES = 500
#: Bytes of one attempt's output sent to Prefect at most (then only notes).
SHARE_MAX_BYTES = 2 * 1024 * 1024
#: A longer line is cut to this many characters in Prefect (the log file has it whole).
SHARE_MAX_LINE_CHARS = 2000


@dataclass
class LogShare:
    """Decides which lines go to Prefect; counts the rest."""

    lines_per_second: float = SHARE_LINES_PER_SECOND
    burst: int = SHARE_BURST_LINES
    max_bytes: int = SHARE_MAX_BYTES
    clock: Callable[[], float] = time.monotonic
    sent_lines: int = 0
    sent_bytes: int = 0
    cut_lines: int = 0
    cut_bytes: int = 0
    _cut_since_note: int = 0
    _tokens: float = field(init=False)
    _refilled: float = field(init=False)

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)
        self._refilled = self.clock()

    def allowance(self) -> int:
        """How many lines may go now."""
        now = self.clock()
        self._tokens = min(
            float(self.burst), self._tokens + (now - self._refilled) * self.lines_per_second
        )
        self._refilled = now
        return int(self._tokens) if self.sent_bytes < self.max_bytes else 0

    def take(self, line: str) -> str | None:
        """The line as it goes to Prefect (maybe shortened), or None when it is cut.

        Call ``allowance()`` first; ``take`` spends one token per line sent."""
        size = len(line.encode("utf-8", "replace")) + 1
        if self._tokens < 1 or self.sent_bytes + size > self.max_bytes:
            self.cut(1, size)
            return None
        self._tokens -= 1
        self.sent_lines += 1
        self.sent_bytes += size
        if len(line) > SHARE_MAX_LINE_CHARS:
            line = f"{line[:SHARE_MAX_LINE_CHARS]}... ({len(line)} characters, cut)"
        return line

    def cut(self, lines: int, size: int) -> None:
        self.cut_lines += lines
        self.cut_bytes += size
        self._cut_since_note += lines

    def note(self, full_log: str, final: bool = False) -> str | None:
        """Say what was cut since the last note (or in all, at the end), and where it is."""
        if final and self.cut_lines:
            return (
                f"[cloudtrain] {self.sent_lines} of {self.sent_lines + self.cut_lines} lines "
                f"of output were sent here ({_size(self.cut_bytes)} cut: at most "
                f"{self.lines_per_second:g} lines/s and {_size(self.max_bytes)} per attempt); "
                f"the full log is {full_log}"
            )
        if not self._cut_since_note or final:
            return None
        cut, self._cut_since_note = self._cut_since_note, 0
        return (
            f"[cloudtrain] {cut} line(s) of output not sent here (at most "
            f"{self.lines_per_second:g} lines/s and {_size(self.max_bytes)} per attempt); "
            f"the full log is {full_log}"
        )


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count} bytes"
