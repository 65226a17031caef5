"""Secrets: references in the config, values only in the training script's environment.

A config's ``secrets:`` section maps the environment variable a script reads to where
its value lives::

    secrets:
      WANDB_API_KEY: {env: WANDB_API_KEY}           # the orchestrator's environment
      DB_PASSWORD: {prefect_secret: db-password}    # a Prefect Secret block
      HF_TOKEN: {aws_secrets_manager: hf-token}     # a name or ARN in AWS Secrets Manager
      X: {azure_key_vault: {vault: my-vault, name: x}}

Only references are ever stored (config, flow-run parameters, artifacts, plans). Values
are resolved when a run starts (``resolve``), on the path that needs them, and are
masked in every line cloudtrain forwards (``Redactor``). Hyperparameters whose names
look secret (``is_secret_name``) are masked wherever cloudtrain prints them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cloudtrain import secrets_launcher as launcher
from cloudtrain.errors import BackendError, ConfigError, Problem, Problems

#: What cloudtrain prints instead of a secret (pydantic's ``SecretStr`` shows the same).
MASK = "**********"

#: The kinds of reference, in the order the docs list them.
KINDS: tuple[str, ...] = ("env", "prefect_secret", "aws_secrets_manager", "azure_key_vault")

#: An environment variable name a script can read (POSIX form, kept short).
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
#: Names the script contract, the interpreter or the clouds set themselves.
RESERVED_PREFIXES = ("SM_", "CLOUDTRAIN_", "PYTHON", "LD_", "AWS_", "AZUREML_", "PREFECT_")
RESERVED_NAMES = frozenset({"PATH", "HOME", "USER", "SHELL", "PWD", "TMPDIR", "LANG"})

#: Secrets shorter than this are not masked in output: a 1-3 character value would mask
#: every occurrence of, say, "1" in the log and hide nothing worth hiding.
MIN_MASKED_CHARS = 4

#: A hyperparameter name is secret-looking when one of its words is one of these ...
_SECRET_WORDS = frozenset(
    {"password", "passwd", "passphrase", "secret", "token", "apikey", "credential", "credentials"}
)
#: ... or two adjacent words are one of these (so ``num_keys`` and ``key_size`` are not).
_SECRET_PAIRS = frozenset(
    {("api", "key"), ("access", "key"), ("private", "key"), ("account", "key"), ("auth", "key")}
)
#: Tokenizer settings are not credentials: ``pad_token: "<pad>"`` stays readable.
_TOKENIZER_WORDS = frozenset({"pad", "eos", "bos", "unk", "sep", "cls", "mask"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def is_secret_name(name: str) -> bool:
    """True for ``password``, ``db_passwd``, ``client_secret``, ``hf_token``, ``api_key``,
    ``apiKey``, ``aws-access-key``, ``credentials``...; False for ``num_keys``,
    ``key_size``, ``max_tokens``, ``pad_token``."""
    words = [word for word in re.split(r"[_.\-]+", _CAMEL.sub("_", name).lower()) if word]
    for index, word in enumerate(words):
        before = words[index - 1] if index else ""
        if word == "token" and before in _TOKENIZER_WORDS:
            continue
        if word in _SECRET_WORDS or (before, word) in _SECRET_PAIRS:
            return True
    return False


def masked(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters as cloudtrain prints them: secret-looking ones as ``MASK``."""
    return {
        name: MASK if is_secret_name(name) else value for name, value in hyperparameters.items()
    }


def secret_hyperparameter_problems(hyperparameters: Mapping[str, Any]) -> list[Problem]:
    """A secret-looking hyperparameter holding ``MASK``: a masked copy read back (a rerun of
    a flow run whose parameters Prefect stored masked) would train with ``**********``."""
    return [
        Problem(
            f"hyperparameters.{name}",
            f"is the mask {MASK} (a stored copy), not a value; move it to secrets:",
        )
        for name, value in hyperparameters.items()
        if is_secret_name(name) and value == MASK
    ]


def secret_hyperparameter_warning(names: Iterable[str]) -> str:
    listed = ", ".join(sorted(names))
    return (
        f"hyperparameters {listed} look like secrets: cloudtrain masks them where it prints "
        "and stores them, but the cloud's job and a deployment's parameters show them as "
        "written; move them to the secrets: section (README: Secrets)"
    )


class SecretHyperparameterWarning(FutureWarning):
    """A hyperparameter looks like a secret; FutureWarning so the CLI shows it as a line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyVaultSecret(_Strict):
    """A secret in Azure Key Vault."""

    vault: str = Field(description="Key Vault name (or its https://... URL).")
    name: str = Field(description="Secret name in the vault.")
    version: str | None = Field(None, description="Secret version; the latest when unset.")

    @field_validator("vault")
    @classmethod
    def _vault_name(cls, value: str) -> str:
        if not re.fullmatch(r"([A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]|https://[\w.-]+/?)", value):
            raise ValueError("must be a Key Vault name (3-24 letters, digits, '-') or its URL")
        return value

    @field_validator("name")
    @classmethod
    def _secret_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9-]{1,127}", value):
            raise ValueError("must be 1-127 letters, digits and '-'")
        return value

    @property
    def vault_url(self) -> str:
        return launcher.vault_url(self.vault)


class SecretRef(_Strict):
    """Where one secret's value lives: exactly one of env, prefect_secret,
    aws_secrets_manager, azure_key_vault."""

    env: str | None = Field(None, description="An environment variable of the orchestrator.")
    prefect_secret: str | None = Field(None, description="The name of a Prefect Secret block.")
    aws_secrets_manager: str | None = Field(
        None, description="A secret's name or ARN in AWS Secrets Manager."
    )
    azure_key_vault: KeyVaultSecret | None = Field(
        None, description="A secret in Azure Key Vault: vault and name."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        chosen = [kind for kind in KINDS if getattr(self, kind) is not None]
        if len(chosen) != 1:
            got = ", ".join(chosen) if chosen else "none"
            raise ValueError(f"set exactly one of {', '.join(KINDS)} (got {got})")
        return self

    @field_validator("env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.fullmatch(value):
            raise ValueError(f"{value[:40]!r} is not an environment variable name")
        return value

    @field_validator("prefect_secret")
    @classmethod
    def _block_name(cls, value: str | None) -> str | None:
        # Prefect's block names: lowercase letters, digits and dashes.
        if value is not None and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,127}", value):
            raise ValueError(f"{value[:40]!r} is not a Prefect block name (a-z, 0-9, '-')")
        return value

    @field_validator("aws_secrets_manager")
    @classmethod
    def _secret_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w/+=.@:-]{1,2048}", value):
            raise ValueError(f"{value[:40]!r} is not a Secrets Manager name or ARN")
        return value

    @property
    def kind(self) -> str:
        return next(kind for kind in KINDS if getattr(self, kind) is not None)

    def for_job(self) -> dict[str, Any]:
        """The reference as the job's launcher reads it (``secrets_launcher.fetch``)."""
        return self.model_dump(mode="json", exclude_none=True)

    def describe(self) -> str:
        """``env WANDB_API_KEY``: what ``plan`` and the report show in place of a value."""
        target = getattr(self, self.kind)
        if isinstance(target, KeyVaultSecret):
            target = f"{target.vault}/{target.name}"
        return f"{self.kind} {target}"


def check_env_names(secrets: Mapping[str, SecretRef]) -> None:
    """The section's keys are environment variables the script reads: refuse names that
    are not, and names the contract, the interpreter or a cloud sets."""
    problems: list[Problem] = []
    for name in secrets:
        if not ENV_NAME.fullmatch(name):
            problems.append(Problem(f"secrets.{name[:40]}", "is not an environment variable name"))
        elif name.upper().startswith(RESERVED_PREFIXES) or name.upper() in RESERVED_NAMES:
            problems.append(
                Problem(f"secrets.{name}", "is set by the script contract, Python or the cloud")
            )
    if problems:
        raise ConfigError(problems=problems)


def launcher_source() -> bytes:
    """The launcher a cloud job runs first (``secrets_launcher.py``), as shipped."""
    return Path(launcher.__file__).read_bytes()


def job_references(secrets: Mapping[str, SecretRef], kinds: Iterable[str]) -> str:
    """``CLOUDTRAIN_SECRETS`` for a job: the references of ``kinds`` that it resolves."""
    wanted = set(kinds)
    return json.dumps(
        {name: ref.for_job() for name, ref in secrets.items() if ref.kind in wanted},
        sort_keys=True,
    )


def check_kinds(secrets: Mapping[str, SecretRef], cloud: str, kinds: Iterable[str]) -> None:
    """Refuse references ``cloud`` cannot deliver (a backend's ``secret_kinds``; a
    backend that declares none takes no secrets, so none is dropped silently)."""
    kinds = tuple(kinds)
    problems = Problems()
    for name, ref in secrets.items():
        if ref.kind not in kinds:
            takes = ", ".join(kinds) if kinds else "no secrets"
            problems.add(
                ConfigError(
                    f"secrets.{name}",
                    f"cloud {cloud} takes {takes}, not {ref.kind}"
                    + (f" ({_WHY_NOT[cloud]})" if cloud in _WHY_NOT else ""),
                )
            )
    problems.raise_if_any()


_WHY_NOT = {
    "aws": "SageMaker shows a job's Environment to anyone allowed DescribeTrainingJob; "
    "store the value in AWS Secrets Manager",
    "azure": "Azure ML shows a job's environment variables in the job; "
    "store the value in Azure Key Vault",
}


@dataclass(frozen=True)
class ResolvedSecrets:
    """Secret values by environment variable name; never printed (``repr`` names them)."""

    values: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"ResolvedSecrets({', '.join(sorted(self.values))})"

    def __bool__(self) -> bool:
        return bool(self.values)


def resolve(
    secrets: Mapping[str, SecretRef],
    kinds: Iterable[str] = KINDS,
    *,
    environ: Mapping[str, str] | None = None,
) -> ResolvedSecrets:
    """The values of the references of ``kinds`` (the others are resolved elsewhere, in
    the cloud's job); every one that is missing is a problem naming ``secrets.<NAME>``."""
    environ = os.environ if environ is None else environ
    wanted = set(kinds)
    values: dict[str, str] = {}
    problems = Problems()
    for name, ref in secrets.items():
        if ref.kind not in wanted:
            continue
        with problems.check():
            values[name] = _RESOLVERS[ref.kind](name, ref, environ)
    problems.raise_if_any()
    return ResolvedSecrets(values)


def missing_env(secrets: Mapping[str, SecretRef], environ: Mapping[str, str]) -> list[Problem]:
    """``env`` references to variables not set in ``environ``: checked when a config is
    validated on the machine that runs it, before anything is created."""
    return [
        Problem(f"secrets.{name}", f"environment variable {ref.env} is not set")
        for name, ref in secrets.items()
        if ref.env is not None and ref.env not in environ
    ]


def _from_env(name: str, ref: SecretRef, environ: Mapping[str, str]) -> str:
    assert ref.env is not None
    if ref.env not in environ:
        raise ConfigError(f"secrets.{name}", f"environment variable {ref.env} is not set")
    return environ[ref.env]


def _from_prefect(name: str, ref: SecretRef, environ: Mapping[str, str]) -> str:
    """A Prefect Secret block, through the public ``aload`` (sync or async callers)."""
    from prefect.blocks.system import Secret
    from prefect.utilities.asyncutils import run_coro_as_sync

    assert ref.prefect_secret is not None
    try:
        block = run_coro_as_sync(Secret.aload(ref.prefect_secret))
    except ValueError:
        raise ConfigError(
            f"secrets.{name}", f"no Prefect Secret block named {ref.prefect_secret!r}"
        ) from None
    value = block.get() if block is not None else None
    if not isinstance(value, str):
        value = json.dumps(value)
    return value


def _from_aws(name: str, ref: SecretRef, environ: Mapping[str, str]) -> str:
    """Secrets Manager through boto3's default chain (region included, unless an ARN
    names it), as the job's launcher reads it."""
    from botocore.exceptions import BotoCoreError, ClientError

    secret_id = ref.aws_secrets_manager
    assert secret_id is not None
    try:
        return launcher.fetch_aws(secret_id, None)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            raise ConfigError(
                f"secrets.{name}", f"no secret {secret_id[:60]!r} in AWS Secrets Manager"
            ) from None
        raise BackendError(f"secrets.{name}: Secrets Manager answered {code}") from exc
    except BotoCoreError as exc:
        raise BackendError(f"secrets.{name}: cannot reach Secrets Manager: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"secrets.{name}", f"is {exc}") from None


def _from_key_vault(name: str, ref: SecretRef, environ: Mapping[str, str]) -> str:
    """Key Vault through DefaultAzureCredential (not run here: no vault is reachable)."""
    target = ref.azure_key_vault
    assert target is not None
    try:
        import azure.identity  # noqa: F401
        import azure.keyvault.secrets  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"secrets.{name}", "azure_key_vault needs: pip install azure-keyvault-secrets"
        ) from None
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    try:
        return launcher.fetch_key_vault(target.vault_url, target.name, target.version)
    except ResourceNotFoundError:
        raise ConfigError(
            f"secrets.{name}", f"no secret {target.name!r} in Key Vault {target.vault}"
        ) from None
    except AzureError as exc:
        raise BackendError(f"secrets.{name}: Key Vault answered {type(exc).__name__}") from exc


_RESOLVERS: dict[str, Callable[[str, SecretRef, Mapping[str, str]], str]] = {
    "env": _from_env,
    "prefect_secret": _from_prefect,
    "aws_secrets_manager": _from_aws,
    "azure_key_vault": _from_key_vault,
}


class Redactor:
    """Masks known secret values in text: every line cloudtrain forwards goes through it."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        self._values |= {value for value in values if len(value) >= MIN_MASKED_CHARS}
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(self._values, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern is not None else text

    def wrap(self, sink: Callable[[str], None]) -> Callable[[str], None]:
        """``sink`` behind this redactor."""
        if self._pattern is None:
            return sink
        return lambda line: sink(self(line))

    def __bool__(self) -> bool:
        return self._pattern is not None


@contextmanager
def redacting_logs(
    redact: Redactor, loggers: Iterable[str] = ("prefect.flow_runs", "prefect.task_runs")
) -> Iterator[None]:
    """Mask secret values in every record of Prefect's run loggers while a run lasts.

    Prefect's own masking (``prefect.logging.filters.ObfuscateApiKeyFilter``) hides only
    ``PREFECT_API_KEY`` and takes no other values, so this adds a filter of ours beside it:
    the records Prefect itself writes (a task's exception, a state message) are masked too.
    """
    if not redact:
        yield
        return
    log_filter = _RedactingFilter(redact)
    targets = [logging.getLogger(name) for name in loggers]
    for logger in targets:
        logger.addFilter(log_filter)
    try:
        yield
    finally:
        for logger in targets:
            logger.removeFilter(log_filter)


class _RedactingFilter(logging.Filter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked_message = self.redact(message)
        if masked_message != message:
            record.msg, record.args = masked_message, None
        return True


def redactor_for(values: Mapping[str, str], hyperparameters: Mapping[str, Any]) -> Redactor:
    """Masks secret ``values`` and the values of secret-looking hyperparameters."""
    found = [str(v) for k, v in hyperparameters.items() if is_secret_name(k)]
    return Redactor([*values.values(), *found])
