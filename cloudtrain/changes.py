"""Retrain only when something changed: the fingerprint of a run's inputs, and the record
of the last successful run to compare it with.

A run's fingerprint covers the data (each channel's content digest from the upload
stage), the code (a manifest digest of ``code.source_dir``) and the config, less the
settings that cannot change the model (recovery, and where things are kept). A channel given
as a URI has no digest cloudtrain can vouch for, so a config with one always trains.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudtrain.config import PipelineConfig
from cloudtrain.results import ChannelData
from cloudtrain.store import HashCache, atomic_write, manifest_json, walk_files

#: Config fields that do not change the trained model, so they do not force retraining.
NOT_IN_FINGERPRINT: dict[str, Any] = {
    "retry": True,
    "work_dir": True,
    # Simulated reclaims stay in: a changed simulation is a test the user wants to see run.
    "local": {"grace_period", "root"},
    # Where the data and code are is not what they are: their digests are parts of their own.
    "data": True,
    "code": {"source_dir"},
}


@dataclass(frozen=True)
class Fingerprint:
    digest: str
    parts: Mapping[str, str]  # "data:<channel>", "code", "config" -> sha256


@dataclass(frozen=True)
class Decision:
    train: bool
    reason: str
    previous: Mapping[str, Any] | None = None  # the last successful run's summary


def code_digest(source_dir: Path, cache_dir: Path) -> str:
    hashes = HashCache(cache_dir / "code-hash-cache.json")
    entries = {
        relative: {"sha256": hashes.sha256(path), "size": path.stat().st_size}
        for relative, path in walk_files(source_dir)
        if "__pycache__" not in Path(relative).parts
    }
    hashes.save()
    return hashlib.sha256(manifest_json(dict(sorted(entries.items()))).encode()).hexdigest()


def config_digest(config: PipelineConfig) -> str:
    text = config.model_dump_json(exclude=NOT_IN_FINGERPRINT)
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(config: PipelineConfig, channels: Mapping[str, ChannelData]) -> Fingerprint | None:
    """None when a channel's content is not known (a URI used as it is)."""
    if any(not data.digest for data in channels.values()):
        return None
    parts = {f"data:{name}": data.digest for name, data in sorted(channels.items())}
    parts["code"] = code_digest(config.code.source_dir, config.work_dir)
    parts["config"] = config_digest(config)
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return Fingerprint(digest, parts)


class RunRecords:
    """The last successful run of each pipeline on each cloud, under ``work_dir``."""

    def __init__(self, root: Path) -> None:
        self.folder = root / "records"

    def _path(self, pipeline: str, cloud: str) -> Path:
        return self.folder / f"{pipeline}-{cloud}.json"

    def last_success(self, pipeline: str, cloud: str) -> dict[str, Any] | None:
        try:
            record: dict[str, Any] = json.loads(self._path(pipeline, cloud).read_text())
        except (OSError, ValueError):
            return None
        return record

    def save_success(
        self, pipeline: str, cloud: str, print_: Fingerprint, summary: Mapping[str, Any]
    ) -> None:
        record = {"fingerprint": print_.digest, "parts": dict(print_.parts), "summary": summary}
        atomic_write(self._path(pipeline, cloud), json.dumps(record, indent=2, default=str))


def decide(
    current: Fingerprint | None, previous: Mapping[str, Any] | None, *, force: bool
) -> Decision:
    """Train, or reuse the last successful run; the reason says which input changed."""
    if force:
        return Decision(True, "forced (force=true)")
    if current is None:
        return Decision(True, "a data channel is a URI whose content cannot be compared")
    if previous is None:
        return Decision(True, "no earlier successful run to compare with")
    if previous.get("fingerprint") == current.digest:
        run_id = (previous.get("summary") or {}).get("run_id")
        return Decision(
            False,
            f"data, code and config are unchanged since run {run_id}: reusing its model",
            previous.get("summary"),
        )
    old_parts = previous.get("parts") or {}
    changed = sorted(
        k for k in {*old_parts, *current.parts} if old_parts.get(k) != current.parts.get(k)
    )
    return Decision(True, "changed since the last successful run: " + ", ".join(changed))
