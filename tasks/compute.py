"""Stage 2: make sure the compute exists and can run the request."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cloudtrain.backend import Backend
from cloudtrain.config import PipelineConfig
from cloudtrain.results import ComputeTarget
from tasks._common import TRANSIENT_RETRIES, TRANSIENT_RETRY_DELAYS, retry_transient


@task(
    name="ensure-compute",
    cache_policy=NO_CACHE,
    retries=TRANSIENT_RETRIES,
    retry_delay_seconds=TRANSIENT_RETRY_DELAYS,
    retry_condition_fn=retry_transient,
)
def ensure_compute(backend: Backend, config: PipelineConfig) -> ComputeTarget:
    logger = get_run_logger()
    compute = backend.ensure_compute(config)
    logger.info(
        "compute %s: %s x%d %s",
        compute.name,
        compute.instance_type,
        compute.instance_count,
        dict(compute.details),
    )
    for warning in compute.warnings:
        logger.warning(warning)
    return compute
