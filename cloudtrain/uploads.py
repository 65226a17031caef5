"""What the S3 and Azure Blob uploads share: the channel's files, the unchanged check,
the progress bar. Cloud-neutral; each cloud's module does its own requests."""

from __future__ import annotations

import hashlib
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.errors import ConfigError
from cloudtrain.store import PARQUET_NAME, HashCache, manifest_json, sha256_file, walk_files

if TYPE_CHECKING:
    import pandas as pd

MiB = 1024 * 1024
#: A progress bar on a terminal for uploads at least this big or this many files.
PROGRESS_MIN_BYTES = 64 * MiB
PROGRESS_MIN_FILES = 200
#: The stat/hash cache file each cloud keeps under its cache folder.
HASH_CACHE_NAME = "hash-cache.json"


def local_files(channel: str, source: Path) -> list[tuple[str, Path]]:
    """Every file of a channel's local source; a missing or empty one is a ConfigError."""
    if not source.exists():
        raise ConfigError(f"data.{channel}", f"{source} does not exist")
    files = list(walk_files(source))
    if not files:
        raise ConfigError(f"data.{channel}", f"{source} holds no files")
    return files


def digest_if_unchanged(
    stats: list[tuple[str, Path, Any]], hashes: HashCache | None, previous_digest: str
) -> str | None:
    """The local manifest's digest when it equals the previous one, else None."""
    entries = {
        relative: {
            "sha256": hashes.sha256(path, stat) if hashes else sha256_file(path),
            "size": stat.st_size,
        }
        for relative, path, stat in stats
    }
    if hashes:
        hashes.save()
    digest = hashlib.sha256(manifest_json(dict(sorted(entries.items()))).encode()).hexdigest()
    return digest if digest == previous_digest else None


def is_big_on_a_terminal(files: int, total_bytes: int) -> bool:
    """Whether a progress bar is worth drawing: on a terminal, for a big upload."""
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return False
    return total_bytes >= PROGRESS_MIN_BYTES or files >= PROGRESS_MIN_FILES


class Progress:
    """A tqdm bar on stderr, opened at the first upload; also an s3transfer subscriber."""

    def __init__(self, description: str, enabled: bool) -> None:
        self.description, self.enabled = description, enabled
        self._bar: Any = None
        self._lock = threading.Lock()

    def add_total(self, size: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=0,
                    desc=self.description,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    file=sys.stderr,
                    leave=False,
                )
            self._bar.total += size  # drawn at the next update, at most 10 times a second

    def on_progress(self, bytes_transferred: int = 0, **kwargs: Any) -> None:
        if self._bar is not None:
            with self._lock:
                self._bar.update(bytes_transferred)

    def on_queued(self, **kwargs: Any) -> None:
        pass

    def on_done(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def human_size(size: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# -- errors ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelSource:
    """A channel's files, how to hash them, and how to name the source in logs."""

    list_files: Callable[[], list[tuple[str, Path]]]
    hashes: HashCache | None
    described: str


@contextmanager
def channel_source(
    channel: str, source: Path | pd.DataFrame, cache_dir: Path
) -> Iterator[ChannelSource]:
    """A folder or file (hashes remembered), or a DataFrame written as one parquet file."""
    if isinstance(source, Path):
        yield ChannelSource(
            list_files=lambda: local_files(channel, source),
            hashes=HashCache(cache_dir / HASH_CACHE_NAME),
            described=str(source),
        )
        return
    with tempfile.TemporaryDirectory(prefix="cloudtrain-parquet-") as tmp:
        path = Path(tmp) / PARQUET_NAME
        source.to_parquet(path, engine="pyarrow", index=True)
        yield ChannelSource(
            list_files=lambda: [(PARQUET_NAME, path)],
            hashes=None,  # a new temp file each time: nothing to remember
            described=f"DataFrame {source.shape[0]}x{source.shape[1]}",
        )
