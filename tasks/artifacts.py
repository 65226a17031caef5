"""Stage 5: collect the model and metrics, and show the run in the Prefect UI."""

from __future__ import annotations

import re

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from cloudtrain.backend import Backend
from cloudtrain.config import PipelineConfig
from cloudtrain.jsonout import finite
from cloudtrain.report import (
    ATTEMPTS_SUFFIX,
    OUTCOME_SUFFIX,
    REPORT_SUFFIX,
    RunReport,
    attempts_table,
)
from cloudtrain.results import ModelArtifacts, TrainingResult


@task(name="collect-artifacts", cache_policy=NO_CACHE)
def collect_artifacts(
    backend: Backend, config: PipelineConfig, result: TrainingResult
) -> ModelArtifacts:
    artifacts = backend.collect_artifacts(config, result)
    for warning in artifacts.warnings:
        get_run_logger().warning(warning)
    get_run_logger().info(
        "model: %s; metrics: %s",
        artifacts.model_archive or artifacts.model_uri,
        dict(artifacts.metrics),
    )
    return artifacts


@task(name="publish-report", cache_policy=NO_CACHE)
def publish_report(run: RunReport) -> str:
    """The markdown report and the attempts table, keyed by pipeline so runs line up, and
    last the outcome table that ``cloudtrain trigger`` reads the status from."""
    config, report, key = run.config, run.markdown(), run.key
    create_markdown_artifact(
        key=f"{key}{REPORT_SUFFIX}",
        markdown=report,
        description=f"{config.name} on {config.cloud}",
    )
    for name, link in (run.artifacts.links if run.artifacts else {}).items():
        if link.startswith("https://"):
            create_link_artifact(
                key=f"{key}-{_slug(name)}",
                link=link,
                link_text=name,
                description=f"{config.name}: {name}",
            )
    if run.result is not None and run.result.attempts:
        rows = attempts_table(run.result)
        create_table_artifact(
            key=f"{key}{ATTEMPTS_SUFFIX}",
            table=finite(rows),
            description="one row per training attempt",
        )
        for row in rows:  # and one table per attempt, to follow a single attempt over runs
            create_table_artifact(
                key=f"{key}-attempt-{row['attempt']}",
                table=finite([{"field": name, "value": value} for name, value in row.items()]),
                description=f"attempt {row['attempt']}: {row['outcome']}",
            )
    outcome = run.outcome()
    create_table_artifact(
        key=f"{key}{OUTCOME_SUFFIX}",
        table=finite([outcome]),
        description=f"{config.name} on {config.cloud}: {outcome['status']}",
    )
    return report


def _slug(text: str) -> str:
    """Artifact keys take lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
