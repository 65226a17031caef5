"""moto's server on loopback, with a record of every request it received.

The recorder is WSGI middleware in front of moto's own app, so tests assert on what
went over the wire (real HTTP through botocore), not on what our code meant to send.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import requests
from moto.server import ThreadedMotoServer

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"


@dataclass(frozen=True)
class Received:
    """One request as moto's server received it."""

    method: str
    path: str
    query: str
    target: str  # X-Amz-Target for JSON APIs (SageMaker.CreateTrainingJob), else ""
    body: bytes
    headers: dict[str, str] = field(default_factory=dict, compare=False, hash=False)  # lower-case

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def action(self) -> str:
        return self.target.rpartition(".")[2]

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


@dataclass
class RequestLog:
    entries: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, entry: Received) -> None:
        with self._lock:
            self.entries.append(entry)

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()

    def actions(self, name: str) -> list[Received]:
        """JSON-protocol calls by action name, e.g. CreateTrainingJob."""
        return [entry for entry in list(self.entries) if entry.action == name]

    def s3(self, method: str) -> list[Received]:
        """S3 calls by HTTP method (PUT uploads, POST multipart/deletes, GET downloads)."""
        return [e for e in list(self.entries) if not e.target and e.method == method]


class _Recorder:
    """WSGI middleware: note the request, hand the same bytes to moto."""

    def __init__(self, app: Callable[..., Iterable[bytes]], log: RequestLog) -> None:
        self.app, self.log = app, log

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        import io

        length = int(environ.get("CONTENT_LENGTH") or 0)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        body = b""
        if target and length:  # JSON APIs: keep the body; S3 bodies stay streamed
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)
        if not environ.get("PATH_INFO", "").startswith("/moto-api"):
            headers = {
                name[5:].replace("_", "-").lower(): str(value)
                for name, value in environ.items()
                if name.startswith("HTTP_")
            }
            self.log.add(
                Received(
                    environ["REQUEST_METHOD"],
                    environ.get("PATH_INFO", ""),
                    environ.get("QUERY_STRING", ""),
                    target,
                    body,
                    headers,
                )
            )
        return self.app(environ, start_response)


class MotoServer:
    """A ThreadedMotoServer on 127.0.0.1 (a free port) that records what it receives."""

    def __init__(self) -> None:
        self.log = RequestLog()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def start(self) -> MotoServer:
        self._server.start()
        wsgi = self._server._server
        assert wsgi is not None
        wsgi.app = _Recorder(wsgi.app, self.log)  # type: ignore[method-assign]
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def reset(self) -> None:
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()
        self.log.clear()

    def stop(self) -> None:
        self._server.stop()
