"""A data channel's local files, read the same way by every backend.

The policy, one for the local store and both object stores:

- a channel is a file or a folder; a folder is read recursively;
- a symbolic link is followed when its target stays inside the channel folder (files and
  folders alike; a link back to a folder it sits in, a loop, is refused, and so is a link
  that cannot be resolved at all, a link pointing at itself or at another link in a ring);
- each real folder is entered through one link at most: a second link to a folder already
  reached through a link is refused, so links cannot multiply the tree (two links per
  level, twenty levels deep, would read a million paths), and a walk stops with one
  refusal past ``MAX_ENTRIES`` entries;
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
#: Entries (files, folders, links) a channel's walk reads before it refuses the channel.
MAX_ENTRIES = 2_000_000


class _TooManyEntries(Exception):
    """The walk read MAX_ENTRIES entries: it stops there."""


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
    try:
        walk.folder(source, "", walk.root, frozenset({walk.root}))
    except _TooManyEntries:
        message = f"{_short(str(source))} holds more than {MAX_ENTRIES:,} entries (links included)"
        raise ConfigError(field, message) from None
    refused = sorted(walk.refused, key=len)  # the shallowest first, the likeliest cause
    problems = [Problem(field, message) for message in refused[:REFUSED_NAMED]]
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
        #: real folder -> the link that entered it (each real folder once through a link)
        self.linked: dict[Path, str] = {}
        self.entries = 0

    def folder(self, path: Path, relative: str, real: Path, ancestors: frozenset[Path]) -> None:
        """``real``: this folder's real path; ``ancestors``: the real folders this one sits
        in, itself included (loops)."""
        with os.scandir(path) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        self.entries += len(entries)
        if self.entries > MAX_ENTRIES:
            raise _TooManyEntries
        for entry in entries:
            name, child = relative + entry.name, path / entry.name
            if entry.is_symlink():
                self.link(child, name, ancestors)
            elif entry.is_dir(follow_symlinks=False):
                inner = real / entry.name  # a real folder: no link on the way
                self.folder(child, name + "/", inner, ancestors | {inner})
            elif entry.is_file(follow_symlinks=False):
                self.files.append((name, child))
            # sockets, FIFOs and devices hold no data to copy: left out as before

    def link(self, path: Path, name: str, ancestors: frozenset[Path]) -> None:
        target = _resolve(path)
        points = f"{_short(name)} -> {_short(os.readlink(path))}"
        if target is None:  # a link to itself, or a ring of links
            self.refused.append(f"{points}: the link loops (it never reaches a file or folder)")
        elif not target.is_relative_to(self.root):
            self.refused.append(
                f"{points}: the link leaves the channel folder (copy the data in, "
                "or point the channel at the folder that holds it)"
            )
        elif not target.exists():
            self.refused.append(f"{points}: the link points at nothing")
        elif target.is_dir():
            if target in ancestors:
                self.refused.append(f"{points}: the link loops back to a folder it is in")
            elif target in self.linked:
                first = _short(self.linked[target])
                self.refused.append(f"{points}: the folder is already reached through {first}")
            else:
                self.linked[target] = name
                self.folder(path, name + "/", target, ancestors | {target})
        elif target.is_file():
            self.files.append((name, path))


def _resolve(path: Path) -> Path | None:
    """The real path a link leads to, or None when it cannot be resolved (a loop)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # ELOOP on 3.13, RuntimeError("Symlink loop") before
        return None


def _short(text: str) -> str:
    """At most TARGET_QUOTED characters of a path, its end kept (the part that differs)."""
    return text if len(text) <= TARGET_QUOTED else "..." + text[-(TARGET_QUOTED - 3) :]
