"""A file read once, front to back, hashed as it is read: the bytes an upload sends.

The stores hand a big file to their SDK through this reader (S3) or read it block by
block with it (Blob), so the manifest's sha256 comes from the very bytes that went out,
in the same read: no second pass over the file, and nothing to disagree if the file
changes while it uploads.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from cloudtrain.errors import BackendError


class HashedRead:
    """``path`` opened for reading; every byte read goes through sha256. Seeking is allowed
    only before the first read (an SDK asking the size), so the hash is always of the file
    from its first byte, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO = path.open("rb")
        self._sha256 = hashlib.sha256()
        self.size = 0  # bytes read so far

    def read(self, amount: int = -1) -> bytes:
        data = self._file.read(amount)
        self._sha256.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.size == 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if self.size:
            raise OSError("HashedRead: no seeking once reading has begun")
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def sha256(self) -> str:
        """Hex sha256 of everything read so far."""
        return self._sha256.hexdigest()

    def require_unchanged(self, before: os.stat_result) -> None:
        """Once the whole file was read: refuse it if it changed since ``before`` (its stat
        when the channel was listed). A file written while it was read is parts of two
        versions, each part's checksum right, that never existed together on disk."""
        after = self.path.stat()
        if (self.size, after.st_size, after.st_mtime_ns) != (
            before.st_size,
            before.st_size,
            before.st_mtime_ns,
        ):
            raise BackendError(f"{self.path} changed while it was uploading: run again")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> HashedRead:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
