"""A stand-in for a long training job: epochs of a fixed length, checkpointed, resumable.

Each epoch sleeps ``--epoch_seconds`` (the "work"), then writes the checkpoint and prints
``epoch=N``, so the budget policy can measure the pace from the run's own output. Only
the standard library: the demo's timing is the sleeps', not an import's.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--epoch_seconds", type=float, default=1.0)
    args, _ = parser.parse_known_args()
    checkpoint = Path(os.environ["SM_CHECKPOINT_DIR"]) / "epoch.txt"
    start = int(checkpoint.read_text()) if checkpoint.exists() else 0
    if start:
        print(f"resumed from checkpoint: epoch {start}", flush=True)
    for epoch in range(start + 1, args.epochs + 1):
        time.sleep(args.epoch_seconds)
        checkpoint.write_text(str(epoch))
        print(f"epoch={epoch} loss={1 / epoch:.4f}", flush=True)
    model = Path(os.environ["SM_MODEL_DIR"]) / "model.json"
    model.write_text(json.dumps({"epochs": args.epochs}))


if __name__ == "__main__":
    main()
