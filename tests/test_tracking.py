"""Experiment tracking: a run read back from a real MLflow store on disk (SQLite).

The flow tests run the local pipeline on Prefect's test server with MLflow's SQLAlchemy
store in the same process (two engines, two SQLite files); the tracker's own tests drive
it with a fake clock against the same kind of store.
"""

from __future__ import annotations

import json
import socket
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudtrain.cli import main
from cloudtrain.config import load_config
from cloudtrain.recovery import Outcome
from cloudtrain.results import AttemptRecord
from cloudtrain.secrets import SecretHyperparameterWarning

#: A script that resumes from its checkpoint: one line per epoch with both metrics.
RESUMING = """
    import json, os, pathlib, time
    hps = json.loads(os.environ["SM_HPS"])
    checkpoint = pathlib.Path(os.environ["SM_CHECKPOINT_DIR"]) / "epoch"
    start = int(checkpoint.read_text()) if checkpoint.exists() else 0
    for epoch in range(start + 1, hps["epochs"] + 1):
        checkpoint.write_text(str(epoch))
        print(f"epoch={epoch} train_loss={1 / epoch:.4f} val_accuracy={epoch / 100:.2f}", flush=True)
        time.sleep(0.05)
    pathlib.Path(os.environ["SM_MODEL_DIR"], "model.txt").write_text("weights")
"""


AZUREML = (
    "azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/s/resourceGroups/g/"
    "providers/Microsoft.MachineLearningServices/workspaces/w"
)


def mlflow_client(uri: str) -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The ``noload`` loader strategy")
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=uri)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the pipeline, on Prefect -----------------------------------------------------------


@pytest.mark.prefect
def test_a_tracked_run_logs_params_tags_curves_over_two_attempts_and_the_model(
    prefect_server: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    from flows.local_training import local_training

    path = write_config(
        RESUMING,
        name="tracked",
        hyperparameters={"epochs": 8, "api_token": "hunter22"},
        metrics=["val_accuracy", "train_loss"],
        compute={"spot": True},
        local={"spot_interruptions": ["^epoch=3 "]},
        tracking={},
    )
    with pytest.warns(SecretHyperparameterWarning, match="api_token"):
        config = load_config(path)
    summary = local_training(config=config)
    assert [a["outcome"] for a in summary["attempts"]] == ["interrupted", "succeeded"]
    tracking = summary["tracking"]
    assert tracking["uri"] == f"sqlite:///{tmp_path / '.cloudtrain' / 'mlflow' / 'mlflow.db'}"
    assert tracking["experiment"] == "tracked" and tracking["warnings"] == []

    client = mlflow_client(tracking["uri"])
    run = client.get_run(tracking["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == tracking["experiment_id"]
    # parameters: the hyperparameters, a secret-looking one masked as the report masks it
    assert run.data.params == {"epochs": "8", "api_token": "**********"}
    tags = run.data.tags
    assert tags["cloudtrain.pipeline"] == "tracked"
    assert tags["cloudtrain.cloud"] == "local" and tags["cloudtrain.route"] == "local"
    assert tags["cloudtrain.run_id"] == summary["run_id"] == tags["prefect.flow_run_id"]
    assert tags["cloudtrain.attempt.1.capacity"] == "spot"
    assert tags["cloudtrain.attempt.1.outcome"] == "interrupted"
    assert tags["cloudtrain.attempt.2.capacity"] == "spot"  # on-demand only for the 3rd
    assert tags["cloudtrain.attempt.2.outcome"] == "succeeded"
    assert tags["cloudtrain.outcome"] == "succeeded" and tags["cloudtrain.attempts"] == "2"
    assert tags["cloudtrain.model_uri"] == summary["model"]["model_uri"]

    # the curve: one step per metric line, increasing across the attempts
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    steps = [point.step for point in history]
    assert steps == sorted(steps) and len(set(steps)) == len(steps) >= 8
    assert history[-1].value == pytest.approx(0.08)
    marks = client.get_metric_history(run.info.run_id, "cloudtrain/attempt")
    starts = {int(point.value): point.step for point in marks}
    assert set(starts) == {1, 2}
    second = [p.value for p in history if p.step >= min(s.step for s in marks if s.value == 2)]
    assert second[0] <= 0.04  # attempt 2 resumed near epoch 3, not from scratch...
    assert second[-1] == pytest.approx(0.08)  # ...and finished the curve
    # final metrics, per-attempt metrics (step = the attempt's number)
    assert run.data.metrics["val_accuracy"] == summary["metrics"]["val_accuracy"]
    assert run.data.metrics["train_loss"] == summary["metrics"]["train_loss"]
    per_attempt = client.get_metric_history(run.info.run_id, "attempt/val_accuracy")
    assert [point.step for point in per_attempt] == [1, 2]

    # the model archive and the attempts, as artifacts
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert artifacts == {"model/model.tar.gz"}
    assert (tmp_path / ".cloudtrain" / "mlflow" / "artifacts").is_dir()
    attempts = {a.path for a in client.list_artifacts(run.info.run_id, "cloudtrain")}
    assert attempts == {"cloudtrain/attempts.json"}

    # the Prefect report links the run
    from test_flow import read_run

    flow_run_id = summary["run_id"]
    _, found, _ = read_run(flow_run_id)
    report = found["tracked-report"].data
    assert "## Tracking" in report and f"MLflow run `{run.info.run_id}`" in report
    assert "mlflow ui --backend-store-uri sqlite:///" in report


@pytest.mark.prefect
def test_tracking_turned_off_logs_nothing(
    prefect_server: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    from flows.local_training import local_training

    write_config("print('val_accuracy=0.5')\n")
    for section in ({"tracking": {"enabled": False}}, {}):
        config = load_config(write_config(name="untracked", metrics=["val_accuracy"], **section))
        summary = local_training(config=config, force=True)
        assert summary["status"] == "succeeded" and summary["tracking"] is None
        assert summary["metrics"] == {"val_accuracy": 0.5}
        assert not (tmp_path / ".cloudtrain" / "mlflow").exists()


@pytest.mark.prefect
def test_a_dead_tracking_server_does_not_fail_the_run(
    prefect_server: str, write_config: Callable[..., Path]
) -> None:
    from flows.local_training import local_training

    uri = f"http://127.0.0.1:{closed_port()}"
    config = load_config(
        write_config(
            "print('val_accuracy=0.5')\n",
            name="server-down",
            metrics=["val_accuracy"],
            tracking={"mlflow_uri": uri},
        )
    )
    state = local_training(config=config, return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert summary["status"] == "succeeded" and summary["metrics"] == {"val_accuracy": 0.5}
    assert summary["tracking"]["run_id"] is None
    (warning,) = summary["tracking"]["warnings"]
    assert warning.startswith(f"MLflow tracking stopped: opening the run failed at {uri}")
    assert warning in summary["warnings"]  # the CLI prints these

    from test_flow import read_run

    _, artifacts, _ = read_run(state.state_details.flow_run_id)
    report = artifacts["server-down-report"].data
    assert f"Not logged to MLflow at `{uri}`" in report
    assert f"> warning: {warning}" in report


# -- refused before anything is created ---------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            AZUREML,
            "tracking.mlflow_uri: azureml: URIs need MLflow's azureml-mlflow plugin, which is "
            "not installed: pip install azureml-mlflow",
        ),
        ("ftp://mlflow.example.com", "tracking.mlflow_uri: 'ftp://mlflow.example.com' is not a "),
        ("arn:aws:s3:::bucket", "tracking.mlflow_uri: 'arn:aws:s3:::bucket' is not a SageMaker"),
        ("https://", "tracking.mlflow_uri: 'https://' names no host"),
        ("azureml://westeurope.api.azureml.ms/x", "is not a workspace's tracking URI"),
        ("https://me:pw@mlflow.example.com", "holds a user name or password"),
    ],
)
def test_a_bad_tracking_uri_is_a_config_error_before_anything_is_made(
    write_config: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    uri: str,
    message: str,
) -> None:
    path = write_config("print('ok')\n", tracking={"mlflow_uri": uri})
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "tracking.mlflow_uri" in err
    assert not (tmp_path / ".cloudtrain").exists()


def test_cloudtrain_trigger_notes_a_plugin_not_installed_here(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """The worker's interpreter is the one that logs: on the CI machine it is a note."""
    import yaml

    from cloudtrain.trigger import check_config

    raw = yaml.safe_load(write_config("print(1)\n", tracking={"mlflow_uri": AZUREML}).read_text())
    assert check_config(raw, "local-training", tmp_path) == [
        "config.tracking.mlflow_uri: azureml: URIs need MLflow's azureml-mlflow plugin, not "
        "installed here; the worker's interpreter must have it"
    ]


def test_the_cli_names_the_mlflow_run(capsys: pytest.CaptureFixture[str]) -> None:
    from cloudtrain.cli import _print_human

    summary = {
        "status": "succeeded",
        "pipeline": "p",
        "cloud": "local",
        "attempts": [],
        "metrics": {},
        "model": None,
        "tracking": {"run_id": "abc", "uri": "sqlite:///w/mlflow.db", "experiment": "p"},
    }
    _print_human(summary, None)
    assert "  mlflow run: abc (sqlite:///w/mlflow.db, experiment p)\n" in capsys.readouterr().out
    summary["tracking"] = {**summary["tracking"], "url": "http://h/#/experiments/1/runs/abc"}
    _print_human(summary, None)
    assert "  mlflow run: abc (http://h/#/experiments/1/runs/abc)\n" in capsys.readouterr().out


def test_plan_stays_offline_with_tracking_and_never_imports_mlflow(
    write_config: Callable[..., Path],
) -> None:
    import json
    import subprocess
    import sys

    path = write_config("print('ok')\n", tracking={"mlflow_uri": "https://mlflow.example.com"})
    code = (
        "import sys, io, contextlib\n"
        "from cloudtrain.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['plan', {str(path)!r}]) == 0\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'sqlalchemy')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.replace("'", '"')) == []


# -- the tracker itself --------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recording:
    """A real MlflowClient whose log_batch calls are counted, and that can be made to fail
    after ``fail_after`` of them (the server going down mid-run)."""

    def __init__(self, client: Any, fail_after: int | None = None) -> None:
        self.client, self.fail_after = client, fail_after
        self.batches: list[int] = []

    def log_batch(self, run_id: str, **kwargs: Any) -> Any:
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise ConnectionError("connection refused")
        self.batches.append(len(kwargs.get("metrics") or []))
        return self.client.log_batch(run_id, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.fixture
def tracked(write_config: Callable[..., Path]) -> Iterator[Callable[..., Any]]:
    from cloudtrain import tracking

    def start(fail_after: int | None = None) -> tuple[Any, Recording, Clock, list[str]]:
        config = load_config(
            write_config(
                "print('ok')\n", metrics=["loss", "acc"], tracking={"experiment": "unit-tests"}
            )
        )
        client = Recording(mlflow_client(tracking.store_uri(config)), fail_after)
        (tracking.local_store(config) / "artifacts").mkdir(parents=True)
        clock, lines = Clock(), []
        tracker = tracking.start(config, "run-1", client=client, clock=clock, log=lines.append)
        assert tracker is not None and tracker.info.run_id is not None
        return tracker, client, clock, lines

    yield start


def record(number: int, outcome: Outcome = Outcome.SUCCEEDED) -> AttemptRecord:
    return AttemptRecord(
        number=number,
        job_name=f"unit-run-1-a{number}",
        spot=True,
        outcome=outcome,
        reason="the script exited 0",
        started_at=None,
        ended_at=None,
        metrics={"loss": 0.1},
        cloud="local",
    )


def test_a_loud_script_is_batched_and_rate_limited(tracked: Callable[..., Any]) -> None:
    tracker, client, clock, lines = tracked()
    tracker.attempt_started(1, True, "local")
    for index in range(3000):  # 6,000 points in one instant: a burst of 1,000 gets through
        tracker.line(f"loss={index} acc=0.5")
    assert client.batches == [0, 0, 1000, 1]  # params, a tag, the burst and the attempt mark
    clock.now += 10.0  # 10 s later: 500 more tokens, and the batch is due
    for index in range(3000, 3600):
        tracker.line(f"loss={index} acc=0.5")
    tracker.attempt_ended(record(1))
    tracker.finish("succeeded", None, None)
    history = client.get_metric_history(tracker.info.run_id, "loss")
    assert len(history) == 750  # 1,000 + 500 tokens, half of them for loss
    assert max(client.batches) <= 1000
    steps = [point.step for point in history]
    assert steps == sorted(steps) and steps[-1] == 3249  # the first 250 lines of the 600
    dropped = 7200 - 1500
    assert tracker.info.warnings == [
        f"{dropped} metric point(s) were not sent to MLflow (more than 50 a second); "
        "the attempts' logs have every line"
    ]
    assert lines[-1] == f"warning: {tracker.info.warnings[0]}"


def test_points_wait_at_most_the_flush_interval(tracked: Callable[..., Any]) -> None:
    tracker, client, clock, _ = tracked()
    tracker.attempt_started(1, True, "local")
    tracker.line("loss=1")
    tracker.line("[cloudtrain] simulated spot reclaim: the output matched '^loss=9 '")
    assert len(client.batches) == 2  # the params, the capacity tag: the points wait
    clock.now += 2.0
    tracker.line("loss=2")
    assert client.batches[-1] == 3  # the attempt mark and both points
    tracker.attempt_ended(record(1, Outcome.INTERRUPTED))
    tracker.attempt_started(2, False, "local")
    tracker.line("loss=3")
    tracker.attempt_ended(record(2))
    history = client.get_metric_history(tracker.info.run_id, "loss")
    assert [(p.step, p.value) for p in history] == [(0, 1.0), (1, 2.0), (2, 3.0)]
    marks = client.get_metric_history(tracker.info.run_id, "cloudtrain/attempt")
    assert sorted((p.step, p.value) for p in marks) == [(0, 1.0), (1, 1.0), (2, 2.0)]


def test_final_metrics_the_stream_missed_and_a_remote_model_are_logged(
    tracked: Callable[..., Any],
) -> None:
    """On a cloud the final metrics come from the job (SageMaker's FinalMetricDataList), and
    the model may be only a URI: both reach the run, and no point is logged twice."""
    from cloudtrain.results import ModelArtifacts

    tracker, client, _, _ = tracked()
    tracker.attempt_started(1, False, "aws")
    tracker.line("loss=0.5")
    tracker.attempt_ended(record(1))
    model = ModelArtifacts("s3://bucket/model.tar.gz", None, None, {"loss": 0.5, "acc": 0.9})
    tracker.finish("succeeded", None, model)
    run = client.get_run(tracker.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["acc"] == 0.9
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 1
    assert run.data.tags["cloudtrain.model_uri"] == "s3://bucket/model.tar.gz"
    assert client.list_artifacts(run.info.run_id, "model") == []


def test_a_store_that_fails_mid_run_stops_tracking_not_training(
    tracked: Callable[..., Any],
) -> None:
    tracker, client, clock, lines = tracked(fail_after=3)
    tracker.attempt_started(1, True, "local")
    tracker.line("loss=1")
    clock.now += 5
    tracker.line("loss=2")  # batch 3 of 3: sent; then the store is gone
    clock.now += 5
    tracker.line("loss=3")
    tracker.line("loss=4")
    tracker.attempt_ended(record(1))  # its flush fails
    tracker.finish("succeeded", None, None)  # nothing raised
    (warning,) = tracker.info.warnings
    assert warning.startswith("MLflow tracking stopped: logging failed at sqlite:///")
    assert "ConnectionError: connection refused" in warning
    assert lines.count(f"warning: {warning}") == 1
    history = client.client.get_metric_history(tracker.info.run_id, "loss")
    assert [p.value for p in history] == [1.0, 2.0]
    assert client.client.get_run(tracker.info.run_id).info.status == "RUNNING"


def test_a_sweep_can_nest_trials_under_a_parent_run(write_config: Callable[..., Path]) -> None:
    from cloudtrain import tracking

    config = load_config(write_config("print('ok')\n", tracking={}))
    parent = tracking.start(config, "sweep")
    assert parent is not None and parent.info.run_id is not None
    trial = tracking.start(
        config, "trial-1", parent_run_id=parent.info.run_id, tags={"sweep.trial": "1"}
    )
    assert trial is not None and trial.info.run_id is not None
    run = mlflow_client(trial.info.uri).get_run(trial.info.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.tags["sweep.trial"] == "1"
    assert trial.info.experiment_id == parent.info.experiment_id


# -- a tracking server over HTTP (tests/mlflow_server.py) ---------------------------------


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[Any]:
    from mlflow_server import MlflowServer

    server = MlflowServer(tmp_path / "mlflow-server").start()
    yield server
    server.stop()


@pytest.mark.prefect
def test_a_run_on_a_tracking_server_is_linked_and_json_stays_json(
    prefect_server: str, write_config: Callable[..., Path], mlflow_server: Any
) -> None:
    from test_cli import cli

    path = write_config(
        RESUMING,
        name="served",
        hyperparameters={"epochs": 3},
        metrics=["val_accuracy"],
        tracking={"mlflow_uri": mlflow_server.url, "experiment": "team"},
    )
    done = cli("run", str(path), "--json", api_url=prefect_server)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # MLflow prints "View run ..." unless told not to
    tracking = summary["tracking"]
    run_id = tracking["run_id"]
    assert tracking["url"] == f"{mlflow_server.url}/#/experiments/1/runs/{run_id}"
    client = mlflow_server.client()  # what the server stored, read back over its REST API
    assert client.get_run(run_id).info.status == "FINISHED"
    history = client.get_metric_history(run_id, "val_accuracy")
    curve = sorted((point.step, point.value) for point in history)
    assert curve == [(0, 0.01), (1, 0.02), (2, 0.03)]
    assert [f.path for f in client.list_artifacts(run_id, "model")] == ["model/model.tar.gz"]
    assert "Encountered unexpected error during resolving request headers" not in done.stderr

    from test_flow import read_run

    _, artifacts, _ = read_run(summary["run_id"])
    assert f"MLflow run [{run_id}]({tracking['url']})" in artifacts["served-report"].data


def test_a_server_that_dies_mid_run_stops_tracking_not_training(
    write_config: Callable[..., Path], mlflow_server: Any
) -> None:
    from cloudtrain import tracking

    config = load_config(
        write_config("print(1)\n", metrics=["loss"], tracking={"mlflow_uri": mlflow_server.url})
    )
    clock, lines = Clock(), []
    tracker = tracking.start(config, "run-1", clock=clock, log=lines.append)
    assert tracker is not None and tracker.info.run_id is not None
    tracker.attempt_started(1, True, "local")
    tracker.line("loss=1")
    clock.now += 5
    tracker.line("loss=2")  # sent
    mlflow_server.stop()
    clock.now += 5
    tracker.line("loss=3")
    tracker.attempt_ended(record(1))  # its flush finds nobody there
    tracker.line("loss=4")  # quiet now: no more waiting on retries
    tracker.finish("succeeded", None, None)
    (warning,) = tracker.info.warnings
    assert warning.startswith(f"MLflow tracking stopped: logging failed at {mlflow_server.url}")
    assert "Connection refused" in warning or "Max retries exceeded" in warning
    from mlflow_server import MlflowServer

    again = MlflowServer(mlflow_server.folder).start()  # the same store, served again
    try:
        history = again.client().get_metric_history(tracker.info.run_id, "loss")
    finally:
        again.stop()
    assert sorted(point.value for point in history) == [1.0, 2.0]


def test_mlflow_call_settings_hold_only_during_cloudtrains_calls(
    tracked: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Short retries and no "View run" on stdout for cloudtrain's calls; the user's own
    values win, and nothing is left in the environment a script would inherit."""
    import os

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "33")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    tracker, client, _, _ = tracked()
    seen: list[tuple[str | None, str | None]] = []
    real = client.log_batch

    def log_batch(run_id: str, **kwargs: Any) -> Any:
        seen.append(
            (
                os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES"),
                os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"],
            )
        )
        return real(run_id, **kwargs)

    client.log_batch = log_batch
    tracker.attempt_started(1, True, "local")
    assert seen == [("2", "33")]
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "33"


def test_a_script_started_during_another_trials_mlflow_call_inherits_none_of_its_settings(
    tracked: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep's trials share the process: while trial A's tracker calls MLflow, trial B's
    attempt may start, and the local backend hands its script this environment."""
    import os

    from cloudtrain import tracking

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "33")  # the user's own: inherited
    tracker, client, _, _ = tracked()
    inherited: list[dict[str, str]] = []
    real = client.log_batch

    def log_batch(run_id: str, **kwargs: Any) -> Any:
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"  # cloudtrain's call
        inherited.append(tracking.script_environment())
        return real(run_id, **kwargs)

    client.log_batch = log_batch
    tracker.attempt_started(1, True, "local")
    assert inherited and "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in inherited[0]
    assert "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT" not in inherited[0]
    assert inherited[0]["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "33"
    assert tracking.script_environment() == dict(os.environ)
