"""Run as a script: sync a channel and SIGKILL this process once N objects have landed.

``python upload_until_killed.py s3|blob CONNECTION FOLDER CACHE N``: CONNECTION is the
bucket (S3, reached through AWS_ENDPOINT_URL) or ``connection-string|container`` (Blob).
The first N files are handed to the store; the process waits until the store lists all
N, then kills itself with SIGKILL, as an orchestrator killed by the OOM killer or kill -9
would die: no cleanup, no manifest.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from object_stores import MANIFEST, PREFIX

from cloudtrain.objectstore import LocalFile, ObjectStore
from cloudtrain.sync import sync_channel

#: How long to wait for the first N objects to land before giving up (a broken test).
LAND_TIMEOUT_SECONDS = 60


def open_store(kind: str, connection: str) -> ObjectStore:
    if kind == "s3":
        import boto3

        from cloudtrain.backends.aws.clients import AwsClients
        from cloudtrain.backends.aws.s3 import S3Store

        return S3Store(AwsClients(boto3.Session()), connection)
    from azure.storage.blob import ContainerClient

    from cloudtrain.backends.azure.storage import BlobStore

    string, _, container = connection.rpartition("|")
    return BlobStore(ContainerClient.from_connection_string(string, container_name=container))


def killed_after(store: ObjectStore, landed: int) -> None:
    """Make ``store.put_files`` kill the process once ``landed`` objects are stored."""
    put_files = store.put_files

    def until_killed(files: Iterable[LocalFile]) -> Iterator[LocalFile]:
        for index, file in enumerate(files):
            if index == landed:
                deadline = time.monotonic() + LAND_TIMEOUT_SECONDS
                while len(store.list(PREFIX + "/")) < landed and time.monotonic() < deadline:
                    time.sleep(0.01)
                os.kill(os.getpid(), signal.SIGKILL)
            yield file

    def put(files: Iterable[LocalFile], progress: Any = None) -> Any:
        return put_files(until_killed(files), progress)

    store.put_files = put  # type: ignore[method-assign]


def main(kind: str, connection: str, folder: str, cache: str, landed: str) -> None:
    store = open_store(kind, connection)
    killed_after(store, int(landed))
    sync_channel(
        store,
        channel="train",
        source=Path(folder),
        prefix=PREFIX,
        manifest_key=MANIFEST,
        cache_dir=Path(cache),
        log=lambda line: None,
    )
    sys.exit("the upload finished: it should have been killed")


if __name__ == "__main__":
    main(*sys.argv[1:])
