"""Digits classifier trained epoch by epoch, checkpointed every epoch, resumable.

Follows the script contract (SageMaker script mode): hyperparameters as --name value,
data in SM_CHANNEL_TRAIN / SM_CHANNEL_TEST, the model to SM_MODEL_DIR, checkpoints to
SM_CHECKPOINT_DIR, metrics printed as name=value. On SIGTERM (a spot reclaim) it
finishes the epoch, saves its checkpoint and exits.

Deterministic: the checkpoint holds the model *and* the shuffling RNG's state, so a run
interrupted any number of times ends with the same model as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss

CHECKPOINT = "checkpoint.pkl"
_stop_requested = False


def _on_sigterm(signum: int, frame: object) -> None:
    global _stop_requested
    _stop_requested = True
    print("SIGTERM received: stopping after this epoch's checkpoint", flush=True)


def read_channel(name: str) -> pd.DataFrame:
    folder = Path(os.environ[f"SM_CHANNEL_{name.upper()}"])
    files = sorted(folder.glob("*.csv")) + sorted(folder.glob("*.parquet"))
    if not files:
        raise SystemExit(f"no .csv or .parquet file in channel {name} ({folder})")
    frames = [pd.read_csv(f) if f.suffix == ".csv" else pd.read_parquet(f) for f in files]
    return pd.concat(frames, ignore_index=True)


def split(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return frame.drop(columns="target").to_numpy(dtype=float) / 16.0, frame["target"].to_numpy()


def save_checkpoint(folder: Path, state: dict) -> None:
    """Write then rename, so a kill mid-write never leaves a torn checkpoint."""
    tmp = folder / (CHECKPOINT + ".tmp")
    with tmp.open("wb") as handle:
        pickle.dump(state, handle)
    os.replace(tmp, folder / CHECKPOINT)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--learning_rate", type=float, default=0.05)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--epoch_seconds",
        type=float,
        default=0.0,
        help="sleep per epoch, to make a demo's progress visible",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)

    x_train, y_train = split(read_channel("train"))
    x_test, y_test = split(read_channel("test"))
    classes = np.unique(y_train)
    checkpoint_dir = Path(os.environ["SM_CHECKPOINT_DIR"])
    checkpoint_dir.mkdir(parents=True, exist_ok=True)

    if (checkpoint_dir / CHECKPOINT).exists():
        with (checkpoint_dir / CHECKPOINT).open("rb") as handle:
            state = pickle.load(handle)
        print(f"resumed from checkpoint: epoch {state['epoch']}", flush=True)
    else:
        state = {
            "epoch": 0,
            "model": SGDClassifier(
                loss="log_loss",
                learning_rate="constant",
                eta0=args.learning_rate,
                alpha=1e-4,
                random_state=args.seed,
            ),
            "rng": np.random.RandomState(args.seed).get_state(),
            "history": [],
        }
    model: SGDClassifier = state["model"]
    rng = np.random.RandomState()
    rng.set_state(state["rng"])

    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), args.batch_size):
            batch = order[start : start + args.batch_size]
            model.partial_fit(x_train[batch], y_train[batch], classes=classes)
        train_loss = log_loss(y_train, model.predict_proba(x_train), labels=classes)
        val_accuracy = model.score(x_test, y_test)
        print(
            f"epoch={epoch} train_loss={train_loss:.6f} val_accuracy={val_accuracy:.6f}", flush=True
        )
        state.update(epoch=epoch, model=model, rng=rng.get_state())
        state["history"].append(
            {"epoch": epoch, "train_loss": train_loss, "val_accuracy": val_accuracy}
        )
        save_checkpoint(checkpoint_dir, state)
        if _stop_requested:
            return 143
        if args.epoch_seconds:
            time.sleep(args.epoch_seconds)

    model_dir = Path(os.environ["SM_MODEL_DIR"])
    with (model_dir / "model.pkl").open("wb") as handle:
        pickle.dump(model, handle)
    np.savez(model_dir / "weights.npz", coef=model.coef_, intercept=model.intercept_)
    output_dir = Path(os.environ["SM_OUTPUT_DATA_DIR"])
    (output_dir / "history.json").write_text(json.dumps(state["history"], indent=1))
    print(
        f"saved model to {model_dir}; final val_accuracy={state['history'][-1]['val_accuracy']:.6f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
