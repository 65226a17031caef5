"""The local Prefect server that ``cloudtrain run`` starts once and later runs reuse, so a
second run does not pay Prefect's ~10 s embedded-server start-up.

It lives in ``${CLOUDTRAIN_HOME:-~/.cloudtrain}/server/`` (never the user's ~/.prefect):

- ``state.json``: pid, process start time, port, URL, Prefect version, start time, idle limit;
- ``prefect/``: the server's PREFECT_HOME, with its SQLite database ``prefect.db``;
- ``server.log`` (the previous one as ``server.log.1``), ``lock``, ``clients/`` (one file per
  ``cloudtrain run`` using it, so a long training run keeps it up).

The server listens on 127.0.0.1 on a free port, runs in its own session (a Ctrl-C for a
run never reaches it) and exits by itself after ``CLOUDTRAIN_SERVER_IDLE_MINUTES`` (default
30) without activity (``cloudtrain/server_process.py`` says what counts). A state file whose
process is gone, is not ours, runs another Prefect version or does not answer is replaced,
and a process of ours behind it is stopped first. Check-and-start holds a file lock, so two
runs starting at once share one server. Settings are read from the environment; nothing
heavy is imported here (standard library and psutil): ``status`` and ``stop`` answer fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil

from cloudtrain import server_process
from cloudtrain.errors import CloudtrainError, ConfigError, Problem
from cloudtrain.server_process import locked, process_alive, read_state, write_state

HOME_ENV = "CLOUDTRAIN_HOME"
REUSE_ENV = "CLOUDTRAIN_SERVER_REUSE"
IDLE_ENV = "CLOUDTRAIN_SERVER_IDLE_MINUTES"
DEFAULT_IDLE_MINUTES = 30.0
STARTUP_TIMEOUT_SECONDS = 180.0  # a new database on a slow, shared machine takes ~15 s
PROBE_TIMEOUT_SECONDS = 3.0  # a healthy server answers its status in milliseconds
STOP_GRACE_SECONDS = 10.0  # SIGTERM, then SIGKILL
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ServerError(CloudtrainError):
    """The local server could not be started or reached (the run fails, exit 1)."""


@dataclass(frozen=True)
class Settings:
    home: Path  # the server's folder: ${CLOUDTRAIN_HOME:-~/.cloudtrain}/server
    reuse: bool
    idle_minutes: float


def settings(environ: dict[str, str] | None = None) -> Settings:
    """The server settings from the environment; a bad value is a ConfigError naming it."""
    env = os.environ if environ is None else environ
    problems = []
    reuse_text = env.get(REUSE_ENV, "1").strip().lower()
    if reuse_text not in _TRUE + _FALSE:
        problems.append(Problem(REUSE_ENV, f"must be 1 or 0 (true/false), not {reuse_text!r}"))
    idle_text = env.get(IDLE_ENV, "").strip()
    idle = DEFAULT_IDLE_MINUTES
    if idle_text:
        try:
            idle = float(idle_text)
        except ValueError:
            idle = -1.0
        if not 0 < idle < 10**7:  # nan fails too
            message = f"must be a number of minutes > 0, not {idle_text!r}"
            problems.append(Problem(IDLE_ENV, message))
    if problems:
        raise ConfigError(problems=problems)
    root = Path(env.get(HOME_ENV) or Path.home() / ".cloudtrain").expanduser().absolute()
    return Settings(root / "server", reuse_text in _TRUE, idle)


@dataclass(frozen=True)
class Server:
    """A running (or starting) local server, as its state file describes it."""

    home: Path
    state: dict[str, Any]
    started_now: bool = False

    @property
    def url(self) -> str:
        return str(self.state["url"])

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
        """Until it answers as itself; ServerError when its process ends or time runs out."""
        deadline = time.monotonic() + timeout
        pid = self.state["pid"]
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerError(
                    f"the local Prefect server (pid {pid}) exited while starting; its log: "
                    f"{self.home / server_process.LOG_FILE}"
                )
            state = read_state(self.home)
            if state is not None and state["pid"] == pid and state.get("ready"):
                if probe(state) is not None:
                    return
            time.sleep(0.05)
        raise ServerError(
            f"the local Prefect server (pid {pid}) did not start in {timeout:g} s; its log: "
            f"{self.home / server_process.LOG_FILE}"
        )

    def alive(self) -> bool:
        return _alive(self.state)

    def gone(self, error: BaseException) -> str:
        """What a run that lost this server says (its error alone names only a port)."""
        return (
            f"the local Prefect server (pid {self.state['pid']}, {self.url}) stopped during "
            f"the run ({type(error).__name__}: {error}); its log: "
            f"{self.home / server_process.LOG_FILE}; the next run starts a new one"
        )

    def describe(self) -> list[str]:
        """The lines a run prints on stderr: where the server is and how to stop it."""
        how = "starting" if self.started_now else "reusing"
        idle = self.state.get("idle_minutes", DEFAULT_IDLE_MINUTES)
        return [
            f"cloudtrain: {how} the local Prefect server {self.url} (UI; pid {self.state['pid']})",
            f"cloudtrain: it stops after {idle:g} min idle; now: `cloudtrain server stop`",
        ]


def probe(state: dict[str, Any]) -> dict[str, Any] | None:
    """The server's own status, when the process at the state's port is that server."""
    request = urllib.request.Request(
        f"{state['url']}{server_process.STATUS_PATH}", headers={"accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_SECONDS) as response:
            answer = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    if not isinstance(answer, dict) or answer.get("token") != state.get("token"):
        return None  # something else answers on that port
    return answer


def is_ours(state: dict[str, Any], home: Path) -> bool:
    """The state's process is alive and is a server process of this home (never stop
    anything else: a pid may have been reused)."""
    if not _alive(state):
        return False
    try:
        command = psutil.Process(state["pid"]).cmdline()
    except psutil.Error:
        return False
    return any(part.endswith("server_process.py") for part in command) and str(home) in command


def _alive(state: dict[str, Any]) -> bool:
    """The state's server process is running (the same process: its start time too)."""
    return process_alive(state["pid"], state.get("started_process"))


def register(home: Path) -> Path:
    """This process uses the server: it does not exit idle while we live."""
    me = psutil.Process()
    folder = home / server_process.CLIENTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{me.pid}.json"
    path.write_text(json.dumps({"pid": me.pid, "started": me.create_time()}))
    return path


def unregister(home: Path) -> None:
    """This process no longer uses the server (nothing to undo when its home is not a
    folder it could write)."""
    with contextlib.suppress(OSError):
        (home / server_process.CLIENTS_DIR / f"{os.getpid()}.json").unlink(missing_ok=True)


def ensure(config: Settings, log: Callable[[str], None] | None = None) -> Server:
    """The running server of ``config.home``, or a new one (started, maybe not ready yet:
    call ``wait_ready``). Registers this process as a user of it (see ``unregister``)."""
    home = config.home
    with locked(home):
        register(home)
        state = read_state(home)
        if state is not None:
            reason = _why_not_reusable(state, home)
            if reason is None:
                return Server(home, state)
            runs = server_process.live_clients(home, but=os.getpid())
            if runs and is_ours(state, home):  # stopping it would fail them
                unregister(home)
                raise ServerError(
                    f"the local Prefect server (pid {state['pid']}) cannot be used ({reason}) "
                    f"and is not replaced: {runs} other run(s) in progress use it "
                    "(`cloudtrain server stop --force` stops it, they fail; "
                    "--no-server-reuse runs without it)"
                )
            if log is not None:
                log(f"cloudtrain: replacing the local Prefect server: {reason}")
            retire(state, home)
        return Server(home, _start(home, config.idle_minutes), started_now=True)


def _why_not_reusable(state: dict[str, Any], home: Path) -> str | None:
    """None when the state's server can be used (or is starting and will be)."""
    if not _alive(state):
        return f"its process {state['pid']} is gone"
    if not is_ours(state, home):
        return f"process {state['pid']} is not a cloudtrain server"
    installed = version("prefect")
    if state.get("prefect_version") != installed:
        return f"it runs Prefect {state.get('prefect_version')}, this is {installed}"
    if not state.get("ready"):
        if time.time() - float(state.get("started", 0)) < STARTUP_TIMEOUT_SECONDS:
            return None  # starting: wait for it
        return "it never became ready"
    if probe(state) is None:
        return f"it does not answer at {state['url']}"
    return None


def retire(state: dict[str, Any], home: Path) -> None:
    """Stop the state's process when it is ours (SIGTERM, SIGKILL after a grace), and
    remove the state file."""
    if is_ours(state, home):
        try:
            process = psutil.Process(state["pid"])
            started = process.create_time()
            process.terminate()
            if not _ended(process.pid, started):
                process.kill()
                if not _ended(process.pid, started):
                    raise ServerError(f"the local Prefect server (pid {process.pid}) did not stop")
        except psutil.NoSuchProcess:
            pass
    current = read_state(home)
    if current is not None and current["pid"] == state["pid"]:
        (home / server_process.STATE_FILE).unlink(missing_ok=True)


def _ended(pid: int, started: float) -> bool:
    """Whether the process ended within the grace. Not ``psutil.Process.wait``: a server
    started by a run that still lives is that run's child, a zombie once it ends, which
    ``wait`` from another process takes for alive until its timeout."""
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while process_alive(pid, started):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _start(home: Path, idle_minutes: float) -> dict[str, Any]:
    """Bind a free loopback port, start the server process on it, write its state."""
    prefect_home = home / server_process.PREFECT_DIR
    prefect_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    log = home / server_process.LOG_FILE
    if log.exists():
        log.replace(log.with_name(log.name + ".1"))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_UI_API_URL=f"{url}/api",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        CLOUDTRAIN_SERVER_TOKEN=token,
    )
    command = [
        sys.executable,
        "-P",
        server_process.__file__,
        "serve",
        "--home",
        str(home),
        "--fd",
        str(listener.fileno()),
        "--idle-seconds",
        str(idle_minutes * 60),
    ]
    with listener, log.open("ab") as output:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(),),
            start_new_session=True,  # no Ctrl-C or hang-up of the run's terminal reaches it
            cwd=home,
        )
    state = {
        "pid": process.pid,
        "started_process": psutil.Process(process.pid).create_time(),
        "port": port,
        "url": url,
        "token": token,
        "prefect_version": version("prefect"),
        "python": sys.executable,
        "started": time.time(),
        "idle_minutes": idle_minutes,
        "home": str(home),
        "log": str(log),
        "ready": False,
    }
    write_state(home, state)
    # Not waited for: the server process lives on after this one. Popen's bookkeeping
    # would otherwise warn; its exit is read through psutil.
    process.returncode = 0
    return state


def status(home: Path) -> dict[str, Any]:
    """What ``cloudtrain server status`` prints: ``running`` and, when it is, where."""
    state = read_state(home)
    if state is None:
        return {"running": False, "home": str(home), "reason": "no server state"}
    alive = _alive(state)
    answer = probe(state) if alive else None
    if (
        answer is None
        and alive
        and not state.get("ready")
        and _why_not_reusable(state, home) is None
    ):
        return {  # not ready yet: a run waits for it, the next one too
            "running": False,
            "home": str(home),
            "reason": f"starting: pid {state['pid']}, at {state['url']} once ready",
        }
    if answer is None:
        return {
            "running": False,
            "home": str(home),
            "reason": f"stale state: pid {state['pid']} is gone or does not answer at "
            f"{state['url']} (the next run replaces it)",
        }
    return {
        "running": True,
        "url": state["url"],
        "api_url": f"{state['url']}/api",
        "pid": state["pid"],
        "uptime_seconds": round(time.time() - float(state["started"]), 1),
        "idle_seconds_left": answer["idle_seconds_left"],
        "idle_minutes": state.get("idle_minutes"),
        "runs_in_progress": answer["runs"],
        "prefect_version": answer["prefect_version"],
        "home": str(home),
        "database": str(home / server_process.PREFECT_DIR / "prefect.db"),
        "log": state.get("log"),
    }


def stop(home: Path, force: bool = False) -> str:
    """Stop the home's server; returns what was done, in a line. A ServerError while runs
    use it (they would fail, their training lost), unless ``force``."""
    with locked(home):
        state = read_state(home)
        if state is None:
            return "no local Prefect server is running"
        if not is_ours(state, home):
            retire(state, home)
            return f"no local Prefect server is running (removed a stale state, pid {state['pid']})"
        runs = server_process.live_clients(home)
        if runs and not force:
            raise ServerError(
                f"the local Prefect server (pid {state['pid']}) is in use by {runs} run(s) in "
                "progress, which would fail: not stopped (--force stops it anyway)"
            )
        retire(state, home)
        return f"stopped the local Prefect server (pid {state['pid']}, {state['url']})"


def start(config: Settings) -> Server:
    """``cloudtrain server start``: the same as a run's, ready when it returns."""
    server = ensure(config)
    server.wait_ready()
    return server
