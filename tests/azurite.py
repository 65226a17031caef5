"""Azurite's blob service on loopback, the emulator every Azure storage test runs against.

Azurite is a Node package pinned in the repository's ``package.json``; ``make test``
installs it into ``node_modules/`` with ``npm ci``. Nothing is skipped when it is
missing: CI must exercise the blob paths, so a missing binary is a loud failure.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
BINARY = REPO / "node_modules" / ".bin" / "azurite-blob"
#: The well-known development account every Azure storage emulator accepts; not a secret.
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
#: Azurite answered in ~0.7 s here; a loaded CI machine gets far more.
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.05
#: A port picked free can be taken before Azurite binds it: try a few.
START_ATTEMPTS = 3


class AzuriteError(RuntimeError):
    """Azurite is not installed or did not start."""


class Azurite:
    """One ``azurite-blob`` process on 127.0.0.1 with its data in memory only."""

    def __init__(self, binary: Path = BINARY) -> None:
        self.binary = binary
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._workspace = tempfile.TemporaryDirectory(prefix="cloudtrain-azurite-")
        self._output: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};"
            f"AccountKey={ACCOUNT_KEY};BlobEndpoint={self.url};"
        )

    def start(self) -> Azurite:
        if not self.binary.exists():
            raise AzuriteError(
                f"Azurite is not installed ({self.binary} is missing): run `make test`, "
                "which installs it from package.json with npm ci"
            )
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start_once()
                return self
            except AzuriteError:
                self.stop()
                if attempt == START_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        self.port = _free_port()
        workspace = self._workspace.name
        self._output = open(Path(workspace) / "azurite.log", "w+b")  # noqa: SIM115
        command = [
            str(self.binary),
            *("--blobHost", "127.0.0.1", "--blobPort", str(self.port)),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",  # the Python SDK may speak a newer API version
            "--disableTelemetry",  # else it tries to reach an outside host
            "--loose",
            "--silent",
        ]
        self._process = subprocess.Popen(
            command,
            cwd=workspace,  # anything it writes besides the in-memory data lands here
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C on pytest does not reach it; stop() does
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AzuriteError(
                    f"azurite-blob exited with {self._process.returncode}: {self._log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(POLL_SECONDS)
        raise AzuriteError(
            f"azurite-blob did not answer on 127.0.0.1:{self.port} within "
            f"{START_TIMEOUT_SECONDS:.0f} s: {self._log_tail()}"
        )

    def stop(self) -> None:
        """Terminate the process this object started (by its pid), then kill it if it lingers."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT_SECONDS)
        if self._output is not None:
            self._output.close()
            self._output = None

    def close(self) -> None:
        self.stop()
        self._workspace.cleanup()

    def _log_tail(self) -> str:
        if self._output is None:
            return ""
        self._output.flush()
        self._output.seek(0)
        text = self._output.read().decode(errors="replace").strip()
        return text[-2000:] or "(no output)"

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
