"""Packing and unpacking models: links never followed out of the model or output folders,
a failed pack never loses a trained model, archives from a job unpacked safely."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import train_locally
from sagemaker_lifecycle import COMPLETED, Lifecycle, lifecycle, model_archive
from test_aws_training import aws_config, prepare

from cloudtrain.errors import BackendError
from cloudtrain.results import TrainingResult
from cloudtrain.store import extract_archive, tar_folder
from cloudtrain.training import run_training

__all__ = ["aws_config", "lifecycle"]  # fixtures, imported for pytest

SCRIPT = """
import os, pathlib
outside = pathlib.Path({outside!r})
model = pathlib.Path(os.environ["SM_MODEL_DIR"])
(model / "weights.bin").write_bytes(b"weights")
(model / "sub").mkdir()
(model / "sub" / "a.txt").write_text("a")
os.symlink("weights.bin", model / "latest.bin")        # inside, relative: kept as a link
os.symlink(model / "sub", model / "sub-link")          # inside, absolute: kept, made relative
os.symlink(outside, model / "etc")                     # a folder outside
os.symlink(outside / "secret.txt", model / "secret")   # a file outside
output = pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"])
(output / "report.txt").write_text("ok")
os.symlink(outside, output / "leak")
print("acc=0.9")
"""


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("do not ship me")
    return folder


def trained(write_config: Callable[..., Path], outside: Path) -> tuple[Any, TrainingResult]:
    path = write_config(SCRIPT.format(outside=str(outside)), metrics=["acc"])
    backend, result, _ = train_locally(path)
    assert isinstance(result, TrainingResult), result
    from cloudtrain.config import load_config

    return (backend, load_config(path)), result


def members(archive: str | Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {info.name: info for info in tar.getmembers()}


def test_local_model_links_that_leave_are_left_out_with_a_warning(
    write_config: Callable[..., Path], outside: Path
) -> None:
    (backend, config), result = trained(write_config, outside)

    artifacts = backend.collect_artifacts(config, result)

    model = members(artifacts.model_archive)
    assert sorted(model) == ["latest.bin", "sub", "sub-link", "sub/a.txt", "weights.bin"]
    assert model["latest.bin"].issym() and model["latest.bin"].linkname == "weights.bin"
    assert model["sub-link"].issym() and model["sub-link"].linkname == "sub"
    output = members(Path(artifacts.model_archive).parent / "output.tar.gz")
    assert sorted(output) == ["report.txt"]
    assert len(artifacts.warnings) == 3
    assert any("model: etc -> " + str(outside) in w for w in artifacts.warnings)
    assert any("model: secret -> " in w for w in artifacts.warnings)
    assert any("output: leak -> " in w for w in artifacts.warnings)
    local = artifacts.local_model_dir
    assert local is not None and (local / "latest.bin").read_bytes() == b"weights"
    assert not (local / "etc").exists() and not (local / "secret").exists()


def test_a_failed_pack_keeps_the_trained_model_and_says_where(
    write_config: Callable[..., Path], outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (backend, config), result = trained(write_config, outside)

    def disk_full(folder: Path, archive: Path) -> list[str]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("cloudtrain.backends.local.backend.tar_folder", disk_full)
    with pytest.raises(BackendError) as raised:
        backend.collect_artifacts(config, result)

    kept = backend._attempt_dir(config, result.run_id, result.final.number) / "model"
    assert f"the trained model is kept at {kept}" in str(raised.value)
    assert (kept / "weights.bin").read_bytes() == b"weights"


def test_tar_folder_leaves_no_half_archive_behind(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"w")
    (folder / "unreadable").mkdir()
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"the previous archive")

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(5, "Input/output error")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tarfile.TarFile, "add", fail)
        with pytest.raises(OSError):
            tar_folder(folder, archive)

    assert archive.read_bytes() == b"the previous archive"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def hostile(*entries: tuple[str, str | bytes]) -> bytes:
    """A tar.gz of (name, content) files and (name, "->target") links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "entries",
    [
        [("model.pkl", b"w"), ("../evil.txt", b"x")],
        [("model.pkl", b"w"), ("etc", "/etc")],
        [("model.pkl", b"w"), ("up", "../../..")],
    ],
    ids=["dot-dot", "absolute link", "link climbing out"],
)
def test_an_archive_reaching_outside_is_refused_whole(
    tmp_path: Path, entries: list[tuple[str, Any]]
) -> None:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(hostile(*entries))
    destination = tmp_path / "run" / "model"

    with pytest.raises(BackendError) as raised:
        extract_archive(archive, destination)

    assert str(archive) in str(raised.value)
    assert not destination.exists()  # not half unpacked
    assert not (tmp_path / "run" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert [p.name for p in (tmp_path / "run").iterdir()] == []


def test_an_absolute_member_lands_inside_the_destination(tmp_path: Path) -> None:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(hostile(("/tmp/cloudtrain-absolute-member.txt", b"x")))

    extract_archive(archive, tmp_path / "model")

    assert (tmp_path / "model" / "tmp" / "cloudtrain-absolute-member.txt").read_bytes() == b"x"
    assert not Path("/tmp/cloudtrain-absolute-member.txt").exists()


def test_the_aws_model_archive_is_unpacked_safely_and_the_error_says_where_the_model_is(
    aws_config: Callable[..., Path], lifecycle: Lifecycle
) -> None:
    lifecycle.script(
        "a1", {**COMPLETED, "model": hostile(("model.pkl", b"w"), ("../../escape.txt", b"x"))}
    )
    config, backend, channels, compute, environment = prepare(aws_config())
    result = run_training(
        backend,
        config,
        run_id="feedc0de00000000",
        channels=channels,
        compute=compute,
        environment=environment,
        log=lambda line: None,
    )

    with pytest.raises(BackendError) as raised:
        backend.collect_artifacts(config, result)

    assert "s3://" in str(raised.value) and "model.tar.gz" in str(raised.value)
    run_dir = config.work_dir / "runs" / config.name / "feedc0de00000000"
    assert (run_dir / "model.tar.gz").is_file() and not (run_dir / "model").exists()
    assert not (run_dir.parent / "escape.txt").exists()


def test_a_safe_aws_model_archive_is_unpacked(
    aws_config: Callable[..., Path], lifecycle: Lifecycle
) -> None:
    lifecycle.script("a1", {**COMPLETED, "model": model_archive({"sub/model.pkl": b"w"})})
    config, backend, channels, compute, environment = prepare(aws_config())
    result = run_training(
        backend,
        config,
        run_id="feedc0de00000001",
        channels=channels,
        compute=compute,
        environment=environment,
        log=lambda line: None,
    )

    artifacts = backend.collect_artifacts(config, result)

    assert artifacts.local_model_dir is not None
    assert (artifacts.local_model_dir / "sub" / "model.pkl").read_bytes() == b"w"
