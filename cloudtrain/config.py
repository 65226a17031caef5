"""The pipeline config: the YAML a user writes, as strict pydantic models.

Every field has a description because Prefect renders flow parameters as a form from
them. Unknown keys are errors, and every problem is one line naming its field path, all
of them at once, so that ``cloudtrain run`` refuses bad input before anything is created
and a user fixes a config in one pass. Paths are resolved against the config file's
folder (``base_dir`` in the validation context; the working directory when a config is
built in Python or from the UI).

The cloud sections (``aws:``, ``azure:``, ``local:``, ...) are not fields of this module:
each backend registers the model of its own section (``cloudtrain.backends``), and
``PipelineConfig`` validates whichever sections a config holds against those models.
"""

from __future__ import annotations

import difflib
import json
import os
import posixpath
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FieldSerializationInfo,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from cloudtrain import backends, launcher, recovery
from cloudtrain import secrets as secret_refs
from cloudtrain.errors import ConfigError, Problem, Problems, quote
from cloudtrain.quantities import Count, Duration, Finite, Seconds
from cloudtrain.trials import SweepConfig
from cloudtrain.yamlfile import MAX_BYTES, load_yaml

S = TypeVar("S", bound=BaseModel)

#: Script-mode frameworks and the distribution that provides each one locally.
FRAMEWORKS: dict[str, str] = {
    "sklearn": "scikit-learn",
    "pytorch": "torch",
    "tensorflow": "tensorflow",
    "xgboost": "xgboost",
    "huggingface": "transformers",
}
ENVIRONMENT_KINDS: tuple[str, ...] = ("framework", "curated", "image", "builtin")

# 40 characters leave room for "-<run id>-a<attempt>" in a 63-character job name.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,38}[a-z0-9]")
CHANNEL_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
HYPERPARAMETER_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,255}")
METRIC_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,254}")
URI_PATTERN = re.compile(r"^([a-z][a-z0-9+.-]*://|azureml:)")
#: The longest file or folder name the usual file systems take.
NAME_MAX_BYTES = 255

HyperparameterValue = bool | int | Finite | str
#: How a job reads a data channel (``input_modes``); what each cloud makes of each is in
#: its backend: download copies the channel in before the script starts, fastfile and
#: mount stream it from where it is (SageMaker FastFile, Azure ML ro_mount, the source
#: folder itself locally), pipe is SageMaker's FIFO for the algorithms that read one.
InputMode = Literal["download", "fastfile", "mount", "pipe"]
INPUT_MODES: tuple[str, ...] = get_args(InputMode)
#: Characters that cannot travel in argv, the environment or a path (NUL), or that make
#: a log line or a name lie (other C0 controls, DEL); lone surrogates are not UTF-8.
#: Tab, newline and carriage return are text.
UNSAFE_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
#: Folders of the kernel's and devices' pseudo files: never a config's path.
SYSTEM_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))
#: Prefect's server refuses a flow run whose parameters (the config is one) are larger
#: as compact JSON (``server.api.max_parameter_size``, 524,288 bytes by default).
PREFECT_MAX_PARAMETER_SIZE = 524_288
#: The flow's other parameters (force, dataframes) and the JSON around the config.
_OTHER_PARAMETERS_BYTES = 256


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class Section(_Strict):
    """Base of a backend's config section (``aws:``, ``azure:``, ``local:``...)."""

    def check_config(self, config: PipelineConfig) -> None:
        """Consistency with the rest of the config, checked when it loads; raise
        ConfigError. Pure."""

    def check_other_cloud(self, config: PipelineConfig) -> None:
        """What this section must refuse when the config runs on another cloud (most
        sections are simply unused there); raise ConfigError. Pure."""


class CodeConfig(_Strict):
    """Where the training script lives."""

    source_dir: Path = Field(
        Path("."),
        description="Folder shipped with the job, relative to the config file.",
    )
    entry_point: str = Field(
        description="Script inside source_dir that the job runs, e.g. train.py.",
    )


class EnvironmentConfig(_Strict):
    """What the script runs in; exactly one kind is set."""

    framework: str | None = Field(
        None,
        description="Script-mode framework: " + ", ".join(sorted(FRAMEWORKS)) + ".",
    )
    framework_version: str | None = Field(
        None, description='Framework version, quoted ("1.2"); needs framework.'
    )
    curated: str | None = Field(
        None, description="Azure ML curated environment, NAME@VERSION or NAME (latest)."
    )
    image: str | None = Field(
        None, description="Bring-your-own-container image URI (ECR or any registry)."
    )
    builtin: str | None = Field(
        None, description="SageMaker built-in algorithm name, e.g. kmeans or xgboost."
    )

    @field_validator("framework")
    @classmethod
    def _known_framework(cls, value: str | None) -> str | None:
        if value is not None and value not in FRAMEWORKS:
            raise ValueError(unknown_name_message("framework", value, FRAMEWORKS))
        return value

    @field_validator("framework_version", mode="before")
    @classmethod
    def _quoted_version(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(f'quote the version ("{value}"): YAML reads an unquoted 1.10 as 1.1')
        return value

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> EnvironmentConfig:
        chosen = [kind for kind in ENVIRONMENT_KINDS if getattr(self, kind)]
        if len(chosen) != 1:
            got = ", ".join(chosen) if chosen else "none"
            raise ConfigError(
                "environment",
                f"set exactly one of {', '.join(ENVIRONMENT_KINDS)} (got {got})",
            )
        if self.framework_version and not self.framework:
            raise ConfigError("environment.framework_version", "needs environment.framework")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in ENVIRONMENT_KINDS if getattr(self, kind))


#: How the processes of a job find each other: none (the script once per host), torchrun
#: (torchrun's variables: RANK, WORLD_SIZE, MASTER_ADDR...) or mpi (Open MPI's, with the
#: torch ones too).
DISTRIBUTION_TYPES: tuple[str, ...] = launcher.TYPES
#: The most processes one host may run: the largest training instances have 192 vCPUs
#: (one MPI process per core) and 8 to 32 accelerators (one torchrun process each).
MAX_PROCESSES_PER_HOST = 192


class DistributionConfig(_Strict):
    """How a multi-process job starts: the launcher and the processes per host.

    ``distribution: torchrun`` is short for ``{type: torchrun}``."""

    type: str = Field(
        "none",
        description="Launcher: none (the script runs once per host), torchrun (one process "
        "per processes_per_host on every host, with RANK, WORLD_SIZE, MASTER_ADDR...) or mpi.",
    )
    processes_per_host: Count = Field(
        1,
        ge=1,
        description="Processes on each host (compute.instance_count hosts): usually one per "
        f"GPU; 1 with type none; at most {MAX_PROCESSES_PER_HOST}.",
    )

    @model_validator(mode="before")
    @classmethod
    def _type_alone(cls, data: Any) -> Any:
        return {"type": data} if isinstance(data, str) else data

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in DISTRIBUTION_TYPES:
            raise ValueError(unknown_name_message("distribution type", value, DISTRIBUTION_TYPES))
        return value

    @field_validator("processes_per_host")
    @classmethod
    def _at_most(cls, value: int) -> int:
        # A validator rather than ``le=``, for a message that says why the bound is there.
        if value > MAX_PROCESSES_PER_HOST:
            raise ValueError(
                f"{value} processes on one host is more than the largest training instances "
                f"run (at most {MAX_PROCESSES_PER_HOST})"
            )
        return value

    @model_validator(mode="after")
    def _processes_need_a_launcher(self) -> DistributionConfig:
        if self.type == "none" and self.processes_per_host != 1:
            raise ConfigError(
                "compute.distribution.processes_per_host",
                f"{self.processes_per_host} processes per host need a launcher: set "
                "compute.distribution.type to torchrun or mpi (type none runs the script "
                "once per host)",
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.type != "none"


#: SageMaker's StoppingCondition takes at most 28 days (MaxRuntimeInSeconds; a job's
#: whole life, waiting included, is capped near there too).
MAX_RUN_SECONDS = 28 * 24 * 3600


class ComputeConfig(_Strict):
    """The machines an attempt runs on and how long it may take."""

    instance_type: str = Field(
        "ml.m5.large",
        description="SageMaker ml.* instance type or Azure VM size (Standard_DS3_v2); or a "
        "mapping, one per cloud of the route ({aws: ml.g4dn.xlarge, azure: "
        "Standard_NC4as_T4_v3}). After validation: the type on the config's cloud.",
    )
    instance_types: dict[str, str] = Field(
        default_factory=dict,
        description="The instance type per cloud, as given by an instance_type mapping.",
    )
    instance_count: Count = Field(1, ge=1, le=100, description="Number of machines.")
    distribution: DistributionConfig = Field(
        default_factory=DistributionConfig,
        description="How the processes of a multi-process job start ({type: torchrun, "
        "processes_per_host: 2}); none by default: the script once per machine.",
    )
    spot: bool = Field(
        False,
        description="Run on spot (SageMaker managed spot, Azure low priority): cheaper, "
        "but an attempt can be reclaimed and is then resumed from its checkpoints.",
    )
    max_run: Seconds = Field(
        3600, ge=1, le=MAX_RUN_SECONDS, description="Seconds of training per attempt."
    )
    max_wait: Seconds | None = Field(
        None,
        ge=1,
        le=MAX_RUN_SECONDS,
        description="Seconds per attempt including waiting for spot capacity; "
        ">= max_run. Defaults to max_run.",
    )

    @model_validator(mode="before")
    @classmethod
    def _types_per_cloud(cls, data: Any) -> Any:
        """``instance_type: {aws: ..., azure: ...}`` is kept as ``instance_types``; the
        config puts the one of its cloud in ``instance_type`` (PipelineConfig)."""
        if isinstance(data, Mapping) and isinstance(data.get("instance_type"), Mapping):
            types = data["instance_type"]
            if data.get("instance_types") not in (None, {}, types):
                raise ConfigError(
                    "compute.instance_types",
                    "is what an instance_type mapping is kept as; give only one of them",
                )
            first = next(iter(types.values()), None)
            return {**data, "instance_types": types, "instance_type": first}
        return data

    @field_validator("instance_types")
    @classmethod
    def _type_names(cls, value: dict[str, str]) -> dict[str, str]:
        for cloud, name in value.items():
            if not backends.is_cloud(cloud):
                raise ConfigError(
                    f"compute.instance_type.{quote(cloud) if len(cloud) > 40 else cloud}",
                    backends.unknown_cloud_message(cloud),
                )
            if not name.strip():
                raise ConfigError(f"compute.instance_type.{cloud}", "must name an instance type")
        return value

    def for_cloud(self, cloud: str) -> ComputeConfig:
        """This section as it applies on ``cloud``: its instance type from the mapping."""
        if not self.instance_types or self.instance_types.get(cloud) in (None, self.instance_type):
            return self
        return self.model_copy(update={"instance_type": self.instance_types[cloud]})

    @field_validator("max_wait")
    @classmethod
    def _wait_covers_run(cls, value: int | None, info: ValidationInfo) -> int | None:
        max_run = info.data.get("max_run")
        if value is not None and max_run is not None and value < max_run:
            raise ValueError(f"must be >= compute.max_run ({max_run})")
        return value

    @property
    def effective_max_wait(self) -> int:
        return self.max_wait if self.max_wait is not None else self.max_run


class RetryConfig(_Strict):
    """How many attempts a run may take and how it recovers between them."""

    max_attempts: Count = Field(
        3, ge=1, le=100, description="Attempts in all, the first one included."
    )
    on_demand_fallback: bool = Field(
        True,
        description="With spot and max_attempts > 1, run the last attempt on "
        "on-demand capacity so it cannot be reclaimed.",
    )
    strategy: str = Field(
        recovery.DEFAULT_STRATEGY,
        description="Recovery strategy: " + ", ".join(recovery.strategy_names()) + ".",
    )

    reclaims_per_cloud: Count = Field(
        2,
        ge=1,
        le=100,
        description="failover: reclaims on one cloud after which the next attempt moves "
        "to the next cloud of the route (no capacity moves at once).",
    )
    no_progress_limit: Count = Field(
        2,
        ge=0,
        le=100,
        description="Attempts that start from zero although the checkpoint location holds "
        "files, after which the run stops with outcome no_progress instead of paying for "
        "the same epochs again; 0 never stops.",
    )

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        recovery.strategy_class(value)  # raises with the valid names
        return value


class BudgetConfig(_Strict):
    """What a whole run may cost and by when it must end; both optional."""

    max_cost: Finite | None = Field(
        None,
        gt=0,
        description="The most the run's attempts may cost, in the price tables' currency "
        "(USD): an attempt that would exceed it is not started (outcome over_budget), and "
        "a running one is stopped when it reaches it.",
    )
    deadline: Duration | None = Field(
        None,
        ge=1,
        le=MAX_RUN_SECONDS,
        description="Time from the start of training by which it must end (8h, 90m, or "
        "seconds): spot while the slack can absorb another reclaim, on-demand after.",
    )
    restart_overhead: Duration | None = Field(
        None,
        ge=0,
        le=MAX_RUN_SECONDS,
        description="What one reclaim costs in time (a new job starting, work since the "
        "last checkpoint); defaults to the cloud's typical start-up.",
    )


#: MLflow tracking URIs cloudtrain logs to, by scheme; ``None``: the local store.
#: The plugins are the packages that register the scheme with MLflow (its
#: ``mlflow.tracking_store`` entry points), checked before a run starts.
TRACKING_PLUGINS: dict[str, str | None] = {
    "http": None,
    "https": None,
    "azureml": "azureml-mlflow",  # the Azure ML workspace's MLflow endpoint
    "arn": "sagemaker-mlflow",  # a SageMaker managed MLflow server
}
_SAGEMAKER_MLFLOW_ARN = re.compile(
    r"arn:aws(?:-us-gov)?:sagemaker:[a-z0-9-]+:[0-9]{12}:mlflow-[a-z-]+/[A-Za-z0-9-]+"
    r"(?:#arn:aws(?:-us-gov)?:iam::[0-9]{12}:role/[\w+=,.@/-]+)?"
)
_TRACKING_URI_FORMS = (
    "http(s)://host[:port] for an MLflow server, the Azure ML workspace's azureml://... "
    "tracking URI, or a SageMaker managed MLflow server's ARN "
    "(arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>); leave it out "
    "for the local store in work_dir"
)


class TrackingConfig(_Strict):
    """Experiment tracking with MLflow: each training run is one MLflow run (parameters,
    tags, metric curves, final metrics, the model)."""

    enabled: bool = Field(
        True, description="Log training runs to MLflow; false turns it off, settings kept."
    )
    mlflow_uri: str | None = Field(
        None,
        description="MLflow tracking URI: http(s)://host for a server, the Azure ML "
        "workspace's azureml://... URI (needs azureml-mlflow), or a SageMaker managed MLflow "
        "server's ARN (needs sagemaker-mlflow). Default: a SQLite store in "
        "work_dir/mlflow, no server needed.",
    )
    experiment: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="MLflow experiment the runs go to (created when missing); defaults to "
        "the pipeline name.",
    )
    log_model: bool = Field(
        True,
        description="Upload the model archive to the run's artifacts when it is on this "
        "machine; false records only where the model is.",
    )

    @field_validator("mlflow_uri")
    @classmethod
    def _tracking_uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.partition(":")[0].lower()
        if scheme not in TRACKING_PLUGINS:
            raise ValueError(
                f"{quote(value)} is not a tracking URI cloudtrain logs to: give "
                f"{_TRACKING_URI_FORMS}"
            )
        if scheme == "arn":
            if not _SAGEMAKER_MLFLOW_ARN.fullmatch(value):
                raise ValueError(
                    f"{quote(value)} is not a SageMaker MLflow server's ARN "
                    "(arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>)"
                )
            return value
        if any(char.isspace() for char in value):
            # urlsplit drops tabs and newlines before it parses: the check would pass a
            # URI that is not the one MLflow is given.
            raise ValueError(f"{quote(value)} holds white space, which no URI does")
        parsed = urlsplit(value)
        try:
            _ = parsed.port  # urlsplit parses the port only when it is read
        except ValueError:
            raise ValueError(
                f"{quote(value)} has a port that is not a number from 0 to 65535"
            ) from None
        if not value.lower().startswith(f"{scheme}://") or not parsed.hostname:
            raise ValueError(f"{quote(value)} names no host: give {_TRACKING_URI_FORMS}")
        if scheme == "azureml" and "/workspaces/" not in parsed.path:
            raise ValueError(
                f"{quote(value)} is not a workspace's tracking URI (azureml://<region>"
                ".api.azureml.ms/mlflow/v1.0/subscriptions/.../workspaces/<name>; "
                "az ml workspace show --query mlflow_tracking_uri prints it)"
            )
        if parsed.username or parsed.password:
            raise ValueError(
                "holds a user name or password, which would be stored with the config: use "
                "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or _TOKEN) instead"
            )
        return value

    @property
    def plugin(self) -> str | None:
        """The package MLflow needs for ``mlflow_uri``'s scheme, if any."""
        if self.mlflow_uri is None:
            return None
        return TRACKING_PLUGINS[self.mlflow_uri.partition(":")[0].lower()]


#: The most clouds a failover route may name.
MAX_ROUTE = 8

#: Where cloudtrain keeps its own files when a config does not say (relative to it).
DEFAULT_WORK_DIR = Path(".cloudtrain")


class PipelineConfig(_Strict):
    """One training pipeline: the script, its data, where and how it trains.

    Besides these fields, a config holds one section per cloud it has settings for
    (``aws:``, ``azure:``, ``local:``...), validated by the model that cloud's backend
    registered; ``section()`` reads one.
    """

    # Sections are kept as pydantic "extras", each validated by its backend's model
    # (see _validate_sections); anything else unknown is refused there.
    model_config = ConfigDict(extra="allow", validate_default=True)

    name: str = Field(
        description="Pipeline name: lowercase letters, digits and '-', 2 to 40 characters; "
        "prefixes job names."
    )
    cloud: str = Field(
        "local", description="Where to train: one of the registered clouds (the first of clouds)."
    )
    clouds: list[str] = Field(
        default_factory=list,
        max_length=MAX_ROUTE,
        description="A failover route: clouds in order, each with its section; attempts "
        "start on the first and move on with retry.strategy failover, the checkpoint "
        "copied along. Empty: cloud alone.",
    )
    code: CodeConfig = Field(description="The training script.")
    hyperparameters: dict[str, HyperparameterValue] = Field(
        default_factory=dict,
        description="Passed to the script as --name value and as JSON in SM_HPS.",
    )
    data: dict[str, str] = Field(
        default_factory=dict,
        description="Channel -> local file or folder, or an s3:// or azureml:// URI.",
    )
    input_modes: dict[str, InputMode] = Field(
        default_factory=dict,
        description="Channel -> how the job reads it: download (copied in before the "
        "script starts), fastfile or mount (streamed from where it is: SageMaker "
        "FastFile, Azure ML ro_mount, read in place locally), pipe (SageMaker's FIFO, for "
        "built-in algorithms that accept it and your own images). A channel not named "
        "here is read as the cloud does by default (SageMaker File, Azure ML's job input "
        "default, a copy locally).",
    )
    metrics: list[str] = Field(
        default_factory=list,
        description="Metric names the script prints as name=value.",
    )
    environment: EnvironmentConfig = Field(description="What the script runs in.")
    compute: ComputeConfig = Field(
        default_factory=ComputeConfig, description="Machines and time limits."
    )
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Attempts and recovery.")
    work_dir: Path = Field(
        DEFAULT_WORK_DIR,
        description="cloudtrain's own folder, relative to the config file: run records, "
        "downloaded models, upload hash caches, and the local backend's data and runs.",
    )
    budget: BudgetConfig | None = Field(
        None, description="A cost cap and a deadline for the whole run (both optional)."
    )
    secrets: dict[str, secret_refs.SecretRef] = Field(
        default_factory=dict,
        description="Environment variable the script reads -> where its value lives "
        "({env: NAME}, {prefect_secret: block}, {aws_secrets_manager: name or ARN}, "
        "{azure_key_vault: {vault, name}}); only the references are stored.",
    )
    tracking: TrackingConfig | None = Field(
        None,
        description="Experiment tracking with MLflow ({} logs to a local store in work_dir); "
        "left out: no tracking.",
    )

    sweep: SweepConfig | None = Field(
        None,
        description="Hyperparameter trials ({parameters, strategy, trials, max_parallel, "
        "objective, goal, seed}): each a full training with spot recovery and checkpoints "
        "of its own, ranked by objective. Budget and retry apply per trial.",
    )

    @property
    def route(self) -> list[str]:
        """The clouds attempts may run on, in order: ``clouds``, else ``cloud`` alone."""
        return list(self.clouds) or [self.cloud]

    def on_cloud(self, cloud: str) -> PipelineConfig:
        """This config pinned to ``cloud`` alone: no route, the instance type of that cloud.
        What a backend is given; a leg of a route is run with it."""
        if cloud == self.cloud and not self.clouds:
            return self
        return self.model_copy(
            update={"cloud": cloud, "clouds": [], "compute": self.compute.for_cloud(cloud)}
        )

    def sections(self) -> dict[str, BaseModel]:
        """Every cloud section the config holds, by cloud name."""
        return dict(self.__pydantic_extra__ or {})

    def section(self, name: str, model: type[S]) -> S | None:
        """The validated ``name:`` section, or None when the config has none. A mapping
        put there after validation (``model_copy(update=...)``) is validated now."""
        extra = self.__pydantic_extra__ or {}
        value = extra.get(name)
        if value is None:
            return None
        if isinstance(value, Mapping):
            try:
                extra[name] = value = model.model_validate(value)
            except ValidationError as exc:
                raise config_error(exc, prefix=(name,)) from None
        if not isinstance(value, model):
            raise TypeError(f"section {name!r} is a {type(value).__name__}, not {model.__name__}")
        return value

    @field_validator("cloud")
    @classmethod
    def _registered_cloud(cls, value: str) -> str:
        if not backends.is_cloud(value):
            raise ConfigError("cloud", backends.unknown_cloud_message(value))
        return value

    @field_validator("clouds")
    @classmethod
    def _registered_clouds(cls, value: list[str]) -> list[str]:
        for index, cloud in enumerate(value):
            if not backends.is_cloud(cloud):
                raise ConfigError(f"clouds[{index}]", backends.unknown_cloud_message(cloud))
        return value

    @model_validator(mode="after")
    def _route(self) -> PipelineConfig:
        """``cloud`` is the route's first; every cloud of it has an instance type; a route
        moves only with the failover strategy."""
        problems = Problems()
        if self.clouds and self.cloud != self.clouds[0]:
            problems.add(
                ConfigError(
                    "cloud",
                    f"is where the route starts, the first of clouds ({self.clouds[0]}); "
                    "leave it out or make it the same",
                )
            )
        if len(self.route) > 1 and self.retry.strategy != "failover":
            problems.add(
                ConfigError(
                    "retry.strategy",
                    f"{self.retry.strategy} stays on one cloud; a route of {len(self.route)} "
                    "clouds needs strategy failover (the default when clouds has several)",
                )
            )
        if self.retry.max_attempts < len(self.route):
            problems.add(
                ConfigError(
                    "retry.max_attempts",
                    f"{self.retry.max_attempts} attempt(s) cannot reach every cloud of a route "
                    f"of {len(self.route)}; give at least {len(self.route)}",
                )
            )
        types = self.compute.instance_types
        if types:
            for cloud in dict.fromkeys(self.route):
                if cloud not in types:
                    problems.add(
                        ConfigError(
                            "compute.instance_type",
                            f"names no instance type for {cloud} (it has {', '.join(types)})",
                        )
                    )
            unused = [cloud for cloud in types if cloud not in self.route]
            if unused and len(self.route) > 1:
                problems.add(
                    ConfigError(
                        f"compute.instance_type.{unused[0]}",
                        f"{unused[0]} is not in the route ({', '.join(self.route)})",
                    )
                )
        problems.raise_if_any()
        if types and self.cloud in types:
            self.compute.instance_type = types[self.cloud]
        return self

    @model_validator(mode="after")
    def _sweep_fits(self) -> PipelineConfig:
        """The sweep's objective is a metric and its parameters are valid names."""
        if self.sweep is not None:
            self.sweep.check_against(self.metrics, HYPERPARAMETER_PATTERN)
        return self

    @model_validator(mode="after")
    def _budget_priced(self) -> PipelineConfig:
        """``budget.max_cost`` is enforced from the price tables: every cloud of the route
        needs an instance type they price, else the cap would silently not apply."""
        if self.budget is None or self.budget.max_cost is None:
            return self
        from cloudtrain.prices import price

        problems = Problems()
        for cloud in dict.fromkeys(self.route):
            instance_type = self.compute.for_cloud(cloud).instance_type
            if price(instance_type) is None:
                field = "compute.instance_type"
                problems.add(
                    ConfigError(
                        f"{field}.{cloud}" if self.compute.instance_types else field,
                        f"{quote(instance_type)} has no price in cloudtrain's tables "
                        "(SageMaker ml.* types, Azure VM sizes), so budget.max_cost cannot be "
                        "enforced: use a priced type or leave max_cost out",
                    )
                )
        problems.raise_if_any()
        return self

    @field_validator("name")
    @classmethod
    def _name_format(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(
                f"{quote(value)} must be 2 to 40 lowercase letters, digits and '-', "
                "starting with a letter and not ending with '-'"
            )
        return value

    @field_validator("code")
    @classmethod
    def _code_exists(cls, value: CodeConfig, info: ValidationInfo) -> CodeConfig:
        """The entry point lives inside source_dir: that folder is what the clouds
        receive, and a path out of it would run (and report) any file here."""
        with _path_errors("code.source_dir", value.source_dir):
            value.source_dir = _absolute(_base_dir(info), value.source_dir)
            if not value.source_dir.is_dir():
                raise ConfigError("code.source_dir", f"{_shown(value.source_dir)} is not a folder")
            source = value.source_dir.resolve()
        if source == Path(source.anchor) or _system_folder(source):
            raise ConfigError(
                "code.source_dir",
                f"{_shown(source)} is a system folder; name the script's own folder",
            )
        with _path_errors("code.entry_point", value.entry_point):
            value.entry_point = _entry_point(source, value.entry_point)
        return value

    @field_validator("hyperparameters")
    @classmethod
    def _hyperparameter_names(
        cls, value: dict[str, HyperparameterValue]
    ) -> dict[str, HyperparameterValue]:
        for key in value:
            if not HYPERPARAMETER_PATTERN.fullmatch(key):
                raise ValueError(f"{quote(key)} is not a valid --argument name")
        masks = secret_refs.secret_hyperparameter_problems(value)
        if masks:
            raise ConfigError(problems=masks)
        secret_looking = [key for key in value if secret_refs.is_secret_name(key)]
        if secret_looking:
            warnings.warn(
                secret_refs.secret_hyperparameter_warning(secret_looking),
                secret_refs.SecretHyperparameterWarning,
                stacklevel=2,
            )
        return value

    @field_serializer("hyperparameters", when_used="json")
    def _mask_secret_looking(
        self, value: dict[str, HyperparameterValue], info: FieldSerializationInfo
    ) -> dict[str, HyperparameterValue]:
        """JSON copies (Prefect's stored flow-run parameters among them) mask
        secret-looking hyperparameters; ``context={"reveal_secrets": True}`` keeps them."""
        context = info.context if isinstance(info.context, dict) else {}
        return value if context.get("reveal_secrets") else secret_refs.masked(value)

    @field_validator("secrets")
    @classmethod
    def _secret_names(
        cls, value: dict[str, secret_refs.SecretRef]
    ) -> dict[str, secret_refs.SecretRef]:
        secret_refs.check_env_names(value)
        return value

    @field_validator("data")
    @classmethod
    def _channels(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        seen: dict[str, str] = {}
        for channel in value:
            if not CHANNEL_PATTERN.fullmatch(channel):
                raise ValueError(
                    f"channel {quote(channel)} must start with a letter and hold only "
                    "letters, digits and '_'"
                )
            if channel.upper() in seen:
                raise ValueError(
                    f"channels {seen[channel.upper()]!r} and {channel!r} would share "
                    f"SM_CHANNEL_{channel.upper()}"
                )
            seen[channel.upper()] = channel
        missing: list[Problem] = []
        for channel, location in value.items():
            if is_uri(location):
                continue
            try:
                with _path_errors(f"data.{channel}", location):
                    path = _absolute(_base_dir(info), Path(location))
                    if not path.exists():
                        raise ConfigError(f"data.{channel}", f"{_shown(path)} does not exist")
                    if _system_folder(path.resolve()) or not (path.is_file() or path.is_dir()):
                        raise ConfigError(
                            f"data.{channel}", f"{_shown(path)} is not a regular file or folder"
                        )
            except ConfigError as exc:
                missing += exc.problems
                continue
            value[channel] = str(path)
        if missing:
            raise ConfigError(problems=missing)
        return value

    @model_validator(mode="after")
    def _modes_of_channels(self) -> PipelineConfig:
        """A mode for a channel the config does not have is a typo, not a no-op."""
        problems = Problems()
        for channel in self.input_modes:
            if channel not in self.data:
                problems.add(
                    ConfigError(
                        f"input_modes.{quote(channel) if len(channel) > 40 else channel}",
                        f"names no channel of data ({', '.join(self.data) or 'none'})",
                    )
                )
        problems.raise_if_any()
        return self

    def input_mode(self, channel: str) -> InputMode | None:
        """The mode ``input_modes`` gives ``channel``; None: the cloud's default."""
        return self.input_modes.get(channel)

    @field_validator("metrics")
    @classmethod
    def _metric_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not METRIC_PATTERN.fullmatch(name):
                raise ValueError(f"{quote(name)} is not a valid metric name")
        if len(set(value)) != len(value):
            raise ValueError("metric names repeat")
        return value

    @field_validator("work_dir", mode="before")
    @classmethod
    def _work_dir_named(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must name a folder (it defaults to .cloudtrain beside the config)")
        return value

    @field_validator("work_dir")
    @classmethod
    def _work_dir(cls, value: Path, info: ValidationInfo) -> Path:
        if any(len(part.encode()) > NAME_MAX_BYTES for part in value.parts):
            raise ValueError(f"a folder name in it is longer than {NAME_MAX_BYTES} bytes")
        with _path_errors("work_dir", value):
            path = _absolute(_base_dir(info), value)
            if path.exists() and not path.is_dir():
                raise ValueError(f"{_shown(path)} is a file, not a folder")
            if _system_folder(path.resolve()):
                raise ValueError(f"{_shown(path)} is a system folder; name a folder of your own")
            existing = next(folder for folder in (path, *path.parents) if _exists(folder))
            if not existing.is_dir():
                raise ValueError(f"{_shown(existing)} is a file, not a folder")
            if not os.access(existing, os.W_OK | os.X_OK):
                raise ValueError(f"cannot write in {_shown(existing)}")
        return path

    @model_validator(mode="wrap")
    @classmethod
    def _validate_sections(
        cls, data: Any, handler: Callable[[Any], PipelineConfig]
    ) -> PipelineConfig:
        """Core fields by pydantic, each section by its backend's model, all errors at
        once; then the sections' checks that need the whole config."""
        if not isinstance(data, Mapping):
            return handler(data)
        unsafe = list(_unsafe_text(data, ""))
        if unsafe:  # before any check reads a path or a name with a NUL in it
            raise ConfigError(problems=unsafe)
        core, raw_sections, problems = _split_sections(dict(data))
        _route_defaults(core)
        sections: dict[str, BaseModel] = {}
        for name, raw in raw_sections.items():
            try:
                sections[name] = _validate_section(name, raw)
            except ValidationError as exc:
                problems += config_error(exc, prefix=(name,)).problems
            except ConfigError as exc:  # not a registered cloud, or its backend failed
                problems += exc.problems
        try:
            config = handler(core)
        except ValidationError as exc:
            core_problems = config_error(exc).problems
            if core.get("work_dir") is not data.get("work_dir"):  # moved from local.root
                core_problems = tuple(_renamed(p, "work_dir", "local.root") for p in core_problems)
            problems = [*core_problems, *problems]
        if problems:  # one error holding every problem, each with its field
            raise ConfigError(problems=problems)
        for name, section in sections.items():
            setattr(config, name, section)
        checks = Problems()
        for section in sections.values():
            if isinstance(section, Section):
                with checks.check():
                    section.check_config(config)
        checks.raise_if_any()
        return config

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The sections of every registered cloud in the form Prefect's UI draws, and the
        registered names as the choices of ``cloud``."""
        json_schema = handler(schema)
        target = handler.resolve_ref_schema(json_schema)
        properties = target.setdefault("properties", {})
        properties["cloud"]["enum"] = backends.cloud_names()
        for name, model in backends.section_models().items():
            properties[name] = {  # optional, as a config without the section
                "anyOf": [handler(model.__pydantic_core_schema__), {"type": "null"}],
                "default": None,
                "description": (model.__doc__ or "").strip().splitlines()[0],
            }
        target["additionalProperties"] = False
        return json_schema


def code_exclusions(config: PipelineConfig) -> tuple[Path, ...]:
    """Folders under ``code.source_dir`` that are not the code: ``work_dir`` when it sits
    inside (the default layout: ``.`` and ``./.cloudtrain``). Its logs, data store and
    downloaded models would change the code digest on every run (so retraining was never
    skipped) and ship in every code archive."""
    source, work = config.code.source_dir.resolve(), config.work_dir.resolve()
    return (work,) if work != source and work.is_relative_to(source) else ()


def is_excluded(path: Path, excluded: tuple[Path, ...]) -> bool:
    """True when ``path`` is one of ``excluded`` or lies under one. A link that cannot be
    resolved (a loop) is not an excluded folder: what to do with it is the caller's."""
    if not excluded:
        return False
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return False
    return any(resolved.is_relative_to(folder) for folder in excluded)


def check_parameter_size(config: PipelineConfig) -> None:
    """The config travels to Prefect as a flow-run parameter, serialized as Prefect
    measures it; too large a one is refused here, naming where the bulk is, rather than
    by the server in a traceback. The limit follows PREFECT_SERVER_API_MAX_PARAMETER_SIZE
    when it is set (0 turns it off, as in Prefect)."""
    setting = os.environ.get("PREFECT_SERVER_API_MAX_PARAMETER_SIZE", "")
    limit = int(setting) if setting.isdigit() else PREFECT_MAX_PARAMETER_SIZE
    value: Any = config.model_dump(mode="json")
    size = _json_size(value) + _OTHER_PARAMETERS_BYTES
    if not limit or size <= limit:
        return
    path = ""
    while isinstance(value, dict) and value:  # down to the part that holds most of it
        key, biggest = max(value.items(), key=lambda item: _json_size(item[1]))
        if _json_size(biggest) * 2 < _json_size(value):
            break
        path, value = (f"{path}.{key}" if path else str(key)), biggest
    raise ConfigError(
        path or "config",
        f"the config is {size:,} bytes as a Prefect flow-run parameter; Prefect takes at "
        f"most {limit:,} (PREFECT_SERVER_API_MAX_PARAMETER_SIZE)",
    )


def _json_size(value: Any) -> int:
    """Bytes as Prefect measures parameters: compact JSON, ASCII-escaped."""
    return len(json.dumps(value, separators=(",", ":")))


def _entry_point(source: Path, entry_point: str) -> str:
    """The entry point as the clouds receive it: a POSIX path relative to ``source``
    with no ``.``, ``..`` or trailing ``/`` (SageMaker runs ``sagemaker_program`` as
    written), naming a regular file inside ``source``."""
    relative = Path(entry_point)
    if not entry_point.strip() or relative.is_absolute():
        raise ConfigError(
            "code.entry_point", "must be a path relative to code.source_dir, e.g. train.py"
        )
    path = source / relative
    if not path.resolve().is_relative_to(source):
        raise ConfigError(
            "code.entry_point",
            f"{quote(entry_point)} leads out of code.source_dir ({_shown(source)}); "
            "the script must live inside it",
        )
    normal = posixpath.normpath(relative.as_posix())
    if normal.startswith("../") or (source / normal).resolve() != path.resolve():
        raise ConfigError(
            "code.entry_point",
            f"{quote(entry_point)} goes through a link and '..'; write the script's path "
            "inside code.source_dir without '..'",
        )
    if not path.is_file():
        raise ConfigError(
            "code.entry_point", f"{_shown(path)} does not exist or is not a regular file"
        )
    return normal


#: How much of a path a message shows: its end, where the name that is wrong usually is.
_PATH_CHARS = 80


def _shown(path: Path | str) -> str:
    """A path for a message, cut to its last few dozen characters when long."""
    text = str(path)
    return text if len(text) <= _PATH_CHARS else "…" + text[-(_PATH_CHARS - 1) :]


@contextmanager
def _path_errors(field: str, value: Path | str) -> Iterator[None]:
    """Any OSError a path check meets (a name over 255 bytes, a path over PATH_MAX, a
    folder we may not search) is the field's problem, in one line: not a traceback
    quoting the whole path."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(field, f"{quote(str(value))} cannot be used: {reason}") from None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a folder on the way that we may not search
        return False


def _system_folder(path: Path) -> bool:
    return any(path.is_relative_to(folder) for folder in SYSTEM_FOLDERS)


def _renamed(problem: Problem, field: str, to: str) -> Problem:
    return Problem(to, problem.message) if problem.field == field else problem


#: How deep the unsafe-text walk looks; no field of a config nests this deep.
_MAX_WALK_DEPTH = 16


def _unsafe_text(value: Any, path: str, depth: int = 0) -> Iterator[Problem]:
    """Every string (key or value) holding a character that cannot travel as an
    argument, an environment variable or a path, and every bytes value (a config built
    in Python): pydantic turns bytes into a string after this walk."""
    if isinstance(value, bytes | bytearray):  # pydantic would decode it past this check
        yield Problem(path or "config", "is bytes; a config holds text")
    elif isinstance(value, str):
        match = UNSAFE_CHARACTERS.search(value)
        if match:
            yield Problem(
                path or "config",
                f"holds the control character U+{ord(match.group()):04X} at character "
                f"{match.start()}: it cannot travel in arguments, environment or paths",
            )
    elif depth < _MAX_WALK_DEPTH and isinstance(value, Mapping):
        for key, item in value.items():
            key_path = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and UNSAFE_CHARACTERS.search(key):
                key_path = f"{path}.{quote(key)}" if path else quote(key)
                yield from _unsafe_text(key, key_path, depth + 1)
            yield from _unsafe_text(item, key_path, depth + 1)
    elif depth < _MAX_WALK_DEPTH and isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _unsafe_text(item, f"{path}[{index}]", depth + 1)


def _base_dir(info: ValidationInfo) -> Path:
    context = info.context if isinstance(info.context, dict) else {}
    return Path(context.get("base_dir") or Path.cwd())


def _split_sections(
    data: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], list[Problem]]:
    """(core fields, sections, problems); a deprecated ``local.root`` moves to ``work_dir``."""
    core = {key: value for key, value in data.items() if key in PipelineConfig.model_fields}
    sections = {
        key: value
        for key, value in data.items()
        if key not in PipelineConfig.model_fields and value is not None
    }
    problems: list[Problem] = []
    local = sections.get("local")
    root = local.get("root") if isinstance(local, Mapping) else getattr(local, "root", None)
    if root is not None:
        warnings.warn(
            "local.root is deprecated: it is the folder of every backend, not only the "
            "local one; write it as the top-level work_dir",
            FutureWarning,
            stacklevel=2,
        )
        if isinstance(local, Mapping):
            sections["local"] = {key: value for key, value in local.items() if key != "root"}
        elif isinstance(local, BaseModel):  # a LocalConfig built in Python
            sections["local"] = local.model_copy(update={"root": None})
        if core.get("work_dir") not in (None, root):
            problems.append(
                Problem("local.root", "is the deprecated name of work_dir; set only one")
            )
        else:
            core["work_dir"] = root
    return core, sections, problems


def _route_defaults(core: dict[str, Any]) -> None:
    """With ``clouds`` and no ``cloud``, the run starts on the first; a route of several
    clouds recovers with ``failover`` unless the config names a strategy."""
    clouds = core.get("clouds")
    if not isinstance(clouds, list) or not clouds:
        return
    if core.get("cloud") is None and isinstance(clouds[0], str):
        core["cloud"] = clouds[0]
    retry = core.get("retry")
    if len(clouds) > 1 and (retry is None or isinstance(retry, Mapping)):
        retry = dict(retry or {})
        if retry.get("strategy") is None:
            core["retry"] = {**retry, "strategy": "failover"}


def _validate_section(name: str, raw: Any) -> BaseModel:
    if not backends.is_cloud(name):
        raise ConfigError(_dotted((name,)), _unknown_key_message((name,)))
    model = backends.settings_model(name)
    if model is None:
        raise ConfigError(name, f"cloud {name} takes no settings section")
    return raw if isinstance(raw, model) else model.model_validate(raw)


def is_uri(location: str) -> bool:
    """True for s3://, azureml://, azureml:name:version and other URIs used as they are."""
    return bool(URI_PATTERN.match(location))


def _absolute(base_dir: Path, path: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def unknown_name_message(what: str, value: str, valid: Any) -> str:
    """``unknown framework 'sklern'; valid: ... (did you mean 'sklearn'?)``."""
    names = sorted(valid)
    message = f"unknown {what} {quote(value)}; valid: {', '.join(names)}"
    close = difflib.get_close_matches(value, names, n=1) if len(value) <= 100 else []
    return message + (f" (did you mean {close[0]!r}?)" if close else "")


# --- loading, overrides and error messages -------------------------------------------


@contextmanager
def deprecations_as_lines(write: Callable[[str], None]) -> Iterator[None]:
    """The config's deprecations (FutureWarning) as ``cloudtrain: warning: ...`` lines
    for a person, not Python's file:line form; also when validation then fails."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FutureWarning)
        try:
            yield
        finally:
            for warning in caught:
                if issubclass(warning.category, FutureWarning):
                    write(f"cloudtrain: warning: {warning.message}")
                else:  # someone else's: shown as it would have been
                    warnings.showwarning(
                        warning.message, warning.category, warning.filename, warning.lineno
                    )


def load_config(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    cloud: str | None = None,
) -> PipelineConfig:
    """Read a YAML config, apply ``--set key.path=value`` and ``--cloud``, validate."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError("", f"cannot read config {path}: {exc.strerror}") from None
    raw = load_yaml(data, source=str(path))
    if not isinstance(raw, dict):
        raise ConfigError("", f"{path} must hold a mapping of settings")
    for override in overrides:
        apply_override(raw, override)
    if cloud is not None:  # --cloud runs on that cloud alone, whatever route the file names
        raw["cloud"] = cloud
        raw.pop("clouds", None)
    return validate_config(raw, base_dir=path.resolve().parent)


def validate_config(raw: dict[str, Any], base_dir: Path | None = None) -> PipelineConfig:
    """Validate a raw mapping; every problem found goes into one ConfigError."""
    try:
        return PipelineConfig.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise config_error(exc) from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``key.path=value`` in a raw config; the value is read as YAML."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError("--set", f"{quote(override)} is not key.path=value")
    field = f"--set {quote(key.strip()) if len(key) > 40 else key.strip()}"
    value = load_yaml(text, source="value", field=field) if text.strip() else ""
    parts = key.strip().split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(field, f"{where} is not a section")
        node = child
    node[parts[-1]] = value


def config_error(exc: ValidationError, prefix: tuple[str, ...] = ()) -> ConfigError:
    """Turn pydantic's report into one problem per field, each naming its field path
    (under ``prefix`` for a section validated on its own)."""
    problems: list[Problem] = []
    union_fields: set[tuple[int | str, ...]] = set()
    for error in exc.errors(include_url=False):
        loc = (*prefix, *error["loc"])
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigError):
            problems += [p for p in cause.problems if p not in problems]
        elif _in_union(loc):
            # One error per member of a union: say once what the field takes.
            if loc[:-1] not in union_fields:
                union_fields.add(loc[:-1])
                problems.append(Problem(_dotted(loc[:-1]), _union_message(loc, error["input"])))
        else:
            problems.append(Problem(_dotted(loc), _message(error, loc)))
    return ConfigError(problems=problems)


#: The names pydantic puts in an error's location for a member of a union: a
#: hyperparameter's value (``hyperparameters.<name>.<member>``) or a list's item
#: (``local.spot_interruptions.<index>.<member>``).
_UNION_MEMBERS = frozenset({"bool", "int", "float", "str"})


def _in_union(loc: tuple[int | str, ...]) -> bool:
    if len(loc) < 2 or str(loc[-1]) not in _UNION_MEMBERS:
        return False
    return (len(loc) == 3 and loc[0] == "hyperparameters") or isinstance(loc[-2], int)


def _union_message(loc: tuple[int | str, ...], value: Any) -> str:
    if isinstance(value, float):  # of floats, only NaN and infinity are refused
        return f"must be a finite number (got {value})"
    if loc[0] == "hyperparameters":
        return f"must be a string, a number or true/false (got {quote(value)})"
    return f"must be a number or a string (got {quote(value)})"


def _dotted(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, str) and len(part) > 40:  # a key of any length may be unknown
            part = quote(part)
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def _message(error: Any, loc: tuple[int | str, ...]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key_message(loc)
    if kind == "missing":
        return "is required"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind in ("value_error", "assertion_error") or kind.startswith(("literal_", "enum")):
        return message
    return f"{message} (got {quote(error['input'])})"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model a location points into: the config, a cloud's section, or a nested model."""
    model: type[BaseModel] | None = PipelineConfig
    parts = list(loc)
    if parts and str(parts[0]) not in PipelineConfig.model_fields:
        model = backends.section_models().get(str(parts.pop(0)))
    for part in parts:
        field = model.model_fields.get(part) if model and isinstance(part, str) else None
        annotation = field.annotation if field else None
        model = next(
            (
                arg
                for arg in (getattr(annotation, "__args__", None) or (annotation,))
                if isinstance(arg, type) and issubclass(arg, BaseModel)
            ),
            None,
        )
    return model


def _unknown_key_message(loc: tuple[int | str, ...]) -> str:
    model = _model_at(tuple(loc[:-1]))
    if model is None:
        return "unknown key"
    valid = sorted(model.model_fields)
    if model is PipelineConfig:  # the top level also takes a section per cloud
        valid = sorted({*valid, *backends.section_models()})
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key{hint} (valid: {', '.join(valid)})"
