"""The CLI's exit codes and outputs: 0 success, 1 the run failed, 2 invalid input."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import script

from cloudtrain import cli as cli_module
from cloudtrain.cli import main


def cli(*args: str, api_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return subprocess.run(
        [sys.executable, "-m", "cloudtrain.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "compute.max_wait=10", "--set", "compute.max_run=60"],
            "cloudtrain: invalid config: compute.max_wait: must be >= compute.max_run (60)",
        ),
        (
            ["--set", "compute.instance_count=33"],
            "cloudtrain: invalid config: compute.instance_count: the local backend runs every process of the job on this machine, at most 32",
        ),
        (
            [
                "--set",
                "environment.framework=null",
                "--set",
                "environment.image=123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1",
            ],
            "cloudtrain: invalid config: environment.image: bring-your-own-container images run on cloud aws",
        ),
        (
            ["--set", "environment.framework=null", "--set", "environment.builtin=kmeans"],
            "cloudtrain: invalid config: environment.builtin: SageMaker built-in algorithms run only on cloud aws",
        ),
        (
            ["--set", "data.train=s3://bucket/train"],
            "cloudtrain: invalid config: data.train: s3://bucket/train is a cloud URI",
        ),
        (["--cloud", "azure"], "cloudtrain: invalid config: azure: is required for cloud azure"),
        (
            [
                "--cloud",
                "azure",
                "--set",
                "azure.subscription_id=s",
                "--set",
                "azure.resource_group=r",
                "--set",
                "azure.workspace=w",
                "--set",
                "azure.compute=cpu",
                "--set",
                "azure.min_instances=3",
                "--set",
                "azure.max_instances=2",
                "--set",
                "compute.instance_type=Standard_DS3_v2",
            ],
            "cloudtrain: invalid config: azure.min_instances:",
        ),
        (["--cloud", "aws"], "cloudtrain: invalid config: aws: is required for cloud aws"),
        (
            ["--cloud", "aws", "--set", "aws.bucket=b", "--set", f"aws.role={ROLE}"],
            "cloudtrain: invalid config: aws.bucket: 'b' is not a valid S3 bucket name",
        ),
        (
            [
                "--cloud",
                "aws",
                "--set",
                "aws.bucket=my-bucket",
                "--set",
                f"aws.role={ROLE}",
                "--set",
                "compute.instance_type=ml.t2.medium",
            ],
            "cloudtrain: invalid config: compute.instance_type: ml.t2.medium is a notebook "
            "instance type, not one for training jobs",
        ),
        (
            [
                "--cloud",
                "aws",
                "--set",
                "aws.bucket=my-bucket",
                "--set",
                f"aws.role={ROLE}",
                "--set",
                "compute.instance_type=ml.t3.medium",
            ],
            "cloudtrain: invalid config: compute.instance_type: ml.t3.medium is a notebook "
            "instance type, not one for training jobs",
        ),
        (
            ["--set", "nonsense"],
            "cloudtrain: invalid config: --set: 'nonsense' is not key.path=value",
        ),
    ],
)
def test_invalid_input_exits_2_with_one_line(
    args: list[str],
    message: str,
    write_config: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", str(write_config()), *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_argparse_errors_exit_2(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["run", str(write_config()), "--bogus"])
    assert caught.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_an_unknown_cloud_exits_2_naming_the_registered_ones(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(write_config()), "--cloud", "gcp"]) == 2
    assert (
        "cloudtrain: invalid config: cloud: unknown cloud 'gcp'; valid: aws, azure, local"
        in capsys.readouterr().err
    )


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read config" in capsys.readouterr().err


def test_plan_is_offline_and_imports_no_cloud_sdk(digits_config: Callable[..., Path]) -> None:
    path = digits_config(local={"spot_interruptions": ["^epoch=2 "]})
    code = (
        "import sys, json, io, contextlib\n"
        "from cloudtrain.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    assert main(['plan', {str(path)!r}, '--json']) == 0\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'sagemaker', 'azure', 'boto3', 'pandas', 'sklearn'})\n"
        "print(json.dumps({'plan': json.loads(out.getvalue()), 'heavy': heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seen = json.loads(done.stdout)
    assert seen["heavy"] == []
    plan = seen["plan"]
    first = plan["attempts"][0]
    assert first["request"]["command"][-8:] == [
        "--epochs",
        "30",
        "--learning_rate",
        "0.05",
        "--seed",
        "7",
        "--epoch_seconds",
        "0",
    ]
    assert (first["number"], first["capacity"], first["request"]["simulated_reclaim"]) == (
        1,
        "spot",
        "when the output matches '^epoch=2 '",
    )
    assert plan["attempts"][2]["capacity"] == "on-demand"
    assert first["request"]["environment_variables"]["SM_CHANNEL_TRAIN"].endswith("<sha256>")


@pytest.mark.prefect
def test_run_exits_0_and_prints_json(
    prefect_server: str, digits_config: Callable[..., Path]
) -> None:
    path = digits_config(hyperparameters={"epochs": 4})
    done = cli(
        "run",
        str(path),
        "--set",
        "compute.spot=true",
        "--set",
        "local.spot_interruptions=['^epoch=2 ']",
        "--json",
        api_url=prefect_server,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "succeeded"
    assert [a["outcome"] for a in summary["attempts"]] == ["interrupted", "succeeded"]
    assert Path(summary["model"]["model_archive"]).is_file()
    assert "Traceback" not in done.stderr

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # the run is on the server it was pointed at
        flow_run = client.read_flow_run(summary["run_id"])
    assert flow_run.state.is_completed()
    assert {"pipeline:digits-sgd", "cloud:local"} <= set(flow_run.tags)
    assert flow_run.name.startswith("digits-sgd/local/")


@pytest.mark.prefect
def test_run_exits_1_when_training_fails(
    prefect_server: str, write_config: Callable[..., Path]
) -> None:
    path = write_config("import sys; print('boom'); sys.exit(4)\n")
    done = cli("run", str(path), "--json", api_url=prefect_server)
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "failed"
    assert summary["attempts"][0]["outcome"] == "failed"
    assert "exit code 4" in summary["error"] and "boom" in summary["error"]
    human = cli("run", str(path), api_url=prefect_server)
    assert human.returncode == 1
    assert "FAILED in 1 attempt(s)" in human.stdout


@pytest.mark.prefect
def test_run_exits_1_with_no_progress_when_the_script_ignores_its_checkpoint(
    prefect_server: str, write_config: Callable[..., Path]
) -> None:
    path = write_config(
        script("ignores_its_checkpoint"),
        hyperparameters={"epochs": 200, "epoch_seconds": 0.05},
        compute={"spot": True},
        retry={"max_attempts": 4, "on_demand_fallback": False},
        local={"spot_interruptions": ["^epoch=2 "] * 4},
    )
    done = cli("run", str(path), "--json", api_url=prefect_server)
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "no_progress"
    assert [a["resumed"] for a in summary["attempts"]] == [None, False, False]  # 3 of 4
    assert summary["warnings"][0] == (
        "attempt 2 started at epoch 1 although the checkpoint held 2 files: "
        "the script did not resume"
    )
    assert "retry.no_progress_limit: 2" in summary["stop_reason"]
    assert summary["error"].startswith("training stopped after 3 attempt(s): no_progress: ")
    human = cli("run", str(path), api_url=prefect_server)
    assert human.returncode == 1
    assert "STOPPED (no_progress) in 3 attempt(s), 3 interruption(s) (2 started from scratch)" in (
        human.stdout
    )
    assert "warning: attempt 3 started at epoch 1 although" in human.stdout


@pytest.mark.prefect
def test_sigterm_to_the_cli_stops_the_training_script(
    prefect_server: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """A cancelled deployment run or a killed CI job must not leave the script running."""
    import signal
    import time

    pid_file = tmp_path / "script.pid"
    script = f"""
        import os, time
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(120)
    """
    path = write_config(script, local={"grace_period": 1})
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
    deadline = time.monotonic() + 120
    while not pid_file.exists() or not pid_file.read_text():
        assert process.poll() is None and time.monotonic() < deadline, "the script never started"
        time.sleep(0.1)
    script_pid = int(pid_file.read_text())
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(script_pid, 0)
    assert "Traceback" not in stderr, stderr[-2000:]


@pytest.mark.prefect
def test_embedded_server_run_shows_no_shutdown_traceback(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """No PREFECT_API_URL: Prefect's embedded server starts and stops inside the command."""
    path = write_config("print('acc=1.0')\n", metrics=["acc"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false"
    )
    done = subprocess.run(
        [sys.executable, "-m", "cloudtrain.cli", "run", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "acc = 1" in done.stdout
    assert "Starting temporary server" in done.stderr  # it really was the embedded server
    for noise in ("Traceback", "CancelledError", "Error flushing"):
        assert noise not in done.stderr, done.stderr[-3000:]


def test_every_problem_of_a_config_is_printed_one_line_each(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(compute={"max_run": 60, "max_wait": 10}, retry={"max_attempts": 0})
    assert main(["plan", str(path), "--set", "name=Bad_Name"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "cloudtrain: invalid config, 3 problems:"
    assert sorted(line.split(":")[0].strip() for line in err[1:]) == [
        "compute.max_wait",
        "name",
        "retry.max_attempts",
    ]

    assert main(["plan", str(path), "--json"]) == 2
    output = json.loads(capsys.readouterr().out)
    assert output["status"] == "invalid"
    assert {p["field"] for p in output["problems"]} == {"compute.max_wait", "retry.max_attempts"}


def test_the_forms_of_a_clouds_section_come_with_the_configs_problems(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(compute={"max_run": 60, "max_wait": 30})
    args = ["--cloud", "aws", "--set", "aws.bucket=Bad_Bucket", "--set", "aws.role=nope"]
    assert main(["plan", str(path), "--set", "name=Bad_Name", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cloudtrain: invalid config, 4 problems:")
    assert "  name: 'Bad_Name' must be 2 to 40 lowercase" in err
    assert "  compute.max_wait: must be >= compute.max_run (60)" in err
    assert "  aws.role: must be an IAM role ARN" in err
    assert "  aws.bucket: 'Bad_Bucket' is not a valid S3 bucket name" in err


def test_the_clouds_checks_and_other_sections_rules_are_reported_together(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """On a config whose fields are valid: the backend's checks and what other clouds'
    sections forbid there, in one pass."""
    path = write_config(
        compute={"spot": True, "instance_type": "ml.t3.medium"},
        local={"spot_interruptions": [5]},
        aws={"region": "us-east-1"},
    )
    assert main(["plan", str(path), "--cloud", "aws"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "cloudtrain: invalid config, 4 problems:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "aws.role",
        "aws.bucket",
        "compute.instance_type",
        "local.spot_interruptions",
    ]
    assert (
        "simulates spot reclaims on the local backend only; cloud aws reclaims for real" in lines[4]
    )


FAILING_SCRIPT = """
    import sys
    for step in range(30):
        print(f"step {step}")
    print("ValueError: the data has no label column", file=sys.stderr)
    sys.exit(3)
"""


@pytest.mark.prefect
def test_a_failed_run_says_why_and_keeps_the_traceback_in_the_log_file(
    prefect_server: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_config(FAILING_SCRIPT)
    done = cli("run", str(path), api_url=prefect_server)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "exit code 3" in output and "no label column" in output  # the reason
    assert "step 29" in output  # the script's last lines
    assert "Traceback" not in output, output[-3000:]
    logs = list((tmp_path / ".cloudtrain" / "logs").glob("unit-local-*.log"))
    assert len(logs) == 1 and str(logs[0]) in done.stderr  # the message says where
    text = logs[0].read_text()
    assert text.count("Traceback (most recent call last)") >= 1 and "TrainingError" in text
    assert "step 29" in text

    verbose = cli("run", str(path), "--verbose", api_url=prefect_server)
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr


@pytest.mark.prefect
def test_a_config_error_inside_the_flow_is_one_line_without_a_traceback(
    prefect_server: str, write_config: Callable[..., Path]
) -> None:
    done = cli(
        "run", str(write_config()), "--set", "work_dir=/proc/cloudtrain", api_url=prefect_server
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "cloudtrain: invalid config: work_dir: " in done.stderr
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]


def test_only_expected_failures_lose_their_traceback_on_the_terminal(
    write_config: Callable[..., Path],
) -> None:
    import io
    import logging

    from cloudtrain.config import load_config
    from cloudtrain.errors import TrainingError
    from cloudtrain.runlog import run_log

    stream = io.StringIO()
    console = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(console)
    logger = logging.getLogger("test.runlog")
    try:
        with run_log(load_config(write_config())) as path:
            for error in (TrainingError("the script failed"), KeyError("a bug")):
                try:
                    raise error
                except Exception:
                    logger.error("failed: %r", error, exc_info=True)
    finally:
        root.removeHandler(console)
    terminal = stream.getvalue()
    assert terminal.count("Traceback (most recent call last)") == 1  # the bug's only
    assert f"failed: TrainingError('the script failed') (traceback in {path})" in terminal
    assert path is not None and path.read_text().count("Traceback (most recent call last)") == 2


@pytest.mark.prefect
def test_ctrl_c_in_a_terminal_stops_the_run_and_reaches_no_server(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Ctrl-C signals the terminal's whole foreground process group. The embedded server
    must not be in it: the run reports its interruption to that server, then stops it."""
    import signal
    import time

    pid_file = tmp_path / "script.pid"
    script = f"""
        import os, time
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(120)
    """
    path = write_config(script, local={"grace_period": 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
    )
    output = tmp_path / "output.txt"
    with output.open("w") as sink:
        process = subprocess.Popen(  # a process group of its own, like a terminal's job
            [sys.executable, "-m", "cloudtrain.cli", "run", str(path)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while not pid_file.exists() or not pid_file.read_text():
            assert process.poll() is None and time.monotonic() < deadline, output.read_text()
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=120) == 130, output.read_text()[-3000:]
    text = output.read_text()
    assert "cloudtrain: interrupted" in text
    for noise in ("Traceback", "ConnectError", "Error logging to API"):
        assert noise not in text, text[-3000:]


def test_the_collector_waits_while_a_command_starts_and_runs_for_the_long_part(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The console script stops the garbage collector for start-up and turns it back on
    (start-up's objects frozen) before a flow or a followed run: ~0.5 s of a second run."""
    seen: dict[str, bool] = {}

    def main(argv: Any = None) -> int:
        seen["starting"] = gc.isenabled()
        cli_module._long_phase()
        seen["flow"] = gc.isenabled()
        return 3

    monkeypatch.setattr(cli_module, "main", main)
    try:
        with pytest.raises(SystemExit) as exited:
            cli_module.entrypoint()
    finally:
        gc.unfreeze()
        gc.enable()
    assert exited.value.code == 3  # the command's exit code, unchanged
    assert seen == {"starting": False, "flow": True}


def test_called_from_python_the_collector_is_left_alone() -> None:
    frozen = gc.get_freeze_count()
    cli_module._long_phase()  # what a run in a test or a notebook goes through
    assert gc.isenabled() and gc.get_freeze_count() == frozen
