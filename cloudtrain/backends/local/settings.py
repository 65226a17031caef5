"""The ``local:`` section of a config: simulated spot reclaims on this machine."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator

from cloudtrain.config import MAX_RUN_SECONDS, PipelineConfig, Section
from cloudtrain.errors import ConfigError
from cloudtrain.quantities import Count, Finite

#: The simulations of spot capacity the section holds, and what each simulates.
_SIMULATIONS = {"spot_interruptions": "spot reclaims", "capacity_outages": "spot capacity outages"}


class LocalConfig(Section):
    """The local backend: simulated spot reclaims and how a reclaim stops the script."""

    spot_interruptions: list[Finite | str | None] = Field(
        default_factory=list,
        description="Simulated spot reclaims, entry N for attempt N: a number reclaims "
        "that many seconds after the attempt starts, a string (a regular expression) "
        "when a line of the script's output matches it, null not at all. Needs compute.spot.",
    )
    capacity_outages: list[Count] = Field(
        default_factory=list,
        description="Simulated spot capacity outages: the attempts (by number) that find "
        "no spot capacity and end at once with outcome no_capacity, as a cloud's "
        "InsufficientCapacity does; with clouds (a route) the next attempt fails over. "
        "Needs compute.spot.",
    )
    grace_period: Finite = Field(
        5.0,
        gt=0,
        le=600,
        description="Seconds between SIGTERM and SIGKILL on a reclaim or a timeout.",
    )

    @field_validator("spot_interruptions")
    @classmethod
    def _valid_triggers(cls, value: list[Finite | str | None]) -> list[Finite | str | None]:
        for index, trigger in enumerate(value):
            if trigger is None:
                continue
            if isinstance(trigger, str):
                try:
                    re.compile(trigger)
                except re.error as exc:
                    raise ValueError(f"[{index}] is not a regular expression: {exc}") from None
            elif trigger < 0:
                raise ValueError(f"[{index}] must be >= 0 seconds")
            elif trigger > MAX_RUN_SECONDS:  # past any attempt's end: it would never fire
                raise ValueError(f"[{index}] must be at most {MAX_RUN_SECONDS:,} seconds")
        return value

    @field_validator("capacity_outages")
    @classmethod
    def _attempt_numbers(cls, value: list[int]) -> list[int]:
        for index, number in enumerate(value):
            if number < 1:
                raise ValueError(f"[{index}] must be an attempt number, 1 or more")
        return value

    root: Path | None = Field(
        None,
        description="Deprecated: the top-level work_dir (accepted and moved there, "
        "with a warning).",
    )

    def check_config(self, config: PipelineConfig) -> None:
        # Elsewhere the simulation is refused outright (check_other_cloud).
        if config.compute.spot or "local" not in config.route:
            return
        for name, what in _SIMULATIONS.items():
            if getattr(self, name):
                raise ConfigError(
                    f"local.{name}", f"simulates {what}, so it needs compute.spot: true"
                )

    def check_other_cloud(self, config: PipelineConfig) -> None:
        """A run elsewhere is reclaimed for real: a simulation there would mislead."""
        for name, what in _SIMULATIONS.items():
            if getattr(self, name):
                raise ConfigError(
                    f"local.{name}",
                    f"simulates {what} on the local backend only; cloud {config.cloud} "
                    "reclaims for real",
                )
