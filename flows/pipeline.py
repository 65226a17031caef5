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

from cloudtrain.backends import get_backend
from cloudtrain.changes import RunRecords
from cloudtrain.config import PipelineConfig
from cloudtrain.errors import TrainingError
from cloudtrain.report import RunReport
from tasks.artifacts import collect_artifacts, publish_report
from tasks.changes import check_for_changes
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
    return f"{name}/{cloud}/{started.strftime('%Y-%m-%dT%H:%M')}"


def pipeline_tags(config: PipelineConfig) -> list[str]:
    return [f"pipeline:{config.name}", f"cloud:{config.cloud}"]


def run_pipeline(
    config: PipelineConfig,
    cloud: str,
    dataframes: Mapping[str, Any] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Run the five stages for ``cloud``; returns the run summary (``RunReport.summary``)."""
    if config.cloud != cloud:
        config = config.model_copy(update={"cloud": cloud})
    get_backend(config).validate(config)  # refuse bad input before anything is created
    logger = get_run_logger()
    run_id = flow_run.get_id() or uuid.uuid4().hex
    _tag_flow_run(pipeline_tags(config))
    logger.info("pipeline %s on %s, run %s", config.name, cloud, run_id)

    run = RunReport(config)
    with tags(*pipeline_tags(config)):
        run.channels = upload_data(config, dataframes)
        decision, current = check_for_changes(config, run.channels, force)
        run.decision = decision.reason
        if not decision.train and decision.previous is not None:
            run.reused = decision.previous
            publish_report(run)
            return run.summary()
        compute = ensure_compute(config)
        run.environment = resolve_environment(config, compute)
        uris = {name: data.uri for name, data in run.channels.items()}
        try:
            timed = train.with_options(timeout_seconds=training_budget_seconds(config))
            run.result = timed(config, run_id, uris, compute, run.environment)
        except TrainingError as exc:
            run.result, run.error = exc.result, str(exc)
            publish_report(run)
            exc.summary = run.summary()
            raise
        run.artifacts = collect_artifacts(config, run.result)
        publish_report(run)
    summary = run.summary()
    if current is not None:
        RunRecords(config.local.root).save_success(config.name, cloud, current, summary)
    return summary


#: Time on top of the attempts' own limits for uploads, image pulls and polling.
TRAINING_SLACK_SECONDS = 15 * 60


def training_budget_seconds(config: PipelineConfig) -> float:
    """The train task's own timeout: every attempt at its max_wait, plus slack. When it
    fires, the running attempt is stopped (see cloudtrain.training)."""
    per_attempt = config.compute.effective_max_wait + TRAINING_SLACK_SECONDS
    return float(config.retry.max_attempts * per_attempt)


def _tag_flow_run(wanted: list[str]) -> None:
    """Tag the run itself, however it was started (CLI, deployment, Python)."""
    run_id = flow_run.get_id()
    current = set(flow_run.get_tags() or [])
    if run_id is None or set(wanted) <= current:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(UUID(run_id), tags=sorted(current | set(wanted)))
