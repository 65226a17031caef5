"""A sweep's trials as the runs they are: the config each trains, where its records live.

The trials themselves (the ``sweep:`` section, their generation, ``TrialContext``) are in
``cloudtrain.trials``, which the config imports; this module needs the config.
"""

from __future__ import annotations

from cloudtrain.config import PipelineConfig
from cloudtrain.trials import Trial, TrialContext


def trial_config(config: PipelineConfig, trial: Trial) -> PipelineConfig:
    """The config one trial trains: its values over ``hyperparameters``, no sweep. Its
    run is an ordinary run: retry, budget and checkpoints apply to it alone."""
    return config.model_copy(
        update={"hyperparameters": {**config.hyperparameters, **trial.values}, "sweep": None}
    )


def records_name(config: PipelineConfig, trial: TrialContext | None) -> str:
    """The name a run's records and leases are kept under: the pipeline's, and for a
    trial the pipeline's with the trial's key (its values), so trials never read or
    release each other's, and a rerun of the same trial finds its own."""
    return config.name if trial is None else f"{config.name}-trial-{trial.key}"


__all__ = ["records_name", "trial_config"]
