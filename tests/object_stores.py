"""S3 on moto's server and Azure Blob on Azurite, seen the same way by the tests.

A ``Remote`` holds the store under test and a way around it: what is stored, objects put
or removed by hand, and every request that went over the wire, as (method, key, query)
with the key inside the bucket or container ("" for calls on the bucket or container).
Fixtures that build them are in conftest.py.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
from azure.storage.blob import ContainerClient, ContentSettings
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from moto_server import REGION, MotoServer

from cloudtrain.backends.aws.clients import AwsClients
from cloudtrain.backends.aws.s3 import S3Store
from cloudtrain.backends.azure.storage import BlobStore
from cloudtrain.objectstore import ObjectStore
from cloudtrain.results import ChannelData
from cloudtrain.sync import sync_channel

BUCKET = "cloudtrain-test-bucket"
PREFIX = "cloudtrain/digits-sgd/data/train"
MANIFEST = "cloudtrain/digits-sgd/manifests/train.json"
KiB, MiB = 1024, 1024 * 1024
#: The suite's folder holds one file of 11 MiB: above these, S3 sends it in parts of
#: 5 MiB (S3's smallest) and Blob stages it in blocks, so both paths run everywhere.
BIG_FILE_BYTES = 6 * MiB
PART_BYTES = 5 * MiB


def sync(store: ObjectStore, source: Any, tmp_path: Path, **options: Any) -> ChannelData:
    """The suite's channel ``train`` synced to ``store`` at PREFIX; ``options`` as
    ``sync_channel`` takes them (``verify``, ``log``: nothing is logged unless given)."""
    options.setdefault("log", lambda line: None)
    return sync_channel(
        store,
        channel="train",
        source=source,
        prefix=PREFIX,
        manifest_key=MANIFEST,
        cache_dir=tmp_path / "cache",
        **options,
    )


def md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Request:
    """One request as it went over the wire (each retry is its own)."""

    method: str
    key: str
    query: str
    headers: dict[str, str] = field(default_factory=dict, compare=False)  # lower-case names

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Remote:
    """The store under test on its emulator, and what a test checks it by."""

    kind: str
    field: str  # the config field a missing bucket or container blames
    checksum: str  # what a download's checksum error names
    store: ObjectStore

    def keys(self, prefix: str) -> dict[str, int]:
        """Key -> size of everything under ``prefix``, listed around the store."""
        raise NotImplementedError

    def read(self, key: str) -> bytes:
        raise NotImplementedError

    def put(self, key: str, data: bytes) -> None:
        """An object put by hand, not through the store."""
        raise NotImplementedError

    def remove(self, key: str) -> None:
        raise NotImplementedError

    def put_with_the_checksum_of(self, key: str, data: bytes, other: bytes) -> None:
        """``data`` stored as if its checksum were ``other``'s: damaged at rest."""
        raise NotImplementedError

    def deletion(self, keys: list[str]) -> list[tuple[str, str, str]]:
        """The requests a deletion of ``keys`` makes."""
        raise NotImplementedError

    def sent(self) -> list[Request]:
        raise NotImplementedError

    def missing(self) -> tuple[ObjectStore, str, type[Exception]]:
        """A store on a bucket or container that does not exist, its name, the SDK's error."""
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def of(self, method: str) -> list[Request]:
        return [request for request in self.sent() if request.method == method]

    def channel_puts(self) -> list[str]:
        """Keys of PUTs into the channel's prefix (whole objects, parts and blocks)."""
        return [request.key for request in self.of("PUT") if request.key.startswith(PREFIX + "/")]


class S3Remote(Remote):
    kind, field, checksum = "s3", "aws.bucket", "checksum"

    def __init__(self, aws: MotoServer) -> None:
        self.aws = aws
        self.clients = AwsClients(boto3.Session(region_name=REGION))
        self.s3 = self.clients.client("s3")
        self.s3.create_bucket(Bucket=BUCKET)
        self.store = self.store_of(BUCKET)
        aws.log.clear()

    def store_of(self, bucket: str) -> S3Store:
        return S3Store(
            self.clients, bucket, TransferConfig(BIG_FILE_BYTES, multipart_chunksize=PART_BYTES)
        )

    def keys(self, prefix: str) -> dict[str, int]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}

    def read(self, key: str) -> bytes:
        body: bytes = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return body

    def put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=data)

    def remove(self, key: str) -> None:
        self.s3.delete_object(Bucket=BUCKET, Key=key)

    def put_with_the_checksum_of(self, key: str, data: bytes, other: bytes) -> None:
        # S3 refuses this; moto's server keeps the checksum it is given.
        wrong = b64(hashlib.sha256(other).digest())
        self.s3.put_object(
            Bucket=BUCKET, Key=key, Body=data, ChecksumAlgorithm="SHA256", ChecksumSHA256=wrong
        )

    def deletion(self, keys: list[str]) -> list[tuple[str, str, str]]:
        return [("POST", "", "delete")]  # one DeleteObjects per 1,000 keys

    def sent(self) -> list[Request]:
        bucket = f"/{BUCKET}/"
        return [
            Request(
                e.method,
                e.path[len(bucket) :] if e.path.startswith(bucket) else "",
                e.query,
                e.headers,
            )
            for e in list(self.aws.log.entries)
            if not e.target
        ]

    def clear(self) -> None:
        self.aws.log.clear()

    def missing(self) -> tuple[ObjectStore, str, type[Exception]]:
        return self.store_of("no-such-bucket-here"), "no-such-bucket-here", ClientError


@dataclass
class Wire:
    """Every request a container client sent, from azure-core's ``raw_request_hook``,
    which runs after the SDK's retry policy: one entry per request on the wire."""

    container: str
    sent: list[Request] = field(default_factory=list)
    tamper: Callable[[Any], None] | None = None  # may change a request before it leaves
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hook(self, pipeline_request: Any) -> None:
        request = pipeline_request.http_request
        url = urlsplit(request.url)
        _, _, rest = unquote(url.path).lstrip("/").partition("/")  # drop the account
        blob = rest[len(self.container) + 1 :] if rest.startswith(self.container + "/") else ""
        headers = {name.lower(): value for name, value in request.headers.items()}
        with self._lock:
            self.sent.append(Request(request.method, blob, url.query, headers))
        if self.tamper is not None:
            self.tamper(request)


class BlobRemote(Remote):
    kind, field, checksum = "blob", "azure.datastore", "MD5"

    def __init__(self, connection_string: str, container_name: str) -> None:
        self.connection_string = connection_string
        self.wire = Wire(container_name)
        self.container = self.container_client(container_name)
        self.store = BlobStore(self.container, in_memory_max_bytes=BIG_FILE_BYTES)

    def container_client(self, name: str, **settings: Any) -> ContainerClient:
        """A client on this Azurite whose requests go on the wire log."""
        return ContainerClient.from_connection_string(
            self.connection_string, container_name=name, raw_request_hook=self.wire.hook, **settings
        )

    def keys(self, prefix: str) -> dict[str, int]:
        return {b.name: int(b.size) for b in self.container.list_blobs(name_starts_with=prefix)}

    def read(self, key: str) -> bytes:
        return self.container.download_blob(key).readall()

    def put(self, key: str, data: bytes) -> None:
        self.container.upload_blob(key, data, overwrite=True)

    def remove(self, key: str) -> None:
        self.container.delete_blob(key)

    def put_with_the_checksum_of(self, key: str, data: bytes, other: bytes) -> None:
        self.put(key, data)
        self.container.get_blob_client(key).set_http_headers(
            ContentSettings(content_md5=bytearray(md5(other)))
        )

    def deletion(self, keys: list[str]) -> list[tuple[str, str, str]]:
        return [("DELETE", key, "") for key in keys]  # one each: HNS accounts refuse batches

    def sent(self) -> list[Request]:
        with self.wire._lock:
            return list(self.wire.sent)

    def clear(self) -> None:
        with self.wire._lock:
            self.wire.sent.clear()

    def missing(self) -> tuple[ObjectStore, str, type[Exception]]:
        from azure.core.exceptions import ResourceNotFoundError

        container = self.container_client("no-such-container")
        return BlobStore(container), "no-such-container", ResourceNotFoundError

    def close(self) -> None:
        self.container.close()
