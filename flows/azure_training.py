"""The Azure ML pipeline: datastore upload, low-priority command jobs resumed from checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import flow

from cloudtrain.config import PipelineConfig
from flows.pipeline import run_name, run_pipeline


def _run_name() -> str:
    return run_name("azure")


@flow(name="azure-training", flow_run_name=_run_name, validate_parameters=True)
def azure_training(
    config: PipelineConfig,
    dataframes: Mapping[str, Any] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Train ``config`` on Azure ML: data to a datastore as data assets, one command job per
    attempt, all attempts of a run sharing one checkpoint path, dedicated as the last resort.
    Skipped (reusing the last success) when nothing changed, unless ``force``.
    """
    return run_pipeline(config, "azure", dataframes, force)
