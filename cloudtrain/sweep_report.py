"""What a person reads about a sweep: its trials ranked by the objective, the best model.

Built from each trial's run summary (``RunReport.summary``, what its child flow run
returned, or the summary its TrainingError carried), so the Prefect artifacts, ``--json``
and the tests see one thing. A trial that failed, stopped itself (over_budget,
no_progress) or crashed does not fail the sweep: the sweep fails only when no trial
succeeded (or reused an earlier model).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloudtrain.budget import usd
from cloudtrain.config import PipelineConfig
from cloudtrain.report import SUCCESS_STATUSES
from cloudtrain.secrets import masked
from cloudtrain.tracking import TrackingInfo
from cloudtrain.trials import Trial


def objective_value(summary: Mapping[str, Any], objective: str) -> float | None:
    """The trial's final objective, or None when it has none (or NaN or an infinity, a
    diverged trial's: it ranks after every trial with a value, never first)."""
    value = (summary.get("metrics") or {}).get(objective)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def trial_row(trial: Trial, summary: Mapping[str, Any], objective: str) -> dict[str, Any]:
    """One trial as the ranking shows it."""
    status = str(summary.get("status") or "failed")
    skipped = status == "skipped"
    attempts = [] if skipped else list(summary.get("attempts") or [])
    model = summary.get("model") or {}
    error = summary.get("stop_reason") or summary.get("error")
    return {
        "trial": trial.number,
        "values": dict(masked(dict(trial.values))),
        "status": status,
        "objective": objective_value(summary, objective) if status in SUCCESS_STATUSES else None,
        "attempts": len(attempts),
        "reclaims": sum(1 for a in attempts if a.get("outcome") == "interrupted"),
        "cost_usd": None if skipped else summary.get("cost_usd"),
        "run_id": summary.get("run_id"),
        "reused_run_id": summary.get("reused_run_id") if skipped else None,
        "model": model.get("model_archive") or model.get("model_uri"),
        "tracking_run_id": (summary.get("tracking") or {}).get("run_id"),
        "error": None if status in SUCCESS_STATUSES else (error or "the trial failed"),
    }


def ranked(rows: Sequence[Mapping[str, Any]], goal: str) -> list[dict[str, Any]]:
    """Trials with an objective first, best first (ties: lower trial number); then those
    that succeeded without one; then the rest, by trial number."""

    def order(row: Mapping[str, Any]) -> tuple[int, float, int]:
        value = row["objective"]
        if value is not None:
            return (0, -value if goal == "max" else value, row["trial"])
        return (1 if row["status"] in SUCCESS_STATUSES else 2, 0.0, row["trial"])

    return [{"rank": rank, **row} for rank, row in enumerate(sorted(rows, key=order), start=1)]


@dataclass
class SweepReport:
    """A sweep's trials and their summaries, in trial order."""

    config: PipelineConfig
    trials: Sequence[Trial]
    summaries: Sequence[Mapping[str, Any]]
    run_id: str | None = None
    tracking: TrackingInfo | None = None  # the sweep's MLflow run, the trials' parent

    @property
    def rows(self) -> list[dict[str, Any]]:
        sweep = self.config.sweep
        assert sweep is not None
        pairs = zip(self.trials, self.summaries, strict=True)
        return ranked([trial_row(t, s, sweep.objective) for t, s in pairs], sweep.goal)

    @property
    def succeeded(self) -> int:
        return sum(1 for s in self.summaries if s.get("status") in SUCCESS_STATUSES)

    @property
    def status(self) -> str:
        """succeeded when at least one trial succeeded (or reused its model), else failed."""
        return "succeeded" if self.succeeded else "failed"

    @property
    def error(self) -> str | None:
        if self.status == "succeeded":
            return None
        return f"every trial of the sweep failed ({len(self.trials)} of {len(self.trials)})"

    def best(self, rows: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any] | None:
        """The first-ranked trial with an objective value."""
        rows = self.rows if rows is None else rows
        first = next((row for row in rows if row["objective"] is not None), None)
        return dict(first) if first is not None else None

    def summary(self) -> dict[str, Any]:
        """What ``cloudtrain run --json`` prints for a sweep."""
        sweep = self.config.sweep
        assert sweep is not None
        rows = self.rows
        best = self.best(rows)
        costs = [row["cost_usd"] for row in rows if row["cost_usd"] is not None]
        warnings = []
        if self.succeeded and best is None:
            warnings.append(
                f"no trial that succeeded printed {sweep.objective}; none could be ranked"
            )
        return {
            "status": self.status,
            "pipeline": self.config.name,
            "cloud": self.config.cloud,
            "run_id": self.run_id,
            "error": self.error,
            "sweep": {
                "strategy": sweep.strategy,
                "objective": sweep.objective,
                "goal": sweep.goal,
                "trials": len(self.trials),
                "max_parallel": min(sweep.max_parallel, len(self.trials)),
                "succeeded": self.succeeded,
                "failed": len(self.trials) - self.succeeded,
            },
            "best": best,
            "trials": rows,
            "cost_usd": round(sum(costs), 6) if costs else None,
            "tracking": self.tracking.to_dict() if self.tracking else None,
            "warnings": warnings,
        }

    def outcome(self) -> dict[str, Any]:
        """The one-row outcome table ``cloudtrain trigger`` reads the status from."""
        best = self.best()
        return {
            "status": self.status,
            "pipeline": self.config.name,
            "cloud": self.config.cloud,
            "run_id": self.run_id,
            "reused_run_id": None,
            "attempts": sum(row["attempts"] for row in self.rows),
            "error": self.error,
            "trials": len(self.trials),
            "succeeded": self.succeeded,
            "best_trial": best["trial"] if best else None,
        }

    def markdown(self) -> str:
        sweep = self.config.sweep
        assert sweep is not None
        rows, names = self.rows, list(sweep.parameters)
        best = self.best(rows)
        lines = [
            f"# {self.config.name} on {self.config.cloud}: sweep {self.status}",
            "",
            f"{len(self.trials)} trial(s), {sweep.strategy}"
            + (f" (seed {sweep.seed})" if sweep.strategy == "random" else "")
            + f", at most {min(sweep.max_parallel, len(self.trials))} at once; "
            f"{self.succeeded} succeeded. Ranked by `{sweep.objective}` ({sweep.goal}). "
            "Retry, budget and checkpoints apply to each trial on its own; each trial's "
            "run has its own report.",
            "",
            "| rank | trial | "
            + " | ".join(names)
            + f" | status | {sweep.objective} | attempts | reclaims | cost | run |",
            "| " + " | ".join(["---"] * (len(names) + 8)) + " |",
        ]
        for row in rows:
            value = "" if row["objective"] is None else f"{row['objective']:g}"
            cost = "" if row["cost_usd"] is None else usd(row["cost_usd"])
            run = row["run_id"] or row["reused_run_id"] or ""
            lines.append(
                f"| {row['rank']} | {row['trial']} | "
                + " | ".join(f"`{row['values'].get(name)}`" for name in names)
                + f" | {row['status']} | {value} | {row['attempts']} | {row['reclaims']} | "
                f"{cost} | `{run}` |"
            )
        lines.append("")
        if best is not None:
            values = ", ".join(f"`{k}={v}`" for k, v in best["values"].items())
            lines += [
                "## Best",
                "",
                f"Trial {best['trial']} ({values}): {sweep.objective} = {best['objective']:g}.",
                "",
                f"- model: `{best['model']}`",
                "",
            ]
        if self.tracking is not None and self.tracking.run_id:
            where = self.tracking.url or self.tracking.uri
            lines += [
                "## Tracking",
                "",
                f"MLflow run `{self.tracking.run_id}` in experiment "
                f"`{self.tracking.experiment}` ({where}); each trial's run is nested under it.",
                "",
            ]
        failures = [row for row in rows if row["error"]]
        if failures:
            lines += ["## Trials that failed", ""]
            lines += [
                f"- trial {row['trial']} ({row['status']}): "
                + str(row["error"]).replace("\n", " ")[:500]
                for row in failures
            ]
            lines.append("")
        if self.error:
            lines += ["## Error", "", self.error, ""]
        return "\n".join(lines)
