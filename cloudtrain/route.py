"""A run's route: the clouds its attempts may run on, in order, each ready when reached.

A config names one cloud (``cloud: aws``) or a failover route (``clouds: [aws, azure]``).
Each position of the route is a *leg*: the config pinned to that cloud
(``PipelineConfig.on_cloud``: no route, that cloud's instance type) and the backend that
runs it, built once per cloud. A cloud may appear twice; each leg then has its own
checkpoint location, so a failover between them still carries the checkpoint across.

Stages 1 to 3 of a leg (data, compute, environment) run when the route first reaches it:
a run that finishes on its first cloud never touches the second. The flow hands the
attempt loop a preparer that runs them as Prefect tasks; ``prepare_leg`` is the same
without Prefect, for callers of ``run_training`` in Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudtrain.backend import Backend, LogSink, build_backend
from cloudtrain.config import PipelineConfig
from cloudtrain.results import ComputeTarget, ResolvedEnvironment

if TYPE_CHECKING:
    from cloudtrain.results import ChannelData


@dataclass(frozen=True)
class Leg:
    """One position of the route: its cloud, the config pinned to it, its backend."""

    index: int
    cloud: str
    config: PipelineConfig
    backend: Backend

    def checkpoint_location(self, run_id: str) -> str:
        """Where this leg's attempts keep checkpoints: the run's location on the first leg,
        ``<run>-leg<N>`` on the others (a cloud may appear twice in a route)."""
        key = run_id if self.index == 0 else f"{run_id}-leg{self.index + 1}"
        return self.backend.checkpoint_location(self.config, key)

    @property
    def label(self) -> str:
        return f"{self.cloud} ({self.config.compute.instance_type})"


@dataclass(frozen=True)
class ReadyLeg:
    """A leg whose stages 1 to 3 ran: what every attempt on it gets."""

    leg: Leg
    channels: Mapping[str, str]
    compute: ComputeTarget
    environment: ResolvedEnvironment
    checkpoint_uri: str
    #: Secret values by variable name, for a backend that hands them to the script itself.
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    data: Mapping[str, ChannelData] = field(default_factory=dict)


#: Stages 1 to 3 of leg N, run the first time the route reaches it.
Preparer = Callable[[Leg], ReadyLeg]


def route_legs(config: PipelineConfig, first: Backend | None = None) -> list[Leg]:
    """Every leg of ``config``'s route; one backend per cloud (``first`` for the first
    cloud when the caller built it already), built without any network."""
    built: dict[str, Backend] = {}
    if first is not None:
        built[config.cloud] = first
    legs = []
    for index, cloud in enumerate(config.route):
        pinned = config.on_cloud(cloud)
        if cloud not in built:
            built[cloud] = build_backend(pinned)
        legs.append(Leg(index, cloud, pinned, built[cloud]))
    return legs


def prepare_leg(
    leg: Leg,
    run_id: str,
    *,
    dataframes: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    log: LogSink | None = None,
) -> ReadyLeg:
    """Stages 1 to 3 on ``leg`` through its backend, without Prefect."""
    from cloudtrain.data import upload_channels

    data = upload_channels(leg.backend, leg.config, dataframes, log=log)
    compute = leg.backend.ensure_compute(leg.config)
    environment = leg.backend.resolve_environment(leg.config, compute)
    return ReadyLeg(
        leg=leg,
        channels={name: channel.uri for name, channel in data.items()},
        compute=compute,
        environment=environment,
        checkpoint_uri=leg.checkpoint_location(run_id),
        secrets=dict(secrets or {}),
        data=data,
    )
