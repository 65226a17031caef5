"""The ``local:`` section of a config: simulated spot reclaims on this machine."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator

from cloudtrain.config import MAX_RUN_SECONDS, PipelineConfig, Section
from cloudtrain.errors import ConfigError
from cloudtrain.quantities import Finite


class LocalConfig(Section):
    """The local backend: simulated spot reclaims and how a reclaim stops the script."""

    spot_interruptions: list[Finite | str] = Field(
        default_factory=list,
        description="Simulated spot reclaims, entry N for attempt N: a number reclaims "
        "that many seconds after the attempt starts, a string (a regular expression) "
        "when a line of the script's output matches it. Needs compute.spot.",
    )
    grace_period: Finite = Field(
        5.0,
        gt=0,
        le=600,
        description="Seconds between SIGTERM and SIGKILL on a reclaim or a timeout.",
    )

    @field_validator("spot_interruptions")
    @classmethod
    def _valid_triggers(cls, value: list[Finite | str]) -> list[Finite | str]:
        for index, trigger in enumerate(value):
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

    root: Path | None = Field(
        None,
        description="Deprecated: the top-level work_dir (accepted and moved there, "
        "with a warning).",
    )

    def check_config(self, config: PipelineConfig) -> None:
        # Elsewhere the simulation is refused outright (check_other_cloud).
        if self.spot_interruptions and config.cloud == "local" and not config.compute.spot:
            raise ConfigError(
                "local.spot_interruptions",
                "simulates spot reclaims, so it needs compute.spot: true",
            )

    def check_other_cloud(self, config: PipelineConfig) -> None:
        """A run elsewhere is reclaimed for real: a simulation there would mislead."""
        if self.spot_interruptions:
            raise ConfigError(
                "local.spot_interruptions",
                f"simulates reclaims on the local backend only; cloud {config.cloud} "
                "reclaims for real",
            )
