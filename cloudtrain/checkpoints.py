"""A checkpoint carried from one leg of a route to the next, digests checked.

Before the first attempt on another cloud (or another leg of the same cloud), everything
under the current leg's checkpoint location is copied into the next leg's, through the
object-store seam (``cloudtrain.objectstore``) each backend opens on its checkpoint
location (``checkpoint_store``): S3, an Azure datastore's container, or a local folder.

1. list the source; download each object into a temporary folder, checked against the
   checksum the source store keeps for it (``download_files``);
2. hash each file (sha256) and upload it under the target location with that checksum,
   which the target service verifies (``put_files``); objects already at the target that
   the source does not have are deleted, so the target holds exactly the source;
3. list the target and compare every object's size, and its sha256 wherever the target
   keeps one, with what was downloaded: a copy that does not match is an error, and the
   next attempt does not start from it.

The copy is described by a ``CheckpointCopy``: files, bytes, and a digest over
(relative path, sha256, size), the same form as a data channel's manifest, so a person can
compare the digest of what left with that of what arrived.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cloudtrain.errors import BackendError
from cloudtrain.objectstore import LocalFile, ObjectStore
from cloudtrain.results import CheckpointCopy
from cloudtrain.store import manifest_json, sha256_file
from cloudtrain.sync import download_prefix, human_size

if TYPE_CHECKING:
    from cloudtrain.backend import LogSink
    from cloudtrain.config import PipelineConfig
    from cloudtrain.route import ReadyLeg


class HasCheckpointStore(Protocol):
    def checkpoint_store(self, config: PipelineConfig, uri: str) -> tuple[ObjectStore, str]:
        """The store holding checkpoint location ``uri``, and its key prefix there."""
        ...


def open_checkpoint(leg: ReadyLeg) -> tuple[ObjectStore, str]:
    """The leg's checkpoint location as (store, prefix ending in ``/``)."""
    opener = getattr(leg.leg.backend, "checkpoint_store", None)
    if opener is None:
        raise BackendError(
            f"the {leg.leg.cloud} backend cannot open its checkpoint location as an object "
            "store, so a checkpoint cannot follow the run there"
        )
    store, prefix = opener(leg.leg.config, leg.checkpoint_uri)
    prefix = prefix.strip("/")
    return store, f"{prefix}/" if prefix else ""


def checkpoint_files(backend: Any, config: PipelineConfig, leg: ReadyLeg) -> int | None:
    """How many objects the leg's checkpoint location holds now, or None when the backend
    cannot say (it then reports the count itself, as the local backend does)."""
    if getattr(backend, "checkpoint_store", None) is None:
        return None
    store, prefix = open_checkpoint(leg)
    return sum(1 for obj in store.list(prefix) if not obj.key.endswith("/"))


def copy_checkpoint(source: ReadyLeg, target: ReadyLeg, log: LogSink) -> CheckpointCopy:
    """Copy the checkpoint of ``source`` into ``target``'s location; see the module."""
    started = time.monotonic()
    from_store, from_prefix = open_checkpoint(source)
    to_store, to_prefix = open_checkpoint(target)
    with tempfile.TemporaryDirectory(prefix="cloudtrain-checkpoint-") as folder:
        root = Path(folder)
        downloaded = download_prefix(from_store, from_prefix, root)
        entries: dict[str, dict[str, Any]] = {}
        files: list[LocalFile] = []
        for path in downloaded:
            relative = path.relative_to(root).as_posix()
            stat = path.stat()
            sha = sha256_file(path)
            entries[relative] = {"sha256": sha, "size": stat.st_size}
            key = to_prefix + relative
            problem = to_store.key_problem(key)
            if problem:
                raise BackendError(f"checkpoint file {relative} cannot be copied: {problem}")
            files.append(LocalFile(key=key, path=path, stat=stat, sha256=sha))
        stale = [
            obj.key
            for obj in to_store.list(to_prefix)
            if obj.key[len(to_prefix) :] not in entries and not obj.key.endswith("/")
        ]
        if stale:
            to_store.delete(stale)
        if files:
            to_store.put_files(files)
    _verify(to_store, to_prefix, entries, target.checkpoint_uri)
    digest = hashlib.sha256(manifest_json(entries).encode()).hexdigest()
    total = sum(entry["size"] for entry in entries.values())
    copy = CheckpointCopy(
        source=source.checkpoint_uri,
        target=target.checkpoint_uri,
        source_cloud=source.leg.cloud,
        target_cloud=target.leg.cloud,
        files=len(entries),
        bytes=total,
        digest=digest,
        sha256={name: entry["sha256"] for name, entry in sorted(entries.items())},
        seconds=round(time.monotonic() - started, 3),
    )
    log(
        f"checkpoint copied {source.leg.cloud} -> {target.leg.cloud}: {len(entries)} file(s), "
        f"{human_size(total)}, sha256 {digest[:12]}, {copy.source} -> {copy.target}"
        + (f" ({len(stale)} stale object(s) removed there)" if stale else "")
    )
    return copy


def _verify(store: ObjectStore, prefix: str, entries: dict[str, dict[str, Any]], uri: str) -> None:
    """The target holds exactly what was sent: same names, sizes and, where the store
    keeps one, sha256."""
    found = {obj.key[len(prefix) :]: obj for obj in store.list(prefix) if not obj.key.endswith("/")}
    if set(found) != set(entries):
        missing = sorted(set(entries) - set(found))[:3]
        extra = sorted(set(found) - set(entries))[:3]
        raise BackendError(
            f"checkpoint copy to {uri} does not match its source (missing {missing}, "
            f"extra {extra}); the next attempt is not started from it"
        )
    for name, entry in entries.items():
        obj = found[name]
        sha = obj.sha256 if obj.sha256 is not None else _head_sha256(store, obj.key)
        if obj.size != entry["size"] or (sha is not None and sha != entry["sha256"]):
            raise BackendError(
                f"checkpoint file {name} at {uri} differs from its source after the copy "
                f"({obj.size} bytes, sha256 {sha}; sent {entry['size']}, {entry['sha256']})"
            )


def _head_sha256(store: ObjectStore, key: str) -> str | None:
    head = store.head(key)
    return head.sha256 if head is not None else None


__all__ = ["checkpoint_files", "copy_checkpoint", "open_checkpoint"]
