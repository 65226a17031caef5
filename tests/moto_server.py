"""moto's server on loopback, with a record of every request it received.

The recorder is WSGI middleware in front of moto's own app, so tests assert on what
went over the wire (real HTTP through botocore), not on what our code meant to send.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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
        """The JSON target's action, or the query protocol's Action (IAM, STS)."""
        if self.target or not self.body:
            return self.target.rpartition(".")[2]
        from urllib.parse import parse_qs

        return parse_qs(self.body.decode(errors="replace")).get("Action", [""])[0]

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
        """Calls by action name, e.g. CreateTrainingJob or GetRole."""
        return [entry for entry in list(self.entries) if entry.action == name]

    def s3(self, method: str) -> list[Received]:
        """S3 calls by HTTP method (PUT uploads, POST multipart/deletes, GET downloads)."""
        return [e for e in list(self.entries) if not e.target and e.method == method]


@dataclass
class Faults:
    """Errors answered instead of moto's reply to the next calls of an action.

    The action is the JSON target's (``DescribeTrainingJob``), the query protocol's
    ``Action`` (``GetRole``, ``GetCallerIdentity``), or ``S3:<METHOD>`` for S3's REST calls.
    """

    pending: dict[str, list[tuple[int, str, str, bool]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self, action: str, times: int, status: int, code: str, message: str, *, after: bool = False
    ) -> None:
        """``after``: moto handles the request first, then its answer is lost to the error."""
        with self._lock:
            self.pending.setdefault(action, []).extend([(status, code, message, after)] * times)

    def throttle(self, action: str, times: int) -> None:
        """What each service says when it throttles: 400 Throttling(Exception), S3 503."""
        if action.startswith("S3:"):
            self.add(action, times, 503, "SlowDown", "Please reduce your request rate.")
        else:
            self.add(action, times, 400, "ThrottlingException", "Rate exceeded")

    def take(self, action: str) -> tuple[int, str, str, bool] | None:
        with self._lock:
            queue = self.pending.get(action)
            return queue.pop(0) if queue else None

    def clear(self) -> None:
        with self._lock:
            self.pending.clear()


def _error_body(target: str, action: str, code: str, message: str) -> tuple[str, bytes]:
    if target:  # JSON protocols: SageMaker, ECR, CloudWatch Logs
        return "application/x-amz-json-1.1", json.dumps(
            {"__type": code, "message": message}
        ).encode()
    if action.startswith("S3:"):
        return "application/xml", (
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        ).encode()
    return "text/xml", (  # the query protocol: IAM, STS
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
        f"<Message>{message}</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
    ).encode()


#: What S3 answers when a body does not match the checksum its request declares.
_BAD_DIGEST = "The {algorithm} you specified did not match the calculated checksum."


def _checksum(algorithm: str, body: bytes) -> str | None:
    """A body's checksum as S3 headers carry it (base64), for the algorithms used here."""
    import base64
    import hashlib
    import zlib

    if algorithm == "crc32":
        return base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    if algorithm == "sha256":
        return base64.b64encode(hashlib.sha256(body).digest()).decode()
    return None


class _Recorder:
    """WSGI middleware: note the request, hand the same bytes to moto (or a fault).

    With ``check_checksums``, it does what S3 does and moto 5.2.5 does not (its
    ``_get_checksum`` keeps whatever it is given): a PUT (PutObject, UploadPart) whose
    body does not match its ``x-amz-checksum-crc32`` or ``-sha256`` header is refused with
    400 BadDigest, and moto never sees it.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], log: RequestLog) -> None:
        self.app, self.log = app, log
        self.faults = Faults()
        self.check_checksums = False

    def _bad_digest(self, environ: dict[str, Any]) -> str | None:
        """The algorithm whose declared checksum the body does not match, if any."""
        import io

        declared = {
            name[len("HTTP_X_AMZ_CHECKSUM_") :].lower(): value
            for name, value in environ.items()
            if name.startswith("HTTP_X_AMZ_CHECKSUM_") and name != "HTTP_X_AMZ_CHECKSUM_MODE"
        }
        if environ["REQUEST_METHOD"] != "PUT" or not declared:
            return None
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        for algorithm, value in declared.items():
            computed = _checksum(algorithm, body)
            if computed is not None and computed != value:
                return algorithm.upper()
        return None

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        import io

        length = int(environ.get("CONTENT_LENGTH") or 0)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        body = b""
        form = "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", "")
        if (target or form) and length:  # JSON and query APIs: keep the body; S3's streams
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)
        if target:
            action = target.rpartition(".")[2]
        elif form:
            from urllib.parse import parse_qs

            action = parse_qs(body.decode()).get("Action", [""])[0]
        else:
            action = f"S3:{environ['REQUEST_METHOD']}"
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
            fault = self.faults.take(action)
            if fault is None and self.check_checksums and not (target or form):
                algorithm = self._bad_digest(environ)
                if algorithm is not None:
                    fault = (400, "BadDigest", _BAD_DIGEST.format(algorithm=algorithm), False)
            if fault is not None:
                status, code, message, after = fault
                if after:
                    for _ in self.app(environ, lambda *args, **kwargs: None):
                        pass
                content_type, error = _error_body(target, action, code, message)
                start_response(
                    f"{status} Fault",
                    [("Content-Type", content_type), ("Content-Length", str(len(error)))],
                )
                return [error]
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
        self._recorder = _Recorder(wsgi.app, self.log)
        wsgi.app = self._recorder  # type: ignore[method-assign]
        self.faults = self._recorder.faults
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def reset(self) -> None:
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()
        self.log.clear()
        self.faults.clear()
        self._recorder.check_checksums = False

    @contextmanager
    def checking_checksums(self) -> Iterator[None]:
        """Within: bodies that do not match their declared checksum are refused, as S3
        refuses them (see ``_Recorder``)."""
        self._recorder.check_checksums = True
        try:
            yield
        finally:
            self._recorder.check_checksums = False

    def stop(self) -> None:
        self._server.stop()
