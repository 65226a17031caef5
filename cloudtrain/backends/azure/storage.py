"""Azure Blob Storage as an object store: MD5-checked requests, sha256 kept on each blob.

``BlobStore`` is the ``cloudtrain.objectstore.ObjectStore`` for one container (the blob
side of an Azure ML datastore); channel sync is written once on top of it
(``cloudtrain.sync``). Every request carries an MD5 of its body that the service checks
(the SDK's ``validate_content``: the whole blob, or each block of a big one); the blob
keeps the file's sha256 (metadata: MD5 alone is too weak to trust), so a listing says
whether a blob is the manifest's. A download is checked against the blob's Content-MD5,
or its sha256 where it has no Content-MD5. Every file is read once, and
hashed and sent from the same bytes, so what the manifest records is what the service
took: files up to ``IN_MEMORY_MAX_BYTES`` whole (with the file's MD5 as Content-MD5),
bigger ones block by block (``HashedRead`` keeps the file's sha256 as the blocks are
read, each block is staged with its own MD5 for the service to check, and the block list
is committed with the sha256 once every block is in). A block-list blob gets no
Content-MD5 (the service computes one only for a blob sent whole): a whole-file MD5
would be a second hash pass over every big file, the slowest of the hashes here, while
the sha256 already says what the blob must hold.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cloudtrain.backends.azure.errors import TRANSIENT_STATUS, text
from cloudtrain.errors import BackendError, ConfigError, TransientError
from cloudtrain.hashed_read import HashedRead
from cloudtrain.objectstore import LocalFile, OnBytes, StoredObject
from cloudtrain.store import CHUNK_BYTES, sha256_file

if TYPE_CHECKING:
    from azure.storage.blob import BlobProperties, ContainerClient

MiB = 1024 * 1024
#: Files in flight at once. azure-core's requests transport pools 10 connections per
#: host; more threads than that only churn connections.
MAX_CONCURRENCY = 8
#: Requests in flight for one big file's blocks (the SDK's ``max_concurrency``).
BLOCK_CONCURRENCY = 4
#: Files up to this size are read once into memory, hashed and sent from the same bytes:
#: the MD5 the service checks is the manifest's content, whatever happens to the file.
#: Bigger files are read once in blocks (each block MD5-checked) and must not change
#: while they upload. Memory bound: MAX_CONCURRENCY x this.
IN_MEMORY_MAX_BYTES = 32 * MiB
#: A big file's blocks (the SDK's default size). Memory bound: MAX_CONCURRENCY files x
#: (BLOCK_CONCURRENCY + 1) blocks.
BLOCK_BYTES = 4 * MiB
#: Blob Storage's limit on a blob name, in characters.
MAX_BLOB_NAME = 1024
#: The blob metadata key holding the file's sha256 (MD5 alone is too weak to trust).
SHA256_METADATA = "sha256"
#: Hierarchical-namespace (ADLS Gen2) accounts mark folders with this metadata.
FOLDER_METADATA = "hdi_isfolder"
#: The config fields blob errors blame.
DATASTORE_FIELD = "azure.datastore"
CREDENTIALS_FIELD = "azure.credentials_block"

_T = TypeVar("_T")
#: azure-core's progress hook: bytes sent so far, and the total when known.
_Hook = Callable[[int, int | None], None]


class BlobStore:
    """One container as an ObjectStore; ``azure.datastore`` is the field its errors blame.

    ``in_memory_max_bytes`` and ``block_bytes`` can be given (tests lower them).
    """

    lists_sha256 = True
    #: The sha256 is metadata this store wrote next to the bytes; the service checked only
    #: each request's MD5 in transit. A blob's content is proven by reading it back.
    sha256_checked = False

    def __init__(
        self,
        container: ContainerClient,
        in_memory_max_bytes: int = IN_MEMORY_MAX_BYTES,
        block_bytes: int = BLOCK_BYTES,
    ) -> None:
        self.container, self.in_memory_max_bytes = container, in_memory_max_bytes
        self.block_bytes = block_bytes

    def name(self, key: str) -> str:
        return f"{self.container.container_name}/{key}"

    def uri(self, key: str) -> str:
        return key  # the path inside the datastore, which is how Azure ML names it

    def needs_sha256(self, size: int) -> bool:
        return False  # every file is hashed in the read that sends it

    def key_problem(self, key: str) -> str | None:
        if "\\" in key:
            return "Blob Storage reads a backslash in a blob name as '/', a folder separator"
        if len(key) > MAX_BLOB_NAME:
            return f"its blob name would be longer than {MAX_BLOB_NAME} characters"
        return None

    def put_files(
        self, files: Iterable[LocalFile], progress: OnBytes | None = None
    ) -> dict[str, StoredObject]:
        received: dict[str, StoredObject] = {}

        def put(file: LocalFile) -> None:
            hook = _hook(progress) if progress else None
            with self._errors(f"uploading {self.name(file.key)}"):
                received[file.key] = self._put_file(file, hook)

        _run_all(put, files)
        return received

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        sha256 = hashlib.sha256(data).hexdigest()
        with self._errors(f"writing {self.name(key)}"):
            self._put(key, data, sha256, content_type)

    def head(self, key: str) -> StoredObject | None:
        with self._errors(f"reading {self.name(key)}"), _missing_blob():
            return _stored(self.container.get_blob_client(key).get_blob_properties())
        return None

    def list(self, prefix: str) -> list[StoredObject]:
        with self._errors(f"listing {self.name(prefix)}"):
            return [
                _stored(blob)
                for blob in self.container.list_blobs(name_starts_with=prefix, include=["metadata"])
                # Folder markers of hierarchical-namespace accounts hold nothing.
                if (blob.metadata or {}).get(FOLDER_METADATA, "").lower() != "true"
            ]

    def delete(self, keys: Sequence[str]) -> None:
        """One DELETE each rather than a blob batch, which accounts with a hierarchical
        namespace (ADLS Gen2 datastores) refuse."""

        def delete(key: str) -> None:
            with _missing_blob():  # already gone is what we wanted
                self.container.delete_blob(key, delete_snapshots="include")

        with self._errors(f"deleting {len(keys)} blobs from {self.name('')}"):
            _run_all(delete, keys)

    def read(self, key: str) -> bytes | None:
        with self._errors(f"reading {self.name(key)}"), _missing_blob():
            return self.container.download_blob(key).readall()
        return None

    def download_files(self, targets: Iterable[tuple[str, Path]]) -> None:
        def download(target: tuple[str, Path]) -> None:
            key, path = target
            with self._errors(f"downloading {self.name(key)}"), path.open("wb") as handle:
                stream = self.container.download_blob(key, max_concurrency=BLOCK_CONCURRENCY)
                stream.readinto(handle)
            _check_download(self.name(key), path, stream.properties)

        _run_all(download, targets)

    def _put_file(self, file: LocalFile, hook: _Hook | None) -> StoredObject:
        """Upload one file, read once; what the service took, as hashed in that read."""
        if file.stat.st_size > self.in_memory_max_bytes:
            return self._put_blocks(file, hook)
        data = file.path.read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()  # the file may have changed since
        self._put(file.key, data, sha256, hook=hook)
        return StoredObject(file.key, len(data), sha256)

    def _put_blocks(self, file: LocalFile, hook: _Hook | None) -> StoredObject:
        """A big file read once, block by block, hashed as read; BLOCK_CONCURRENCY blocks
        staged at once (each MD5-checked by the service), then the list committed with
        the file's sha256. A file that changed meanwhile is not committed."""
        from azure.storage.blob import BlobBlock

        blob = self.container.get_blob_client(file.key)
        ids: list[str] = []
        sent = 0
        with (
            HashedRead(file.path) as read,
            ThreadPoolExecutor(BLOCK_CONCURRENCY, thread_name_prefix="cloudtrain-block") as pool,
        ):
            staging: dict[Future[Any], int] = {}  # block -> its size
            try:
                while block := read.read(self.block_bytes):
                    ids.append(f"{len(ids):08d}")  # one length for every id, as Blob wants
                    stage = pool.submit(blob.stage_block, ids[-1], block, validate_content=True)
                    staging[stage] = len(block)
                    # Read ahead at most one block more than is being sent.
                    room = len(staging) <= BLOCK_CONCURRENCY
                    done, _ = wait(staging, 0 if room else None, return_when=FIRST_COMPLETED)
                    for staged in done:
                        staged.result()  # the first failure stops the reading
                        sent += staging.pop(staged)
                        if hook is not None:
                            hook(sent, file.stat.st_size)
                for staged in list(staging):
                    staged.result()
            finally:
                for staged in staging:
                    staged.cancel()  # after a failure, what has not started
            read.require_unchanged(file.stat)  # before the list is committed
        blob.commit_block_list(
            [BlobBlock(block_id) for block_id in ids],
            metadata={SHA256_METADATA: read.sha256()},
        )
        if hook is not None:
            hook(read.size, read.size)
        return StoredObject(file.key, read.size, read.sha256())

    def _put(
        self,
        key: str,
        data: bytes,
        sha256: str,
        content_type: str | None = None,
        *,
        hook: _Hook | None = None,
    ) -> None:
        """One blob, overwritten, in one request (``data`` is at most IN_MEMORY_MAX_BYTES,
        under the SDK's single-put size). ``validate_content`` sends the body's MD5 for the
        service to check, and the service keeps that MD5 as the blob's Content-MD5: no
        second MD5 of the same bytes here."""
        from azure.storage.blob import ContentSettings

        self.container.upload_blob(
            key,
            data,
            overwrite=True,
            validate_content=True,
            content_settings=ContentSettings(content_type=content_type),
            metadata={SHA256_METADATA: sha256},
            progress_hook=hook,
        )

    def _errors(self, what: str) -> AbstractContextManager[None]:
        return _blob_errors(what, self.container.container_name)


# -- helpers ---------------------------------------------------------------------------


def _run_all(work: Callable[[_T], None], items: Iterable[_T]) -> None:
    """``work`` on every item, MAX_CONCURRENCY at a time, submitted as ``items``
    yields them; the first failure stops the submitting and cancels what waits."""
    failing = threading.Event()

    def note(future: Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            failing.set()

    futures: list[Future[None]] = []
    with ThreadPoolExecutor(MAX_CONCURRENCY, thread_name_prefix="cloudtrain-blob") as pool:
        try:
            for item in items:
                if failing.is_set():
                    break
                futures.append(pool.submit(work, item))
                futures[-1].add_done_callback(note)
            wait(futures, return_when=FIRST_EXCEPTION)
        finally:
            for future in futures:
                future.cancel()  # what has not started, after a failure
    for future in futures:
        if not future.cancelled():
            future.result()  # raises the failure


def _hook(progress: OnBytes) -> _Hook:
    """The SDK reports bytes sent so far per blob; progress wants increments."""
    sent = 0

    def hook(current: int, total: int | None) -> None:
        nonlocal sent
        progress(current - sent)
        sent = current

    return hook


def _stored(blob: BlobProperties) -> StoredObject:
    return StoredObject(blob.name, int(blob.size or 0), (blob.metadata or {}).get(SHA256_METADATA))


def _check_download(name: str, path: Path, properties: BlobProperties) -> None:
    """The downloaded file against the blob's Content-MD5, or, on a blob without one (a
    big file cloudtrain sent in blocks), against the sha256 it keeps in its metadata."""
    md5 = properties.content_settings.content_md5
    if md5:
        if _file_md5(path) != bytes(md5):
            raise BackendError(f"{name}: the download does not match the blob's MD5")
        return
    sha256 = (properties.metadata or {}).get(SHA256_METADATA)
    if sha256 and sha256_file(path) != sha256:
        raise BackendError(f"{name}: the download does not match the blob's sha256")


def _file_md5(path: Path) -> bytes:
    md5 = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            md5.update(chunk)
    return md5.digest()


# -- errors ----------------------------------------------------------------------------


def _error_code(exc: Any) -> str:
    return text(getattr(exc, "error_code", None))


@contextmanager
def _missing_blob() -> Iterator[None]:
    """Let a missing blob pass (the caller says what that means); a missing container is
    still an error (the datastore is wrong)."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        yield
    except ResourceNotFoundError as exc:
        if _error_code(exc) != "BlobNotFound":
            raise


@contextmanager
def _blob_errors(what: str, container: str) -> Iterator[None]:
    """Map azure-core's errors into cloudtrain's tree; the field names what to fix."""
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    try:
        yield
    except ResourceNotFoundError as exc:
        if _error_code(exc) == "ContainerNotFound":
            raise ConfigError(
                DATASTORE_FIELD, f"container {container!r} does not exist ({what})"
            ) from exc
        raise BackendError(f"{what}: {_message(exc)}") from exc
    except ClientAuthenticationError as exc:
        if exc.status_code is None:  # no response: the credential itself failed
            raise ConfigError(CREDENTIALS_FIELD, f"no usable Azure credential ({what})") from exc
        raise ConfigError(
            DATASTORE_FIELD,
            f"access denied to container {container!r} ({what}); the identity needs the "
            "Storage Blob Data Contributor role on the datastore's storage account",
        ) from exc
    except HttpResponseError as exc:
        message = f"{what}: {exc.status_code} {_error_code(exc)}: {_message(exc)}"
        if exc.status_code in TRANSIENT_STATUS:
            raise TransientError(message) from exc
        if _error_code(exc) == "Md5Mismatch" or "md5" in _message(exc).lower():
            message += " (the content did not match its MD5: damaged on the way?)"
        raise BackendError(message) from exc
    except (ServiceRequestError, ServiceResponseError) as exc:  # refused, reset, timed out
        raise TransientError(f"{what}: {exc}") from exc
    except AzureError as exc:
        raise BackendError(f"{what}: {exc}") from exc


def _message(exc: Any) -> str:
    """The service's one-line message, without the request id and XML that follow it."""
    text = str(getattr(exc, "message", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
