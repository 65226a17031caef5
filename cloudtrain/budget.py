"""The run's budget and deadline: before each attempt, spot, on-demand or stop.

(Being written: the policy below lets every attempt run as the strategy decided.)
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudtrain.config import PipelineConfig
from cloudtrain.recovery import NextAttempt
from cloudtrain.results import AttemptStatus, TrainingResult
from cloudtrain.route import Leg


@dataclass(frozen=True)
class Decision:
    """The attempt to run (None: stop the run with outcome over_budget), and why."""

    step: NextAttempt | None
    reason: str = ""
    notes: tuple[str, ...] = ()


class BudgetPolicy:
    def __init__(self, config: PipelineConfig, started: float) -> None:
        self.config, self.started = config, started

    @classmethod
    def from_config(cls, config: PipelineConfig, *, started: float) -> BudgetPolicy:
        return cls(config, started)

    def decide(self, step: NextAttempt, leg: Leg, result: TrainingResult, now: float) -> Decision:
        return Decision(step)

    def stop_now(
        self, step: NextAttempt, leg: Leg, result: TrainingResult, elapsed: float
    ) -> str | None:
        return None

    def attempt_cost(
        self, leg: Leg, spot: bool, status: AttemptStatus, *, elapsed: float
    ) -> float | None:
        return None
