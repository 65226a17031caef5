"""Sweeps on a real (temporary) Prefect server: trials as child flow runs, at most
max_parallel at once, each with spot recovery of its own; the ranking; exit codes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sagemaker_lifecycle import lifecycle
from test_aws_training import aws_config

from cloudtrain.config import load_config
from cloudtrain.trigger.outcome import report_from_artifacts

pytestmark = pytest.mark.prefect
__all__ = ["aws_config", "lifecycle"]  # fixtures, imported for pytest

REPO = Path(__file__).resolve().parents[1]
SIX_TRIALS = {
    "parameters": {"learning_rate": [0.01, 0.05, 0.2], "batch_size": [32, 128]},
    "max_parallel": 3,
    "objective": "val_accuracy",
    "goal": "max",
}


def child_runs(parent_id: Any) -> list[Any]:
    """The parent's subflow runs, by trial number."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[parent_id]))
        )
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_task_run_id={"any_": [t.id for t in tasks]})
        )
    return sorted(runs, key=lambda run: int(run.name.rsplit("-", 1)[1]))


def artifacts_of(flow_run_id: Any) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
            sort=ArtifactSort.CREATED_DESC,
        )
    return {artifact.key: artifact for artifact in found}


def assert_trials_in_mlflow(
    summary: dict[str, Any], rows: list[dict[str, Any]], best: dict[str, Any]
) -> None:
    from test_tracking import mlflow_client

    tracked = summary["tracking"]
    client = mlflow_client(tracked["uri"])
    parent = client.get_run(tracked["run_id"])
    assert parent.data.tags["cloudtrain.sweep"] == "true"
    assert parent.data.tags["cloudtrain.best_trial"] == str(best["trial"])
    assert parent.data.metrics["best_val_accuracy"] == best["objective"]
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [tracked["experiment_id"]],
        filter_string=f"tags.mlflow.parentRunId = '{tracked['run_id']}'",
    )
    by_trial = {int(run.data.tags["cloudtrain.trial"]): run for run in children}
    assert sorted(by_trial) == [1, 2, 3, 4, 5, 6]
    for row in rows:
        run = by_trial[row["trial"]]
        assert run.info.run_id == row["tracking_run_id"]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["val_accuracy"] == row["objective"]
        for name, value in row["values"].items():
            assert run.data.params[name] == str(value)  # the trial's own, not the shared
        curve = client.get_metric_history(run.info.run_id, "cloudtrain/attempt")
        assert {point.value for point in curve} == {1, 2}  # both attempts on one curve
    assert parent.data.tags["cloudtrain.best_run_id"] == by_trial[best["trial"]].info.run_id


def most_at_once(runs: list[Any]) -> int:
    """The most runs that were running at the same moment (from their start and end)."""
    events = sorted(
        [(run.start_time, 1) for run in runs] + [(run.end_time, -1) for run in runs],
        key=lambda event: (event[0], event[1]),  # an end before a start at the same instant
    )
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def test_a_six_trial_local_sweep_with_a_reclaim_each_ranks_its_trials(
    prefect_server: str, digits_config: Callable[..., Path]
) -> None:
    from flows.local_training import local_training

    config = load_config(
        digits_config(
            hyperparameters={"epochs": 6},
            local={"spot_interruptions": ["^epoch=3 "]},
            sweep=SIX_TRIALS,
            tracking={},
        )
    )
    state = local_training(config=config, return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert summary["status"] == "succeeded"
    rows = summary["trials"]
    assert len(rows) == 6 and summary["sweep"]["succeeded"] == 6
    for row in rows:  # each trial: reclaimed once, resumed, on its own
        assert (row["status"], row["attempts"], row["reclaims"]) == ("succeeded", 2, 1)
    values = [row["objective"] for row in rows]
    assert values == sorted(values, reverse=True)  # goal max: the best first
    assert [row["rank"] for row in rows] == [1, 2, 3, 4, 5, 6]
    best = summary["best"]
    assert best["trial"] == rows[0]["trial"] and best["objective"] == values[0]
    assert Path(best["model"]).is_file()
    assert best["model"].endswith(f"/{rows[0]['run_id']}/model.tar.gz")

    parent = state.state_details.flow_run_id
    children = child_runs(parent)
    assert [run.name for run in children] == [f"digits-sgd/local/trial-{n}" for n in range(1, 7)]
    assert all(run.state.is_completed() for run in children)
    for number, run in enumerate(children, start=1):
        assert {"pipeline:digits-sgd", "sweep", f"trial:{number}"} <= set(run.tags)
    assert {str(run.id) for run in children} == {row["run_id"] for row in rows}
    assert 1 < most_at_once(children) <= 3  # in parallel, never more than max_parallel

    jobs, checkpoints = set(), set()
    for number, run in enumerate(children, start=1):
        own = artifacts_of(run.id)  # one report and attempts table per trial
        assert f"# digits-sgd on local, trial {number}/6: succeeded" in (
            own[f"digits-sgd-trial-{number}-report"].data
        )
        table = json.loads(own[f"digits-sgd-trial-{number}-attempts"].data)
        jobs |= {row["job"] for row in table}
        assert [row["resumed"] for row in table][1] is True  # from its own checkpoint
        checkpoints.add(config.work_dir / "runs" / "digits-sgd" / str(run.id) / "checkpoints")
    assert len(jobs) == 12 and all(f"-t{n}-a" in " ".join(jobs) for n in range(1, 7))
    assert len(checkpoints) == 6 and all(path.is_dir() for path in checkpoints)

    mine = artifacts_of(parent)
    ranking = mine["digits-sgd-report"].data
    assert "# digits-sgd on local: sweep succeeded" in ranking
    assert f"- model: `{best['model']}`" in ranking
    read = report_from_artifacts(list(mine.values()), "digits-sgd")  # what trigger reads
    assert read is not None and read["status"] == "succeeded"
    assert read["outcome"]["best_trial"] == best["trial"]

    # Every trial in MLflow, nested under the sweep's run, its curve over both attempts.
    assert_trials_in_mlflow(summary, rows, best)

    # The same sweep again: every trial's inputs are unchanged, so each reuses its model.
    again = local_training(config=config)
    assert [row["status"] for row in again["trials"]] == ["skipped"] * 6
    assert again["best"]["model"] == best["model"]
    assert sum(row["attempts"] for row in again["trials"]) == 0
    # A grid grown by one value: only its new trials train (records are keyed by values).
    grown = {
        **SIX_TRIALS,
        "parameters": {"learning_rate": [0.01, 0.05, 0.2, 0.1], "batch_size": [32, 128]},
    }
    config = load_config(
        digits_config(
            hyperparameters={"epochs": 6}, local={"spot_interruptions": ["^epoch=3 "]}, sweep=grown
        )
    )
    statuses = {row["trial"]: row["status"] for row in local_training(config=config)["trials"]}
    assert statuses == {**dict.fromkeys(range(1, 7), "skipped"), 7: "succeeded", 8: "succeeded"}


def smoke_sweep(tmp_path: Path, fail: list[bool], max_parallel: int = 2) -> Path:
    """The smoke script (pure Python, about a second) swept over ``fail``."""
    shutil.copytree(REPO / "examples" / "smoke", tmp_path / "smoke")
    path = tmp_path / "smoke" / "cloudtrain.yaml"
    config = yaml.safe_load(path.read_text())
    config["hyperparameters"]["epoch_seconds"] = 0
    config["local"]["spot_interruptions"] = []  # these trials fail or not by their values
    config["sweep"] = {
        "parameters": {"fail": fail, "learning_rate": [0.02]},
        "max_parallel": max_parallel,
        "objective": "loss",
        "goal": "min",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_failed_trials_do_not_fail_the_sweep_and_exit_0(
    prefect_server: str, tmp_path: Path
) -> None:
    from test_cli import cli

    done = cli("run", str(smoke_sweep(tmp_path, [True, False])), "--json", api_url=prefect_server)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "succeeded" and summary["sweep"]["failed"] == 1
    first, second = summary["trials"]
    assert (first["trial"], first["status"], second["trial"], second["status"]) == (
        2,
        "succeeded",
        1,
        "failed",
    )
    assert "exit code 3" in second["error"] and summary["best"]["trial"] == 2
    human = cli("run", str(smoke_sweep(tmp_path / "h", [True, False])), api_url=prefect_server)
    assert human.returncode == 0
    assert "sweep done, 1 of 2 trial(s) succeeded" in human.stdout
    assert "best: trial 2, loss = " in human.stdout


def test_a_sweep_whose_every_trial_fails_exits_1(prefect_server: str, tmp_path: Path) -> None:
    from test_cli import cli

    done = cli("run", str(smoke_sweep(tmp_path, [True])), "--json", api_url=prefect_server)
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "failed" and summary["best"] is None
    assert summary["error"] == "every trial of the sweep failed (1 of 1)"
    assert summary["trials"][0]["status"] == "failed"


def test_sigterm_to_a_sweep_stops_every_running_trial(
    prefect_server: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """The interrupt lands in the sweep's thread; the trials' threads must hear of it and
    stop their scripts (or jobs), not train on behind a sweep that is gone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = f"""
        import argparse, os, time
        parser = argparse.ArgumentParser()
        parser.add_argument("--which", type=int)
        number = parser.parse_known_args()[0].which
        open(os.path.join({str(tmp_path)!r}, f"trial-{{number}}.pid"), "w").write(str(os.getpid()))
        time.sleep(120)
    """
    path = write_config(
        script,
        metrics=["acc"],
        local={"grace_period": 1},
        sweep={
            "parameters": {"which": [1, 2]},
            "max_parallel": 2,
            "objective": "acc",
            "goal": "max",
        },
    )
    env = {
        **os.environ,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": prefect_server,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "cloudtrain.cli", "run", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid_files = [tmp_path / "trial-1.pid", tmp_path / "trial-2.pid"]
    deadline = time.monotonic() + 180
    while not all(f.exists() and f.read_text() for f in pid_files):
        assert process.poll() is None and time.monotonic() < deadline, "the trials never started"
        time.sleep(0.1)
    pids = [int(f.read_text()) for f in pid_files]
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)  # without the stop: 120 s of sleep first
    assert process.returncode != 0
    time.sleep(0.2)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "stopping 2 running trial(s)" in stderr


def test_an_aws_sweep_on_moto_keeps_spot_and_a_checkpoint_uri_per_trial(
    prefect_server: str,
    aws_config: Callable[..., Path],
    aws: Any,
    lifecycle: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two trials at once on SageMaker (moto): each its own jobs, all on managed spot,
    reclaimed once and resumed into its own checkpoint URI, none reattached to the other's."""
    import boto3
    from sagemaker_lifecycle import COMPLETED, model_archive

    from flows.aws_training import aws_training

    monkeypatch.setattr("cloudtrain.backoff.POLL_INITIAL_SECONDS", 0.0)
    monkeypatch.setattr("cloudtrain.backoff.POLL_MAX_SECONDS", 0.0)
    lifecycle.script("a1", {"status": "Stopped", "secondary": "Interrupted", "training": 60})
    lifecycle.script(
        "a2",
        {
            **COMPLETED,
            "metrics": {"val_accuracy": 0.9},
            "model": model_archive({"model.pkl": b"weights"}),
        },
    )
    path = aws_config()
    raw = yaml.safe_load(path.read_text())
    raw["sweep"] = {
        "parameters": {"optimizer": ["adam", "sgd"]},
        "max_parallel": 2,
        "objective": "val_accuracy",
        "goal": "max",
    }
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    summary = aws_training(config=config)
    assert summary["status"] == "succeeded"
    assert [(row["trial"], row["attempts"], row["reclaims"]) for row in summary["trials"]] == [
        (1, 2, 1),
        (2, 2, 1),
    ]
    sagemaker = boto3.client("sagemaker")
    names = sorted(
        job["TrainingJobName"] for job in sagemaker.list_training_jobs()["TrainingJobSummaries"]
    )
    assert len(names) == 4 and len({name.rsplit("-", 2)[1] for name in names}) == 2
    uris: dict[str, set[str]] = {}
    for name in names:
        job = sagemaker.describe_training_job(TrainingJobName=name)
        assert job["EnableManagedSpotTraining"] is True, name
        trial = name.rsplit("-", 2)[1]
        uris.setdefault(trial, set()).add(job["CheckpointConfig"]["S3Uri"])
        optimizer = json.loads(job["HyperParameters"]["optimizer"])
        assert optimizer == ("adam" if trial == "t1" else "sgd")
    assert all(len(found) == 1 for found in uris.values())  # one location per trial...
    assert uris["t1"] != uris["t2"]  # ...and its own
