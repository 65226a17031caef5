"""Channels to Azure Blob Storage against Azurite: only changes go over the wire, MD5-checked."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pandas as pd
import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.storage.blob import ContainerClient, ContentSettings

import cloudtrain.store
from cloudtrain.backends.azure import storage
from cloudtrain.backends.azure.clients import AzureClients
from cloudtrain.backends.azure.settings import AzureConfig
from cloudtrain.backends.azure.storage import download_prefix, upload_channel
from cloudtrain.errors import BackendError, ConfigError, TransientError
from cloudtrain.results import ChannelData

PREFIX = "cloudtrain/digits-sgd/data/train"
MANIFEST = "cloudtrain/digits-sgd/manifests/train.json"
KiB, MiB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Sent:
    """One HTTP request as it left for Azurite (each retry is its own)."""

    method: str
    blob: str  # the blob name inside the container, "" for container calls
    query: str
    headers: dict[str, str]


@dataclass
class Wire:
    """Every request the container client sent, from azure-core's ``raw_request_hook``,
    which runs after the SDK's retry policy: one entry per request on the wire."""

    container: str
    sent: list[Sent] = field(default_factory=list)
    tamper: Callable[[Any], None] | None = None  # may change a request before it leaves
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hook(self, pipeline_request: Any) -> None:
        request = pipeline_request.http_request
        url = urlsplit(request.url)
        _, _, rest = unquote(url.path).lstrip("/").partition("/")  # drop the account
        blob = rest[len(self.container) + 1 :] if rest.startswith(self.container + "/") else ""
        with self._lock:
            self.sent.append(Sent(request.method, blob, url.query, dict(request.headers)))
        if self.tamper is not None:
            self.tamper(request)

    def clear(self) -> None:
        with self._lock:
            self.sent.clear()

    def of(self, method: str) -> list[Sent]:
        return [entry for entry in list(self.sent) if entry.method == method]

    def channel_puts(self) -> list[str]:
        return [entry.blob for entry in self.of("PUT") if entry.blob.startswith(PREFIX + "/")]


@pytest.fixture
def wire(azurite_container: str) -> Wire:
    return Wire(azurite_container)


@pytest.fixture
def container(azurite: str, azurite_container: str, wire: Wire) -> Iterator[ContainerClient]:
    with ContainerClient.from_connection_string(
        azurite, container_name=azurite_container, raw_request_hook=wire.hook
    ) as client:
        yield client


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "sub" / "deeper").mkdir(parents=True)
    for index in range(4):
        (data / f"part-{index}.csv").write_text(f"x,y\n{index},{index * 2}\n" * 50)
    (data / "sub" / "labels.json").write_text('{"a": 1}')
    (data / "sub" / "deeper" / "notes.txt").write_text("nested")
    return data


def upload(
    container: ContainerClient,
    source: Any,
    tmp_path: Path,
    logged: list[str] | None = None,
    verify: bool = False,
) -> ChannelData:
    return upload_channel(
        container,
        channel="train",
        source=source,
        path_prefix=PREFIX,
        manifest_path=MANIFEST,
        cache_dir=tmp_path / "cache",
        verify=verify,
        log=(logged if logged is not None else []).append,
    )


def blobs_under(container: ContainerClient, prefix: str) -> dict[str, int]:
    return {blob.name: int(blob.size) for blob in container.list_blobs(name_starts_with=prefix)}


def read(container: ContainerClient, blob: str) -> bytes:
    return container.download_blob(blob).readall()


def local_files(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file()
    }


def md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


# -- the first upload ----------------------------------------------------------------


def test_first_upload_puts_every_file_and_the_manifest_outside_the_prefix(
    container: ContainerClient, folder: Path, tmp_path: Path
) -> None:
    result = upload(container, folder, tmp_path)

    files = local_files(folder)
    assert blobs_under(container, PREFIX + "/") == {
        f"{PREFIX}/{name}": len(data) for name, data in files.items()
    }
    for name, data in files.items():
        assert read(container, f"{PREFIX}/{name}") == data
    assert blobs_under(container, "").keys() - blobs_under(container, PREFIX + "/").keys() == {
        MANIFEST
    }
    manifest_bytes = read(container, MANIFEST)
    assert json.loads(manifest_bytes) == {
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(files.items())
        }
    }
    assert result.digest == hashlib.sha256(manifest_bytes).hexdigest()
    assert result.uri == f"{PREFIX}/"
    assert (result.files, result.copied_files) == (6, 6)
    assert result.bytes == result.copied_bytes == sum(len(data) for data in files.values())
    assert not result.unchanged


def test_the_local_backend_and_azure_agree_on_the_digest(
    container: ContainerClient, folder: Path, tmp_path: Path
) -> None:
    stored = cloudtrain.store.ContentStore(tmp_path / "local").put_path("p/train", folder)
    assert upload(container, folder, tmp_path).digest == stored.digest


def test_each_put_carries_the_files_md5_for_the_service_and_the_blob_keeps_it(
    container: ContainerClient, wire: Wire, folder: Path, tmp_path: Path
) -> None:
    upload(container, folder, tmp_path)

    puts = {entry.blob: entry for entry in wire.of("PUT") if entry.blob.startswith(PREFIX)}
    for name, data in local_files(folder).items():
        headers = puts[f"{PREFIX}/{name}"].headers
        assert headers["Content-MD5"] == b64(md5(data))  # checked by the service
        assert headers["x-ms-blob-content-md5"] == b64(md5(data))  # kept on the blob
        properties = container.get_blob_client(f"{PREFIX}/{name}").get_blob_properties()
        assert bytes(properties.content_settings.content_md5 or b"") == md5(data)
        assert properties.metadata == {"sha256": hashlib.sha256(data).hexdigest()}


def test_a_body_damaged_on_the_way_is_refused_by_the_service(
    container: ContainerClient, wire: Wire, folder: Path, tmp_path: Path
) -> None:
    def flip_a_byte(request: Any) -> None:
        if request.method == "PUT" and request.url.endswith("/part-2.csv"):
            request.data = b"X" + request.data[1:]

    wire.tamper = flip_a_byte
    with pytest.raises(BackendError, match="did not match its MD5") as raised:
        upload(container, folder, tmp_path)

    assert isinstance(raised.value.__cause__, HttpResponseError)
    assert raised.value.__cause__.status_code == 400
    assert not container.get_blob_client(MANIFEST).exists()  # the next run uploads again


def test_a_big_file_streams_in_blocks_each_with_its_md5(
    azurite: str,
    azurite_container: str,
    wire: Wire,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(storage, "IN_MEMORY_MAX_BYTES", 64 * KiB)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data = os.urandom(2 * MiB + 5)
    (data_dir / "big.bin").write_bytes(data)
    with ContainerClient.from_connection_string(
        azurite,
        container_name=azurite_container,
        raw_request_hook=wire.hook,
        max_single_put_size=MiB,
        max_block_size=MiB,
    ) as container:
        result = upload(container, data_dir, tmp_path)

        blocks = [e for e in wire.of("PUT") if "comp=block&" in e.query + "&"]
        chunks = [data[start : start + MiB] for start in range(0, len(data), MiB)]
        assert sorted(e.headers["Content-MD5"] for e in blocks) == sorted(
            b64(md5(chunk)) for chunk in chunks
        )
        committed = [e for e in wire.of("PUT") if "comp=blocklist" in e.query]
        assert [e.headers["x-ms-blob-content-md5"] for e in committed] == [b64(md5(data))]
        assert read(container, f"{PREFIX}/big.bin") == data
        properties = container.get_blob_client(f"{PREFIX}/big.bin").get_blob_properties()
        assert bytes(properties.content_settings.content_md5 or b"") == md5(data)
        assert result.copied_bytes == len(data)


def test_a_big_file_that_changes_while_it_uploads_is_an_error(
    container: ContainerClient,
    wire: Wire,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(storage, "IN_MEMORY_MAX_BYTES", 64 * KiB)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    big = data_dir / "big.bin"
    big.write_bytes(os.urandom(256 * KiB))

    def append_once(request: Any) -> None:
        if request.method == "PUT" and big.stat().st_size == 256 * KiB:
            with big.open("ab") as handle:
                handle.write(b"more")

    wire.tamper = append_once
    with pytest.raises(BackendError, match="changed while it was uploading"):
        upload(container, data_dir, tmp_path)
    assert not container.get_blob_client(MANIFEST).exists()


def test_a_single_file_channel_sits_under_the_prefix_with_its_own_name(
    container: ContainerClient, tmp_path: Path
) -> None:
    source = tmp_path / "train.csv"
    source.write_text("x\n1\n")
    result = upload(container, source, tmp_path)
    assert result.uri == f"{PREFIX}/"
    assert blobs_under(container, PREFIX + "/") == {f"{PREFIX}/train.csv": 4}


# -- later runs ----------------------------------------------------------------------


def test_an_unchanged_channel_makes_one_get_no_put_and_hashes_nothing(
    container: ContainerClient,
    wire: Wire,
    folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = upload(container, folder, tmp_path)
    wire.clear()
    hashed: list[Path] = []
    real_sha256_file = cloudtrain.store.sha256_file

    def counting_sha256_file(path: Path) -> str:
        hashed.append(path)
        return real_sha256_file(path)

    monkeypatch.setattr(cloudtrain.store, "sha256_file", counting_sha256_file)
    logged: list[str] = []

    second = upload(container, folder, tmp_path, logged)

    assert wire.of("PUT") == [] and wire.of("DELETE") == []
    assert [(e.method, e.blob, e.query) for e in wire.sent] == [("GET", MANIFEST, "")]
    assert hashed == []  # the stat cache answered for every file
    assert second.unchanged and second.digest == first.digest
    assert (second.copied_files, second.copied_bytes, second.files) == (0, 0, 6)
    assert logged == [f"train: unchanged, 6 files at {container.container_name}/{PREFIX}/"]


def test_one_changed_file_is_the_only_upload(
    container: ContainerClient, wire: Wire, folder: Path, tmp_path: Path
) -> None:
    first = upload(container, folder, tmp_path)
    (folder / "sub" / "labels.json").write_text('{"a": 2}')
    wire.clear()

    second = upload(container, folder, tmp_path)

    assert wire.channel_puts() == [f"{PREFIX}/sub/labels.json"]
    assert [e.blob for e in wire.of("PUT")] == [f"{PREFIX}/sub/labels.json", MANIFEST]
    assert wire.of("DELETE") == []
    assert read(container, f"{PREFIX}/sub/labels.json") == b'{"a": 2}'
    assert (second.copied_files, second.copied_bytes) == (1, 8)
    assert second.digest != first.digest and not second.unchanged
    assert json.loads(read(container, MANIFEST))["files"]["sub/labels.json"]["size"] == 8


def test_a_file_removed_locally_is_deleted_from_the_container(
    container: ContainerClient, wire: Wire, folder: Path, tmp_path: Path
) -> None:
    upload(container, folder, tmp_path)
    (folder / "part-3.csv").unlink()
    wire.clear()
    logged: list[str] = []

    result = upload(container, folder, tmp_path, logged)

    assert f"{PREFIX}/part-3.csv" not in blobs_under(container, PREFIX + "/")
    assert len(blobs_under(container, PREFIX + "/")) == 5
    assert wire.channel_puts() == []
    assert [e.blob for e in wire.of("DELETE")] == [f"{PREFIX}/part-3.csv"]
    assert f"deleted {container.container_name}/{PREFIX}/part-3.csv" in "\n".join(logged)
    assert "part-3.csv" not in json.loads(read(container, MANIFEST))["files"]
    assert not result.unchanged and result.copied_files == 0


def test_a_stray_blob_under_the_prefix_is_deleted_when_verifying(
    container: ContainerClient, folder: Path, tmp_path: Path
) -> None:
    upload(container, folder, tmp_path)
    container.upload_blob(f"{PREFIX}/stray.csv", b"x")
    assert upload(container, folder, tmp_path).unchanged  # the manifest is trusted...
    result = upload(container, folder, tmp_path, verify=True)  # ...unless verified
    assert f"{PREFIX}/stray.csv" not in blobs_under(container, PREFIX + "/")
    assert not result.unchanged


def test_verify_uploads_a_blob_deleted_by_hand_again(
    container: ContainerClient, wire: Wire, folder: Path, tmp_path: Path
) -> None:
    first = upload(container, folder, tmp_path)
    container.delete_blob(f"{PREFIX}/part-1.csv")
    wire.clear()

    second = upload(container, folder, tmp_path, verify=True)

    assert wire.channel_puts() == [f"{PREFIX}/part-1.csv"]
    assert read(container, f"{PREFIX}/part-1.csv") == (folder / "part-1.csv").read_bytes()
    assert second.copied_files == 1 and not second.unchanged
    assert second.digest == first.digest  # same content as before
    assert [e.blob for e in wire.of("PUT")] == [f"{PREFIX}/part-1.csv"]  # manifest unchanged


def test_verify_replaces_a_blob_changed_by_hand_even_at_the_same_size(
    container: ContainerClient, wire: Wire, folder: Path, tmp_path: Path
) -> None:
    upload(container, folder, tmp_path)
    original = (folder / "sub" / "labels.json").read_bytes()
    container.upload_blob(f"{PREFIX}/sub/labels.json", b'{"a": 9}', overwrite=True)
    wire.clear()

    upload(container, folder, tmp_path, verify=True)

    assert wire.channel_puts() == [f"{PREFIX}/sub/labels.json"]
    assert read(container, f"{PREFIX}/sub/labels.json") == original


def test_an_interrupted_upload_is_redone_because_the_manifest_comes_last(
    container: ContainerClient, wire: Wire, folder: Path, tmp_path: Path
) -> None:
    upload(container, folder, tmp_path)
    (folder / "part-0.csv").write_text("new\n")
    container.delete_blob(MANIFEST)  # as if never written
    wire.clear()

    result = upload(container, folder, tmp_path)

    assert len(set(wire.channel_puts())) == 6  # every file again: no manifest to trust
    assert read(container, f"{PREFIX}/part-0.csv") == b"new\n"
    assert result.copied_files == 6


def test_the_azure_clients_seam_hands_out_containers_on_azurite(
    azurite: str, azurite_container: str, folder: Path, tmp_path: Path
) -> None:
    clients = AzureClients(AzureConfig(), blob_connection_string=azurite)
    container = clients.container_client("https://unused.example", azurite_container)
    assert upload(container, folder, tmp_path).copied_files == 6


# -- DataFrames ----------------------------------------------------------------------


def test_a_dataframe_is_uploaded_as_parquet_once(
    container: ContainerClient, wire: Wire, tmp_path: Path
) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.5, 3.0], "label": ["a", "b", "c"]})
    first = upload(container, frame, tmp_path)

    assert blobs_under(container, PREFIX + "/").keys() == {f"{PREFIX}/data.parquet"}
    back = pd.read_parquet(io.BytesIO(read(container, f"{PREFIX}/data.parquet")))
    pd.testing.assert_frame_equal(back, frame)
    assert first.files == 1 and first.source == "DataFrame 3x2"

    wire.clear()
    again = upload(container, frame.copy(), tmp_path)
    assert again.unchanged and wire.of("PUT") == []


# -- download ------------------------------------------------------------------------


def test_download_prefix_brings_every_blob_back_under_its_relative_path(
    container: ContainerClient, folder: Path, tmp_path: Path
) -> None:
    upload(container, folder, tmp_path)
    destination = tmp_path / "back"

    written = download_prefix(container, PREFIX, destination)

    assert local_files(destination) == local_files(folder)
    assert written == sorted(destination.resolve() / name for name in local_files(folder))
    assert [path.name for path in destination.rglob(".tmp-*")] == []


def test_download_prefix_of_nothing_is_an_empty_list(
    container: ContainerClient, tmp_path: Path
) -> None:
    assert download_prefix(container, "no/such/prefix/", tmp_path / "back") == []


def test_download_prefix_refuses_a_blob_that_would_land_outside(tmp_path: Path) -> None:
    # Azurite refuses ".." in a blob name; other services and older accounts may not,
    # so a listing that holds one is faked.
    class Listed:
        def __init__(self, name: str) -> None:
            self.name = name
            self.metadata: dict[str, str] = {}
            self.content_settings = None

    class Container:
        container_name = "c"
        downloaded: list[str] = []

        def list_blobs(self, **kwargs: Any) -> list[Listed]:
            return [Listed("outputs/model.pkl"), Listed("outputs/../../escape.txt")]

        def download_blob(self, name: str, **kwargs: Any) -> Any:
            self.downloaded.append(name)
            raise AssertionError("nothing is downloaded once a name is refused")

    fake = Container()
    destination = tmp_path / "deep" / "back"
    with pytest.raises(BackendError, match="outside"):
        download_prefix(fake, "outputs", destination)  # type: ignore[arg-type]
    assert fake.downloaded == []
    assert not destination.exists()


def test_download_prefix_checks_the_stored_md5(container: ContainerClient, tmp_path: Path) -> None:
    container.upload_blob("outputs/model.pkl", b"model")
    container.get_blob_client("outputs/model.pkl").set_http_headers(
        ContentSettings(content_md5=bytearray(md5(b"something else")))
    )
    with pytest.raises(BackendError, match="MD5"):
        download_prefix(container, "outputs/", tmp_path / "back")
    assert local_files(tmp_path / "back") == {}


# -- refusals and errors -------------------------------------------------------------


def test_a_missing_container_names_the_datastore_field(
    azurite: str, folder: Path, tmp_path: Path
) -> None:
    with ContainerClient.from_connection_string(azurite, container_name="no-such-container") as c:
        with pytest.raises(ConfigError) as raised:
            upload(c, folder, tmp_path)
        with pytest.raises(ConfigError, match="no-such-container"):
            download_prefix(c, "outputs/", tmp_path / "back")
    assert raised.value.field == "azure.datastore"
    assert "no-such-container" in str(raised.value)
    assert isinstance(raised.value.__cause__, ResourceNotFoundError)


def test_an_empty_folder_is_a_config_error(container: ContainerClient, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as raised:
        upload(container, tmp_path / "empty", tmp_path)
    assert raised.value.field == "data.train"


def test_a_prefix_that_would_hold_the_manifest_is_refused(
    container: ContainerClient, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="must be non-empty"):
        upload_channel(
            container,
            channel="train",
            source=tmp_path,
            path_prefix="cloudtrain/p",
            manifest_path="cloudtrain/p/manifest.json",
            cache_dir=tmp_path,
        )


def test_no_progress_bar_unless_stderr_is_a_terminal(
    container: ContainerClient, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upload(container, folder, tmp_path)
    assert capsys.readouterr().err == ""


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
