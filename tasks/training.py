"""Stage 4: train, resubmitting lost attempts into the same checkpoint location."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cloudtrain.backend import ComputeTarget, ResolvedEnvironment
from cloudtrain.backends import get_backend
from cloudtrain.config import PipelineConfig
from cloudtrain.training import TrainingResult, run_training


@task(name="train", cache_policy=NO_CACHE)
def train(
    config: PipelineConfig,
    run_id: str,
    channels: dict[str, str],
    compute: ComputeTarget,
    environment: ResolvedEnvironment,
) -> TrainingResult:
    """Retries live in the recovery strategy, not in Prefect: a script error is final."""
    logger = get_run_logger()
    return run_training(
        get_backend(config),
        config,
        run_id=run_id,
        channels=channels,
        compute=compute,
        environment=environment,
        log=logger.info,
        script_log=lambda line: logger.info("| %s", line),
    )
