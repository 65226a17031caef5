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
    assert any("model: etc -> " in w and str(outside)[-40:] in w for w in artifacts.warnings)
    assert all("leaves the folder" in w and len(w) < 150 for w in artifacts.warnings)
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


SPECIAL_SCRIPT = """
import os, socket
model = os.environ["SM_MODEL_DIR"]
os.chdir(model)  # a socket's path must be short: bind it by a relative name
open("weights.bin", "wb").write(b"weights")
os.symlink("loop", "loop")                  # a link to itself
os.symlink("ring-b", "ring-a")              # a ring of two links
os.symlink("ring-a", "ring-b")
os.mkfifo("fifo")
socket.socket(socket.AF_UNIX).bind("sock")
os.symlink("fifo", "fifo-link")             # inside, but it names a special file
os.mkfifo(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "pipe"))
open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "report.txt"), "w").write("ok")
print("acc=0.9")
"""


def test_loops_and_special_files_are_left_out_with_a_warning_and_the_model_is_collected(
    write_config: Callable[..., Path],
) -> None:
    path = write_config(SPECIAL_SCRIPT, metrics=["acc"])
    backend, result, _ = train_locally(path)
    assert isinstance(result, TrainingResult), result
    from cloudtrain.config import load_config

    artifacts = backend.collect_artifacts(load_config(path), result)

    assert sorted(members(artifacts.model_archive)) == ["weights.bin"]
    output = members(Path(artifacts.model_archive).parent / "output.tar.gz")
    assert sorted(output) == ["report.txt"]
    warnings = "\n".join(artifacts.warnings)
    for left_out in ("loop -> loop (it loops)", "ring-a -> ring-b (it loops)"):
        assert f"model: {left_out}" in warnings
    assert "model: fifo (a special file: a FIFO)" in warnings
    assert "model: sock (a special file: a socket)" in warnings
    assert "model: fifo-link -> fifo (it names a special file: a FIFO)" in warnings
    assert "output: pipe (a special file: a FIFO)" in warnings
    assert len(artifacts.warnings) == 7
    assert artifacts.local_model_dir is not None
    assert (artifacts.local_model_dir / "weights.bin").read_bytes() == b"weights"


def test_a_model_refused_when_unpacked_leaves_no_archive_at_the_models_path(
    write_config: Callable[..., Path], outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (backend, config), result = trained(write_config, outside)

    def refuse(archive: Path, destination: Path) -> None:
        raise BackendError(f"{archive} is refused: 'x' is a special file")

    monkeypatch.setattr("cloudtrain.backends.local.backend.extract_archive", refuse)
    with pytest.raises(BackendError) as raised:
        backend.collect_artifacts(config, result)

    assert "the trained model is kept at" in str(raised.value)
    run_dir = backend._run_dir(config, result.run_id)
    assert not (run_dir / "model.tar.gz").exists()


@pytest.mark.parametrize("error", [RuntimeError("Symlink loop"), ValueError("bad")])
def test_a_packing_failure_of_any_kind_keeps_the_model_and_says_where(
    write_config: Callable[..., Path],
    outside: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
) -> None:
    (backend, config), result = trained(write_config, outside)

    def fail(folder: Path, archive: Path) -> list[str]:
        raise error

    monkeypatch.setattr("cloudtrain.backends.local.backend.tar_folder", fail)
    with pytest.raises(BackendError) as raised:
        backend.collect_artifacts(config, result)

    kept = backend._attempt_dir(config, result.run_id, result.final.number) / "model"
    assert f"the trained model is kept at {kept}" in str(raised.value)


def test_the_code_archive_leaves_out_special_files_follows_links_and_matches_the_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import socket

    from cloudtrain.backends.aws.training_job import source_archive
    from cloudtrain.store import walk_files

    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "lib.py").write_text("X = 1\n")
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "train.py").write_text("print('ok')\n")
    (src / "pkg" / "util.py").write_text("Y = 2\n")
    monkeypatch.chdir(src)
    socket.socket(socket.AF_UNIX).bind("sock")
    os.mkfifo("fifo")
    os.symlink("../shared/lib.py", "lib.py")  # leaves source_dir: archived as its content
    os.symlink("nothing", "gone.py")
    os.symlink("loop", "loop")

    with tarfile.open(fileobj=io.BytesIO(source_archive(src))) as tar:
        files = {info.name: info for info in tar.getmembers() if not info.isdir()}
        lib = tar.extractfile("lib.py")
        assert lib is not None and lib.read() == b"X = 1\n"

    assert sorted(files) == ["lib.py", "pkg/util.py", "train.py"]
    assert all(info.isfile() for info in files.values())  # no links, no special files
    assert sorted(files) == [relative for relative, _ in walk_files(src)]  # the code digest's
