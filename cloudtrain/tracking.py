"""Experiment tracking: each training run logged as one MLflow run, while it trains.

``start(config, run_id)`` opens the MLflow run (parameters, tags); the attempt loop tells
the tracker when an attempt starts and ends and hands it the script's output lines, from
which the declared metrics are parsed and sent in batches, rate-limited, on one step axis
for the whole run: a resumed attempt continues the curve where the reclaimed one left it,
and the metric ``cloudtrain/attempt`` says which attempt each stretch came from.
``finish`` logs the final metrics, the model and the outcome.

Tracking never fails a run: a store that cannot be reached (at the start, or mid-run)
is one warning in the log, the report and the summary, and the tracker goes quiet for
the rest of the run, so a dead server does not stall each line on MLflow's retries.

The store is ``tracking.mlflow_uri`` or, by default, a SQLite store in
``work_dir/mlflow`` (MLflow 3 refuses the plain ``./mlruns`` file store); ``store_uri``
is the one answer to "where", for the script's own MLflow calls too (issue 13).
MLflow (~2 s to import) is imported only here, inside functions, when a tracked run
starts: never by ``cloudtrain --help``, ``plan`` or an untracked run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from cloudtrain.config import PipelineConfig, TrackingConfig
from cloudtrain.contract import MetricParser
from cloudtrain.errors import ConfigError
from cloudtrain.recovery import capacity_label
from cloudtrain.results import AttemptRecord, ModelArtifacts, TrainingResult
from cloudtrain.secrets import masked
from cloudtrain.supervisor import NOTE

#: A metric point costs one token; the bucket holds a burst and refills at this rate, so
#: a loud script sends at most ~POINTS_PER_SECOND points to the store, however much it
#: prints (the full output stays in the attempt's log).
POINTS_PER_SECOND = 50.0
BURST_POINTS = 1000
#: Points are sent when this many are waiting (MLflow's log_batch takes 1,000 metrics)...
BATCH_POINTS = 1000
#: ...or when the oldest has waited this long (checked as lines arrive), and at the end
#: of every attempt.
FLUSH_SECONDS = 2.0
#: MLflow settings for cloudtrain's own calls, where the user did not set them: its HTTP
#: client retries 7 times with backoff by default (minutes against a dead server; these
#: make it 3 tries in about 2 s), and it prints "View run ..." to stdout when a run on a
#: server ends (which would break ``cloudtrain run --json``).
CALL_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
#: MLflow keeps tag values up to 8,000 characters; an attempt's reason can be longer.
TAG_CHARS = 5000


def store_uri(config: PipelineConfig) -> str:
    """The tracking URI a run logs to: ``tracking.mlflow_uri``, else the local SQLite store."""
    tracking = config.tracking or TrackingConfig()
    if tracking.mlflow_uri is not None:
        return tracking.mlflow_uri
    return f"sqlite:///{local_store(config) / 'mlflow.db'}"


def local_store(config: PipelineConfig) -> Path:
    """The default store's folder: ``mlflow.db`` and ``artifacts/``."""
    return config.work_dir.resolve() / "mlflow"


def experiment_name(config: PipelineConfig) -> str:
    return (config.tracking.experiment if config.tracking else None) or config.name


def is_enabled(config: PipelineConfig) -> bool:
    return config.tracking is not None and config.tracking.enabled


def check_plugin(config: PipelineConfig) -> None:
    """A tracking URI whose MLflow plugin is not installed here: ConfigError naming
    ``tracking.mlflow_uri`` with the pip line. Reads installed packages' metadata
    (MLflow's own lookup, its ``mlflow.tracking_store`` entry points); imports nothing."""
    if not is_enabled(config):
        return
    assert config.tracking is not None
    plugin = config.tracking.plugin
    if plugin is None:
        return
    scheme = (config.tracking.mlflow_uri or "").partition(":")[0].lower()
    names = {entry.name for entry in metadata.entry_points(group="mlflow.tracking_store")}
    if scheme not in names:
        raise ConfigError(
            "tracking.mlflow_uri",
            f"{scheme}: URIs need MLflow's {plugin} plugin, which is not installed: "
            f"pip install {plugin}",
        )


@dataclass
class TrackingInfo:
    """Where a run was logged, for the report and ``--json``."""

    uri: str
    experiment: str
    experiment_id: str | None = None
    run_id: str | None = None
    url: str | None = None  # the run's page, when the store has a UI at a known address
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "experiment": self.experiment,
            "experiment_id": self.experiment_id,
            "run_id": self.run_id,
            "url": self.url,
            "warnings": list(self.warnings),
        }


def start(
    config: PipelineConfig,
    run_id: str,
    *,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
    log: Callable[[str], None] = print,
    client: Any = None,
    clock: Callable[[], float] = time.monotonic,
) -> RunTracker | None:
    """Open the MLflow run of training run ``run_id``; None when tracking is off.

    ``parent_run_id`` nests it under another MLflow run (a sweep's trials under the
    sweep), ``tags`` are added to cloudtrain's own, ``run_name`` replaces
    ``<pipeline>/<cloud>/<run id>``. ``client`` replaces the MlflowClient
    (tests). A store that cannot be reached gives a tracker that only carries the warning.
    """
    if not is_enabled(config):
        return None
    tracker = RunTracker(config, run_id, log=log, clock=clock)
    tracker.open(client, parent_run_id, dict(tags or {}), run_name)
    return tracker


def _mlflow_client(uri: str) -> Any:
    """MLflow's client for ``uri``; MLflow is imported here, on first use."""
    with warnings.catch_warnings():
        # MLflow 3.17's SQL store uses a loader SQLAlchemy 2.1 deprecates (at import).
        warnings.filterwarnings("ignore", message=r"The ``noload`` loader strategy")
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=uri)
    _quiet_sagemaker_headers()
    if uri.startswith("arn:"):
        # sagemaker-mlflow routes each request by the process-wide tracking URI (its
        # header provider reads mlflow.get_tracking_uri(), not the client's).
        mlflow.set_tracking_uri(uri)
    return client


def end_crashed(uri: str, run_id: str, reason: str, *, log: Callable[[str], None] = print) -> None:
    """End the MLflow run of a run whose orchestrator died (still RUNNING) as KILLED,
    saying why. A store that cannot be reached gives one warning: it never stops the run
    that found the crash."""
    try:
        with _call_settings():
            client = _mlflow_client(uri)
            if client.get_run(run_id).info.status != "RUNNING":
                return
            client.set_tag(run_id, "cloudtrain.crash", reason)
            client.set_terminated(run_id, "KILLED")
    except Exception as exc:  # broad, as in RunTracker._guard: never fails the new run
        log(f"warning: the crashed run's MLflow run {run_id} could not be ended: {exc}")
        return
    log(f"MLflow run {run_id} ended KILLED: {reason}")


class RunTracker:
    """One training run's MLflow run; every call is a no-op once the store failed."""

    def __init__(
        self,
        config: PipelineConfig,
        run_id: str,
        *,
        log: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config, self.run_id = config, run_id
        self.settings = config.tracking or TrackingConfig()
        self.info = TrackingInfo(uri=store_uri(config), experiment=experiment_name(config))
        self.log, self.clock = log, clock
        self.client: Any = None
        self.parser = MetricParser(config.metrics)
        self.step = -1  # the last step used: one per output line that held a metric
        self.attempt_step = 0  # the first step of the running attempt
        self.pending: list[tuple[str, float, int, int]] = []  # key, value, ms, step
        self.oldest: float | None = None  # when the oldest pending point arrived
        self.tokens = float(BURST_POINTS)
        self.refilled = clock()
        self.dropped = 0
        self.last_sent: dict[str, float] = {}
        self.finished = False

    @property
    def active(self) -> bool:
        return self.client is not None and self.info.run_id is not None and not self.finished

    # -- the run's life ------------------------------------------------------------------

    def open(
        self,
        client: Any,
        parent_run_id: str | None,
        extra_tags: dict[str, str],
        run_name: str | None = None,
    ) -> None:
        with self._guard("opening the run"):
            self.client = client if client is not None else self._client()
            experiment_id = self._experiment()
            tags = {**self._run_tags(), **extra_tags}
            if parent_run_id:
                tags["mlflow.parentRunId"] = parent_run_id
            run = self.client.create_run(
                experiment_id,
                tags=tags,
                run_name=run_name or f"{self.config.name}/{self.config.cloud}/{self.run_id[:8]}",
            )
            self.info.experiment_id = experiment_id
            self.info.run_id = run.info.run_id
            self.info.url = _run_url(self.info.uri, experiment_id, run.info.run_id)
            self._batch(params=masked(self.config.hyperparameters))
            self.log(
                f"MLflow run {run.info.run_id} in experiment {self.info.experiment!r} "
                f"({self.info.uri})"
            )

    def attempt_started(self, number: int, spot: bool, cloud: str) -> None:
        """The points that follow come from attempt ``number``."""
        self.flush()
        self.attempt_step = self.step + 1  # where its first metric line will be
        self._queue("cloudtrain/attempt", float(number), self.attempt_step)
        self._batch(tags={f"cloudtrain.attempt.{number}.capacity": capacity_label(spot)})

    def line(self, text: str) -> None:
        """One line of the script's output: its declared metrics become points."""
        if not self.active or text.startswith(NOTE):  # cloudtrain's own, not the script's
            return
        found = self.parser.feed(text)
        if not found:
            return
        self.step += 1
        for name, value in found.items():
            if self._take_token():
                self._queue(name, value, self.step)
            else:
                self.dropped += 1
        if len(self.pending) >= BATCH_POINTS or (
            self.oldest is not None and self.clock() - self.oldest >= FLUSH_SECONDS
        ):
            self.flush()

    def attempt_ended(self, record: AttemptRecord) -> None:
        """Send what is pending; the attempt's own metrics (``attempt/<name>``, step = its
        number) and tags."""
        if self.step > self.attempt_step:  # it printed metrics: mark where it stopped too
            self._queue("cloudtrain/attempt", float(record.number), self.step)
        self.flush()
        metrics = {f"attempt/{name}": value for name, value in record.metrics.items()}
        if record.duration_seconds is not None:
            metrics["attempt/seconds"] = float(record.duration_seconds)
        if record.cost_usd is not None:
            metrics["attempt/cost_usd"] = float(record.cost_usd)
        prefix = f"cloudtrain.attempt.{record.number}"
        self._batch(
            metrics=[(name, value, _now_ms(), record.number) for name, value in metrics.items()],
            tags={
                f"{prefix}.capacity": capacity_label(record.spot),
                f"{prefix}.cloud": record.cloud,
                f"{prefix}.job": record.job_name,
                f"{prefix}.outcome": record.outcome.value,
                f"{prefix}.reason": record.reason,
            },
        )

    def finish(
        self,
        status: str,
        result: TrainingResult | None,
        artifacts: ModelArtifacts | None,
        *,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """The final metrics, the model, the outcome; ends the MLflow run. Once.
        ``metrics`` and ``tags`` are a run's without a result of its own (a sweep's: its
        best trial's objective, which trial that was)."""
        if self.finished:
            return
        self.flush()
        if self.dropped:
            self._warn(
                f"{self.dropped} metric point(s) were not sent to MLflow (more than "
                f"{POINTS_PER_SECOND:g} a second); the attempts' logs have every line"
            )
        final = dict(artifacts.metrics) if artifacts else (result.metrics if result else {})
        final.update(metrics or {})
        step = max(self.step, 0)
        now = _now_ms()
        points = [
            (key, float(value), now, step)
            for key, value in final.items()
            if self.last_sent.get(key) != value
        ]
        run_tags = {
            "cloudtrain.outcome": status,
            "cloudtrain.attempts": str(len(result.attempts) if result else 0),
            **(tags or {}),
        }
        if artifacts is not None:
            run_tags["cloudtrain.model_uri"] = artifacts.model_uri
        self._batch(metrics=points, tags=run_tags)
        if artifacts is not None:
            self._log_model(artifacts)
        if result is not None and self.active:
            with self._guard("logging the attempts"):
                attempts = [attempt.to_dict() for attempt in result.attempts]
                self.client.log_dict(
                    self.info.run_id, {"attempts": attempts}, "cloudtrain/attempts.json"
                )
        if self.active:
            with self._guard("ending the run"):
                self.client.set_terminated(
                    self.info.run_id, "FINISHED" if status == "succeeded" else "FAILED"
                )
        self.finished = True

    def close(self) -> None:
        """End a run left open by an error that skipped ``finish`` (status KILLED)."""
        if self.active:
            self.flush()
            with self._guard("ending the run"):
                self.client.set_terminated(self.info.run_id, "KILLED")
        self.finished = True

    # -- sending ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Send the pending points, up to BATCH_POINTS a request."""
        while self.pending and self.active:
            batch, self.pending = self.pending[:BATCH_POINTS], self.pending[BATCH_POINTS:]
            self._batch(metrics=batch)
        self.pending.clear()
        self.oldest = None

    def _queue(self, key: str, value: float, step: int) -> None:
        if not self.active:
            return
        if self.oldest is None:
            self.oldest = self.clock()
        self.pending.append((key, value, _now_ms(), step))

    def _take_token(self) -> bool:
        now = self.clock()
        self.tokens = min(
            float(BURST_POINTS), self.tokens + (now - self.refilled) * POINTS_PER_SECOND
        )
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def _batch(
        self,
        *,
        metrics: list[tuple[str, float, int, int]] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """One log_batch: metrics as (key, value, timestamp in ms, step)."""
        if not self.active:
            return
        from mlflow.entities import Metric, Param, RunTag

        with self._guard("logging"):
            self.client.log_batch(
                self.info.run_id,
                metrics=[Metric(key, value, ms, step) for key, value, ms, step in metrics or []],
                params=[Param(k, str(v)) for k, v in (params or {}).items()],
                tags=[RunTag(k, str(v)[:TAG_CHARS]) for k, v in (tags or {}).items()],
            )
            for key, value, _, _ in metrics or []:
                self.last_sent[key] = value

    def _log_model(self, artifacts: ModelArtifacts) -> None:
        archive = Path(artifacts.model_archive) if artifacts.model_archive else None
        if not self.active or not self.settings.log_model or not archive or not archive.is_file():
            return  # the model stays where it is; its URI is the tag cloudtrain.model_uri
        with self._guard("uploading the model"):
            self.client.log_artifact(self.info.run_id, str(archive), "model")

    # -- the store ---------------------------------------------------------------------------

    def _client(self) -> Any:
        if self.settings.mlflow_uri is None:
            (local_store(self.config) / "artifacts").mkdir(parents=True, exist_ok=True)
        return _mlflow_client(self.info.uri)

    def _experiment(self) -> str:
        name = self.info.experiment
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.settings.mlflow_uri is None:  # else the server decides where artifacts go
            location = (local_store(self.config) / "artifacts").as_uri()
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except Exception:
            found = self.client.get_experiment_by_name(name)  # made meanwhile (a sweep)
            if found is None:
                raise
            return str(found.experiment_id)

    def _run_tags(self) -> dict[str, str]:
        config = self.config
        return {
            "cloudtrain.pipeline": config.name,
            "cloudtrain.cloud": config.cloud,
            "cloudtrain.route": "-".join(config.route),
            "cloudtrain.run_id": self.run_id,
            "cloudtrain.instance_type": config.compute.instance_type,
            "cloudtrain.instance_count": str(config.compute.instance_count),
            "cloudtrain.spot": str(config.compute.spot).lower(),
            "mlflow.source.name": config.code.entry_point,
            "mlflow.source.type": "JOB",
        }

    # -- failures ----------------------------------------------------------------------------

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Any failure of the store: one warning, and tracking stops for this run.
        Broad on purpose: MLflow, requests, SQLAlchemy and the plugins each raise their
        own, and none of them may fail a training run."""
        try:
            with _call_settings():
                yield
        except Exception as exc:  # broad: see the docstring
            message = " ".join(str(exc).split())[:300] or type(exc).__name__
            self._warn(
                f"MLflow tracking stopped: {what} failed at {self.info.uri} "
                f"({type(exc).__name__}: {message}); training goes on, and the report and "
                "summary keep every metric"
            )
            self.client = None

    def _warn(self, warning: str) -> None:
        self.info.warnings.append(warning)
        self.log(f"warning: {warning}")


class _CallSettings:
    """MLflow reads CALL_SETTINGS from the environment at each call: they are set only
    while cloudtrain's own calls run (where the user did not set them), so a script
    started meanwhile does not inherit them; counted, as a sweep's trials call from
    several threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.added: list[str] = []

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self.lock:
            if self.users == 0:
                self.added = [name for name in CALL_SETTINGS if name not in os.environ]
                os.environ.update({name: CALL_SETTINGS[name] for name in self.added})
            self.users += 1
        try:
            yield
        finally:
            with self.lock:
                self.users -= 1
                if self.users == 0:
                    for name in self.added:
                        os.environ.pop(name, None)

    def environ(self) -> dict[str, str]:
        """The environment without the settings cloudtrain's running calls added."""
        with self.lock:
            hidden = set(self.added) if self.users else set()
            return {name: value for name, value in os.environ.items() if name not in hidden}


_call_settings = _CallSettings()


def script_environment() -> dict[str, str]:
    """``os.environ`` as a script started now inherits it: a sweep's trials share this
    process, so another trial's MLflow call may be running, its settings set."""
    return _call_settings.environ()


class _SageMakerHeaderNoise(logging.Filter):
    """sagemaker-mlflow (installed with the SageMaker SDK) adds a request-header provider
    to every MLflow request, which fails with IndexError unless the process-wide URI is a
    SageMaker ARN; MLflow logs that as a warning per request and sends the request."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Encountered unexpected error during resolving request headers")
            and message.endswith("list index out of range")
        )


def _quiet_sagemaker_headers() -> None:
    logger = logging.getLogger("mlflow.tracking.request_header.registry")
    if not any(isinstance(f, _SageMakerHeaderNoise) for f in logger.filters):
        logger.addFilter(_SageMakerHeaderNoise())


def _run_url(uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI of an http(s) server; the other stores have none
    at an address known here (the local store: ``mlflow ui``; Azure ML: the studio)."""
    if uri.lower().startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return None


def _now_ms() -> int:
    return int(time.time() * 1000)


__all__ = [
    "RunTracker",
    "TrackingInfo",
    "check_plugin",
    "end_crashed",
    "experiment_name",
    "is_enabled",
    "local_store",
    "script_environment",
    "start",
    "store_uri",
]
