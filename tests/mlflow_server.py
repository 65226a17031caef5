"""MLflow's own tracking server on loopback, in a process of its own.

It is the server ``mlflow server`` runs (``mlflow.server.app``, MLflow's REST handlers
over a SQLite store, artifacts served by the server), started under werkzeug instead of
``mlflow server``'s uvicorn and job workers, which took over a minute to start on a
2-core machine; this starts in about 5 s. The client under test (MlflowClient, its REST
store, the ``mlflow-artifacts:`` repository) talks to it over HTTP, and tests read back
what it stored through MlflowClient, as a user would.

Run as a script, it serves until killed: ``python tests/mlflow_server.py <folder>``
prints the port it listens on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: How long the server may take to print its port (it imports MLflow's server first).
START_TIMEOUT_SECONDS = 120


class MlflowServer:
    """``start()``, then ``url`` and ``client()``; ``stop()`` makes the port refuse."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._process: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [sys.executable, __file__, str(self.folder)],
            stdout=subprocess.PIPE,
            stderr=(self.folder / "server.log").open("w"),
            text=True,
        )
        assert self._process.stdout is not None
        line = _read_line(self._process, START_TIMEOUT_SECONDS)
        if not line.strip().isdigit():
            self.stop()
            log = (self.folder / "server.log").read_text()[-2000:]
            raise RuntimeError(f"the MLflow server did not start: {line!r}\n{log}")
        self.port = int(line)
        return self

    def stop(self) -> None:
        """Gone: the port refuses connections from now on."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def client(self) -> Any:
        from test_tracking import mlflow_client

        return mlflow_client(self.url)


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return process.stdout.readline()


def _serve(folder: Path) -> None:
    # What ``mlflow server --backend-store-uri ... --serve-artifacts`` hands its app
    # (mlflow/server/constants.py); set before the app is imported, which reads them.
    os.environ["_MLFLOW_SERVER_FILE_STORE"] = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ["_MLFLOW_SERVER_ARTIFACT_ROOT"] = "mlflow-artifacts:/"
    os.environ["_MLFLOW_SERVER_SERVE_ARTIFACTS"] = "true"
    os.environ["_MLFLOW_SERVER_ARTIFACT_DESTINATION"] = str(folder / "artifacts")
    from mlflow.server import app
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    _serve(Path(sys.argv[1]))
