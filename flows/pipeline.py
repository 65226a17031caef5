"""The pipeline every flow runs: upload, compute, environment, train, artifacts.

The per-cloud flows differ only in the cloud they pin, so the composition lives here
once, and ``training_flow(cloud)`` makes the flow of any registered cloud (the files
``flows/<cloud>_training.py`` name the built-in ones for deployments). A run builds its
backend once and hands it to every stage. The report is published whether training
succeeds or not: a failed run shows its attempts and why each ended.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast
from uuid import UUID

from prefect import Flow, Task, flow, get_run_logger, tags
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from cloudtrain import tracking
from cloudtrain.backend import build_backend
from cloudtrain.backends import backend_class
from cloudtrain.budget import first_attempt_refusal
from cloudtrain.changes import RunRecords
from cloudtrain.config import PipelineConfig
from cloudtrain.errors import ConfigError, TrainingError
from cloudtrain.leases import Lease, RunLeases
from cloudtrain.planning import strategy_for
from cloudtrain.recovery import Outcome
from cloudtrain.report import RunReport
from cloudtrain.results import TrainingResult
from cloudtrain.route import Leg, Preparer, ReadyLeg, route_legs
from cloudtrain.runnable import check_runnable
from cloudtrain.secrets import (
    ResolvedSecrets,
    is_secret_name,
    redacting_logs,
    redactor_for,
    resolve,
    secret_hyperparameter_warning,
)
from cloudtrain.sweep import records_name
from cloudtrain.trials import TrialContext
from tasks.artifacts import collect_artifacts, publish_report
from tasks.changes import check_for_changes
from tasks.compute import ensure_compute
from tasks.data import upload_data
from tasks.environment import resolve_environment
from tasks.training import train

#: Said of every flow, after its cloud's own description.
FLOW_NOTES = (
    "``dataframes`` adds channels from pandas DataFrames (stored as parquet) when the flow "
    "is called from Python. Training is skipped, and the last successful run's model "
    "reused, when data, code and config are unchanged, unless ``force``. With a ``sweep`` in "
    "the config, the run is the sweep: each trial runs this flow as a child flow run "
    "(``trial`` set), at most ``sweep.max_parallel`` at once, and the run reports the ranking."
)


T = TypeVar("T", bound=Task[Any, Any])

#: One flow per cloud and backend class: a cloud registered anew gets a new flow.
_FLOWS: dict[tuple[str, type[Any]], Flow[..., dict[str, Any]]] = {}


def training_flow(cloud: str) -> Flow[..., dict[str, Any]]:
    """The ``<cloud>-training`` flow: the pipeline with ``cloud`` pinned."""
    backend = backend_class(cloud)
    made = _FLOWS.get((cloud, backend))
    if made is None:
        made = _FLOWS[(cloud, backend)] = _make_flow(cloud, backend)
    return made


def _make_flow(cloud: str, backend: type[Any]) -> Flow[..., dict[str, Any]]:
    def pipeline(
        config: PipelineConfig,
        dataframes: Mapping[str, Any] | None = None,
        force: bool = False,
        trial: TrialContext | None = None,
    ) -> dict[str, Any]:
        return run_pipeline(config, cloud, dataframes, force, trial)

    pipeline.__name__ = pipeline.__qualname__ = f"{cloud}_training"
    return flow(
        name=f"{cloud}-training",
        description=f"{backend.description}\n\n{FLOW_NOTES}",
        flow_run_name=lambda: run_name(cloud),
        validate_parameters=True,
    )(pipeline)


def run_name(cloud: str) -> str:
    """``digits-sgd/local/2026-11-29T03:00``: pipeline, cloud and scheduled start; a
    sweep's trial is ``digits-sgd/local/trial-3``."""
    parameters = flow_run.get_parameters() or {}
    config = parameters.get("config")
    name = config.get("name") if isinstance(config, dict) else getattr(config, "name", "?")
    trial = parameters.get("trial")
    number = trial.get("number") if isinstance(trial, dict) else getattr(trial, "number", None)
    if number is not None:
        return f"{name}/{cloud}/trial-{number}"
    started = flow_run.scheduled_start_time
    return f"{name}/{cloud}/{started.strftime('%Y-%m-%dT%H:%M')}"


def pipeline_tags(config: PipelineConfig) -> list[str]:
    """``pipeline:<name>``, ``cloud:<first cloud>``, and ``route:aws-azure`` for a route."""
    route = [f"route:{'-'.join(config.route)}"] if len(config.route) > 1 else []
    return [f"pipeline:{config.name}", f"cloud:{config.cloud}", *route]


def run_pipeline(
    config: PipelineConfig,
    cloud: str,
    dataframes: Mapping[str, Any] | None = None,
    force: bool = False,
    trial: TrialContext | None = None,
) -> dict[str, Any]:
    """Run the five stages for ``cloud``; returns the run summary (``RunReport.summary``).
    A config with a sweep runs its trials (``flows.sweep``), each back through here with
    ``trial`` set."""
    if config.cloud != cloud:  # the flow of another cloud runs there alone
        config = config.on_cloud(cloud)
    if config.sweep is not None and trial is None:
        from flows.sweep import run_sweep

        return run_sweep(config, cloud, dataframes, force)
    backend = build_backend(config)
    check_runnable(config, backend)  # refuse bad input, on every cloud of the route, first
    legs = route_legs(config, first=backend)
    # Values for the references each backend passes itself (the others resolve in the job).
    secrets = {
        leg.cloud: resolve(config.secrets, getattr(leg.backend, "secret_kinds", ())) for leg in legs
    }
    for leg in {leg.cloud: leg for leg in legs}.values():
        verify_job_secrets = getattr(leg.backend, "verify_job_secrets", None)
        if config.secrets and verify_job_secrets is not None:  # the ones the job will read
            verify_job_secrets(leg.config)
    values = {name: value for leg in secrets.values() for name, value in leg.values.items()}
    with redacting_logs(redactor_for(values, config.hyperparameters)):
        return _run_stages(config, cloud, legs, secrets, dataframes, force, trial)


def _run_stages(
    config: PipelineConfig,
    cloud: str,
    legs: list[Leg],
    secrets: Mapping[str, ResolvedSecrets],
    dataframes: Mapping[str, Any] | None,
    force: bool,
    trial: TrialContext | None = None,
) -> dict[str, Any]:
    _make_work_dir(config)
    logger = get_run_logger()
    secret_looking = [name for name in config.hyperparameters if is_secret_name(name)]
    if secret_looking:
        logger.warning(secret_hyperparameter_warning(secret_looking))
    run_id = flow_run.get_id() or uuid.uuid4().hex
    _tag_flow_run([*pipeline_tags(config), *([f"trial:{trial.number}"] if trial else [])])
    where = " -> ".join(leg.label for leg in legs) if len(legs) > 1 else cloud
    logger.info(
        "pipeline %s on %s, run %s%s",
        config.name,
        where,
        run_id,
        f", {trial.label} of sweep run {trial.sweep_run_id}: {_values(trial)}" if trial else "",
    )
    # A trial's leases are its own: a concurrent trial is not a crash to mark or resume.
    leases = RunLeases(config.work_dir, records_name(config, trial), cloud)
    crashed = leases.crashed()
    _mark_crashed(crashed)
    try:
        return _stages(config, legs, secrets, run_id, dataframes, force, leases, crashed, trial)
    finally:
        leases.release(run_id)


def _stages(
    config: PipelineConfig,
    legs: list[Leg],
    secrets: Mapping[str, ResolvedSecrets],
    run_id: str,
    dataframes: Mapping[str, Any] | None,
    force: bool,
    leases: RunLeases,
    crashed: list[Lease],
    trial: TrialContext | None = None,
) -> dict[str, Any]:
    cloud = config.cloud
    logger = get_run_logger()
    lease = leases.take(run_id)
    run = RunReport(config, trial=trial)
    first = legs[0]
    backend, leg_config = first.backend, first.config
    named = _trial_named(trial)
    with tags(*pipeline_tags(config)):
        _refuse_unaffordable(run, first, run_id)  # before any data moves or compute exists
        run.channels = named(upload_data)(backend, leg_config, dataframes)
        records = records_name(config, trial)
        decision, current = named(check_for_changes)(config, run.channels, force, records)
        run.decision = decision.reason
        if not decision.train and decision.previous is not None:
            run.reused = decision.previous
            named(publish_report)(run)
            return run.summary()
        run.compute = named(ensure_compute)(backend, leg_config)
        run.environment = named(resolve_environment)(backend, leg_config, run.compute)
        uris = {name: data.uri for name, data in run.channels.items()}
        fingerprint = current.digest if current is not None else None
        resumed = leases.resumable(crashed, fingerprint)
        checkpoint_uri = resumed.checkpoint_uri if resumed else first.checkpoint_location(run_id)
        for old in crashed:
            leases.release(old.run_id)  # handled: marked crashed, resumed at most once
        if resumed is not None:
            logger.info(
                "resuming run %s, whose orchestrator (pid %s) died: checkpoints in %s",
                resumed.run_id,
                resumed.pid,
                checkpoint_uri,
            )
        lease = leases.update(lease, fingerprint=fingerprint, checkpoint_uri=checkpoint_uri)
        tracker = tracking.start(
            config,
            run_id,
            parent_run_id=trial.tracking_parent if trial else None,
            tags={**_prefect_tags(), **_trial_tags(trial)},
            run_name=f"{config.name}/{config.cloud}/trial-{trial.number}" if trial else None,
            log=_tracking_log,
        )
        if tracker is not None and tracker.info.run_id:  # a crash ends it KILLED, next run
            leases.update(lease, tracking_run_id=tracker.info.run_id, tracking_uri=tracker.info.uri)
        try:
            timed = named(train).with_options(timeout_seconds=training_budget_seconds(config))
            run.result = timed(
                backend,
                config,
                run_id,
                uris,
                run.compute,
                run.environment,
                secrets[cloud],
                checkpoint_uri,
                _leg_preparer(run, run_id, secrets, dataframes),
                trial.number if trial else None,
                tracker,
            )
        except TrainingError as exc:
            run.result, run.error = exc.result, str(exc)
            _finish_tracking(run, tracker)
            named(publish_report)(run)
            exc.summary = run.summary()
            raise
        except BaseException:
            if tracker is not None:  # cancelled, timed out: the MLflow run ends KILLED
                tracker.close()
            raise
        final = legs[run.result.attempts[-1].leg]
        try:
            run.artifacts = named(collect_artifacts)(final.backend, final.config, run.result)
        finally:
            _finish_tracking(run, tracker)
        named(publish_report)(run)
    summary = run.summary()
    if current is not None:
        RunRecords(config.work_dir).save_success(records, cloud, current, summary)
    return summary


def _values(trial: TrialContext) -> str:
    return ", ".join(f"{name}={value}" for name, value in trial.values.items())


def _trial_named(trial: TrialContext | None) -> Callable[[T], T]:
    """A stage task as this run calls it: in a trial, its task runs are named
    ``<task>-trial-<N>``, so every log line on the terminal says which trial it is."""

    def named(stage: T) -> T:
        if trial is None:
            return stage
        renamed = stage.with_options(task_run_name=f"{stage.name}-trial-{trial.number}")
        return cast(T, renamed)

    return named


def _finish_tracking(run: RunReport, tracker: tracking.RunTracker | None) -> None:
    """Final metrics, model and outcome to the MLflow run; the report links it."""
    if tracker is None:
        return
    tracker.finish(run.status, run.result, run.artifacts)
    run.tracking = tracker.info


def _trial_tags(trial: TrialContext | None) -> dict[str, str]:
    """A trial's MLflow run says which trial of which sweep it is, and its swept values."""
    if trial is None:
        return {}
    return {
        "cloudtrain.trial": str(trial.number),
        "cloudtrain.sweep_run_id": trial.sweep_run_id or "",
        **{f"cloudtrain.swept.{name}": str(value) for name, value in trial.values.items()},
    }


def _prefect_tags() -> dict[str, str]:
    """The MLflow run's way back to the Prefect flow run."""
    tags = {"prefect.flow_run_id": str(flow_run.get_id() or "")}
    url = flow_run.ui_url
    if url:
        tags["prefect.flow_run_url"] = url
        tags["mlflow.note.content"] = f"Prefect flow run: {url}"
    return {key: value for key, value in tags.items() if value}


def _tracking_log(line: str) -> None:
    logger = get_run_logger()
    (logger.warning if line.startswith("warning: ") else logger.info)(line)


def _refuse_unaffordable(run: RunReport, first: Leg, run_id: str) -> None:
    """A budget that cannot pay for the first attempt stops the run before stage 1, with
    outcome over_budget and its report: nothing uploaded, no compute, no job."""
    config = run.config
    refusal = first_attempt_refusal(config, first, strategy_for(config).first_attempt())
    if refusal is None:
        return
    run.result = TrainingResult(
        run_id,
        first.checkpoint_location(run_id),
        stopped=Outcome.OVER_BUDGET.value,
        stop_reason=refusal,
    )
    error = TrainingError(
        f"training stopped before its first attempt: over_budget: {refusal}", run.result
    )
    run.error = str(error)
    publish_report(run)
    error.summary = run.summary()
    raise error


def _leg_preparer(
    run: RunReport,
    run_id: str,
    secrets: Mapping[str, ResolvedSecrets],
    dataframes: Mapping[str, Any] | None,
) -> Preparer:
    """Stages 1 to 3 of a later leg of the route, as the same Prefect tasks as the first's,
    run when the route reaches it; the report shows what each did."""

    def prepare(leg: Leg) -> ReadyLeg:
        data = upload_data(leg.backend, leg.config, dataframes)
        compute = ensure_compute(leg.backend, leg.config)
        environment = resolve_environment(leg.backend, leg.config, compute)
        ready = ReadyLeg(
            leg=leg,
            channels={name: channel.uri for name, channel in data.items()},
            compute=compute,
            environment=environment,
            checkpoint_uri=leg.checkpoint_location(run_id),
            secrets=dict(secrets[leg.cloud].values),
            data=data,
        )
        run.legs.append(ready)
        return ready

    return prepare


#: Time on top of the attempts' own limits for uploads, image pulls and polling.
TRAINING_SLACK_SECONDS = 15 * 60


def training_budget_seconds(config: PipelineConfig) -> float:
    """The train task's own timeout: every attempt at its max_wait, plus slack. When it
    fires, the running attempt is stopped (see cloudtrain.training)."""
    per_attempt = config.compute.effective_max_wait + TRAINING_SLACK_SECONDS
    return float(config.retry.max_attempts * per_attempt)


def _make_work_dir(config: PipelineConfig) -> None:
    """cloudtrain's own folder first: one that cannot be made is the config's problem,
    said in one line before any data moves."""
    try:
        config.work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            "work_dir", f"cannot make {config.work_dir}: {exc.strerror or exc}"
        ) from exc


def _mark_crashed(crashed: list[Lease]) -> None:
    """Flow runs whose orchestrator died stay RUNNING in Prefect (and their MLflow runs
    in MLflow): say they crashed."""
    if not crashed:
        return
    for lease in crashed:
        if lease.tracking_run_id and lease.tracking_uri:
            tracking.end_crashed(
                lease.tracking_uri,
                lease.tracking_run_id,
                f"its orchestrator (pid {lease.pid}) died without ending the run",
                log=_tracking_log,
            )
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    logger = get_run_logger()
    with get_client(sync_client=True) as client:
        for lease in crashed:
            try:
                state = client.read_flow_run(UUID(lease.run_id)).state
            except (ObjectNotFound, ValueError):
                continue  # another Prefect database, or not a flow run's id
            if state is None or state.is_final():
                continue
            message = f"its orchestrator (pid {lease.pid}) died without ending the run"
            client.set_flow_run_state(UUID(lease.run_id), Crashed(message=message), force=True)
            logger.warning("flow run %s marked crashed: %s", lease.run_id, message)


def _tag_flow_run(wanted: list[str]) -> None:
    """Tag the run itself, however it was started (CLI, deployment, Python)."""
    run_id = flow_run.get_id()
    current = set(flow_run.get_tags() or [])
    if run_id is None or set(wanted) <= current:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(UUID(run_id), tags=sorted(current | set(wanted)))
