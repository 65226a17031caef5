"""A content-addressed store on local disk: files by sha256, channels by manifest digest.

The local backend's "upload": every file is kept once under ``objects/<sha256>``, a
channel is a manifest (relative path -> sha256 and size) whose own sha256 names it, and
the folder the script reads is hard-linked from the objects. An unchanged channel has
the same digest, so nothing is hashed twice (a stat cache keyed on size and mtime) and
nothing is copied again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.errors import BackendError

if TYPE_CHECKING:
    import pandas as pd

CHUNK_BYTES = 1024 * 1024
PARQUET_NAME = "data.parquet"
#: How an entry left out of an archive is reported: a link that leaves the folder, names
#: nothing or loops, or a special file (FIFO, socket, device), which holds no data to pack.
SKIPPED_LINK = "left out of the archive:"


@dataclass(frozen=True)
class StoredChannel:
    digest: str
    path: Path
    files: int
    bytes: int
    copied_files: int
    copied_bytes: int
    unchanged: bool


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def walk_files(source: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, absolute path) for a file or every file under a folder, sorted."""
    if source.is_file():
        yield source.name, source
        return
    for path in sorted(source.rglob("*")):
        if path.is_file():
            yield path.relative_to(source).as_posix(), path


def manifest_json(entries: dict[str, dict[str, Any]]) -> str:
    """The canonical manifest text; its sha256 is the channel's digest on every backend."""
    return json.dumps({"files": entries}, sort_keys=True, separators=(",", ":"))


class HashCache:
    """sha256 of local files, remembered by path, size and mtime_ns in one JSON file.

    Hashing is the only cost of an unchanged channel, so a file whose size and mtime
    are what they were when it was last hashed is not read again. Thread-safe.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, list[Any]] | None = None
        self._dirty = False
        self._lock = threading.Lock()

    def _load(self) -> dict[str, list[Any]]:
        if self._entries is None:
            try:
                loaded = json.loads(self.path.read_text())
            except (OSError, ValueError):
                loaded = {}
            self._entries = loaded if isinstance(loaded, dict) else {}
        return self._entries

    def sha256(self, path: Path, stat: os.stat_result | None = None) -> str:
        """The file's sha256, read from disk only when its size or mtime changed."""
        stat = path.stat() if stat is None else stat
        key = str(path.resolve())
        with self._lock:
            cached = self._load().get(key)
        if cached and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
            return str(cached[2])
        digest = sha256_file(path)
        self.remember(path, stat, digest)
        return digest

    def remember(self, path: Path, stat: os.stat_result, digest: str) -> None:
        """Record a sha256 computed elsewhere (while the file uploaded), for ``stat``:
        if the file changed since, its size or mtime no longer match and it is read again."""
        key = str(path.resolve())
        with self._lock:
            self._load()[key] = [stat.st_size, stat.st_mtime_ns, digest]
            self._dirty = True

    def save(self) -> None:
        """Write the cache if anything new was hashed (atomically: readers never see half)."""
        with self._lock:
            if self._entries is not None and self._dirty:
                atomic_write(self.path, json.dumps(self._entries))
                self._dirty = False


class ContentStore:
    """Objects, manifests and channel folders under one root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "store" / "objects"
        self.manifests = root / "store" / "manifests"
        self.channels = root / "channels"
        self.latest = root / "store" / "latest"
        self.hashes = HashCache(root / "store" / "stat-cache.json")

    # -- storing -------------------------------------------------------------------

    def _object_path(self, sha: str) -> Path:
        return self.objects / sha[:2] / sha

    def _put_object(self, sha: str, source: Path) -> bool:
        """Keep one read-only copy of the content; False when it was already there."""
        target = self._object_path(sha)
        if target.exists():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
        return True

    def put_path(self, key: str, source: Path) -> StoredChannel:
        """Store a file or folder as channel ``key`` (``pipeline/channel``), read as every
        backend reads a channel (``cloudtrain.channel_files``: links, empty folders)."""
        from cloudtrain.channel_files import channel_files

        entries: dict[str, dict[str, Any]] = {}
        copied_files = copied_bytes = 0
        for relative, path in channel_files(key.rpartition("/")[2], source):
            stat = path.stat()
            sha, size = self.hashes.sha256(path, stat), stat.st_size
            if self._put_object(sha, path):
                copied_files += 1
                copied_bytes += size
            entries[relative] = {"sha256": sha, "size": size}
        self.hashes.save()
        return self._commit(key, entries, copied_files, copied_bytes)

    def describe_path(self, key: str, source: Path) -> StoredChannel:
        """A channel the script reads where it is (input mode mount): the digest
        ``put_path`` would give it, from the same walk, and nothing copied into the store.
        ``path`` is the source itself."""
        from cloudtrain.channel_files import channel_files

        entries: dict[str, dict[str, Any]] = {}
        for relative, path in channel_files(key.rpartition("/")[2], source):
            stat = path.stat()
            entries[relative] = {"sha256": self.hashes.sha256(path, stat), "size": stat.st_size}
        self.hashes.save()
        digest = hashlib.sha256(manifest_json(entries).encode()).hexdigest()
        unchanged = self._record_latest(key, digest)
        return StoredChannel(
            digest=digest,
            path=source,
            files=len(entries),
            bytes=sum(int(entry["size"]) for entry in entries.values()),
            copied_files=0,
            copied_bytes=0,
            unchanged=unchanged,
        )

    def put_dataframe(self, key: str, frame: pd.DataFrame) -> StoredChannel:
        """Store a DataFrame as one parquet file (pyarrow), named data.parquet."""
        self.objects.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.objects, prefix=".tmp-", suffix=".parquet")
        os.close(fd)
        try:
            frame.to_parquet(tmp, engine="pyarrow", index=True)
            path = Path(tmp)
            sha, size = sha256_file(path), path.stat().st_size
            copied = self._put_object(sha, path)
        finally:
            os.unlink(tmp)
        entries = {PARQUET_NAME: {"sha256": sha, "size": size}}
        return self._commit(key, entries, int(copied), size if copied else 0)

    def _commit(
        self, key: str, entries: dict[str, dict[str, Any]], copied_files: int, copied_bytes: int
    ) -> StoredChannel:
        manifest = manifest_json(entries)
        digest = hashlib.sha256(manifest.encode()).hexdigest()
        manifest_path = self.manifests / f"{digest}.json"
        if not manifest_path.exists():
            atomic_write(manifest_path, manifest)
        folder = self._materialize(digest, entries)
        unchanged = self._record_latest(key, digest)
        return StoredChannel(
            digest=digest,
            path=folder,
            files=len(entries),
            bytes=sum(int(entry["size"]) for entry in entries.values()),
            copied_files=copied_files,
            copied_bytes=copied_bytes,
            unchanged=unchanged,
        )

    def _record_latest(self, key: str, digest: str) -> bool:
        """Record ``digest`` as the channel's latest; whether it was already."""
        latest = self.latest / f"{key}.digest"
        previous = latest.read_text().strip() if latest.exists() else None
        atomic_write(latest, digest)
        return previous == digest

    def _materialize(self, digest: str, entries: dict[str, dict[str, Any]]) -> Path:
        """The folder the script reads, hard-linked from the objects (copied across devices).
        One a script changed (a file added, removed, truncated: a script may write where it
        reads) is made again, so every run reads what the manifest says, as on the clouds,
        where each job gets its own copy."""
        folder = self.channels / digest
        if folder.is_dir():
            if _holds_exactly(folder, entries):
                return folder
            stale = Path(tempfile.mkdtemp(dir=self.channels, prefix=".tmp-stale-"))
            try:
                os.replace(folder, stale / "folder")
            except OSError:  # another process moved it first
                pass
            shutil.rmtree(stale, ignore_errors=True)
        self.channels.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.channels, prefix=".tmp-"))
        for relative, entry in entries.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            source = self._object_path(str(entry["sha256"]))
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
        try:
            os.replace(staging, folder)
        except OSError:  # another process materialized it first
            shutil.rmtree(staging, ignore_errors=True)
        return folder


def _holds_exactly(folder: Path, entries: dict[str, dict[str, Any]]) -> bool:
    """Whether a channel folder still holds the manifest's files, at their sizes, and
    nothing else (a stat per file; contents are the objects', read-only)."""
    found: dict[str, int] = {}
    for root, folders, files in os.walk(folder):
        for name in files:
            path = Path(root, name)
            mode = path.lstat()
            if not stat.S_ISREG(mode.st_mode):
                return False
            found[path.relative_to(folder).as_posix()] = mode.st_size
        for name in folders:
            if Path(root, name).is_symlink():
                return False
    return found == {name: int(entry["size"]) for name, entry in entries.items()}


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def tar_folder(folder: Path, archive: Path) -> list[str]:
    """A tar.gz with the folder's contents at its root, as SageMaker packs model.tar.gz.

    Links are never followed (a model folder is the script's to fill, a link in it could
    name /etc): one whose target stays inside ``folder`` is archived as a relative link,
    one that leaves it, points at nothing, loops or names a special file is left out.
    Special files (FIFOs, sockets, devices) are left out too: they hold no data, and an
    archive holding one is refused when unpacked. Returns those left out (``name ->
    target (why)`` or ``name (why)``) for the caller to warn about. The archive is written
    aside and renamed, so a failure leaves no half archive behind.
    """
    root = folder.resolve()
    skipped: list[str] = []
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=archive.parent, prefix=".tmp-", suffix=".tar.gz")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for path in _entries(folder):
                arcname = path.relative_to(folder).as_posix()
                if not path.is_symlink():
                    mode = path.lstat().st_mode
                    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
                        tar.add(path, arcname=arcname, recursive=False)
                    else:
                        skipped.append(f"{_short(arcname)} (a special file: {_kind(mode)})")
                    continue
                why = _link_left_out(path, root)
                if why:
                    skipped.append(f"{_short(arcname)} -> {_short(os.readlink(path))} ({why})")
                    continue
                target = path.resolve()
                info = tar.gettarinfo(path, arcname=arcname)
                info.linkname = os.path.relpath(target, path.parent.resolve())
                tar.addfile(info)
        os.replace(tmp, archive)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return skipped


def _link_left_out(path: Path, root: Path) -> str | None:
    """Why a link is left out of an archive of ``root``, or None when it is kept."""
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # ELOOP on 3.13, RuntimeError("Symlink loop") before
        return "it loops"
    if not target.is_relative_to(root):
        return "it leaves the folder"
    try:
        mode = target.stat().st_mode
    except OSError:
        return "it points at nothing"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return f"it names a special file: {_kind(mode)}"
    return None


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "not a file or folder"


def _short(text: str) -> str:
    """At most 60 characters of a name, its end kept (the part that differs)."""
    return text if len(text) <= 60 else "..." + text[-57:]


def _entries(folder: Path) -> list[Path]:
    """Every file, folder and link under ``folder``, sorted; links to folders not entered."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):  # followlinks=False
        base = Path(dirpath)
        found += [base / name for name in (*dirnames, *filenames)]
    return sorted(found)


def extract_archive(archive: Path, destination: Path) -> None:
    """Unpack a tar archive we did not write (a job's model.tar.gz) into ``destination``
    (replaced), whole or not at all, with tarfile's ``data`` filter: nothing lands outside
    it, no link leaves it, no device files or set-uid bits. BackendError names a member
    that tries."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=".tmp-"))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(staging, destination)
    except (tarfile.FilterError, tarfile.ReadError) as exc:
        raise BackendError(f"{archive} is refused: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
