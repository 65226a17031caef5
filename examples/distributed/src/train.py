"""Data-parallel training with the standard library: a line fitted by several ranks.

Each rank reads its share of the data (every WORLD_SIZE-th row from RANK), computes the
gradient of the squared error on it, and the ranks average their gradients every step, as
DistributedDataParallel's all-reduce does: rank 0 listens on MASTER_ADDR:MASTER_PORT, the
others connect to it, and rank 0 sums the gradients in rank order and sends the average
back. So every rank holds the same parameters, and the model is the same, bit for bit,
whether it was trained in one go or resumed after a reclaim.

The checkpoint is written by rank 0 at the end of each epoch (write, then rename) and read
by every rank when it starts. SIGTERM (a spot reclaim: every rank gets it) is agreed on at
the end of the epoch: the ranks finish it, rank 0 checkpoints, all exit 0. Metrics
(``epoch=N loss=...``) are printed by rank 0; every rank prints its shard's size.

Variables read: WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT (torchrun's; absent means one
process), SM_CHANNEL_TRAIN, SM_CHECKPOINT_DIR, SM_MODEL_DIR, SM_CURRENT_HOST.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TextIO

CHECKPOINT = "checkpoint.json"
CONNECT_SECONDS = 60.0  # how long a rank waits for rank 0 to listen
_stop_requested = False


def _on_sigterm(signum: int, frame: object) -> None:
    global _stop_requested
    _stop_requested = True


class Group:
    """The average of every rank's numbers, through rank 0 (a star, not a ring: enough
    for a handful of local ranks)."""

    def __init__(self, rank: int, world: int, addr: str, port: int) -> None:
        self.rank, self.world = rank, world
        self.peers: list[tuple[socket.socket, TextIO]] = []
        if world == 1:
            return
        if rank == 0:
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind((addr, port))
            server.listen(world)
            by_rank = {}
            while len(by_rank) < world - 1:
                peer, _ = server.accept()
                stream = peer.makefile("rw")
                by_rank[int(stream.readline())] = (peer, stream)
            server.close()
            self.peers = [by_rank[r] for r in sorted(by_rank)]
        else:
            deadline = time.monotonic() + CONNECT_SECONDS
            while True:
                try:
                    peer = socket.create_connection((addr, port), timeout=CONNECT_SECONDS)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            stream = peer.makefile("rw")
            stream.write(f"{rank}\n")
            stream.flush()
            self.peers = [(peer, stream)]

    def average(self, values: list[float], count: int, stop: bool) -> tuple[list[float], bool]:
        """Sums of every rank weighted by its row count, and whether any rank must stop."""
        if self.world == 1:
            return [v / count for v in values], stop
        mine = {"sums": values, "count": count, "stop": stop}
        if self.rank != 0:
            _, stream = self.peers[0]
            stream.write(json.dumps(mine) + "\n")
            stream.flush()
            reply = json.loads(stream.readline())
            return reply["mean"], reply["stop"]
        parts = [mine]
        for _, stream in self.peers:
            line = stream.readline()
            if not line:
                raise SystemExit("a rank left the group")
            parts.append(json.loads(line))
        total = sum(part["count"] for part in parts)
        mean = [sum(part["sums"][i] for part in parts) / total for i in range(len(values))]
        any_stop = any(part["stop"] for part in parts)
        for _, stream in self.peers:
            stream.write(json.dumps({"mean": mean, "stop": any_stop}) + "\n")
            stream.flush()
        return mean, any_stop


def read_rows(rank: int, world: int) -> list[tuple[float, float]]:
    folder = Path(os.environ["SM_CHANNEL_TRAIN"])
    rows: list[tuple[float, float]] = []
    for path in sorted(folder.glob("*.csv")):
        with path.open() as handle:
            rows += [(float(r["x"]), float(r["y"])) for r in csv.DictReader(handle)]
    return rows[rank::world]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--steps_per_epoch", type=int, default=20)
    parser.add_argument("--learning_rate", type=float, default=0.05)
    parser.add_argument("--epoch_seconds", type=float, default=0.0)
    args, _ = parser.parse_known_args()
    signal.signal(signal.SIGTERM, _on_sigterm)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    rows = read_rows(rank, world)
    host = os.environ.get("SM_CURRENT_HOST", "algo-1")
    print(f"rank {rank} of {world} on {host}: {len(rows)} rows", flush=True)
    group = Group(
        rank,
        world,
        os.environ.get("MASTER_ADDR", "127.0.0.1"),
        int(os.environ.get("MASTER_PORT", "0")),
    )

    checkpoint_dir = Path(os.environ["SM_CHECKPOINT_DIR"])
    state = {"epoch": 0, "slope": 0.0, "intercept": 0.0}
    if (checkpoint_dir / CHECKPOINT).exists():
        state = json.loads((checkpoint_dir / CHECKPOINT).read_text())
        if rank == 0:
            print(f"resumed from checkpoint: epoch {state['epoch']}", flush=True)

    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        time.sleep(args.epoch_seconds)  # the "work" of a real epoch
        stop = False
        for _ in range(args.steps_per_epoch):
            slope, intercept = state["slope"], state["intercept"]
            errors = [(slope * x + intercept - y, x) for x, y in rows]
            sums = [
                sum(2 * e * x for e, x in errors),
                sum(2 * e for e, _ in errors),
                sum(e * e for e, _ in errors),
            ]
            (g_slope, g_intercept, loss), stop = group.average(sums, len(rows), _stop_requested)
            state["slope"] = slope - args.learning_rate * g_slope
            state["intercept"] = intercept - args.learning_rate * g_intercept
        state["epoch"] = epoch
        if rank == 0:
            tmp = checkpoint_dir / (CHECKPOINT + ".tmp")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, checkpoint_dir / CHECKPOINT)
            print(f"epoch={epoch} loss={loss:.6f}", flush=True)
        if stop:
            if rank == 0:
                print(f"stopping after epoch {epoch}: SIGTERM, checkpoint saved", flush=True)
            return 0
    if rank == 0:
        model = {"slope": state["slope"], "intercept": state["intercept"], "world": world}
        (Path(os.environ["SM_MODEL_DIR"]) / "model.json").write_text(json.dumps(model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
