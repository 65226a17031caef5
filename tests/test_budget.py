"""The budget and the deadline: the pure policy, its prices, and two local flow runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloudtrain.budget import (
    BudgetPolicy,
    Situation,
    Span,
    attempt_usd,
    choose,
    fmt_span,
    remaining_work,
    running_over,
    switch_by,
)
from cloudtrain.config import load_config
from cloudtrain.errors import ConfigError, TrainingError
from cloudtrain.prices import MANAGED_SPOT_FRACTION, price, usd_per_hour
from cloudtrain.recovery import NextAttempt, Outcome
from cloudtrain.results import AttemptRecord, AttemptStatus, TrainingResult
from cloudtrain.route import route_legs

HOUR = 3600.0


def situation(**changes: Any) -> Situation:
    """One hour of work, 5 minutes per start, $1/h spot, $3/h on-demand, no limits."""
    values: dict[str, Any] = {
        "work": HOUR,
        "overhead": 300.0,
        "time_left": None,
        "spent": 0.0,
        "max_cost": None,
        "spot_usd_per_hour": 1.0,
        "on_demand_usd_per_hour": 3.0,
        **changes,
    }
    return Situation(**values)


# -- the deadline ---------------------------------------------------------------------


def test_spot_while_the_slack_absorbs_a_reclaim() -> None:
    # 1h work + 5m start = 65m; 75m left: 10m slack >= 5m restart overhead
    choice = choose(situation(time_left=75 * 60.0), spot=True, spot_allowed=True)
    assert choice.spot is True
    assert choice.reason.startswith("spot: the slack before the deadline (10m) absorbs")
    assert choice.warnings == ()


def test_on_demand_once_the_slack_cannot_absorb_another_reclaim() -> None:
    at_the_edge = choose(situation(time_left=70 * 60.0), spot=True, spot_allowed=True)
    assert at_the_edge.spot is True  # slack 5m == overhead: one more reclaim still fits
    past = choose(situation(time_left=70 * 60.0 - 1), spot=True, spot_allowed=True)
    assert past.spot is False
    assert past.reason.startswith("on-demand for the deadline: the slack (4m59s")
    assert past.warnings == ()


def test_a_deadline_even_on_demand_misses_is_a_warning_not_a_stop() -> None:
    choice = choose(situation(time_left=30 * 60.0), spot=True, spot_allowed=True)
    assert choice.spot is False
    assert choice.warnings == (
        "even on-demand misses the deadline: 1h00m of work and 5m to start, 30m left",
    )
    passed = choose(situation(time_left=-120.0), spot=False, spot_allowed=True)
    assert passed.spot is False
    assert "the deadline passed 2m ago" in passed.warnings[0]


def test_the_deadline_never_moves_an_on_demand_attempt_to_spot() -> None:
    choice = choose(situation(time_left=100 * HOUR), spot=False, spot_allowed=True)
    assert choice.spot is False


# -- the budget -----------------------------------------------------------------------


def test_an_attempt_that_would_pass_max_cost_does_not_start() -> None:
    # 65 minutes on spot at $1/h = $1.0833; $0.50 spent of $1.50 leaves $1.00
    choice = choose(situation(max_cost=1.5, spent=0.5), spot=True, spot_allowed=True)
    assert choice.spot is None
    assert choice.reason == (
        "it would cost about $1.0833 (1h05m on spot at $1.0000/h), and $0.5000 spent of "
        "max_cost $1.5000 leaves $1.0000"
    )
    fits = choose(situation(max_cost=1.6, spent=0.5), spot=True, spot_allowed=True)
    assert (
        fits.spot is True
        and "about $1.0833 on spot, $1.1000 of max_cost $1.6000 left" in fits.reason
    )


def test_the_budget_beats_the_deadline() -> None:
    # The deadline wants on-demand ($3.25), only $2 are left: spot ($1.08) runs instead.
    tight = situation(time_left=66 * 60.0, max_cost=2.0)
    choice = choose(tight, spot=True, spot_allowed=True)
    assert choice.spot is True
    assert choice.reason.startswith("spot, not on-demand: on-demand would cost about $3.2500")
    assert "the deadline is at risk" in choice.warnings[-1]
    # Without spot allowed (compute.spot false) nothing fits: the run stops.
    assert choose(tight, spot=False, spot_allowed=False).spot is None
    # With enough money the deadline has its way.
    assert (
        choose(situation(time_left=66 * 60.0, max_cost=5.0), spot=True, spot_allowed=True).spot
        is False
    )


def test_an_on_demand_fallback_the_budget_cannot_pay_runs_on_spot() -> None:
    choice = choose(situation(max_cost=2.0), spot=False, spot_allowed=True)
    assert choice.spot is True and "the budget comes first" in choice.reason
    assert choice.warnings == ()


def test_spent_money_counts() -> None:
    assert choose(situation(max_cost=10.0, spent=10.0), spot=True, spot_allowed=True).spot is None


def test_without_a_price_max_cost_is_said_to_be_unenforced() -> None:
    choice = choose(
        situation(max_cost=1.0, spot_usd_per_hour=None, on_demand_usd_per_hour=None),
        spot=True,
        spot_allowed=True,
    )
    assert choice.spot is True and "no price for spot: max_cost not enforced" in choice.reason


def test_a_running_attempt_stops_when_the_run_reaches_max_cost() -> None:
    assert running_over(0.5, 1.0, 0.49, 600.0, "spot") is None
    reason = running_over(0.5, 1.0, 0.5, 600.0, "spot")
    assert reason == (
        "the run's cost reached max_cost $1.0000: $0.5000 before this attempt and about "
        "$0.5000 for its 10m on spot"
    )


# -- the work left --------------------------------------------------------------------


def test_unknown_progress_is_bounded_by_max_run() -> None:
    assert remaining_work([], 3600).seconds == 3600
    silent = remaining_work([Span(None, None, 500.0)], 3600)
    assert silent.seconds == 3600 and "no progress reported yet" in silent.source
    once = remaining_work([Span(0.5, 0.5, 0.0)], 3600)  # progress, but no pace
    assert once.seconds == 3600 and "no pace measured yet" in once.source and once.done == 0.5


def test_measured_progress_gives_the_work_left() -> None:
    # 40 % in 400 s: 10 s per 1 %, 60 % left: 600 s.
    work = remaining_work([Span(0.1, 0.4, 400.0)], 3600)
    assert work.seconds == pytest.approx(600.0)
    assert work.done == 0.4
    assert work.source == "measured: 40% done at 10 s per 1 % of progress"
    # A resumed attempt's progress counts from where the one before it got to: 0.4 -> 0.8
    # in 200 s, so both together: 600 s for 80 %.
    both = remaining_work([Span(0.1, 0.4, 400.0), Span(0.5, 0.8, 200.0)], 3600)
    assert both.seconds == pytest.approx(0.2 * 600 / 0.8)
    # One that restarted from zero (first report 0.1 after the best was 0.4) counts from 0.1.
    restarted = remaining_work([Span(0.1, 0.4, 400.0), Span(0.1, 0.3, 200.0)], 3600)
    assert restarted.seconds == pytest.approx(0.6 * 600 / 0.6)
    # Never more than one attempt may run.
    assert remaining_work([Span(0.01, 0.01, 100.0)], 60).seconds == 60


# -- prices and attempt costs ------------------------------------------------------------


def test_prices_from_the_dated_tables() -> None:
    sagemaker = price("ml.p3.16xlarge", 2)
    assert sagemaker is not None
    assert sagemaker.on_demand_usd_per_hour == pytest.approx(2 * 28.152)
    assert sagemaker.spot_usd_per_hour == pytest.approx(2 * 28.152 * MANAGED_SPOT_FRACTION)
    assert "assumed" in sagemaker.table and "2024-06" in sagemaker.table
    azure = price("standard_ds3_v2")  # Azure sizes match without case
    assert azure is not None and azure.instance_type == "Standard_DS3_v2"
    assert azure.on_demand_usd_per_hour == pytest.approx(0.293)
    assert azure.spot_usd_per_hour == pytest.approx(0.293 * 0.2, abs=1e-4)
    assert price("local-cpu") is None and usd_per_hour("local-cpu", 1, True) is None
    with pytest.raises(ValueError):
        price("ml.m5.large", 0)


def test_an_attempt_is_priced_from_billable_seconds_where_reported() -> None:
    found = price("ml.m5.large")
    assert found is not None
    hour = dict(elapsed=HOUR)
    assert attempt_usd(found, False, billable_seconds=None, **hour) == pytest.approx(0.115)
    assert attempt_usd(found, True, billable_seconds=None, **hour) == pytest.approx(0.0345)
    assert attempt_usd(found, True, billable_seconds=1800.0, **hour) == pytest.approx(0.01725)
    # SageMaker bills managed spot as fewer billable seconds at the on-demand price.
    sagemaker_spot = attempt_usd(
        found, True, billable_seconds=1800.0, spot_in_billable=True, **hour
    )
    assert sagemaker_spot == pytest.approx(0.0575)


def test_switch_by_and_spans() -> None:
    assert switch_by(8 * HOUR, 2 * HOUR, 300.0) == 8 * HOUR - 2 * HOUR - 300
    assert [fmt_span(s) for s in (1.25, 45, 200, 3600, 7500, -90)] == [
        "1.2 s",
        "45 s",
        "3m20s",
        "1h00m",
        "2h05m",
        "-1m30s",
    ]


# -- config ---------------------------------------------------------------------------


def test_max_cost_needs_a_priced_instance_type(write_config: Callable[..., Path]) -> None:
    path = write_config(budget={"max_cost": 5.0})
    with pytest.raises(ConfigError) as raised:
        load_config(path, ["compute.instance_type=my-laptop"])
    assert raised.value.describe() == (
        "cloudtrain: invalid config: compute.instance_type: 'my-laptop' has no price in "
        "cloudtrain's tables (SageMaker ml.* types, Azure VM sizes), so budget.max_cost "
        "cannot be enforced: use a priced type or leave max_cost out"
    )
    # a deadline alone needs no price
    load_config(path, ["compute.instance_type=my-laptop", "budget.max_cost=null"])


def test_max_cost_names_the_unpriced_clouds_entry(write_config: Callable[..., Path]) -> None:
    path = write_config(
        clouds=["local", "local"],
        compute={"instance_type": {"local": "gpu-box"}, "spot": True},
        budget={"max_cost": 5.0, "deadline": "1h30m"},
    )
    with pytest.raises(ConfigError, match=r"compute\.instance_type\.local: 'gpu-box' has no price"):
        load_config(path)


# -- the adapter: what the attempt loop asks ------------------------------------------------


def record(number: int, **fields: Any) -> AttemptRecord:
    return AttemptRecord(
        number=number,
        job_name=f"unit-a{number}",
        spot=True,
        outcome=Outcome.INTERRUPTED,
        reason="reclaimed",
        started_at=None,
        ended_at=None,
        cloud="local",
        **fields,
    )


def test_the_policy_reads_the_runs_attempts(write_config: Callable[..., Path]) -> None:
    """ml.p3.16xlarge spot: $8.4456/h. 50 % done in 100 s: 100 s left + 5 s start-up."""
    config = load_config(
        write_config(
            compute={"instance_type": "ml.p3.16xlarge", "spot": True, "max_run": 3600},
            budget={"max_cost": 2.0, "deadline": "10m"},
        )
    )
    leg = route_legs(config)[0]
    policy = BudgetPolicy.from_config(config, started=1000.0)
    result = TrainingResult("run", "ckpt")
    result.attempts.append(
        record(1, progress_start=0.1, progress_end=0.5, elapsed_seconds=100.0, cost_usd=0.2)
    )
    step = NextAttempt(2, True, "attempt 1 interrupted")
    roomy = policy.decide(step, leg, result, now=1100.0)  # 500 s left, 105 s of work
    assert roomy.step == step
    assert roomy.reason.startswith("spot: the slack before the deadline (6m35s)")
    assert "; work left 1m40s: measured: 50% done" in roomy.notes[0]
    late = policy.decide(step, leg, result, now=1000.0 + 600 - 108)  # 108 s left: 3 s slack
    assert late.step == NextAttempt(2, False, "attempt 1 interrupted")
    assert late.reason.startswith("on-demand for the deadline")
    spent = TrainingResult("run", "ckpt", [record(1, cost_usd=1.95)])
    poor = policy.decide(step, leg, spent, 1000.0)
    assert poor.step is None
    assert poor.reason.startswith("attempt 2 not started: it would cost about $")
    # while an attempt runs: $1.95 spent, so about 21 s of spot reaches $2.00
    assert policy.stop_now(step, leg, spent, elapsed=20.0) is None
    assert "reached max_cost $2.0000" in (policy.stop_now(step, leg, spent, elapsed=22.0) or "")
    # the cost of an ended attempt: local reports its wall time as billable seconds
    status = AttemptStatus(outcome=Outcome.INTERRUPTED, billable_seconds=36.0)
    cost = policy.attempt_cost(leg, True, status, elapsed=40.0)
    assert cost == pytest.approx(36 * 28.152 * MANAGED_SPOT_FRACTION / HOUR, abs=1e-6)


def test_without_a_budget_attempts_are_only_priced(write_config: Callable[..., Path]) -> None:
    config = load_config(write_config())
    leg = route_legs(config)[0]
    policy = BudgetPolicy.from_config(config, started=0.0)
    step = NextAttempt(1, False, "first attempt")
    assert policy.decide(step, leg, TrainingResult("r", "c"), 1e9).step == step
    assert policy.stop_now(step, leg, TrainingResult("r", "c"), 1e9) is None
    status = AttemptStatus(outcome=Outcome.SUCCEEDED, billable_seconds=HOUR)
    assert policy.attempt_cost(leg, False, status, elapsed=HOUR) == pytest.approx(0.115)


def test_plan_prints_the_budget_only_when_there_is_one(write_config: Callable[..., Path]) -> None:
    from cloudtrain.backend import build_backend
    from cloudtrain.planning import plan

    plain = load_config(write_config(compute={"spot": True}))
    assert "budget" not in plan(build_backend(plain), plain)
    config = load_config(
        write_config(
            compute={"instance_type": "ml.p3.2xlarge", "spot": True, "max_run": 3600},
            budget={"max_cost": 10.0, "deadline": "2h", "restart_overhead": "5m"},
        )
    )
    block = plan(build_backend(config), config)["budget"]
    assert block["work"] == {
        "seconds": 3600.0,
        "source": "compute.max_run, the upper bound (no progress reported yet)",
    }
    (cloud,) = block["clouds"]
    assert cloud["cost_usd"] == {  # 1h05m at $3.825/h, on spot 30 % of it
        "all_spot": round(3.825 * 0.3 * 65 / 60, 4),
        "all_on_demand": round(3.825 * 65 / 60, 4),
    }
    assert cloud["restart_overhead"] == {"seconds": 300.0, "source": "budget.restart_overhead"}
    assert cloud["switch_to_on_demand_by"].startswith("55m after training starts")
    assert block["first_attempt"]["capacity"] == "spot"


# -- the trigger and the report ----------------------------------------------------------


@pytest.mark.parametrize("status", ["over_budget", "no_progress", "failed"])
def test_trigger_fails_a_run_that_stopped_itself(status: str) -> None:
    from cloudtrain.trigger import TriggeredRun

    run = TriggeredRun("f/d", "id", "n", "url", {}, state="COMPLETED", report={"status": status})
    assert run.exit_code == 1
    ok = TriggeredRun("f/d", "id", "n", "url", {}, state="COMPLETED", report={"status": "skipped"})
    assert ok.exit_code == 0


# -- local flows: the deadline switches to on-demand, the budget stops -----------------

#: Ten 1-second epochs, checkpointed before each ``epoch=N`` line; resumes from the file.
EPOCHS_SCRIPT = """
    import os, pathlib, sys, time
    checkpoint = pathlib.Path(os.environ["SM_CHECKPOINT_DIR"]) / "epoch.txt"
    epochs = int(sys.argv[sys.argv.index("--epochs") + 1])
    pace = float(sys.argv[sys.argv.index("--epoch_seconds") + 1])
    start = int(checkpoint.read_text()) if checkpoint.exists() else 0
    for epoch in range(start + 1, epochs + 1):
        time.sleep(pace)
        checkpoint.write_text(str(epoch))
        print(f"epoch={epoch}", flush=True)
"""


@pytest.mark.prefect
def test_the_deadline_moves_the_run_to_on_demand(
    prefect_server: str, write_config: Callable[..., Path]
) -> None:
    """Attempt 1 (spot) is reclaimed at epoch 5 of 10, after at least 5 s. Before it: 8 s
    of work at most (max_run) + 5 s start-up leave 19 - 13 = 6 s of slack, enough for a
    reclaim (5 s): spot. After it: its pace says 5 s or more are left, and at most 14 s
    remain, so the slack is at most 4 s: on-demand. A slower machine only tightens it."""
    from cloudtrain.backend import build_backend
    from cloudtrain.planning import plan
    from flows.local_training import local_training

    sections: dict[str, Any] = {
        "name": "deadline",
        "hyperparameters": {"epochs": 10, "epoch_seconds": 1.0},
        "compute": {"instance_type": "ml.p3.16xlarge", "spot": True, "max_run": 8},
        "retry": {"max_attempts": 3, "on_demand_fallback": False},
        "local": {"spot_interruptions": ["^epoch=5$"], "grace_period": 2},
    }
    plain = load_config(write_config(EPOCHS_SCRIPT, **sections))
    assert [a["capacity"] for a in plan(build_backend(plain), plain)["attempts"]] == ["spot"] * 3
    config = load_config(
        write_config(EPOCHS_SCRIPT, **sections, budget={"deadline": 19, "restart_overhead": 5})
    )
    state = local_training(config=config, return_state=True)
    assert state.is_completed()
    summary = state.result()
    attempts = summary["attempts"]
    assert [(a["capacity"], a["outcome"]) for a in attempts] == [
        ("spot", "interrupted"),
        ("on-demand", "succeeded"),
    ]
    assert attempts[0]["budget_note"].startswith("spot: the slack before the deadline")
    assert attempts[1]["budget_note"].startswith("on-demand for the deadline: the slack")
    assert attempts[1]["progress_start"] == 0.6  # resumed: epoch 6 was its first
    assert all(a["cost_usd"] > 0 for a in attempts)
    from test_flow import read_run

    _, artifacts, _ = read_run(state.state_details.flow_run_id)
    report = artifacts["deadline-report"].data
    assert "- budget, attempt 2: on-demand for the deadline" in report


@pytest.mark.prefect
def test_the_budget_stops_the_run_before_an_attempt_it_cannot_pay(
    prefect_server: str, write_config: Callable[..., Path]
) -> None:
    """ml.p3.16xlarge on spot, max_run 7 s + 1 s start-up: attempt 1 is expected to cost
    8 s of spot, and max_cost is 9.5 s of it. Attempt 1 is reclaimed at epoch 3 (at least
    3 s, paid); its pace puts the work left at max_run, so attempt 2 would cost 8 s more:
    past max_cost. It is not started; the CLI exits 1 with status over_budget."""
    from test_cli import cli

    spot = price("ml.p3.16xlarge")
    assert spot is not None
    per_second = spot.spot_usd_per_hour / HOUR
    path = write_config(
        EPOCHS_SCRIPT,
        name="capped",
        hyperparameters={"epochs": 10, "epoch_seconds": 1.0},
        compute={"instance_type": "ml.p3.16xlarge", "spot": True, "max_run": 7},
        local={"spot_interruptions": ["^epoch=3$"], "grace_period": 2},
        budget={"max_cost": round(9.5 * per_second, 6), "restart_overhead": 1},
    )
    done = cli("run", str(path), "--json", api_url=prefect_server)
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "over_budget"
    assert [a["outcome"] for a in summary["attempts"]] == ["interrupted"]
    assert summary["stop_reason"].startswith("attempt 2 not started: it would cost about $")
    assert "spent of max_cost" in summary["stop_reason"]
    assert summary["cost_usd"] >= 3 * per_second

    # Not even attempt 1 fits: nothing starts, and the terminal says so in one line.
    human = cli("run", str(path), "--set", "budget.max_cost=0.001", api_url=prefect_server)
    assert human.returncode == 1
    assert "capped on local: STOPPED (over_budget) in 0 attempt(s)" in human.stdout
    assert (
        "  stopped: attempt 1 not started: it would cost about $0.0188 (8.0 s on spot at "
        "$8.4456/h), and $0.0000 spent of max_cost $0.0010 leaves $0.0010"
    ) in human.stdout
    assert "Traceback" not in human.stderr


def test_a_running_attempt_is_stopped_when_the_run_reaches_max_cost(
    write_config: Callable[..., Path],
) -> None:
    """On a clock running 100 times faster than this machine's (a simulated hour is 36 s),
    the first attempt is expected to cost 65 s of spot (max_run 60 + 5 s start-up), and
    max_cost is 70 s of it: it starts, and is stopped once its cost reaches max_cost, long
    before its script (30 s of sleep) ends."""
    import time

    from cloudtrain.backends.local.backend import LocalBackend
    from cloudtrain.errors import TrainingError
    from cloudtrain.training import run_training

    spot = price("ml.p3.16xlarge")
    assert spot is not None
    per_second = spot.spot_usd_per_hour / HOUR
    config = load_config(
        write_config(
            "import time\nprint('epoch=1', flush=True)\ntime.sleep(30)\n",
            name="running",
            compute={"instance_type": "ml.p3.16xlarge", "spot": True, "max_run": 60},
            budget={"max_cost": round(70 * per_second, 6)},
        )
    )
    backend = LocalBackend.from_config(config)
    compute = backend.ensure_compute(config)
    origin = time.time()
    lines: list[str] = []
    with pytest.raises(TrainingError) as raised:
        run_training(
            backend,
            config,
            run_id="0123456789abcdef",
            channels={},
            compute=compute,
            environment=backend.resolve_environment(config, compute),
            log=lines.append,
            clock=lambda: origin + 100 * (time.time() - origin),
        )
    result = raised.value.result
    assert result is not None and result.stopped == "over_budget"
    (attempt,) = result.attempts
    assert attempt.outcome is Outcome.OVER_BUDGET
    assert attempt.reason.startswith("the run's cost reached max_cost $0.1642: $0.0000 before")
    assert attempt.elapsed_seconds is not None and attempt.elapsed_seconds < 30 * 100
    assert any(line.startswith("budget: attempt 1: about $0.15") for line in lines)


def test_the_budget_example_plans_offline(capsys: pytest.CaptureFixture[str]) -> None:
    from cloudtrain.cli import main

    example = Path(__file__).resolve().parents[1] / "examples" / "budget" / "cloudtrain.yaml"
    assert main(["plan", str(example), "--json"]) == 0
    block = json.loads(capsys.readouterr().out)["budget"]
    assert block["first_attempt"]["capacity"] == "spot"
    assert block["clouds"][0]["switch_to_on_demand_by"].startswith("6.0 s after training starts")
    assert main(["plan", str(example), "--json", "--set", "budget.max_cost=0.01"]) == 0
    refused = json.loads(capsys.readouterr().out)["budget"]["first_attempt"]
    assert refused["capacity"] == "not started (over_budget)"


@pytest.mark.prefect
def test_a_budget_that_cannot_pay_the_first_attempt_stops_before_any_stage(
    prefect_server: str, write_config: Callable[..., Path]
) -> None:
    """Nothing uploaded, no compute, no job: the run ends over_budget with its report."""
    from test_flow import read_run

    from flows.local_training import local_training

    config = load_config(
        write_config(
            EPOCHS_SCRIPT,
            name="broke",
            compute={"instance_type": "ml.p3.16xlarge", "spot": True, "max_run": 600},
            budget={"max_cost": 0.01},
        )
    )
    state = local_training(config=config, return_state=True)
    assert state.is_failed()
    with pytest.raises(TrainingError) as caught:
        state.result()
    summary = caught.value.summary
    assert summary is not None and summary["status"] == "over_budget"
    assert summary["attempts"] == [] and summary["data"] == {}
    assert summary["stop_reason"].startswith("attempt 1 not started: it would cost about $")
    assert str(caught.value).startswith("training stopped before its first attempt: over_budget")
    assert not (config.work_dir / "channels").exists()  # no data moved
    _, artifacts, task_runs = read_run(state.state_details.flow_run_id)
    assert "broke-report" in artifacts and "broke-outcome" in artifacts
    ran = {run.name.rsplit("-", 1)[0] for run in task_runs}
    assert not ran & {"upload-data", "ensure-compute", "resolve-environment", "train"}
