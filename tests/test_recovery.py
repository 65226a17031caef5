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
    following = strategy().recover(NextAttempt(1, True, "first attempt"), outcome, "reclaimed")
    assert following is not None and following.number == 2 and following.spot


@pytest.mark.parametrize(
    "outcome", [Outcome.FAILED, Outcome.TIMED_OUT, Outcome.STOPPED, Outcome.SUCCEEDED]
)
def test_other_outcomes_are_final(outcome: Outcome) -> None:
    assert strategy().recover(NextAttempt(1, True, "first attempt"), outcome, "x") is None


def test_no_attempt_past_the_limit() -> None:
    assert (
        strategy(max_attempts=2).recover(NextAttempt(2, True, "x"), Outcome.INTERRUPTED, "x")
        is None
    )


def test_eager_on_demand() -> None:
    first = NextAttempt(1, True, "first attempt")
    following = strategy("eager_on_demand", max_attempts=5).recover(first, Outcome.INTERRUPTED, "x")
    assert following == NextAttempt(2, False, "attempt 1 interrupted: x", losses=1)


def test_a_typo_lists_the_valid_names() -> None:
    with pytest.raises(
        ValueError,
        match=r"valid: checkpoint_resume, eager_on_demand, failover "
        r"\(did you mean 'eager_on_demand'\?\)",
    ):
        strategy("eager-on-demand")


@pytest.mark.parametrize("name", ["checkpoint_resume", "eager_on_demand"])
@pytest.mark.parametrize("fallback", [True, False])
@pytest.mark.parametrize("max_attempts", [1, 2, 3, 5])
def test_the_schedule_is_what_recover_answers(name: str, fallback: bool, max_attempts: int) -> None:
    """One source of truth: the route plan prints is the attempts recover() makes."""
    plan = strategy(name, max_attempts=max_attempts, fallback=fallback)
    walked = [plan.first_attempt()]
    while (following := plan.recover(walked[-1], Outcome.NO_CAPACITY, "x")) is not None:
        walked.append(following)
    route = plan.schedule()
    assert [(a.number, a.spot) for a in route] == [(a.number, a.spot) for a in walked]
    assert len(route) == max_attempts


def test_eager_on_demand_without_fallback_plans_on_demand_after_the_first_loss() -> None:
    """The defect: spot_for said spot for attempts 1..3 while recover(1) said on-demand."""
    plan = strategy("eager_on_demand", max_attempts=3, fallback=False)
    assert capacities(plan) == [True, False, False]
    following = plan.recover(NextAttempt(1, True, "first attempt"), Outcome.INTERRUPTED, "x")
    assert following is not None and not following.spot


def failover(
    max_attempts: int = 5, legs: int = 2, per_cloud: int = 2, fallback: bool = True
) -> RecoveryStrategy:
    return RecoveryStrategy.from_str(
        "failover",
        max_attempts=max_attempts,
        spot=True,
        on_demand_fallback=fallback,
        legs=legs,
        reclaims_per_cloud=per_cloud,
    )


def test_failover_moves_after_n_reclaims_and_ends_on_demand() -> None:
    route = [(a.leg, a.spot) for a in failover(max_attempts=6).schedule()]
    assert route == [(0, True), (0, True), (1, True), (1, True), (1, False), (1, False)]


def test_failover_moves_at_once_when_a_cloud_has_no_capacity() -> None:
    plan = failover()
    first = plan.first_attempt()
    following = plan.recover(first, Outcome.NO_CAPACITY, "InsufficientCapacity")
    assert following is not None and (following.leg, following.spot, following.losses) == (
        1,
        True,
        0,
    )
    last = plan.recover(following, Outcome.NO_CAPACITY, "none here either")
    assert last is not None and (last.leg, last.spot) == (1, False)  # the end of the route


def test_failover_without_fallback_stays_on_spot_at_the_end() -> None:
    route = [(a.leg, a.spot) for a in failover(max_attempts=5, fallback=False).schedule()]
    assert route == [(0, True), (0, True), (1, True), (1, True), (1, True)]


def test_failover_keeps_the_last_attempt_on_demand() -> None:
    route = [(a.leg, a.spot) for a in failover(max_attempts=3, per_cloud=1).schedule()]
    assert route == [(0, True), (1, True), (1, False)]


@pytest.mark.parametrize("outcome", [Outcome.FAILED, Outcome.TIMED_OUT, Outcome.OVER_BUDGET])
def test_failover_does_not_move_a_script_failure(outcome: Outcome) -> None:
    assert failover().recover(NextAttempt(1, True, "first"), outcome, "x") is None
