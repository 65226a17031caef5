"""Recovery strategies: the one answer to "what runs next, and on which capacity".

Modelled on SkyPilot's ``recovery_strategy.py``: strategies register under a name,
``from_str()`` lists the valid names on a typo, and a strategy overrides one method,
``recover()``. Every strategy resubmits into the *same* checkpoint location; they differ
in whether the next attempt asks for spot capacity again.

The attempt loop asks ``first_attempt()`` and then ``recover()`` after each attempt;
``schedule()`` asks the very same methods as if every attempt lost its capacity, which
is the route ``cloudtrain plan`` prints. So a plan and a run cannot disagree about the
capacity of an attempt: there is no second place that decides it.

Only capacity losses are retried (a reclaim, no capacity). A script error, a timeout
or a person stopping the job ends the run: retrying those would spend money to fail
the same way again.
"""

from __future__ import annotations

import difflib
import enum
from dataclasses import dataclass
from typing import ClassVar

DEFAULT_STRATEGY = "checkpoint_resume"


class Outcome(enum.StrEnum):
    """How one attempt ended."""

    SUCCEEDED = "succeeded"
    INTERRUPTED = "interrupted"  # spot capacity reclaimed / low-priority node preempted
    NO_CAPACITY = "no_capacity"  # never started: spot capacity not found in max_wait
    FAILED = "failed"  # the script or algorithm failed
    TIMED_OUT = "timed_out"  # compute.max_run reached
    STOPPED = "stopped"  # stopped by a person or by cancelling the flow

    @property
    def retryable(self) -> bool:
        return self in (Outcome.INTERRUPTED, Outcome.NO_CAPACITY)


def capacity_label(spot: bool) -> str:
    """How reports, logs, plans and tags name an attempt's capacity."""
    return "spot" if spot else "on-demand"


@dataclass(frozen=True)
class NextAttempt:
    """The decision to run an attempt, on which capacity, and why."""

    number: int
    spot: bool
    reason: str

    @property
    def capacity(self) -> str:
        return capacity_label(self.spot)


class RecoveryStrategy:
    """Decides the capacity of each attempt and whether a lost one is tried again."""

    NAME: ClassVar[str]
    _REGISTRY: ClassVar[dict[str, type[RecoveryStrategy]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        RecoveryStrategy._REGISTRY[cls.NAME] = cls

    def __init__(self, max_attempts: int, spot: bool, on_demand_fallback: bool) -> None:
        self.max_attempts = max_attempts
        self.spot = spot
        self.on_demand_fallback = on_demand_fallback

    @classmethod
    def from_str(
        cls, name: str, *, max_attempts: int, spot: bool, on_demand_fallback: bool
    ) -> RecoveryStrategy:
        return strategy_class(name)(max_attempts, spot, on_demand_fallback)

    def first_attempt(self) -> NextAttempt:
        return NextAttempt(1, self._spot_unless_fallback(1), "first attempt")

    def recover(self, number: int, outcome: Outcome, reason: str) -> NextAttempt | None:
        """The attempt after ``number`` ended with ``outcome``: try again, or None to stop."""
        if not outcome.retryable or number >= self.max_attempts:
            return None
        following = number + 1
        return NextAttempt(
            following,
            self._spot_unless_fallback(following),
            f"attempt {number} {outcome.value}: {reason}",
        )

    def schedule(self) -> list[NextAttempt]:
        """Every attempt a run can make, each one asked of ``recover()`` as if the one
        before it had been reclaimed: the route ``plan`` prints."""
        route = [self.first_attempt()]
        while following := self.recover(route[-1].number, Outcome.INTERRUPTED, "reclaimed"):
            route.append(following)
        return route

    def _spot_unless_fallback(self, number: int) -> bool:
        """Spot unless it is the last of several attempts and on-demand is the fallback."""
        if not self.spot:
            return False
        is_fallback = self.on_demand_fallback and self.max_attempts > 1
        return not (is_fallback and number == self.max_attempts)


class CheckpointResume(RecoveryStrategy):
    """Resume every lost attempt on spot again; the last one on-demand if so configured."""

    NAME = "checkpoint_resume"


class EagerOnDemand(RecoveryStrategy):
    """After the first capacity loss, go to on-demand at once (fewer wasted attempts),
    whatever ``on_demand_fallback`` says about the last attempt."""

    NAME = "eager_on_demand"

    def recover(self, number: int, outcome: Outcome, reason: str) -> NextAttempt | None:
        following = super().recover(number, outcome, reason)
        if following is None:
            return None
        return NextAttempt(following.number, False, following.reason)


def strategy_names() -> list[str]:
    return sorted(RecoveryStrategy._REGISTRY)


def strategy_class(name: str) -> type[RecoveryStrategy]:
    try:
        return RecoveryStrategy._REGISTRY[name]
    except KeyError:
        names = strategy_names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown recovery strategy {name[:40]!r}; valid: {', '.join(names)}{hint}"
        ) from None
