"""Data channels to an object store, written once for S3 and Azure Blob; and back.

A channel lands under ``{prefix}/`` in a bucket or container (what the training job
reads) and is described by a manifest (relative path -> sha256 and size) kept *outside*
that prefix, so the job never downloads it. The manifest's own sha256 is the channel's
digest, the same one the local backend computes for the same content.

One run of ``sync_channel``:

1. hash the local files (a stat cache skips files whose size and mtime are unchanged);
2. read the previous manifest: when the local content has the same digest, stop there
   (one GET, no LIST, no PUT). Otherwise, or with ``verify``, LIST the prefix: a file is
   uploaded unless its object has its size and its sha256, as the store recorded it
   (Blob lists it; S3 answers a HEAD, asked only of objects the manifest does not
   describe) or else as the manifest says. An object deleted or replaced by hand comes
   back; the objects an interrupted upload completed are not sent again;
3. upload through the store: many files in flight, a checksum with every request for the
   service to verify. A file whose size shows it changed and that the store can send
   unhashed (S3 multipart, Blob) is not read here at all: the store hashes it in the
   read that sends it and reports its sha256 (one read, one hash per file);
4. delete keys under the prefix that are no longer in the channel;
5. write the manifest last: it describes only what the store holds whole.

``download_prefix`` brings a prefix back, checked by the store's checksums: the way a
checkpoint is to move from one cloud's store to another's (nothing calls it in a run yet).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.channel_files import channel_files
from cloudtrain.errors import BackendError, ConfigError, Problem
from cloudtrain.objectstore import LocalFile, ObjectStore, StoredObject
from cloudtrain.results import ChannelData
from cloudtrain.store import PARQUET_NAME, HashCache, manifest_json, sha256_file

if TYPE_CHECKING:
    import pandas as pd

MiB = 1024 * 1024
#: A progress bar on a terminal for uploads at least this big or this many files.
PROGRESS_MIN_BYTES = 64 * MiB
PROGRESS_MIN_FILES = 200
#: The stat/hash cache file each cloud keeps under its cache folder.
HASH_CACHE_NAME = "hash-cache.json"
#: Deleted keys logged one by one; the rest are counted.
DELETED_LOGGED = 10
#: HEADs in flight at once when objects must be checked one by one (S3 lists no checksums).
CHECKSUM_CONCURRENCY = 16

_Stat = tuple[str, Path, os.stat_result]
_Manifest = dict[str, dict[str, Any]]


# -- upload ----------------------------------------------------------------------------


def sync_channel(
    store: ObjectStore,
    *,
    channel: str,
    source: Path | pd.DataFrame,
    prefix: str,
    manifest_key: str,
    cache_dir: Path,
    progress: bool | None = None,
    verify: bool = False,
    log: Callable[[str], None] = print,
) -> ChannelData:
    """Make ``{prefix}/`` in ``store`` hold exactly ``source``, uploading only changes.

    A DataFrame becomes one ``data.parquet``. ``progress=None`` shows a bar only on a
    terminal and only for a big channel. When the local content matches the manifest in
    the store, the prefix is trusted without a LIST unless ``verify`` (objects deleted or
    replaced by hand).
    """
    prefix, manifest_key = prefix.strip("/"), manifest_key.strip("/")
    if not prefix or manifest_key.startswith(prefix + "/"):
        # Everything under the prefix that is not in the channel gets deleted.
        raise ValueError(f"prefix {prefix!r} must be non-empty and not hold the manifest")
    with channel_source(channel, source, cache_dir) as files:
        return _Sync(store, channel, files, prefix, manifest_key, log).run(progress, verify)


class _Sync:
    """One channel's sync; the steps share the store, the names and the hash cache."""

    def __init__(
        self,
        store: ObjectStore,
        channel: str,
        files: ChannelSource,
        prefix: str,
        manifest_key: str,
        log: Callable[[str], None],
    ) -> None:
        self.store, self.channel, self.files = store, channel, files
        self.prefix, self.manifest_key, self.log = prefix, manifest_key, log
        self.where = store.name(prefix + "/")

    def run(self, progress: bool | None, verify: bool) -> ChannelData:
        store, listing = self.store, self.prefix + "/"
        # The manifest in the store and the files here, found at the same time.
        with ThreadPoolExecutor(2, thread_name_prefix="cloudtrain-sync") as pool:
            read = pool.submit(read_manifest, store, self.manifest_key)
            listed = pool.submit(store.list, listing) if verify else None
            stats = [(relative, path, path.stat()) for relative, path in self.files.list_files()]
            self._check_keys(stats)
            previous, previous_digest = read.result()
            total_bytes = sum(stat.st_size for _, _, stat in stats)
            if listed is None and previous_digest is not None:
                # Same content as the manifest says the store holds: one GET, nothing else.
                same = digest_if_unchanged(stats, self.files.hashes, previous_digest)
                if same is not None:
                    self.log(f"{self.channel}: unchanged, {len(stats)} files at {self.where}")
                    return self._result(same, len(stats), total_bytes, [], unchanged=True)
            remote = (listed or pool.submit(store.list, listing)).result()
        remote = self._with_checksums(remote, stats, previous)
        show = progress if progress is not None else is_big_on_a_terminal(len(stats), total_bytes)
        bar = Progress(f"upload {self.channel}", enabled=show)
        entries, sent = self._upload(stats, previous, remote, bar)

        wanted = {f"{self.prefix}/{relative}" for relative in entries}
        stale = sorted(obj.key for obj in remote if obj.key not in wanted)
        self._delete(stale)

        manifest = manifest_json(dict(sorted(entries.items()))).encode()
        digest = hashlib.sha256(manifest).hexdigest()
        if digest != previous_digest:
            store.put_bytes(self.manifest_key, manifest, "application/json")
        unchanged = not sent and not stale and digest == previous_digest
        if unchanged:
            self.log(f"{self.channel}: unchanged, {len(entries)} files at {self.where}")
        else:
            self.log(
                f"{self.channel}: uploaded {len(sent)} of {len(entries)} files "
                f"({human_size(sum(sent))}) to {self.where}"
            )
        return self._result(digest, len(entries), total_bytes, sent, unchanged=unchanged)

    def _check_keys(self, stats: list[_Stat]) -> None:
        """Refuse, before anything is sent, files the store would keep under another name:
        the job would not find them, and the next sync would delete them as stale."""
        problems = [
            Problem(f"data.{self.channel}", f"{relative}: {why}")
            for relative, _, _ in stats
            if (why := self.store.key_problem(f"{self.prefix}/{relative}"))
        ]
        if problems:
            raise ConfigError(problems=problems)

    def _with_checksums(
        self, remote: list[StoredObject], stats: list[_Stat], previous: _Manifest
    ) -> list[StoredObject]:
        """``remote`` with the stored sha256 of the objects only a checksum can vouch for.

        An object the manifest does not describe (an upload interrupted before the
        manifest was written) but with the local file's size may be that file, already
        sent: where the listing carries no checksums (S3), the object's own is asked for,
        many HEADs at once, only for those. A listing that carries them costs nothing more.
        """
        if self.store.lists_sha256:
            return remote
        sizes = {f"{self.prefix}/{relative}": stat.st_size for relative, _, stat in stats}
        vouched = {
            f"{self.prefix}/{relative}": entry["size"] for relative, entry in previous.items()
        }
        unknown = [
            obj.key
            for obj in remote
            if obj.sha256 is None
            and sizes.get(obj.key) == obj.size
            and vouched.get(obj.key) != obj.size
        ]
        if not unknown:
            return remote
        with ThreadPoolExecutor(CHECKSUM_CONCURRENCY, thread_name_prefix="cloudtrain-head") as pool:
            headed = {obj.key: obj for obj in pool.map(self.store.head, unknown) if obj}
        return [headed.get(obj.key, obj) for obj in remote]

    def _upload(
        self, stats: list[_Stat], previous: _Manifest, remote: list[StoredObject], bar: Progress
    ) -> tuple[_Manifest, list[int]]:
        """Send what changed; the manifest's entries and the sizes of the files sent.

        A file is skipped when its object has its size and its sha256: the stored
        checksum where the store reports one, else the manifest's entry.
        """
        store, hashes = self.store, self.files.hashes
        there = {obj.key: obj for obj in remote}
        entries: _Manifest = {}
        sent: list[int] = []

        def sha256(path: Path, stat: os.stat_result) -> str:
            return hashes.sha256(path, stat) if hashes else sha256_file(path)

        def stored_sha256(obj: StoredObject, known: dict[str, Any]) -> str | None:
            if obj.sha256 is not None or store.lists_sha256:
                return obj.sha256  # the store's own record of the bytes it holds
            return known.get("sha256") if known.get("size") == obj.size else None

        unhashed: dict[str, tuple[str, Path, os.stat_result]] = {}  # key -> the file

        def changed() -> Iterator[LocalFile]:
            for relative, path, stat in stats:
                key, known = f"{self.prefix}/{relative}", previous.get(relative) or {}
                obj = there.get(key) or StoredObject(key, size=-1)  # missing: no size matches
                expected = stored_sha256(obj, known) if obj.size == stat.st_size else None
                digest = None
                if expected is not None or store.needs_sha256(stat.st_size):
                    digest = sha256(path, stat)
                    entries[relative] = {"sha256": digest, "size": stat.st_size}
                    if expected == digest:
                        continue
                else:
                    unhashed[key] = (relative, path, stat)  # hashed as it is sent
                sent.append(stat.st_size)
                bar.add_total(stat.st_size)
                yield LocalFile(key, path, stat, digest)

        try:
            received = store.put_files(changed(), bar.advance if bar.enabled else None)
            for key, (relative, path, stat) in unhashed.items():
                stored = received.get(key)
                if stored is None or stored.sha256 is None:  # a store that did not say
                    entries[relative] = {"sha256": sha256(path, stat), "size": stat.st_size}
                elif hashes and stored.size == stat.st_size:  # the next run reads nothing
                    hashes.remember(path, stat, stored.sha256)
        finally:
            bar.close()
            if hashes:
                hashes.save()
        for relative, _, _ in stats:
            stored = received.get(f"{self.prefix}/{relative}")
            if stored is not None and stored.sha256 is not None:  # what the service took
                entries[relative] = {"sha256": stored.sha256, "size": stored.size}
        return entries, sent

    def _delete(self, keys: list[str]) -> None:
        """Remove keys no longer in the channel: the job would otherwise read them."""
        if not keys:
            return
        self.store.delete(keys)
        for key in keys[:DELETED_LOGGED]:
            self.log(f"{self.channel}: deleted {self.store.name(key)} (no longer in the channel)")
        if len(keys) > DELETED_LOGGED:
            self.log(f"{self.channel}: ... and {len(keys) - DELETED_LOGGED} more deleted")

    def _result(
        self, digest: str, files: int, total_bytes: int, sent: list[int], *, unchanged: bool
    ) -> ChannelData:
        return ChannelData(
            channel=self.channel,
            uri=self.store.uri(self.prefix + "/"),
            digest=digest,
            files=files,
            bytes=total_bytes,
            copied_files=len(sent),
            copied_bytes=sum(sent),
            unchanged=unchanged,
            source=self.files.described,
        )


def read_manifest(store: ObjectStore, key: str) -> tuple[_Manifest, str | None]:
    """The previous manifest's entries and digest; nothing on the first upload."""
    body = store.read(key)
    if body is None:
        return {}, None
    try:
        files = json.loads(body)["files"]
    except (ValueError, KeyError, TypeError):
        return {}, None  # unreadable: upload everything and write a good one
    if not isinstance(files, dict) or not all(_is_entry(entry) for entry in files.values()):
        return {}, None
    return files, hashlib.sha256(body).hexdigest()


def _is_entry(entry: Any) -> bool:
    """A manifest entry as sync writes it: ``{"sha256": hex, "size": bytes}``."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("sha256"), str)
        and isinstance(entry.get("size"), int)
        and not isinstance(entry.get("size"), bool)
    )


def digest_if_unchanged(
    stats: list[_Stat], hashes: HashCache | None, previous_digest: str
) -> str | None:
    """The local manifest's digest when it equals the previous one, else None."""
    entries = {
        relative: {
            "sha256": hashes.sha256(path, stat) if hashes else sha256_file(path),
            "size": stat.st_size,
        }
        for relative, path, stat in stats
    }
    if hashes:
        hashes.save()
    digest = hashlib.sha256(manifest_json(dict(sorted(entries.items()))).encode()).hexdigest()
    return digest if digest == previous_digest else None


# -- download --------------------------------------------------------------------------


def download_prefix(store: ObjectStore, prefix: str, destination: Path) -> list[Path]:
    """Download every object under ``prefix`` into ``destination``, keeping relative paths.

    Keys that would land outside ``destination`` (``..``) are refused before anything is
    written; folder markers (keys ending in ``/``) hold nothing and are skipped. Each file
    appears whole or not at all. Returns the files written, sorted.
    """
    prefix = prefix.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    root = destination.resolve()
    targets: dict[str, Path] = {}
    for obj in store.list(prefix):
        if obj.key.endswith("/"):
            continue
        target = (root / obj.key[len(prefix) :]).resolve()
        if not target.is_relative_to(root) or target == root:
            raise BackendError(f"{store.name(obj.key)} would be written outside {root}")
        targets[obj.key] = target
    temporary: dict[str, Path] = {}
    try:
        for key, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            os.close(fd)
            temporary[key] = Path(name)
        store.download_files(temporary.items())
        for key, written in temporary.items():
            os.replace(written, targets[key])
    finally:
        for left in temporary.values():
            left.unlink(missing_ok=True)
    return sorted(targets.values())


# -- the channel's files ---------------------------------------------------------------


@dataclass(frozen=True)
class ChannelSource:
    """A channel's files, how to hash them, and how to name the source in logs."""

    list_files: Callable[[], list[tuple[str, Path]]]
    hashes: HashCache | None
    described: str


@contextmanager
def channel_source(
    channel: str, source: Path | pd.DataFrame, cache_dir: Path
) -> Iterator[ChannelSource]:
    """A folder or file (hashes remembered), or a DataFrame written as one parquet file."""
    if isinstance(source, Path):
        yield ChannelSource(
            list_files=lambda: channel_files(channel, source),
            hashes=HashCache(cache_dir / HASH_CACHE_NAME),
            described=str(source),
        )
        return
    with tempfile.TemporaryDirectory(prefix="cloudtrain-parquet-") as tmp:
        path = Path(tmp) / PARQUET_NAME
        source.to_parquet(path, engine="pyarrow", index=True)
        yield ChannelSource(
            list_files=lambda: [(PARQUET_NAME, path)],
            hashes=None,  # a new temp file each time: nothing to remember
            described=f"DataFrame {source.shape[0]}x{source.shape[1]}",
        )


# -- progress --------------------------------------------------------------------------


def is_big_on_a_terminal(files: int, total_bytes: int) -> bool:
    """Whether a progress bar is worth drawing: on a terminal, for a big upload."""
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return False
    return total_bytes >= PROGRESS_MIN_BYTES or files >= PROGRESS_MIN_FILES


class Progress:
    """A tqdm bar on stderr, opened at the first file to send."""

    def __init__(self, description: str, enabled: bool) -> None:
        self.description, self.enabled = description, enabled
        self._bar: Any = None
        self._lock = threading.Lock()

    def add_total(self, size: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=0,
                    desc=self.description,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    file=sys.stderr,
                    leave=False,
                )
            self._bar.total += size  # drawn at the next update, at most 10 times a second

    def advance(self, size: int) -> None:
        """``size`` more bytes sent (the stores call this from their worker threads)."""
        if self._bar is not None:
            with self._lock:
                self._bar.update(size)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def human_size(size: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
