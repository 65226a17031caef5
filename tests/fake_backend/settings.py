"""The ``fake:`` section of a config."""

from __future__ import annotations

from pydantic import Field

from cloudtrain.config import Section
from cloudtrain.quantities import Count


class FakeSettings(Section):
    """The fake cloud: how many spot attempts it reclaims before one may finish."""

    reclaims: Count = Field(0, ge=0, description="Spot attempts reclaimed before one finishes.")
    region: str = Field("memory-1", description="Where the fake keeps its jobs.")
