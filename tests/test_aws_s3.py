"""Channels to S3 against moto's server: only changes go over the wire, checked by SHA-256."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
from botocore.exceptions import ClientError
from moto_server import REGION, MotoServer

import cloudtrain.store
from cloudtrain.backends.aws import s3 as s3_module
from cloudtrain.backends.aws.clients import AwsClients
from cloudtrain.backends.aws.s3 import parse_s3_uri, require_s3_uri, upload_channel
from cloudtrain.errors import BackendError, ConfigError, TransientError
from cloudtrain.results import ChannelData
from cloudtrain.uploads import Progress

BUCKET = "cloudtrain-test-bucket"
PREFIX = "cloudtrain/digits-sgd/data/train"
MANIFEST = "cloudtrain/digits-sgd/manifests/train.json"
MiB = 1024 * 1024


@pytest.fixture
def clients(aws: MotoServer) -> AwsClients:
    clients = AwsClients(boto3.Session(region_name=REGION))
    clients.client("s3").create_bucket(Bucket=BUCKET)
    aws.log.clear()
    return clients


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nested small files and one file above a (lowered) multipart threshold."""
    monkeypatch.setattr(s3_module, "MULTIPART_THRESHOLD_BYTES", 6 * MiB)
    monkeypatch.setattr(s3_module, "MULTIPART_CHUNK_BYTES", 5 * MiB)  # S3's smallest part
    data = tmp_path / "data"
    (data / "sub" / "deeper").mkdir(parents=True)
    for index in range(4):
        (data / f"part-{index}.csv").write_text(f"x,y\n{index},{index * 2}\n" * 50)
    (data / "sub" / "labels.json").write_text('{"a": 1}')
    (data / "sub" / "deeper" / "notes.txt").write_text("nested")
    (data / "big.bin").write_bytes(os.urandom(11 * MiB))  # 3 parts: 5 + 5 + 1 MiB
    return data


def upload(
    clients: AwsClients,
    source: Any,
    tmp_path: Path,
    logged: list[str] | None = None,
    verify: bool = False,
) -> ChannelData:
    return upload_channel(
        clients,
        channel="train",
        source=source,
        bucket=BUCKET,
        key_prefix=PREFIX,
        manifest_key=MANIFEST,
        cache_dir=tmp_path / "cache",
        verify=verify,
        log=(logged if logged is not None else []).append,
    )


def keys_under(clients: AwsClients, prefix: str) -> dict[str, int]:
    pages = (
        clients.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    )
    return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}


def read(clients: AwsClients, key: str) -> bytes:
    body: bytes = clients.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return body


def local_files(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file()
    }


def channel_puts(aws: MotoServer) -> list[str]:
    """Paths of PUTs into the channel's prefix (single objects and parts)."""
    return [e.path for e in aws.log.s3("PUT") if e.path.startswith(f"/{BUCKET}/{PREFIX}/")]


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# -- the first upload ----------------------------------------------------------------


def test_first_upload_puts_every_file_and_the_manifest_outside_the_prefix(
    clients: AwsClients, aws: MotoServer, folder: Path, tmp_path: Path
) -> None:
    result = upload(clients, folder, tmp_path)

    files = local_files(folder)
    assert keys_under(clients, PREFIX + "/") == {
        f"{PREFIX}/{name}": len(data) for name, data in files.items()
    }
    for name, data in files.items():
        assert read(clients, f"{PREFIX}/{name}") == data
    manifest_bytes = read(clients, MANIFEST)
    assert json.loads(manifest_bytes) == {
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(files.items())
        }
    }
    assert result.digest == hashlib.sha256(manifest_bytes).hexdigest()
    assert result.uri == f"s3://{BUCKET}/{PREFIX}/"
    assert (result.files, result.copied_files) == (7, 7)
    assert result.bytes == result.copied_bytes == sum(len(data) for data in files.values())
    assert not result.unchanged


def test_the_local_backend_and_s3_agree_on_the_digest(
    clients: AwsClients, folder: Path, tmp_path: Path
) -> None:
    stored = cloudtrain.store.ContentStore(tmp_path / "local").put_path("p/train", folder)
    assert upload(clients, folder, tmp_path).digest == stored.digest


def test_a_large_file_goes_multipart_with_a_sha256_per_part(
    clients: AwsClients, aws: MotoServer, folder: Path, tmp_path: Path
) -> None:
    upload(clients, folder, tmp_path)

    big = f"/{BUCKET}/{PREFIX}/big.bin"
    created = [e for e in aws.log.s3("POST") if e.path == big and e.query == "uploads"]
    assert len(created) == 1
    assert created[0].header("x-amz-checksum-algorithm") == "SHA256"
    parts = [e for e in aws.log.s3("PUT") if e.path == big and "partNumber=" in e.query]
    data = (folder / "big.bin").read_bytes()
    expected = {b64_sha256(data[start : start + 5 * MiB]) for start in range(0, len(data), 5 * MiB)}
    assert {part.header("x-amz-checksum-sha256") for part in parts} == expected
    completed = [e for e in aws.log.s3("POST") if e.path == big and "uploadId=" in e.query]
    assert len(completed) == 1


def test_each_single_put_carries_the_files_sha256_for_s3_to_verify(
    clients: AwsClients, aws: MotoServer, folder: Path, tmp_path: Path
) -> None:
    upload(clients, folder, tmp_path)

    singles = {
        e.path: e for e in aws.log.s3("PUT") if "partNumber=" not in e.query and e.path != "/"
    }
    for name, data in local_files(folder).items():
        if name == "big.bin":
            continue
        assert singles[f"/{BUCKET}/{PREFIX}/{name}"].header("x-amz-checksum-sha256") == (
            b64_sha256(data)
        )
    head = clients.client("s3").head_object(
        Bucket=BUCKET, Key=f"{PREFIX}/part-0.csv", ChecksumMode="ENABLED"
    )
    assert head["ChecksumSHA256"] == b64_sha256((folder / "part-0.csv").read_bytes())


def test_a_single_file_channel_sits_under_the_prefix_with_its_own_name(
    clients: AwsClients, tmp_path: Path
) -> None:
    source = tmp_path / "train.csv"
    source.write_text("x\n1\n")
    result = upload(clients, source, tmp_path)
    assert result.uri == f"s3://{BUCKET}/{PREFIX}/"
    assert keys_under(clients, PREFIX + "/") == {f"{PREFIX}/train.csv": 4}


# -- later runs ----------------------------------------------------------------------


def test_an_unchanged_channel_makes_no_put_or_post_and_hashes_nothing(
    clients: AwsClients,
    aws: MotoServer,
    folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = upload(clients, folder, tmp_path)
    aws.log.clear()
    hashed: list[Path] = []
    real_sha256_file = cloudtrain.store.sha256_file

    def counting_sha256_file(path: Path) -> str:
        hashed.append(path)
        return real_sha256_file(path)

    monkeypatch.setattr(cloudtrain.store, "sha256_file", counting_sha256_file)
    logged: list[str] = []

    second = upload(clients, folder, tmp_path, logged)

    assert aws.log.s3("PUT") == [] and aws.log.s3("POST") == [] and aws.log.s3("DELETE") == []
    assert [e.path for e in aws.log.s3("GET")] == [f"/{BUCKET}/{MANIFEST}"]  # no LIST either
    assert hashed == []  # the stat cache answered for every file
    assert second.unchanged and second.digest == first.digest
    assert (second.copied_files, second.copied_bytes, second.files) == (0, 0, 7)
    assert logged == [f"train: unchanged, 7 files at s3://{BUCKET}/{PREFIX}/"]


def test_one_changed_file_is_the_only_upload(
    clients: AwsClients, aws: MotoServer, folder: Path, tmp_path: Path
) -> None:
    first = upload(clients, folder, tmp_path)
    (folder / "sub" / "labels.json").write_text('{"a": 2}')
    aws.log.clear()

    second = upload(clients, folder, tmp_path)

    assert channel_puts(aws) == [f"/{BUCKET}/{PREFIX}/sub/labels.json"]
    assert [e.path for e in aws.log.s3("POST")] == []
    assert read(clients, f"{PREFIX}/sub/labels.json") == b'{"a": 2}'
    assert (second.copied_files, second.copied_bytes) == (1, 8)
    assert second.digest != first.digest and not second.unchanged
    assert json.loads(read(clients, MANIFEST))["files"]["sub/labels.json"]["size"] == 8


def test_a_file_removed_locally_is_deleted_from_s3(
    clients: AwsClients, aws: MotoServer, folder: Path, tmp_path: Path
) -> None:
    upload(clients, folder, tmp_path)
    (folder / "part-3.csv").unlink()
    aws.log.clear()
    logged: list[str] = []

    result = upload(clients, folder, tmp_path, logged)

    assert f"{PREFIX}/part-3.csv" not in keys_under(clients, PREFIX + "/")
    assert len(keys_under(clients, PREFIX + "/")) == 6
    assert channel_puts(aws) == []
    assert [e.query for e in aws.log.s3("POST")] == ["delete"]
    assert f"deleted s3://{BUCKET}/{PREFIX}/part-3.csv" in "\n".join(logged)
    assert "part-3.csv" not in json.loads(read(clients, MANIFEST))["files"]
    assert not result.unchanged and result.copied_files == 0


def test_a_stray_key_under_the_prefix_is_deleted(
    clients: AwsClients, folder: Path, tmp_path: Path
) -> None:
    upload(clients, folder, tmp_path)
    clients.client("s3").put_object(Bucket=BUCKET, Key=f"{PREFIX}/stray.csv", Body=b"x")
    assert upload(clients, folder, tmp_path).unchanged  # the manifest is trusted...
    result = upload(clients, folder, tmp_path, verify=True)  # ...unless verified
    assert f"{PREFIX}/stray.csv" not in keys_under(clients, PREFIX + "/")
    assert not result.unchanged


def test_an_object_deleted_by_hand_is_uploaded_again(
    clients: AwsClients, aws: MotoServer, folder: Path, tmp_path: Path
) -> None:
    first = upload(clients, folder, tmp_path)
    clients.client("s3").delete_object(Bucket=BUCKET, Key=f"{PREFIX}/part-1.csv")
    aws.log.clear()

    second = upload(clients, folder, tmp_path, verify=True)

    assert channel_puts(aws) == [f"/{BUCKET}/{PREFIX}/part-1.csv"]
    assert read(clients, f"{PREFIX}/part-1.csv") == (folder / "part-1.csv").read_bytes()
    assert second.copied_files == 1 and not second.unchanged
    assert second.digest == first.digest  # same content as before


def test_an_interrupted_upload_is_redone_because_the_manifest_comes_last(
    clients: AwsClients, aws: MotoServer, folder: Path, tmp_path: Path
) -> None:
    upload(clients, folder, tmp_path)
    (folder / "part-0.csv").write_text("new\n")
    clients.client("s3").delete_object(Bucket=BUCKET, Key=MANIFEST)  # as if never written
    aws.log.clear()

    result = upload(clients, folder, tmp_path)

    assert len(set(channel_puts(aws))) == 7  # every file again: no manifest to trust
    assert read(clients, f"{PREFIX}/part-0.csv") == b"new\n"
    assert result.copied_files == 7


# -- DataFrames ----------------------------------------------------------------------


def test_a_dataframe_is_uploaded_as_parquet_once(
    clients: AwsClients, aws: MotoServer, tmp_path: Path
) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.5, 3.0], "label": ["a", "b", "c"]})
    first = upload(clients, frame, tmp_path)

    assert keys_under(clients, PREFIX + "/").keys() == {f"{PREFIX}/data.parquet"}
    back = pd.read_parquet(io.BytesIO(read(clients, f"{PREFIX}/data.parquet")))
    pd.testing.assert_frame_equal(back, frame)
    assert first.files == 1 and first.source == "DataFrame 3x2"

    aws.log.clear()
    again = upload(clients, frame.copy(), tmp_path)
    assert again.unchanged and aws.log.s3("PUT") == []


def test_no_progress_bar_unless_stderr_is_a_terminal(
    clients: AwsClients, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upload(clients, folder, tmp_path)
    assert capsys.readouterr().err == ""


def test_the_progress_bar_counts_the_bytes_to_upload(capsys: pytest.CaptureFixture[str]) -> None:
    bar = Progress("train", enabled=True)
    bar.add_total(300)
    bar.on_progress(bytes_transferred=100)
    bar.add_total(200)
    bar.on_progress(bytes_transferred=400)
    assert (bar._bar.n, bar._bar.total) == (500, 500)
    bar.close()
    assert "train" in capsys.readouterr().err


def test_a_prefix_that_would_hold_the_manifest_is_refused(
    clients: AwsClients, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="must be non-empty"):
        upload_channel(
            clients,
            channel="train",
            source=tmp_path,
            bucket=BUCKET,
            key_prefix="cloudtrain/p",
            manifest_key="cloudtrain/p/manifest.json",
            cache_dir=tmp_path,
        )


# -- errors --------------------------------------------------------------------------


def test_a_missing_bucket_names_the_bucket_field(
    clients: AwsClients, folder: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as raised:
        upload_channel(
            clients,
            channel="train",
            source=folder,
            bucket="no-such-bucket-here",
            key_prefix=PREFIX,
            manifest_key=MANIFEST,
            cache_dir=tmp_path / "cache",
            log=lambda line: None,
        )
    assert raised.value.field == "aws.bucket"
    assert "no-such-bucket-here" in str(raised.value)
    assert isinstance(raised.value.__cause__, ClientError)


def test_an_empty_folder_is_a_config_error(clients: AwsClients, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as raised:
        upload(clients, tmp_path / "empty", tmp_path)
    assert raised.value.field == "data.train"


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("SlowDown", 503, TransientError),
        ("InternalError", 500, TransientError),
        ("AccessDenied", 403, ConfigError),
        ("NoSuchBucket", 404, ConfigError),
        ("InvalidArgument", 400, BackendError),
    ],
)
def test_s3_errors_are_mapped_into_cloudtrains_tree(
    code: str, status: int, expected: type[Exception]
) -> None:
    error = ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )
    with pytest.raises(expected) as raised, s3_module._s3_errors("uploading", bucket="b"):
        raise error
    assert raised.value.__cause__ is error
    if expected is ConfigError:
        assert raised.value.field == "aws.bucket"  # type: ignore[attr-defined]
    if expected is BackendError:
        assert type(raised.value) is BackendError


# -- s3:// channels used as they are ---------------------------------------------------


def test_require_s3_uri_accepts_an_existing_key_or_prefix(clients: AwsClients) -> None:
    clients.client("s3").put_object(Bucket=BUCKET, Key="shared/train/part-0.csv", Body=b"x")
    require_s3_uri(clients, f"s3://{BUCKET}/shared/train/part-0.csv", "data.train")
    require_s3_uri(clients, f"s3://{BUCKET}/shared/train/", "data.train")
    require_s3_uri(clients, f"s3://{BUCKET}/shared/train", "data.train")
    require_s3_uri(clients, f"s3://{BUCKET}", "data.train")


@pytest.mark.parametrize(
    "uri",
    [
        f"s3://{BUCKET}/shared/missing.csv",
        f"s3://{BUCKET}/shared/missing/",
        "s3://no-such-bucket-here/train/",
        "s3://no-such-bucket-here/train.csv",
        "s3:///train.csv",
        "s3://bad bucket/x",
        "https://example.com/x",
    ],
)
def test_require_s3_uri_refuses_what_is_not_there(clients: AwsClients, uri: str) -> None:
    clients.client("s3").put_object(Bucket=BUCKET, Key="shared/train/part-0.csv", Body=b"x")
    with pytest.raises(ConfigError) as raised:
        require_s3_uri(clients, uri, "data.validation")
    assert raised.value.field == "data.validation"


def test_require_s3_uri_says_when_the_bucket_does_not_exist(clients: AwsClients) -> None:
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket-here' does not exist"):
        require_s3_uri(clients, "s3://no-such-bucket-here/train.csv", "data.train")


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://my-bucket/a/b.csv") == ("my-bucket", "a/b.csv")
    assert parse_s3_uri("s3://my-bucket") == ("my-bucket", "")
    with pytest.raises(ValueError):
        parse_s3_uri("my-bucket/a")
