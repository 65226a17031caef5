"""A sweep's run: the ``<cloud>-training`` flow run of a config with ``sweep:``.

Each trial is the same flow again as a child flow run (``trial`` set, its own report,
checkpoints, leases, run record and job names), started from a ``trial`` task on a
thread pool of ``sweep.max_parallel`` workers. A flow called from inside a task is
Prefect 3's way to run subflows concurrently from a sync flow: the task runner copies
the context into each thread, and a subflow called from a task gets a unique tracking
key (a subflow called straight from several threads can be given the same key and be
taken for another's, ``prefect.tasks.Task.create_run``).

The data is uploaded once, before the trials start, so that concurrent trials find it
unchanged instead of uploading the same files together. A failed trial is one row of the
ranking; the sweep fails (``TrainingError``, exit 1) only when every trial did.
"""

from __future__ import annotations

import ctypes
import threading
import traceback
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger, tags, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from cloudtrain import tracking
from cloudtrain.backend import build_backend
from cloudtrain.config import PipelineConfig
from cloudtrain.errors import TrainingError
from cloudtrain.jsonout import finite
from cloudtrain.leases import RunLeases
from cloudtrain.report import OUTCOME_SUFFIX, REPORT_SUFFIX
from cloudtrain.runnable import check_runnable, check_trials
from cloudtrain.sweep import trial_config
from cloudtrain.sweep_report import SweepReport
from cloudtrain.trials import TrialContext, make_trials
from tasks.data import upload_data

#: The sweep's own lease folder is ``<pipeline>-sweep-<cloud>``: a sweep whose process
#: died is marked crashed in Prefect by the next one (its trials resume by their own).
SWEEP_LEASE_SUFFIX = "-sweep"


class TrialThreads:
    """The threads running each sweep's trials, so that an interrupt of the sweep (Ctrl-C,
    SIGTERM, a cancelled run: raised in the sweep's own thread only) reaches them: each
    gets KeyboardInterrupt, and its attempt loop stops the running attempt before letting
    go, as a run's own thread does. Nothing keeps training, or billing, behind the sweep."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[str, set[int]] = {}

    @contextmanager
    def running(self, sweep_run_id: str | None) -> Iterator[None]:
        key, me = sweep_run_id or "", threading.get_ident()
        with self._lock:
            self._threads.setdefault(key, set()).add(me)
        try:
            yield
        finally:
            with self._lock:
                self._threads.get(key, set()).discard(me)

    def interrupt(self, sweep_run_id: str) -> int:
        """KeyboardInterrupt in every thread running a trial of the sweep; how many. It is
        raised there at the thread's next Python instruction (the poll loop wakes every few
        seconds at most)."""
        with self._lock:
            threads = list(self._threads.get(sweep_run_id, ()))
        for ident in threads:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ident), ctypes.py_object(KeyboardInterrupt)
            )
        return len(threads)


#: The running trials of every sweep in this process.
TRIAL_THREADS = TrialThreads()


def run_sweep(
    config: PipelineConfig,
    cloud: str,
    dataframes: Mapping[str, Any] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Run every trial of ``config.sweep``, at most ``max_parallel`` at once; returns the
    sweep summary (``SweepReport.summary``)."""
    from flows.pipeline import (
        _make_work_dir,
        _mark_crashed,
        _tag_flow_run,
        _tracking_log,
        pipeline_tags,
    )

    sweep = config.sweep
    assert sweep is not None
    backend = build_backend(config)
    check_runnable(config, backend)
    check_trials(config, backend)  # every trial's hyperparameters, before anything is created
    trials = make_trials(sweep)
    _make_work_dir(config)
    logger = get_run_logger()
    run_id = flow_run.get_id() or uuid.uuid4().hex
    _tag_flow_run([*pipeline_tags(config), "sweep"])
    parallel = min(sweep.max_parallel, len(trials))
    logger.info(
        "sweep %s on %s, run %s: %d trial(s) (%s), %d at once, ranked by %s (%s)",
        config.name,
        cloud,
        run_id,
        len(trials),
        sweep.strategy,
        parallel,
        sweep.objective,
        sweep.goal,
    )
    leases = RunLeases(config.work_dir, config.name + SWEEP_LEASE_SUFFIX, cloud)
    crashed = leases.crashed()
    _mark_crashed(crashed)
    for old in crashed:
        leases.release(old.run_id)
    lease = leases.take(run_id)
    parent = tracking.start(  # the trials' MLflow runs nest under it
        config,
        run_id,
        tags={
            "cloudtrain.sweep": "true",
            "cloudtrain.sweep.strategy": sweep.strategy,
            "cloudtrain.sweep.objective": sweep.objective,
            "cloudtrain.sweep.goal": sweep.goal,
            "cloudtrain.sweep.trials": str(len(trials)),
        },
        run_name=f"{config.name}/{cloud}/sweep",
        log=_tracking_log,
    )
    if parent is not None and parent.info.run_id:  # a crash ends it KILLED, next sweep
        leases.update(lease, tracking_run_id=parent.info.run_id, tracking_uri=parent.info.uri)
    try:
        with tags(*pipeline_tags(config), "sweep"):
            first = config.on_cloud(config.cloud)
            upload_data(backend, first, dataframes)  # once: the trials find it unchanged
            runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=parallel)
            with runner:
                futures = [
                    runner.submit(
                        run_trial.with_options(task_run_name=f"trial-{trial.number}"),
                        {
                            "cloud": cloud,
                            "config": trial_config(config, trial),
                            "dataframes": dataframes,
                            "force": force,
                            "trial": TrialContext(
                                number=trial.number,
                                trials=len(trials),
                                values=dict(trial.values),
                                sweep_run_id=run_id,
                                tracking_parent=parent.info.run_id if parent else None,
                            ),
                        },
                    )
                    for trial in trials
                ]
                try:
                    summaries = [future.result() for future in futures]
                except BaseException:  # the sweep is interrupted: so is every trial
                    stopped = TRIAL_THREADS.interrupt(run_id)
                    logger.warning("sweep interrupted: stopping %d running trial(s)", stopped)
                    raise
        report = SweepReport(config, trials, summaries, run_id)
        _finish_parent(parent, report)
        publish_sweep_report(report)
    finally:
        if parent is not None:
            parent.close()  # interrupted or failed before the ranking: KILLED
        leases.release(run_id)
    summary = report.summary()
    best = summary["best"]
    if best is not None:
        logger.info(
            "sweep %s: best trial %s, %s = %g; model %s",
            summary["status"],
            best["trial"],
            sweep.objective,
            best["objective"],
            best["model"],
        )
    if report.status != "succeeded":
        error = TrainingError(report.error or "every trial failed")
        error.summary = summary
        raise error
    return summary


def _finish_parent(parent: tracking.RunTracker | None, report: SweepReport) -> None:
    """The sweep's MLflow run ends with its best trial: the objective as
    ``best_<objective>``, which trial and its MLflow run as tags."""
    if parent is None:
        return
    best = report.summary()["best"]
    sweep = report.config.sweep
    assert sweep is not None
    metrics, run_tags = {}, {}
    if best is not None:
        if best["objective"] is not None:
            metrics[f"best_{sweep.objective}"] = float(best["objective"])
        run_tags = {"cloudtrain.best_trial": str(best["trial"])}
        best_run = best.get("tracking_run_id")
        if best_run:
            run_tags["cloudtrain.best_run_id"] = best_run
    parent.finish(report.status, None, None, metrics=metrics, tags=run_tags)
    report.tracking = parent.info


@task(name="trial", cache_policy=NO_CACHE)
def run_trial(
    cloud: str,
    config: PipelineConfig,
    dataframes: Mapping[str, Any] | None,
    force: bool,
    trial: TrialContext,
) -> dict[str, Any]:
    """One trial as a child flow run of the sweep; its summary, whatever became of it: a
    trial that fails (or raises anything short of an interrupt) is a row of the ranking,
    not the end of the sweep."""
    from flows.pipeline import training_flow

    try:
        with TRIAL_THREADS.running(trial.sweep_run_id):
            summary: dict[str, Any] = training_flow(cloud)(
                config=config, dataframes=dataframes, force=force, trial=trial
            )
        return summary
    except TrainingError as exc:
        return exc.summary or {"status": "failed", "error": str(exc)}
    except Exception as exc:  # a config refused in the trial, a cloud error, a bug
        get_run_logger().error(
            "%s failed: %s\n%s", trial.label, exc, "".join(traceback.format_exception(exc))
        )
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}


@task(name="publish-sweep-report", cache_policy=NO_CACHE)
def publish_sweep_report(report: SweepReport) -> str:
    """The ranking as the sweep run's ``<pipeline>-report``, and the one-row
    ``<pipeline>-outcome`` table ``cloudtrain trigger`` reads its status from."""
    config, markdown = report.config, report.markdown()
    create_markdown_artifact(
        key=f"{config.name}{REPORT_SUFFIX}",
        markdown=markdown,
        description=f"{config.name} on {config.cloud}: sweep of {len(report.trials)} trials",
    )
    create_table_artifact(
        key=f"{config.name}-trials",
        table=finite(
            [
                {**{k: v for k, v in row.items() if k != "values"}, **row["values"]}
                for row in report.summary()["trials"]
            ]
        ),
        description="one row per trial, ranked by the objective",
    )
    outcome = report.outcome()
    create_table_artifact(
        key=f"{config.name}{OUTCOME_SUFFIX}",
        table=finite([outcome]),
        description=f"{config.name} on {config.cloud}: sweep {outcome['status']}",
    )
    return markdown
