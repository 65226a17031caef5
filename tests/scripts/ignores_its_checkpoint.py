"""A training script that checkpoints every epoch and never reads its checkpoint back.

SageMaker SDK issue #1040's script: every spot reclaim sends it back to epoch 1. It
writes two files into SM_CHECKPOINT_DIR each epoch (overwritten), prints ``epoch=N``,
and sleeps ``--epoch_seconds`` so a reclaim lands mid-run.
"""

import json
import os
import sys
import time
from pathlib import Path

args = dict(zip(sys.argv[1::2], sys.argv[2::2], strict=False))
checkpoints = Path(os.environ["SM_CHECKPOINT_DIR"])
for epoch in range(1, int(args["--epochs"]) + 1):
    (checkpoints / "weights.bin").write_bytes(bytes([epoch % 256]) * 64)
    (checkpoints / "state.json").write_text(json.dumps({"epoch": epoch}))
    print(f"epoch={epoch} loss={1 / epoch:.4f}", flush=True)
    time.sleep(float(args["--epoch_seconds"]))
