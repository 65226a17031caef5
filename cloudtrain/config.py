"""The pipeline config: the YAML a user writes, as strict pydantic models.

Every field has a description because Prefect renders flow parameters as a form from
them. Unknown keys are errors, and every error names its field path, so that
``cloudtrain run`` can refuse bad input in one line before anything is created.
Paths are resolved against the config file's folder (``base_dir`` in the validation
context; the working directory when a config is built in Python or from the UI).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cloudtrain import recovery
from cloudtrain.errors import ConfigError

Cloud = Literal["local", "aws", "azure"]
CLOUDS: tuple[str, ...] = ("local", "aws", "azure")

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
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")
CHANNEL_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
HYPERPARAMETER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,255}$")
METRIC_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,254}$")
URI_PATTERN = re.compile(r"^([a-z][a-z0-9+.-]*://|azureml:)")

HyperparameterValue = bool | int | float | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


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


class ComputeConfig(_Strict):
    """The machines an attempt runs on and how long it may take."""

    instance_type: str = Field(
        "ml.m5.large",
        description="SageMaker ml.* instance type or Azure VM size (Standard_DS3_v2).",
    )
    instance_count: int = Field(1, ge=1, le=100, description="Number of machines.")
    spot: bool = Field(
        False,
        description="Run on spot (SageMaker managed spot, Azure low priority): cheaper, "
        "but an attempt can be reclaimed and is then resumed from its checkpoints.",
    )
    max_run: int = Field(
        3600, ge=1, le=28 * 24 * 3600, description="Seconds of training per attempt."
    )
    max_wait: int | None = Field(
        None,
        ge=1,
        description="Seconds per attempt including waiting for spot capacity; "
        ">= max_run. Defaults to max_run.",
    )

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

    max_attempts: int = Field(
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

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        recovery.strategy_class(value)  # raises with the valid names
        return value


class AwsConfig(_Strict):
    """Where SageMaker jobs run and keep their data."""

    region: str = Field("us-east-1", description="AWS region.")
    role: str | None = Field(None, description="IAM role ARN the training job assumes.")
    bucket: str | None = Field(None, description="S3 bucket for data and models.")
    prefix: str = Field("cloudtrain", description="Key prefix inside the bucket.")
    verify_uploads: bool = Field(
        False,
        description="LIST each channel's S3 prefix even when its manifest shows no change, "
        "to upload again objects deleted by hand (one LIST per 1,000 files).",
    )
    credentials_block: str | None = Field(
        None, description="Name of a prefect-aws AwsCredentials block (else boto3's chain)."
    )


class AzureConfig(_Strict):
    """Which Azure ML workspace runs the jobs and on what compute."""

    subscription_id: str | None = Field(None, description="Azure subscription id.")
    resource_group: str | None = Field(None, description="Resource group.")
    workspace: str | None = Field(None, description="Azure ML workspace name.")
    compute: str | None = Field(None, description="Compute target name.")
    compute_type: Literal["amlcompute", "computeinstance", "kubernetes", "serverless"] = Field(
        "amlcompute", description="Kind of compute target."
    )
    min_instances: int = Field(0, ge=0, description="Cluster minimum nodes.")
    max_instances: int = Field(4, ge=1, description="Cluster maximum nodes.")
    idle_time_before_scale_down: int = Field(
        120, ge=0, description="Seconds a node idles before the cluster scales down."
    )
    datastore: str = Field("workspaceblobstore", description="Datastore for data.")
    prefix: str = Field("cloudtrain", description="Path prefix inside the datastore.")
    register_model: bool = Field(
        False, description="Register the trained model in the workspace, named after the pipeline."
    )
    credentials_block: str | None = Field(
        None,
        description="Name of a prefect-azure credentials block (else DefaultAzureCredential).",
    )


class LocalConfig(_Strict):
    """The local backend: where it keeps runs, and simulated spot reclaims."""

    root: Path = Field(
        Path(".cloudtrain"),
        description="Folder for the data store and runs, relative to the config file.",
    )
    spot_interruptions: list[float | str] = Field(
        default_factory=list,
        description="Simulated spot reclaims, entry N for attempt N: a number reclaims "
        "that many seconds after the attempt starts, a string (a regular expression) "
        "when a line of the script's output matches it. Needs compute.spot.",
    )
    grace_period: float = Field(
        5.0,
        gt=0,
        le=600,
        description="Seconds between SIGTERM and SIGKILL on a reclaim or a timeout.",
    )

    @field_validator("spot_interruptions")
    @classmethod
    def _valid_triggers(cls, value: list[float | str]) -> list[float | str]:
        for index, trigger in enumerate(value):
            if isinstance(trigger, str):
                try:
                    re.compile(trigger)
                except re.error as exc:
                    raise ValueError(f"[{index}] is not a regular expression: {exc}") from None
            elif trigger < 0:
                raise ValueError(f"[{index}] must be >= 0 seconds")
        return value


class PipelineConfig(_Strict):
    """One training pipeline: the script, its data, where and how it trains."""

    name: str = Field(
        description="Pipeline name: lowercase letters, digits and '-', 2 to 40 characters; "
        "prefixes job names."
    )
    cloud: Cloud = Field("local", description="Where to train: local, aws or azure.")
    code: CodeConfig = Field(description="The training script.")
    hyperparameters: dict[str, HyperparameterValue] = Field(
        default_factory=dict,
        description="Passed to the script as --name value and as JSON in SM_HPS.",
    )
    data: dict[str, str] = Field(
        default_factory=dict,
        description="Channel -> local file or folder, or an s3:// or azureml:// URI.",
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
    aws: AwsConfig | None = Field(None, description="SageMaker settings (cloud: aws).")
    azure: AzureConfig | None = Field(None, description="Azure ML settings (cloud: azure).")
    local: LocalConfig = Field(default_factory=LocalConfig, description="Local backend settings.")

    @field_validator("name")
    @classmethod
    def _name_format(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(
                f"{value!r} must be 2 to 40 lowercase letters, digits and '-', "
                "starting with a letter and not ending with '-'"
            )
        return value

    @field_validator("hyperparameters")
    @classmethod
    def _hyperparameter_names(
        cls, value: dict[str, HyperparameterValue]
    ) -> dict[str, HyperparameterValue]:
        for key in value:
            if not HYPERPARAMETER_PATTERN.match(key):
                raise ValueError(f"{key!r} is not a valid --argument name")
        return value

    @field_validator("data")
    @classmethod
    def _channel_names(cls, value: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for channel in value:
            if not CHANNEL_PATTERN.match(channel):
                raise ValueError(
                    f"channel {channel!r} must start with a letter and hold only "
                    "letters, digits and '_'"
                )
            if channel.upper() in seen:
                raise ValueError(
                    f"channels {seen[channel.upper()]!r} and {channel!r} would share "
                    f"SM_CHANNEL_{channel.upper()}"
                )
            seen[channel.upper()] = channel
        return value

    @field_validator("metrics")
    @classmethod
    def _metric_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not METRIC_PATTERN.match(name):
                raise ValueError(f"{name!r} is not a valid metric name")
        if len(set(value)) != len(value):
            raise ValueError("metric names repeat")
        return value

    @model_validator(mode="after")
    def _resolve_and_check(self, info: ValidationInfo) -> PipelineConfig:
        context = info.context if isinstance(info.context, dict) else {}
        base_dir = Path(context.get("base_dir") or Path.cwd())
        self.code.source_dir = _absolute(base_dir, self.code.source_dir)
        if not self.code.source_dir.is_dir():
            raise ConfigError("code.source_dir", f"{self.code.source_dir} is not a folder")
        entry_point = self.code.source_dir / self.code.entry_point
        if not entry_point.is_file():
            raise ConfigError("code.entry_point", f"{entry_point} does not exist or is not a file")
        for channel, location in self.data.items():
            if is_uri(location):
                continue
            path = _absolute(base_dir, Path(location))
            if not path.exists():
                raise ConfigError(f"data.{channel}", f"{path} does not exist")
            self.data[channel] = str(path)
        self.local.root = _absolute(base_dir, self.local.root)
        if self.local.spot_interruptions and not self.compute.spot:
            raise ConfigError(
                "local.spot_interruptions",
                "simulates spot reclaims, so it needs compute.spot: true",
            )
        return self


def is_uri(location: str) -> bool:
    """True for s3://, azureml://, azureml:name:version and other URIs used as they are."""
    return bool(URI_PATTERN.match(location))


def _absolute(base_dir: Path, path: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def unknown_name_message(what: str, value: str, valid: Any) -> str:
    """``unknown framework 'sklern'; valid: ... (did you mean 'sklearn'?)``."""
    names = sorted(valid)
    message = f"unknown {what} {value!r}; valid: {', '.join(names)}"
    close = difflib.get_close_matches(value, names, n=1)
    return message + (f" (did you mean {close[0]!r}?)" if close else "")


# --- loading, overrides and error messages -------------------------------------------


def load_config(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    cloud: str | None = None,
) -> PipelineConfig:
    """Read a YAML config, apply ``--set key.path=value`` and ``--cloud``, validate."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("", f"cannot read config {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError("", f"{path} must hold a mapping of settings")
    for override in overrides:
        apply_override(raw, override)
    if cloud is not None:
        raw["cloud"] = cloud
    return validate_config(raw, base_dir=path.resolve().parent)


def validate_config(raw: dict[str, Any], base_dir: Path | None = None) -> PipelineConfig:
    """Validate a raw mapping; the first problem becomes one ConfigError."""
    try:
        return PipelineConfig.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise config_error(exc) from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``key.path=value`` in a raw config; the value is read as YAML."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError("--set", f"{override!r} is not key.path=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}", f"value is not valid YAML: {exc}") from None
    parts = key.strip().split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {key}", f"{where} is not a section")
        node = child
    node[parts[-1]] = value


def config_error(exc: ValidationError) -> ConfigError:
    """Turn pydantic's report into one line naming the field path."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    cause = (first.get("ctx") or {}).get("error")
    loc = tuple(first["loc"])
    union_member = bool(loc) and str(loc[-1]) in _UNION_MEMBERS
    if isinstance(cause, ConfigError):
        field, message = cause.field, cause.message
    elif union_member:  # one error per member of a union: say what the field takes once
        field = _dotted(loc[:-1])
        errors = [e for e in errors if tuple(e["loc"])[:-1] != loc[:-1]] + [first]
        message = f"must be a string, a number or true/false (got {first['input']!r})"
    else:
        field = _dotted(loc)
        message = _message(first)
    more = len(errors) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(field, message)


#: The names pydantic puts in an error's location for a member of a union.
_UNION_MEMBERS = frozenset({"bool", "int", "float", "str"})


def _dotted(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key_message(error["loc"])
    if kind == "missing":
        return "is required"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind in ("value_error", "assertion_error") or kind.startswith(("literal_", "enum")):
        return message
    return f"{message} (got {error['input']!r})"


def _unknown_key_message(loc: tuple[int | str, ...]) -> str:
    model: Any = PipelineConfig
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field else None
        model = next(
            (
                arg
                for arg in (getattr(annotation, "__args__", None) or (annotation,))
                if isinstance(arg, type) and issubclass(arg, BaseModel)
            ),
            None,
        )
        if model is None:
            return "unknown key"
    valid = sorted(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key{hint} (valid: {', '.join(valid)})"
