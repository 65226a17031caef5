"""Every attempt of a run, planned once for ``cloudtrain plan`` and for the attempt loop.

The recovery strategy says which attempts there are and on which capacity; ``attempt_spec``
turns one of its decisions into the ``AttemptSpec`` a backend turns into a request. The
attempt loop (``cloudtrain.training``) and ``plan`` both go through here, so what ``plan``
prints is what a run sends, attempt by attempt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cloudtrain.backend import Backend
from cloudtrain.config import PipelineConfig
from cloudtrain.recovery import NextAttempt, RecoveryStrategy
from cloudtrain.results import AttemptSpec, ComputeTarget, ResolvedEnvironment
from cloudtrain.secrets import masked

#: The run id ``plan`` shows where a run would put its own.
PLAN_RUN_ID = "<run-id>"


def strategy_for(config: PipelineConfig) -> RecoveryStrategy:
    """The recovery strategy the config names, with its limits."""
    return RecoveryStrategy.from_str(
        config.retry.strategy,
        max_attempts=config.retry.max_attempts,
        spot=config.compute.spot,
        on_demand_fallback=config.retry.on_demand_fallback,
        legs=len(config.route),
        reclaims_per_cloud=config.retry.reclaims_per_cloud,
    )


def plan_run_id(trial: int | None = None) -> str:
    """The run id ``plan`` shows where a run puts its own; a trial's has its number,
    since each trial is a run of its own (its own checkpoint location)."""
    return PLAN_RUN_ID if trial is None else f"<trial-{trial}-run-id>"


def job_name(config: PipelineConfig, run_id: str, number: int, trial: int | None = None) -> str:
    """Deterministic per run and attempt, within SageMaker's 63 characters (40 for the
    name, 8 of the run id, ``-t1000`` and ``-a100`` at most). A sweep trial's jobs say
    which trial they are (``-t3``), in the console and in ``plan``, where every trial's
    run id is a placeholder."""
    short = "<run>" if run_id.startswith("<") else re.sub(r"[^a-z0-9]", "", run_id.lower())[:8]
    return f"{config.name}-{short}{f'-t{trial}' if trial is not None else ''}-a{number}"


def attempt_spec(
    config: PipelineConfig,
    run_id: str,
    step: NextAttempt,
    *,
    checkpoint_uri: str,
    channels: Mapping[str, str],
    compute: ComputeTarget,
    environment: ResolvedEnvironment,
    secrets: Mapping[str, str] | None = None,
    trial: int | None = None,
) -> AttemptSpec:
    """The strategy's decision ``step`` as everything that attempt needs; ``secrets``
    (values) only in a run, never in a plan."""
    return AttemptSpec(
        run_id=run_id,
        number=step.number,
        spot=step.spot,
        job_name=job_name(config, run_id, step.number, trial),
        checkpoint_uri=checkpoint_uri,
        channels=channels,
        compute=compute,
        environment=environment,
        secrets=dict(secrets or {}),
    )


def plan(backend: Backend, config: PipelineConfig, trial: int | None = None) -> dict[str, Any]:
    """The exact requests a run would send, stage by stage and attempt by attempt, on
    every leg of the route. Pure. Secret-looking hyperparameters are shown masked;
    secrets as their references. ``backend`` is the first cloud's; ``trial``, the number
    of the sweep's trial ``config`` is (``cloudtrain.sweep_plan``)."""
    run_id = plan_run_id(trial)
    from cloudtrain.route import route_legs

    config = config.model_copy(update={"hyperparameters": masked(config.hyperparameters)})
    legs = route_legs(config, first=backend)
    stages = [leg.backend.plan_stages(leg.config) for leg in legs]
    locations = [leg.checkpoint_location(run_id) for leg in legs]
    attempts = []
    schedule = strategy_for(config).schedule()
    for step in schedule:
        leg, leg_stages = legs[step.leg], stages[step.leg]
        spec = attempt_spec(
            leg.config,
            run_id,
            step,
            checkpoint_uri=locations[step.leg],
            channels=leg_stages.channels,
            compute=leg_stages.compute,
            environment=leg_stages.environment,
            trial=trial,
        )
        entry: dict[str, Any] = {"number": step.number, "capacity": step.capacity}
        if len(legs) > 1:
            entry["cloud"] = leg.cloud
        entry["when"] = _when(step, schedule, legs)
        entry["job_name"] = spec.job_name
        entry["request"] = leg.backend.attempt_request(leg.config, spec)
        attempts.append(entry)
    summary: dict[str, Any] = {
        "pipeline": config.name,
        "cloud": config.cloud,
        **stages[0].requests,
        "checkpoint_uri": locations[0],
        "retry": {
            "strategy": config.retry.strategy,
            "max_attempts": config.retry.max_attempts,
            "on_demand_fallback": config.retry.on_demand_fallback,
        },
    }
    if len(legs) > 1:
        summary["retry"]["reclaims_per_cloud"] = config.retry.reclaims_per_cloud
        summary["route"] = [
            {
                "leg": leg.index + 1,
                "cloud": leg.cloud,
                "instance_type": leg.config.compute.instance_type,
                "checkpoint_uri": locations[leg.index],
                "attempts": [step.number for step in schedule if step.leg == leg.index],
                **({"stages": dict(stages[leg.index].requests)} if leg.index else {}),
            }
            for leg in legs
        ]
    if config.budget is not None:
        from cloudtrain.budget import plan_budget

        summary["budget"] = plan_budget(config, legs, schedule[0])
    summary["attempts"] = attempts
    return summary


#: What differs between a sweep's trials in their plans (the rest they share).
_PER_TRIAL = ("checkpoint_uri", "attempts", "route")


def plan_sweep(backend: Backend, config: PipelineConfig) -> dict[str, Any]:
    """A sweep's plan: the stages once (every trial shares them), then every trial with
    its hyperparameters, its own checkpoint location and its attempts' exact requests.
    Pure."""
    from cloudtrain.sweep import trial_config
    from cloudtrain.trials import make_trials

    sweep = config.sweep
    assert sweep is not None
    trials = make_trials(sweep)
    shared: dict[str, Any] = {}
    planned: list[dict[str, Any]] = []
    for trial in trials:
        trial_run = trial_config(config, trial)
        one = plan(backend, trial_run, trial=trial.number)
        own: dict[str, Any] = {key: one.pop(key) for key in _PER_TRIAL if key in one}
        shared = shared or one
        planned.append(
            {
                "trial": trial.number,
                "values": masked(dict(trial.values)),
                "hyperparameters": masked(trial_run.hyperparameters),
                **own,
            }
        )
    return {
        **shared,
        "sweep": {
            "strategy": sweep.strategy,
            "trials": len(trials),
            "max_parallel": min(sweep.max_parallel, len(trials)),
            "objective": sweep.objective,
            "goal": sweep.goal,
            **({"seed": sweep.seed} if sweep.strategy == "random" else {}),
            "per_trial": "each trial is a run of its own: retry, budget and checkpoints "
            "apply to it alone",
        },
        "trials": planned,
    }


def _when(step: NextAttempt, schedule: list[NextAttempt], legs: list[Any]) -> str:
    """When the attempt runs, as the plan says it."""
    if step.number == 1:
        return "first"
    previous = schedule[step.number - 2]
    base = f"if attempt {previous.number} is reclaimed or finds no capacity"
    if step.leg != previous.leg:
        return (
            f"{base} on leg {previous.leg + 1} ({legs[previous.leg].cloud}): fails over to "
            f"leg {step.leg + 1} ({legs[step.leg].cloud}), the checkpoint copied along "
            "(at once on no capacity)"
        )
    if not step.spot and previous.spot:
        return f"{base}: on-demand fallback"
    return base
