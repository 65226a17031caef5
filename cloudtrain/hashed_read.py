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


class HashedRead:
    """``path`` opened for reading; every byte read goes through sha256 (and MD5 with
    ``md5=True``). Seeking is allowed only before the first read (an SDK asking the size),
    so the hash is always of the file from its first byte, in order."""

    def __init__(self, path: Path, *, md5: bool = False) -> None:
        self._file: BinaryIO = path.open("rb")
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self.size = 0  # bytes read so far

    def read(self, amount: int = -1) -> bytes:
        data = self._file.read(amount)
        self._sha256.update(data)
        if self._md5 is not None:
            self._md5.update(data)
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

    def md5(self) -> bytes:
        """MD5 of everything read so far (``md5=True`` only)."""
        assert self._md5 is not None, "HashedRead(md5=True) keeps an MD5"
        return self._md5.digest()

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
