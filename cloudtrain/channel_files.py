"""A data channel's local files, read the same way by every backend.

The policy, one for the local store and both object stores:

- a channel is a file or a folder; a folder is read recursively;
- a symbolic link is followed when its target stays inside the channel folder (files and
  folders alike; a link back to a folder it sits in, a loop, is refused);
- a link whose target leaves the channel folder, or points at nothing, is refused by
  name: its content would reach the cloud without being part of the folder people see;
- a channel with no file to read (nothing, empty subfolders, only refused links) is
  refused: SageMaker rejects an empty S3 prefix, so no backend trains on one.

Every refusal is a ``ConfigError`` on ``data.<channel>``, raised by ``check_channels``
from ``check_runnable``, before anything is created anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cloudtrain.errors import ConfigError, Problem

#: Refused links named one by one in an error; the rest are counted.
REFUSED_NAMED = 5
#: Characters of a link's target quoted in an error.
TARGET_QUOTED = 60


def channel_files(channel: str, source: Path) -> list[tuple[str, Path]]:
    """(relative posix path, path to read) of every file in the channel, sorted by name.

    Raises ConfigError on ``data.<channel>`` for a missing or empty channel and for links
    the policy refuses (all of them at once).
    """
    field = f"data.{channel}"
    if not source.exists():
        raise ConfigError(field, f"{_short(str(source))} does not exist")
    if not source.is_dir():
        return [(source.name, source)]
    walk = _Walk(source)
    walk.folder(source, "", frozenset({walk.root}))
    problems = [Problem(field, message) for message in walk.refused[:REFUSED_NAMED]]
    if len(walk.refused) > REFUSED_NAMED:
        more = len(walk.refused) - REFUSED_NAMED
        problems.append(Problem(field, f"... and {more} more links refused"))
    if not walk.files:
        problems.append(
            Problem(field, f"{_short(str(source))} holds no files to train on (an empty channel)")
        )
    if problems:
        raise ConfigError(problems=problems)
    return sorted(walk.files)


def check_channels(channels: Mapping[str, Path]) -> None:
    """Every local channel (name -> path) read as an upload would read it; every problem
    of every channel in one ConfigError."""
    problems: list[Problem] = []
    for channel, source in channels.items():
        try:
            channel_files(channel, source)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems=problems)


class _Walk:
    """One channel folder's walk: the files found and the links refused."""

    def __init__(self, source: Path) -> None:
        self.source, self.root = source, source.resolve()
        self.files: list[tuple[str, Path]] = []
        self.refused: list[str] = []

    def folder(self, path: Path, relative: str, ancestors: frozenset[Path]) -> None:
        """``ancestors``: the real folders this one sits in, itself included (loops)."""
        with os.scandir(path) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            name, child = relative + entry.name, path / entry.name
            if entry.is_symlink():
                self.link(child, name, ancestors)
            elif entry.is_dir(follow_symlinks=False):
                real = child.resolve()
                self.folder(child, name + "/", ancestors | {real})
            elif entry.is_file(follow_symlinks=False):
                self.files.append((name, child))
            # sockets, FIFOs and devices hold no data to copy: left out as before

    def link(self, path: Path, name: str, ancestors: frozenset[Path]) -> None:
        target = path.resolve()
        points = f"{name} -> {_short(os.readlink(path))}"
        if not target.is_relative_to(self.root):
            self.refused.append(
                f"{points}: the link leaves the channel folder (copy the data in, "
                "or point the channel at the folder that holds it)"
            )
        elif not target.exists():
            self.refused.append(f"{points}: the link points at nothing")
        elif target.is_dir():
            if target in ancestors:
                self.refused.append(f"{points}: the link loops back to a folder it is in")
            else:
                self.folder(path, name + "/", ancestors | {target})
        elif target.is_file():
            self.files.append((name, path))


def _short(text: str) -> str:
    """At most TARGET_QUOTED characters of a path, its end kept (the part that differs)."""
    return text if len(text) <= TARGET_QUOTED else "..." + text[-(TARGET_QUOTED - 3) :]
