"""The local backend: every stage for real on this machine, spot reclaims simulated.

The script runs in a subprocess of this interpreter with the full script contract.
A spot reclaim is simulated the way SageMaker does it (SIGTERM to the process group,
then SIGKILL after ``local.grace_period``), triggered deterministically by
``local.spot_interruptions``, so checkpoint/resume logic can be tested before paying
for spot capacity. Several hosts (``compute.instance_count``) or a
``compute.distribution`` run the script once per rank under ``cloudtrain/launcher.py``,
with the variables a distributed script reads; one host without one runs it alone.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain import contract, jsonout, launcher, tracking
from cloudtrain.backend import LogSink, StagePlan
from cloudtrain.backends.local.folder_store import FolderStore
from cloudtrain.backends.local.process import LocalAttempt
from cloudtrain.backends.local.settings import LocalConfig
from cloudtrain.backoff import Backoff
from cloudtrain.config import FRAMEWORKS, PipelineConfig, is_uri
from cloudtrain.errors import BackendError, ConfigError, Problems, UnsupportedError
from cloudtrain.recovery import Outcome
from cloudtrain.results import (
    AttemptSpec,
    AttemptStatus,
    ChannelData,
    ComputeTarget,
    ModelArtifacts,
    ResolvedEnvironment,
    TrainingResult,
)
from cloudtrain.secrets import KINDS, is_secret_name, redactor_for
from cloudtrain.store import SKIPPED_LINK, ContentStore, extract_archive, tar_folder
from cloudtrain.trials import make_trials

if TYPE_CHECKING:
    import pandas as pd

#: Input modes the local backend serves by reading the source where it is: the script
#: gets the folder itself (read-only is not enforced here, as it is by the clouds' mounts).
IN_PLACE_MODES = frozenset({"mount", "fastfile"})

# Local polling is cheap: 50 ms at first, then at most every 0.5 s.
LOCAL_POLL_INITIAL_SECONDS = 0.05
LOCAL_POLL_MAX_SECONDS = 0.5

_WHERE_ELSE = {
    "image": "bring-your-own-container images run on cloud aws (SageMaker) or azure "
    "(Azure ML); the local backend runs the script in this interpreter, with no containers",
    "builtin": "SageMaker built-in algorithms run only on cloud aws",
    "curated": "Azure ML curated environments run only on cloud azure; "
    "use environment.framework to run the script locally",
}


#: The most processes a local job may start (instance_count x processes_per_host): enough
#: to rehearse a few nodes of a few ranks each, not so many that this machine stalls.
MAX_LOCAL_PROCESSES = 32
#: Where a multi-process attempt's launcher records the rank that failed.
LAUNCHER_STATUS = "launcher-status.json"

# Linux refuses to start a process when one argv or environment string is longer than
# MAX_ARG_STRLEN (32 pages); the whole hyperparameter set travels as one string, SM_HPS.
MAX_ARG_STRLEN = 32 * 4096


def _process_start_problems(config: PipelineConfig) -> list[tuple[str, str]]:
    """What would make the script's process fail to start (E2BIG), found before any run."""
    hps = config.hyperparameters
    problems: list[tuple[str, str]] = []
    whole = len(("SM_HPS=" + json.dumps(dict(hps))).encode())
    if whole >= MAX_ARG_STRLEN:
        problems.append(
            (
                "hyperparameters",
                f"{whole:,} bytes as the SM_HPS variable the script receives; a process on "
                f"this machine cannot be given one string of {MAX_ARG_STRLEN:,} bytes or "
                "more: pass large inputs as a data channel",
            )
        )
    # Each value travels three times: in SM_HPS, as --name value and as SM_HP_<NAME>.
    limit = os.sysconf("SC_ARG_MAX") if hasattr(os, "sysconf") else 0
    total = sum(len(k) + len(v) + 2 for k, v in os.environ.items()) + 3 * whole
    if limit > 0 and total >= limit:
        problems.append(
            (
                "hyperparameters",
                f"with this environment the script's arguments and variables would take "
                f"{total:,} bytes, over this machine's {limit:,}: pass large inputs as a "
                "data channel",
            )
        )
    return problems


def _secret_looking_variables(config: PipelineConfig) -> list[str]:
    """The SM_HP_* variables that carry secret-looking hyperparameters."""
    return [f"SM_HP_{name.upper()}" for name in config.hyperparameters if is_secret_name(name)]


def local_settings(config: PipelineConfig) -> LocalConfig:
    """The ``local:`` section, or its defaults when the config has none."""
    return config.section("local", LocalConfig) or LocalConfig()


class LocalBackend:
    """Runs every stage on this machine under ``work_dir``."""

    name = "local"
    settings = LocalConfig
    description = (
        "Train on this machine: every stage for real, the same script contract as "
        "SageMaker and Azure ML, spot reclaims simulated (local.spot_interruptions) so "
        "checkpoint/resume logic is tested before paying for spot capacity."
    )

    #: Every kind of secret reference is resolved here and put in the script's environment.
    secret_kinds: tuple[str, ...] = KINDS

    #: Seconds an attempt takes to start, the budget's default restart overhead: this
    #: interpreter starting and importing the script's libraries (about a second for
    #: scikit-learn on this machine), with room for a busy machine.
    typical_start_seconds = 5.0

    def __init__(self, root: Path, python: str = sys.executable) -> None:
        self.root = root
        self.python = python
        self.store = ContentStore(root)
        self._changed = threading.Event()  # set on each output line and when an attempt ends
        self.poll = Backoff(
            LOCAL_POLL_INITIAL_SECONDS, LOCAL_POLL_MAX_SECONDS, sleep=self._wait_for_change
        )
        self._attempts: dict[str, LocalAttempt] = {}
        self._outages: dict[str, AttemptStatus] = {}  # attempts a simulated outage ended

    def _wait_for_change(self, seconds: float) -> None:
        """Poll sleep that wakes early on new output, so logs stream and ends show at once."""
        self._changed.wait(seconds)
        self._changed.clear()

    @classmethod
    def from_config(cls, config: PipelineConfig) -> LocalBackend:
        return cls(config.work_dir)

    # -- pure -----------------------------------------------------------------------

    def validate(self, config: PipelineConfig) -> None:
        problems = Problems()
        with problems.check():
            self._check_compute(config)
        kind = config.environment.kind
        if kind in _WHERE_ELSE:
            problems.add(UnsupportedError(f"environment.{kind}", _WHERE_ELSE[kind]))
        for channel, location in config.data.items():
            if is_uri(location):
                problems.add(
                    UnsupportedError(
                        f"data.{channel}",
                        f"{location} is a cloud URI; the local backend reads local files "
                        "and folders (s3:// needs cloud aws, azureml: needs cloud azure)",
                    )
                )
        for channel, mode in config.input_modes.items():
            if mode == "pipe":
                problems.add(
                    UnsupportedError(
                        f"input_modes.{channel}",
                        "pipe is SageMaker's FIFO input (cloud aws); locally a channel is "
                        "copied (download) or read in place (mount, fastfile)",
                    )
                )
        if kind == "framework":
            with problems.check():
                self._framework(config)
        for field, message in _process_start_problems(config):
            problems.add(ConfigError(field, message))
        problems.raise_if_any()

    @staticmethod
    def _check_compute(config: PipelineConfig) -> None:
        """Every host and process of the job runs on this machine: a bounded number."""
        hosts = config.compute.instance_count
        per_host = config.compute.distribution.processes_per_host
        if hosts * per_host > MAX_LOCAL_PROCESSES:
            field = (
                "compute.instance_count"
                if per_host == 1
                else "compute.distribution.processes_per_host"
            )
            raise UnsupportedError(
                field,
                f"the local backend runs every process of the job on this machine, at most "
                f"{MAX_LOCAL_PROCESSES} (got compute.instance_count {hosts} x "
                f"processes_per_host {per_host} = {hosts * per_host}); use cloud aws or "
                "azure for more",
            )
        if config.sweep is not None:  # a sweep's trials run here together
            at_once = min(config.sweep.max_parallel, len(make_trials(config.sweep)))
            if at_once * hosts * per_host > MAX_LOCAL_PROCESSES:
                raise UnsupportedError(
                    "sweep.max_parallel",
                    f"the local backend runs the trials of a sweep on this machine, at most "
                    f"{MAX_LOCAL_PROCESSES} processes (got {at_once} trials at once x "
                    f"{hosts * per_host} processes = {at_once * hosts * per_host}); lower "
                    "sweep.max_parallel, or use cloud aws or azure",
                )

    def plan_stages(self, config: PipelineConfig) -> StagePlan:
        channels = {
            name: str(self._planned_folder(config, name, Path(source)))
            if config.input_mode(name) in IN_PLACE_MODES
            else str(self.store.channels / "<sha256>")
            for name, source in config.data.items()
        }
        return StagePlan(
            channels=channels,
            compute=self._compute(config),
            environment=ResolvedEnvironment(
                kind="framework", uri=self.python, description=f"this interpreter, {self.python}"
            ),
            requests={
                "data": {
                    name: {"source": source, "mode": "mount", "reads": channels[name]}
                    if config.input_mode(name) in IN_PLACE_MODES
                    else {"source": source, "store": channels[name]}
                    for name, source in config.data.items()
                },
                "compute": {
                    "instance_type": config.compute.instance_type,
                    "hosts": config.compute.instance_count,
                    "processes": _processes(config),
                },
                "environment": {
                    "framework": config.environment.framework,
                    "framework_version": config.environment.framework_version,
                    "interpreter": self.python,
                },
            },
        )

    def attempt_request(self, config: PipelineConfig, spec: AttemptSpec) -> dict[str, Any]:
        """The process the attempt starts: command, folder, environment, limits."""
        paths = self._paths(config, spec)
        trigger = _trigger_for(config, spec.number, spec.spot)
        environment = contract.script_environment(
            config.hyperparameters,
            paths,
            instance_type=config.compute.instance_type,
            attempt=spec.number,
            spot=spec.spot,
            job_name=spec.job_name,
        )
        if _launched(config):
            environment["SM_HOSTS"] = json.dumps(launcher.host_names(config.compute.instance_count))
        return {
            "command": self._command(config, spec),
            "working_dir": str(config.code.source_dir),
            "environment_variables": environment,
            **({"distribution": _distribution_plan(config)} if _launched(config) else {}),
            "secrets": {name: f"<{ref.describe()}>" for name, ref in config.secrets.items()},
            "stopping_condition": {
                "max_run_seconds": config.compute.max_run,
                "grace_period_seconds": local_settings(config).grace_period,
            },
            "simulated_reclaim": _describe_trigger(trigger),
            **(
                {"simulated_capacity_outage": True}
                if spec.spot and spec.number in local_settings(config).capacity_outages
                else {}
            ),
        }

    def checkpoint_location(self, config: PipelineConfig, run_id: str) -> str:
        return str(self._run_dir(config, run_id) / "checkpoints")

    # -- the stages -------------------------------------------------------------------

    def upload_channel(
        self,
        config: PipelineConfig,
        channel: str,
        source: Path | pd.DataFrame,
        log: LogSink,
    ) -> ChannelData:
        key = f"{config.name}/{channel}"
        if isinstance(source, Path) and config.input_mode(channel) in IN_PLACE_MODES:
            stored = self.store.describe_path(key, source)
            described = str(source)
            stored = replace(stored, path=self._mount_folder(config, channel, source))
        elif isinstance(source, Path):
            stored = self.store.put_path(key, source)
            described = str(source)
        else:
            stored = self.store.put_dataframe(key, source)
            described = f"DataFrame {source.shape[0]}x{source.shape[1]}"
        return ChannelData(
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

    def _planned_folder(self, config: PipelineConfig, channel: str, source: Path) -> Path:
        """Where ``_mount_folder`` will point the channel; pure."""
        if source.is_dir():
            return source
        # One folder per file linked: runs of one pipeline at once (a sweep's trials)
        # share it, and a different file never lands beside an older one.
        digest = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]
        return self.root / "mounts" / config.name / f"{channel}-{digest}"

    def _mount_folder(self, config: PipelineConfig, channel: str, source: Path) -> Path:
        """The folder SM_CHANNEL_<NAME> names for a channel read in place: the source
        folder itself, or for a single file a folder under work_dir holding one link to
        it (the contract's channel is a folder). Nothing is copied either way. Made once
        and never removed: another run of the pipeline may be reading it now."""
        folder = self._planned_folder(config, channel, source)
        if folder == source:
            return source
        target = str(source.resolve())
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / source.name
        if not (link.is_symlink() and os.readlink(link) == target):
            temporary = folder / f".{source.name}.{os.getpid()}.{threading.get_ident()}"
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(target)
            os.replace(temporary, link)  # atomic: a reader sees the old link or the new
        return folder

    def use_data_uri(self, config: PipelineConfig, channel: str, uri: str) -> ChannelData:
        raise UnsupportedError(f"data.{channel}", f"{uri}: the local backend reads local paths")

    def ensure_compute(self, config: PipelineConfig) -> ComputeTarget:
        self._check_compute(config)
        return self._compute(config)

    def _compute(self, config: PipelineConfig) -> ComputeTarget:
        hosts = config.compute.instance_count
        simulated = f"{config.compute.instance_type} x{hosts}" if hosts > 1 else ""
        return ComputeTarget(
            name="local",
            instance_type=config.compute.instance_type,
            instance_count=hosts,
            details={
                "cpus": os.cpu_count() or 1,
                "python": self.python,
                "processes": _processes(config),
                "note": f"{simulated or config.compute.instance_type} is simulated by this machine",
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

    def checkpoint_store(self, config: PipelineConfig, uri: str) -> tuple[FolderStore, str]:
        """The checkpoint folder as an object store, for a checkpoint following a route."""
        return FolderStore(Path(uri)), ""

    def submit_attempt(self, config: PipelineConfig, spec: AttemptSpec) -> str:
        existing = self._attempts.get(spec.job_name)
        if existing is not None or spec.job_name in self._outages:  # reattach
            return spec.job_name
        if spec.spot and spec.number in local_settings(config).capacity_outages:
            now = datetime.now(UTC)
            self._outages[spec.job_name] = AttemptStatus(
                outcome=Outcome.NO_CAPACITY,
                reason=f"simulated spot capacity outage (local.capacity_outages: {spec.number})",
                started_at=now,
                ended_at=now,
                billable_seconds=0.0,
                training_seconds=0.0,
            )
            self._changed.set()
            return spec.job_name
        attempt_dir = self._attempt_dir(config, spec.run_id, spec.number)
        if attempt_dir.exists():
            shutil.rmtree(attempt_dir)  # a fresh container, as on SageMaker
        paths = self._paths(config, spec)
        for folder in (paths.model_dir, paths.output_data_dir, paths.checkpoint_dir):
            Path(folder).mkdir(parents=True, exist_ok=True)
        request = self.attempt_request(config, spec)
        unresolved = sorted(set(config.secrets) - set(spec.secrets))
        if unresolved:
            raise BackendError(f"secrets not resolved for the attempt: {', '.join(unresolved)}")
        attempt = LocalAttempt(
            ranked=_launched(config),
            status_path=attempt_dir / LAUNCHER_STATUS if _launched(config) else None,
            command=request["command"],
            cwd=config.code.source_dir,
            env={
                **tracking.script_environment(),  # not another trial's MLflow settings
                **request["environment_variables"],
                **spec.secrets,
                "PYTHONUNBUFFERED": "1",
            },
            log_path=attempt_dir / "log.txt",
            checkpoint_dir=Path(spec.checkpoint_uri),
            metrics=contract.MetricParser(config.metrics),
            max_run=config.compute.max_run,
            grace_period=local_settings(config).grace_period,
            trigger=_trigger_for(config, spec.number, spec.spot),
            changed=self._changed,
            redact=redactor_for(spec.secrets, config.hyperparameters) or None,
            mask_env=(
                *spec.secrets,
                *(
                    f"SM_HP_{name.upper()}"
                    for name in config.hyperparameters
                    if is_secret_name(name)
                ),
            ),
        )
        attempt.start()
        self._attempts[spec.job_name] = attempt
        return spec.job_name

    def describe_attempt(self, handle: str) -> AttemptStatus:
        if handle in self._outages:
            return self._outages[handle]
        return self._attempt(handle).status()

    def read_logs(self, handle: str) -> list[str]:
        if handle in self._outages:
            return []
        return self._attempt(handle).new_lines()

    def stop_attempt(self, handle: str) -> None:
        if handle not in self._outages:
            self._attempt(handle).stop()

    def collect_artifacts(self, config: PipelineConfig, result: TrainingResult) -> ModelArtifacts:
        final = result.final
        if final is None or final.outcome is not Outcome.SUCCEEDED:
            raise BackendError("no attempt succeeded, so there is no model to collect")
        run_dir = self._run_dir(config, result.run_id)
        attempt_dir = self._attempt_dir(config, result.run_id, final.number)
        trained, model_dir = attempt_dir / "model", run_dir / "model"
        archive = run_dir / "model.tar.gz"
        try:
            # Packed from where the script wrote it, never following links out of it; the
            # run's model/ is what the archive holds. The attempt's folder is not touched.
            skipped = [f"model: {link}" for link in tar_folder(trained, archive)]
            try:
                extract_archive(archive, model_dir)
            except BaseException:
                archive.unlink(missing_ok=True)  # never a refused archive at the model's path
                raise
            output_dir = attempt_dir / "output" / "data"
            if any(output_dir.iterdir()):
                skipped += [
                    f"output: {link}" for link in tar_folder(output_dir, run_dir / "output.tar.gz")
                ]
        except Exception as exc:  # whatever it is, the trained model must not be lost
            raise BackendError(
                f"packing the model failed ({exc}); the trained model is kept at {trained}"
            ) from exc
        records = run_dir / "attempts.json"
        records.write_text(jsonout.dumps(result.to_dict(), indent=2))
        (run_dir / "metrics.json").write_text(jsonout.dumps(result.metrics, indent=2))
        return ModelArtifacts(
            model_uri=str(model_dir),
            model_archive=str(archive),
            local_model_dir=model_dir,
            metrics=result.metrics,
            links={"run folder": str(run_dir)},
            records=str(records),
            warnings=tuple(f"{SKIPPED_LINK} {link}" for link in skipped),
        )

    # -- helpers ----------------------------------------------------------------------

    def _command(self, config: PipelineConfig, spec: AttemptSpec) -> list[str]:
        """As SageMaker script mode runs it: the entry point with --name value arguments;
        several hosts or a distribution run it under the launcher, once per rank."""
        script = [
            self.python,
            "-u",
            config.code.entry_point,
            *contract.hyperparameter_args(config.hyperparameters),
        ]
        if not _launched(config):
            return script
        status = self._attempt_dir(config, spec.run_id, spec.number) / LAUNCHER_STATUS
        return [
            self.python,
            "-P",  # as the supervisor: by path, nothing of its folder shadows the stdlib
            launcher.__file__,
            "--type",
            config.compute.distribution.type,
            "--hosts",
            str(config.compute.instance_count),
            "--processes-per-host",
            str(config.compute.distribution.processes_per_host),
            "--grace",
            str(local_settings(config).grace_period),
            "--status",
            str(status),
            "--",
            *script,
        ]

    def _run_dir(self, config: PipelineConfig, run_id: str) -> Path:
        return self.root / "runs" / config.name / run_id

    def _attempt_dir(self, config: PipelineConfig, run_id: str, number: int) -> Path:
        return self._run_dir(config, run_id) / "attempts" / str(number)

    def _paths(self, config: PipelineConfig, spec: AttemptSpec) -> contract.ScriptPaths:
        attempt_dir = self._attempt_dir(config, spec.run_id, spec.number)
        return contract.ScriptPaths(
            channels=dict(spec.channels),
            model_dir=attempt_dir / "model",
            output_data_dir=attempt_dir / "output" / "data",
            checkpoint_dir=Path(spec.checkpoint_uri),
        )

    def _attempt(self, handle: str) -> LocalAttempt:
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


def _launched(config: PipelineConfig) -> bool:
    """Several hosts or a distribution: the job's processes start under the launcher. One
    host without one runs the script alone, as it always did."""
    return config.compute.instance_count > 1 or config.compute.distribution.enabled


def _processes(config: PipelineConfig) -> int:
    return config.compute.instance_count * config.compute.distribution.processes_per_host


def _distribution_plan(config: PipelineConfig) -> dict[str, Any]:
    """What the launcher starts, as ``plan`` shows it: hosts, ranks, each rank's variables
    (the rendezvous port is chosen free when the attempt starts)."""
    kind = config.compute.distribution.type
    hosts = config.compute.instance_count
    per_host = config.compute.distribution.processes_per_host
    port = "<a free port, chosen when the attempt starts>" if kind != "none" else ""
    return {
        "type": kind,
        "hosts": launcher.host_names(hosts),
        "processes_per_host": per_host,
        "ranks": hosts * per_host,
        "output": "every line of rank R on host algo-H as '[algo-H rank R] <line>'; "
        "metrics, progress and reclaim patterns read rank 0",
        "rank_environment": {
            str(rank): launcher.rank_environment(kind, hosts, per_host, rank, port)
            for rank in range(hosts * per_host)
        },
    }


def _same_release(wanted: str, installed: str) -> bool:
    """1.2 matches 1.2.x; 1.2.1 matches only 1.2.1."""
    wanted_parts = wanted.split("-")[0].split(".")
    return installed.split(".")[: len(wanted_parts)] == wanted_parts


def _trigger_for(config: PipelineConfig, number: int, spot: bool) -> float | str | None:
    """Entry N of local.spot_interruptions reclaims attempt N, if it runs on spot."""
    triggers = local_settings(config).spot_interruptions
    return triggers[number - 1] if spot and number <= len(triggers) else None


def _describe_trigger(trigger: float | str | None) -> str | None:
    if trigger is None:
        return None
    if isinstance(trigger, str):
        return f"when the output matches {trigger!r}"
    return f"{trigger:g} s after start"
