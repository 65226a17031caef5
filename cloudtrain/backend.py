"""The one protocol every cloud implements, and the values that cross it.

Tasks call these methods and never branch on the cloud::

    flows/*_training.py -> tasks/<stage>.py -> Backend -> local | aws | azure

``validate`` and ``plan`` are pure (no network, no credentials) so that bad input is
refused and ``cloudtrain plan`` prints the exact requests before anything is created.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cloudtrain.backoff import Backoff
from cloudtrain.results import (
    AttemptSpec,
    AttemptStatus,
    ChannelData,
    ComputeTarget,
    ModelArtifacts,
    ResolvedEnvironment,
    TrainingResult,
)

if TYPE_CHECKING:
    import pandas as pd

    from cloudtrain.config import PipelineConfig


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
