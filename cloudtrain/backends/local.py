"""The local backend: every stage for real on this machine, spot reclaims simulated.

The script runs in a subprocess of this interpreter with the full script contract.
A spot reclaim is simulated the way SageMaker does it (SIGTERM to the process group,
then SIGKILL after ``local.grace_period``), triggered deterministically by
``local.spot_interruptions``, so checkpoint/resume logic can be tested before paying
for spot capacity.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain import contract
from cloudtrain.backoff import Backoff
from cloudtrain.config import FRAMEWORKS, PipelineConfig, is_uri
from cloudtrain.errors import BackendError, ConfigError, UnsupportedError
from cloudtrain.recovery import Outcome
from cloudtrain.results import (
    AttemptSpec,
    AttemptStatus,
    ChannelData,
    ComputeTarget,
    ModelArtifacts,
    ResolvedEnvironment,
)
from cloudtrain.store import ContentStore, tar_folder
from cloudtrain.training import strategy_for

if TYPE_CHECKING:
    import pandas as pd

    from cloudtrain.results import TrainingResult

# Local polling is cheap: 50 ms at first, then at most every 0.5 s.
LOCAL_POLL_INITIAL_SECONDS = 0.05
LOCAL_POLL_MAX_SECONDS = 0.5
LOG_TAIL_LINES = 5
WATCH_TICK_SECONDS = 0.05  # how often the watchdog checks deadlines

_WHERE_ELSE = {
    "image": "bring-your-own-container images run on cloud aws (SageMaker) or azure "
    "(Azure ML); the local backend runs the script in this interpreter, with no containers",
    "builtin": "SageMaker built-in algorithms run only on cloud aws",
    "curated": "Azure ML curated environments run only on cloud azure; "
    "use environment.framework to run the script locally",
}


class LocalBackend:
    """Runs every stage on this machine under ``local.root``."""

    cloud = "local"

    def __init__(self, root: Path, python: str = sys.executable) -> None:
        self.root = root
        self.python = python
        self.store = ContentStore(root)
        self._changed = threading.Event()  # set on each output line and when an attempt ends
        self.poll = Backoff(
            LOCAL_POLL_INITIAL_SECONDS, LOCAL_POLL_MAX_SECONDS, sleep=self._wait_for_change
        )
        self._attempts: dict[str, _LocalAttempt] = {}

    def _wait_for_change(self, seconds: float) -> None:
        """Poll sleep that wakes early on new output, so logs stream and ends show at once."""
        self._changed.wait(seconds)
        self._changed.clear()

    @classmethod
    def from_config(cls, config: PipelineConfig) -> LocalBackend:
        return cls(config.local.root)

    # -- validate and plan (pure) -------------------------------------------------

    def validate(self, config: PipelineConfig) -> None:
        self._check_compute(config)
        kind = config.environment.kind
        if kind in _WHERE_ELSE:
            raise UnsupportedError(f"environment.{kind}", _WHERE_ELSE[kind])
        for channel, location in config.data.items():
            if is_uri(location):
                raise UnsupportedError(
                    f"data.{channel}",
                    f"{location} is a cloud URI; the local backend reads local files "
                    "and folders (s3:// needs cloud aws, azureml: needs cloud azure)",
                )
        self._framework(config)

    @staticmethod
    def _check_compute(config: PipelineConfig) -> None:
        """One process on this machine: the one thing local compute cannot honour."""
        if config.compute.instance_count != 1:
            raise UnsupportedError(
                "compute.instance_count",
                f"the local backend runs one process on this machine, so it must be 1 "
                f"(got {config.compute.instance_count}); use cloud aws or azure to "
                "train on several machines",
            )

    def plan(self, config: PipelineConfig) -> dict[str, Any]:
        run_dir = self._run_dir(config, "<run-id>")
        attempt_dir = run_dir / "attempts" / "<n>"
        channels = {name: str(self.store.channels / "<sha256>") for name in config.data}
        paths = contract.ScriptPaths(
            channels=channels,
            model_dir=attempt_dir / "model",
            output_data_dir=attempt_dir / "output" / "data",
            checkpoint_dir=run_dir / "checkpoints",
        )
        strategy = strategy_for(config)
        attempts = []
        for number in range(1, config.retry.max_attempts + 1):
            spot = strategy.spot_for(number)
            trigger = _trigger_for(config, number, spot)
            attempts.append(
                {
                    "number": number,
                    "capacity": "spot" if spot else "on-demand",
                    "simulated_reclaim": _describe_trigger(trigger),
                }
            )
        return {
            "cloud": "local",
            "data": {
                name: {"source": source, "store": channels[name]}
                for name, source in config.data.items()
            },
            "compute": {"instance_type": config.compute.instance_type, "processes": 1},
            "environment": {
                "framework": config.environment.framework,
                "framework_version": config.environment.framework_version,
                "interpreter": self.python,
            },
            "command": self._command(config),
            "working_dir": str(config.code.source_dir),
            "environment_variables": contract.script_environment(
                config.hyperparameters,
                paths,
                instance_type=config.compute.instance_type,
                attempt=1,
                spot=config.compute.spot,
                job_name=f"{config.name}-<run-id>-a<n>",
            ),
            "stopping_condition": {
                "max_run_seconds": config.compute.max_run,
                "grace_period_seconds": config.local.grace_period,
            },
            "retry": {
                "strategy": config.retry.strategy,
                "max_attempts": config.retry.max_attempts,
                "on_demand_fallback": config.retry.on_demand_fallback,
            },
            "metrics": {name: contract.metric_regex(name) for name in config.metrics},
            "attempts": attempts,
        }

    # -- the five stages ------------------------------------------------------------

    def upload_data(
        self,
        config: PipelineConfig,
        dataframes: Mapping[str, pd.DataFrame] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> dict[str, ChannelData]:
        result: dict[str, ChannelData] = {}
        sources: dict[str, Any] = {**config.data, **(dataframes or {})}
        for channel, source in sources.items():
            key = f"{config.name}/{channel}"
            if isinstance(source, str):
                stored = self.store.put_path(key, Path(source))
                described = source
            else:
                stored = self.store.put_dataframe(key, source)
                described = f"DataFrame {source.shape[0]}x{source.shape[1]}"
            result[channel] = ChannelData(
                channel=channel,
                uri=str(stored.path),
                digest=stored.digest,
                files=stored.files,
                bytes=stored.bytes,
                copied_files=stored.copied_files,
                copied_bytes=stored.copied_bytes,
                unchanged=stored.unchanged,
                source=described,
            )
        return result

    def ensure_compute(self, config: PipelineConfig) -> ComputeTarget:
        self._check_compute(config)
        return ComputeTarget(
            name="local",
            instance_type=config.compute.instance_type,
            instance_count=1,
            details={
                "cpus": os.cpu_count() or 1,
                "python": self.python,
                "note": f"{config.compute.instance_type} is simulated by this machine",
            },
        )

    def resolve_environment(
        self, config: PipelineConfig, compute: ComputeTarget
    ) -> ResolvedEnvironment:
        framework, installed, warnings = self._framework(config)
        return ResolvedEnvironment(
            kind="framework",
            uri=self.python,
            description=f"{framework} {installed} on Python "
            f"{'.'.join(map(str, sys.version_info[:3]))} ({self.python})",
            warnings=tuple(warnings),
        )

    def checkpoint_location(self, config: PipelineConfig, run_id: str) -> str:
        return str(self._run_dir(config, run_id) / "checkpoints")

    def submit_attempt(self, config: PipelineConfig, spec: AttemptSpec) -> str:
        existing = self._attempts.get(spec.job_name)
        if existing is not None:  # reattach
            return spec.job_name
        attempt_dir = self._run_dir(config, spec.run_id) / "attempts" / str(spec.number)
        if attempt_dir.exists():
            shutil.rmtree(attempt_dir)  # a fresh container, as on SageMaker
        paths = contract.ScriptPaths(
            channels=dict(spec.channels),
            model_dir=attempt_dir / "model",
            output_data_dir=attempt_dir / "output" / "data",
            checkpoint_dir=Path(spec.checkpoint_uri),
        )
        for folder in (paths.model_dir, paths.output_data_dir, paths.checkpoint_dir):
            Path(folder).mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **contract.script_environment(
                config.hyperparameters,
                paths,
                instance_type=config.compute.instance_type,
                attempt=spec.number,
                spot=spec.spot,
                job_name=spec.job_name,
            ),
            "PYTHONUNBUFFERED": "1",
        }
        command = self._command(config)
        attempt = _LocalAttempt(
            command=command,
            cwd=config.code.source_dir,
            env=env,
            log_path=attempt_dir / "log.txt",
            checkpoint_dir=Path(spec.checkpoint_uri),
            metrics=contract.MetricParser(config.metrics),
            max_run=config.compute.max_run,
            grace_period=config.local.grace_period,
            trigger=_trigger_for(config, spec.number, spec.spot),
            changed=self._changed,
        )
        attempt.start()
        self._attempts[spec.job_name] = attempt
        return spec.job_name

    def describe_attempt(self, handle: str) -> AttemptStatus:
        return self._attempt(handle).status()

    def read_logs(self, handle: str) -> list[str]:
        return self._attempt(handle).new_lines()

    def stop_attempt(self, handle: str) -> None:
        self._attempt(handle).stop()

    def collect_artifacts(self, config: PipelineConfig, result: TrainingResult) -> ModelArtifacts:
        final = result.final
        if final is None or final.outcome is not Outcome.SUCCEEDED:
            raise BackendError("no attempt succeeded, so there is no model to collect")
        run_dir = self._run_dir(config, result.run_id)
        attempt_dir = run_dir / "attempts" / str(final.number)
        model_dir = run_dir / "model"
        if model_dir.exists():
            shutil.rmtree(model_dir)
        shutil.copytree(attempt_dir / "model", model_dir)
        archive = run_dir / "model.tar.gz"
        tar_folder(model_dir, archive)
        output_dir = attempt_dir / "output" / "data"
        if any(output_dir.iterdir()):
            tar_folder(output_dir, run_dir / "output.tar.gz")
        records = run_dir / "attempts.json"
        records.write_text(json.dumps(result.to_dict(), indent=2))
        (run_dir / "metrics.json").write_text(json.dumps(result.metrics, indent=2))
        return ModelArtifacts(
            model_uri=str(model_dir),
            model_archive=str(archive),
            local_model_dir=model_dir,
            metrics=result.metrics,
            links={"run folder": str(run_dir)},
            records=str(records),
        )

    # -- helpers ----------------------------------------------------------------------

    def _command(self, config: PipelineConfig) -> list[str]:
        """As SageMaker script mode runs it: the entry point with --name value arguments."""
        return [
            self.python,
            "-u",
            config.code.entry_point,
            *contract.hyperparameter_args(config.hyperparameters),
        ]

    def _run_dir(self, config: PipelineConfig, run_id: str) -> Path:
        return self.root / "runs" / config.name / run_id

    def _attempt(self, handle: str) -> _LocalAttempt:
        try:
            return self._attempts[handle]
        except KeyError:
            raise BackendError(f"no local attempt named {handle!r}") from None

    def _framework(self, config: PipelineConfig) -> tuple[str, str, list[str]]:
        """Check that the framework is importable here; warn when its version differs."""
        framework = config.environment.framework
        assert framework is not None  # validate() refused the other kinds
        distribution = FRAMEWORKS[framework]
        module = {"scikit-learn": "sklearn"}.get(distribution, distribution)
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                "environment.framework",
                f"{framework} is not installed for {self.python}: pip install {distribution}",
            )
        installed = importlib.metadata.version(distribution)
        wanted = config.environment.framework_version
        warnings = []
        if wanted and not _same_release(wanted, installed):
            warnings.append(
                f"environment.framework_version is {wanted}, but this interpreter has "
                f"{framework} {installed}; the cloud image will have {wanted}"
            )
        return framework, installed, warnings


def _same_release(wanted: str, installed: str) -> bool:
    """1.2 matches 1.2.x; 1.2.1 matches only 1.2.1."""
    wanted_parts = wanted.split("-")[0].split(".")
    return installed.split(".")[: len(wanted_parts)] == wanted_parts


def _trigger_for(config: PipelineConfig, number: int, spot: bool) -> float | str | None:
    """Entry N of local.spot_interruptions reclaims attempt N, if it runs on spot."""
    triggers = config.local.spot_interruptions
    return triggers[number - 1] if spot and number <= len(triggers) else None


def _describe_trigger(trigger: float | str | None) -> str | None:
    if trigger is None:
        return None
    if isinstance(trigger, str):
        return f"when the output matches {trigger!r}"
    return f"{trigger:g} s after start"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _LocalAttempt:
    """One script process, its output reader and its watchdog."""

    command: list[str]
    cwd: Path
    env: dict[str, str]
    log_path: Path
    checkpoint_dir: Path
    metrics: contract.MetricParser
    max_run: float
    grace_period: float
    trigger: float | str | None
    changed: threading.Event
    lines: list[str] = field(default_factory=list)
    _read: int = 0
    _outcome: Outcome | None = None
    _reason: str = ""
    _signalled: tuple[Outcome, str] | None = None
    _started_at: datetime | None = None
    _ended_at: datetime | None = None
    _resumed_from: int = 0
    _signalled_at: float = 0.0

    def start(self) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._resumed_from = sum(1 for p in self.checkpoint_dir.rglob("*") if p.is_file())
        self._started_at = _now()
        self._start_monotonic = time.monotonic()
        self._log = self.log_path.open("w", buffering=1)
        try:
            self._process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                errors="replace",
                start_new_session=True,  # its own process group, signalled as one
            )
        except OSError as exc:
            self._log.close()
            raise BackendError(f"cannot start {self.command[0]}: {exc}") from exc
        self._pattern = re.compile(self.trigger) if isinstance(self.trigger, str) else None
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._reader.start()
        self._watchdog.start()

    # -- threads --------------------------------------------------------------------

    def _read_output(self) -> None:
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            line = raw.rstrip("\n")
            self.metrics.feed(line)
            self._append(line)
            if self._pattern is not None and self._pattern.search(line):
                self._pattern = None
                self._signal(
                    Outcome.INTERRUPTED,
                    f"simulated spot reclaim: the output matched {self.trigger!r}",
                )

    def _watch(self) -> None:
        """Enforce max_run, time-triggered reclaims and the SIGKILL after the grace period."""
        run_deadline = self._start_monotonic + self.max_run
        reclaim_at = (
            self._start_monotonic + float(self.trigger)
            if isinstance(self.trigger, int | float)
            else None
        )
        while True:
            try:
                self._process.wait(timeout=WATCH_TICK_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if self._signalled is None:
                if reclaim_at is not None and now >= reclaim_at:
                    self._signal(
                        Outcome.INTERRUPTED,
                        f"simulated spot reclaim {reclaim_at - self._start_monotonic:g} s "
                        "after start",
                    )
                elif now >= run_deadline:
                    self._signal(Outcome.TIMED_OUT, f"compute.max_run ({self.max_run:g} s) reached")
            elif now >= self._signalled_at + self.grace_period:
                self._kill(signal.SIGKILL)
        self._reader.join()
        self._log.close()
        self._finish(self._process.returncode)

    # -- signals and state --------------------------------------------------------------

    def _signal(self, outcome: Outcome, reason: str) -> None:
        """SIGTERM the process group once; the watchdog sends SIGKILL after the grace period."""
        with self._lock:
            if self._signalled is not None or self._process.poll() is not None:
                return
            self._signalled = (outcome, reason)
            self._signalled_at = time.monotonic()
        self._append(f"[cloudtrain] {reason}: SIGTERM now, SIGKILL in {self.grace_period:g} s")
        self._kill(signal.SIGTERM)

    def _append(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)
            self._log.write(line + "\n")
        self.changed.set()

    def _kill(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self._process.pid, sig)
        except ProcessLookupError:
            pass

    def _finish(self, returncode: int) -> None:
        if self._signalled is not None:
            outcome, reason = self._signalled
        elif returncode == 0:
            outcome, reason = Outcome.SUCCEEDED, "the script exited 0"
        else:
            outcome, reason = Outcome.FAILED, self._failure_reason(returncode)
        with self._lock:
            self._outcome, self._reason = outcome, reason
            self._ended_at = _now()
        self._done.set()
        self.changed.set()

    def _failure_reason(self, returncode: int) -> str:
        if returncode < 0:
            cause = f"killed by {signal.Signals(-returncode).name}"
        else:
            cause = f"exit code {returncode}"
        tail = [line for line in self.lines if line.strip()][-LOG_TAIL_LINES:]
        return f"the script failed ({cause})" + (": " + " | ".join(tail) if tail else "")

    def status(self) -> AttemptStatus:
        with self._lock:
            return AttemptStatus(
                outcome=self._outcome,
                reason=self._reason,
                metrics=self.metrics.final,
                started_at=self._started_at,
                ended_at=self._ended_at,
                billable_seconds=(
                    (self._ended_at - self._started_at).total_seconds()
                    if self._ended_at and self._started_at
                    else None
                ),
                resumed_from=self._resumed_from,
            )

    def new_lines(self) -> list[str]:
        with self._lock:
            lines, self._read = self.lines[self._read :], len(self.lines)
        return lines

    def stop(self) -> None:
        """Stop as a person would: SIGTERM, then SIGKILL after the grace period; wait."""
        self._signal(Outcome.STOPPED, "stopped: the orchestrator was cancelled or timed out")
        if not self._done.wait(self.grace_period + 5):
            self._kill(signal.SIGKILL)
            self._done.wait(5)
