"""The pipeline every flow runs: upload, compute, environment, train, artifacts.

The per-cloud flows differ only in the cloud they pin, so the composition lives here
once. The report is published whether training succeeds or not: a failed run shows
its attempts and why each ended.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from prefect import get_run_logger, tags
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from cloudtrain.backend import ChannelData, ModelArtifacts, ResolvedEnvironment
from cloudtrain.backends import get_backend
from cloudtrain.config import PipelineConfig
from cloudtrain.errors import TrainingError
from cloudtrain.training import TrainingResult
from tasks.artifacts import collect_artifacts, publish_report
from tasks.compute import ensure_compute
from tasks.data import upload_data
from tasks.environment import resolve_environment
from tasks.training import train


def run_name(cloud: str) -> str:
    """``digits-sgd/local/2026-11-29T03:00``: pipeline, cloud and scheduled start."""
    parameters = flow_run.get_parameters() or {}
    config = parameters.get("config")
    name = config.get("name") if isinstance(config, dict) else getattr(config, "name", "?")
    started = flow_run.scheduled_start_time
    return f"{name}/{cloud}/{started.strftime('%Y-%m-%dT%H:%M:%S')}"


def pipeline_tags(config: PipelineConfig) -> list[str]:
    return [f"pipeline:{config.name}", f"cloud:{config.cloud}"]


def run_pipeline(
    config: PipelineConfig,
    cloud: str,
    dataframes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the five stages for ``cloud``; returns the run summary (see ``summary``)."""
    if config.cloud != cloud:
        config = config.model_copy(update={"cloud": cloud})
    get_backend(config).validate(config)  # refuse bad input before anything is created
    logger = get_run_logger()
    run_id = flow_run.get_id() or uuid.uuid4().hex
    _tag_flow_run(pipeline_tags(config))
    logger.info("pipeline %s on %s, run %s", config.name, cloud, run_id)

    with tags(*pipeline_tags(config)):
        channels = upload_data(config, dataframes)
        compute = ensure_compute(config)
        environment = resolve_environment(config, compute)
        uris = {name: data.uri for name, data in channels.items()}
        try:
            result = train(config, run_id, uris, compute, environment)
        except TrainingError as exc:
            publish_report(config, channels, environment, exc.result, None, error=str(exc))
            exc.summary = summary(config, channels, environment, exc.result, None, str(exc))
            raise
        artifacts = collect_artifacts(config, result)
        publish_report(config, channels, environment, result, artifacts)
    return summary(config, channels, environment, result, artifacts)


def _tag_flow_run(wanted: list[str]) -> None:
    """Tag the run itself, however it was started (CLI, deployment, Python)."""
    run_id = flow_run.get_id()
    current = set(flow_run.get_tags() or [])
    if run_id is None or set(wanted) <= current:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(UUID(run_id), tags=sorted(current | set(wanted)))


def summary(
    config: PipelineConfig,
    channels: Mapping[str, ChannelData],
    environment: ResolvedEnvironment | None,
    result: TrainingResult | None,
    artifacts: ModelArtifacts | None,
    error: str | None = None,
) -> dict[str, Any]:
    """What ``cloudtrain run --json`` prints: status, attempts, metrics, model location."""
    return {
        "status": "succeeded" if artifacts is not None else "failed",
        "pipeline": config.name,
        "cloud": config.cloud,
        "run_id": result.run_id if result else None,
        "error": error,
        "data": {name: data.to_dict() for name, data in channels.items()},
        "environment": environment.to_dict() if environment else None,
        "checkpoint_uri": result.checkpoint_uri if result else None,
        "attempts": [attempt.to_dict() for attempt in result.attempts] if result else [],
        "metrics": dict(artifacts.metrics) if artifacts else (result.metrics if result else {}),
        "model": artifacts.to_dict() if artifacts else None,
    }
