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

from pydantic_core import to_json

from cloudtrain import jsonout
from cloudtrain.backends import settings_model
from cloudtrain.config import PipelineConfig, code_exclusions, is_excluded
from cloudtrain.results import ChannelData
from cloudtrain.store import HashCache, atomic_write, manifest_json, walk_files

#: Config fields that do not change the trained model, so they do not force retraining.
NOT_IN_FINGERPRINT: dict[str, Any] = {
    "retry": True,
    "work_dir": True,
    # Where the data and code are is not what they are: their digests are parts of their own.
    "data": True,
    # How a job reads a channel (copied in, streamed, piped) is not what it reads.
    "input_modes": True,
    "code": {"source_dir"},
    # Where a secret comes from is not what the model learns (its value is never read here).
    "secrets": True,
    # Which clouds may run it and what it may cost: the model is the same script on the
    # same data (the cloud it starts on and its instance type stay in).
    "clouds": True,
    "budget": True,
    # Which trials a sweep makes: each trial's own hyperparameters are in its digest.
    "sweep": True,
    # Where the run is logged (MLflow) is not what it learns.
    "tracking": True,
}
#: Fields added after digests were first stored, left out while they hold their default,
#: so a config that does not use them keeps its digest: (section, field) -> that default.
LATER_FIELDS: dict[tuple[str, str], Any] = {
    ("compute", "instance_types"): {},
    ("local", "capacity_outages"): [],
    ("compute", "distribution"): {"type": "none", "processes_per_host": 1},
}
#: The same, inside the clouds' sections. Simulated reclaims stay in: a changed
#: simulation is a test the user wants to see run.
SECTION_FIELDS_NOT_IN_FINGERPRINT: dict[str, set[str]] = {"local": {"grace_period", "root"}}
#: The sections that were fields of the config before clouds were registered, in their
#: order, with their value when a config had none: digests keep that shape, so a config
#: unchanged across that change keeps its digest and does not retrain.
FIELD_SECTIONS: tuple[str, ...] = ("aws", "azure", "local")


@dataclass(frozen=True)
class Fingerprint:
    digest: str
    parts: Mapping[str, str]  # "data:<channel>", "code", "config" -> sha256


@dataclass(frozen=True)
class Decision:
    train: bool
    reason: str
    previous: Mapping[str, Any] | None = None  # the last successful run's summary


def code_digest(source_dir: Path, cache_dir: Path, excluded: tuple[Path, ...] = ()) -> str:
    """The manifest digest of the code; ``excluded`` folders (``code_exclusions``: the
    work_dir inside source_dir) are not code and are left out."""
    hashes = HashCache(cache_dir / "code-hash-cache.json")
    entries = {
        relative: {"sha256": hashes.sha256(path), "size": path.stat().st_size}
        for relative, path in walk_files(source_dir)
        if "__pycache__" not in Path(relative).parts and not is_excluded(path, excluded)
    }
    hashes.save()
    return hashlib.sha256(manifest_json(dict(sorted(entries.items()))).encode()).hexdigest()


def config_digest(config: PipelineConfig) -> str:
    """The config as JSON, less what cannot change the model, sections last."""
    sections = config.sections()
    data = config.model_dump(
        mode="json",
        exclude={**NOT_IN_FINGERPRINT, **dict.fromkeys(sections, True)},
        context={"reveal_secrets": True},  # hashed, never stored: a changed value retrains
    )
    for name in (*FIELD_SECTIONS, *sorted(set(sections) - set(FIELD_SECTIONS))):
        section = sections.get(name)
        if section is None and name == "local":  # it had defaults when absent
            model = settings_model(name)
            section = model() if model is not None else None
        exclude = SECTION_FIELDS_NOT_IN_FINGERPRINT.get(name)
        data[name] = section.model_dump(mode="json", exclude=exclude) if section else None
    for (where, key), default in LATER_FIELDS.items():
        part = data.get(where)
        if isinstance(part, dict) and key in part and part[key] == default:
            del part[key]
    return hashlib.sha256(to_json(data)).hexdigest()


def fingerprint(config: PipelineConfig, channels: Mapping[str, ChannelData]) -> Fingerprint | None:
    """None when a channel's content is not known (a URI used as it is)."""
    if any(not data.digest for data in channels.values()):
        return None
    parts = {f"data:{name}": data.digest for name, data in sorted(channels.items())}
    parts["code"] = code_digest(config.code.source_dir, config.work_dir, code_exclusions(config))
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
        atomic_write(self._path(pipeline, cloud), jsonout.dumps(record, indent=2))


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
