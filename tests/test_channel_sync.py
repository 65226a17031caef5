"""Channel sync and downloads, the same suite against S3 on moto and Azure Blob on Azurite:
only changes go over the wire, checksummed, and a prefix comes back whole."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from object_stores import BUCKET, MANIFEST, PREFIX, BlobRemote, Remote, S3Remote, sync

import cloudtrain.store
import cloudtrain.sync
from cloudtrain.errors import BackendError, ConfigError
from cloudtrain.objectstore import LocalFile, ObjectStore, OnBytes, StoredObject
from cloudtrain.results import ChannelData
from cloudtrain.sync import Progress, download_prefix, sync_channel


@pytest.fixture(params=["s3", "blob"])
def remote(request: pytest.FixtureRequest) -> Remote:
    remote: Remote = request.getfixturevalue(f"{request.param}_remote")
    return remote


def upload(
    remote: Remote,
    source: Any,
    tmp_path: Path,
    logged: list[str] | None = None,
    store: ObjectStore | None = None,
    **options: Any,
) -> ChannelData:
    """Sync through the remote's store (or ``store``), logging into ``logged``."""
    log = (logged if logged is not None else []).append
    return sync(store or remote.store, source, tmp_path, log=log, **options)


def local_files(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file()
    }


def manifest(remote: Remote) -> dict[str, Any]:
    files: dict[str, Any] = json.loads(remote.read(MANIFEST))["files"]
    return files


# -- the first upload ----------------------------------------------------------------


def test_first_upload_puts_every_file_and_the_manifest_outside_the_prefix(
    remote: Remote, folder: Path, tmp_path: Path
) -> None:
    result = upload(remote, folder, tmp_path)

    files = local_files(folder)
    assert remote.keys(PREFIX + "/") == {
        f"{PREFIX}/{name}": len(data) for name, data in files.items()
    }
    for name, data in files.items():
        assert remote.read(f"{PREFIX}/{name}") == data
    assert remote.keys("").keys() - remote.keys(PREFIX + "/").keys() == {MANIFEST}
    manifest_bytes = remote.read(MANIFEST)
    assert json.loads(manifest_bytes) == {
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(files.items())
        }
    }
    assert result.digest == hashlib.sha256(manifest_bytes).hexdigest()
    assert result.uri == remote.store.uri(PREFIX + "/")
    assert (result.files, result.copied_files) == (7, 7)
    assert result.bytes == result.copied_bytes == sum(len(data) for data in files.values())
    assert not result.unchanged


def test_each_store_names_a_prefix_as_its_cloud_does(
    s3_remote: S3Remote, blob_remote: BlobRemote
) -> None:
    """What the logs and ChannelData.uri say (the suite compares against these)."""
    s3, blob = s3_remote.store, blob_remote.store
    assert s3.name(PREFIX + "/") == s3.uri(PREFIX + "/") == f"s3://{BUCKET}/{PREFIX}/"
    assert blob.name(PREFIX + "/") == f"{blob_remote.wire.container}/{PREFIX}/"
    assert blob.uri(PREFIX + "/") == f"{PREFIX}/"  # a path in the datastore


def test_the_local_backend_and_the_store_agree_on_the_digest(
    remote: Remote, folder: Path, tmp_path: Path
) -> None:
    stored = cloudtrain.store.ContentStore(tmp_path / "local").put_path("p/train", folder)
    assert upload(remote, folder, tmp_path).digest == stored.digest


def test_a_file_the_store_can_send_unhashed_starts_before_it_is_hashed(
    remote: Remote, folder: Path, tmp_path: Path
) -> None:
    """S3 hashes a multipart file in the read that sends it, Blob every file: a new file
    of that kind is handed over unhashed, and the manifest still gets its sha256."""
    handed: dict[str, str | None] = {}
    real = remote.store.put_files

    def spy(files: Iterable[LocalFile], progress: OnBytes | None = None) -> dict[str, StoredObject]:
        def noted() -> Iterable[LocalFile]:
            for file in files:
                handed[file.key] = file.sha256
                yield file

        return real(noted(), progress)

    remote.store.put_files = spy  # type: ignore[method-assign]
    upload(remote, folder, tmp_path)

    sizes = {f"{PREFIX}/{name}": len(data) for name, data in local_files(folder).items()}
    unhashed = {key for key, sha256 in handed.items() if sha256 is None}
    assert unhashed == {key for key, size in sizes.items() if not remote.store.needs_sha256(size)}
    assert unhashed  # one of each kind in the folder
    for name, data in local_files(folder).items():
        assert manifest(remote)[name]["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_single_file_channel_sits_under_the_prefix_with_its_own_name(
    remote: Remote, tmp_path: Path
) -> None:
    source = tmp_path / "train.csv"
    source.write_text("x\n1\n")
    result = upload(remote, source, tmp_path)
    assert result.uri == remote.store.uri(PREFIX + "/")
    assert remote.keys(PREFIX + "/") == {f"{PREFIX}/train.csv": 4}


# -- later runs ----------------------------------------------------------------------


def test_an_unchanged_channel_makes_one_get_no_put_and_hashes_nothing(
    remote: Remote, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = upload(remote, folder, tmp_path)
    remote.clear()
    hashed: list[Path] = []
    real_sha256_file = cloudtrain.store.sha256_file

    def counting_sha256_file(path: Path) -> str:
        hashed.append(path)
        return real_sha256_file(path)

    monkeypatch.setattr(cloudtrain.store, "sha256_file", counting_sha256_file)
    logged: list[str] = []

    second = upload(remote, folder, tmp_path, logged)

    # One GET of the manifest: no LIST, no PUT, no POST, no DELETE.
    assert [(r.method, r.key, r.query) for r in remote.sent()] == [("GET", MANIFEST, "")]
    assert hashed == []  # the stat cache answered for every file
    assert second.unchanged and second.digest == first.digest
    assert (second.copied_files, second.copied_bytes, second.files) == (0, 0, 7)
    assert logged == [f"train: unchanged, 7 files at {remote.store.name(PREFIX + '/')}"]


def test_one_changed_file_is_the_only_upload(remote: Remote, folder: Path, tmp_path: Path) -> None:
    first = upload(remote, folder, tmp_path)
    (folder / "sub" / "labels.json").write_text('{"a": 2}')
    remote.clear()

    second = upload(remote, folder, tmp_path)

    assert remote.channel_puts() == [f"{PREFIX}/sub/labels.json"]
    assert [r.key for r in remote.of("PUT")] == [f"{PREFIX}/sub/labels.json", MANIFEST]
    assert remote.of("POST") == [] and remote.of("DELETE") == []
    assert remote.read(f"{PREFIX}/sub/labels.json") == b'{"a": 2}'
    assert (second.copied_files, second.copied_bytes) == (1, 8)
    assert second.digest != first.digest and not second.unchanged
    assert manifest(remote)["sub/labels.json"]["size"] == 8


def test_a_file_removed_locally_is_deleted_from_the_store(
    remote: Remote, folder: Path, tmp_path: Path
) -> None:
    upload(remote, folder, tmp_path)
    (folder / "part-3.csv").unlink()
    remote.clear()
    logged: list[str] = []

    result = upload(remote, folder, tmp_path, logged)

    gone = f"{PREFIX}/part-3.csv"
    assert gone not in remote.keys(PREFIX + "/")
    assert len(remote.keys(PREFIX + "/")) == 6
    assert remote.channel_puts() == []
    deleting = [(r.method, r.key, r.query) for r in remote.sent() if r.method in ("POST", "DELETE")]
    assert deleting == remote.deletion([gone])
    assert f"deleted {remote.store.name(gone)}" in "\n".join(logged)
    assert "part-3.csv" not in manifest(remote)
    assert not result.unchanged and result.copied_files == 0


def test_a_stray_object_under_the_prefix_is_deleted_when_verifying(
    remote: Remote, folder: Path, tmp_path: Path
) -> None:
    upload(remote, folder, tmp_path)
    remote.put(f"{PREFIX}/stray.csv", b"x")
    assert upload(remote, folder, tmp_path).unchanged  # the manifest is trusted...
    result = upload(remote, folder, tmp_path, verify=True)  # ...unless verified
    assert f"{PREFIX}/stray.csv" not in remote.keys(PREFIX + "/")
    assert not result.unchanged


def test_verify_uploads_an_object_deleted_by_hand_again(
    remote: Remote, folder: Path, tmp_path: Path
) -> None:
    first = upload(remote, folder, tmp_path)
    remote.remove(f"{PREFIX}/part-1.csv")
    remote.clear()

    second = upload(remote, folder, tmp_path, verify=True)

    assert remote.channel_puts() == [f"{PREFIX}/part-1.csv"]
    assert remote.read(f"{PREFIX}/part-1.csv") == (folder / "part-1.csv").read_bytes()
    assert second.copied_files == 1 and not second.unchanged
    assert second.digest == first.digest  # same content as before
    assert [r.key for r in remote.of("PUT")] == [f"{PREFIX}/part-1.csv"]  # manifest unchanged


@pytest.mark.parametrize("entry", ['"garbage"', "[1]", "7", '{"sha256": 1, "size": "3"}'])
def test_a_manifest_with_a_malformed_entry_is_rewritten_and_objects_checked_by_checksum(
    remote: Remote, tmp_path: Path, entry: str
) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "a.csv").write_text("abc")
    sync(remote.store, data, tmp_path)
    remote.put(MANIFEST, ('{"files": {"a.csv": ' + entry + "}}").encode())

    again = sync(remote.store, data, tmp_path)

    assert json.loads(remote.read(MANIFEST))["files"]["a.csv"] == {
        "sha256": hashlib.sha256(b"abc").hexdigest(),
        "size": 3,
    }
    assert again.copied_files == 0 and not again.unchanged  # the object is the file's
    assert remote.channel_puts() == [f"{PREFIX}/a.csv"]  # the first sync's only


def test_objects_an_interrupted_upload_completed_are_recognised_by_checksum(
    remote: Remote, folder: Path, tmp_path: Path
) -> None:
    upload(remote, folder, tmp_path)
    (folder / "part-0.csv").write_text("new\n")
    remote.remove(MANIFEST)  # interrupted before the manifest was written
    remote.put(f"{PREFIX}/part-1.csv", b"X" * len((folder / "part-1.csv").read_bytes()))
    remote.clear()

    result = upload(remote, folder, tmp_path)

    # part-0 changed, part-1's object has its size but not its checksum; the others
    # are what the store checked at upload. S3's multipart object carries a checksum of
    # its parts, not of the file: it is sent again.
    resent = {"part-0.csv", "part-1.csv"} | ({"big.bin"} if remote.kind == "s3" else set())
    assert {key[len(PREFIX) + 1 :] for key in remote.channel_puts()} == resent
    assert remote.read(f"{PREFIX}/part-0.csv") == b"new\n"
    assert remote.read(f"{PREFIX}/part-1.csv") == (folder / "part-1.csv").read_bytes()
    assert result.copied_files == len(resent)
    assert json.loads(remote.read(MANIFEST))["files"].keys() == local_files(folder).keys()


def listings(remote: Remote) -> list[Any]:
    """LIST requests on the bucket or container (ListObjectsV2, List Blobs)."""
    return [
        r
        for r in remote.of("GET")
        if not r.key and ("list-type" in r.query or "comp=list" in r.query)
    ]


def test_an_upload_killed_midway_resumes_with_only_the_files_that_did_not_land(
    remote: Remote, tmp_path: Path
) -> None:
    data = tmp_path / "many"
    data.mkdir()
    for index in range(300):
        (data / f"{index:03d}.csv").write_text(f"{index},{index * 7}\n" * 20)
    connection = (
        BUCKET
        if isinstance(remote, S3Remote)
        else f"{remote.connection_string}|{remote.container.container_name}"  # type: ignore[attr-defined]
    )
    helper = Path(__file__).with_name("upload_until_killed.py")
    killed = subprocess.run(
        [
            sys.executable,
            str(helper),
            remote.kind,
            connection,
            str(data),
            str(tmp_path / "c"),
            "160",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    landed = remote.keys(PREFIX + "/")
    assert len(landed) == 160 and MANIFEST not in remote.keys("")
    remote.clear()

    result = upload(remote, data, tmp_path)

    missing = sorted(f"{PREFIX}/{index:03d}.csv" for index in range(300))
    missing = [key for key in missing if key not in landed]
    assert sorted(remote.channel_puts()) == missing  # each once, nothing that landed
    assert (result.copied_files, result.files) == (140, 300)
    assert len(listings(remote)) == 1
    heads = [r.key for r in remote.of("HEAD")]
    if remote.store.lists_sha256:
        assert heads == []  # the listing carries every checksum
    else:  # S3 lists none: one HEAD per object that landed, none for the others
        assert sorted(heads) == sorted(landed)
    assert set(remote.keys(PREFIX + "/")) == {f"{PREFIX}/{index:03d}.csv" for index in range(300)}


# -- DataFrames ----------------------------------------------------------------------


def test_a_dataframe_is_uploaded_as_parquet_once(remote: Remote, tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.5, 3.0], "label": ["a", "b", "c"]})
    first = upload(remote, frame, tmp_path)

    assert remote.keys(PREFIX + "/").keys() == {f"{PREFIX}/data.parquet"}
    back = pd.read_parquet(io.BytesIO(remote.read(f"{PREFIX}/data.parquet")))
    pd.testing.assert_frame_equal(back, frame)
    assert first.files == 1 and first.source == "DataFrame 3x2"

    remote.clear()
    again = upload(remote, frame.copy(), tmp_path)
    assert again.unchanged and remote.of("PUT") == []


# -- progress ------------------------------------------------------------------------


def test_no_progress_bar_unless_stderr_is_a_terminal(
    remote: Remote, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upload(remote, folder, tmp_path)
    assert capsys.readouterr().err == ""


def test_the_progress_bar_counts_every_byte_sent(
    remote: Remote,
    folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    closed: list[tuple[int, int]] = []

    class Counted(Progress):
        def close(self) -> None:
            closed.append((self._bar.n, self._bar.total))
            super().close()

    monkeypatch.setattr(cloudtrain.sync, "Progress", Counted)
    result = upload(remote, folder, tmp_path, progress=True)

    assert closed == [(result.copied_bytes, result.copied_bytes)]
    assert "upload train" in capsys.readouterr().err


def test_the_progress_bar_counts_the_bytes_to_upload(capsys: pytest.CaptureFixture[str]) -> None:
    bar = Progress("train", enabled=True)
    bar.add_total(300)
    bar.advance(100)
    bar.add_total(200)
    bar.advance(400)
    assert (bar._bar.n, bar._bar.total) == (500, 500)
    bar.close()
    assert "train" in capsys.readouterr().err


# -- refusals and errors -------------------------------------------------------------


def test_a_prefix_that_would_hold_the_manifest_is_refused(remote: Remote, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be non-empty"):
        sync_channel(
            remote.store,
            channel="train",
            source=tmp_path,
            prefix="cloudtrain/p",
            manifest_key="cloudtrain/p/manifest.json",
            cache_dir=tmp_path,
        )


def test_a_missing_bucket_or_container_names_its_field(
    remote: Remote, folder: Path, tmp_path: Path
) -> None:
    store, name, sdk_error = remote.missing()
    with pytest.raises(ConfigError) as raised:
        upload(remote, folder, tmp_path, store=store)
    with pytest.raises(ConfigError, match=name):
        download_prefix(store, "outputs/", tmp_path / "back")
    assert raised.value.field == remote.field
    assert name in str(raised.value)
    assert isinstance(raised.value.__cause__, sdk_error)


def test_an_empty_folder_is_a_config_error(remote: Remote, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as raised:
        upload(remote, tmp_path / "empty", tmp_path)
    assert raised.value.field == "data.train"


# -- the store's own operations ------------------------------------------------------


def test_head_list_read_and_delete_see_what_is_stored(
    remote: Remote, folder: Path, tmp_path: Path
) -> None:
    upload(remote, folder, tmp_path)
    store, key = remote.store, f"{PREFIX}/sub/labels.json"
    sha256 = hashlib.sha256(b'{"a": 1}').hexdigest()
    listed = sha256 if store.lists_sha256 else None  # S3's listing has no checksum values

    assert store.head(key) == StoredObject(key, 8, sha256)
    assert StoredObject(key, 8, listed) in store.list(PREFIX + "/sub/")
    assert {obj.key for obj in store.list(PREFIX + "/sub/")} == {
        key,
        f"{PREFIX}/sub/deeper/notes.txt",
    }
    assert store.read(key) == b'{"a": 1}'
    store.delete([key, f"{PREFIX}/never-there.csv"])  # already gone is not an error
    assert store.head(key) is None and store.read(key) is None
    assert store.list("no/such/prefix/") == []


# -- download ------------------------------------------------------------------------


def test_download_prefix_brings_every_object_back_under_its_relative_path(
    remote: Remote, folder: Path, tmp_path: Path
) -> None:
    upload(remote, folder, tmp_path)
    destination = tmp_path / "back"

    written = download_prefix(remote.store, PREFIX, destination)

    assert local_files(destination) == local_files(folder)
    assert written == sorted(destination.resolve() / name for name in local_files(folder))
    assert [path.name for path in destination.rglob(".tmp-*")] == []


def test_download_prefix_of_nothing_is_an_empty_list(remote: Remote, tmp_path: Path) -> None:
    assert download_prefix(remote.store, "no/such/prefix/", tmp_path / "back") == []


def test_download_prefix_refuses_a_key_that_would_land_outside(
    remote: Remote, tmp_path: Path
) -> None:
    # Azurite refuses ".." in a blob name; other services and older accounts may not,
    # so the listing is given one.
    remote.put("outputs/model.pkl", b"model")
    downloaded: list[str] = []

    class Listing:
        def __init__(self, store: ObjectStore) -> None:
            self.store = store
            self.name = store.name

        def list(self, prefix: str) -> list[StoredObject]:
            return [*self.store.list(prefix), StoredObject("outputs/../../escape.txt", 1)]

        def download_files(self, targets: Iterable[tuple[str, Path]]) -> None:
            downloaded.extend(key for key, _ in targets)

    destination = tmp_path / "deep" / "back"
    with pytest.raises(BackendError, match="outside"):
        download_prefix(Listing(remote.store), "outputs", destination)  # type: ignore[arg-type]
    assert downloaded == []
    assert not destination.exists()


def test_download_prefix_checks_the_stored_checksum(remote: Remote, tmp_path: Path) -> None:
    remote.put_with_the_checksum_of("outputs/model.pkl", b"model", b"something else")
    with pytest.raises(BackendError, match=f"does not match the .*{remote.checksum}"):
        download_prefix(remote.store, "outputs/", tmp_path / "back")
    assert local_files(tmp_path / "back") == {}


# -- one read, one hash per file -------------------------------------------------------

_opened: dict[str, int] = {}  # path -> times opened, for the paths a test watches


def _count_opens(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and isinstance(args[0], str | os.PathLike):
        path = os.fspath(args[0])
        if path in _opened:
            _opened[path] += 1


sys.addaudithook(_count_opens)  # process-wide and permanent: it counts watched paths only


def test_a_big_file_is_read_once_and_the_manifest_holds_the_sha256_of_that_read(
    remote: Remote, folder: Path, tmp_path: Path
) -> None:
    """The store sends the big file (S3 multipart, Blob blocks) from one read that also
    hashes it: the file is opened once, and the next run reads it not at all."""
    big = folder / "big.bin"
    _opened[str(big)] = 0
    try:
        upload(remote, folder, tmp_path)
        first = _opened[str(big)]
        again = upload(remote, folder, tmp_path)
    finally:
        opened_again = _opened.pop(str(big)) - first
    assert first == 1
    data = big.read_bytes()
    assert manifest(remote)["big.bin"] == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    assert remote.read(f"{PREFIX}/big.bin") == data
    assert again.unchanged and opened_again == 0


def test_a_big_file_written_while_it_uploads_is_refused(
    remote: Remote, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its last MiB rewritten in place after the store's first read: S3 took the parts of
    two versions (each part's CRC32 right) as one object and the manifest recorded it, a
    file that never existed on disk; Blob refused. Both refuse it now, write no manifest,
    and the next run sends the file as it is."""
    import cloudtrain.hashed_read

    upload(remote, folder, tmp_path)
    before = manifest(remote)
    big = folder / "big.bin"
    original = cloudtrain.hashed_read.HashedRead.read
    written: list[int] = []

    def read_then_write(self: Any, amount: int = -1) -> bytes:
        data = original(self, amount)
        if data and not written:
            with big.open("r+b") as handle:
                handle.seek(big.stat().st_size - 1024 * 1024)
                written.append(handle.write(os.urandom(1024 * 1024)))
        return data

    big.write_bytes(os.urandom(big.stat().st_size))  # changed: it is sent again
    monkeypatch.setattr(cloudtrain.hashed_read.HashedRead, "read", read_then_write)
    with pytest.raises(BackendError, match="big.bin changed while it was uploading: run again"):
        upload(remote, folder, tmp_path)
    assert written and manifest(remote) == before

    monkeypatch.setattr(cloudtrain.hashed_read.HashedRead, "read", original)
    upload(remote, folder, tmp_path)
    data = big.read_bytes()
    assert manifest(remote)["big.bin"] == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    assert remote.read(f"{PREFIX}/big.bin") == data
