"""Proof that an attempt resumed: the progress each attempt started from and reached.

An attempt's progress comes from the script's own lines (``progress=0.4`` or
``epoch=N``, as ``cloudtrain.contract.ProgressParser`` reads them). An attempt that
starts where a fresh run starts although its checkpoint location held files did not
resume (SageMaker SDK issue #1040: a job that restarts from scratch on every reclaim
pays for the same epochs again and again); it is flagged in the log and the report, and
after ``retry.no_progress_limit`` such attempts the run stops with outcome
``no_progress``. A spot attempt reclaimed before any checkpoint was written is warned
about too: the next attempt has nothing to resume from.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from cloudtrain.config import PipelineConfig
from cloudtrain.contract import ProgressParser
from cloudtrain.launcher import rank_zero_text
from cloudtrain.recovery import Outcome
from cloudtrain.results import AttemptRecord, TrainingResult
from cloudtrain.supervisor import NOTE

_EPOCH = re.compile(r"(?<![\w.-])epoch=([0-9]+)")


class AttemptProgress:
    """The progress one attempt reported: the first and last value, as fractions and as
    epochs when the script prints them."""

    def __init__(self, config: PipelineConfig) -> None:
        epochs = config.hyperparameters.get("epochs")
        total = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None
        self.parser = ProgressParser(total)
        self.start: float | None = None
        self.end: float | None = None
        self.first_epoch: int | None = None
        self.last_epoch: int | None = None

    def feed(self, line: str) -> None:
        text = rank_zero_text(line)  # a multi-process job's progress is rank 0's
        # cloudtrain's own lines (a reclaim quoting its pattern '^epoch=1[0-9] ') are not
        # the script's progress
        if text is None or text.startswith(NOTE):
            return
        line = text
        value = self.parser.feed(line)
        if value is not None:
            self.start = value if self.start is None else self.start
            self.end = value
        match = _EPOCH.search(line)
        if match:
            epoch = int(match.group(1))
            self.first_epoch = epoch if self.first_epoch is None else self.first_epoch
            self.last_epoch = epoch


@dataclass(frozen=True)
class Verdict:
    """What the resume check concluded about one attempt."""

    warnings: tuple[str, ...] = ()
    stop: str | None = None  # the reason to stop the run with outcome no_progress


@dataclass(frozen=True)
class _Start:
    """Where an attempt started and how far the attempts before it got, in one measure."""

    start: float
    fresh: float  # where the first attempt that reported progress started
    reached: float  # the furthest any earlier attempt got
    label: str  # the start as the message says it: "epoch 1", "10%"


@dataclass
class ResumeCheck:
    """Judges each ended attempt against the ones before it (see the module).

    A pure function of the attempt records: an attempt *started from zero* when its first
    epoch (or, without epochs, its first progress) is at or below where the run's first
    reporting attempt started, an earlier attempt got further than that, and its
    checkpoint location held files when it started (``resumed_from``, counting files
    copied from another leg). Requiring that an earlier attempt got further keeps a reclaim
    before the first epoch's checkpoint from counting as a restart."""

    config: PipelineConfig
    restarts: list[int] = field(default_factory=list)  # attempts that started from zero
    _said: set[str] = field(default_factory=set)  # the once-per-run warnings given

    def after(self, record: AttemptRecord, result: TrainingResult) -> Verdict:
        """Set ``record.resumed``; the warnings to log and report; stop when the limit of
        attempts that started from zero is reached and the run would retry again."""
        earlier = [a for a in result.attempts if a.number < record.number]
        warnings = [w for w in (self._empty_after_reclaim(record, earlier),) if w]
        if record.outcome is Outcome.NO_CAPACITY:  # it never ran: nothing to judge
            return Verdict(tuple(warnings))
        if record.progress_start is None and record.epoch_start is None:
            if record.resumed_from:
                warnings += self._once(
                    "silent",
                    f"attempt {record.number} printed no progress (`epoch=N` or "
                    f"`progress=0.4` lines), so whether it resumed from the "
                    f"{_files(record.resumed_from)} in its checkpoint cannot be told",
                )
            return Verdict(tuple(warnings))
        where = _start(record, earlier)
        if where is None:
            return Verdict(tuple(warnings))
        if where.start > where.fresh:
            record.resumed = True
            return Verdict(tuple(warnings))
        if where.reached <= where.start or not record.resumed_from:
            return Verdict(tuple(warnings))  # nothing was lost, or nothing to resume from
        record.resumed = False
        self.restarts.append(record.number)
        warnings.append(
            f"attempt {record.number} started at {where.label} although the checkpoint held "
            f"{_files(record.resumed_from)}: the script did not resume"
        )
        return Verdict(tuple(warnings), self._stop(record))

    def _stop(self, record: AttemptRecord) -> str | None:
        limit = self.config.retry.no_progress_limit
        if not limit or len(self.restarts) < limit or not record.outcome.retryable:
            return None  # a final outcome (succeeded, failed) is reported as it is
        *rest, last = [str(number) for number in self.restarts]
        names = f"attempts {', '.join(rest)} and {last}" if rest else f"attempt {last}"
        return (
            f"{names} started from zero although the checkpoint held files "
            f"(retry.no_progress_limit: {limit}): the script "
            "does not resume from SM_CHECKPOINT_DIR, so another attempt would pay for the "
            "same epochs again"
        )

    def _empty_after_reclaim(self, record: AttemptRecord, earlier: list[AttemptRecord]) -> str:
        """A spot attempt was reclaimed and this one found the checkpoint empty."""
        if record.resumed_from != 0:  # files to resume from, or not counted
            return ""
        reclaimed = [a for a in earlier if a.spot and a.outcome is Outcome.INTERRUPTED]
        if not reclaimed:
            return ""
        lost = reclaimed[-1]
        return "".join(
            self._once(
                "empty",
                f"attempt {lost.number} ran on spot and was reclaimed before any checkpoint "
                f"was written: attempt {record.number} found its checkpoint location empty "
                "and started from scratch. Write checkpoints to SM_CHECKPOINT_DIR as "
                "training goes, so that a reclaim loses only the work since the last one",
            )
        )

    def _once(self, kind: str, warning: str) -> list[str]:
        if kind in self._said:
            return []
        self._said.add(kind)
        return [warning]


_Span = tuple[float, float] | None  # (first, last) of one measure, None if not reported


def _start(record: AttemptRecord, earlier: list[AttemptRecord]) -> _Start | None:
    """The attempt's start against the first reporting attempt's, in epochs when both
    printed them, else in progress; None when no earlier attempt reported either."""
    measures: tuple[tuple[Callable[[AttemptRecord], _Span], Callable[[float], str]], ...] = (
        (_epochs, lambda value: f"epoch {value:g}"),
        (_shares, lambda value: f"{value:.0%}"),
    )
    for measure, label in measures:
        own = measure(record)
        spans = [span for attempt in earlier if (span := measure(attempt)) is not None]
        if own is not None and spans:
            reached = max(end for _, end in spans)
            return _Start(own[0], fresh=spans[0][0], reached=reached, label=label(own[0]))
    return None


def _epochs(attempt: AttemptRecord) -> _Span:
    first, last = attempt.epoch_start, attempt.epoch_end
    return (first, last) if first is not None and last is not None else None


def _shares(attempt: AttemptRecord) -> _Span:
    first, last = attempt.progress_start, attempt.progress_end
    return (first, last) if first is not None and last is not None else None


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"
