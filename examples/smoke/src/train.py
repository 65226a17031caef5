"""The smoke pipeline's script: a line fitted to 24 points in a second or two.

It exists so CI can prove the whole path (deployment, worker, the five stages, a
simulated spot reclaim resumed from a checkpoint, artifacts) works, without a real
model. Pure Python: nothing to import but the standard library.

Follows the script contract: hyperparameters as ``--name value``, data in
``SM_CHANNEL_TRAIN``, checkpoints in ``SM_CHECKPOINT_DIR``, the model to ``SM_MODEL_DIR``,
metrics printed as ``name=value``. ``--fail true`` makes it exit 3 after reading the
data, so a CI job can check that a failing training run fails the job.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import time
from pathlib import Path

CHECKPOINT = "checkpoint.json"
_stop_requested = False


def _on_sigterm(signum: int, frame: object) -> None:
    global _stop_requested
    _stop_requested = True


def _flag(text: str) -> bool:
    """Hyperparameters arrive as strings: ``True`` (SageMaker's rendering), ``true``, ``1``."""
    return text.strip().lower() in ("true", "1", "yes")


def read_points() -> list[tuple[float, float]]:
    folder = Path(os.environ["SM_CHANNEL_TRAIN"])
    points = []
    for path in sorted(folder.glob("*.csv")):
        with path.open() as handle:
            points += [(float(row["x"]), float(row["y"])) for row in csv.DictReader(handle)]
    if not points:
        raise SystemExit(f"no .csv rows in channel train ({folder})")
    return points


def loss(points: list[tuple[float, float]], slope: float, intercept: float) -> float:
    return sum((slope * x + intercept - y) ** 2 for x, y in points) / len(points)


def save_checkpoint(folder: Path, state: dict[str, float]) -> None:
    """Write then rename: a reclaim mid-write never leaves a torn checkpoint."""
    tmp = folder / (CHECKPOINT + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, folder / CHECKPOINT)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning_rate", type=float, default=0.02)
    parser.add_argument("--steps_per_epoch", type=int, default=200)
    parser.add_argument(
        "--epoch_seconds", type=float, default=0.0, help="sleep per epoch (reclaims, timeouts)"
    )
    parser.add_argument("--fail", type=_flag, default=False, help="exit 3 on purpose")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)

    points = read_points()
    if args.fail:
        print("failing on purpose: hyperparameter fail is true", flush=True)
        return 3

    checkpoint_dir = Path(os.environ["SM_CHECKPOINT_DIR"])
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    state = {"epoch": 0, "slope": 0.0, "intercept": 0.0}
    if (checkpoint_dir / CHECKPOINT).exists():
        state = json.loads((checkpoint_dir / CHECKPOINT).read_text())
        print(f"resumed from checkpoint: epoch {state['epoch']}", flush=True)

    slope, intercept, n = state["slope"], state["intercept"], len(points)
    for epoch in range(int(state["epoch"]) + 1, args.epochs + 1):
        for _ in range(args.steps_per_epoch):
            errors = [(slope * x + intercept - y, x) for x, y in points]
            slope -= args.learning_rate * 2 * sum(e * x for e, x in errors) / n
            intercept -= args.learning_rate * 2 * sum(e for e, _ in errors) / n
        state = {"epoch": epoch, "slope": slope, "intercept": intercept}
        save_checkpoint(checkpoint_dir, state)
        print(f"epoch={epoch} loss={loss(points, slope, intercept):.6f}", flush=True)
        deadline = time.monotonic() + args.epoch_seconds
        while time.monotonic() < deadline and not _stop_requested:
            time.sleep(0.02)
        if _stop_requested:
            print(f"SIGTERM: epoch {epoch} is checkpointed; exiting", flush=True)
            return 143

    model_dir = Path(os.environ["SM_MODEL_DIR"])
    (model_dir / "model.json").write_text(json.dumps({"slope": slope, "intercept": intercept}))
    output_dir = Path(os.environ["SM_OUTPUT_DATA_DIR"])
    (output_dir / "fit.txt").write_text(f"y = {slope:.4f} x + {intercept:.4f}\n")
    print(f"saved model to {model_dir}: y = {slope:.4f} x + {intercept:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
