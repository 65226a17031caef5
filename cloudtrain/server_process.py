"""The reused local Prefect server's own process: Prefect's app under uvicorn, plus an idle
exit, which Prefect's ``prefect server start --background`` does not have.

Run by path (``python -P cloudtrain/server_process.py serve --home H --fd N ...``) by
``cloudtrain.local_server``, in its own session so a Ctrl-C in the terminal never reaches
it. The listening socket is bound (127.0.0.1, a free port) by the starting ``cloudtrain
run`` and handed over as ``--fd``: the port is known before Prefect is imported, and no
other process can take it in between. Standard library and psutil at the top; Prefect and
uvicorn only inside ``serve``. ``cloudtrain.local_server`` imports the state-file helpers
from here (this module imports nothing of cloudtrain).

Idle means, for ``--idle-minutes``: no API request in flight, no open connection such as
the events websocket a running Prefect flow holds, no live ``cloudtrain run`` registered in
``clients/``, and no API request at all. A registered run counts as long as its process
lives, so a long, quiet training run is never cut; one killed with -9 stops counting.
Before exiting, the server takes the home's lock (as a starting run does), so a run that
is checking the server either sees it go or keeps it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

STATE_FILE = "state.json"
LOCK_FILE = "lock"
LOG_FILE = "server.log"
CLIENTS_DIR = "clients"
PREFECT_DIR = "prefect"  # the server's PREFECT_HOME: database, UI build
STATUS_PATH = "/cloudtrain/status"  # answered by the idle watcher, not counted as activity
TICK_SECONDS = 5.0  # how often the idle watcher looks (less for tiny idle times)


def read_state(home: Path) -> dict[str, Any] | None:
    """The state file, or None when there is none or it is not ours (torn, foreign, from
    another version: any field read without a default has the type written here)."""
    try:
        state = json.loads((home / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    pid, started = state.get("pid"), state.get("started")
    if type(pid) is not int or pid <= 0 or not isinstance(state.get("url"), str):
        return None
    if type(started) not in (int, float) or not isinstance(state.get("token"), str):
        return None
    return state


def write_state(home: Path, state: dict[str, Any]) -> None:
    """Atomically: a reader sees the old state or the new one, never half of one."""
    path = home / STATE_FILE
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(state, indent=2))
    os.replace(partial, path)


@contextlib.contextmanager
def locked(home: Path, blocking: bool = True) -> Iterator[bool]:
    """The home's lock around check-and-start (and around the idle exit); yields whether
    it was taken (always, when blocking)."""
    home.mkdir(parents=True, exist_ok=True)
    handle = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(handle)  # releases the lock


def process_alive(pid: int, started: float | None) -> bool:
    """The process with that id and start time (a reused id is another process)."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and (
            started is None or process.create_time() == started
        )
    except psutil.Error:
        return False


def live_clients(home: Path, but: int | None = None) -> int:
    """Registered ``cloudtrain run`` processes still alive (other than pid ``but``); dead
    ones' files are removed."""
    alive = 0
    for path in (home / CLIENTS_DIR).glob("*.json"):
        try:
            client = json.loads(path.read_text())
            pid, started = int(client["pid"]), float(client["started"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written
        if pid == but:
            continue
        if process_alive(pid, started):
            alive += 1
        else:
            path.unlink(missing_ok=True)
    return alive


class Activity:
    """ASGI middleware: counts requests and connections in flight, remembers the last one,
    and answers ``STATUS_PATH`` (for ``cloudtrain server status``) without counting it."""

    def __init__(self, app: Any, home: Path, token: str, idle_seconds: float) -> None:
        self.app = app
        self.home = home
        self.token = token
        self.idle_seconds = idle_seconds
        self.open = 0
        self.last = time.monotonic()
        self.runs = 0

    def idle_for(self) -> float:
        return 0.0 if self.open or self.runs else time.monotonic() - self.last

    def status(self) -> dict[str, Any]:
        import prefect

        self.runs = live_clients(self.home)
        idle = self.idle_for()
        return {
            "token": self.token,
            "pid": os.getpid(),
            "prefect_version": prefect.__version__,
            "open_connections": self.open,
            "runs": self.runs,
            "idle_seconds": round(idle, 1),
            "idle_limit_seconds": self.idle_seconds,
            "idle_seconds_left": round(max(0.0, self.idle_seconds - idle), 1),
        }

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == STATUS_PATH:
            body = json.dumps(self.status()).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        self.open += 1
        self.last = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.open -= 1
            self.last = time.monotonic()


def serve(home: Path, fd: int, token: str, idle_seconds: float) -> None:
    """Prefect's app on the handed-over socket until SIGTERM or the idle time passes."""
    import asyncio

    import uvicorn
    from prefect.server.api.server import create_app

    activity = Activity(create_app(final=True), home, token, idle_seconds)
    config = uvicorn.Config(activity, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    listener = socket.socket(fileno=fd)
    tick = max(0.05, min(TICK_SECONDS, idle_seconds / 10))
    held: list[contextlib.ExitStack] = []

    async def watch() -> None:
        while not server.started and not server.should_exit:
            await asyncio.sleep(0.05)
        _update_state(home, ready=True)
        while not server.should_exit:
            await asyncio.sleep(tick)
            activity.runs = live_clients(home)
            if activity.idle_for() < idle_seconds:
                continue
            stack = contextlib.ExitStack()
            if not stack.enter_context(locked(home, blocking=False)):
                stack.close()  # a run is checking or starting: look again next tick
                continue
            activity.runs = live_clients(home)
            if activity.idle_for() < idle_seconds:
                stack.close()
                continue
            held.append(stack)  # kept until this process ends: no run sees a dying server
            _forget_state(home)
            print(f"idle for {idle_seconds:g} s: stopping", file=sys.stderr, flush=True)
            server.should_exit = True

    async def main() -> None:
        watcher = asyncio.create_task(watch())
        try:
            await server.serve(sockets=[listener])
        finally:
            watcher.cancel()

    # uvicorn re-raises the SIGTERM it caught once it has shut down: a handler of ours
    # makes that a no-op, so the state file is removed below.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    try:
        asyncio.run(main())
    finally:
        _forget_state(home)


def _update_state(home: Path, **changes: Any) -> None:
    state = read_state(home)
    if state is not None and state["pid"] == os.getpid():
        write_state(home, {**state, **changes})


def _forget_state(home: Path) -> None:
    """Remove the state file when it is still this process's."""
    state = read_state(home)
    if state is not None and state["pid"] == os.getpid():
        (home / STATE_FILE).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="server_process", description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    run = modes.add_parser("serve")
    run.add_argument("--home", type=Path, required=True)
    run.add_argument("--fd", type=int, required=True)
    run.add_argument("--idle-seconds", type=float, required=True)
    args = parser.parse_args(argv)
    token = os.environ.pop("CLOUDTRAIN_SERVER_TOKEN", "")
    serve(args.home, args.fd, token, args.idle_seconds)


if __name__ == "__main__":
    main()
