"""The two channels both upload benchmarks send (``s3_upload.py``, ``blob_upload.py``), and
the targets they share, so S3 and Blob are measured on the same files."""

from __future__ import annotations

import os
from pathlib import Path

SMALL_FILES = 1000
SMALL_BYTES = 50 * 1000
BIG_BYTES = 256 * 1024 * 1024
TARGET_BIG = 1.10  # the 256 MB file: at most 10% slower than the plain SDK
TARGET_SMALL = 1.0  # the small files: no slower than the plain SDK
TARGET_RERUN = 20.0  # the unchanged re-run at least this many times faster
RERUNS = 5  # unchanged re-runs measured (they are quick)


def make_data(work: Path) -> dict[str, Path]:
    """1,000 files of 50 KB and one of 256 MB, random bytes, under ``work``."""
    small = work / "small"
    small.mkdir()
    for index in range(SMALL_FILES):
        (small / f"part-{index:04d}.bin").write_bytes(os.urandom(SMALL_BYTES))
    big = work / "big"
    big.mkdir()
    with (big / "big.bin").open("wb") as handle:
        for _ in range(BIG_BYTES // (16 * 1024 * 1024)):
            handle.write(os.urandom(16 * 1024 * 1024))
    return {"small": small, "big": big}


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"
