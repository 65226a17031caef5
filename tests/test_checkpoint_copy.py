"""A checkpoint following a route: copied between stores, verified, or the run stops.

Copies go between real stores: folders, S3 on moto's server, Blob on Azurite
(tests/object_stores.py). What arrived is compared with sha256 computed here from the
bytes that were put at the source.
"""

from __future__ import annotations

import hashlib
import os
import re
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import train_locally
from moto_server import MotoServer
from object_stores import BIG_FILE_BYTES, BlobRemote, Remote, S3Remote

from cloudtrain.backends.local.folder_store import FolderStore
from cloudtrain.checkpoints import checkpoint_files, copy_checkpoint
from cloudtrain.config import PipelineConfig, load_config
from cloudtrain.errors import BackendError, TrainingError
from cloudtrain.objectstore import LocalFile, ObjectStore, OnBytes, StoredObject
from cloudtrain.recovery import Outcome
from cloudtrain.results import ComputeTarget, ResolvedEnvironment
from cloudtrain.route import Leg, ReadyLeg
from cloudtrain.store import manifest_json
from cloudtrain.sync import human_size

SOURCE, TARGET = "checkpoints/run-1/", "checkpoints/run-1-leg2/"
#: What the last attempt left: nested folders, and one file above the stores' lowered
#: thresholds (S3 sends it in parts, Blob streams it), so both paths are copied.
CHECKPOINT: dict[str, bytes] = {
    "model.pt": b"weights" * 1000,
    "optimizer/state.bin": os.urandom(4096),
    "shards/deep/er/rank-0.bin": os.urandom(BIG_FILE_BYTES + 12345),
    "epoch.txt": b"7",
}
STALE = {"old-run-leftover.bin": b"stale", "model.pt": b"an older model", "shards/x.bin": b"?"}


@dataclass
class At:
    """A backend whose checkpoint locations are keys in one store, as a leg opens them."""

    store: ObjectStore
    name: str = "at"

    def checkpoint_store(self, config: PipelineConfig, uri: str) -> tuple[ObjectStore, str]:
        return self.store, uri


@pytest.fixture
def config(write_config: Callable[..., Path]) -> PipelineConfig:
    return load_config(write_config())


def leg(
    config: PipelineConfig, store: ObjectStore, prefix: str, cloud: str, index: int
) -> ReadyLeg:
    return ReadyLeg(
        leg=Leg(index, cloud, config, At(store)),  # type: ignore[arg-type]
        channels={},
        compute=ComputeTarget("t", "ml.m5.large", 1),
        environment=ResolvedEnvironment("framework", "-", "-"),
        checkpoint_uri=prefix,
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(files: dict[str, bytes]) -> str:
    """The manifest digest of ``files``, computed here from the bytes."""
    entries = {name: {"sha256": sha256(data), "size": len(data)} for name, data in files.items()}
    return sha256(manifest_json(entries).encode())


def put_all(remote: Remote, prefix: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        remote.put(prefix + name, data)


def held(remote: Remote, prefix: str) -> dict[str, bytes]:
    return {key[len(prefix) :]: remote.read(key) for key in remote.keys(prefix)}


# -- copies ------------------------------------------------------------------------------


def test_local_to_local_leaves_exactly_the_source_nested_paths_kept(
    config: PipelineConfig, tmp_path: Path
) -> None:
    source, target = FolderStore(tmp_path / "leg1"), FolderStore(tmp_path / "leg2")
    for name, data in CHECKPOINT.items():
        source.put_bytes(name, data)
    for name, data in STALE.items():
        target.put_bytes(name, data)
    lines: list[str] = []

    copy = copy_checkpoint(
        leg(config, source, "", "local", 0), leg(config, target, "", "local", 1), lines.append
    )

    arrived = {
        p.relative_to(tmp_path / "leg2").as_posix(): p.read_bytes()
        for p in (tmp_path / "leg2").rglob("*")
        if p.is_file()
    }
    assert arrived == CHECKPOINT
    assert copy.sha256 == {name: sha256(data) for name, data in sorted(CHECKPOINT.items())}
    assert copy.digest == digest_of(CHECKPOINT)
    assert (copy.files, copy.bytes) == (4, sum(map(len, CHECKPOINT.values())))
    assert lines == [
        f"checkpoint copied local -> local: 4 file(s), {human_size(copy.bytes)}, "
        f"sha256 {copy.digest[:12]}, {copy.source} -> {copy.target} "
        "(2 stale object(s) removed there)"
    ]


@pytest.mark.parametrize("direction", ["s3->blob", "blob->s3"])
def test_between_s3_and_blob_the_bytes_arrive_and_are_read_back_where_unproven(
    direction: str, config: PipelineConfig, s3_remote: S3Remote, blob_remote: BlobRemote
) -> None:
    source, target = (
        (s3_remote, blob_remote) if direction == "s3->blob" else (blob_remote, s3_remote)
    )
    put_all(source, SOURCE, CHECKPOINT)
    put_all(target, TARGET, STALE)
    target.clear()
    lines: list[str] = []

    copy = copy_checkpoint(
        leg(config, source.store, SOURCE, source.kind, 0),
        leg(config, target.store, TARGET, target.kind, 1),
        lines.append,
    )

    requests = target.sent()  # the copy's, before this test reads anything
    assert held(target, TARGET) == CHECKPOINT  # stale ones gone, the older model replaced
    assert held(source, SOURCE) == CHECKPOINT  # the source is left as it was
    assert copy.sha256 == {name: sha256(data) for name, data in sorted(CHECKPOINT.items())}
    assert copy.digest == digest_of(CHECKPOINT)
    assert (copy.source_cloud, copy.target_cloud) == (source.kind, target.kind)
    assert "2 stale object(s) removed there" in lines[0]
    # Verified by what the target holds: Blob lists only the sha256 its uploader wrote, so
    # every blob is read back; S3 answers HEAD with the SHA-256 it checked on a single PUT,
    # and only the file it took in parts (no whole-object SHA-256) is read back.
    read_back = {r.key[len(TARGET) :] for r in requests if r.method == "GET" and r.key}
    if target is blob_remote:
        assert read_back == set(CHECKPOINT)
    else:
        assert read_back == {"shards/deep/er/rank-0.bin"}
        assert {r.key[len(TARGET) :] for r in requests if r.method == "HEAD"} == set(CHECKPOINT)


def test_an_empty_source_empties_the_target_and_says_so(
    config: PipelineConfig, s3_remote: S3Remote, blob_remote: BlobRemote
) -> None:
    put_all(blob_remote, TARGET, STALE)
    lines: list[str] = []

    copy = copy_checkpoint(
        leg(config, s3_remote.store, SOURCE, "aws", 0),
        leg(config, blob_remote.store, TARGET, "azure", 1),
        lines.append,
    )

    assert blob_remote.keys(TARGET) == {}
    assert (copy.files, copy.bytes, copy.digest) == (0, 0, digest_of({}))
    assert lines == [
        f"checkpoint: {SOURCE} holds no files, so there is nothing to carry to azure; "
        f"{TARGET} is empty (3 stale object(s) removed there) and the attempt there starts "
        "from the beginning"
    ]


def test_a_name_the_target_would_rewrite_is_refused_before_anything_changes_there(
    config: PipelineConfig, tmp_path: Path, blob_remote: BlobRemote
) -> None:
    source = FolderStore(tmp_path / "leg1")
    source.put_bytes("model.pt", b"w")
    source.put_bytes("back\\slash.bin", b"x")
    put_all(blob_remote, TARGET, STALE)

    with pytest.raises(BackendError, match=re.escape("back\\slash.bin cannot be copied: Blob")):
        copy_checkpoint(
            leg(config, source, "", "local", 0),
            leg(config, blob_remote.store, TARGET, "azure", 1),
            lambda line: None,
        )
    assert held(blob_remote, TARGET) == STALE


# -- what arrived is checked -------------------------------------------------------------


class Tampered:
    """The target store, with ``after_put`` run once its uploads are done: what a bad
    network path, a bug or another writer may do between the put and the check."""

    def __init__(self, store: ObjectStore, after_put: Callable[[], None]) -> None:
        self._store, self._after_put = store, after_put

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def put_files(
        self, files: Iterable[LocalFile], progress: OnBytes | None = None
    ) -> dict[str, StoredObject]:
        stored = self._store.put_files(files, progress)
        self._after_put()
        return stored


def test_a_blob_whose_bytes_differ_is_caught_though_its_metadata_and_md5_agree(
    config: PipelineConfig, s3_remote: S3Remote, blob_remote: BlobRemote
) -> None:
    """The blob's sha256 metadata says what was sent; only its bytes say what is there."""
    from azure.storage.blob import ContentSettings

    put_all(s3_remote, SOURCE, CHECKPOINT)
    key, wrong = TARGET + "optimizer/state.bin", CHECKPOINT["optimizer/state.bin"][::-1]

    def overwrite() -> None:  # other bytes, under the original's metadata, a matching MD5
        blob_remote.container.upload_blob(
            key,
            wrong,
            overwrite=True,
            metadata={"sha256": sha256(CHECKPOINT["optimizer/state.bin"])},
            content_settings=ContentSettings(
                content_md5=bytearray(hashlib.md5(wrong, usedforsecurity=False).digest())
            ),
        )

    with pytest.raises(
        BackendError,
        match=r"optimizer/state.bin .* differs from its source .*"
        rf"sha256 {sha256(wrong)}; sent sha256 {sha256(CHECKPOINT['optimizer/state.bin'])}",
    ):
        copy_checkpoint(
            leg(config, s3_remote.store, SOURCE, "aws", 0),
            leg(config, Tampered(blob_remote.store, overwrite), TARGET, "azure", 1),  # type: ignore[arg-type]
            lambda line: None,
        )
    assert blob_remote.store.head(key) == StoredObject(  # the lie the check saw through
        key, len(wrong), sha256(CHECKPOINT["optimizer/state.bin"])
    )


def test_an_s3_object_replaced_after_the_put_is_caught_by_its_checksum(
    config: PipelineConfig, s3_remote: S3Remote, blob_remote: BlobRemote
) -> None:
    put_all(blob_remote, SOURCE, CHECKPOINT)
    key = TARGET + "model.pt"

    def replace() -> None:  # a whole PUT with its own, correct, SHA-256
        s3_remote.s3.put_object(
            Bucket=s3_remote.store.bucket,
            Key=key,
            Body=b"weightz" * 1000,
            ChecksumAlgorithm="SHA256",
        )

    with pytest.raises(BackendError, match=r"model.pt .* differs from its source"):
        copy_checkpoint(
            leg(config, blob_remote.store, SOURCE, "azure", 0),
            leg(config, Tampered(s3_remote.store, replace), TARGET, "aws", 1),  # type: ignore[arg-type]
            lambda line: None,
        )


def test_an_object_gone_after_the_put_is_caught(
    config: PipelineConfig, s3_remote: S3Remote, blob_remote: BlobRemote
) -> None:
    put_all(s3_remote, SOURCE, CHECKPOINT)

    def remove() -> None:
        blob_remote.remove(TARGET + "shards/deep/er/rank-0.bin")

    with pytest.raises(BackendError, match=r"missing \['shards/deep/er/rank-0.bin'\], extra \[\]"):
        copy_checkpoint(
            leg(config, s3_remote.store, SOURCE, "aws", 0),
            leg(config, Tampered(blob_remote.store, remove), TARGET, "azure", 1),  # type: ignore[arg-type]
            lambda line: None,
        )


# -- in a run ----------------------------------------------------------------------------

#: Writes its epoch into a nested checkpoint file; waits at epoch 2 on a fresh start (the
#: simulated reclaim comes then), runs to the end when it resumes.
SCRIPT = """\
    import os, pathlib, time
    ckpt = pathlib.Path(os.environ["SM_CHECKPOINT_DIR"]) / "state" / "epoch.txt"
    start = int(ckpt.read_text()) + 1 if ckpt.exists() else 1
    print(f"starting at epoch {start}", flush=True)
    for epoch in range(start, 5):
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_text(str(epoch))
        print(f"epoch={epoch} acc=0.{epoch}", flush=True)
        if epoch == 2 and start == 1:
            time.sleep(120)
"""


def failover_config(write_config: Callable[..., Path]) -> Path:
    return write_config(
        textwrap.dedent(SCRIPT),
        clouds=["local", "local"],
        metrics=["acc"],
        hyperparameters={"epochs": 4},
        compute={"spot": True},
        retry={"strategy": "failover", "max_attempts": 3, "reclaims_per_cloud": 1},
        local={"spot_interruptions": ["^epoch=2 "], "grace_period": 1},
    )


def test_a_local_failover_resumes_from_the_copied_checkpoint(
    write_config: Callable[..., Path],
) -> None:
    _, result, lines = train_locally(failover_config(write_config))
    assert not isinstance(result, Exception), lines
    first, second = result.attempts
    assert (first.outcome, second.outcome) == (Outcome.INTERRUPTED, Outcome.SUCCEEDED)
    assert (first.leg, second.leg) == (0, 1)
    [copy] = result.copies
    assert copy.sha256 == {"state/epoch.txt": sha256(b"2")}
    assert second.checkpoint_from == first.checkpoint_uri == copy.source
    assert second.resumed_from == 1
    assert "starting at epoch 3" in lines


def test_a_copy_that_does_not_verify_stops_the_run_before_the_next_attempt(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = FolderStore.put_files

    def put_then_damage(
        self: FolderStore, files: Iterable[LocalFile], progress: OnBytes | None = None
    ) -> dict[str, StoredObject]:
        stored = original(self, files, progress)
        (self.root / "state" / "epoch.txt").write_text("0")  # damaged after the check
        return stored

    monkeypatch.setattr(FolderStore, "put_files", put_then_damage)
    _, result, lines = train_locally(failover_config(write_config))

    assert isinstance(result, TrainingError), lines
    assert "the checkpoint could not follow the run from local" in str(result)
    assert "state/epoch.txt" in str(result) and "differs from its source" in str(result)
    assert [a.number for a in result.result.attempts] == [1]  # attempt 2 never started
    assert not [line for line in lines if line.startswith("attempt 2/")]


def test_checkpoint_files_is_none_when_the_location_cannot_be_listed(
    config: PipelineConfig, s3_remote: S3Remote
) -> None:
    """The count only informs the report; a location the orchestrator may not list
    (here: no such bucket) does not stop a run that never copies."""
    store, _, _ = s3_remote.missing()
    lines: list[str] = []
    assert checkpoint_files(leg(config, store, SOURCE, "aws", 0), lines.append) is None
    assert lines and lines[0].startswith(f"checkpoint files in {SOURCE} not counted (")
    put_all(s3_remote, SOURCE, {"a": b"1", "b/c": b"2"})
    assert checkpoint_files(leg(config, s3_remote.store, SOURCE, "aws", 0)) == 2


# -- each cloud opens its checkpoint location ------------------------------------------


def test_aws_opens_its_checkpoint_uri_as_the_bucket_and_a_prefix_without_a_request(
    write_config: Callable[..., Path], aws: MotoServer
) -> None:
    from cloudtrain.backends.aws.backend import AwsBackend
    from cloudtrain.backends.aws.s3 import S3Store

    config = load_config(write_config(cloud="aws", aws={"bucket": "ckpt-bucket"}))
    backend = AwsBackend(config)
    aws.log.clear()
    store, prefix = backend.checkpoint_store(config, backend.checkpoint_location(config, "r1"))
    assert isinstance(store, S3Store) and store.bucket == "ckpt-bucket"
    assert prefix == "cloudtrain/unit/checkpoints/r1/"
    assert aws.log.entries == []
    with pytest.raises(BackendError, match="checkpoint location .* is not an s3:// URI"):
        backend.checkpoint_store(config, "azureml://datastores/x/paths/y/")


def test_azure_opens_a_datastore_path_as_its_container_and_the_path_inside(
    write_config: Callable[..., Path], azurite: str, azurite_container: str
) -> None:
    from azure_fake import FakeMLClient

    from cloudtrain.backends.azure.backend import AzureBackend
    from cloudtrain.backends.azure.clients import AzureClients
    from cloudtrain.backends.azure.jobs import parse_datastore_uri
    from cloudtrain.backends.azure.settings import azure_settings
    from cloudtrain.backends.azure.storage import BlobStore

    config = load_config(
        write_config(
            cloud="azure",
            compute={"instance_type": "Standard_DS3_v2"},
            azure={"subscription_id": "s", "resource_group": "rg", "workspace": "ws"},
        )
    )
    fake = FakeMLClient(
        datastore_account="devstoreaccount1",
        datastore_container=azurite_container,
        datastore_protocol="http",
    )
    clients = AzureClients(
        azure_settings(config), ml_client=fake, registry_client=fake, blob_connection_string=azurite
    )
    backend = AzureBackend(config, clients=clients)
    uri = backend.checkpoint_location(config, "r1-leg2")
    assert parse_datastore_uri(uri) == ("workspaceblobstore", "cloudtrain/unit/checkpoints/r1-leg2")
    store, prefix = backend.checkpoint_store(config, uri)
    assert isinstance(store, BlobStore) and store.container.container_name == azurite_container
    assert prefix == "cloudtrain/unit/checkpoints/r1-leg2"
    store.put_bytes(prefix + "/epoch.txt", b"3")  # the container the job mounts
    assert [o.key for o in store.list(prefix + "/")] == [f"{prefix}/epoch.txt"]
    for wrong in ("azureml:unit-train:1", "azureml://datastores/ws/paths/", "s3://b/k/"):
        with pytest.raises(BackendError, match="is not a datastore path"):
            backend.checkpoint_store(config, wrong)


# -- what a careless script or a broken location does to a copy -------------------------


def test_a_symlinked_checkpoint_file_follows_the_run_as_its_bytes(
    config: PipelineConfig, tmp_path: Path
) -> None:
    """``latest.pt -> ckpt-5.pt`` is how many scripts name the checkpoint to resume from;
    dropping the link would make the next leg start from scratch after a 'good' copy."""
    (tmp_path / "leg1").mkdir()
    (tmp_path / "leg1" / "ckpt-5.pt").write_bytes(b"epoch five")
    (tmp_path / "leg1" / "latest.pt").symlink_to("ckpt-5.pt")
    source, target = FolderStore(tmp_path / "leg1"), FolderStore(tmp_path / "leg2")

    copy = copy_checkpoint(
        leg(config, source, "", "local", 0), leg(config, target, "", "local", 1), [].append
    )

    assert (tmp_path / "leg2" / "latest.pt").read_bytes() == b"epoch five"
    assert copy.sha256 == {"ckpt-5.pt": sha256(b"epoch five"), "latest.pt": sha256(b"epoch five")}


def test_a_target_location_that_is_a_file_stops_the_run_with_its_attempts(
    write_config: Callable[..., Path],
) -> None:
    path = failover_config(write_config)
    run = path.parent / ".cloudtrain" / "runs" / "unit" / "0123456789abcdef-leg2"
    run.mkdir(parents=True)
    (run / "checkpoints").write_text("not a folder")

    _, result, lines = train_locally(path)

    assert isinstance(result, TrainingError), lines
    assert "the checkpoint could not follow the run from local" in str(result)
    assert "checkpoints" in str(result)
    assert [a.number for a in result.result.attempts] == [1]


def test_a_source_location_that_is_a_file_is_not_an_empty_checkpoint(
    config: PipelineConfig, tmp_path: Path
) -> None:
    (tmp_path / "leg1").write_text("not a folder")
    source, target = FolderStore(tmp_path / "leg1"), FolderStore(tmp_path / "leg2")

    with pytest.raises(BackendError, match="not a folder"):
        copy_checkpoint(
            leg(config, source, "", "local", 0), leg(config, target, "", "local", 1), [].append
        )


def test_a_leg_that_cannot_be_prepared_stops_the_run_with_its_attempts(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reaching the next cloud can fail (its compute, its data upload): the attempts
    already paid for on the first are still the run's report."""
    from cloudtrain.backends.local.backend import LocalBackend

    calls: list[str] = []
    original = LocalBackend.ensure_compute

    def second_fails(self: LocalBackend, config: PipelineConfig) -> ComputeTarget:
        calls.append(config.cloud)
        if len(calls) > 1:
            raise BackendError("compute quota exceeded on the second cloud")
        return original(self, config)

    monkeypatch.setattr(LocalBackend, "ensure_compute", second_fails)
    _, result, lines = train_locally(failover_config(write_config))

    assert isinstance(result, TrainingError), lines
    assert "compute quota exceeded on the second cloud" in str(result)
    assert [a.number for a in result.result.attempts] == [1]


def test_a_users_dot_tmp_file_is_a_checkpoint_file_like_any_other(
    config: PipelineConfig, tmp_path: Path
) -> None:
    """The folder store's own half-written files have a prefix no script picks by chance;
    a checkpoint named ``.tmp-1`` (it was skipped, as if the store had left it) travels."""
    source, target = FolderStore(tmp_path / "leg1"), FolderStore(tmp_path / "leg2")
    source.put_bytes(".tmp-1", b"optimizer state")
    source.put_bytes("model.pt", b"weights")

    copy = copy_checkpoint(
        leg(config, source, "", "local", 0), leg(config, target, "", "local", 1), print
    )

    assert sorted(copy.sha256) == [".tmp-1", "model.pt"]
    assert (tmp_path / "leg2" / ".tmp-1").read_bytes() == b"optimizer state"
    assert not [p for p in (tmp_path / "leg2").iterdir() if p.name.startswith(".cloudtrain-")]
