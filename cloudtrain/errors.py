"""The exceptions cloudtrain raises, so callers catch ours and never an SDK's.

::

    CloudtrainError
    ├── ConfigError            bad input: one Problem per field; nothing was created (CLI exit 2)
    │   └── UnsupportedError   valid config, but this cloud cannot honour it
    ├── BackendError           a cloud or local operation failed (SDK errors mapped here)
    │   └── TransientError     worth retrying: throttling, capacity, preemption
    └── TrainingError          the training run ended without a model (CLI exit 1)

SDK errors (``ClientError``, ``HttpResponseError``) are mapped into this tree with
``raise ... from exc`` by the backend that called the SDK.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudtrain.results import TrainingResult


#: How much of a bad value a message quotes; a field path or a message (which may list
#: the valid names) is cut at these too, the last guard against a megabyte-long line.
QUOTE_CHARS = 40
MAX_FIELD_CHARS = 200
MAX_MESSAGE_CHARS = 2000

_short = reprlib.Repr()
_short.maxstring = _short.maxother = _short.maxlong = QUOTE_CHARS
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 4
_short.maxlevel = 2


def quote(value: object) -> str:
    """``repr(value)`` cut to a few dozen characters (reprlib), for an error message: a
    bad value may be megabytes long."""
    return _short.repr(value)


def _cut(text: str, limit: int) -> str:
    text = text if len(text) <= limit else f"{text[: limit - 1]}…"
    return text.replace("\n", " ")


class CloudtrainError(Exception):
    """Base of every error cloudtrain raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: the dotted path of the field, and what is wrong."""

    field: str
    message: str

    def __post_init__(self) -> None:
        # The last guard of "one short line": a message that quoted too much is cut here.
        object.__setattr__(self, "field", _cut(self.field, MAX_FIELD_CHARS))
        object.__setattr__(self, "message", _cut(self.message, MAX_MESSAGE_CHARS))

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ConfigError(CloudtrainError, ValueError):
    """The config or an argument is invalid: every problem found, one line each.

    ``field`` and ``message`` are the first problem's, for callers that need one.
    """

    def __init__(self, field: str = "", message: str = "", *, problems: Sequence[Problem] = ()):
        self.problems: tuple[Problem, ...] = tuple(problems) or (Problem(field, message),)
        self.field = self.problems[0].field
        self.message = self.problems[0].message
        super().__init__("\n".join(str(problem) for problem in self.problems))

    def describe(self, what: str = "config") -> str:
        """``cloudtrain: invalid config: <problem>``, or a heading and one line per problem."""
        if len(self.problems) == 1:
            return f"cloudtrain: invalid {what}: {self.problems[0]}"
        lines = [f"cloudtrain: invalid {what}, {len(self.problems)} problems:"]
        return "\n".join(lines + [f"  {problem}" for problem in self.problems])

    def __reduce__(self) -> tuple[Any, ...]:
        return (_config_error, (type(self), self.problems))


def _config_error(cls: type[ConfigError], problems: tuple[Problem, ...]) -> ConfigError:
    """Unpickles a ConfigError (Prefect may pickle a failed flow's exception)."""
    return cls(problems=problems)


class Problems:
    """Collects the ConfigErrors of independent checks, so a user fixes a config in one
    pass: ``add()`` what is wrong, or ``with problems.check(): ...`` around a check that
    raises, then ``raise_if_any()``.
    """

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, error: ConfigError) -> None:
        self.errors.append(error)

    @contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except ConfigError as exc:
            self.errors.append(exc)

    def raise_if_any(self) -> None:
        """One error is raised as it was (its type and cause kept); several as one."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigError(problems=[p for error in self.errors for p in error.problems])


class UnsupportedError(ConfigError):
    """The config is valid, but the chosen cloud has no way to run it."""


class BackendError(CloudtrainError):
    """A backend operation failed; the SDK's exception is the ``__cause__``."""


class TransientError(BackendError):
    """A failure that a later try can get past (throttling, capacity, preemption)."""


class TrainingError(CloudtrainError):
    """The training stage ended without a model; ``result`` holds every attempt."""

    def __init__(self, message: str, result: TrainingResult | Any = None) -> None:
        self.result = result
        self.summary: dict[str, Any] | None = None  # the run summary, set by the flow
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect may pickle a failed flow's exception; keep what it carries.
        return (type(self), (str(self), self.result), {"summary": self.summary})
