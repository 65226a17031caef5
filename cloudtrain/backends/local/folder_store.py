"""A folder on this machine as an ObjectStore: the local backend's checkpoint location.

Keys are ``/``-separated paths under the folder. It keeps no checksum of its own, so
``head`` hashes the file (sha256): a checkpoint copy then checks what arrived against what
left, as it does with S3 and Blob. ``list`` does not hash: counting a checkpoint's files
before every attempt must not read gigabytes. Each file is written whole or not at all
(a temporary file renamed into place).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cloudtrain.errors import BackendError
from cloudtrain.objectstore import LocalFile, OnBytes, StoredObject
from cloudtrain.store import sha256_file

#: The store's own half-written files: a name no script picks by chance (a checkpoint of
#: the user's called ``.tmp-1`` is copied like any other file).
PARTIAL_PREFIX = ".cloudtrain-partial-"


class FolderStore:
    """``root`` as a bucket; never follows a key out of it."""

    lists_sha256 = False  # list() does not hash (see the module); head() does
    sha256_checked = True  # head() hashes the file itself

    def __init__(self, root: Path) -> None:
        self.root = root

    def name(self, key: str) -> str:
        return str(self.root / key)

    def uri(self, key: str) -> str:
        return self.name(key)

    def needs_sha256(self, size: int) -> bool:
        return True

    def key_problem(self, key: str) -> str | None:
        try:
            self._path(key)
        except BackendError as exc:
            return str(exc)
        return None

    def put_files(
        self, files: Iterable[LocalFile], progress: OnBytes | None = None
    ) -> dict[str, StoredObject]:
        for file in files:
            target = self._path(file.key)
            with _os_errors(f"cannot write {target}"):
                _copy_whole(file.path, target)
            if file.sha256 is not None and sha256_file(target) != file.sha256:
                target.unlink(missing_ok=True)
                raise BackendError(f"{target} does not hold what was sent (sha256 differs)")
            if progress is not None:
                progress(file.stat.st_size)
        return {}

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=PARTIAL_PREFIX)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(name, target)

    def head(self, key: str) -> StoredObject | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return StoredObject(key, path.stat().st_size, sha256_file(path))

    def list(self, prefix: str) -> list[StoredObject]:
        if not self.root.is_dir():
            if self.root.exists():  # not an empty checkpoint: a broken location
                raise BackendError(f"{self.root} is not a folder")
            return []
        found = []
        # A link to a file is listed as that file's bytes (``latest.pt -> ckpt-5.pt``):
        # dropped, the next leg would miss the name the script resumes from. One that
        # leads out of the folder fails when read (``_path``), not silently.
        for path in sorted(self.root.rglob("*")):
            if not path.is_file() or path.name.startswith(PARTIAL_PREFIX):
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                found.append(StoredObject(key, path.stat().st_size))
        return found

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            link = self.root / key
            if link.is_symlink() and link.parent.resolve().is_relative_to(self.root.resolve()):
                link.unlink()  # the link itself, not the file it names
                continue
            self._path(key).unlink(missing_ok=True)

    def read(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def download_files(self, targets: Iterable[tuple[str, Path]]) -> None:
        for key, path in targets:
            source = self._path(key)
            if not source.is_file():
                raise BackendError(f"{source} is not there to download")
            with _os_errors(f"cannot read {source}"):
                _copy_whole(source, path)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()) or path == self.root.resolve():
            raise BackendError(f"key {key[:60]!r} leads out of {self.root}")
        return path


@contextmanager
def _os_errors(what: str) -> Iterator[None]:
    """An OSError (a location that is a file, no space, no permission) as a BackendError,
    which a checkpoint copy turns into a stopped run with its attempts reported."""
    try:
        yield
    except OSError as exc:
        raise BackendError(f"{what}: {exc.strerror or exc}") from exc


def _copy_whole(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=PARTIAL_PREFIX)
    os.close(fd)
    try:
        shutil.copyfile(source, name)
        os.replace(name, target)
    finally:
        Path(name).unlink(missing_ok=True)
