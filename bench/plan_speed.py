"""How long a user waits for `cloudtrain plan`, per cloud, against bare interpreter baselines.

Each command runs as a new process (what a user's shell does), side by side in one run,
alternating (every round runs each command once, in a rotated order, so drift and other
load hit all alike), median of N rounds:

  python -c pass            the interpreter alone
  import prefect            python -c "import prefect" (what a `cloudtrain run` pays first)
  sagemaker image_uris      python -c "from sagemaker.core import image_uris" (what
                            `plan --cloud aws` paid before it read the SDK's tables itself)
  cloudtrain --help
  plan local                the digits example on this machine
  plan aws framework        the same on SageMaker: sklearn 1.2 (script mode)
  plan aws builtin          builtin: kmeans
  plan aws own image        image: an ECR URI
  plan aws huggingface      Hugging Face 4.56 on ml.g5.xlarge (still the SDK's own rule)
  plan azure                Azure ML (azure-ai-ml's serializers, ~1.3 s of import)

With ``--baseline DIR`` (another checkout, e.g. ``git worktree add /tmp/before <commit>``),
that checkout's ``plan aws framework`` and ``plan aws builtin`` run in the same rounds.

Target (issue 12): every `plan aws` but Hugging Face under 1.5 s on a 2-core machine. No
threshold is asserted: it prints the wall and CPU seconds, the spread and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

TARGET_SECONDS = 1.5
ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits"
AWS = {"role": "arn:aws:iam::123456789012:role/SageMakerRole", "bucket": "my-bucket"}
AZURE = {
    "subscription_id": "00000000-0000-0000-0000-000000000000",
    "resource_group": "my-rg",
    "workspace": "my-workspace",
    "compute": "cpu-cluster",
}
ECR_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/train:1.0"


def cloudtrain() -> list[str]:
    """The console script beside this interpreter, as a user runs it."""
    script = Path(sys.executable).with_name("cloudtrain")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cloudtrain.cli"]


def plan(cloud: str, *sets: str) -> list[str]:
    config = str(DIGITS / "cloudtrain.yaml")
    if cloud == "local":
        return [*cloudtrain(), "plan", config]
    section = {"aws": AWS, "azure": AZURE}[cloud]
    overrides = [f"{cloud}={json.dumps(section)}", "local.spot_interruptions=[]", *sets]
    return [*cloudtrain(), "plan", config, "--cloud", cloud] + [
        arg for value in overrides for arg in ("--set", value)
    ]


def commands() -> dict[str, list[str]]:
    python = sys.executable
    return {
        "python -c pass": [python, "-c", "pass"],
        "import prefect": [python, "-c", "import prefect"],
        "sagemaker image_uris": [python, "-c", "from sagemaker.core import image_uris"],
        "cloudtrain --help": [*cloudtrain(), "--help"],
        "plan local": plan("local"),
        "plan aws framework": plan("aws"),
        "plan aws builtin": plan("aws", 'environment={"builtin": "kmeans"}'),
        "plan aws own image": plan("aws", f"environment={json.dumps({'image': ECR_IMAGE})}"),
        "plan aws huggingface": plan(
            "aws",
            'environment={"framework": "huggingface", "framework_version": "4.56"}',
            "compute.instance_type=ml.g5.xlarge",
        ),
        "plan azure": plan("azure", "compute.instance_type=Standard_DS3_v2"),
    }


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one new process; CPU time is what other load on a
    shared machine changes least."""
    cpu, started = children_cpu(), time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=cwd)
    elapsed, used = time.perf_counter() - started, children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="processes per command (median)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of cloudtrain (e.g. before this change): its `plan aws "
        "framework` and `plan aws builtin` run too, on this checkout's example, side by side",
    )
    args = parser.parse_args()
    if not (DIGITS / "data" / "train.csv").exists():
        subprocess.run([sys.executable, str(DIGITS / "prepare_data.py")], check=True)
    with tempfile.TemporaryDirectory(prefix="cloudtrain-bench-") as home:
        env = {
            **os.environ,
            "PREFECT_HOME": home,  # never the user's ~/.prefect
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        todo = {name: (argv, env, ROOT) for name, argv in commands().items()}
        if args.baseline:
            # `-m cloudtrain.cli` run in the baseline's folder puts its copy first on the
            # path (the folder a module is run from comes before PYTHONPATH)
            other = args.baseline.resolve()
            for name in ("plan aws framework", "plan aws builtin"):
                argv = todo[name][0]
                module = [sys.executable, "-m", "cloudtrain.cli", *argv[argv.index("plan") :]]
                baseline_env = {**env, "PYTHONPATH": str(other), "PYTHONDONTWRITEBYTECODE": "1"}
                todo[f"{name} (baseline)"] = (module, baseline_env, other)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in todo}
        names = list(todo)
        run_once(*todo["plan aws framework"])  # warm the file cache once, not measured
        for round_ in range(args.rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(run_once(*todo[name]))
    report(samples, args.rounds)


def report(samples: dict[str, list[tuple[float, float]]], rounds: int) -> None:
    wall = {name: statistics.median(w for w, _ in values) for name, values in samples.items()}
    cpu = {name: statistics.median(c for _, c in values) for name, values in samples.items()}
    bare = wall["python -c pass"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"bench/plan_speed.py, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, median of {rounds} new processes per command, "
        f"alternating (load average at the end {load:.1f})"
    )
    width = max(map(len, samples))
    print(f"  {'command':{width}} {'wall':>8} {'min':>7} {'max':>7} {'x python':>9} {'cpu':>7}")
    for name, values in samples.items():
        walls = [w for w, _ in values]
        print(
            f"  {name:{width}} {wall[name]:7.3f}s {min(walls):6.3f}s {max(walls):6.3f}s "
            f"{wall[name] / bare:8.1f}x {cpu[name]:6.3f}s"
        )
    for name in [name for name in wall if name.endswith(" (baseline)")]:
        now = name.removesuffix(" (baseline)")
        print(
            f"  {now}: {wall[name]:.3f} s -> {wall[now]:.3f} s wall "
            f"({wall[name] / wall[now]:.2f}x faster), {cpu[name]:.3f} s -> {cpu[now]:.3f} s CPU"
        )
    aws = [
        name
        for name in wall
        if name.startswith("plan aws") and "huggingface" not in name and "baseline" not in name
    ]
    slowest = max(aws, key=wall.__getitem__)
    verdict = "met" if wall[slowest] < TARGET_SECONDS else "NOT met"
    print(
        f"  target: plan --cloud aws under {TARGET_SECONDS:g} s: {verdict} "
        f"(slowest: {slowest}, {wall[slowest]:.3f} s wall, {cpu[slowest]:.3f} s CPU; "
        f"{wall[slowest] / wall['plan local']:.2f}x the local plan, "
        f"{wall['sagemaker image_uris'] / wall[slowest]:.1f}x faster than the SDK import alone)"
    )


if __name__ == "__main__":
    main()
