"""The values that cross the Backend protocol and come out of a run, in one module.

Stages return these; the attempt loop, the report and ``--json`` read them. Nothing here
imports a stage or a backend, so every other module can import this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cloudtrain.recovery import Outcome, capacity_label


@dataclass(frozen=True)
class ChannelData:
    """One data channel where the training job will read it."""

    channel: str
    uri: str
    digest: str  # sha256 over the channel's manifest: same content, same digest
    files: int
    bytes: int
    copied_files: int = 0
    copied_bytes: int = 0
    unchanged: bool = False  # same digest as the last upload of this channel
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ComputeTarget:
    """What an attempt will run on, as the backend ensured it."""

    name: str
    instance_type: str
    instance_count: int
    details: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # shown like the environment's: in the log and the report

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "details": dict(self.details), "warnings": list(self.warnings)}


@dataclass(frozen=True)
class ResolvedEnvironment:
    """The runtime the script gets: an image URI, a curated environment, an interpreter."""

    kind: str
    uri: str
    description: str
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "warnings": list(self.warnings)}


@dataclass(frozen=True)
class AttemptSpec:
    """Everything one attempt needs; its checkpoint location is the run's, not its own."""

    run_id: str
    number: int
    spot: bool
    job_name: str
    checkpoint_uri: str
    channels: Mapping[str, str]
    compute: ComputeTarget
    environment: ResolvedEnvironment
    #: Secret values by environment variable name, for the backends that pass them to the
    #: script themselves (``cloudtrain.secrets``); empty in plans, never in a request.
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class AttemptStatus:
    """A snapshot of one attempt; ``outcome`` is set once it has ended."""

    outcome: Outcome | None = None
    reason: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    billable_seconds: float | None = None
    training_seconds: float | None = None
    #: Checkpoint files present when the attempt started; None when the backend cannot
    #: count them (the attempt loop counts them itself where it can open the location).
    resumed_from: int | None = None

    @property
    def ended(self) -> bool:
        return self.outcome is not None

    @property
    def running(self) -> bool:
        return self.outcome is None


@dataclass(frozen=True)
class ModelArtifacts:
    """What a finished run leaves behind."""

    model_uri: str
    model_archive: str | None
    local_model_dir: Path | None
    metrics: Mapping[str, float]
    links: Mapping[str, str] = field(default_factory=dict)
    records: str | None = None  # where the per-attempt records were written
    cost: Mapping[str, Any] | None = None  # training vs billable time, USD, spot saving
    warnings: tuple[str, ...] = ()  # what packing left out (links leaving the folder)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        data["local_model_dir"] = str(self.local_model_dir) if self.local_model_dir else None
        data["metrics"] = dict(self.metrics)
        data["links"] = dict(self.links)
        data["cost"] = dict(self.cost) if self.cost is not None else None
        return data


@dataclass(frozen=True)
class CheckpointCopy:
    """A checkpoint carried from one leg of a route to the next (``cloudtrain.checkpoints``)."""

    source: str
    target: str
    source_cloud: str
    target_cloud: str
    files: int
    bytes: int
    digest: str  # sha256 over the manifest of (path, sha256, size): same content, same digest
    sha256: Mapping[str, str] = field(default_factory=dict)  # per file, relative path
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sha256": dict(self.sha256)}


@dataclass
class AttemptRecord:
    """One attempt as it ended: the rows of the attempts table."""

    number: int
    job_name: str
    spot: bool
    outcome: Outcome
    reason: str
    started_at: datetime | None
    ended_at: datetime | None
    metrics: dict[str, float] = field(default_factory=dict)
    billable_seconds: float | None = None
    training_seconds: float | None = None
    resumed_from: int | None = 0  # checkpoint files when it started; None: not counted
    cloud: str = ""
    leg: int = 0
    instance_type: str = ""
    instance_count: int = 1
    checkpoint_uri: str = ""
    checkpoint_from: str | None = None  # the location its checkpoint was copied from
    progress_start: float | None = None  # the first progress the script reported (0..1)
    progress_end: float | None = None  # the last
    epoch_start: int | None = None
    epoch_end: int | None = None
    elapsed_seconds: float | None = None  # wall time the orchestrator followed it
    cost_usd: float | None = None  # estimated from the dated price tables
    #: Set by the resume check (``cloudtrain.resumes``): True, it started past where a fresh
    #: run starts; False, it started there although the checkpoint held files; None,
    #: nothing to tell (the first attempt, an empty checkpoint, no progress printed).
    resumed: bool | None = None
    budget_note: str = ""  # why the budget policy ran it on its capacity (cloudtrain.budget)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.ended_at:
            return round((self.ended_at - self.started_at).total_seconds(), 3)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "job_name": self.job_name,
            "capacity": capacity_label(self.spot),
            "outcome": self.outcome.value,
            "reason": self.reason,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "duration_seconds": self.duration_seconds,
            "training_seconds": self.training_seconds,
            "billable_seconds": self.billable_seconds,
            "resumed_from_checkpoint_files": self.resumed_from,
            "cloud": self.cloud,
            "instance_type": self.instance_type,
            "checkpoint_uri": self.checkpoint_uri,
            "checkpoint_from": self.checkpoint_from,
            "progress_start": self.progress_start,
            "progress_end": self.progress_end,
            "epoch_start": self.epoch_start,
            "epoch_end": self.epoch_end,
            "resumed": self.resumed,
            "cost_usd": self.cost_usd,
            "budget_note": self.budget_note or None,
            "metrics": self.metrics,
        }


@dataclass
class TrainingResult:
    """Every attempt of one run and where their checkpoints were kept."""

    run_id: str
    checkpoint_uri: str  # the last leg's location: where the final checkpoint is
    attempts: list[AttemptRecord] = field(default_factory=list)
    copies: list[CheckpointCopy] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the resume check's, among others
    stopped: str | None = None  # over_budget | no_progress: the run stopped itself
    stop_reason: str = ""

    @property
    def succeeded(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].outcome is Outcome.SUCCEEDED

    @property
    def final(self) -> AttemptRecord | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.final.metrics) if self.final else {}

    @property
    def interruptions(self) -> int:
        return sum(1 for attempt in self.attempts if attempt.outcome.retryable)

    @property
    def started_from_scratch(self) -> int:
        """Attempts after the first that did not resume: flagged by the resume check, or
        with nothing in the checkpoint to resume from."""
        return sum(a.resumed is False or a.resumed_from == 0 for a in self.attempts[1:])

    @property
    def cost_usd(self) -> float | None:
        """The attempts' estimated cost, None when no attempt could be priced."""
        costs = [a.cost_usd for a in self.attempts if a.cost_usd is not None]
        return round(sum(costs), 6) if costs else None

    def cost_per_cloud(self) -> dict[str, float]:
        """Estimated cost by cloud, in route order."""
        costs: dict[str, float] = {}
        for attempt in self.attempts:
            if attempt.cost_usd is not None:
                costs[attempt.cloud] = round(costs.get(attempt.cloud, 0.0) + attempt.cost_usd, 6)
        return costs

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "checkpoint_uri": self.checkpoint_uri,
            "succeeded": self.succeeded,
            "stopped": self.stopped,
            "stop_reason": self.stop_reason or None,
            "attempts": [attempt.to_dict() for attempt in self.attempts],
            "checkpoint_copies": [copy.to_dict() for copy in self.copies],
            "cost_usd": self.cost_usd,
            "cost_per_cloud": self.cost_per_cloud(),
            "warnings": list(self.warnings),
        }
