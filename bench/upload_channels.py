"""The two channels both upload benchmarks send (``s3_upload.py``, ``blob_upload.py``), and
the targets they share, so S3 and Blob are measured on the same files."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
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


def print_targets(
    baseline: str,
    ratio: str,
    small: Mapping[str, float],
    big: Mapping[str, float],
    puts: str = "PUT",
    first: Iterable[tuple[str, str, bool]] = (),
) -> None:
    """The shared targets, met or not: both channels within their ratio (``ratio``, the
    key of cloudtrain / ``baseline``) and re-runs that send nothing (``puts`` counted)."""
    rows = [
        *first,
        (
            f"small files within {TARGET_SMALL:.2f}x of {baseline}",
            f"{small[ratio]:.2f}x",
            small[ratio] <= TARGET_SMALL,
        ),
        (
            f"256 MB file within {TARGET_BIG:.2f}x of {baseline}",
            f"{big[ratio]:.2f}x",
            big[ratio] <= TARGET_BIG,
        ),
    ]
    for name, ratios in (("small files", small), ("256 MB file", big)):
        ok = ratios["rerun"] >= TARGET_RERUN and ratios["puts"] == 0
        rows.append(
            (
                f"re-run >= {TARGET_RERUN:g}x faster with 0 {puts}, {name}",
                f"{ratios['rerun']:.1f}x, {ratios['puts']:.0f}",
                ok,
            )
        )
    print("\ntargets")
    for name, value, ok in rows:
        print(f"  {name:52} {value:>10}  {verdict(ok)}")
