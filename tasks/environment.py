"""Stage 3: turn the environment section into the runtime the script gets."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cloudtrain.backend import Backend
from cloudtrain.config import PipelineConfig
from cloudtrain.results import ComputeTarget, ResolvedEnvironment


@task(name="resolve-environment", cache_policy=NO_CACHE)
def resolve_environment(
    backend: Backend, config: PipelineConfig, compute: ComputeTarget
) -> ResolvedEnvironment:
    logger = get_run_logger()
    environment = backend.resolve_environment(config, compute)
    logger.info("environment %s: %s", environment.kind, environment.description)
    for warning in environment.warnings:
        logger.warning(warning)
    return environment
