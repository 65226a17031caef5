"""A loud training script (200 MB on stdout) bare and as a cloudtrain local run.

Measured side by side in one run, alternating, median of N:

  bare       python -u train.py > file   (the script alone, its output to a file)
  attempt    the same script as the attempt of a cloudtrain local run: its duration as
             the run records it (start of the process to the last line read and logged)
  pipeline   the whole local run (five stages, Prefect server already up)

Also: the orchestrator's RSS growth during the run (peak, sampled every 20 ms, against
before) and the growth of Prefect's database (a fresh PREFECT_HOME for this benchmark).
Targets: attempt within 1.2x of bare; RSS growth under 100 MB. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WORK = Path(tempfile.mkdtemp(prefix="cloudtrain-loud-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", str(WORK / "prefect-home"))
os.environ.pop("PREFECT_API_URL", None)

import psutil  # noqa: E402

TARGET_RATIO = 1.2
TARGET_RSS_MB = 100.0
SCRIPT = """
import sys
megabytes = int(sys.argv[sys.argv.index("--megabytes") + 1])
line = "x" * 90
out = sys.stdout
for i in range(megabytes * 10_000):  # 100-byte lines
    out.write(f"{i:08d} {line}\\n")
    if i % 100_000 == 0:
        out.write(f"loss={1 / (i + 1):.6f}\\n")
out.write("loss=0.001 acc=0.99\\n")
"""


class PeakRss:
    """The peak resident size of this process while the block runs."""

    def __enter__(self) -> PeakRss:
        self.process = psutil.Process()
        self.before = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.before) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200, help="stdout the script writes")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    (WORK / "src").mkdir()
    (WORK / "src" / "train.py").write_text(SCRIPT)
    config_path = WORK / "cloudtrain.yaml"
    config_path.write_text(
        "name: loud\ncode: {source_dir: src, entry_point: train.py}\n"
        f"hyperparameters: {{megabytes: {args.megabytes}}}\nmetrics: [loss, acc]\n"
        "environment: {framework: sklearn}\n"
    )

    def bare() -> float:
        started = time.perf_counter()
        with (WORK / "bare.log").open("wb") as out:
            subprocess.run(
                [sys.executable, "-u", "train.py", "--megabytes", str(args.megabytes)],
                cwd=WORK / "src",
                stdout=out,
                check=True,
            )
        return time.perf_counter() - started

    from cloudtrain.config import load_config
    from flows.local_training import local_training

    config = load_config(config_path)
    print("starting Prefect's embedded server and a first run (not measured)...", flush=True)
    local_training(config=config.model_copy(update={"hyperparameters": {"megabytes": 1}}))
    db = Path(os.environ["PREFECT_HOME"]) / "prefect.db"
    db_before = db.stat().st_size if db.exists() else 0

    samples: dict[str, list[float]] = {"bare": [], "attempt": [], "pipeline": []}
    growth: list[float] = []
    for _ in range(args.runs):
        samples["bare"].append(bare())
        with PeakRss() as rss:
            started = time.perf_counter()
            summary = local_training(config=config, force=True)
            samples["pipeline"].append(time.perf_counter() - started)
        samples["attempt"].append(summary["attempts"][0]["duration_seconds"])
        growth.append(rss.growth_mb)
        assert summary["metrics"] == {"loss": 0.001, "acc": 0.99}, summary["metrics"]
    times = {name: statistics.median(values) for name, values in samples.items()}
    ratio = times["attempt"] / times["bare"]
    rss_mb = max(growth)
    db_mb = ((db.stat().st_size if db.exists() else 0) - db_before) / 1e6

    print(f"\n{args.megabytes} MB of stdout, median of {args.runs} (alternating)")
    for name, value in times.items():
        print(f"  {name:9} {value:7.2f} s")
    print(
        f"  attempt/bare {ratio:.2f}x (target <= {TARGET_RATIO}x: "
        f"{'met' if ratio <= TARGET_RATIO else 'NOT met'}); pipeline/bare "
        f"{times['pipeline'] / times['bare']:.2f}x"
    )
    print(
        f"  orchestrator RSS growth {rss_mb:.1f} MB at most (target < {TARGET_RSS_MB:g} MB: "
        f"{'met' if rss_mb < TARGET_RSS_MB else 'NOT met'}); Prefect database "
        f"+{db_mb:.1f} MB over {args.runs} runs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
