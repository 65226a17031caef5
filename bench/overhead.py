"""What cloudtrain adds on top of Prefect: the local pipeline against its baselines.

Measured side by side in one run, alternating, median of N:

  script     the trivial training script run bare (python train.py)
  prefect    a bare Prefect flow of five no-op tasks
  pipeline   cloudtrain's local pipeline (five stages) training the same script

Warm: all three in this process after the embedded Prefect server is up.
Cold: `cloudtrain run` as a new process against `python bare_flow.py` (each starts
Prefect's embedded server, as a user's first command does).

Target: pipeline - prefect - script < 2 s (what cloudtrain adds to Prefect's start-up).
No threshold is asserted: it prints the numbers and the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

TARGET_SECONDS = 2.0
SCRIPT = "print('loss=0.5')\nprint('loss=0.25')\n"
BARE_FLOW = textwrap.dedent(
    """
    import os
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect import flow, task

    @task
    def noop(i: int) -> int:
        return i

    @flow(name="bare-five-tasks")
    def bare() -> None:
        for i in range(5):
            noop(i)

    if __name__ == "__main__":
        bare()
    """
)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_of(runs: int, fns: dict[str, Callable[[], object]]) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():  # alternate, so drift hits all alike
            samples[name].append(timed(fn))
    return {name: statistics.median(values) for name, values in samples.items()}


def report(title: str, times: dict[str, float]) -> None:
    added = times["pipeline"] - times["prefect"] - times["script"]
    print(f"\n{title}")
    for name, value in times.items():
        print(f"  {name:9} {value:7.3f} s")
    print(
        f"  cloudtrain adds {added:+.3f} s on top of Prefect + script "
        f"(target < {TARGET_SECONDS:g} s: {'met' if added < TARGET_SECONDS else 'NOT met'})"
    )
    print(
        f"  ratios: pipeline/script {times['pipeline'] / times['script']:.1f}x, "
        f"pipeline/prefect {times['pipeline'] / times['prefect']:.2f}x, "
        f"pipeline/(prefect+script) {times['pipeline'] / (times['prefect'] + times['script']):.2f}x"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="warm repetitions")
    parser.add_argument("--cold-runs", type=int, default=2, help="cold repetitions (0 to skip)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cloudtrain-bench-"))
    (work / "src").mkdir()
    (work / "src" / "train.py").write_text(SCRIPT)
    (work / "bare_flow.py").write_text(BARE_FLOW)
    config_path = work / "cloudtrain.yaml"
    config_path.write_text(
        "name: bench\ncode: {source_dir: src, entry_point: train.py}\nmetrics: [loss]\n"
        "environment: {framework: sklearn}\n"
    )
    script = [sys.executable, "-u", "train.py"]

    def run_script() -> None:
        subprocess.run(script, cwd=work / "src", check=True, capture_output=True)

    # -- warm ------------------------------------------------------------------------
    sys.path.insert(0, str(work))
    from bare_flow import bare  # type: ignore[import-not-found]

    from cloudtrain.config import load_config
    from flows.local_training import local_training

    config = load_config(config_path)
    print("starting Prefect's embedded server (not measured)...", flush=True)
    started = time.perf_counter()
    bare()
    print(f"  first flow in this process: {time.perf_counter() - started:.1f} s")
    local_training(config=config, force=True)  # first run: imports and the data store
    warm = median_of(
        args.runs,
        {
            "script": run_script,
            "prefect": bare,
            "pipeline": lambda: local_training(config=config, force=True),
        },
    )
    report(f"warm, median of {args.runs} (Prefect server already up)", warm)

    # -- cold ------------------------------------------------------------------------
    if args.cold_runs:
        cli = [
            str(Path(sys.executable).with_name("cloudtrain")),
            "run",
            str(config_path),
            "--force",
        ]
        if not Path(cli[0]).exists():
            cli = [sys.executable, "-m", "cloudtrain.cli", "run", str(config_path), "--force"]
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}

        def cold(command: list[str]) -> Callable[[], None]:
            return lambda: subprocess.run(
                command, cwd=work, env=env, check=True, capture_output=True
            )

        cold_times = median_of(
            args.cold_runs,
            {
                "script": run_script,
                "prefect": cold([sys.executable, str(work / "bare_flow.py")]),
                "pipeline": cold(cli),
            },
        )
        report(
            f"cold, median of {args.cold_runs} (new process: embedded server start-up "
            "in both prefect and pipeline)",
            cold_times,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
