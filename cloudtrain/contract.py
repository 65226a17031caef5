"""The training-script contract: SageMaker's script-mode names, set on every target.

One script runs on SageMaker, Azure ML and this machine because every backend builds
its arguments, environment and metric parsing from these functions.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cloudtrain.config import HyperparameterValue
from cloudtrain.launcher import rank_zero_text

#: A number as ``float()`` reads it: ``1``, ``-0.5``, ``1.``, ``.5``, ``1e-3``, nan, inf.
_NUMBER = r"([-+]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[nN]a[nN]|[iI]nf(?:inity)?))"
#: The value must be the whole token: what follows is the end of the line, a space, or
#: one separator (``,;:)]}|``) that is not followed by a digit. So ``x=1.2.3``, ``x=12abc``,
#: ``x=1,5`` (a decimal comma) and ``x=95%`` are no metric at all, rather than 1.2, 12, 1, 95.
_TOKEN_END = r"(?=$|\s|[,;:)\]}|](?![0-9]))"


def metric_regex(name: str) -> str:
    """The regex for ``name=value``: SageMaker MetricDefinitions and the log parser share it."""
    return rf"(?<![\w.-]){re.escape(name)}={_NUMBER}{_TOKEN_END}"


def hyperparameter_value(value: HyperparameterValue) -> str:
    """As SageMaker's training toolkit renders them: ``str()`` of the decoded value."""
    return value if isinstance(value, str) else str(value)


def hyperparameter_args(hyperparameters: Mapping[str, HyperparameterValue]) -> list[str]:
    """``--name value`` pairs, in the config's order."""
    args: list[str] = []
    for name, value in hyperparameters.items():
        args += [f"--{name}", hyperparameter_value(value)]
    return args


@dataclass(frozen=True)
class ScriptPaths:
    """Where the script finds its inputs and puts its outputs, on one target."""

    channels: Mapping[str, Path | str]
    model_dir: Path | str
    output_data_dir: Path | str
    checkpoint_dir: Path | str


def script_environment(
    hyperparameters: Mapping[str, HyperparameterValue],
    paths: ScriptPaths,
    *,
    instance_type: str,
    attempt: int,
    spot: bool,
    job_name: str,
    num_cpus: int | None = None,
) -> dict[str, str]:
    """The SM_* variables (and cloudtrain's own) the script sees."""
    env = {
        "SM_HPS": json.dumps(dict(hyperparameters)),
        "SM_CHANNELS": json.dumps(sorted(paths.channels)),
        "SM_MODEL_DIR": str(paths.model_dir),
        "SM_OUTPUT_DATA_DIR": str(paths.output_data_dir),
        "SM_CHECKPOINT_DIR": str(paths.checkpoint_dir),
        "SM_CURRENT_HOST": "algo-1",
        "SM_HOSTS": json.dumps(["algo-1"]),
        "SM_CURRENT_INSTANCE_TYPE": instance_type,
        "SM_NUM_GPUS": "0",
        "SM_NUM_CPUS": str(num_cpus or os.cpu_count() or 1),
        "SM_TRAINING_JOB_NAME": job_name,
        "CLOUDTRAIN_ATTEMPT": str(attempt),
        "CLOUDTRAIN_SPOT": "true" if spot else "false",
    }
    for channel, path in paths.channels.items():
        env[f"SM_CHANNEL_{channel.upper()}"] = str(path)
    for name, value in hyperparameters.items():
        env[f"SM_HP_{name.upper()}"] = hyperparameter_value(value)
    return env


@dataclass
class MetricParser:
    """Reads ``name=value`` from log lines for the declared metrics; keeps every value."""

    names: Iterable[str]
    series: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.names = list(self.names)
        self._patterns = {name: re.compile(metric_regex(name)) for name in self.names}

    def feed(self, line: str) -> dict[str, float]:
        """Parse one line; returns the metrics it held. Of a multi-process job's output
        only rank 0's lines count (``cloudtrain.launcher.rank_zero_text``)."""
        found: dict[str, float] = {}
        text = rank_zero_text(line)
        if text is None:
            return found
        line = text
        for name, pattern in self._patterns.items():
            for match in pattern.finditer(line):
                found[name] = float(match.group(1))
                self.series.setdefault(name, []).append(found[name])
        return found

    @property
    def final(self) -> dict[str, float]:
        """The last value of each metric, as SageMaker's FinalMetricDataList reports."""
        return {name: values[-1] for name, values in self.series.items()}


_PROGRESS = re.compile(r"(?<![\w.-])progress=([0-9]*\.?[0-9]+)(%?)")
_EPOCH = re.compile(r"(?<![\w.-])epoch=([0-9]+)")


@dataclass
class ProgressParser:
    """How far training is, from ``progress=0.4`` (or ``40%``) lines, else from
    ``epoch=N`` against the ``epochs`` hyperparameter."""

    total_epochs: int | None = None

    def feed(self, line: str) -> float | None:
        """A fraction in [0, 1] when the line says how far along the script is (rank 0's
        lines only, in a multi-process job)."""
        text = rank_zero_text(line)
        if text is None:
            return None
        line = text
        match = _PROGRESS.search(line)
        if match:
            value = float(match.group(1))
            value = value / 100 if match.group(2) or value > 1 else value
            return min(max(value, 0.0), 1.0)
        match = _EPOCH.search(line)
        if match and self.total_epochs:
            return min(int(match.group(1)) / self.total_epochs, 1.0)
        return None
