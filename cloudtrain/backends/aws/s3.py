"""S3 as an object store: checksums by SHA-256, transfers through s3transfer; s3:// URIs.

``S3Store`` is the ``cloudtrain.objectstore.ObjectStore`` for one bucket; channel sync is
written once on top of it (``cloudtrain.sync``). Every upload carries a SHA-256 that S3
checks: the file's whole-object SHA-256 on a single PUT (already computed for the
manifest). A big file goes multipart and is read once, front to back: that one read
gives the manifest its SHA-256 (``HashedRead``) and each part its CRC32, which botocore
computes from the part's bytes in memory and S3 checks on arrival (boto3's default; a
per-part SHA-256 would be a second hash of every byte). So the manifest describes the
bytes that were sent, and a part damaged on the way is refused. Downloads ask for the
stored checksum, which botocore checks against the body on single-GET objects.

An ``s3://`` channel is used as it is once ``require_s3_uri`` finds something there.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.backends.aws.errors import (
    DENIED_CODES,
    error_code,
    http_status,
    is_transient,
    mapped,
)
from cloudtrain.errors import BackendError, ConfigError, quote
from cloudtrain.hashed_read import HashedRead
from cloudtrain.objectstore import LocalFile, OnBytes, StoredObject

if TYPE_CHECKING:
    from boto3.s3.transfer import TransferConfig
    from s3transfer.futures import TransferFuture
    from s3transfer.manager import TransferManager

    from cloudtrain.backends.aws.clients import AwsClients

MiB = 1024 * 1024
#: Requests in flight at once, across files and parts (AwsClients pools 32 connections).
MAX_CONCURRENCY = 16
#: Files at least this big go multipart; smaller ones are one PUT whose full-object
#: SHA-256 S3 checks against the manifest's.
MULTIPART_THRESHOLD_BYTES = 64 * MiB
#: boto3's default part size; against moto, 16 MiB parts were ~15% and 32 MiB ~90% slower.
MULTIPART_CHUNK_BYTES = 8 * MiB
#: S3's limit on a key, in bytes of UTF-8.
MAX_KEY_BYTES = 1024
#: DeleteObjects takes at most this many keys per request.
DELETE_BATCH = 1000
#: The config field an unreachable bucket blames.
BUCKET_FIELD = "aws.bucket"

_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")


# -- URIs ------------------------------------------------------------------------------


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``; ValueError when malformed."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{quote(uri)} is not an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not _BUCKET_NAME.fullmatch(bucket):
        raise ValueError(f"{quote(uri)}: {quote(bucket)} is not a valid bucket name")
    return bucket, key


def require_s3_uri(clients: AwsClients, uri: str, field: str) -> None:
    """Refuse an ``s3://`` channel that points at nothing, before a job is created for it.

    SageMaker reads an S3Prefix channel as every key starting with the URI's key, so the
    URI is fine when it names an object or when any key starts with it.
    """
    try:
        bucket, key = parse_s3_uri(uri)
    except ValueError as exc:
        raise ConfigError(field, str(exc)) from exc
    from botocore.exceptions import ClientError

    s3 = clients.client("s3")
    with _s3_errors(f"checking {uri}", field=field, bucket=bucket):
        if key and not key.endswith("/"):
            try:
                s3.head_object(Bucket=bucket, Key=key)
                return
            except ClientError as exc:
                if http_status(exc) not in (403, 404):  # 403: no ListBucket right; LIST tells
                    raise
        listing = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    if not listing.get("KeyCount"):
        raise ConfigError(field, f"{uri}: no object with that key and nothing under that prefix")


# -- the object store ------------------------------------------------------------------


class S3Store:
    """One bucket as an ObjectStore; ``aws.bucket`` is the field its errors blame.

    One s3transfer manager per batch of files moves many files and parts at once, with
    ``transfer`` (boto3's TransferConfig; tests lower its thresholds) or this module's.
    """

    lists_sha256 = False  # ListObjectsV2 names a checksum's algorithm, never its value;
    # HeadObject with ChecksumMode returns it
    sha256_checked = True  # a single PUT's SHA-256 is checked by S3 against the body

    def __init__(
        self, clients: AwsClients, bucket: str, transfer: TransferConfig | None = None
    ) -> None:
        from boto3.s3.transfer import TransferConfig

        self.bucket, self._s3 = bucket, clients.client("s3")  # retried while throttled
        self._transfer_client = clients.raw_client("s3")  # s3transfer retries its own parts
        self.transfer = transfer or TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD_BYTES,
            multipart_chunksize=MULTIPART_CHUNK_BYTES,
            max_concurrency=MAX_CONCURRENCY,
        )

    def name(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def uri(self, key: str) -> str:
        return self.name(key)

    def needs_sha256(self, size: int) -> bool:
        return size < self.transfer.multipart_threshold  # one PUT: the whole file's hash

    def key_problem(self, key: str) -> str | None:
        if len(key.encode()) > MAX_KEY_BYTES:
            return f"its S3 key would be longer than {MAX_KEY_BYTES} bytes"
        return None

    def put_files(
        self, files: Iterable[LocalFile], progress: OnBytes | None = None
    ) -> dict[str, StoredObject]:
        subscribers = [_Subscriber(progress)] if progress else []  # no callbacks unwatched
        futures: list[TransferFuture] = []
        reads: dict[str, tuple[LocalFile, HashedRead]] = {}  # big files, read once as sent
        received: dict[str, StoredObject] = {}
        try:
            with self._errors(f"uploading to {self.name('')}"), self._transfers() as manager:
                for file in files:
                    extra = self._checksum_args(file.stat.st_size, file.sha256)
                    source: str | HashedRead = str(file.path)
                    if file.stat.st_size >= self.transfer.multipart_threshold:
                        # An open file: s3transfer reads its parts in order, into memory.
                        source = HashedRead(file.path)
                        reads[file.key] = (file, source)
                    futures.append(
                        manager.upload(
                            source, self.bucket, file.key, extra, subscribers=subscribers
                        )
                    )
                for future in futures:  # the first failure leaves the manager: it cancels the rest
                    key = future.meta.call_args.key
                    with self._errors(f"uploading {self.name(key)}"):
                        future.result()
                    if key in reads:
                        file, read = reads[key]
                        read.require_unchanged(file.stat)  # not torn by a write meanwhile
                        received[key] = StoredObject(key, read.size, read.sha256())
        finally:
            for _, read in reads.values():
                read.close()
        return received  # the big files as read and sent; S3 checked the rest's SHA-256

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        digest = hashlib.sha256(data).hexdigest()
        extra = {"ContentType": content_type} if content_type else {}
        with self._errors(f"writing {self.name(key)}"):
            self._s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                **extra,
                **self._checksum_args(len(data), digest),
            )

    def head(self, key: str) -> StoredObject | None:
        from botocore.exceptions import ClientError

        with self._errors(f"reading {self.name(key)}"):
            try:
                found = self._s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
            except ClientError as exc:
                if http_status(exc) == 404:  # a HEAD has no body: no code says which 404
                    return None
                raise
        return StoredObject(key, int(found["ContentLength"]), _whole_sha256(found))

    def list(self, prefix: str) -> list[StoredObject]:
        found: list[StoredObject] = []
        with self._errors(f"listing {self.name(prefix)}"):
            token: dict[str, str] = {}
            while True:  # page by page, each call retried while throttled (no paginator)
                page = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix, **token)
                found += [StoredObject(i["Key"], int(i["Size"])) for i in page.get("Contents", ())]
                if not page.get("IsTruncated"):
                    break
                token = {"ContinuationToken": page["NextContinuationToken"]}
        return found

    def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            with self._errors(f"deleting {len(batch)} keys from {self.name('')}"):
                response = self._s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            if response.get("Errors"):
                error = response["Errors"][0]
                raise BackendError(
                    f"deleting {self.name(error.get('Key'))}: {error.get('Code')} "
                    f"{error.get('Message', '')} ({len(response['Errors'])} keys failed)"
                )

    def read(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        with self._errors(f"reading {self.name(key)}"):
            try:
                body: bytes = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if error_code(exc) in ("NoSuchKey", "404"):
                    return None
                raise
        return body

    def download_files(self, targets: Iterable[tuple[str, Path]]) -> None:
        # ChecksumMode: botocore checks the body against the stored checksum (whole-object
        # ones; a multipart object's per-part checksums are not checked on a GET).
        futures: list[TransferFuture] = []
        with self._errors(f"downloading from {self.name('')}"), self._transfers() as manager:
            for key, path in targets:
                futures.append(
                    manager.download(self.bucket, key, str(path), {"ChecksumMode": "ENABLED"})
                )
            for future in futures:
                with self._errors(f"downloading {self.name(future.meta.call_args.key)}"):
                    future.result()

    def _transfers(self) -> TransferManager:
        from s3transfer.manager import TransferManager

        return TransferManager(self._transfer_client, self.transfer)

    def _checksum_args(self, size: int, sha256_hex: str | None) -> dict[str, str]:
        """A single PUT carries the hash already computed, which S3 checks against the body.

        Multipart objects get a CRC32 per part (computed by botocore from the part's bytes
        in memory, which are the bytes the manifest's SHA-256 was computed from).
        """
        if size >= self.transfer.multipart_threshold:
            return {"ChecksumAlgorithm": "CRC32"}
        assert sha256_hex is not None, "needs_sha256 said a single PUT needs it"
        value = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
        return {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": value}

    def _errors(self, what: str) -> AbstractContextManager[None]:
        return _s3_errors(what, bucket=self.bucket)


def _whole_sha256(head: dict[str, Any]) -> str | None:
    """The object's SHA-256 (hex) as S3 checked it at upload: single-PUT objects only.
    A multipart object's is a checksum of its parts' checksums (``...-3``), not the file's.
    Its ETag (``"<hex>-3"``) says it was sent in parts too: moto's HEAD drops both the
    suffix and the checksum type, and so may other S3-compatible services."""
    value = head.get("ChecksumSHA256")
    if not value or "-" in value or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    if re.fullmatch(r'"?[0-9a-fA-F]+-[0-9]+"?', str(head.get("ETag", ""))):
        return None
    return base64.b64decode(value).hex()


class _Subscriber:
    """s3transfer calls these by name on every transfer; only progress is passed on."""

    def __init__(self, progress: OnBytes) -> None:
        self.progress = progress

    def on_queued(self, **kwargs: Any) -> None:
        pass

    def on_progress(self, bytes_transferred: int = 0, **kwargs: Any) -> None:
        self.progress(bytes_transferred)

    def on_done(self, **kwargs: Any) -> None:
        pass


# -- errors ----------------------------------------------------------------------------


@contextmanager
def _s3_errors(what: str, *, bucket: str, field: str = BUCKET_FIELD) -> Iterator[None]:
    """Map botocore's errors into cloudtrain's tree; ``field`` names what to fix."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        FlexibleChecksumError,
        NoCredentialsError,
    )

    try:
        yield
    except ClientError as exc:
        code, status = error_code(exc), http_status(exc)
        message = exc.response.get("Error", {}).get("Message") or code
        if code == "NoSuchBucket":
            raise ConfigError(field, f"bucket {quote(bucket)} does not exist ({what})") from exc
        if code in DENIED_CODES or status == 403:
            raise ConfigError(field, f"access denied to bucket {quote(bucket)} ({what})") from exc
        if code == "BadDigest":
            message = f"{message} (a file changed while it was uploading?)"
        raise (
            mapped(exc, what) if is_transient(exc) else BackendError(f"{what}: {code}: {message}")
        ) from exc
    except NoCredentialsError as exc:
        raise ConfigError("aws.credentials_block", f"no AWS credentials found ({what})") from exc
    except FlexibleChecksumError as exc:  # a body that does not match its stored checksum
        raise BackendError(
            f"{what}: the download does not match the object's checksum: {exc}"
        ) from exc
    except BotoCoreError as exc:  # connection refused, reset, timed out: transient
        raise mapped(exc, what) from exc
