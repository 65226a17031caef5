"""A checkpoint carried from one leg of a route to the next, digests checked.

Before the first attempt on another cloud (or another leg of the same cloud), everything
under the current leg's checkpoint location is copied into the next leg's, through the
object-store seam (``cloudtrain.objectstore``) each backend opens on its checkpoint
location (``checkpoint_store``): S3, an Azure datastore's container, or a local folder.

1. list the source; download each object into a temporary folder on this machine,
   checked against the checksum the source store keeps for it (``download_files``: S3's
   SHA-256 of a single PUT, Blob's sha256 metadata or Content-MD5) and hash each file (sha256);
2. check every name against the target (``key_problem``) before anything is changed
   there; delete the objects the target holds that the source does not, then upload each
   file with its checksum, which the target service checks on arrival (``put_files``): the
   target then holds exactly the source. An empty source empties the target, said so;
3. verify what the target holds, not what was meant to arrive: the listing must name
   exactly the files sent, with their sizes; each object's content is proven by the
   sha256 the target store checked itself where it has one (``sha256_checked``: S3's
   checksum of a single PUT, through HEAD; a folder hashes its files), and otherwise is
   read back and hashed here. A Blob target is always read back: the sha256 it lists is
   metadata the uploader wrote, and its Content-MD5 too is declared by the uploader (the
   service checks each request's MD5 in transit, not what it then keeps); an S3 object
   sent in parts has no whole-object SHA-256. That costs a second transfer of the
   checkpoint, the price of knowing the next attempt resumes from the same bytes.

Any difference is an error, and the next attempt is not started from that location.
The copy is described by a ``CheckpointCopy``: files, bytes, and a digest over
(relative path, sha256, size), the same form as a data channel's manifest, so the digest
of what left can be compared with that of what arrived.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from cloudtrain.errors import BackendError, ConfigError
from cloudtrain.objectstore import LocalFile, ObjectStore, StoredObject
from cloudtrain.results import CheckpointCopy
from cloudtrain.store import manifest_json, sha256_file
from cloudtrain.sync import CHECKSUM_CONCURRENCY, download_prefix, human_size

if TYPE_CHECKING:
    from cloudtrain.backend import LogSink
    from cloudtrain.route import ReadyLeg

_Entries = dict[str, dict[str, Any]]  # relative path -> {"sha256", "size"}


def open_checkpoint(leg: ReadyLeg) -> tuple[ObjectStore, str]:
    """The leg's checkpoint location as (store, prefix ending in ``/``)."""
    # ``checkpoint_store(config, uri) -> (store, prefix)``: optional, as a backend added by
    # a package may have no object store behind its checkpoints.
    opener = getattr(leg.leg.backend, "checkpoint_store", None)
    if opener is None:
        raise BackendError(
            f"the {leg.leg.cloud} backend cannot open its checkpoint location as an object "
            "store, so a checkpoint cannot follow the run there"
        )
    store, prefix = opener(leg.leg.config, leg.checkpoint_uri)
    prefix = prefix.strip("/")
    return store, f"{prefix}/" if prefix else ""


def checkpoint_files(leg: ReadyLeg, log: LogSink | None = None) -> int | None:
    """How many objects the leg's checkpoint location holds now, or None when that is not
    known: the backend cannot open it as a store (it then reports the count itself, as a
    backend without ``checkpoint_store`` may), or listing it failed.

    The count is evidence for the resume check, not a condition of training: the job
    writes its checkpoints with its own identity (a SageMaker role, a compute's managed
    identity), and an orchestrator that may not list them still runs a single-cloud route.
    A failure is logged and the attempt goes ahead; a copy between legs, which must read
    and write there, fails on it instead."""
    if getattr(leg.leg.backend, "checkpoint_store", None) is None:
        return None
    try:
        store, prefix = open_checkpoint(leg)
        return sum(1 for obj in store.list(prefix) if not obj.key.endswith("/"))
    except (BackendError, ConfigError) as exc:
        if log is not None:
            log(f"checkpoint files in {leg.checkpoint_uri} not counted ({exc})")
        return None


def copy_checkpoint(source: ReadyLeg, target: ReadyLeg, log: LogSink) -> CheckpointCopy:
    """Copy the checkpoint of ``source`` into ``target``'s location; see the module."""
    started = time.monotonic()
    from_store, from_prefix = open_checkpoint(source)
    to_store, to_prefix = open_checkpoint(target)
    with tempfile.TemporaryDirectory(prefix="cloudtrain-checkpoint-") as folder:
        root = Path(folder) / "source"
        downloaded = download_prefix(from_store, from_prefix, root)
        entries: _Entries = {}
        files: list[LocalFile] = []
        for path in downloaded:
            relative = path.relative_to(root).as_posix()
            stat = path.stat()
            sha = sha256_file(path)
            entries[relative] = {"sha256": sha, "size": stat.st_size}
            key = to_prefix + relative
            problem = to_store.key_problem(key)
            if problem:  # before anything at the target is touched
                raise BackendError(f"checkpoint file {relative} cannot be copied: {problem}")
            files.append(LocalFile(key=key, path=path, stat=stat, sha256=sha))
        # Folder markers (keys ending in "/") the source does not have go too.
        stale = [o.key for o in to_store.list(to_prefix) if o.key[len(to_prefix) :] not in entries]
        if stale:
            to_store.delete(stale)
        if files:
            to_store.put_files(files)
        _verify(to_store, to_prefix, entries, target.checkpoint_uri, Path(folder) / "back")
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
    removed = f" ({len(stale)} stale object(s) removed there)" if stale else ""
    if not entries:
        log(
            f"checkpoint: {copy.source} holds no files, so there is nothing to carry to "
            f"{target.leg.cloud}; {copy.target} is empty{removed} and the attempt there "
            "starts from the beginning"
        )
    else:
        log(
            f"checkpoint copied {source.leg.cloud} -> {target.leg.cloud}: {len(entries)} "
            f"file(s), {human_size(total)}, sha256 {digest[:12]}, {copy.source} -> "
            f"{copy.target}{removed}"
        )
    return copy


def _verify(store: ObjectStore, prefix: str, entries: _Entries, uri: str, scratch: Path) -> None:
    """The target holds exactly what was sent: the same names, sizes and sha256 of the
    bytes it holds (see the module for where each sha256 comes from)."""
    found = {obj.key[len(prefix) :]: obj for obj in store.list(prefix) if not obj.key.endswith("/")}
    if set(found) != set(entries):
        missing = sorted(set(entries) - set(found))[:3]
        extra = sorted(set(found) - set(entries))[:3]
        raise BackendError(
            f"checkpoint copy to {uri} does not match its source (missing {missing}, "
            f"extra {extra}); the next attempt is not started from it"
        )
    for name, obj in found.items():
        if obj.size != entries[name]["size"]:
            _differs(name, uri, f"{obj.size} bytes", f"{entries[name]['size']}")
    held = _checked_sha256(store, found)
    unproven = sorted(name for name in entries if held.get(name) is None)
    held.update(_read_back(store, prefix, unproven, scratch))
    for name, entry in entries.items():
        if held[name] != entry["sha256"]:
            _differs(name, uri, f"sha256 {held[name]}", f"sha256 {entry['sha256']}")


def _checked_sha256(store: ObjectStore, found: dict[str, StoredObject]) -> dict[str, str | None]:
    """By relative name, the sha256 the store checked against what it holds; None where it
    has none (or keeps only the uploader's word for it)."""
    if not store.sha256_checked:
        return {}
    held = {name: obj.sha256 for name, obj in found.items()}
    if store.lists_sha256:
        return held
    asked = [name for name, sha in held.items() if sha is None]
    with ThreadPoolExecutor(CHECKSUM_CONCURRENCY, thread_name_prefix="cloudtrain-verify") as pool:
        heads = pool.map(store.head, [found[name].key for name in asked])
        for name, head in zip(asked, heads, strict=True):
            held[name] = head.sha256 if head is not None else None
    return held


def _read_back(store: ObjectStore, prefix: str, names: list[str], scratch: Path) -> dict[str, str]:
    """The sha256 of each object as the store serves it now, downloaded and hashed."""
    if not names:
        return {}
    targets = [(prefix + name, scratch / name) for name in names]
    for _, path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
    store.download_files(targets)
    return {name: sha256_file(path) for name, (_, path) in zip(names, targets, strict=True)}


def _differs(name: str, uri: str, held: str, sent: str) -> NoReturn:
    raise BackendError(
        f"checkpoint file {name} at {uri} differs from its source after the copy ({held}; "
        f"sent {sent}); the next attempt is not started from it"
    )


__all__ = ["checkpoint_files", "copy_checkpoint", "open_checkpoint"]
