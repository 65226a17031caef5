"""The recovery strategies' decisions, attempt by attempt."""

from __future__ import annotations

import pytest

from cloudtrain.recovery import NextAttempt, Outcome, RecoveryStrategy


def strategy(
    name: str = "checkpoint_resume", max_attempts: int = 3, spot: bool = True, fallback: bool = True
) -> RecoveryStrategy:
    return RecoveryStrategy.from_str(
        name, max_attempts=max_attempts, spot=spot, on_demand_fallback=fallback
    )


def capacities(plan: RecoveryStrategy) -> list[bool]:
    return [attempt.spot for attempt in plan.schedule()]


def test_spot_until_the_on_demand_fallback() -> None:
    plan = strategy(max_attempts=3)
    assert capacities(plan) == [True, True, False]


def test_a_single_attempt_stays_on_spot() -> None:
    assert strategy(max_attempts=1).first_attempt() == NextAttempt(1, True, "first attempt")


def test_on_demand_config_never_asks_for_spot() -> None:
    plan = strategy(spot=False)
    assert capacities(plan) == [False, False, False]


@pytest.mark.parametrize("outcome", [Outcome.INTERRUPTED, Outcome.NO_CAPACITY])
def test_capacity_losses_are_retried(outcome: Outcome) -> None:
    following = strategy().recover(1, outcome, "reclaimed")
    assert following is not None and following.number == 2 and following.spot


@pytest.mark.parametrize(
    "outcome", [Outcome.FAILED, Outcome.TIMED_OUT, Outcome.STOPPED, Outcome.SUCCEEDED]
)
def test_other_outcomes_are_final(outcome: Outcome) -> None:
    assert strategy().recover(1, outcome, "x") is None


def test_no_attempt_past_the_limit() -> None:
    assert strategy(max_attempts=2).recover(2, Outcome.INTERRUPTED, "x") is None


def test_eager_on_demand() -> None:
    following = strategy("eager_on_demand", max_attempts=5).recover(1, Outcome.INTERRUPTED, "x")
    assert following == NextAttempt(2, False, "attempt 1 interrupted: x")


def test_a_typo_lists_the_valid_names() -> None:
    with pytest.raises(
        ValueError,
        match=r"valid: checkpoint_resume, eager_on_demand \(did you mean 'eager_on_demand'\?\)",
    ):
        strategy("eager-on-demand")


@pytest.mark.parametrize("name", ["checkpoint_resume", "eager_on_demand"])
@pytest.mark.parametrize("fallback", [True, False])
@pytest.mark.parametrize("max_attempts", [1, 2, 3, 5])
def test_the_schedule_is_what_recover_answers(name: str, fallback: bool, max_attempts: int) -> None:
    """One source of truth: the route plan prints is the attempts recover() makes."""
    plan = strategy(name, max_attempts=max_attempts, fallback=fallback)
    walked = [plan.first_attempt()]
    while (following := plan.recover(walked[-1].number, Outcome.NO_CAPACITY, "x")) is not None:
        walked.append(following)
    route = plan.schedule()
    assert [(a.number, a.spot) for a in route] == [(a.number, a.spot) for a in walked]
    assert len(route) == max_attempts


def test_eager_on_demand_without_fallback_plans_on_demand_after_the_first_loss() -> None:
    """The defect: spot_for said spot for attempts 1..3 while recover(1) said on-demand."""
    plan = strategy("eager_on_demand", max_attempts=3, fallback=False)
    assert capacities(plan) == [True, False, False]
    following = plan.recover(1, Outcome.INTERRUPTED, "x")
    assert following is not None and not following.spot
