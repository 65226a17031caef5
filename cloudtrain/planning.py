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
    )


def job_name(config: PipelineConfig, run_id: str, number: int) -> str:
    """Deterministic per run and attempt, within SageMaker's 63 characters."""
    short = "<run>" if run_id == PLAN_RUN_ID else re.sub(r"[^a-z0-9]", "", run_id.lower())[:8]
    return f"{config.name}-{short}-a{number}"


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
) -> AttemptSpec:
    """The strategy's decision ``step`` as everything that attempt needs; ``secrets``
    (values) only in a run, never in a plan."""
    return AttemptSpec(
        run_id=run_id,
        number=step.number,
        spot=step.spot,
        job_name=job_name(config, run_id, step.number),
        checkpoint_uri=checkpoint_uri,
        channels=channels,
        compute=compute,
        environment=environment,
        secrets=dict(secrets or {}),
    )


def plan(backend: Backend, config: PipelineConfig) -> dict[str, Any]:
    """The exact requests a run would send, stage by stage and attempt by attempt. Pure.
    Secret-looking hyperparameters are shown masked; secrets as their references."""
    config = config.model_copy(update={"hyperparameters": masked(config.hyperparameters)})
    stages = backend.plan_stages(config)
    checkpoint_uri = backend.checkpoint_location(config, PLAN_RUN_ID)
    attempts = []
    for step in strategy_for(config).schedule():
        spec = attempt_spec(
            config,
            PLAN_RUN_ID,
            step,
            checkpoint_uri=checkpoint_uri,
            channels=stages.channels,
            compute=stages.compute,
            environment=stages.environment,
        )
        attempts.append(
            {
                "number": step.number,
                "capacity": step.capacity,
                "when": "first"
                if step.number == 1
                else f"if attempt {step.number - 1} is reclaimed or finds no capacity",
                "job_name": spec.job_name,
                "request": backend.attempt_request(config, spec),
            }
        )
    return {
        "pipeline": config.name,
        "cloud": config.cloud,
        **stages.requests,
        "checkpoint_uri": checkpoint_uri,
        "retry": {
            "strategy": config.retry.strategy,
            "max_attempts": config.retry.max_attempts,
            "on_demand_fallback": config.retry.on_demand_fallback,
        },
        "attempts": attempts,
    }
