"""Where a triggered run ended up, and what it reported.

The exit code comes from the flow run's state type; what the pipeline itself says
(its status word, the report, the attempts) is read back from the run's artifacts,
because a flow's return value is only kept where result persistence is configured and
the worker's disk is usually not readable from CI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2

_REPORT_HEADING = re.compile(r"^#\s+(?P<pipeline>\S+) on (?P<cloud>\S+):\s*(?P<status>\w+)")


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
    report: dict[str, Any] | None = None  # status, markdown, attempts

    @property
    def exit_code(self) -> int:
        if self.state is None:
            return EXIT_OK  # created, not followed
        return EXIT_OK if self.state == "COMPLETED" and not self.timed_out else EXIT_FAILED

    @property
    def status(self) -> str | None:
        """The pipeline's own word: succeeded, skipped, failed (None without a report)."""
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


def report_status(markdown: str) -> str | None:
    """``succeeded`` from ``# digits-sgd on local: succeeded``."""
    match = _REPORT_HEADING.match(markdown.lstrip())
    return match.group("status") if match else None


def read_report(
    client: SyncPrefectClient, flow_run_id: UUID, parameters: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The run's ``<pipeline>-report`` and ``<pipeline>-attempts`` artifacts, newest first."""
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
    by_key: dict[str, Any] = {}
    for artifact in artifacts:  # newest first: keep the first of each key
        if artifact.key:
            by_key.setdefault(artifact.key, artifact)
    report = by_key.get(f"{pipeline}-report") if pipeline else None
    if report is None:
        report = next((a for k, a in by_key.items() if k.endswith("-report")), None)
    if report is None or not isinstance(report.data, str):
        return None
    attempts_key = (report.key or "").removesuffix("-report") + "-attempts"
    attempts: Any = by_key[attempts_key].data if attempts_key in by_key else None
    if isinstance(attempts, str):
        try:
            attempts = json.loads(attempts)
        except ValueError:
            attempts = None
    return {
        "status": report_status(report.data),
        "key": report.key,
        "markdown": report.data,
        "attempts": attempts if isinstance(attempts, list) else [],
    }
