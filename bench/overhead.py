"""What cloudtrain adds on top of Prefect: the local pipeline against its baselines.

Measured side by side in one run, alternating, median of N:

  script     the trivial training script run bare (python train.py)
  prefect    a bare Prefect flow of five no-op tasks
  pipeline   cloudtrain's local pipeline (five stages) training the same script

Warm: all three in this process after the embedded Prefect server is up.
Cold: `cloudtrain run --no-server-reuse` as a new process against `python bare_flow.py`
(each starts Prefect's embedded server, as a first command did before the reused server).
Reused server (`cloudtrain run`'s default without PREFECT_API_URL; the bench's own
CLOUDTRAIN_HOME in its tmp folder, stopped at the end):
  first     `cloudtrain run` starting the server (stopped before each, not measured)
            against `cloudtrain run --no-server-reuse` (the embedded server), alternating;
  second    `cloudtrain run` on the warm server against `python bare_flow.py` pointed at
            the same server (PREFECT_API_URL), each a new process, alternating.

Targets: pipeline - prefect - script < 2 s (what cloudtrain adds to Prefect's start-up);
reused: the second run within 1.5 s of the bare flow run and under 3 s, the first run no
slower than the embedded cold run. No threshold is asserted: it prints the numbers.
"""

from __future__ import annotations

import argparse
import json
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


def medians_and_spread(
    runs: int, fns: dict[str, Callable[[], object]], before: Callable[[], object] | None = None
) -> tuple[dict[str, float], dict[str, str]]:
    """As ``median_of`` (``before`` runs unmeasured ahead of each round), with min/max."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        if before is not None:
            before()
        for name, fn in fns.items():
            samples[name].append(timed(fn))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    spread = {name: f"min {min(v):.2f}, max {max(v):.2f}" for name, v in samples.items()}
    return medians, spread


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
    parser.add_argument("--reuse-runs", type=int, default=5, help="second runs (0 to skip)")
    parser.add_argument("--reuse-first-runs", type=int, default=2, help="first runs")
    parser.add_argument("--skip-warm", action="store_true", help="only the new processes")
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

    # every command uses the bench's own CLOUDTRAIN_HOME, never the user's local server
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["CLOUDTRAIN_HOME"] = str(work / "cloudtrain-home")
    cli = [str(Path(sys.executable).with_name("cloudtrain")), "run", str(config_path), "--force"]
    if not Path(cli[0]).exists():
        cli = [sys.executable, "-m", "cloudtrain.cli", "run", str(config_path), "--force"]

    def new_process(command: list[str], **extra: str) -> Callable[[], None]:
        return lambda: subprocess.run(
            command, cwd=work, env={**env, **extra}, check=True, capture_output=True
        )

    if not args.skip_warm:
        warm(args.runs, work, config_path, run_script)
    if args.cold_runs:
        cold_times = median_of(
            args.cold_runs,
            {
                "script": run_script,
                "prefect": new_process([sys.executable, str(work / "bare_flow.py")]),
                "pipeline": new_process([*cli, "--no-server-reuse"]),
            },
        )
        report(
            f"cold, median of {args.cold_runs} (new process: embedded server start-up "
            "in both prefect and pipeline)",
            cold_times,
        )
    if args.reuse_runs:
        server = [sys.executable, "-m", "cloudtrain.cli", "server"]
        try:
            reused(args, cli, server, new_process, run_script, work)
        finally:
            new_process([*server, "stop"])()
    return 0


def warm(runs: int, work: Path, config_path: Path, run_script: Callable[[], None]) -> None:
    """All three in this process, after the embedded Prefect server is up."""
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
    times = median_of(
        runs,
        {
            "script": run_script,
            "prefect": bare,
            "pipeline": lambda: local_training(config=config, force=True),
        },
    )
    report(f"warm, median of {runs} (Prefect server already up)", times)


def reused(
    args: argparse.Namespace,
    cli: list[str],
    server: list[str],
    new_process: Callable[..., Callable[[], None]],
    run_script: Callable[[], None],
    work: Path,
) -> None:
    """The reused local server: the first run (starting it), then second runs."""
    first, spread = medians_and_spread(
        args.reuse_first_runs,
        {"first": new_process(cli), "embedded": new_process([*cli, "--no-server-reuse"])},
        before=new_process([*server, "stop"]),
    )
    print(f"\nreused server, first run (starting it), median of {args.reuse_first_runs}")
    for name, value in first.items():
        print(f"  {name:9} {value:7.3f} s  ({spread[name]})")
    ratio = first["first"] / first["embedded"]
    print(f"  first/embedded {ratio:.2f}x (target <= 1.0x: {'met' if ratio <= 1 else 'NOT met'})")

    new_process([*server, "start"])()  # up already; this only makes sure
    status = subprocess.run(
        [*server, "status", "--json"],
        env={**os.environ, "CLOUDTRAIN_HOME": str(work / "cloudtrain-home")},
        capture_output=True,
        text=True,
        check=True,
    )
    api_url = json.loads(status.stdout)["api_url"]
    bare_flow = [sys.executable, str(work / "bare_flow.py")]
    times, spread = medians_and_spread(
        args.reuse_runs,
        {
            "script": run_script,
            "prefect": new_process(bare_flow, PREFECT_API_URL=api_url),
            "pipeline": new_process(cli),
        },
    )
    print(f"\nreused server, second run (new processes, server warm), median of {args.reuse_runs}")
    for name, value in times.items():
        print(f"  {name:9} {value:7.3f} s  ({spread[name]})")
    gap = times["pipeline"] - times["prefect"]
    print(
        f"  cloudtrain run - bare flow run: {gap:+.3f} s (target <= 1.5 s: "
        f"{'met' if gap <= 1.5 else 'NOT met'}); cloudtrain run {times['pipeline']:.3f} s "
        f"(target < 3 s: {'met' if times['pipeline'] < 3 else 'NOT met'}); "
        f"pipeline/prefect {times['pipeline'] / times['prefect']:.2f}x"
    )


if __name__ == "__main__":
    sys.exit(main())
