"""The local pipeline: every stage on this machine, no cloud account needed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import flow

from cloudtrain.config import PipelineConfig
from flows.pipeline import run_name, run_pipeline


def _run_name() -> str:
    return run_name("local")


@flow(name="local-training", flow_run_name=_run_name, validate_parameters=True)
def local_training(
    config: PipelineConfig,
    dataframes: Mapping[str, Any] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Train ``config`` on this machine: the same script contract as SageMaker and Azure ML.

    ``dataframes`` adds channels from pandas DataFrames (stored as parquet) when the flow
    is called from Python. Training is skipped, and the last successful run's model
    reused, when data, code and config are unchanged, unless ``force``.
    """
    return run_pipeline(config, "local", dataframes, force)
