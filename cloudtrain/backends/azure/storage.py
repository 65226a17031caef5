"""Data channels to Azure Blob Storage: upload what changed, MD5-checked, nothing when unchanged.

The blob side of an Azure ML datastore, built like the S3 channel upload
(``cloudtrain.backends.aws.s3``). A channel lands under ``{path_prefix}/`` in the
datastore's container and is described by a manifest (relative path -> sha256 and size)
kept *outside* that prefix, so the job never downloads it. The manifest's own sha256 is
the channel's digest, the same one the local backend and S3 compute for the same content;
the caller turns it into the data asset's version.

One run:

1. hash the local files (a stat cache skips files whose size and mtime are unchanged);
2. read the previous manifest: when the local content has the same digest, stop there
   (one GET, no LIST, no PUT). Otherwise, or with ``verify``, LIST the prefix: a file is
   uploaded when its hash differs from the manifest's, or its blob is missing, has another
   size or another sha256 in its metadata (a blob deleted or replaced by hand comes back);
3. upload the files concurrently, each request with an MD5 of its body that the service
   checks; the blob keeps the file's MD5 (Content-MD5) and sha256 (metadata);
4. delete blobs under the prefix that are no longer in the channel;
5. write the manifest last, so an interrupted upload is redone by the next run.

``download_prefix`` brings a prefix back (the model outputs), checking stored MD5s.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from cloudtrain.backends.azure.errors import TRANSIENT_STATUS
from cloudtrain.errors import BackendError, ConfigError, TransientError
from cloudtrain.results import ChannelData
from cloudtrain.store import CHUNK_BYTES, manifest_json

# Cloud-neutral helpers of the S3 upload (cheap to import: botocore is loaded lazily there).
from cloudtrain.uploads import (
    ChannelSource,
    Progress,
    channel_source,
    digest_if_unchanged,
    human_size,
    is_big_on_a_terminal,
)

if TYPE_CHECKING:
    import pandas as pd
    from azure.storage.blob import ContainerClient

MiB = 1024 * 1024
#: Files in flight at once. azure-core's requests transport pools 10 connections per
#: host; more threads than that only churn connections.
MAX_CONCURRENCY = 8
#: Requests in flight for one big file's blocks (the SDK's ``max_concurrency``).
BLOCK_CONCURRENCY = 4
#: Files up to this size are read once into memory, hashed and sent from the same bytes:
#: the MD5 the service checks is the manifest's content, whatever happens to the file.
#: Bigger files stream from disk in blocks (each block MD5-checked) and must not change
#: while they upload. Memory bound: MAX_CONCURRENCY x this.
IN_MEMORY_MAX_BYTES = 32 * MiB
#: The blob metadata key holding the file's sha256 (MD5 alone is too weak to trust).
SHA256_METADATA = "sha256"
#: The stat/hash cache, in ``cache_dir`` (the same file the S3 upload uses).
DATASTORE_FIELD = "azure.datastore"
CREDENTIALS_FIELD = "azure.credentials_block"

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Remote:
    size: int
    sha256: str | None


# -- upload ----------------------------------------------------------------------------


def upload_channel(
    container: ContainerClient,
    *,
    channel: str,
    source: Path | pd.DataFrame,
    path_prefix: str,
    manifest_path: str,
    cache_dir: Path,
    progress: bool | None = None,
    verify: bool = False,
    log: Callable[[str], None] = print,
) -> ChannelData:
    """Make ``{path_prefix}/`` in ``container`` hold exactly ``source``, uploading only changes.

    A DataFrame becomes one ``data.parquet``. ``progress=None`` shows a bar only on a
    terminal and only for a big channel. When the local content matches the manifest in
    the container, the prefix is trusted without a LIST unless ``verify`` (blobs deleted
    or replaced by hand). ``ChannelData.uri`` is the prefix inside the container.
    """
    prefix = path_prefix.strip("/")
    if not prefix or manifest_path.strip("/").startswith(prefix + "/"):
        # Everything under the prefix that is not in the channel gets deleted.
        raise ValueError(f"path_prefix {prefix!r} must be non-empty and not hold the manifest")
    manifest_path = manifest_path.strip("/")
    with channel_source(channel, source, cache_dir) as files:
        return _sync(
            container,
            channel=channel,
            files=files,
            prefix=prefix,
            manifest_path=manifest_path,
            progress=progress,
            verify=verify,
            log=log,
        )


def _sync(
    container: ContainerClient,
    *,
    channel: str,
    files: ChannelSource,
    prefix: str,
    manifest_path: str,
    progress: bool | None,
    verify: bool,
    log: Callable[[str], None],
) -> ChannelData:
    list_files, hashes, described = files.list_files, files.hashes, files.described
    name = container.container_name
    where = f"{name}/{prefix}/"
    # The manifest in the container and the files here, found at the same time.
    with ThreadPoolExecutor(2, thread_name_prefix="cloudtrain-blob") as pool:
        read = pool.submit(_read_manifest, container, manifest_path)
        listed = pool.submit(_list_blobs, container, prefix + "/") if verify else None
        stats = [(relative, path, path.stat()) for relative, path in list_files()]
        previous, previous_digest = read.result()
        total_bytes = sum(stat.st_size for _, _, stat in stats)
        if listed is None and previous_digest is not None:
            # Same content as the manifest says the container holds: one GET, nothing else.
            same = digest_if_unchanged(stats, hashes, previous_digest)
            if same is not None:
                log(f"{channel}: unchanged, {len(stats)} files at {where}")
                return ChannelData(
                    channel=channel,
                    uri=f"{prefix}/",
                    digest=same,
                    files=len(stats),
                    bytes=total_bytes,
                    unchanged=True,
                    source=described,
                )
        remote = (listed or pool.submit(_list_blobs, container, prefix + "/")).result()

    def sha256(path: Path, stat: os.stat_result) -> str:
        # Through the cache even for files about to be read anyway: the next run then
        # finds every file hashed and reads nothing.
        return hashes.sha256(path, stat) if hashes else _file_digests(path)[0]

    entries: dict[str, dict[str, Any]] = {}
    todo: list[tuple[str, Path, os.stat_result, str]] = []
    try:
        for relative, path, stat in stats:
            digest = sha256(path, stat)
            entries[relative] = {"sha256": digest, "size": stat.st_size}
            known = previous.get(relative) or {}
            there = remote.get(f"{prefix}/{relative}")
            if (
                known.get("sha256") != digest
                or known.get("size") != stat.st_size
                or there is None
                or there.size != stat.st_size
                or there.sha256 != digest
            ):
                todo.append((relative, path, stat, digest))
    finally:
        if hashes:
            hashes.save()

    uploaded_bytes = sum(stat.st_size for _, _, stat, _ in todo)
    show = progress if progress is not None else is_big_on_a_terminal(len(stats), total_bytes)
    bar = Progress(f"upload {channel}", enabled=show and bool(todo))
    bar.add_total(uploaded_bytes)

    def upload(item: tuple[str, Path, os.stat_result, str]) -> None:
        relative, path, stat, digest = item
        hook = _hook(bar) if bar.enabled else None
        sent = _upload_file(container, f"{prefix}/{relative}", path, stat, digest, hook)
        entries[relative] = sent  # what the service received and checked

    try:
        with _blob_errors(f"uploading {channel} to {where}", name):
            _run_all(upload, todo)
    finally:
        bar.close()

    wanted = {f"{prefix}/{relative}" for relative in entries}
    stale = sorted(blob for blob in remote if blob not in wanted)
    _delete(container, stale, channel, log)

    entries = dict(sorted(entries.items()))
    manifest = manifest_json(entries).encode()
    digest = hashlib.sha256(manifest).hexdigest()
    if digest != previous_digest:
        with _blob_errors(f"writing the manifest {name}/{manifest_path}", name):
            _put(container, manifest_path, manifest, _md5(manifest), digest, "application/json")
    unchanged = not todo and not stale and digest == previous_digest
    if unchanged:
        log(f"{channel}: unchanged, {len(entries)} files at {where}")
    else:
        log(
            f"{channel}: uploaded {len(todo)} of {len(entries)} files "
            f"({human_size(uploaded_bytes)}) to {where}"
        )
    return ChannelData(
        channel=channel,
        uri=f"{prefix}/",
        digest=digest,
        files=len(entries),
        bytes=total_bytes,
        copied_files=len(todo),
        copied_bytes=uploaded_bytes,
        unchanged=unchanged,
        source=described,
    )


def _upload_file(
    container: ContainerClient,
    blob: str,
    path: Path,
    stat: os.stat_result,
    digest: str,
    hook: Callable[[int, int | None], None] | None,
) -> dict[str, Any]:
    """Upload one file; returns its manifest entry for exactly the bytes the service took."""
    if stat.st_size <= IN_MEMORY_MAX_BYTES:
        data = path.read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()  # differs from ``digest`` if it just changed
        _put(container, blob, data, _md5(data), sha256, hook=hook)
        return {"sha256": sha256, "size": len(data)}
    md5 = _file_digests(path)[1]
    with path.open("rb") as handle:
        _put(container, blob, handle, md5, digest, hook=hook, length=stat.st_size)
    after = path.stat()
    if (after.st_size, after.st_mtime_ns) != (stat.st_size, stat.st_mtime_ns):
        raise BackendError(f"{path} changed while it was uploading: run again")
    return {"sha256": digest, "size": stat.st_size}


def _put(
    container: ContainerClient,
    blob: str,
    data: bytes | IO[bytes],
    md5: bytes,
    sha256: str,
    content_type: str | None = None,
    *,
    hook: Callable[[int, int | None], None] | None = None,
    length: int | None = None,
) -> None:
    """One blob, overwritten. ``validate_content`` sends an MD5 of every request body (the
    whole blob, or each block) for the service to check; ``content_md5`` is the whole
    file's, kept on the blob for anyone who downloads it."""
    from azure.storage.blob import ContentSettings

    container.upload_blob(
        blob,
        data,
        length=length,
        overwrite=True,
        max_concurrency=BLOCK_CONCURRENCY,
        validate_content=True,
        content_settings=ContentSettings(content_type=content_type, content_md5=bytearray(md5)),
        metadata={SHA256_METADATA: sha256},
        progress_hook=hook,
    )


def _read_manifest(
    container: ContainerClient, path: str
) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The previous manifest's entries and digest; nothing on the first upload."""
    from azure.core.exceptions import ResourceNotFoundError

    name = container.container_name
    with _blob_errors(f"reading the manifest {name}/{path}", name):
        try:
            body: bytes = container.download_blob(path).readall()
        except ResourceNotFoundError as exc:
            if _error_code(exc) != "BlobNotFound":
                raise  # ContainerNotFound: the datastore is wrong
            return {}, None
    try:
        files = json.loads(body)["files"]
    except (ValueError, KeyError, TypeError):
        return {}, None  # unreadable: upload everything and write a good one
    if not isinstance(files, dict):
        return {}, None
    return files, hashlib.sha256(body).hexdigest()


def _list_blobs(container: ContainerClient, prefix: str) -> dict[str, _Remote]:
    """Every blob under ``prefix`` with its size and sha256: what is really there."""
    name = container.container_name
    found: dict[str, _Remote] = {}
    with _blob_errors(f"listing {name}/{prefix}", name):
        for blob in container.list_blobs(name_starts_with=prefix, include=["metadata"]):
            metadata = blob.metadata or {}
            found[blob.name] = _Remote(int(blob.size or 0), metadata.get(SHA256_METADATA))
    return found


def _delete(
    container: ContainerClient, blobs: list[str], channel: str, log: Callable[[str], None]
) -> None:
    """Remove blobs no longer in the channel: the job would otherwise read them.

    One DELETE each rather than a blob batch, which accounts with a hierarchical
    namespace (ADLS Gen2 datastores) refuse.
    """
    from azure.core.exceptions import ResourceNotFoundError

    name = container.container_name

    def delete(blob: str) -> None:
        try:
            container.delete_blob(blob, delete_snapshots="include")
        except ResourceNotFoundError as exc:
            if _error_code(exc) != "BlobNotFound":
                raise  # already gone is what we wanted

    with _blob_errors(f"deleting {len(blobs)} stale blobs from {name}/", name):
        _run_all(delete, blobs)
    for blob in blobs[:10]:
        log(f"{channel}: deleted {name}/{blob} (no longer in the channel)")
    if len(blobs) > 10:
        log(f"{channel}: ... and {len(blobs) - 10} more deleted")


# -- download --------------------------------------------------------------------------


def download_prefix(container: ContainerClient, prefix: str, destination: Path) -> list[Path]:
    """Download every blob under ``prefix`` into ``destination``, keeping relative paths.

    Blobs whose name would land outside ``destination`` (``..``) are refused before
    anything is written. A blob with a stored MD5 is checked against it. Returns the
    files written, sorted.
    """
    prefix = prefix.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    name = container.container_name
    root = destination.resolve()
    with _blob_errors(f"listing {name}/{prefix}", name):
        blobs = [
            blob
            for blob in container.list_blobs(name_starts_with=prefix, include=["metadata"])
            # Folder markers of hierarchical-namespace accounts hold nothing to download.
            if not blob.name.endswith("/")
            and (blob.metadata or {}).get("hdi_isfolder", "").lower() != "true"
        ]
    targets: list[tuple[str, Path, bytes | None]] = []
    for blob in blobs:
        target = (root / blob.name[len(prefix) :]).resolve()
        if not target.is_relative_to(root) or target == root:
            raise BackendError(f"blob {name}/{blob.name} would be written outside {root}")
        md5 = blob.content_settings.content_md5 if blob.content_settings else None
        targets.append((blob.name, target, bytes(md5) if md5 else None))

    def download(item: tuple[str, Path, bytes | None]) -> None:
        blob, target, md5 = item
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                container.download_blob(blob, max_concurrency=BLOCK_CONCURRENCY).readinto(handle)
            if md5 is not None and _file_digests(Path(tmp))[1] != md5:
                raise BackendError(f"{name}/{blob}: the download does not match the blob's MD5")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    with _blob_errors(f"downloading {name}/{prefix}", name):
        _run_all(download, targets)
    return sorted(target for _, target, _ in targets)


# -- helpers ---------------------------------------------------------------------------


def _run_all(work: Callable[[_T], None], items: Iterable[_T]) -> None:
    """``work`` on every item, MAX_CONCURRENCY at a time; the first failure cancels the rest."""
    items = list(items)
    if not items:
        return
    with ThreadPoolExecutor(
        min(MAX_CONCURRENCY, len(items)), thread_name_prefix="cloudtrain-blob"
    ) as pool:
        futures: list[Future[None]] = [pool.submit(work, item) for item in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((future for future in done if future.exception() is not None), None)
        if failed is not None:
            for future in futures:
                future.cancel()
            failed.result()


def _hook(bar: Progress) -> Callable[[int, int | None], None]:
    """The SDK reports bytes sent so far per blob; the bar wants increments."""
    sent = 0

    def hook(current: int, total: int | None) -> None:
        nonlocal sent
        bar.on_progress(bytes_transferred=current - sent)
        sent = current

    return hook


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def _file_digests(path: Path) -> tuple[str, bytes]:
    """The file's sha256 (hex) and MD5 (bytes), in one read."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.digest()


# -- errors ----------------------------------------------------------------------------


def _error_code(exc: Any) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


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
