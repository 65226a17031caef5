"""A load figure for the process work pool: N smoke runs queued at once on one worker.

One real `prefect server start` (loopback, its own PREFECT_HOME), prefect.yaml deployed
from a copy of the checkout, one process worker, and the pool's concurrency limit set
(`prefect work-pool set-concurrency-limit`): the server hands the worker at most that
many runs at a time. Each run is the smoke deployment with `force=true` (all of them
train; without it, a run that starts after the first success finds nothing changed and
skips training, by design) under a pipeline name of its own, through its simulated
spot reclaim and resume.

Side by side in one run: first single runs alone on the worker (median of --single),
then the N queued at once. Printed: the batch's wall time, runs per minute, the most
runs pending or running at once (from each run's state history) against the limit,
and the batch time against the ideal N x single / min(limit, cores). Checked, not timed: every run
completed, none lost, each trained in a checkpoint folder of its own (read from its
report and attempts artifacts, and found on disk). No threshold is asserted.

    .venv/bin/python bench/queued_runs.py [--runs 20] [--limit 4] [--single 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from prefect_server import WORK_POOL, PrefectStack  # noqa: E402

SMOKE = "local-training/smoke"
PIPELINE = "smoke-load"  # records and leases of its own
FINAL_WAIT_SECONDS = 900.0  # the whole batch; ~2 min for 20 at 4 on 2 cores
POLL_SECONDS = 1.0
CREATE_ATTEMPTS = 5  # a run's creation refused with 503; 2 + 4 + 6 + 8 s of waits at most
CREATE_RETRY_SECONDS = 2.0


@dataclass
class Run:
    """One flow run of the batch, as the server and its artifacts tell it."""

    id: str
    state: str
    pending: datetime | None
    ended: datetime | None
    status: str | None = None  # the outcome row's
    run_id: str | None = None
    checkpoint_uri: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Batch:
    runs: list[Run]
    seconds: float
    limit: int

    @property
    def durations(self) -> list[float]:
        """Each run's seconds from Pending to its final state."""
        return [(r.ended - r.pending).total_seconds() for r in self.runs if r.ended and r.pending]

    @property
    def max_concurrent(self) -> int:
        """The most runs between Pending and their final state at the same instant."""
        events = sorted(
            [(r.pending, 1) for r in self.runs if r.pending]
            + [(r.ended, -1) for r in self.runs if r.ended],
            key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
        )
        now = most = 0
        for _, step in events:
            now += step
            most = max(most, now)
        return most


def queue(client: Any, count: int) -> list[str]:
    """Create ``count`` runs of the smoke deployment at once; their ids.

    A busy SQLite server may answer 503 (its database locked) even after the client's own
    retries: each run has an idempotency key, so asking again never makes a second run."""
    from prefect.exceptions import PrefectHTTPStatusError

    deployment = client.read_deployment_by_name(SMOKE)
    config = json.loads(json.dumps(deployment.parameters["config"]))
    config["name"] = PIPELINE
    batch = uuid.uuid4().hex
    ids = []
    for number in range(count):
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                flow_run = client.create_flow_run_from_deployment(
                    deployment.id,
                    parameters={"config": config, "force": True},
                    idempotency_key=f"queued-runs-{batch}-{number}",
                )
                break
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 503 or attempt == CREATE_ATTEMPTS:
                    raise
                time.sleep(CREATE_RETRY_SECONDS * attempt)
        ids.append(str(flow_run.id))
    return ids


def wait_final(client: Any, ids: list[str], timeout: float = FINAL_WAIT_SECONDS) -> None:
    from prefect.exceptions import PrefectHTTPStatusError

    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending:
        for run_id in list(pending):
            try:
                if client.read_flow_run(run_id).state.is_final():
                    pending.discard(run_id)
            except PrefectHTTPStatusError as exc:  # a busy server: ask again next poll
                if exc.response.status_code != 503:
                    raise
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} of {len(ids)} runs not final after {timeout:g} s")
        time.sleep(POLL_SECONDS)


def read_run(client: Any, run_id: str) -> Run:
    """The run's state history and what its artifacts say (outcome, checkpoint, attempts)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    flow_run = client.read_flow_run(run_id)
    states = sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)
    pending = next((s.timestamp for s in states if s.type.value == "PENDING"), None)
    ended = next((s.timestamp for s in states if s.is_final()), None)
    run = Run(run_id, flow_run.state.type.value, pending, ended)
    artifacts = {
        a.key: a
        for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    }
    if outcome := artifacts.get(f"{PIPELINE}-outcome"):
        [row] = json.loads(outcome.data)
        run.status, run.run_id = row["status"], row["run_id"]
    if report := artifacts.get(f"{PIPELINE}-report"):
        found = re.search(r"Checkpoints: `([^`]+)`", report.data)
        run.checkpoint_uri = found.group(1) if found else None
    if attempts := artifacts.get(f"{PIPELINE}-attempts"):
        run.attempts = json.loads(attempts.data)
    return run


def run_batch(stack: PrefectStack, client: Any, count: int, limit: int) -> Batch:
    """Queue ``count`` runs at once under a pool limit of ``limit``; wait; read them."""
    stack.run("prefect", "work-pool", "set-concurrency-limit", WORK_POOL, str(limit))
    try:
        started = time.perf_counter()
        ids = queue(client, count)
        wait_final(client, ids)
        seconds = time.perf_counter() - started
    finally:
        stack.run("prefect", "work-pool", "clear-concurrency-limit", WORK_POOL)
    return Batch([read_run(client, run_id) for run_id in ids], seconds, limit)


def problems(batch: Batch, checkout: Path) -> list[str]:
    """What is wrong with a batch: a run lost, failed, or sharing a checkpoint folder."""
    found = []
    for run in batch.runs:
        if run.state != "COMPLETED" or run.status != "succeeded":
            found.append(f"run {run.id}: {run.state}, outcome {run.status}")
        if run.run_id != run.id:
            found.append(f"run {run.id}: its outcome names run {run.run_id}")
        if not run.checkpoint_uri:
            found.append(f"run {run.id}: no checkpoint folder in its report")
            continue
        folder = Path(run.checkpoint_uri.removeprefix("file://"))
        folder = folder if folder.is_absolute() else checkout / folder
        if not (folder / "checkpoint.json").is_file():
            found.append(f"run {run.id}: no checkpoint.json in {folder}")
        if run.id not in folder.parts:
            found.append(f"run {run.id}: checkpoint folder {folder} is not the run's own")
        outcomes = [row.get("outcome") for row in run.attempts]
        if outcomes != ["interrupted", "succeeded"]:
            found.append(f"run {run.id}: attempts {outcomes}, not one reclaim resumed")
    folders = [run.checkpoint_uri for run in batch.runs if run.checkpoint_uri]
    if len(set(folders)) != len(folders):
        found.append(f"{len(folders) - len(set(folders))} checkpoint folder(s) shared")
    if batch.max_concurrent > batch.limit:
        found.append(f"{batch.max_concurrent} runs at once, over the limit of {batch.limit}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs queued at once")
    parser.add_argument("--limit", type=int, default=4, help="the pool's concurrency limit")
    parser.add_argument("--single", type=int, default=3, help="single runs before (median)")
    args = parser.parse_args()

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    stack = PrefectStack(Path(tempfile.mkdtemp(prefix="cloudtrain-queued-")))
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"load average before {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    print(
        "starting prefect server, deploying prefect.yaml, starting a process worker "
        "(not measured)...",
        flush=True,
    )
    try:
        stack.start()
        with temporary_settings({PREFECT_API_URL: stack.api_url}):
            with get_client(sync_client=True) as client:
                singles: list[float] = []
                for _ in range(args.single):  # one at a time: the run alone on the worker
                    singles += run_batch(stack, client, 1, args.limit).durations
                single_seconds = statistics.median(singles)
                batch = run_batch(stack, client, args.runs, args.limit)
    finally:
        stack.stop()

    wrong = problems(batch, stack.checkout)
    durations = batch.durations
    # at best `limit` runs progress at once, and no more than the machine has cores
    parallel = min(args.limit, os.cpu_count() or 1)
    ideal = args.runs * single_seconds / parallel
    completed = sum(r.state == "COMPLETED" for r in batch.runs)
    print(
        f"\none run alone (pending to completed, median of {args.single}): {single_seconds:.1f} s"
    )
    print(
        f"{args.runs} smoke runs queued at once, pool concurrency limit {args.limit}, "
        "one process worker:"
    )
    print(
        f"  all final after {batch.seconds:.1f} s: {completed} completed, "
        f"{args.runs - completed} not; {60 * args.runs / batch.seconds:.1f} runs/min"
    )
    print(f"  most runs pending or running at once: {batch.max_concurrent} (limit {args.limit})")
    print(
        f"  a run in the batch, pending to completed: median {statistics.median(durations):.1f} s, "
        f"max {max(durations):.1f} s"
    )
    print(
        f"  batch / ideal ({args.runs} x single / min(limit, cores) = {ideal:.1f} s): "
        f"{batch.seconds / ideal:.2f}x"
    )
    distinct = len({r.checkpoint_uri for r in batch.runs if r.checkpoint_uri})
    print(
        f"  checkpoint folders: {distinct} distinct for {args.runs} runs; "
        f"each run reclaimed once and resumed from its own"
    )
    print(f"  load average after {os.getloadavg()[0]:.2f} (the machine is shared: noisy)")
    for line in wrong:
        print(f"  PROBLEM: {line}")
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
