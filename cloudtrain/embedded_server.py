"""Prefect's embedded server, started by cloudtrain so it neither outlives a killed run
nor dies from the Ctrl-C meant for the run.

Without PREFECT_API_URL, Prefect starts a server subprocess on first use (its
``SubprocessASGIServer``, one instance per port) and stops it at exit. Two things go wrong
with that for a command-line tool: a kill -9 of the command leaves the server running, and
a Ctrl-C in the terminal reaches the whole foreground process group, the server included,
so the run cannot report that it was interrupted and Prefect retries against a dead server
for a minute. Starting it here, in its own session and watched by a guard process, fixes
both; Prefect then finds this instance (same class registry, same port key) and uses it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def start_guarded() -> None:
    """Start the embedded server now, in its own session, with a guard that stops it once
    this process is gone; nothing when a server is configured (PREFECT_API_URL)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    from cloudtrain.supervisor import start_guard

    class OwnSessionServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            # Prefect's private hook that builds the server's Popen: the only place the
            # process can be put in its own session (after exec, setpgid is refused).
            with _popen_in_new_session():
                return super()._run_uvicorn_command()

    server = OwnSessionServer()
    if not isinstance(server, OwnSessionServer):  # already made by Prefect: leave it be
        return
    try:
        server.start()
    except Exception:  # Prefect starts it again for the flow, and says why if it cannot
        server.stop()  # no half-started server left holding our output
        return
    if server.server_process is not None:
        start_guard([server.server_process.pid])


@contextmanager
def _popen_in_new_session() -> Iterator[None]:
    """``subprocess.Popen`` with ``start_new_session=True`` while the server is launched
    (this command has no other thread starting processes at that point)."""
    original = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("start_new_session", True)
        return original(*args, **kwargs)

    subprocess.Popen = popen  # type: ignore[assignment, misc]
    try:
        yield
    finally:
        subprocess.Popen = original  # type: ignore[misc]
