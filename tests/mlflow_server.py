"""A small MLflow tracking server on loopback: the REST calls cloudtrain's tracker makes,
answered as MLflow's server answers them, and every request kept for the test to read.

The real ``mlflow server`` needs the full mlflow package and took over a minute to
start on a 2-core machine; the client under test (MlflowClient, its REST store and
``mlflow-artifacts:`` repository) is the real one either way.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API = "/api/2.0/mlflow/"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts/"


class MlflowServer:
    """``start()``, then ``url``; ``requests`` holds (method, path, JSON body or bytes)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.artifacts: dict[str, bytes] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> MlflowServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Gone: the port refuses connections from now on."""
        self._server.shutdown()
        self._server.server_close()

    def batches(self) -> list[dict[str, Any]]:
        return [body for method, path, body in self.requests if path.endswith("runs/log-batch")]

    def _answer(self, method: str, path: str, query: dict[str, str], body: Any) -> Any:
        call = path.removeprefix(API)
        if path.startswith(ARTIFACTS):
            self.artifacts[path.removeprefix(ARTIFACTS)] = body
            return {}
        if call == "experiments/get-by-name":
            found = [e for e in self.experiments.values() if e["name"] == query["experiment_name"]]
            if not found:
                return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no experiment"}
            return {"experiment": found[0]}
        if call == "experiments/create":
            experiment_id = str(len(self.experiments) + 1)
            self.experiments[experiment_id] = {
                "experiment_id": experiment_id,
                "name": body["name"],
                "artifact_location": f"mlflow-artifacts:/{experiment_id}",
                "lifecycle_stage": "active",
            }
            return {"experiment_id": experiment_id}
        if call == "runs/create":
            run_id = uuid.uuid4().hex
            experiment_id = body["experiment_id"]
            self.runs[run_id] = {
                "info": {
                    "run_id": run_id,
                    "run_uuid": run_id,
                    "experiment_id": experiment_id,
                    "run_name": body.get("run_name", ""),
                    "status": "RUNNING",
                    "start_time": body.get("start_time", 0),
                    "artifact_uri": f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
                    "lifecycle_stage": "active",
                },
                "data": {"tags": body.get("tags", [])},
            }
            return {"run": self.runs[run_id]}
        if call == "runs/get":
            return {"run": self.runs[query["run_id"]]}
        if call == "runs/update":
            self.runs[body["run_id"]]["info"]["status"] = body["status"]
            return {"run_info": self.runs[body["run_id"]]["info"]}
        if call == "runs/log-batch":
            return {}
        return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": path}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                is_json = "json" in (self.headers.get("Content-Type") or "")
                body = json.loads(raw) if raw and is_json else raw
                server.requests.append((self.command, parts.path, body))
                answer = server._answer(self.command, parts.path, query, body)
                status, payload = answer if isinstance(answer, tuple) else (200, answer)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
