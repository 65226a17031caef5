"""The same data-parallel line fit with torch.distributed: DDP over gloo (CPU) or NCCL.

Not run in CI (torch is gigabytes). It reads what torchrun, SageMaker's toolkit, Azure
ML's PyTorch distribution and cloudtrain's local launcher all set: RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT (``init_method="env://"``). Rank 0 checkpoints
every epoch and every rank resumes from it; SIGTERM (a spot reclaim) is agreed on with
an all-reduce at the end of the epoch, so the group stops together after a checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

_stop_requested = False


def _on_sigterm(signum: int, frame: object) -> None:
    global _stop_requested
    _stop_requested = True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--steps_per_epoch", type=int, default=20)
    parser.add_argument("--learning_rate", type=float, default=0.05)
    args, _ = parser.parse_known_args()
    signal.signal(signal.SIGTERM, _on_sigterm)

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")

    rows = []
    for path in sorted(Path(os.environ["SM_CHANNEL_TRAIN"]).glob("*.csv")):
        with path.open() as handle:
            rows += [(float(r["x"]), float(r["y"])) for r in csv.DictReader(handle)]
    shard = rows[rank::world]
    x = torch.tensor([[r[0]] for r in shard], device=device)
    y = torch.tensor([[r[1]] for r in shard], device=device)

    model = DistributedDataParallel(torch.nn.Linear(1, 1).to(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.learning_rate)
    checkpoint = Path(os.environ["SM_CHECKPOINT_DIR"]) / "checkpoint.pt"
    start = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device)
        model.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"]
        if rank == 0:
            print(f"resumed from checkpoint: epoch {start}", flush=True)

    for epoch in range(start + 1, args.epochs + 1):
        for _ in range(args.steps_per_epoch):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()  # DDP averages the gradients across ranks
            optimizer.step()
        stop = torch.tensor([1.0 if _stop_requested else 0.0], device=device)
        dist.all_reduce(stop)  # any rank reclaimed: the whole group stops after this epoch
        if rank == 0:
            tmp = checkpoint.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch,
                },
                tmp,
            )
            os.replace(tmp, checkpoint)
            print(f"epoch={epoch} loss={loss.item():.6f}", flush=True)
        if stop.item() > 0:
            break
    else:
        if rank == 0:
            torch.save(model.module.state_dict(), Path(os.environ["SM_MODEL_DIR"]) / "model.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
