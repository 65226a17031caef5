"""A real Prefect server, the deployments of prefect.yaml and a process worker, on loopback.

The operating tests run what the README's Operating section tells a person to run, as
subprocesses: ``prefect server start`` (SQLite in its own PREFECT_HOME), ``prefect
work-pool create`` (the process pool, and the Kubernetes and ECS pools), ``prefect
variable set cloudtrain_image``, ``prefect deploy --all`` from a copy of the checkout,
``prefect worker start`` (a process worker only). Each long-running process starts in a session of its own and is
stopped by its process id: SIGTERM to its process group, a wait, then SIGKILL.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: prefect, cloudtrain, python
WORK_POOL = "cloudtrain-process"
# The pools the container deployments go to, created as the README says; no worker polls
# them here (no cluster, no ECS), so their runs stay scheduled.
CONTAINER_POOLS = {"cloudtrain-kubernetes": "kubernetes", "cloudtrain-ecs": "ecs"}
IMAGE = "registry.example.com/ml/cloudtrain:0.1.0"  # the `cloudtrain_image` variable

SERVER_START_TIMEOUT_SECONDS = 90.0  # ~11 s on a new SQLite database on 2 cores
WORKER_READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0  # SIGTERM to SIGKILL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def copy_checkout(destination: Path) -> Path:
    """What a fresh clone of this working tree holds: tracked and untracked files that
    git does not ignore (no .venv, no generated data, no earlier runs)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # listed but deleted in the working tree: skip
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


class PrefectStack:
    """Server, work pool, deployments and worker; ``start()`` then ``stop()``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "prefect-home"
        self.logs = root / "logs"
        self.checkout = root / "checkout"
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.commands: list[str] = []  # what ran, for the README and for failure messages
        self._processes: list[subprocess.Popen[bytes]] = []

    # -- environment and commands -----------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """This machine's environment without any PREFECT_* of its own, pointed at the server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # `python` in pull steps: the venv's
        )
        env.update(extra)
        return env

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = 180, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``prefect ...`` or ``cloudtrain ...`` from the venv and wait for it."""
        cwd = cwd or self.checkout
        env = self.env(PWD=str(cwd))  # prefect.yaml reads {{ $PWD }}; subprocess keeps ours
        self.commands.append(shlex.join(args))
        done = subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                f"{done.stderr[-3000:]}"
            )
        return done

    def _spawn(self, name: str, args: Sequence[str], **env: str) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.commands.append(shlex.join(args) + " &")
        with (self.logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [str(BIN / args[0]), *args[1:]],
                cwd=self.checkout,
                env=self.env(PWD=str(self.checkout), **env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopped as one, by its id
            )
        self._processes.append(process)
        return process

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # -- the steps ---------------------------------------------------------------------

    def start(self) -> PrefectStack:
        copy_checkout(self.checkout)
        self.start_server()
        self.run("prefect", "work-pool", "create", WORK_POOL, "--type", "process")
        for pool, kind in CONTAINER_POOLS.items():
            self.run("prefect", "work-pool", "create", pool, "--type", kind)
        self.run("prefect", "variable", "set", "cloudtrain_image", IMAGE)
        self.run("prefect", "deploy", "--all", "--no-prompt")
        self.start_worker()
        return self

    def start_server(self) -> None:
        server = self._spawn(
            "server",
            ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"prefect server exited:\n{self.log_tail('server')}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no /api/health after {SERVER_START_TIMEOUT_SECONDS:g} s:\n"
                    f"{self.log_tail('server')}"
                )
            time.sleep(0.5)

    def start_worker(self) -> None:
        """A process worker that asks for work every second (the default is 10 s)."""
        worker = self._spawn(
            "worker",
            ["prefect", "worker", "start", "--pool", WORK_POOL, "--name", "operating-tests"],
            PREFECT_WORKER_QUERY_SECONDS="1",
        )
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_SECONDS
        while True:
            if worker.poll() is not None:
                raise RuntimeError(f"prefect worker exited:\n{self.log_tail('worker')}")
            response = httpx.get(f"{self.api_url}/work_pools/{WORK_POOL}", timeout=5)
            if response.status_code == 200 and response.json().get("status") == "READY":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker never polled:\n{self.log_tail('worker')}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Worker first, then the server; each by its process id, SIGKILL if SIGTERM is not enough."""
        while self._processes:
            process = self._processes.pop()
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    _signal_group(process.pid, signal.SIGKILL)
                    process.wait(STOP_TIMEOUT_SECONDS)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # the group started with the process: its id is the process's id
    except (ProcessLookupError, PermissionError):
        pass
