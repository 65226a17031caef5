"""Azure ML command jobs for one attempt: built with azure-ai-ml's own entities, pure.

The script contract is the same as on SageMaker: the paths Azure ML mounts are bound
into the command (``${{inputs.train}}`` and friends, which only the command can use),
everything else travels as environment variables. Checkpoints are an output bound to
one datastore path per run, mounted read-write, so the next attempt finds them.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from cloudtrain import contract
from cloudtrain import secrets_launcher as launcher
from cloudtrain.backends.azure import sdk
from cloudtrain.config import PipelineConfig
from cloudtrain.errors import Problems, UnsupportedError
from cloudtrain.recovery import Outcome
from cloudtrain.results import AttemptSpec
from cloudtrain.secrets import job_references, launcher_source

#: The secret references an Azure ML job resolves itself (with its compute's identity).
JOB_SECRET_KINDS = ("azure_key_vault",)
#: The launcher's source travels in this variable and runs as ``python -c``: the code
#: folder azure-ai-ml uploads is the user's own, and nothing is written into it.
LAUNCHER_VARIABLE = "CLOUDTRAIN_LAUNCHER"
MODEL_OUTPUT = "model"
OUTPUT_DATA = "output_data"
CHECKPOINTS = "checkpoints"
SPOT_TIER, DEDICATED_TIER = "spot", "standard"  # serverless job tiers
RUNNING_STATES = frozenset(
    {
        "NotStarted",
        "Queued",
        "Preparing",
        "Provisioning",
        "Starting",
        "Running",
        "Finalizing",
        "CancelRequested",
        "NotResponding",
        "Paused",
        "Unknown",
    }
)
_PREEMPTED = re.compile(r"preempt|low.priority node.*(lost|removed|reclaimed)", re.IGNORECASE)
_NO_CAPACITY = re.compile(
    r"insufficient (quota|capacity)|not enough (quota|capacity)|AllocationFailed|"
    r"quota (exceeded|limit)",
    re.IGNORECASE,
)
_TIMEOUT = re.compile(
    r"timeout|timed out|exceeded the (maximum|max) (allowed )?(time|duration)", re.IGNORECASE
)


#: ``input_modes`` as Azure ML job input modes: download copies the data to the node
#: before the command starts, fastfile and mount read it in place (read-only mount). Azure
#: ML has no FIFO input, so pipe is refused (``check_input_modes``).
AZURE_MODES: dict[str, str] = {"download": "download", "fastfile": "ro_mount", "mount": "ro_mount"}


def input_mode(config: PipelineConfig, channel: str) -> str | None:
    """The job input's ``mode``; None leaves Azure ML's default for the input, as before."""
    mode = config.input_mode(channel)
    return AZURE_MODES[mode] if mode else None


def check_input_modes(config: PipelineConfig) -> None:
    """Every mode given must be one Azure ML jobs have; pure."""
    problems = Problems()
    for channel, mode in config.input_modes.items():
        if mode not in AZURE_MODES:
            problems.add(
                UnsupportedError(
                    f"input_modes.{channel}",
                    f"{mode} is SageMaker's FIFO input; Azure ML jobs read a channel as "
                    "download or mount (ro_mount), so use one of download, fastfile, mount",
                )
            )
    problems.raise_if_any()


_DATASTORE_URI = re.compile(r"azureml://datastores/([A-Za-z0-9_]+)/paths/(.+)")


def datastore_uri(datastore: str, path: str) -> str:
    return f"azureml://datastores/{datastore}/paths/{path.strip('/')}/"


def parse_datastore_uri(uri: str) -> tuple[str, str]:
    """``azureml://datastores/ds/paths/a/b/`` -> ``("ds", "a/b")``, the inverse of
    ``datastore_uri``; ValueError for any other form (a data asset, a job output)."""
    match = _DATASTORE_URI.fullmatch(uri)
    path = match.group(2).strip("/") if match else ""
    if match is None or not path:
        raise ValueError(
            f"{uri[:80]!r} is not a datastore path (azureml://datastores/<name>/paths/<path>/)"
        )
    return match.group(1), path


def script_command(config: PipelineConfig, channels: Mapping[str, object]) -> str:
    """``env SM_CHANNEL_X=${{inputs.x}} ... python entry --name value ...``."""
    bindings = [f"SM_CHANNEL_{channel.upper()}=${{{{inputs.{channel}}}}}" for channel in channels]
    bindings += [
        f"SM_MODEL_DIR=${{{{outputs.{MODEL_OUTPUT}}}}}",
        f"SM_OUTPUT_DATA_DIR=${{{{outputs.{OUTPUT_DATA}}}}}",
        f"SM_CHECKPOINT_DIR=${{{{outputs.{CHECKPOINTS}}}}}",
    ]
    script = [
        "python",
        config.code.entry_point,
        *contract.hyperparameter_args(config.hyperparameters),
    ]
    command = " ".join(shlex.quote(part) for part in script)
    if config.secrets:  # the launcher reads Key Vault with the job's identity, then execs
        # the entry point, its first argument
        command = f'python -c "${LAUNCHER_VARIABLE}" ' + command.removeprefix("python ")
    return "env " + " ".join(bindings) + " " + command


def static_environment(
    config: PipelineConfig,
    *,
    channels: Iterable[str],
    attempt: int,
    spot: bool,
    job_name: str,
) -> dict[str, str]:
    """The contract's variables that need no binding."""
    env = {
        "SM_HPS": json.dumps(dict(config.hyperparameters)),
        "SM_CHANNELS": json.dumps(sorted(channels)),
        "SM_CURRENT_INSTANCE_TYPE": config.compute.instance_type,
        "SM_TRAINING_JOB_NAME": job_name,
        "CLOUDTRAIN_ATTEMPT": str(attempt),
        "CLOUDTRAIN_SPOT": "true" if spot else "false",
    }
    for name, value in config.hyperparameters.items():
        env[f"SM_HP_{name.upper()}"] = contract.hyperparameter_value(value)
    if config.secrets:  # references only: the job shows its environment variables
        env[launcher.REFS_VARIABLE] = job_references(config.secrets, JOB_SECRET_KINDS)
        env[LAUNCHER_VARIABLE] = launcher_source().decode()
    return env


def command_job(
    config: PipelineConfig,
    spec: AttemptSpec,
    *,
    compute: str | None,
    inputs: Mapping[str, tuple[str, str]],  # channel -> (uri_folder | uri_file, path)
) -> Any:
    """The CommandJob of the attempt ``spec``; ``compute=None`` runs serverless, its tier
    from ``spec.spot``."""
    job_name, run_id, attempt, spot = spec.job_name, spec.run_id, spec.number, spec.spot
    from azure.ai.ml import Input, Output, command
    from azure.ai.ml.entities import CommandJobLimits, QueueSettings

    queue = None if compute else QueueSettings(job_tier=SPOT_TIER if spot else DEDICATED_TIER)
    job = command(
        name=job_name,
        display_name=f"{config.name} attempt {attempt} ({'spot' if spot else 'dedicated'})",
        experiment_name=config.name,
        description=f"cloudtrain run {run_id}, attempt {attempt}",
        code=str(config.code.source_dir),
        command=script_command(config, inputs),
        inputs={
            channel: Input(type=kind, path=path, mode=input_mode(config, channel))
            for channel, (kind, path) in inputs.items()
        },
        outputs={
            MODEL_OUTPUT: Output(type="uri_folder", mode="rw_mount"),
            OUTPUT_DATA: Output(type="uri_folder", mode="rw_mount"),
            CHECKPOINTS: Output(type="uri_folder", mode="rw_mount", path=spec.checkpoint_uri),
        },
        environment=spec.environment.uri,
        compute=compute,
        instance_count=config.compute.instance_count,
        environment_variables=static_environment(
            config, channels=spec.channels, attempt=attempt, spot=spot, job_name=job_name
        ),
        tags={
            "cloudtrain:pipeline": config.name,
            "cloudtrain:run": run_id,
            "cloudtrain:attempt": str(attempt),
            "cloudtrain:capacity": "low-priority" if spot else "dedicated",
        },
        queue_settings=queue,
        distribution=distribution(config),
    )
    job.limits = CommandJobLimits(timeout=config.compute.max_run)
    if compute is None:
        from azure.ai.ml.entities import JobResourceConfiguration

        job.resources = JobResourceConfiguration(
            instance_type=config.compute.instance_type,
            instance_count=config.compute.instance_count,
        )
    return job


def distribution(config: PipelineConfig) -> Any:
    """Azure ML's distribution for ``compute.distribution``: it starts
    ``processes_per_host`` processes on each of the ``instance_count`` nodes itself and sets
    torch's variables (PyTorch: RANK, WORLD_SIZE, LOCAL_RANK, NODE_RANK, MASTER_ADDR,
    MASTER_PORT) or runs mpirun (Mpi: Open MPI's OMPI_COMM_WORLD_*). None for type none:
    the command runs on every node, as SageMaker runs the script once per host."""
    chosen = config.compute.distribution
    if chosen.type == "torchrun":
        from azure.ai.ml import PyTorchDistribution

        return PyTorchDistribution(process_count_per_instance=chosen.processes_per_host)
    if chosen.type == "mpi":
        from azure.ai.ml import MpiDistribution

        return MpiDistribution(process_count_per_instance=chosen.processes_per_host)
    return None


def rest_body(job: Any) -> dict[str, Any]:
    """The REST body azure-ai-ml sends for a command job, from its own serializer."""
    return sdk.rest_body(sdk.as_command_job(job))


def classify(
    status: str, error: str = "", *, canceled_by_us: bool = False
) -> tuple[Outcome | None, str]:
    """An Azure ML job's outcome from its status and error message; None while it runs."""
    if status in RUNNING_STATES:
        return None, status
    if status == "Completed":
        return Outcome.SUCCEEDED, "Completed"
    if status == "Canceled":
        if canceled_by_us:
            return Outcome.INTERRUPTED, (
                "canceled when its orchestrator was cancelled; the next attempt resumes "
                "from the checkpoints"
            )
        return Outcome.STOPPED, "canceled"
    if status == "Failed":
        if _PREEMPTED.search(error):
            return Outcome.INTERRUPTED, f"low-priority node preempted: {error}"
        if _NO_CAPACITY.search(error):
            return Outcome.NO_CAPACITY, f"no capacity: {error}"
        if _TIMEOUT.search(error):
            return Outcome.TIMED_OUT, f"compute.max_run reached: {error}"
        return Outcome.FAILED, error or "Failed (no error message)"
    return Outcome.FAILED, f"unknown status {status!r}"
