"""The AWS pipeline: S3 upload, SageMaker managed spot training resumed from checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import flow

from cloudtrain.config import PipelineConfig
from flows.pipeline import run_name, run_pipeline


def _run_name() -> str:
    return run_name("aws")


@flow(name="aws-training", flow_run_name=_run_name, validate_parameters=True)
def aws_training(
    config: PipelineConfig,
    dataframes: Mapping[str, Any] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Train ``config`` on SageMaker: data to S3, one training job per attempt, all attempts
    of a run sharing one checkpoint location in S3, on-demand as the last resort.
    Skipped (reusing the last success) when nothing changed, unless ``force``.
    """
    return run_pipeline(config, "aws", dataframes, force)
