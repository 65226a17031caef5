"""The run's budget and deadline: before each attempt, spot, on-demand or stop.

``budget: {max_cost: 25.0, deadline: 8h}`` (both optional). Before each attempt the
policy estimates the work left (``remaining_work``: from the progress the script
reported, ``progress=`` or ``epoch=`` lines, else ``compute.max_run`` as the upper
bound), what the attempt would cost on spot and on-demand (``cloudtrain.prices``), and
chooses (``choose``):

- the deadline: spot while the slack, the time left after an on-demand attempt started
  now would finish (work left plus one start-up), can absorb another reclaim
  (``restart_overhead``); on-demand once it cannot. This is the safety rule of "Can't Be
  Late" (Wu et al., NSDI'24): stay on spot, the cheap capacity, as long as a reclaim
  cannot make the job late, and switch to on-demand at the last moment it still finishes
  in time. Decisions here are per attempt (an attempt is not moved while it runs), so
  the rule is checked before each one. When even on-demand cannot finish in time the
  run goes on, on-demand, with a warning: a late model is usually worth more than none,
  and the money is what ``max_cost`` guards;
- the budget: an attempt whose expected cost would take the run past ``max_cost`` does
  not start; the run stops with outcome ``over_budget`` and a reason with the numbers.
  When on-demand does not fit and spot would (and ``compute.spot`` allows it), the
  attempt runs on spot: the budget beats the deadline and the on-demand fallback. While
  an attempt runs, it is stopped when the run's cost reaches ``max_cost`` (``stop_now``).

The core (``remaining_work``, ``choose``, ``attempt_usd``, ``running_over``) is a set of
functions of numbers, tested without Prefect or a backend; ``BudgetPolicy`` feeds it what
the attempt loop knows, and ``plan_budget`` what ``cloudtrain plan`` knows.

A restart's cost in time is ``budget.restart_overhead``, else the backend's
``typical_start_seconds`` (local a few seconds, SageMaker and Azure ML minutes; see there).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cloudtrain.backend import Backend
from cloudtrain.config import PipelineConfig
from cloudtrain.prices import Price, price
from cloudtrain.recovery import NextAttempt, capacity_label
from cloudtrain.results import AttemptRecord, AttemptStatus, TrainingResult
from cloudtrain.route import Leg

#: A backend that declares no ``typical_start_seconds``: minutes, as a cloud's job takes.
DEFAULT_START_SECONDS = 300.0


# -- the core: functions of numbers ---------------------------------------------------


@dataclass(frozen=True)
class Span:
    """What one attempt reported: its first and last progress (0..1), and its seconds."""

    start: float | None
    end: float | None
    seconds: float | None


@dataclass(frozen=True)
class Work:
    """Seconds of training left (on-demand, no reclaim), and where the estimate came from."""

    seconds: float
    source: str
    done: float = 0.0  # the best progress an attempt reached (0..1)


def remaining_work(spans: Iterable[Span], max_run: float) -> Work:
    """The work left after ``spans`` (the run's attempts, in order).

    Done is the best progress an attempt reached (its checkpoint holds it, if the script
    checkpoints). The pace is measured from the attempts that reported progress: their
    seconds over the progress each made from where it started, which is the best before
    it, or its own first report when it started lower (it did not resume). No progress or
    no pace: ``max_run``, the most one attempt may run. Never more than ``max_run``.
    """
    best = 0.0
    seconds = units = 0.0
    reported = False
    for span in spans:
        if span.end is None:
            continue
        reported = True
        base = min(best, span.start if span.start is not None else best)
        if span.seconds and span.end > base:
            seconds += span.seconds
            units += span.end - base
        best = max(best, span.end)
    if units > 0:
        pace = seconds / units
        left = min((1.0 - best) * pace, float(max_run))
        return Work(
            left, f"measured: {best:.0%} done at {fmt_span(pace / 100)} per 1 % of progress", best
        )
    why = "no pace measured yet" if reported else "no progress reported yet"
    return Work(float(max_run), f"compute.max_run, the upper bound ({why})", best)


@dataclass(frozen=True)
class Situation:
    """What the policy knows before an attempt, in seconds and USD."""

    work: float  # seconds of training left
    overhead: float  # seconds one start (or restart after a reclaim) costs
    time_left: float | None  # seconds to the deadline; None: no deadline
    spent: float  # what the run's attempts cost so far
    max_cost: float | None
    spot_usd_per_hour: float | None
    on_demand_usd_per_hour: float | None

    @property
    def expected_seconds(self) -> float:
        """An attempt started now: one start-up, then the work."""
        return self.work + self.overhead

    def usd_per_hour(self, spot: bool) -> float | None:
        return self.spot_usd_per_hour if spot else self.on_demand_usd_per_hour

    def expected_usd(self, spot: bool) -> float | None:
        rate = self.usd_per_hour(spot)
        return None if rate is None else rate * self.expected_seconds / 3600.0


@dataclass(frozen=True)
class Choice:
    """The capacity of the next attempt (None: do not start it), why, and what to warn."""

    spot: bool | None
    reason: str
    warnings: tuple[str, ...] = ()


def choose(situation: Situation, *, spot: bool, spot_allowed: bool) -> Choice:
    """Spot, on-demand or stop for the attempt the strategy asked for (``spot``); the
    deadline may move it to on-demand, the budget back to spot (``spot_allowed``) or stop
    it. See the module for the rules."""
    s = situation
    reasons: list[str] = []
    warnings: list[str] = []
    wanted, for_deadline = spot, False
    if s.time_left is not None:
        slack = s.time_left - s.expected_seconds
        if slack < 0:
            warnings.append(
                f"even on-demand misses the deadline: {fmt_span(s.work)} of work and "
                f"{fmt_span(s.overhead)} to start, {_left(s.time_left)}"
            )
        if spot and slack >= s.overhead:
            reasons.append(
                f"spot: the slack before the deadline ({fmt_span(slack)}) absorbs a reclaim "
                f"({fmt_span(s.overhead)})"
            )
        elif spot:
            wanted, for_deadline = False, True
            reasons.append(
                f"on-demand for the deadline: the slack ({fmt_span(slack)}: "
                f"{_left(s.time_left)}, {fmt_span(s.work)} of work, {fmt_span(s.overhead)} to "
                f"start) cannot absorb another reclaim ({fmt_span(s.overhead)})"
            )
    if s.max_cost is None:
        return Choice(wanted, "; ".join(reasons) or capacity_label(wanted), tuple(warnings))
    left = s.max_cost - s.spent
    cost = s.expected_usd(wanted)
    if cost is None:  # a config with max_cost refuses an unpriced type; said, not assumed
        reasons.append(f"no price for {capacity_label(wanted)}: max_cost not enforced")
        return Choice(wanted, "; ".join(reasons), tuple(warnings))
    if cost <= left:
        reasons.append(
            f"about {usd(cost)} {'on spot' if wanted else 'on-demand'}, {usd(left)} of max_cost "
            f"{usd(s.max_cost)} left"
        )
        return Choice(wanted, "; ".join(reasons), tuple(warnings))
    spot_cost = s.expected_usd(True)
    if not wanted and spot_allowed and spot_cost is not None and spot_cost <= left:
        if for_deadline:
            warnings.append(
                "the deadline is at risk: on spot, as the budget allows no on-demand attempt"
            )
        return Choice(
            True,
            f"spot, not on-demand: on-demand would cost about {usd(cost)}, more than the "
            f"{usd(left)} left of max_cost {usd(s.max_cost)}; spot about {usd(spot_cost)} "
            "fits (the budget comes first)",
            tuple(warnings),
        )
    rate = s.usd_per_hour(wanted)
    return Choice(
        None,
        f"it would cost about {usd(cost)} ({fmt_span(s.expected_seconds)} on "
        f"{capacity_label(wanted)} at {usd(rate)}/h), and {usd(s.spent)} spent of max_cost "
        f"{usd(s.max_cost)} leaves {usd(left)}",
        tuple(warnings),
    )


def attempt_usd(
    found: Price,
    spot: bool,
    *,
    billable_seconds: float | None,
    elapsed: float,
    spot_in_billable: bool = False,
) -> float:
    """What one ended attempt cost: its billable seconds where the cloud reports them,
    else the time it was followed. ``spot_in_billable``: the cloud bills spot as shorter
    billable time at the on-demand price (SageMaker managed spot), so those seconds are
    priced on-demand; otherwise a spot attempt's seconds are priced at the spot price."""
    if billable_seconds is None:
        return found.usd(elapsed, spot)
    return found.usd(billable_seconds, spot and not spot_in_billable)


def running_over(
    spent: float, max_cost: float, running_usd: float, elapsed: float, capacity: str
) -> str | None:
    """Why a running attempt must stop now (the run reached ``max_cost``), or None."""
    if spent + running_usd < max_cost:
        return None
    return (
        f"the run's cost reached max_cost {usd(max_cost)}: {usd(spent)} before this attempt "
        f"and about {usd(running_usd)} for its {fmt_span(elapsed)} on {capacity}"
    )


def switch_by(deadline: float, work: float, overhead: float) -> float:
    """The latest time after the start at which an on-demand attempt, started then with
    all of ``work`` left, still ends by ``deadline`` (negative: none does)."""
    return deadline - (work + overhead)


# -- the adapter: what the loop and plan know, as numbers ------------------------------


@dataclass(frozen=True)
class Decision:
    """The attempt to run (None: stop the run with outcome over_budget), and why."""

    step: NextAttempt | None
    reason: str = ""
    notes: tuple[str, ...] = ()  # for the log
    warnings: tuple[str, ...] = ()  # for the log and the report


def restart_overhead(config: PipelineConfig, backend: Backend) -> tuple[float, str]:
    """Seconds one (re)start costs on ``backend``'s cloud, and where the figure is from."""
    if config.budget is not None and config.budget.restart_overhead is not None:
        return float(config.budget.restart_overhead), "budget.restart_overhead"
    declared = getattr(backend, "typical_start_seconds", None)
    if isinstance(declared, int | float):
        return float(declared), f"{backend.name}'s typical start-up"
    return DEFAULT_START_SECONDS, "a cloud job's typical start-up (the backend declares none)"


def leg_price(leg: Leg) -> Price | None:
    compute = leg.config.compute
    return price(compute.instance_type, compute.instance_count)


def spans(attempts: Sequence[AttemptRecord]) -> list[Span]:
    return [
        Span(
            a.progress_start,
            a.progress_end,
            a.training_seconds if a.training_seconds is not None else a.elapsed_seconds,
        )
        for a in attempts
    ]


class BudgetPolicy:
    """``budget:`` applied to one run's attempts (see the module); without a budget it
    only prices attempts."""

    def __init__(self, config: PipelineConfig, started: float) -> None:
        self.config, self.started = config, started

    @classmethod
    def from_config(cls, config: PipelineConfig, *, started: float) -> BudgetPolicy:
        return cls(config, started)

    def situation(self, leg: Leg, result: TrainingResult, now: float) -> tuple[Situation, Work]:
        budget = self.config.budget
        work = remaining_work(spans(result.attempts), leg.config.compute.max_run)
        overhead, _ = restart_overhead(self.config, leg.backend)
        found = leg_price(leg)
        deadline = budget.deadline if budget is not None else None
        situation = Situation(
            work=work.seconds,
            overhead=overhead,
            time_left=None if deadline is None else self.started + deadline - now,
            spent=result.cost_usd or 0.0,
            max_cost=budget.max_cost if budget is not None else None,
            spot_usd_per_hour=found.spot_usd_per_hour if found else None,
            on_demand_usd_per_hour=found.on_demand_usd_per_hour if found else None,
        )
        return situation, work

    def decide(self, step: NextAttempt, leg: Leg, result: TrainingResult, now: float) -> Decision:
        if self.config.budget is None:
            return Decision(step)
        situation, work = self.situation(leg, result, now)
        choice = choose(situation, spot=step.spot, spot_allowed=leg.config.compute.spot)
        estimate = f"; work left {fmt_span(work.seconds)}: {work.source}"
        if choice.spot is None:
            reason = f"attempt {step.number} not started: {choice.reason}"
            return Decision(None, reason, (f"budget: {reason}{estimate}",), choice.warnings)
        chosen = step if choice.spot == step.spot else replace(step, spot=choice.spot)
        note = f"budget: attempt {step.number}: {choice.reason}{estimate}"
        return Decision(chosen, choice.reason, (note,), choice.warnings)

    def stop_now(
        self, step: NextAttempt, leg: Leg, result: TrainingResult, elapsed: float
    ) -> str | None:
        budget = self.config.budget
        found = leg_price(leg)
        if budget is None or budget.max_cost is None or found is None:
            return None
        return running_over(
            result.cost_usd or 0.0,
            budget.max_cost,
            found.usd(elapsed, step.spot),
            elapsed,
            step.capacity,
        )

    def attempt_cost(
        self, leg: Leg, spot: bool, status: AttemptStatus, *, elapsed: float
    ) -> float | None:
        found = leg_price(leg)
        if found is None:
            return None
        cost = attempt_usd(
            found,
            spot,
            billable_seconds=status.billable_seconds,
            elapsed=elapsed,
            spot_in_billable=bool(getattr(leg.backend, "spot_in_billable_seconds", False)),
        )
        return round(cost, 6)


def first_attempt_refusal(config: PipelineConfig, leg: Leg, first: NextAttempt) -> str | None:
    """Why the run's first attempt would not start (``over_budget``), asked before any
    stage runs: a run that cannot afford its first attempt uploads nothing and creates no
    compute. The same decision the attempt loop makes for attempt 1."""
    if config.budget is None or config.budget.max_cost is None:
        return None
    decision = BudgetPolicy(config, started=0.0).decide(
        first, leg, TrainingResult(run_id="", checkpoint_uri=""), now=0.0
    )
    return decision.reason if decision.step is None else None


def plan_budget(config: PipelineConfig, legs: Sequence[Leg], first: NextAttempt) -> dict[str, Any]:
    """The ``budget`` block of ``cloudtrain plan``: the work estimate, the cost range per
    cloud of the route (all spot .. all on-demand, the work plus one start-up), the latest
    time to switch to on-demand, and what the policy decides for the first attempt."""
    budget = config.budget
    assert budget is not None
    policy = BudgetPolicy(config, started=0.0)
    work = remaining_work((), legs[0].config.compute.max_run)
    block: dict[str, Any] = {
        "max_cost_usd": budget.max_cost,
        "deadline": fmt_span(budget.deadline) if budget.deadline is not None else None,
        "work": {"seconds": work.seconds, "source": work.source},
        "cost_basis": "the work plus one start-up, without reclaims; the run re-estimates "
        "before each attempt from the progress the script prints",
    }
    clouds = []
    seen: set[str] = set()
    for leg in legs:
        if leg.cloud in seen:
            continue
        seen.add(leg.cloud)
        overhead, source = restart_overhead(config, leg.backend)
        found = leg_price(leg)
        entry: dict[str, Any] = {
            "cloud": leg.cloud,
            "instance_type": f"{leg.config.compute.instance_type} "
            f"x{leg.config.compute.instance_count}",
            "restart_overhead": {"seconds": overhead, "source": source},
        }
        if found is None:
            entry["cost_usd"] = None
            entry["prices"] = f"no price for {leg.config.compute.instance_type}"
        else:
            seconds = work.seconds + overhead
            entry["usd_per_hour"] = {
                "spot": round(found.spot_usd_per_hour, 4),
                "on_demand": round(found.on_demand_usd_per_hour, 4),
            }
            entry["cost_usd"] = {
                "all_spot": round(found.usd(seconds, True), 4),
                "all_on_demand": round(found.usd(seconds, False), 4),
            }
            entry["prices"] = found.table
        if budget.deadline is not None:
            latest = switch_by(budget.deadline, work.seconds, overhead)
            entry["switch_to_on_demand_by"] = (
                f"{fmt_span(latest)} after training starts, if no progress is made before"
                if latest >= 0
                else f"never in time: on-demand alone needs {fmt_span(work.seconds + overhead)}"
            )
        clouds.append(entry)
    block["clouds"] = clouds
    situation, _ = policy.situation(legs[first.leg], TrainingResult("", ""), 0.0)
    choice = choose(situation, spot=first.spot, spot_allowed=legs[first.leg].config.compute.spot)
    block["first_attempt"] = {
        "capacity": "not started (over_budget)"
        if choice.spot is None
        else capacity_label(choice.spot),
        "reason": choice.reason,
        **({"warnings": list(choice.warnings)} if choice.warnings else {}),
    }
    return block


# -- wording ------------------------------------------------------------------------


def usd(value: float | None) -> str:
    """Dollars as the report writes them: four decimals, so a local run's cents show."""
    return "?" if value is None else f"${value:,.4f}"


def fmt_span(seconds: float) -> str:
    """``45 s``, ``1.5 s``, ``3m20s``, ``2h05m``: a duration as a person reads it."""
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 10:
        return f"{sign}{seconds:.1f} s"
    if seconds < 60:
        return f"{sign}{seconds:.0f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes:02d}m"
    return f"{sign}{minutes}m{secs:02d}s" if secs else f"{sign}{minutes}m"


def _left(time_left: float) -> str:
    if time_left < 0:
        return f"the deadline passed {fmt_span(-time_left)} ago"
    return f"{fmt_span(time_left)} left"
