"""What only Azure Blob does, against Azurite: an MD5 on every request that the service
checks, the file's sha256 kept on the blob (and its MD5 on one sent whole), azure-core's
errors mapped."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from object_stores import MANIFEST, PREFIX, BlobRemote, KiB, MiB, b64, md5, sync

from cloudtrain.backends.azure import storage
from cloudtrain.backends.azure.clients import AzureClients
from cloudtrain.backends.azure.settings import AzureConfig
from cloudtrain.backends.azure.storage import BlobStore
from cloudtrain.errors import BackendError, ConfigError, TransientError


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    """A channel of one file above the in-memory limit of ``streaming``."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(os.urandom(2 * MiB + 5))
    return data


def streaming(remote: BlobRemote, **settings: Any) -> BlobStore:
    """A store that sends files above 64 KiB in blocks, read from disk once."""
    container = remote.container_client(remote.wire.container)
    return BlobStore(container, in_memory_max_bytes=64 * KiB, **settings)


def test_each_put_carries_the_files_md5_for_the_service_and_the_blob_keeps_it(
    blob_remote: BlobRemote, folder: Path, tmp_path: Path
) -> None:
    sync(blob_remote.store, folder, tmp_path)

    puts = {r.key: r for r in blob_remote.of("PUT") if r.key.startswith(PREFIX)}  # the last
    container, store = blob_remote.container, blob_remote.store
    assert isinstance(store, BlobStore)
    for path in (path for path in folder.rglob("*") if path.is_file()):
        data, key = path.read_bytes(), f"{PREFIX}/{path.relative_to(folder).as_posix()}"
        if len(data) > store.in_memory_max_bytes:  # in blocks, each checked by the service
            blocks = [
                r for r in blob_remote.of("PUT") if r.key == key and "comp=block&" in r.query + "&"
            ]
            size = store.block_bytes
            chunks = [data[start : start + size] for start in range(0, len(data), size)]
            assert sorted(r.header("Content-MD5") or "" for r in blocks) == sorted(
                b64(md5(chunk)) for chunk in chunks
            )
            assert "comp=blocklist" in puts[key].query
            assert puts[key].header("x-ms-blob-content-md5") is None  # one hash pass: sha256
        else:
            assert puts[key].header("Content-MD5") == b64(md5(data))  # checked by the service
            properties = container.get_blob_client(key).get_blob_properties()  # and kept
            assert bytes(properties.content_settings.content_md5 or b"") == md5(data)
        properties = container.get_blob_client(key).get_blob_properties()
        assert properties.metadata == {"sha256": hashlib.sha256(data).hexdigest()}


def test_a_body_damaged_on_the_way_is_refused_by_the_service(
    blob_remote: BlobRemote, folder: Path, tmp_path: Path
) -> None:
    def flip_a_byte(request: Any) -> None:
        if request.method == "PUT" and request.url.endswith("/part-2.csv"):
            request.data = b"X" + request.data[1:]

    blob_remote.wire.tamper = flip_a_byte
    with pytest.raises(BackendError, match="did not match its MD5") as raised:
        sync(blob_remote.store, folder, tmp_path)

    assert isinstance(raised.value.__cause__, HttpResponseError)
    assert raised.value.__cause__.status_code == 400
    assert not blob_remote.container.get_blob_client(MANIFEST).exists()  # uploaded again next run


def test_a_big_file_streams_in_blocks_each_with_its_md5(
    blob_remote: BlobRemote, big_file: Path, tmp_path: Path
) -> None:
    store = streaming(blob_remote, block_bytes=MiB)
    data = (big_file / "big.bin").read_bytes()
    with store.container:
        result = sync(store, big_file, tmp_path)

    blocks = [r for r in blob_remote.of("PUT") if "comp=block&" in r.query + "&"]
    chunks = [data[start : start + MiB] for start in range(0, len(data), MiB)]
    md5s = sorted(b64(md5(chunk)) for chunk in chunks)
    assert sorted(r.header("Content-MD5") or "" for r in blocks) == md5s
    committed = [r for r in blob_remote.of("PUT") if "comp=blocklist" in r.query]
    assert len(committed) == 1  # no Content-MD5: that would be a second hash pass
    assert committed[0].header("x-ms-blob-content-md5") is None
    assert blob_remote.read(f"{PREFIX}/big.bin") == data
    properties = blob_remote.container.get_blob_client(f"{PREFIX}/big.bin").get_blob_properties()
    assert properties.metadata["sha256"] == hashlib.sha256(data).hexdigest()
    assert result.copied_bytes == len(data)


def test_a_big_file_that_changes_while_it_uploads_is_an_error(
    blob_remote: BlobRemote, big_file: Path, tmp_path: Path
) -> None:
    big, size = big_file / "big.bin", (big_file / "big.bin").stat().st_size

    def append_once(request: Any) -> None:
        if request.method == "PUT" and big.stat().st_size == size:
            with big.open("ab") as handle:
                handle.write(b"more")

    blob_remote.wire.tamper = append_once
    with pytest.raises(BackendError, match="changed while it was uploading"):
        sync(streaming(blob_remote), big_file, tmp_path)
    assert not blob_remote.container.get_blob_client(MANIFEST).exists()


def test_verify_replaces_a_blob_changed_by_hand_even_at_the_same_size(
    blob_remote: BlobRemote, folder: Path, tmp_path: Path
) -> None:
    """The blob's sha256 (metadata) tells, where S3's listing has sizes only."""
    sync(blob_remote.store, folder, tmp_path)
    original = (folder / "sub" / "labels.json").read_bytes()
    blob_remote.put(f"{PREFIX}/sub/labels.json", b'{"a": 9}')
    blob_remote.clear()

    sync(blob_remote.store, folder, tmp_path, verify=True)

    assert blob_remote.channel_puts() == [f"{PREFIX}/sub/labels.json"]
    assert blob_remote.read(f"{PREFIX}/sub/labels.json") == original


def test_a_file_the_service_would_rename_is_refused_before_anything_is_sent(
    blob_remote: BlobRemote, tmp_path: Path
) -> None:
    """Blob Storage reads a backslash as '/': the blob would sit under another name, the
    job would not find it, and a verified sync would delete it as stale."""
    data = tmp_path / "d"
    data.mkdir()
    (data / "back\\slash.csv").write_text("x")
    (data / "ok.csv").write_text("y")
    deep = data.joinpath(*["d" * 200] * 5)  # a path of 1,000+ characters, 200 a name
    deep.mkdir(parents=True)
    (deep / "z.csv").write_text("z")

    with pytest.raises(ConfigError) as caught:
        sync(blob_remote.store, data, tmp_path)

    assert [p.field for p in caught.value.problems] == ["data.train", "data.train"]
    assert "back\\slash.csv: Blob Storage reads a backslash in a blob name as '/'" in str(
        caught.value
    )
    assert "would be longer than 1024 characters" in str(caught.value)
    assert blob_remote.keys(PREFIX + "/") == {} and blob_remote.of("PUT") == []


def test_folder_markers_of_hierarchical_namespace_accounts_are_not_listed() -> None:
    # Azurite has no hierarchical namespace: the listing is faked.
    class Listed:
        def __init__(self, name: str, metadata: dict[str, str]) -> None:
            self.name, self.size, self.metadata = name, 0 if metadata else 5, metadata

    class Container:
        container_name = "c"

        def list_blobs(self, **kwargs: Any) -> list[Listed]:
            return [Listed("outputs/sub", {"hdi_isfolder": "true"}), Listed("outputs/sub/m", {})]

    store = BlobStore(Container())  # type: ignore[arg-type]
    assert [obj.key for obj in store.list("outputs/")] == ["outputs/sub/m"]


def test_the_azure_clients_seam_hands_out_containers_on_azurite(
    blob_remote: BlobRemote, folder: Path, tmp_path: Path
) -> None:
    clients = AzureClients(AzureConfig(), blob_connection_string=blob_remote.connection_string)
    container = clients.container_client("https://unused.example", blob_remote.wire.container)
    assert sync(BlobStore(container), folder, tmp_path).copied_files == 7


# -- errors --------------------------------------------------------------------------


def _http_error(cls: type[HttpResponseError], status: int, code: str) -> HttpResponseError:
    error = cls(message=f"{code} happened.\nRequestId:1\nTime:now")
    error.status_code = status
    error.error_code = code  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(
    ("error", "expected", "field"),
    [
        (_http_error(HttpResponseError, 503, "ServerBusy"), TransientError, None),
        (_http_error(HttpResponseError, 429, "TooManyRequests"), TransientError, None),
        (_http_error(HttpResponseError, 500, "InternalError"), TransientError, None),
        (ServiceRequestError("connection refused"), TransientError, None),
        (
            _http_error(ResourceNotFoundError, 404, "ContainerNotFound"),
            ConfigError,
            "azure.datastore",
        ),
        (
            _http_error(ClientAuthenticationError, 403, "AuthorizationPermissionMismatch"),
            ConfigError,
            "azure.datastore",
        ),
        (ClientAuthenticationError("no credential"), ConfigError, "azure.credentials_block"),
        (_http_error(ResourceNotFoundError, 404, "BlobNotFound"), BackendError, None),
        (_http_error(HttpResponseError, 400, "InvalidHeaderValue"), BackendError, None),
    ],
)
def test_azure_errors_are_mapped_into_cloudtrains_tree(
    error: Exception, expected: type[Exception], field: str | None
) -> None:
    with pytest.raises(expected) as raised, storage._blob_errors("uploading", "c"):
        raise error
    assert raised.value.__cause__ is error
    if field is not None:
        assert raised.value.field == field  # type: ignore[attr-defined]
    if expected is BackendError:
        assert type(raised.value) is BackendError
        assert "RequestId" not in str(raised.value)  # one line, not the service's dump


def test_a_block_damaged_on_the_way_is_refused_and_nothing_is_committed(
    blob_remote: BlobRemote, big_file: Path, tmp_path: Path
) -> None:
    """A big file goes in blocks from one read; a block changed after its MD5 was taken
    is refused by the service, the block list is never committed, and no manifest is
    written, so the next run sends the file again."""
    damaged: list[str] = []
    once = threading.Lock()  # blocks are staged from several threads

    def flip_a_block(request: Any) -> None:
        if request.method == "PUT" and "comp=block&" in request.url + "&":
            if once.acquire(blocking=False):
                request.data = bytes([request.data[0] ^ 0xFF]) + request.data[1:]
                damaged.append(request.url)

    blob_remote.wire.tamper = flip_a_block
    with pytest.raises(BackendError, match="did not match its MD5"):
        sync(streaming(blob_remote, block_bytes=MiB), big_file, tmp_path)
    blob_remote.wire.tamper = None

    assert len(damaged) == 1
    assert not [r for r in blob_remote.of("PUT") if "comp=blocklist" in r.query]
    assert not blob_remote.container.get_blob_client(f"{PREFIX}/big.bin").exists()
    assert not blob_remote.container.get_blob_client(MANIFEST).exists()


def test_a_blob_sent_in_blocks_is_checked_on_download_by_its_sha256(
    blob_remote: BlobRemote, big_file: Path, tmp_path: Path
) -> None:
    """A block-list blob has no Content-MD5; its sha256 metadata is what a download is
    held to, so other bytes under that metadata are refused, and nothing is left."""
    from cloudtrain.sync import download_prefix

    store = streaming(blob_remote, block_bytes=MiB)
    with store.container:
        sync(store, big_file, tmp_path)
        key = f"{PREFIX}/big.bin"
        properties = store.container.get_blob_client(key).get_blob_properties()
        assert properties.content_settings.content_md5 is None
        wrong = os.urandom(properties.size)
        store.container.get_blob_client(key).stage_block("00000000", wrong)
        store.container.get_blob_client(key).commit_block_list(
            ["00000000"], metadata=dict(properties.metadata)
        )
        with pytest.raises(BackendError, match="does not match the blob's sha256"):
            download_prefix(store, f"{PREFIX}/", tmp_path / "back")
    assert not any((tmp_path / "back").rglob("*.bin"))
