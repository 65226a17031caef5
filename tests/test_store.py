"""The local upload stage: content-addressed, deduplicated, DataFrames as parquet."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from cloudtrain.store import ContentStore


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for index in range(5):
        (data / f"part-{index}.csv").write_text(f"x\n{index}\n" * 100)
    (data / "sub" / "labels.json").write_text('{"a": 1}')
    return data


def test_unchanged_channel_is_not_copied_again(tmp_path: Path, folder: Path) -> None:
    store = ContentStore(tmp_path / "root")
    first = store.put_path("p/train", folder)
    assert (first.files, first.copied_files, first.unchanged) == (6, 6, False)
    second = store.put_path("p/train", folder)
    assert second.digest == first.digest and second.path == first.path
    assert (second.copied_files, second.copied_bytes, second.unchanged) == (0, 0, True)
    assert sorted(
        p.relative_to(second.path).as_posix() for p in second.path.rglob("*") if p.is_file()
    ) == [
        "part-0.csv",
        "part-1.csv",
        "part-2.csv",
        "part-3.csv",
        "part-4.csv",
        "sub/labels.json",
    ]


def test_a_channel_folder_a_script_changed_is_made_again(tmp_path: Path, folder: Path) -> None:
    """A script that writes where it reads (a cache beside the data, a file it removes)
    must not change what the next run of the same data reads."""
    store = ContentStore(tmp_path / "root")
    first = store.put_path("p/train", folder)
    (first.path / "cache.npy").write_bytes(b"from the last run")
    (first.path / "part-0.csv").unlink()
    (first.path / "sub" / "notes").mkdir()
    second = store.put_path("p/train", folder)
    assert second.path == first.path and second.unchanged
    found = sorted(p.relative_to(second.path).as_posix() for p in second.path.rglob("*"))
    assert found == [*(f"part-{n}.csv" for n in range(5)), "sub", "sub/labels.json"]
    assert (second.path / "part-0.csv").read_text() == (folder / "part-0.csv").read_text()


def test_a_changed_file_is_the_only_one_copied(tmp_path: Path, folder: Path) -> None:
    store = ContentStore(tmp_path / "root")
    first = store.put_path("p/train", folder)
    (folder / "part-2.csv").write_text("x\nchanged\n")
    second = store.put_path("p/train", folder)
    assert second.digest != first.digest and not second.unchanged
    assert (second.copied_files, second.copied_bytes) == (1, len("x\nchanged\n"))
    assert (second.path / "part-2.csv").read_text() == "x\nchanged\n"
    assert (first.path / "part-2.csv").read_text().startswith("x\n2\n")  # old version kept


def test_identical_content_under_another_channel_is_stored_once(
    tmp_path: Path, folder: Path
) -> None:
    store = ContentStore(tmp_path / "root")
    store.put_path("p/train", folder)
    other = store.put_path("p/validation", folder)
    assert other.copied_files == 0 and not other.unchanged  # new channel, no new content


def test_stored_objects_are_read_only(tmp_path: Path, folder: Path) -> None:
    stored = ContentStore(tmp_path / "root").put_path("p/train", folder)
    assert not os.access(stored.path / "part-0.csv", os.W_OK) or os.geteuid() == 0
    assert (stored.path / "part-0.csv").stat().st_mode & 0o222 == 0


def test_a_rewritten_but_identical_file_keeps_its_digest(tmp_path: Path, folder: Path) -> None:
    store = ContentStore(tmp_path / "root")
    first = store.put_path("p/train", folder)
    (folder / "part-1.csv").write_text((folder / "part-1.csv").read_text())  # new mtime
    assert store.put_path("p/train", folder).digest == first.digest


def test_dataframes_are_stored_as_parquet_and_deduplicated(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "root")
    frame = pd.DataFrame({"x": [1.0, 2.5, 3.0], "label": ["a", "b", "c"]})
    first = store.put_dataframe("p/train", frame)
    assert first.files == 1 and first.copied_files == 1
    pd.testing.assert_frame_equal(pd.read_parquet(first.path / "data.parquet"), frame)
    again = store.put_dataframe("p/train", frame.copy())
    assert again.digest == first.digest and again.unchanged and again.copied_files == 0
    changed = store.put_dataframe("p/train", frame.assign(x=[1.0, 2.5, 4.0]))
    assert changed.digest != first.digest and changed.copied_files == 1
