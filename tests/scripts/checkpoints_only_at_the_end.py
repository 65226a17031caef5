"""A training script that prints its epochs but writes its checkpoint only when done:
a spot reclaim before then leaves the checkpoint location empty."""

import os
import sys
import time
from pathlib import Path

args = dict(zip(sys.argv[1::2], sys.argv[2::2], strict=False))
for epoch in range(1, int(args["--epochs"]) + 1):
    print(f"epoch={epoch} loss={1 / epoch:.4f}", flush=True)
    time.sleep(float(args["--epoch_seconds"]))
(Path(os.environ["SM_CHECKPOINT_DIR"]) / "state.json").write_text("done")
