"""The one protocol every cloud implements.

Tasks call these methods and never branch on the cloud::

    flows/*_training.py -> tasks/<stage>.py -> Backend -> local | aws | azure | ...

A backend is one folder under ``cloudtrain/backends/`` plus one registration
(``cloudtrain.backends.register``): the class declares its cloud ``name``, the
``settings`` model of its config section (``aws:``, ``azure:``, ...) and ``from_config``.

A run builds its backend once (``build_backend``); ``use_backend`` hands a ready one
(clients pointed at emulators, say) to every run started inside it.

``validate``, ``plan_stages`` and ``attempt_request`` are pure (no network, no
credentials), so bad input is refused and ``cloudtrain plan`` prints the exact requests
before anything is created. The per-attempt plan is built once, in ``cloudtrain.planning``:
the backend turns one attempt into its request, the recovery strategy decides which
attempts there are.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

from cloudtrain.backends import backend_class
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
    from pydantic import BaseModel

    from cloudtrain.config import PipelineConfig

LogSink = Callable[[str], None]


@dataclass(frozen=True)
class StagePlan:
    """Stages 1 to 3 as ``plan`` shows them, and what every attempt of the run gets.

    ``channels``, ``compute`` and ``environment`` stand in for what the stages will
    return (with placeholders such as ``<content-digest>`` where only the run can know);
    ``requests`` is what the stages would send, for the plan's output.
    """

    channels: Mapping[str, str]
    compute: ComputeTarget
    environment: ResolvedEnvironment
    requests: Mapping[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """One method per pipeline stage; the training stage is submit / describe / stop."""

    #: The cloud's name in configs (``cloud: aws``) and flow names (``aws-training``).
    name: ClassVar[str]
    #: The model of the config section named after the cloud, or None for no section.
    settings: ClassVar[type[BaseModel] | None]
    #: One paragraph for the flow's description in the Prefect UI.
    description: ClassVar[str]

    poll: Backoff

    @classmethod
    def from_config(cls, config: PipelineConfig) -> Self:
        """Built once per run; clients are made on first use, so this needs no network."""

    # -- pure -------------------------------------------------------------------------

    def validate(self, config: PipelineConfig) -> None:
        """Refuse what this cloud cannot run: one ConfigError listing every problem."""

    def plan_stages(self, config: PipelineConfig) -> StagePlan:
        """What stages 1 to 3 would send, and what the attempts would get."""

    def attempt_request(self, config: PipelineConfig, spec: AttemptSpec) -> dict[str, Any]:
        """The exact request that starts the attempt ``spec`` (what ``submit`` sends)."""

    def checkpoint_location(self, config: PipelineConfig, run_id: str) -> str:
        """Where checkpoints live; the same for every attempt of one run."""

    # -- the stages ----------------------------------------------------------------------

    def upload_channel(
        self,
        config: PipelineConfig,
        channel: str,
        source: Path | pd.DataFrame,
        log: LogSink,
    ) -> ChannelData:
        """Put one channel where the job reads it, skipping unchanged content."""

    def use_data_uri(self, config: PipelineConfig, channel: str, uri: str) -> ChannelData:
        """A channel already in the cloud (s3://, azureml:...), checked and used as it is."""

    def ensure_compute(self, config: PipelineConfig) -> ComputeTarget:
        """Make sure the compute exists and can run the request."""

    def resolve_environment(
        self, config: PipelineConfig, compute: ComputeTarget
    ) -> ResolvedEnvironment:
        """Turn the environment section into the runtime the script gets."""

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


_injected: contextvars.ContextVar[Mapping[str, Backend]] = contextvars.ContextVar(
    "cloudtrain_backends", default=MappingProxyType({})
)


def build_backend(config: PipelineConfig) -> Backend:
    """The backend for ``config.cloud``: the one ``use_backend`` handed in, else a new one."""
    injected = _injected.get().get(config.cloud)
    if injected is not None:
        return injected
    backend: Backend = backend_class(config.cloud).from_config(config)
    return backend


@contextmanager
def use_backend(*backends: Backend) -> Iterator[Backend]:
    """Runs started inside use these backends for their clouds instead of building them:
    the seam tests use to point a whole flow (every cloud of a route) at emulators,
    without patching anything. Yields the first."""
    handed = {**_injected.get(), **{backend.name: backend for backend in backends}}
    token = _injected.set(MappingProxyType(handed))
    try:
        yield backends[0]
    finally:
        _injected.reset(token)
