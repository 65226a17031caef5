"""Where a triggered run ended up, and what it reported.

The exit code comes from the flow run's state type; what the pipeline itself says is
read back from the run's artifacts: its status from the ``<pipeline>-outcome`` table (one
row of data, published by ``tasks.artifacts.publish_report``), the markdown report and
the attempts table beside it. Artifacts, because a flow's return value is only kept
where result persistence is configured and the worker's disk is usually not readable
from CI.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from cloudtrain.exits import EXIT_FAILED, EXIT_OK
from cloudtrain.report import ATTEMPTS_SUFFIX, OUTCOME_SUFFIX, REPORT_SUFFIX, SUCCESS_STATUSES

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient


@dataclass
class TriggeredRun:
    """Where a triggered run ended up, and what it reported."""

    deployment: str
    flow_run_id: str
    flow_run_name: str
    url: str
    parameters: dict[str, Any]
    state: str | None = None  # the state type: COMPLETED, FAILED, ...; None when not followed
    state_name: str | None = None  # what the UI shows: Completed, Crashed, Late, ...
    message: str | None = None
    timed_out: bool = False
    report: dict[str, Any] | None = None  # status, outcome, key, markdown, attempts

    @property
    def exit_code(self) -> int:
        """From the state; a run whose pipeline reports anything but succeeded or skipped
        (failed, over_budget, no_progress) fails too, whatever state it ended in."""
        if self.state is None:
            return EXIT_OK  # created, not followed
        if self.status is not None and self.status not in SUCCESS_STATUSES:
            return EXIT_FAILED
        return EXIT_OK if self.state == "COMPLETED" and not self.timed_out else EXIT_FAILED

    @property
    def status(self) -> str | None:
        """The pipeline's own word: succeeded, skipped, failed, or the outcome it stopped
        itself with, over_budget or no_progress (None without a report)."""
        return self.report["status"] if self.report else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "flow_run_id": self.flow_run_id,
            "flow_run_name": self.flow_run_name,
            "url": self.url,
            "state": self.state,
            "state_name": self.state_name,
            "message": self.message,
            "timed_out": self.timed_out,
            "status": self.status,
            "parameters": self.parameters,
            "report": self.report,
        }


def read_report(
    client: SyncPrefectClient, flow_run_id: UUID, parameters: Mapping[str, Any]
) -> dict[str, Any] | None:
    """What the run reported, from its artifacts (see ``report_from_artifacts``)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.client.schemas.sorting import ArtifactSort

    config = parameters.get("config")
    pipeline = config.get("name") if isinstance(config, dict) else None
    try:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
            sort=ArtifactSort.CREATED_DESC,
        )
    except Exception:  # the state already decided the exit code; the report is extra
        return None
    return report_from_artifacts(artifacts, pipeline)


def report_from_artifacts(artifacts: Iterable[Any], pipeline: str | None) -> dict[str, Any] | None:
    """``status``, ``outcome``, ``key``, ``markdown`` and ``attempts`` from a run's artifacts
    (newest first), or None when it published none.

    The status is the ``<pipeline>-outcome`` table's, never parsed from the markdown
    report, whose wording is for people. When the named pipeline published neither (or
    the deployment's parameters name none), the newest outcome or report of any is used.
    """
    by_key: dict[str, Any] = {}
    for artifact in artifacts:  # newest first: keep the first of each key
        if artifact.key:
            by_key.setdefault(artifact.key, artifact)
    published = [
        key.removesuffix(suffix)
        for key in by_key
        for suffix in (OUTCOME_SUFFIX, REPORT_SUFFIX)
        if key.endswith(suffix)
    ]
    if not published:
        return None
    if pipeline not in published:
        pipeline = published[0]
    outcome_artifact = by_key.get(pipeline + OUTCOME_SUFFIX)
    outcome = _first_row(outcome_artifact.data) if outcome_artifact else None
    report_key = pipeline + REPORT_SUFFIX
    report = by_key.get(report_key)
    markdown = report.data if report is not None and isinstance(report.data, str) else None
    if outcome is None and markdown is None:
        return None
    attempts_artifact = by_key.get(pipeline + ATTEMPTS_SUFFIX)
    attempts = _table(attempts_artifact.data) if attempts_artifact else None
    status = outcome.get("status") if outcome else None
    return {
        "status": status if isinstance(status, str) else None,
        "outcome": outcome,
        "key": report_key if markdown is not None else None,
        "markdown": markdown,
        "attempts": attempts if isinstance(attempts, list) else [],
    }


def _table(data: Any) -> Any:
    """A table artifact's rows: the API keeps them as a JSON string."""
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            return None
    return data


def _first_row(data: Any) -> dict[str, Any] | None:
    rows = _table(data)
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        return rows[0]
    return None
