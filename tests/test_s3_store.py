"""What only S3 does, against moto's server: SHA-256 on every request (whole-object on a
single PUT, per part on multipart), botocore's errors mapped, s3:// channels checked."""

from __future__ import annotations

import hashlib
import json
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, FlexibleChecksumError
from moto_server import MotoServer
from object_stores import BUCKET, MANIFEST, PART_BYTES, PREFIX, S3Remote, b64, sync

from cloudtrain.backends.aws import s3 as s3_module
from cloudtrain.backends.aws.s3 import parse_s3_uri, require_s3_uri
from cloudtrain.errors import BackendError, ConfigError, TransientError
from cloudtrain.sync import download_prefix


def b64_sha256(data: bytes) -> str:
    return b64(hashlib.sha256(data).digest())


def b64_crc32(data: bytes) -> str:
    return b64(zlib.crc32(data).to_bytes(4, "big"))


def test_a_large_file_goes_multipart_with_a_crc32_per_part(
    s3_remote: S3Remote, folder: Path, tmp_path: Path
) -> None:
    """botocore computes each part's CRC32 from the part's bytes in memory, which S3
    checks; the manifest's SHA-256 came from the same read (see the read-once tests)."""
    sync(s3_remote.store, folder, tmp_path)

    big = f"{PREFIX}/big.bin"
    created = [r for r in s3_remote.of("POST") if r.key == big and r.query == "uploads"]
    assert len(created) == 1
    assert created[0].header("x-amz-checksum-algorithm") == "CRC32"
    parts = [r for r in s3_remote.of("PUT") if r.key == big and "partNumber=" in r.query]
    data = (folder / "big.bin").read_bytes()
    chunks = range(0, len(data), PART_BYTES)
    expected = {b64_crc32(data[start : start + PART_BYTES]) for start in chunks}
    assert {part.header("x-amz-checksum-crc32") for part in parts} == expected
    completed = [r for r in s3_remote.of("POST") if r.key == big and "uploadId=" in r.query]
    assert len(completed) == 1
    files = json.loads(s3_remote.read(MANIFEST))["files"]
    assert files["big.bin"] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def test_each_single_put_carries_the_files_sha256_for_s3_to_verify(
    s3_remote: S3Remote, folder: Path, tmp_path: Path
) -> None:
    sync(s3_remote.store, folder, tmp_path)

    singles = {r.key: r for r in s3_remote.of("PUT") if "partNumber=" not in r.query and r.key}
    for path in folder.rglob("*"):
        if path.is_file() and path.name != "big.bin":
            key = f"{PREFIX}/{path.relative_to(folder).as_posix()}"
            assert singles[key].header("x-amz-checksum-sha256") == b64_sha256(path.read_bytes())
    head = s3_remote.s3.head_object(
        Bucket=BUCKET, Key=f"{PREFIX}/part-0.csv", ChecksumMode="ENABLED"
    )
    assert head["ChecksumSHA256"] == b64_sha256((folder / "part-0.csv").read_bytes())
    manifest = s3_remote.of("PUT")[-1]  # the manifest is checked the same way, and last
    assert manifest.key == MANIFEST
    assert manifest.header("x-amz-checksum-sha256") == b64_sha256(s3_remote.read(MANIFEST))


def test_a_download_asks_for_the_stored_checksum(s3_remote: S3Remote, tmp_path: Path) -> None:
    s3_remote.put("outputs/model.pkl", b"model")
    s3_remote.clear()
    download_prefix(s3_remote.store, "outputs/", tmp_path / "back")
    gets = [r for r in s3_remote.of("GET") if r.key == "outputs/model.pkl"]
    assert [r.header("x-amz-checksum-mode") for r in gets] == ["ENABLED"]


# -- errors --------------------------------------------------------------------------


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


def test_a_body_that_does_not_match_its_checksum_is_a_backend_error() -> None:
    error = FlexibleChecksumError(error_msg="Expected checksum a did not match calculated b")
    with pytest.raises(BackendError, match="does not match") as raised:
        with s3_module._s3_errors("downloading", bucket="b"):
            raise error
    assert type(raised.value) is BackendError and raised.value.__cause__ is error


# -- s3:// channels used as they are ---------------------------------------------------


def test_require_s3_uri_accepts_an_existing_key_or_prefix(s3_remote: S3Remote) -> None:
    s3_remote.put("shared/train/part-0.csv", b"x")
    clients = s3_remote.clients
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
def test_require_s3_uri_refuses_what_is_not_there(s3_remote: S3Remote, uri: str) -> None:
    s3_remote.put("shared/train/part-0.csv", b"x")
    with pytest.raises(ConfigError) as raised:
        require_s3_uri(s3_remote.clients, uri, "data.validation")
    assert raised.value.field == "data.validation"


def test_require_s3_uri_says_when_the_bucket_does_not_exist(s3_remote: S3Remote) -> None:
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket-here' does not exist"):
        require_s3_uri(s3_remote.clients, "s3://no-such-bucket-here/train.csv", "data.train")


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://my-bucket/a/b.csv") == ("my-bucket", "a/b.csv")
    assert parse_s3_uri("s3://my-bucket") == ("my-bucket", "")
    with pytest.raises(ValueError):
        parse_s3_uri("my-bucket/a")


def test_a_key_longer_than_s3_takes_is_refused_before_anything_is_sent(
    s3_remote: S3Remote, tmp_path: Path
) -> None:
    data = tmp_path / "d"
    deep = data.joinpath(*["é" * 100] * 6)  # 1,200 bytes of UTF-8 in 600 characters
    deep.mkdir(parents=True)
    (deep / "z.csv").write_text("z")
    with pytest.raises(ConfigError) as caught:
        sync(s3_remote.store, data, tmp_path)
    assert caught.value.field == "data.train"
    assert "its S3 key would be longer than 1024 bytes" in caught.value.message
    assert s3_remote.of("PUT") == []


# -- integrity in flight ---------------------------------------------------------------


def damage_the_first(s3_remote: S3Remote, operation: str) -> list[str]:
    """Flip one byte of the first ``operation`` request's body after botocore computed its
    checksum (a botocore hook on the client s3transfer uses); returns the keys damaged."""
    damaged: list[str] = []
    once = threading.Lock()  # requests are sent from many threads

    def flip(request: Any, **kwargs: Any) -> None:
        if not once.acquire(blocking=False):
            return
        body = request.body
        data = body.read() if hasattr(body, "read") else bytes(body)
        request.body = bytes([data[0] ^ 0xFF]) + data[1:]
        damaged.append(request.url)

    events = s3_remote.clients.raw_client("s3").meta.events
    events.register(f"before-send.s3.{operation}", flip, unique_id="damage")
    return damaged


@pytest.mark.parametrize("operation", ["UploadPart", "PutObject"])
def test_a_body_damaged_on_the_way_is_refused_and_nothing_is_recorded(
    s3_remote: S3Remote, aws: MotoServer, folder: Path, tmp_path: Path, operation: str
) -> None:
    """A part of the big file (CRC32 from the one read) or a small file (its SHA-256)
    changed in flight: the service refuses it, the upload fails, the multipart upload is
    aborted and no manifest is written, so the next run sends the file again."""
    damaged = damage_the_first(s3_remote, operation)
    try:
        with aws.checking_checksums(), pytest.raises(BackendError, match="BadDigest") as raised:
            sync(s3_remote.store, folder, tmp_path)
    finally:
        s3_remote.clients.raw_client("s3").meta.events.unregister(
            f"before-send.s3.{operation}", unique_id="damage"
        )
    assert len(damaged) == 1 and "did not match the calculated checksum" in str(raised.value)
    assert MANIFEST not in s3_remote.keys("")
    if operation == "UploadPart":
        assert f"{PREFIX}/big.bin" not in s3_remote.keys(PREFIX + "/")
        assert s3_remote.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []

    result = sync(s3_remote.store, folder, tmp_path)  # undamaged: all there, as read
    assert s3_remote.read(f"{PREFIX}/big.bin") == (folder / "big.bin").read_bytes()
    assert result.copied_files >= 1
