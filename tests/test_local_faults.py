"""Faults on this machine: the orchestrator killed, scripts that spawn, scripts that shout.

Waits here are bounded polls for something that must happen (a process gone, a run
ended), generous on purpose; no test measures speed (bench/loud_script.py does).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import train_locally

BOUND_SECONDS = 60  # a bounded poll: far above what any of these takes


def gone(pids: list[int], within: float = 30) -> list[int]:
    """The pids still alive after a bounded poll (zombies count as gone)."""
    deadline = time.monotonic() + within
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def train_bounded(path: Path) -> tuple[Any, Any, list[str]]:
    """train_locally in a thread, so a run that never ends fails instead of hanging."""
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(out=train_locally(path)), daemon=True)
    thread.start()
    thread.join(BOUND_SECONDS)
    assert not thread.is_alive(), "the attempt did not end"
    return box["out"]


def read_pids(folder: Path, *names: str) -> list[int]:
    deadline = time.monotonic() + BOUND_SECONDS
    while not all((folder / n).exists() and (folder / n).read_text() for n in names):
        assert time.monotonic() < deadline, f"no pid files {names} in {folder}"
        time.sleep(0.05)
    return [int((folder / n).read_text()) for n in names]


# -- item 9: the script's children ---------------------------------------------------------


def test_a_child_holding_stdout_does_not_keep_the_attempt_open(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    script = f"""
        import subprocess
        child = subprocess.Popen(["sleep", "600"])  # inherits stdout: the pipe stays open
        open({str(tmp_path / "child.pid")!r}, "w").write(str(child.pid))
        print("acc=0.5")
    """
    _, result, _ = train_bounded(write_config(script, metrics=["acc"]))
    assert [a.outcome.value for a in result.attempts] == ["succeeded"]
    assert result.metrics == {"acc": 0.5}
    assert gone(read_pids(tmp_path, "child.pid")) == []


def test_a_daemon_in_a_new_session_does_not_outlive_the_attempt(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    script = f"""
        import os, time
        if os.fork() == 0:  # double fork + setsid, stdout closed: a classic daemon
            os.setsid()
            if os.fork() == 0:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                open({str(tmp_path / "daemon.pid")!r}, "w").write(str(os.getpid()))
                time.sleep(600)
            os._exit(0)
        os.wait()
        while not os.path.exists({str(tmp_path / "daemon.pid")!r}):
            time.sleep(0.01)
        print("done")
    """
    _, result, lines = train_bounded(write_config(script))
    assert [a.outcome.value for a in result.attempts] == ["succeeded"]
    assert gone(read_pids(tmp_path, "daemon.pid")) == []
    assert any("stopping what it left running" in line for line in lines)


def test_max_run_holds_whatever_the_script_spawned(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    script = f"""
        import os, signal, subprocess, time
        child = subprocess.Popen(
            ["python3", "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"],
            stdout=subprocess.DEVNULL, start_new_session=True,
        )
        open({str(tmp_path / "child.pid")!r}, "w").write(str(child.pid))
        open({str(tmp_path / "script.pid")!r}, "w").write(str(os.getpid()))
        time.sleep(600)
    """
    path = write_config(script, compute={"max_run": 2}, local={"grace_period": 1})
    _, error, _ = train_bounded(path)
    assert [a.outcome.value for a in error.result.attempts] == ["timed_out"]
    assert gone(read_pids(tmp_path, "child.pid", "script.pid")) == []


# -- item 10: a loud script ------------------------------------------------------------------


LOUD = """
    import sys
    out = sys.stdout
    for i in range(200_000):
        out.write(f"step {i:07d} " + "x" * 80 + "\\n")
        if i % 20_000 == 0:
            out.write(f"loss={i}\\n")
    out.write("y" * 3_000_000 + "\\n")  # one 3 MB line
    out.write("loss=0.125 acc=0.75\\n")
"""


def test_a_loud_script_logs_in_full_and_sends_prefect_a_bounded_share(
    write_config: Callable[..., Path],
) -> None:
    from cloudtrain.logshare import SHARE_MAX_BYTES

    backend, result, lines = train_bounded(write_config(LOUD, metrics=["loss", "acc"]))
    assert [a.outcome.value for a in result.attempts] == ["succeeded"]
    # every metric line was parsed, the last ones too
    assert result.metrics == {"loss": 0.125, "acc": 0.75}
    attempt = backend._attempt(result.attempts[0].job_name)
    assert attempt.metrics.series["loss"] == [float(i) for i in range(0, 200_000, 20_000)] + [0.125]
    # the log file has every line, whole
    log = backend.root / "runs" / "unit" / result.run_id / "attempts" / "1" / "log.txt"
    logged = log.read_bytes().splitlines()
    assert sum(line.startswith(b"step ") for line in logged) == 200_000
    assert b"y" * 3_000_000 in logged
    assert logged[-1] == b"loss=0.125 acc=0.75"
    # Prefect got a bounded share and a note of what was cut and where the full log is
    shared = [line for line in lines if line.startswith("step ")]
    assert 0 < len(shared) < 200_000
    assert sum(len(line) + 1 for line in lines) < SHARE_MAX_BYTES + 100_000
    notes = [line for line in lines if "not sent here" in line or "were sent here" in line]
    assert notes and all(str(log) in note for note in notes)
    # and memory held only a tail
    assert len(attempt.tail) <= 50 and max(len(line) for line in attempt.tail) <= 500
    assert attempt._pending == []


def test_the_share_is_rate_limited_and_capped() -> None:
    from cloudtrain.logshare import LogShare

    now = [0.0]
    share = LogShare(lines_per_second=10, burst=20, max_bytes=1000, clock=lambda: now[0])
    assert share.allowance() == 20
    sent = [share.take(f"line {i}") for i in range(30)]
    assert sum(line is not None for line in sent) == 20 and share.cut_lines == 10
    assert "10 line(s) of output not sent here" in (share.note("log.txt") or "")
    assert share.note("log.txt") is None  # said once
    now[0] += 1.0
    assert share.allowance() == 10  # refilled at 10 lines/s
    big = "z" * 5000
    assert share.take(big) is None  # over the byte cap
    final = share.note("log.txt", final=True) or ""
    assert final.startswith("[cloudtrain] 20 of 31 lines") and "log.txt" in final


# -- item 8: the orchestrator killed -----------------------------------------------------------


SLOW = """
    import os, sys, time
    ckpt = os.path.join(os.environ["SM_CHECKPOINT_DIR"], "epoch.txt")
    start = int(open(ckpt).read()) if os.path.exists(ckpt) else 0
    print(f"starting at epoch {{start + 1}}", flush=True)
    open(os.path.join({folder!r}, f"script-{{os.getpid()}}.pid"), "w").write(str(os.getpid()))
    for epoch in range(start + 1, 7):
        time.sleep(0.4)
        with open(ckpt + ".tmp", "w") as f:
            f.write(str(epoch))
        os.replace(ckpt + ".tmp", ckpt)
        print(f"epoch={{epoch}}", flush=True)
    print("acc=1.0")
"""


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",  # a new database, a busy machine
    )
    return env


@pytest.mark.prefect
def test_kill_9_of_the_cli_leaves_nothing_behind_and_the_rerun_resumes(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    folder = tmp_path / "pids"
    folder.mkdir()
    path = write_config(SLOW.format(folder=str(folder)), metrics=["acc"], tracking={})
    env = cli_env(tmp_path / "prefect-home")
    command = [sys.executable, "-m", "cloudtrain.cli", "run", str(path), "--json"]
    output = (tmp_path / "cli.out").open("wb")  # a pipe would wait for whatever survives
    cli = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    runs = tmp_path / ".cloudtrain" / "runs" / "unit"
    deadline = time.monotonic() + 240  # the first embedded server on a new database is slow
    while not list(runs.glob("*/checkpoints/epoch.txt")):
        assert cli.poll() is None, (tmp_path / "cli.out").read_text()[-3000:]
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.1)
    (first_run,) = [p.name for p in runs.iterdir()]
    descendants = [p.pid for p in psutil.Process(cli.pid).children(recursive=True)]
    assert len(descendants) >= 2  # the server and the script at least
    os.kill(cli.pid, signal.SIGKILL)
    cli.wait()
    output.close()

    assert gone(descendants) == []
    log = (runs / first_run / "attempts" / "1" / "log.txt").read_text()
    assert f"the orchestrator (pid {cli.pid}) is gone" in log
    crashed_at = int((runs / first_run / "checkpoints" / "epoch.txt").read_text())

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    second_run = summary["run_id"] if "run_id" in summary else None
    assert summary["attempts"][0]["resumed_from_checkpoint_files"] == 1, summary
    logs = [p for p in runs.glob("*/attempts/1/log.txt") if first_run not in str(p)]
    assert len(logs) == 1 and second_run in (None, logs[0].parts[-4])
    assert f"starting at epoch {crashed_at + 1}" in logs[0].read_text()

    state = subprocess.run(
        [sys.executable, "-c", READ_STATE, first_run],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert state.stdout.strip() == "CRASHED", state.stderr[-3000:]

    # Its MLflow run, left RUNNING by the kill, was ended KILLED by the rerun, saying why.
    from test_tracking import mlflow_client

    client = mlflow_client(summary["tracking"]["uri"])
    (crashed,) = client.search_runs(
        [summary["tracking"]["experiment_id"]], f"tags.`cloudtrain.run_id` = '{first_run}'"
    )
    assert crashed.info.status == "KILLED"
    assert f"orchestrator (pid {cli.pid}) died" in crashed.data.tags["cloudtrain.crash"]
    assert client.get_run(summary["tracking"]["run_id"]).info.status == "FINISHED"


READ_STATE = """
import sys
from uuid import UUID
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    print(client.read_flow_run(UUID(sys.argv[1])).state.type.value)
"""


def test_what_the_supervisor_logs_after_the_orchestrator_is_gone_is_masked(
    tmp_path: Path,
) -> None:
    """Once nobody reads the pipe, the supervisor writes the log itself: secrets stay masked."""
    from cloudtrain import secrets, supervisor

    assert supervisor.MASK.decode() == secrets.MASK
    assert supervisor.MIN_MASKED_BYTES == secrets.MIN_MASKED_CHARS
    script = tmp_path / "script.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "def bye(*_):\n"
        "    print('stopping with', os.environ['DB_PASSWORD'], flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "log.txt"
    read_fd, write_fd = os.pipe()
    process = subprocess.Popen(
        [sys.executable, supervisor.__file__, "run", "--grace", "5", "--log", str(log)]
        + ["--drain-fd", str(read_fd), "--mask-env", "DB_PASSWORD", "--", sys.executable]
        + [str(script)],
        env={**os.environ, "DB_PASSWORD": "hunter2-value"},
        stdin=subprocess.PIPE,
        stdout=write_fd,
        stderr=write_fd,
        pass_fds=(read_fd,),
    )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        assert pipe.readline() == b"ready\n"
        assert process.stdin is not None
        process.stdin.close()  # the orchestrator is gone
        assert process.wait(BOUND_SECONDS) == 0
    text = log.read_text()
    assert "stopping with **********" in text
    assert "hunter2" not in text
