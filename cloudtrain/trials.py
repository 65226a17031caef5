"""Hyperparameter sweeps: the ``sweep:`` section and the trials it makes, pure.

This module knows nothing of the rest of the config (``cloudtrain.config`` holds a
``SweepConfig`` and checks it against its metrics); ``cloudtrain.sweep`` turns a trial
into the config it trains.

A sweep turns one config into trials, each the same pipeline with some hyperparameters
set. The trials are a function of the config alone (random draws come from ``seed``), so
``cloudtrain plan`` shows exactly the trials a run trains, and a rerun of the same sweep
trains the same trials (and skips those whose inputs did not change).

A swept parameter is a list of values (``[0.01, 0.05, 0.1]``: grid takes each, random
draws one) or a range (``{min: 10, max: 40}``: integers when both bounds are integers,
floats otherwise; ``log: true`` draws log-uniformly). Grid needs a finite set of values,
so a range there needs ``steps`` (evenly spaced points, on a log scale with ``log``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from re import Pattern
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from cloudtrain.errors import ConfigError, Problem, Problems, quote
from cloudtrain.quantities import Count, Finite
from cloudtrain.secrets import is_secret_name

#: The most trials a sweep may run: each is a Prefect flow run and, on a cloud, jobs.
MAX_TRIALS = 1000
#: The most trials of one sweep that may train at once.
MAX_PARALLEL = 100
#: Random draws tried per wanted trial before the space is called too small.
_DRAWS_PER_TRIAL = 100

#: A swept value as the script receives it (what ``hyperparameters`` takes).
SweptValue = StrictBool | StrictInt | Finite | str


class RangeSpec(BaseModel):
    """A numeric range: integers when both bounds are integers, floats otherwise."""

    model_config = ConfigDict(extra="forbid")

    min: StrictInt | Finite = Field(description="Lowest value (included).")
    max: StrictInt | Finite = Field(description="Highest value (included); > min.")
    log: bool = Field(
        False, description="Draw (or grid) on a log scale, for rates and penalties; min > 0."
    )
    steps: Count | None = Field(
        None,
        ge=2,
        le=MAX_TRIALS,
        description="strategy grid: this many evenly spaced values from min to max "
        "(log-spaced with log); random draws from the whole range instead.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> RangeSpec:
        for end in ("min", "max"):
            # An int past float's range cannot be gridded or drawn (OverflowError).
            if not math.isfinite(_as_float(getattr(self, end))):
                raise ValueError(f"{end} is too large: a range's bounds must be finite floats")
        if not self.min < self.max:
            raise ValueError(f"min ({self.min}) must be < max ({self.max})")
        if self.log and self.min <= 0:
            raise ValueError(f"log: true needs min > 0 (got {self.min})")
        return self

    @property
    def integer(self) -> bool:
        return isinstance(self.min, int) and isinstance(self.max, int)

    def grid(self) -> list[SweptValue]:
        """``steps`` values from min to max; integers rounded, floats to 12 digits,
        repeats dropped (two trials with the same values would share a run record)."""
        steps = self.steps or 2
        low, high = float(self.min), float(self.max)
        if self.log:
            low, high = math.log(low), math.log(high)
        points = [low + (high - low) * i / (steps - 1) for i in range(steps)]
        values = [math.exp(p) if self.log else p for p in points]
        values[0], values[-1] = float(self.min), float(self.max)  # exact ends
        if self.integer:
            return list(dict.fromkeys(int(round(v)) for v in values))
        return list(dict.fromkeys(float(f"{v:.12g}") for v in values))

    def draw(self, rng: random.Random) -> SweptValue:
        if self.log:
            value = math.exp(rng.uniform(math.log(self.min), math.log(self.max)))
            if self.integer:
                return min(max(int(round(value)), int(self.min)), int(self.max))
            return float(f"{value:.12g}")
        if self.integer:
            return rng.randint(int(self.min), int(self.max))
        return float(f"{rng.uniform(float(self.min), float(self.max)):.12g}")


def _as_float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf


ParameterSpec = list[SweptValue] | RangeSpec
_VALUES: TypeAdapter[list[SweptValue]] = TypeAdapter(list[SweptValue])


class SweepConfig(BaseModel):
    """Hyperparameter trials: each a full training with spot recovery of its own."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    parameters: dict[str, ParameterSpec] = Field(
        description="Hyperparameter -> a list of values, or a range {min, max, log, steps}; "
        "overrides hyperparameters of the same name in each trial.",
        min_length=1,
    )
    strategy: Literal["grid", "random"] = Field(
        "grid",
        description="grid: every combination, in order; random: trials draws (seed).",
    )
    trials: Count | None = Field(
        None,
        ge=1,
        le=MAX_TRIALS,
        description="How many trials: required for random; for grid an optional cap "
        "(the first N combinations).",
    )
    max_parallel: Count = Field(
        1, ge=1, le=MAX_PARALLEL, description="Trials that train at once (each may retry)."
    )
    objective: str = Field(description="The metric (one of metrics) that ranks trials.")
    goal: Literal["max", "min"] = Field(description="max or min: which end of objective wins.")
    seed: Count = Field(0, ge=0, description="strategy random: the seed of the draws.")

    @field_validator("parameters", mode="before")
    @classmethod
    def _each_parameter(cls, value: Any) -> Any:
        """A mapping is a range, a list is values: one problem per parameter naming it,
        not one per member of the union."""
        if not isinstance(value, Mapping):
            return value
        parsed: dict[Any, Any] = {}
        problems: list[Any] = []
        for name, spec in value.items():
            field = f"sweep.parameters.{quote(name) if len(str(name)) > 40 else name}"
            try:
                if isinstance(spec, Mapping | RangeSpec):
                    parsed[name] = RangeSpec.model_validate(spec)
                elif isinstance(spec, list | tuple):
                    parsed[name] = _VALUES.validate_python(list(spec))
                else:
                    raise ConfigError(
                        field,
                        f"must be a list of values or a range {{min, max}} (got {quote(spec)})",
                    )
            except ValidationError as exc:
                problems += _problems(exc, field)
            except ConfigError as exc:
                problems += exc.problems
        if problems:
            raise ConfigError(problems=problems)
        return parsed

    @model_validator(mode="after")
    def _shape(self) -> SweepConfig:
        problems = Problems()
        for name, spec in self.parameters.items():
            if isinstance(spec, list) and not spec:
                problems.add(ConfigError(f"sweep.parameters.{name}", "lists no values"))
            elif isinstance(spec, list) and len(_distinct(spec)) != len(spec):
                problems.add(ConfigError(f"sweep.parameters.{name}", "lists a value twice"))
            elif isinstance(spec, RangeSpec):
                if self.strategy == "grid" and spec.steps is None:
                    problems.add(
                        ConfigError(
                            f"sweep.parameters.{name}",
                            "strategy grid needs a list of values, or steps: N to grid this range",
                        )
                    )
                if self.strategy == "random" and spec.steps is not None:
                    problems.add(
                        ConfigError(
                            f"sweep.parameters.{name}.steps",
                            "grids a range for strategy grid; random draws from the whole "
                            "range (leave steps out, or give a list)",
                        )
                    )
        if self.strategy == "random" and self.trials is None:
            problems.add(ConfigError("sweep.trials", "is required with strategy random"))
        problems.raise_if_any()
        return self

    def check_against(self, metrics: list[str], names: Pattern[str]) -> None:
        """The sweep against the rest of the config: the objective is one of ``metrics``,
        swept names match ``names`` (the hyperparameter names the clouds take), the grid
        is not too large, a random space holds the trials asked. Raises ConfigError."""
        problems = Problems()
        if self.objective not in metrics:
            problems.add(
                ConfigError(
                    "sweep.objective",
                    f"{quote(self.objective)} is not one of metrics "
                    f"({', '.join(metrics) or 'none listed'}); list it there so the "
                    "script's value is read",
                )
            )
        for name in self.parameters:
            field = f"sweep.parameters.{quote(name) if len(name) > 40 else name}"
            if not names.fullmatch(name):
                problems.add(ConfigError(field, f"{quote(name)} is not a valid --argument name"))
            elif is_secret_name(name):
                problems.add(
                    ConfigError(
                        field,
                        "looks like a secret, and a swept value is shown in the ranking, the "
                        "logs and Prefect's parameters; pass it with secrets: instead",
                    )
                )
        size = grid_size(self)
        if self.strategy == "grid" and self.trials is None and size > MAX_TRIALS:
            problems.add(
                ConfigError(
                    "sweep.parameters",
                    f"the grid has {size:,} combinations, more than {MAX_TRIALS:,}; "
                    "set sweep.trials to cap it, or sweep fewer values",
                )
            )
        problems.raise_if_any()
        if self.strategy == "random":
            make_trials(self)  # refuses a space too small for the distinct trials asked


def _problems(exc: ValidationError, field: str) -> list[Problem]:
    """pydantic's errors for one parameter, each naming its field path."""
    found: list[Problem] = []
    for error in exc.errors(include_url=False):
        path = field + "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}"
            for part in error["loc"]
            if not (isinstance(part, str) and part in _UNION_MEMBERS)
        )
        message = str(error["msg"]).removeprefix("Value error, ")
        if any(isinstance(part, str) and part in _UNION_MEMBERS for part in error["loc"]):
            value = error["input"]
            message = (
                f"must be a finite number (got {value})"
                if isinstance(value, float)
                else f"must be a string, a number or true/false (got {quote(value)})"
            )
        elif error["type"] == "extra_forbidden":
            message = f"unknown key (valid: {', '.join(sorted(RangeSpec.model_fields))})"
        elif error["type"] not in ("value_error",):
            message = f"{message} (got {quote(error['input'])})"
        if all(problem.field != path for problem in found):  # one per member of a union
            found.append(Problem(path, message))
    return found


#: The names pydantic gives the members of a union in an error's location.
_UNION_MEMBERS = frozenset({"bool", "int", "float", "str"})


@dataclass(frozen=True)
class Trial:
    """One trial: its number (from 1) and the values of the swept parameters."""

    number: int
    values: Mapping[str, SweptValue]

    @property
    def label(self) -> str:
        return f"trial {self.number}"

    def describe(self) -> str:
        return ", ".join(f"{name}={value}" for name, value in self.values.items())


class TrialContext(BaseModel):
    """What a trial's pipeline run knows of its sweep: passed to the ``<cloud>-training``
    flow as its ``trial`` parameter (so it is a JSON flow-run parameter), and the place a
    tracking run would find its parent and its tags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    number: Count = Field(ge=1, description="The trial's number in its sweep, from 1.")
    trials: Count = Field(ge=1, description="How many trials the sweep has.")
    values: dict[str, SweptValue] = Field(
        description="The swept hyperparameters' values of this trial."
    )
    sweep_run_id: str | None = Field(
        None, description="The sweep's (parent) flow run id; None outside Prefect."
    )
    tracking_parent: str | None = Field(
        None,
        description="The sweep's MLflow run id, under which the trial's MLflow run is "
        "nested (with tracking on).",
    )

    @property
    def key(self) -> str:
        """Names the trial's run records and leases: the digest of its values, so the
        same trial in a rerun (or a grown grid) finds its last success and its crash."""
        return trial_key(self.values)

    @property
    def label(self) -> str:
        return f"trial {self.number}/{self.trials}"

    def tags(self) -> dict[str, str]:
        """Tags for a tracking run: the sweep it belongs to and which trial it is."""
        return {
            "sweep_run_id": self.sweep_run_id or "",
            "trial": str(self.number),
            **{f"trial.{name}": str(value) for name, value in self.values.items()},
        }


def _distinct(values: list[SweptValue]) -> list[str]:
    """Values as the script sees them (``--name value``, as ``contract.hyperparameter_value``
    renders them), once each: 1 and "1" are one value to it; 1 and 1.0 are not."""
    return list(dict.fromkeys(value if isinstance(value, str) else str(value) for value in values))


def _choices(spec: ParameterSpec) -> list[SweptValue]:
    return list(spec) if isinstance(spec, list) else spec.grid()


def make_trials(sweep: SweepConfig) -> list[Trial]:
    """The sweep's trials, the same for the same config: grid in order (the last
    parameter varies fastest), random from ``seed``, no two with the same values."""
    names = list(sweep.parameters)
    if sweep.strategy == "grid":
        combos: Iterator[tuple[SweptValue, ...]] = itertools.product(
            *(_choices(sweep.parameters[name]) for name in names)
        )
        if sweep.trials is not None:
            combos = itertools.islice(combos, sweep.trials)
        return [
            Trial(number, dict(zip(names, combo, strict=True)))
            for number, combo in enumerate(combos, start=1)
        ]
    wanted = sweep.trials or 1
    rng = random.Random(sweep.seed)
    seen: set[str] = set()
    trials: list[Trial] = []
    for _ in range(wanted * _DRAWS_PER_TRIAL):
        values = {
            name: rng.choice(spec) if isinstance(spec, list) else spec.draw(rng)
            for name, spec in sweep.parameters.items()
        }
        key = json.dumps(values)
        if key in seen:
            continue
        seen.add(key)
        trials.append(Trial(len(trials) + 1, values))
        if len(trials) == wanted:
            return trials
    raise ConfigError(
        "sweep.trials",
        f"{wanted} distinct trials could not be drawn from sweep.parameters (got "
        f"{len(trials)}); ask for fewer, widen a range, or use strategy grid",
    )


def grid_size(sweep: SweepConfig) -> int:
    return math.prod(len(_choices(spec)) for spec in sweep.parameters.values())


def trial_key(values: Mapping[str, Any]) -> str:
    """A short digest of a trial's values: its run record's name, stable across sweeps."""
    text = json.dumps(dict(sorted(values.items())), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


__all__ = [
    "MAX_PARALLEL",
    "MAX_TRIALS",
    "RangeSpec",
    "SweepConfig",
    "Trial",
    "TrialContext",
    "grid_size",
    "make_trials",
    "trial_key",
]
