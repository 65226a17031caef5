"""The object-store seam: what channel sync and downloads need from S3 or Azure Blob.

A store is one bucket or one container; keys are ``/``-separated names inside it. Each
implementation (``S3Store`` in ``backends/aws/s3.py``, ``BlobStore`` in
``backends/azure/storage.py``) maps its SDK's errors into cloudtrain's tree and owns its
checksum mechanics and its concurrency; ``cloudtrain.sync`` is written once on top.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

#: Bytes sent since the last call, for a progress bar; called from worker threads.
OnBytes = Callable[[int], None]


@dataclass(frozen=True)
class StoredObject:
    """An object as the store reports it; ``sha256`` (hex) only where the store keeps one."""

    key: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class LocalFile:
    """A local file to put at ``key``, as it was stat'ed when the channel was read.

    ``sha256`` is None only when the store said (``needs_sha256``) it can send the file
    without it: the store then hashes the file in the read that sends it, and
    ``put_files`` reports that sha256 (one read, one hash per file).
    """

    key: str
    path: Path
    stat: os.stat_result
    sha256: str | None


class ObjectStore(Protocol):
    """One bucket or container. Every method raises cloudtrain's errors, never an SDK's."""

    #: Whether ``list`` reports each object's sha256: then a missing or different one
    #: means the object is not what the manifest says. ``head`` reports it wherever the
    #: store keeps one (S3: single-PUT objects), listed or not.
    lists_sha256: bool
    #: Whether the sha256 that ``list`` and ``head`` report was computed or checked by the
    #: store against the bytes it holds (S3: a single PUT's checksum, which S3 checks on
    #: arrival; a folder: hashed when read). Where not (Blob: metadata the uploader wrote,
    #: saying what was meant to arrive), only reading an object back proves what it holds.
    sha256_checked: bool

    def name(self, key: str) -> str:
        """``key`` as people read it in logs and errors (``s3://bucket/key``, ``container/key``)."""
        ...

    def uri(self, key: str) -> str:
        """``key`` as the training job is given it (``s3://bucket/key``; a datastore path)."""
        ...

    def needs_sha256(self, size: int) -> bool:
        """Whether ``put_files`` needs a file of ``size`` bytes hashed before it sends it."""
        ...

    def key_problem(self, key: str) -> str | None:
        """Why the store would keep an object put at ``key`` under another name or not at
        all (too long, a character it rewrites), or None when it keeps it as it is."""
        ...

    def put_files(
        self, files: Iterable[LocalFile], progress: OnBytes | None = None
    ) -> dict[str, StoredObject]:
        """Upload every file, checksum-checked by the service, many at once; the first
        failure cancels the rest. ``files`` is consumed while earlier ones upload. Returns,
        by key, size and sha256 of the files whose bytes the store hashed as it sent them
        (every file handed without a sha256, at least; one missing is read again by the
        caller): those describe what was stored better than an earlier hash does."""
        ...

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """One small object (a manifest), overwritten, checksum-checked by the service."""
        ...

    def head(self, key: str) -> StoredObject | None:
        """The object at ``key``, or None when there is none."""
        ...

    def list(self, prefix: str) -> list[StoredObject]:
        """Every object whose key starts with ``prefix`` (folder markers left out)."""
        ...

    def delete(self, keys: Sequence[str]) -> None:
        """Remove these objects; one already gone is not an error."""
        ...

    def read(self, key: str) -> bytes | None:
        """A small object's bytes (a manifest), or None when there is none."""
        ...

    def download_files(self, targets: Iterable[tuple[str, Path]]) -> None:
        """Write each object to its local path (replaced), many at once, each checked
        against the checksum the store keeps for it where it keeps one."""
        ...
