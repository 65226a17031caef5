"""Which process holds a run: a rerun can tell a run still going from one whose
orchestrator died (kill -9, a power cut) without ending it.

A run writes ``work_dir/leases/<pipeline>-<cloud>/<run id>.json`` when it starts (its
process id and start time: a reused process id is another process) and removes it when
it ends, however it ends short of being killed. A lease whose process is gone is a crashed
run. The next run of the pipeline marks it crashed in Prefect and, when it trains the same
data, code and config (the same fingerprint), resumes from its checkpoints, the local twin
of reattaching to a cloud job by name.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psutil

from cloudtrain.store import atomic_write


@dataclass(frozen=True)
class Lease:
    run_id: str
    pid: int
    started: float  # the process's start time, as psutil reports it
    fingerprint: str | None = None  # the run's inputs (cloudtrain.changes); None: unknown
    checkpoint_uri: str | None = None  # set once training starts
    #: The run's MLflow run and its store (tracking on): ended KILLED when the run crashed.
    tracking_run_id: str | None = None
    tracking_uri: str | None = None

    @property
    def alive(self) -> bool:
        try:
            return psutil.Process(self.pid).create_time() == self.started
        except psutil.Error:
            return False


class RunLeases:
    """The leases of one pipeline on one cloud, under ``work_dir``."""

    def __init__(self, work_dir: Path, pipeline: str, cloud: str) -> None:
        self.folder = work_dir / "leases" / f"{pipeline}-{cloud}"

    def take(self, run_id: str, fingerprint: str | None = None) -> Lease:
        me = psutil.Process(os.getpid())
        lease = Lease(run_id, me.pid, me.create_time(), fingerprint)
        self._write(lease)
        return lease

    def update(self, lease: Lease, **changes: str | None) -> Lease:
        lease = replace(lease, **changes)  # type: ignore[arg-type]
        self._write(lease)
        return lease

    def release(self, run_id: str) -> None:
        (self.folder / f"{run_id}.json").unlink(missing_ok=True)

    def crashed(self) -> list[Lease]:
        """Leases whose process is gone, oldest first."""
        found = []
        for path in sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime):
            try:
                lease = Lease(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue  # a torn or foreign file is not a lease
            if not lease.alive:
                found.append(lease)
        return found

    def resumable(self, crashed: list[Lease], fingerprint: str | None) -> Lease | None:
        """The newest crashed run that trained exactly this and left a checkpoint location."""
        if fingerprint is None:
            return None
        same = [c for c in crashed if c.fingerprint == fingerprint and c.checkpoint_uri]
        return same[-1] if same else None

    def _write(self, lease: Lease) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.folder / f"{lease.run_id}.json", json.dumps(asdict(lease)))
