"""What a person reads about a run: the markdown report, the attempts table, the summary.

One value, ``RunReport``, holds what the stages produced, so the Prefect artifacts,
``--json`` and the tests all see the same thing. Nothing secret goes in: the config
summary names no credentials, secrets appear as their references, and secret-looking
hyperparameters are masked (``cloudtrain.secrets``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudtrain.budget import usd
from cloudtrain.config import PipelineConfig
from cloudtrain.recovery import capacity_label
from cloudtrain.results import (
    ChannelData,
    ComputeTarget,
    ModelArtifacts,
    ResolvedEnvironment,
    TrainingResult,
)
from cloudtrain.route import ReadyLeg
from cloudtrain.secrets import masked
from cloudtrain.sync import human_size
from cloudtrain.tracking import TrackingInfo
from cloudtrain.trials import TrialContext

#: The run's artifacts are keyed ``<pipeline><suffix>``, so runs of a pipeline line up in
#: the UI; ``cloudtrain trigger`` reads them back by these keys.
REPORT_SUFFIX = "-report"  # the markdown report, for people
ATTEMPTS_SUFFIX = "-attempts"  # one row per attempt
OUTCOME_SUFFIX = "-outcome"  # one row: the status and what CI needs, as data
#: The statuses of a run that did its job; any other (failed, over_budget, no_progress)
#: is a failure, for ``cloudtrain run`` and ``cloudtrain trigger`` alike.
SUCCESS_STATUSES = ("succeeded", "skipped")


def attempts_table(result: TrainingResult) -> list[dict[str, Any]]:
    """One row per attempt, for a Prefect table artifact."""
    budgeted = any(attempt.budget_note for attempt in result.attempts)
    return [
        {
            "attempt": attempt.number,
            "job": attempt.job_name,
            "cloud": attempt.cloud,
            "capacity": capacity_label(attempt.spot),
            "outcome": attempt.outcome.value,
            "reason": attempt.reason,
            "seconds": attempt.duration_seconds,
            "resumed from checkpoint files": attempt.resumed_from,
            "checkpoint from": attempt.checkpoint_from,
            "progress": _progress(attempt.progress_start, attempt.progress_end),
            "resumed": attempt.resumed,
            "cost USD": attempt.cost_usd,
            **({"budget": attempt.budget_note} if budgeted else {}),
            **{f"metric {name}": value for name, value in attempt.metrics.items()},
        }
        for attempt in result.attempts
    ]


@dataclass
class RunReport:
    """What one pipeline run produced so far; the stages fill it in order."""

    config: PipelineConfig
    channels: Mapping[str, ChannelData] = field(default_factory=dict)
    compute: ComputeTarget | None = None
    environment: ResolvedEnvironment | None = None
    result: TrainingResult | None = None
    artifacts: ModelArtifacts | None = None
    error: str | None = None
    decision: str | None = None  # why it trained, or why it did not
    reused: Mapping[str, Any] | None = None  # the earlier run's summary, when it did not
    legs: list[ReadyLeg] = field(default_factory=list)  # later legs of a route, as reached
    trial: TrialContext | None = None  # the sweep's trial this run is
    tracking: TrackingInfo | None = None  # the MLflow run, when tracking is on

    @property
    def key(self) -> str:
        return artifact_key(self.config, self.trial.number if self.trial else None)

    @property
    def status(self) -> str:
        """succeeded, failed, skipped, or the outcome the run stopped itself with
        (over_budget, no_progress)."""
        if self.reused is not None:
            return "skipped"
        if self.artifacts is not None and self.error is None:
            return "succeeded"
        return self.result.stopped if self.result and self.result.stopped else "failed"

    def markdown(self) -> str:
        return markdown_report(self)

    def outcome(self) -> dict[str, Any]:
        """The run's outcome as one table row, for CI to read as data instead of parsing
        the report's wording. ``run_id`` is this run's training run (None when it
        skipped training), ``reused_run_id`` the run whose model a skipped run kept,
        ``attempts`` how many training attempts this run made."""
        return {
            "status": self.status,
            "pipeline": self.config.name,
            "cloud": self.config.cloud,
            "run_id": self.result.run_id if self.result else None,
            "reused_run_id": self.reused.get("run_id") if self.reused is not None else None,
            "attempts": len(self.result.attempts) if self.result else 0,
            "error": self.error,
        }

    def summary(self) -> dict[str, Any]:
        """What ``cloudtrain run --json`` prints: status, attempts, metrics, model location."""
        trial = self._trial()
        if self.reused is not None:  # nothing changed: the earlier run's model and metrics
            return {
                **self.reused,
                **trial,
                "status": "skipped",
                "skip_reason": self.decision,
                "reused_run_id": self.reused.get("run_id"),
                "data": {name: data.to_dict() for name, data in self.channels.items()},
            }
        result, artifacts = self.result, self.artifacts
        return {
            "status": self.status,
            "pipeline": self.config.name,
            "cloud": self.config.cloud,
            "run_id": result.run_id if result else None,
            "error": self.error,
            "data": {name: data.to_dict() for name, data in self.channels.items()},
            "compute": self.compute.to_dict() if self.compute else None,
            "environment": self.environment.to_dict() if self.environment else None,
            "checkpoint_uri": result.checkpoint_uri if result else None,
            "route": self.config.route,
            "legs": {
                f"{ready.leg.index + 1}:{ready.leg.cloud}": {
                    "data": {name: data.to_dict() for name, data in ready.data.items()},
                    "compute": ready.compute.to_dict(),
                    "environment": ready.environment.to_dict(),
                    "checkpoint_uri": ready.checkpoint_uri,
                }
                for ready in self.legs
            },
            "attempts": [attempt.to_dict() for attempt in result.attempts] if result else [],
            "checkpoint_copies": [copy.to_dict() for copy in result.copies] if result else [],
            "cost_usd": result.cost_usd if result else None,
            "cost_per_cloud": result.cost_per_cloud() if result else {},
            "warnings": [
                *(result.warnings if result else []),
                *(self.tracking.warnings if self.tracking else []),
            ],
            "stop_reason": (result.stop_reason or None) if result else None,
            "started_from_scratch": result.started_from_scratch if result else 0,
            "metrics": dict(artifacts.metrics) if artifacts else (result.metrics if result else {}),
            "model": artifacts.to_dict() if artifacts else None,
            "decision": self.decision,
            **trial,
            "tracking": self.tracking.to_dict() if self.tracking else None,
        }

    def _trial(self) -> dict[str, Any]:
        if self.trial is None:
            return {}
        return {"trial": {"number": self.trial.number, "values": dict(self.trial.values)}}


def artifact_key(config: PipelineConfig, trial: int | None) -> str:
    """The prefix of a run's artifact keys: the pipeline's, ``<pipeline>-trial-<N>`` for a
    sweep's trial (one set per trial; the sweep has the pipeline's)."""
    return config.name if trial is None else f"{config.name}-trial-{trial}"


def markdown_report(run: RunReport) -> str:
    """The run report: config summary, data, attempts with outcome and reason, metrics, model."""
    config, channels, environment = run.config, run.channels, run.environment
    result, artifacts, error = run.result, run.artifacts, run.error
    status = run.status
    trial = run.trial
    lines = [
        f"# {config.name} on {config.cloud}"
        + (f", {trial.label}" if trial else "")
        + f": {status}",
        "",
    ]
    if trial is not None:
        values = ", ".join(f"`{name}={value}`" for name, value in trial.values.items())
        lines += [f"Sweep trial {trial.number} of {trial.trials}: {values}.", ""]
    lines += [
        "## Config",
        "",
        "| setting | value |",
        "| --- | --- |",
        f"| entry point | `{config.code.entry_point}` in `{config.code.source_dir}` |",
        f"| environment | {config.environment.kind}: "
        f"{getattr(config.environment, config.environment.kind)}"
        + (
            f" {config.environment.framework_version}"
            if config.environment.framework_version
            else ""
        )
        + " |",
        f"| compute | {config.compute.instance_type} x{config.compute.instance_count}, "
        f"{capacity_label(config.compute.spot)}, max_run {config.compute.max_run} s"
        + _distribution_cell(config)
        + " |",
        f"| retry | {config.retry.strategy}, max {config.retry.max_attempts} attempts, "
        f"on-demand fallback {'on' if config.retry.on_demand_fallback else 'off'} |",
    ]
    if len(config.route) > 1:
        types = config.compute.instance_types
        lines.append(
            "| route | "
            + " -> ".join(
                f"{cloud} ({types.get(cloud, config.compute.instance_type)})"
                for cloud in config.route
            )
            + f", {config.retry.reclaims_per_cloud} reclaim(s) per cloud |"
        )
    if config.budget is not None:
        budget = config.budget
        parts = [f"max cost ${budget.max_cost:g}"] if budget.max_cost is not None else []
        parts += [f"deadline {budget.deadline} s"] if budget.deadline is not None else []
        if budget.restart_overhead is not None:
            parts.append(f"restart overhead {budget.restart_overhead} s")
        lines.append(f"| budget | {', '.join(parts) or 'none'} |")
    lines += [
        "| hyperparameters | "
        + (", ".join(f"`{k}={v}`" for k, v in masked(config.hyperparameters).items()) or "none")
        + " |",
    ]
    if config.secrets:
        lines.append(
            "| secrets | "
            + ", ".join(f"`{name}` from {ref.describe()}" for name, ref in config.secrets.items())
            + " |"
        )
    lines.append("")
    if run.decision:
        verb = "Skipped training" if run.reused is not None else "Trained"
        lines += ["## Retraining", "", f"{verb}: {run.decision}", ""]
    if run.reused is not None:
        model = run.reused.get("model") or {}
        lines += [
            f"Model reused from run `{run.reused.get('run_id')}`: "
            f"`{model.get('model_archive') or model.get('model_uri')}`",
            "",
        ]
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_metric(v)} |" for k, v in (run.reused.get("metrics") or {}).items()]
        lines.append("")
    if run.compute is not None:
        compute = run.compute
        lines += [f"Compute: {compute.name}, {compute.instance_type} x{compute.instance_count}", ""]
        lines += [f"> warning: {warning}" for warning in compute.warnings]
        lines += [""] if compute.warnings else []
    if environment is not None:
        lines += [f"Environment: {environment.description}", ""]
        lines += [f"> warning: {warning}" for warning in environment.warnings]
        lines += [""] if environment.warnings else []
    if channels:
        lines += [
            "## Data",
            "",
            "| channel | files | size | copied | digest |",
            "| --- | --- | --- | --- | --- |",
        ]
        for data in channels.values():
            copied = "unchanged" if data.unchanged else f"{data.copied_files} files"
            mode = config.input_mode(data.channel)  # how the job reads it, when set
            name = f"{data.channel} ({mode})" if mode else data.channel
            lines.append(
                f"| {name} | {data.files} | {human_size(data.bytes)} | {copied} | "
                f"`{data.digest[:12]}` |"
            )
        lines.append("")
    if result is not None:
        lines += [
            "## Attempts",
            "",
            "| # | cloud | capacity | outcome | reason | seconds | progress | checkpoint | cost |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for attempt in result.attempts:
            reason = attempt.reason.replace("|", "\\|")
            source = f"copied from `{attempt.checkpoint_from}`" if attempt.checkpoint_from else ""
            files = (
                "not counted" if attempt.resumed_from is None else f"{attempt.resumed_from} file(s)"
            )
            lines.append(
                f"| {attempt.number} | {attempt.cloud} | {capacity_label(attempt.spot)} | "
                f"{attempt.outcome.value} | {reason} | {attempt.duration_seconds} | "
                f"{_progress(attempt.progress_start, attempt.progress_end)}"
                f"{' (did not resume)' if attempt.resumed is False else ''} | "
                f"{files}{' ' + source if source else ''} | {_usd(attempt.cost_usd)} |"
            )
        restarted = result.started_from_scratch
        lines += [
            "",
            f"Checkpoints: `{result.checkpoint_uri}` ({result.interruptions} interruption(s)"
            + (
                f"; {restarted} attempt(s) started from scratch)"
                if restarted
                else " resumed from it)"
            ),
            "",
        ]
        for copy in result.copies:
            lines.append(
                f"- checkpoint copied {copy.source_cloud} -> {copy.target_cloud}: "
                f"{copy.files} file(s), {human_size(copy.bytes)}, sha256 `{copy.digest[:16]}`, "
                f"`{copy.source}` -> `{copy.target}`"
            )
        for attempt in result.attempts:
            if attempt.budget_note:
                lines.append(f"- budget, attempt {attempt.number}: {attempt.budget_note}")
        costs = result.cost_per_cloud()
        if costs:
            lines.append(
                "- estimated cost: "
                + ", ".join(f"{cloud} {_usd(usd)}" for cloud, usd in costs.items())
                + (f", total {_usd(result.cost_usd)}" if len(costs) > 1 else "")
            )
        lines += [f"> warning: {warning}" for warning in result.warnings]
        if result.stopped:
            lines.append(f"> stopped: {result.stopped}: {result.stop_reason}")
        lines.append("")
    if artifacts is not None:
        lines += ["## Metrics", "", "| metric | final value |", "| --- | --- |"]
        lines += [f"| {name} | {_metric(value)} |" for name, value in artifacts.metrics.items()]
        lines += ["", "## Model", "", f"- model: `{artifacts.model_uri}`"]
        if artifacts.model_archive:
            lines.append(f"- archive: `{artifacts.model_archive}`")
        lines += [f"- {name}: `{link}`" for name, link in artifacts.links.items()]
        lines.append("")
        lines += [f"> warning: {warning}" for warning in artifacts.warnings]
        lines += [""] if artifacts.warnings else []
        if artifacts.cost:
            lines += ["## Time and cost", "", "| item | value |", "| --- | --- |"]
            lines += [
                f"| {name.replace('_', ' ')} | {value} |" for name, value in artifacts.cost.items()
            ]
            lines.append("")
    if run.tracking is not None:
        lines += tracking_section(run.tracking)
    if error:
        lines += ["## Error", "", error, ""]
    return "\n".join(lines)


def tracking_section(info: TrackingInfo) -> list[str]:
    """Where the MLflow run is: a link when the store has a UI at a known address."""
    lines = ["## Tracking", ""]
    if info.run_id is not None:
        run = f"[{info.run_id}]({info.url})" if info.url else f"`{info.run_id}`"
        lines.append(
            f"MLflow run {run} in experiment `{info.experiment}` "
            f"(id {info.experiment_id}) at `{info.uri}`"
        )
        if info.uri.startswith("sqlite:///"):
            lines.append(f"(browse it with `mlflow ui --backend-store-uri {info.uri}`)")
    else:
        lines.append(f"Not logged to MLflow at `{info.uri}`.")
    lines.append("")
    lines += [f"> warning: {warning}" for warning in info.warnings]
    lines += [""] if info.warnings else []
    return lines


def _progress(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return ""
    return f"{start:.0%} -> {end:.0%}"


def _usd(value: float | None) -> str:
    return "" if value is None else usd(value)


def _metric(value: Any) -> str:
    """A metric as ``:g`` writes it; a reused run's record keeps NaN/inf as strings."""
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _distribution_cell(config: PipelineConfig) -> str:
    """``, torchrun x2 per host`` when the job has a distribution; nothing otherwise."""
    distribution = config.compute.distribution
    if not distribution.enabled:
        return ""
    return f", {distribution.type} x{distribution.processes_per_host} per host"
