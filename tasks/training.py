"""Stage 4: train, resubmitting lost attempts into the same checkpoint location."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from cloudtrain.backend import Backend
from cloudtrain.config import PipelineConfig
from cloudtrain.contract import ProgressParser
from cloudtrain.report import artifact_key
from cloudtrain.results import ComputeTarget, ResolvedEnvironment, TrainingResult
from cloudtrain.route import Preparer
from cloudtrain.secrets import ResolvedSecrets
from cloudtrain.tracking import RunTracker
from cloudtrain.training import run_training

#: The progress artifact is updated at most this often (each update is an API call).
PROGRESS_UPDATE_SECONDS = 2.0


@task(name="train", cache_policy=NO_CACHE)
def train(
    backend: Backend,
    config: PipelineConfig,
    run_id: str,
    channels: dict[str, str],
    compute: ComputeTarget,
    environment: ResolvedEnvironment,
    secrets: ResolvedSecrets | None = None,
    checkpoint_uri: str | None = None,
    prepare: Preparer | None = None,
    trial: int | None = None,
    tracker: RunTracker | None = None,
) -> TrainingResult:
    """Retries live in the recovery strategy, not in Prefect: a script error is final.
    ``secrets`` hold values: Prefect keeps no task parameters, and their repr names them.
    ``checkpoint_uri``: a crashed run's, when this run resumes it. ``prepare`` readies a
    later leg of a failover route (the flow's stage tasks). ``trial``: the number of the
    sweep's trial this run is (its jobs and artifacts say so). ``tracker``: the run's
    MLflow run, fed each attempt and the script's metrics as they are printed."""
    logger = get_run_logger()
    progress = _Progress(config, artifact_key(config, trial))

    def script_log(line: str) -> None:
        logger.info("| %s", line)
        progress.feed(line)

    result = run_training(
        backend,
        config,
        run_id=run_id,
        channels=channels,
        compute=compute,
        environment=environment,
        log=logger.info,
        script_log=script_log,
        secrets=secrets,
        checkpoint_uri=checkpoint_uri,
        prepare=prepare,
        trial=trial,
        tracker=tracker,
    )
    progress.done()
    return result


class _Progress:
    """A Prefect progress artifact fed by the script's output, while it trains."""

    def __init__(self, config: PipelineConfig, key: str) -> None:
        epochs = config.hyperparameters.get("epochs")
        self.parser = ProgressParser(epochs if isinstance(epochs, int) else None)
        self.artifact: UUID | Any = create_progress_artifact(
            progress=0.0,
            key=f"{key}-progress",
            description=f"{key}: training progress of the running attempt",
        )
        self.last_sent = 0.0
        self.value = 0.0

    def feed(self, line: str) -> None:
        value = self.parser.feed(line)
        if value is None:
            return
        self.value = value
        if time.monotonic() - self.last_sent >= PROGRESS_UPDATE_SECONDS:
            self._send()

    def done(self) -> None:
        self.value = 1.0
        self._send()

    def _send(self) -> None:
        update_progress_artifact(artifact_id=self.artifact, progress=round(self.value * 100, 1))
        self.last_sent = time.monotonic()
