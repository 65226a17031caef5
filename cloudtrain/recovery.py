"""Recovery strategies: the one answer to "what runs next, and on which capacity".

Modelled on SkyPilot's ``recovery_strategy.py``: strategies register under a name,
``from_str()`` lists the valid names on a typo, and a strategy overrides one method,
``recover()``. Every strategy resubmits into the *same* checkpoint location; they differ
in whether the next attempt asks for spot capacity again.

With a route of several clouds (``clouds: [aws, azure]``) a strategy also says on which
cloud, as an index into the route (a *leg*: a cloud may appear twice, each leg with its own
checkpoint location); ``failover`` is the strategy that moves along the route.

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
from dataclasses import dataclass, replace
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
    OVER_BUDGET = "over_budget"  # stopped by the run's budget (budget.max_cost)

    @property
    def retryable(self) -> bool:
        return self in (Outcome.INTERRUPTED, Outcome.NO_CAPACITY)


def capacity_label(spot: bool) -> str:
    """How reports, logs, plans and tags name an attempt's capacity."""
    return "spot" if spot else "on-demand"


@dataclass(frozen=True)
class NextAttempt:
    """The decision to run an attempt, on which capacity and route leg, and why.

    ``leg`` indexes the run's route (0 for a single cloud); ``losses`` counts the capacity
    losses on this leg before this attempt, which ``failover`` moves on after."""

    number: int
    spot: bool
    reason: str
    leg: int = 0
    losses: int = 0

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

    def __init__(
        self,
        max_attempts: int,
        spot: bool,
        on_demand_fallback: bool,
        *,
        legs: int = 1,
        reclaims_per_cloud: int = 2,
    ) -> None:
        self.max_attempts = max_attempts
        self.spot = spot
        self.on_demand_fallback = on_demand_fallback
        self.legs = legs
        self.reclaims_per_cloud = reclaims_per_cloud

    @classmethod
    def from_str(
        cls,
        name: str,
        *,
        max_attempts: int,
        spot: bool,
        on_demand_fallback: bool,
        legs: int = 1,
        reclaims_per_cloud: int = 2,
    ) -> RecoveryStrategy:
        return strategy_class(name)(
            max_attempts,
            spot,
            on_demand_fallback,
            legs=legs,
            reclaims_per_cloud=reclaims_per_cloud,
        )

    def first_attempt(self) -> NextAttempt:
        return NextAttempt(1, self._spot_unless_fallback(1), "first attempt")

    def recover(self, previous: NextAttempt, outcome: Outcome, reason: str) -> NextAttempt | None:
        """The attempt after ``previous`` ended with ``outcome``: try again, or None to stop."""
        if not outcome.retryable or previous.number >= self.max_attempts:
            return None
        following = previous.number + 1
        return NextAttempt(
            following,
            self._spot_unless_fallback(following),
            f"attempt {previous.number} {outcome.value}: {reason}",
            leg=previous.leg,
            losses=previous.losses + 1,
        )

    def schedule(self) -> list[NextAttempt]:
        """Every attempt a run can make, each one asked of ``recover()`` as if the one
        before it had been reclaimed: the route ``plan`` prints."""
        route = [self.first_attempt()]
        while following := self.recover(route[-1], Outcome.INTERRUPTED, "reclaimed"):
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

    def recover(self, previous: NextAttempt, outcome: Outcome, reason: str) -> NextAttempt | None:
        following = super().recover(previous, outcome, reason)
        if following is None:
            return None
        return replace(following, spot=False)


class Failover(RecoveryStrategy):
    """Move along the route (``clouds``): the next attempt goes to the next cloud after a
    capacity loss there (no capacity, MaxWait expired) or after ``retry.reclaims_per_cloud``
    reclaims on the current one; the checkpoint is copied along. At the end of the route
    the on-demand fallback applies: the next loss there goes to on-demand capacity, as does
    the last attempt."""

    NAME = "failover"

    def recover(self, previous: NextAttempt, outcome: Outcome, reason: str) -> NextAttempt | None:
        following = super().recover(previous, outcome, reason)
        if following is None:
            return None
        exhausted = outcome is Outcome.NO_CAPACITY or following.losses >= self.reclaims_per_cloud
        if not exhausted:
            return following
        if previous.leg + 1 < self.legs:  # the next cloud of the route, on spot again
            return replace(following, leg=previous.leg + 1, losses=0)
        if self.on_demand_fallback:  # the route is spent: on-demand where the checkpoint is
            return replace(following, spot=False)
        return following


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
