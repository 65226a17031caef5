"""A data channel's files, the same on every backend: links that stay inside the channel
folder are followed, links that leave it are refused by name, an empty channel is refused,
all before anything is created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import base_config

from cloudtrain.backends.local.backend import LocalBackend
from cloudtrain.config import load_config
from cloudtrain.errors import ConfigError
from cloudtrain.runnable import check_runnable
from cloudtrain.store import ContentStore


@pytest.fixture
def channel(tmp_path: Path) -> Path:
    """data/: a file, a folder, and links to both that stay inside."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels.csv").write_text("a,b\n")
    (data / "images" / "1.png").write_bytes(b"png")
    os.symlink("images", data / "latest")  # a folder link, relative
    os.symlink(data / "labels.csv", data / "labels-link.csv")  # a file link, absolute
    return data


def stored_names(root: Path, source: Path) -> list[str]:
    stored = ContentStore(root).put_path("p/train", source)
    return sorted(
        p.relative_to(stored.path).as_posix() for p in stored.path.rglob("*") if p.is_file()
    )


def write_config(tmp_path: Path, data: str = "data") -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "train.py").write_text("print('ok')\n")
    path = tmp_path / "cloudtrain.yaml"
    config = base_config(data={"train": data}, work_dir=str(tmp_path / "work"))
    path.write_text(yaml.safe_dump(config))
    return path


def refusal(tmp_path: Path) -> ConfigError:
    config = load_config(write_config(tmp_path))
    with pytest.raises(ConfigError) as raised:
        check_runnable(config, LocalBackend.from_config(config))
    return raised.value


def test_links_that_stay_inside_the_channel_are_followed_files_and_folders(
    tmp_path: Path, channel: Path
) -> None:
    assert stored_names(tmp_path / "root", channel) == [
        "images/1.png",
        "labels-link.csv",
        "labels.csv",
        "latest/1.png",
    ]


def test_a_file_link_that_leaves_the_channel_is_refused_by_name_and_target(
    tmp_path: Path, channel: Path
) -> None:
    (tmp_path / "secret.txt").write_text("password")
    os.symlink(tmp_path / "secret.txt", channel / "innocent.csv")

    error = refusal(tmp_path)

    assert [p.field for p in error.problems] == ["data.train"]
    assert "innocent.csv -> " in error.message and "secret.txt" in error.message
    assert "leaves the channel folder" in error.message
    with pytest.raises(ConfigError):  # and the store, whoever calls it, refuses it too
        ContentStore(tmp_path / "root").put_path("p/train", channel)
    assert not (tmp_path / "root").exists() and not (tmp_path / "work").exists()


def test_a_folder_link_that_leaves_the_channel_is_refused_not_skipped(
    tmp_path: Path, channel: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "more.csv").write_text("1\n")
    os.symlink(outside, channel / "more")

    error = refusal(tmp_path)

    assert "more -> " in error.message and "leaves the channel folder" in error.message


def test_a_relative_link_climbing_out_is_refused(tmp_path: Path, channel: Path) -> None:
    (tmp_path / "x.csv").write_text("1\n")
    os.symlink("../../x.csv", channel / "images" / "up.csv")

    error = refusal(tmp_path)

    assert "images/up.csv -> ../../x.csv" in error.message


def test_a_loop_and_a_dangling_link_are_refused_each_by_name(tmp_path: Path, channel: Path) -> None:
    os.symlink("..", channel / "images" / "parent")
    os.symlink("nothing-here", channel / "gone.csv")

    error = refusal(tmp_path)

    messages = sorted(p.message for p in error.problems)
    assert len(messages) == 3  # the loop is reached twice: through images/ and latest/
    assert messages[0].startswith("gone.csv -> nothing-here: ") and "nothing" in messages[0]
    assert messages[1].startswith("images/parent -> ..: ") and "loops" in messages[1]
    assert messages[2].startswith("latest/parent -> ..: ") and "loops" in messages[2]


def test_a_long_link_target_is_quoted_short(tmp_path: Path, channel: Path) -> None:
    deep = tmp_path / ("d" * 150)
    deep.mkdir()
    os.symlink(deep, channel / "deep")

    error = refusal(tmp_path)

    assert len(error.message) < 200 and "d" * 150 not in error.message


@pytest.mark.parametrize(
    "layout",
    ["nothing", "empty subfolders", "only a link that leaves"],
)
def test_an_empty_channel_is_refused_before_anything_is_created(
    tmp_path: Path, layout: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if layout == "empty subfolders":
        (data / "a" / "b").mkdir(parents=True)
        (data / "c").mkdir()
    elif layout == "only a link that leaves":
        (tmp_path / "x.csv").write_text("1\n")
        os.symlink(tmp_path / "x.csv", data / "x.csv")

    error = refusal(tmp_path)

    assert {p.field for p in error.problems} == {"data.train"}
    assert "holds no files to train on" in str(error)
    assert not (tmp_path / "work").exists()


def test_the_cli_says_it_in_one_line_and_exits_2_before_the_run_creates_anything(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").mkdir()
    path = write_config(tmp_path)

    done = subprocess.run(
        [sys.executable, "-m", "cloudtrain.cli", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
    )

    assert done.returncode == 2, done.stderr
    assert "data.train:" in done.stderr and "holds no files to train on" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("layout", ["a link to itself", "a ring of two links"])
def test_a_link_that_never_resolves_is_refused_as_a_loop_by_name(
    tmp_path: Path, channel: Path, layout: str
) -> None:
    if layout == "a link to itself":
        os.symlink("self", channel / "self")
    else:
        os.symlink("b", channel / "a")
        os.symlink("a", channel / "b")

    error = refusal(tmp_path)

    assert {p.field for p in error.problems} == {"data.train"}
    loops = [p.message for p in error.problems if "loops" in p.message]
    expected = ["self -> self"] if layout == "a link to itself" else ["a -> b", "b -> a"]
    assert [m.partition(":")[0] for m in loops] == expected


def test_links_cannot_multiply_the_tree_each_folder_is_entered_through_one_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """d1 ... d30, each holding two links a, b -> the next: 2**30 paths if followed."""
    levels = 30
    data = tmp_path / "data"
    for level in range(1, levels + 1):
        (data / f"d{level}").mkdir(parents=True)
        if level < levels:
            os.symlink(f"../d{level + 1}", data / f"d{level}" / "a")
            os.symlink(f"../d{level + 1}", data / f"d{level}" / "b")
    (data / f"d{levels}" / "x.csv").write_text("1\n")
    visits = []
    scandir = os.scandir

    def counted(path: Path) -> object:
        visits.append(path)
        if len(visits) > 10 * levels:  # unbounded: stop here rather than hang
            raise AssertionError("the walk visits folders without bound")
        return scandir(path)

    monkeypatch.setattr(os, "scandir", counted)

    error = refusal(tmp_path)

    assert len(visits) <= 3 * levels  # each folder once by its path, once through a link
    assert "the folder is already reached through " in error.message
    assert all(len(p.message) < 200 for p in error.problems)  # deep names quoted short


def test_a_channel_past_the_entry_cap_is_refused_in_one_line(
    tmp_path: Path, channel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cloudtrain.channel_files.MAX_ENTRIES", 3)

    error = refusal(tmp_path)

    assert [p.field for p in error.problems] == ["data.train"]
    assert "holds more than 3 entries" in error.message and len(error.message) < 200
