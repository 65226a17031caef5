"""The reused local Prefect server (cloudtrain/local_server.py, server_process.py): runs
start it once and reuse it, ``cloudtrain server status|stop|start``, the idle exit, stale
state replaced without orphans, concurrent starts sharing one server, and the ways to
keep it out (``--no-server-reuse``, CLOUDTRAIN_SERVER_REUSE=0, PREFECT_API_URL).

Every test has its own CLOUDTRAIN_HOME and PREFECT_HOME in a tmp folder; each server
started here is stopped by process id at the end, also when a test failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path

import psutil
import pytest

from cloudtrain import local_server, server_process
from cloudtrain.cli import main

WAIT_SECONDS = 300  # a new database on a busy 2-core machine: generous, never a measure


def server_processes(home: Path) -> list[psutil.Process]:
    """Server processes of this home (there must never be more than one)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if any(p.endswith("server_process.py") for p in command) and str(home) in command:
            found.append(process)
    return found


class Home:
    """A CLOUDTRAIN_HOME for one test and the environment of the commands it runs."""

    def __init__(self, root: Path, **env: str) -> None:
        self.server = root / "home" / "server"
        (root / "prefect-home").mkdir(parents=True)  # Prefect makes its home, not its parents
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
        self.env.update(
            CLOUDTRAIN_HOME=str(root / "home"),
            CLOUDTRAIN_SERVER_REUSE="1",
            PREFECT_HOME=str(root / "prefect-home"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            # the embedded server's start on a new database, on a busy machine
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
            **env,
        )

    def command(self, *args: str, **env: str) -> list[str]:
        return [sys.executable, "-m", "cloudtrain.cli", *args]

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS * 2,
        )

    def state(self) -> dict[str, object]:
        state = server_process.read_state(self.server)
        assert state is not None
        return state

    def status(self) -> dict[str, object]:
        done = self.run("server", "status", "--json")
        return dict(json.loads(done.stdout))

    def start(self) -> dict[str, object]:
        done = self.run("server", "start")
        assert done.returncode == 0, done.stdout + done.stderr
        return self.state()

    def cleanup(self) -> None:
        local_server.stop(self.server, force=True)
        for process in server_processes(self.server):  # a test that failed half-way
            process.kill()


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[Callable[..., Home]]:
    made: list[Home] = []

    def make(name: str = "a", **env: str) -> Home:
        made.append(Home(tmp_path / name, **env))
        return made[-1]

    yield make
    for home in made:
        home.cleanup()


def flow_run_state(api_url: str, run_id: str) -> str:
    import httpx

    answer = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=30)
    answer.raise_for_status()
    return str(answer.json()["state"]["type"])


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


# -- settings: checked before anything is created ---------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CLOUDTRAIN_SERVER_IDLE_MINUTES", "soon", "must be a number of minutes > 0, not 'soon'"),
        ("CLOUDTRAIN_SERVER_IDLE_MINUTES", "0", "must be a number of minutes > 0, not '0'"),
        ("CLOUDTRAIN_SERVER_IDLE_MINUTES", "nan", "must be a number of minutes > 0"),
        ("CLOUDTRAIN_SERVER_REUSE", "maybe", "must be 1 or 0 (true/false), not 'maybe'"),
    ],
)
def test_a_bad_server_setting_is_one_line_and_exit_2_before_anything_is_created(
    write_config: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv("CLOUDTRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(name, value)
    assert main(["run", str(write_config())]) == 2
    assert f"{name}: {message}" in capsys.readouterr().err
    assert main(["server", "status"]) == 2
    assert f"{name}: {message}" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()
    assert not (tmp_path / ".cloudtrain").exists()  # no run record, no lease


def test_settings_defaults_and_home() -> None:
    config = local_server.settings({"CLOUDTRAIN_HOME": "/x"})
    assert config == local_server.Settings(Path("/x/server"), True, 30.0)
    assert local_server.settings({"CLOUDTRAIN_SERVER_REUSE": "0"}).reuse is False
    assert local_server.settings({"CLOUDTRAIN_SERVER_IDLE_MINUTES": "0.5"}).idle_minutes == 0.5
    assert local_server.settings({}).home == Path.home() / ".cloudtrain" / "server"


def test_status_and_stop_import_no_prefect(tmp_path: Path) -> None:
    """``cloudtrain server status|stop`` stay fast: Prefect is not imported for them."""
    code = (
        "import sys; from cloudtrain.cli import main; "
        "codes = [main(['server', 'status']), main(['server', 'stop'])]; "
        "print(codes, 'prefect' in sys.modules)"
    )
    env = {**os.environ, "CLOUDTRAIN_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[1, 0] False"
    assert "local Prefect server: not running (no server state)" in done.stdout
    assert "cloudtrain: no local Prefect server is running" in done.stdout


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "[]",
        '{"pid": -1, "url": "http://127.0.0.1:1", "token": "x", "started": 0}',
        '{"pid": true, "url": "http://127.0.0.1:1", "token": "x", "started": 0}',
        '{"pid": 1}',  # a live process; no url, token or start time
        '{"pid": 1, "url": 7, "token": "x", "started": 0}',
        '{"pid": 1, "url": "http://127.0.0.1:1", "token": "x", "started": "today"}',
    ],
)
def test_a_state_file_that_is_not_ours_is_no_state(tmp_path: Path, text: str) -> None:
    """Garbage, a torn file or another version's: no server, never a traceback (it was a
    KeyError for a live pid without a url, a ValueError for pid -1, in status, stop and
    run)."""
    home = tmp_path / "server"
    home.mkdir()
    (home / server_process.STATE_FILE).write_text(text)
    assert server_process.read_state(home) is None
    assert local_server.status(home) == {
        "running": False,
        "home": str(home),
        "reason": "no server state",
    }
    assert local_server.stop(home) == "no local Prefect server is running"


# -- one server, reused ------------------------------------------------------------------


@pytest.mark.prefect
def test_runs_reuse_one_server_that_outlives_a_killed_or_interrupted_run(
    homes: Callable[..., Home], write_config: Callable[..., Path], tmp_path: Path
) -> None:
    home = homes()
    path = write_config("print('acc=1.0')\n", metrics=["acc"])
    first = home.run("run", str(path), "--json")
    assert first.returncode == 0, first.stderr[-3000:]
    state = home.state()
    url = state["url"]
    assert f"cloudtrain: starting the local Prefect server {url} (UI; pid {state['pid']})" in (
        first.stderr
    )
    assert "cloudtrain: it stops after 30 min idle; now: `cloudtrain server stop`" in first.stderr
    assert "Starting temporary server" not in first.stderr  # not the embedded one
    assert str(url).startswith("http://127.0.0.1:")

    second = home.run("run", str(path), "--json")
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"cloudtrain: reusing the local Prefect server {url} (UI; pid {state['pid']})" in (
        second.stderr
    )
    assert home.state()["pid"] == state["pid"] and home.state()["port"] == state["port"]
    assert len(server_processes(home.server)) == 1
    import httpx

    ui = httpx.get(str(url), timeout=30)  # the UI, served at the URL the run printed
    assert ui.status_code == 200 and ui.headers["content-type"].startswith("text/html")
    for done in (first, second):  # both runs are in that server (and its UI)
        run_id = json.loads(done.stdout)["run_id"]
        assert flow_run_state(f"{url}/api", run_id) == "COMPLETED"

    status = home.status()
    assert status["running"] is True
    assert (status["url"], status["pid"], status["prefect_version"]) == (
        url,
        state["pid"],
        version("prefect"),
    )
    assert status["runs_in_progress"] == 0
    assert 0 < float(str(status["idle_seconds_left"])) <= 30 * 60
    human = home.run("server", "status")
    assert human.returncode == 0 and f"UI:        {url}" in human.stdout
    assert "stop it:   cloudtrain server stop" in human.stdout

    # kill -9 of a run: the server stays up, and the next run marks that run crashed
    pid_file = tmp_path / "script.pid"
    sleeper = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
    write_config(sleeper + "time.sleep(120)\n", metrics=["acc"], local={"grace_period": 1})
    killed = subprocess.Popen(
        home.command("run", str(path)),
        env=home.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(lambda: pid_file.exists() and bool(pid_file.read_text()), "the script never started")
    assert home.status()["runs_in_progress"] == 1  # a live run holds it up
    leases = list((tmp_path / ".cloudtrain" / "leases").rglob("*.json"))
    assert len(leases) == 1
    killed_run = leases[0].stem
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert home.status()["pid"] == state["pid"]
    assert flow_run_state(f"{url}/api", killed_run) == "RUNNING"
    write_config("print('acc=1.0')\n", metrics=["acc"])
    after = home.run("run", str(path))
    assert after.returncode == 0, after.stderr[-3000:]
    assert flow_run_state(f"{url}/api", killed_run) == "CRASHED"
    assert home.status()["runs_in_progress"] == 0  # the killed run no longer counts

    # Ctrl-C (SIGINT to the run's whole process group) reaches the run, not the server
    pid_file.unlink()
    write_config(sleeper + "time.sleep(120)\n", metrics=["acc"], local={"grace_period": 1})
    output = tmp_path / "interrupted.txt"
    with output.open("w") as sink:
        interrupted = subprocess.Popen(
            home.command("run", str(path)),
            env=home.env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: pid_file.exists() and bool(pid_file.read_text()), output.read_text())
        os.killpg(interrupted.pid, signal.SIGINT)
        assert interrupted.wait(timeout=120) == 130, output.read_text()[-3000:]
    assert "cloudtrain: interrupted" in output.read_text()
    assert home.status()["pid"] == state["pid"]

    stopped = home.run("server", "stop")
    assert stopped.returncode == 0
    assert f"stopped the local Prefect server (pid {state['pid']}, {url})" in stopped.stdout
    assert not psutil.pid_exists(int(str(state["pid"]))) or not server_processes(home.server)
    gone = home.run("server", "status", "--json")
    assert gone.returncode == 1 and json.loads(gone.stdout)["running"] is False
    assert home.run("server", "stop").stdout.strip() == (
        "cloudtrain: no local Prefect server is running"
    )


@pytest.mark.prefect
def test_the_server_exits_when_idle_but_not_under_a_long_quiet_run(
    homes: Callable[..., Home], write_config: Callable[..., Path]
) -> None:
    """Idle 3 s: a run whose script is silent for longer still succeeds on the server it
    started, which exits by itself afterwards and leaves nothing behind."""
    home = homes(CLOUDTRAIN_SERVER_IDLE_MINUTES="0.05")
    path = write_config("import time\ntime.sleep(12)\nprint('acc=1.0')\n", metrics=["acc"])
    done = home.run("run", str(path), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "it stops after 0.05 min idle" in done.stderr
    pid = int(str(json.loads((home.server / "state.json").read_text())["pid"]))
    wait_for(lambda: not server_processes(home.server), "the server never exited idle")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not (home.server / "state.json").exists()
    assert "idle for 3 s: stopping" in (home.server / "server.log").read_text()


# -- stale state -------------------------------------------------------------------------


def foreign_listener() -> subprocess.Popen[str]:
    """A process that is not a Prefect server, listening on loopback; prints its port."""
    code = (
        "import socket, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); print(s.getsockname()[1],"
        " flush=True)\n"
        "while True:\n"
        '    c, _ = s.accept(); c.sendall(b\'HTTP/1.0 200 OK\\r\\n\\r\\n{"token": "x"}\');'
        " c.close()\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


@pytest.mark.prefect
def test_stale_state_is_replaced_and_no_server_is_left_behind(
    homes: Callable[..., Home],
) -> None:
    home = homes()
    home.server.mkdir(parents=True)
    listener = foreign_listener()
    try:
        assert listener.stdout is not None
        port = int(listener.stdout.readline())
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        stale = {
            "pid": int(dead.stdout),
            "port": port,
            "url": f"http://127.0.0.1:{port}",
            "token": "x",
            "prefect_version": version("prefect"),
            "started": time.time(),
            "ready": True,
        }
        # a state file left by a kill -9: its pid is gone (the port answers someone else)
        server_process.write_state(home.server, stale)
        assert home.status()["running"] is False
        first = home.start()
        assert first["pid"] != stale["pid"] and first["port"] != port

        # the state names a live process that is not a server of ours: it is left alone
        home.cleanup()
        foreign = {
            **stale,
            "pid": listener.pid,
            "started_process": psutil.Process(listener.pid).create_time(),
        }
        server_process.write_state(home.server, foreign)
        second = home.start()
        assert second["pid"] != listener.pid and listener.poll() is None

        # our server, but its port answers something else (not our token): replaced
        server_process.write_state(home.server, {**second, "port": port, "url": stale["url"]})
        third = home.start()
        assert third["pid"] != second["pid"]
        assert [p.pid for p in server_processes(home.server)] == [third["pid"]]
        assert listener.poll() is None

        # another Prefect version: replaced
        server_process.write_state(home.server, {**third, "prefect_version": "3.0.0"})
        fourth = home.start()
        assert fourth["pid"] != third["pid"]
        assert [p.pid for p in server_processes(home.server)] == [fourth["pid"]]

        # the server killed with -9: its state stays, the next start replaces it
        os.kill(int(str(fourth["pid"])), signal.SIGKILL)
        wait_for(lambda: not server_processes(home.server), "kill -9 did not end it")
        assert "is gone or does not answer" in str(home.status()["reason"])
        fifth = home.start()
        assert [p.pid for p in server_processes(home.server)] == [fifth["pid"]]
    finally:
        listener.kill()
        listener.wait()


# -- concurrency -------------------------------------------------------------------------


@pytest.mark.prefect
def test_two_runs_starting_at_once_share_one_server(
    homes: Callable[..., Home], write_config: Callable[..., Path], tmp_path: Path
) -> None:
    home = homes()
    paths = []
    for name in ("one", "two"):
        folder = tmp_path / name
        (folder / "src").mkdir(parents=True)
        (folder / "src" / "train.py").write_text("print('acc=1.0')\n")
        config = write_config(metrics=["acc"]).read_text().replace("name: unit", f"name: {name}")
        (folder / "cloudtrain.yaml").write_text(config)
        paths.append(folder / "cloudtrain.yaml")
    seen: set[int] = set()
    runs = [
        subprocess.Popen(
            home.command("run", str(path), "--json"),
            env=home.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in paths
    ]
    while any(run.poll() is None for run in runs):  # never two server processes at once
        seen.update(p.pid for p in server_processes(home.server))
        assert len(server_processes(home.server)) <= 1
        time.sleep(0.2)
    outputs = [run.communicate() for run in runs]
    for run, (stdout, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, stderr[-3000:]
        assert json.loads(stdout)["status"] == "succeeded"
    state = home.state()
    assert seen == {state["pid"]}
    lines = sorted(
        line
        for _, stderr in outputs
        for line in stderr.splitlines()
        if "the local Prefect server http" in line
    )
    assert [line.split()[1] for line in lines] == ["reusing", "starting"]
    assert all(f"{state['url']} (UI; pid {state['pid']})" in line for line in lines)


# -- keeping it out ----------------------------------------------------------------------


@pytest.mark.prefect
def test_no_server_reuse_keeps_the_embedded_server(
    homes: Callable[..., Home], write_config: Callable[..., Path]
) -> None:
    home = homes()
    path = write_config("print('acc=1.0')\n", metrics=["acc"])
    for done in (
        home.run("run", str(path), "--no-server-reuse"),
        home.run("run", str(path), CLOUDTRAIN_SERVER_REUSE="0"),
    ):
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Starting temporary server" in done.stderr  # Prefect's embedded server
        assert "local Prefect server" not in done.stderr
        assert not home.server.exists()
    assert not server_processes(home.server)


@pytest.mark.prefect
def test_a_configured_prefect_api_url_is_used_as_it_is(
    homes: Callable[..., Home], write_config: Callable[..., Path]
) -> None:
    elsewhere = homes("elsewhere")
    api_url = f"{elsewhere.start()['url']}/api"  # some Prefect server the user set up
    home = homes("b")
    path = write_config("print('acc=1.0')\n", metrics=["acc"])
    done = home.run("run", str(path), "--json", PREFECT_API_URL=api_url)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "local Prefect server" not in done.stderr
    assert not home.server.exists()
    assert flow_run_state(api_url, json.loads(done.stdout)["run_id"]) == "COMPLETED"


@pytest.mark.prefect
def test_check_and_start_is_one_step_under_the_lock(
    homes: Callable[..., Home], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two starts at the same instant, with starting made slow: without the lock both
    would find no server and start one each."""
    import threading

    home = homes()
    monkeypatch.setenv("CLOUDTRAIN_HOME", home.env["CLOUDTRAIN_HOME"])
    monkeypatch.setenv("PREFECT_HOME", home.env["PREFECT_HOME"])
    start = local_server._start

    def slow_start(*args: object) -> dict[str, object]:
        time.sleep(1.0)  # widen the window between "no server" and "started"
        return start(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(local_server, "_start", slow_start)
    barrier = threading.Barrier(2)
    found: list[local_server.Server] = []

    def ensure() -> None:
        barrier.wait()
        found.append(local_server.ensure(local_server.settings()))

    threads = [threading.Thread(target=ensure) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for server in found:
        server.wait_ready()
    assert sorted(server.started_now for server in found) == [False, True]
    assert {server.state["pid"] for server in found} == {
        p.pid for p in server_processes(home.server)
    }
    assert len(server_processes(home.server)) == 1


def test_stop_ends_a_server_that_is_a_live_process_s_child(tmp_path: Path) -> None:
    """A server started by a run that still lives is that run's child: a zombie once it
    ends, which psutil's ``wait`` from another process took for alive, so ``cloudtrain
    server stop`` (and a run replacing a stale server) waited 2 x 10 s and failed with
    psutil.TimeoutExpired. A stand-in run starts a stand-in server here."""
    home = tmp_path / "server"
    home.mkdir()
    serve = "import time; time.sleep(600)"
    run = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {serve!r}, 'server_process.py', "
        f"{str(home)!r}])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", run], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        state = {
            "pid": pid,
            "started_process": psutil.Process(pid).create_time(),
            "url": "http://127.0.0.1:1",
            "token": "x",
            "started": time.time(),
        }
        server_process.write_state(home, state)
        assert local_server.is_ours(state, home)
        assert local_server.stop(home).startswith("stopped the local Prefect server")
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # its parent lives
        assert server_process.read_state(home) is None
    finally:
        parent.kill()
        parent.wait()


def test_stop_refuses_while_a_run_uses_the_server_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cloudtrain server stop`` during a run's training stopped the server under it: the
    training finished, then its task failed on the dead API (after ~70 s of retries) and
    the run hung, its model lost. Now it says the server is in use, exit 1, unless
    --force."""
    monkeypatch.setenv("CLOUDTRAIN_HOME", str(tmp_path))
    home = tmp_path / "server"
    home.mkdir()
    code = "import time; time.sleep(600)"
    fake = subprocess.Popen([sys.executable, "-c", code, "server_process.py", str(home)])
    try:
        state = {
            "pid": fake.pid,
            "started_process": psutil.Process(fake.pid).create_time(),
            "url": "http://127.0.0.1:1",
            "token": "x",
            "started": time.time(),
        }
        server_process.write_state(home, state)
        local_server.register(home)  # this process plays a run in progress
        assert main(["server", "stop"]) == 1
        err = capsys.readouterr().err
        assert f"(pid {fake.pid}) is in use by 1 run(s) in progress" in err
        assert "--force stops it anyway" in err
        assert fake.poll() is None and server_process.read_state(home) == state
        assert main(["server", "stop", "--force"]) == 0
        assert f"stopped the local Prefect server (pid {fake.pid}" in capsys.readouterr().out
        assert fake.wait(timeout=60) is not None
    finally:
        local_server.unregister(home)
        fake.kill()
        fake.wait()


def test_a_run_does_not_replace_a_server_other_runs_use(tmp_path: Path) -> None:
    """A server of ours that does not answer in 3 s (busy, stopped) or runs another
    Prefect version (another checkout sharing the home) was stopped and replaced by the
    next run, failing the runs training on it. With other live runs registered it is left
    alone and the new run fails, saying why and what to do."""
    config = local_server.settings(
        {"CLOUDTRAIN_HOME": str(tmp_path), "CLOUDTRAIN_SERVER_REUSE": "1"}
    )
    home = config.home
    home.mkdir()
    fake = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", "server_process.py", str(home)]
    )
    other_run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        state = {
            "pid": fake.pid,
            "started_process": psutil.Process(fake.pid).create_time(),
            "url": "http://127.0.0.1:1",  # nothing answers there
            "token": "x",
            "prefect_version": version("prefect"),
            "started": time.time(),
            "ready": True,
        }
        server_process.write_state(home, state)
        (home / server_process.CLIENTS_DIR).mkdir()
        started = psutil.Process(other_run.pid).create_time()
        client = home / server_process.CLIENTS_DIR / f"{other_run.pid}.json"
        client.write_text(json.dumps({"pid": other_run.pid, "started": started}))
        for changed in ({}, {"prefect_version": "3.0.0"}):
            server_process.write_state(home, {**state, **changed})
            with pytest.raises(local_server.ServerError) as raised:
                local_server.ensure(config)
            assert "is not replaced: 1 other run(s) in progress use it" in str(raised.value)
            assert fake.poll() is None and server_process.read_state(home) == {**state, **changed}
            assert not (home / server_process.CLIENTS_DIR / f"{os.getpid()}.json").exists()

        other_run.kill()
        other_run.wait()
        server_process.write_state(home, state)
        replaced = local_server.ensure(config)  # no other run: replaced, as before
        assert replaced.started_now and replaced.state["pid"] != fake.pid
        assert fake.wait(timeout=60) is not None
    finally:
        local_server.unregister(home)
        local_server.stop(home, force=True)
        for server in server_processes(home):  # the real one, when this test failed
            server.kill()
        for process in (fake, other_run):
            process.kill()
            process.wait()


@pytest.fixture
def no_api_configured() -> Iterator[None]:
    """No PREFECT_API_URL in Prefect's current settings, which a test server started
    earlier in the session (tests/conftest.py) may have set for the whole process."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


def test_ctrl_c_while_the_server_starts_is_exit_130_without_a_traceback(
    no_api_configured: None,
    write_config: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run waits ~15 s for a new server; a Ctrl-C then was a KeyboardInterrupt traceback
    and death by SIGINT, not the run's interrupted line and exit 130."""
    monkeypatch.setenv("CLOUDTRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLOUDTRAIN_SERVER_REUSE", "1")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    home = tmp_path / "home" / "server"
    state = {"pid": os.getpid(), "url": "http://127.0.0.1:1", "token": "x", "started": 0.0}
    monkeypatch.setattr(
        local_server, "ensure", lambda config, log=None: local_server.Server(home, state, True)
    )

    def interrupted(self: local_server.Server, timeout: float = 0) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(local_server.Server, "wait_ready", interrupted)
    try:
        code = main(["run", str(write_config())])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C while the server started escaped as a KeyboardInterrupt")
    assert code == 130
    assert "cloudtrain: interrupted before the run started" in capsys.readouterr().err
    assert "PREFECT_API_URL" not in os.environ


def test_status_of_a_starting_server_says_starting_not_stale(tmp_path: Path) -> None:
    """While a run waits for a new server (~15 s), status said 'stale state: ... the next
    run replaces it', though the next run waits for that very server."""
    home = tmp_path / "server"
    home.mkdir()
    code = "import time; time.sleep(600)"
    fake = subprocess.Popen([sys.executable, "-c", code, "server_process.py", str(home)])
    try:
        state = {
            "pid": fake.pid,
            "started_process": psutil.Process(fake.pid).create_time(),
            "url": "http://127.0.0.1:1",
            "token": "x",
            "prefect_version": version("prefect"),
            "started": time.time(),
            "ready": False,
        }
        server_process.write_state(home, state)
        described = local_server.status(home)
        assert described["running"] is False
        assert described["reason"] == f"starting: pid {fake.pid}, at http://127.0.0.1:1 once ready"
        server_process.write_state(home, {**state, "ready": True})  # ready, not answering
        assert "stale state" in local_server.status(home)["reason"]
    finally:
        fake.kill()
        fake.wait()


def test_ctrl_c_of_server_start_is_exit_130_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLOUDTRAIN_HOME", str(tmp_path))

    def interrupted(config: local_server.Settings) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(local_server, "start", interrupted)
    try:
        code = main(["server", "start"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C of server start escaped as a KeyboardInterrupt")
    assert code == 130
    assert "cloudtrain: interrupted; the server starts on" in capsys.readouterr().err


def test_a_home_that_is_not_a_folder_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CLOUDTRAIN_HOME naming a file: server stop and server start ended in a
    NotADirectoryError traceback (start: from unregistering, after its own message)."""
    home = tmp_path / "a-file"
    home.write_text("")
    monkeypatch.setenv("CLOUDTRAIN_HOME", str(home))
    for action in ("stop", "start"):
        assert main(["server", action]) == 1, action
        assert capsys.readouterr().err == (
            f"cloudtrain: [Errno 20] Not a directory: '{home / 'server'}'\n"
        ), action
    assert main(["server", "status"]) == 1


def test_a_run_whose_server_went_says_so(
    no_api_configured: None,
    write_config: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The server killed (or stopped with --force) during a run: after Prefect's retries
    the run ended in a bare httpx.ConnectError traceback naming a port. It now says the
    local server stopped, where its log is, exit 1."""
    import httpx

    import cloudtrain.cli

    monkeypatch.setenv("CLOUDTRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLOUDTRAIN_SERVER_REUSE", "1")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    home = tmp_path / "home" / "server"
    state = {"pid": int(gone.stdout), "url": "http://127.0.0.1:1", "token": "x", "started": 0.0}
    server = local_server.Server(home, state, True)
    monkeypatch.setattr(local_server, "ensure", lambda config, log=None: server)
    monkeypatch.setattr(local_server.Server, "wait_ready", lambda self, timeout=0: None)

    def flow(**kwargs: object) -> None:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    monkeypatch.setattr(cloudtrain.cli, "_flow_for", lambda cloud: flow)
    assert main(["run", str(write_config())]) == 1
    err = capsys.readouterr().err
    assert (
        f"cloudtrain: run failed: the local Prefect server (pid {state['pid']}, "
        "http://127.0.0.1:1) stopped during the run (ConnectError: [Errno 111] Connection "
        f"refused); its log: {home / 'server.log'}; the next run starts a new one"
    ) in err

    monkeypatch.setattr(local_server.Server, "alive", lambda self: True)  # another failure
    with pytest.raises(httpx.ConnectError):
        main(["run", str(write_config())])
