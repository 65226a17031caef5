"""The one protocol every cloud implements, and the values that cross it.

Tasks call these methods and never branch on the cloud::

    flows/*_training.py -> tasks/<stage>.py -> Backend -> local | aws | azure

``validate`` and ``plan`` are pure (no network, no credentials) so that bad input is
refused and ``cloudtrain plan`` prints the exact requests before anything is created.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cloudtrain.backoff import Backoff
from cloudtrain.recovery import Outcome

if TYPE_CHECKING:
    import pandas as pd

    from cloudtrain.config import PipelineConfig
    from cloudtrain.training import TrainingResult


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

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "details": dict(self.details)}


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
    resumed_from: int = 0  # checkpoint files present when the attempt started

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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["local_model_dir"] = str(self.local_model_dir) if self.local_model_dir else None
        data["metrics"] = dict(self.metrics)
        data["links"] = dict(self.links)
        data["cost"] = dict(self.cost) if self.cost is not None else None
        return data


@runtime_checkable
class Backend(Protocol):
    """One method per pipeline stage; the training stage is submit / describe / stop."""

    cloud: str
    poll: Backoff

    def validate(self, config: PipelineConfig) -> None:
        """Refuse what this cloud cannot run, with a ConfigError naming the field. Pure."""

    def plan(self, config: PipelineConfig) -> dict[str, Any]:
        """The exact requests ``run`` would send, as data. Pure."""

    def upload_data(
        self,
        config: PipelineConfig,
        dataframes: Mapping[str, pd.DataFrame] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> dict[str, ChannelData]:
        """Put every channel where the job reads it, skipping unchanged content."""

    def ensure_compute(self, config: PipelineConfig) -> ComputeTarget:
        """Make sure the compute exists and can run the request."""

    def resolve_environment(
        self, config: PipelineConfig, compute: ComputeTarget
    ) -> ResolvedEnvironment:
        """Turn the environment section into the runtime the script gets."""

    def checkpoint_location(self, config: PipelineConfig, run_id: str) -> str:
        """Where checkpoints live; the same for every attempt of one run."""

    def submit_attempt(self, config: PipelineConfig, spec: AttemptSpec) -> str:
        """Start (or reattach to) one attempt; returns its handle."""

    def describe_attempt(self, handle: str) -> AttemptStatus:
        """Where the attempt stands now."""

    def read_logs(self, handle: str) -> list[str]:
        """Log lines the attempt wrote since the previous call."""

    def stop_attempt(self, handle: str) -> None:
        """Stop the attempt so that nothing runs (or bills) behind the user's back."""

    def collect_artifacts(self, config: PipelineConfig, result: TrainingResult) -> ModelArtifacts:
        """Fetch the model and the metrics of the attempt that succeeded."""
