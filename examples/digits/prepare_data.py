"""Write the digits data set as train/test CSV files with pandas.

scikit-learn ships the 1,797 8x8 digit images inside the package, so nothing is
downloaded. The split is stratified and seeded: the same files every time, so the
pipeline's upload stage sees unchanged data on the next run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def prepare(out_dir: Path, test_size: float = 0.2, seed: int = 0) -> tuple[Path, Path]:
    digits = load_digits(as_frame=True)
    frame: pd.DataFrame = digits.frame
    train, test = train_test_split(
        frame, test_size=test_size, random_state=seed, stratify=frame["target"]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "train.csv", out_dir / "test.csv"
    for part, path in zip((train, test), paths, strict=True):
        part.sort_index().to_csv(path, index=False)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    args = parser.parse_args()
    for path in prepare(args.out):
        print(f"wrote {path} ({sum(1 for _ in path.open()) - 1} rows)")
