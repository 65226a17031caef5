"""The run's parameters: the deployment's own with ``--set`` applied, checked as the flow
will check them, so invalid input exits 2 before a run exists."""

from __future__ import annotations

import copy
import difflib
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cloudtrain.config import apply_override, validate_config
from cloudtrain.errors import ConfigError, Problem, quote
from cloudtrain.runnable import check_runnable, check_trials


def build_parameters(
    defaults: Mapping[str, Any],
    schema: Mapping[str, Any] | None,
    overrides: Sequence[str],
    flow_name: str,
) -> dict[str, Any]:
    """The deployment's parameters with ``--set`` applied; only known parameters.

    The returned config stays the raw mapping, not a validated model: the flow resolves
    its relative paths in the worker's checkout, not here (see ``check_config``).
    """
    parameters = copy.deepcopy(dict(defaults))
    known = sorted((schema or {}).get("properties") or {})
    for override in overrides:
        key, sep, _ = override.partition("=")
        name = key.strip().split(".")[0]
        if sep and known and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"--set {key.strip()}",
                f"{flow_name} has no parameter {quote(name)} "
                f"(parameters: {', '.join(known)}){hint}",
            )
        apply_override(parameters, override)
    return parameters


def check_config(raw: Mapping[str, Any], flow_name: str, root: Path) -> list[str]:
    """Validate as the flow will: the flow pins the cloud, then its backend checks it.

    Values are refused; what only the worker's machine can answer becomes a returned
    note instead. Data is often generated or mounted there (the digits deployments
    prepare theirs in a pull step), so a data path missing here is a note and the rest
    is still checked, with a one-file folder standing in for it (not the checkout: its
    walk would read a virtualenv's thousands of files). Whether the framework (or the
    MLflow plugin a tracking URI needs) is installed is the worker's interpreter's
    business (it is the backend's last check). Code is in the repository: a missing
    script is an error.
    """
    from cloudtrain.backends import is_cloud

    values: dict[str, Any] = copy.deepcopy(dict(raw))
    cloud = flow_name.removesuffix("-training")
    if is_cloud(cloud):
        values["cloud"] = cloud
    base = root.resolve()
    with tempfile.TemporaryDirectory(prefix="cloudtrain-stand-in-") as folder:
        stand_in = Path(folder)
        (stand_in / "stand-in").write_text("data that is on the worker's machine\n")
        return _check(values, base, stand_in)


def _check(values: dict[str, Any], base: Path, stand_in: Path) -> list[str]:
    from cloudtrain.backend import build_backend

    notes: list[str] = []
    while True:
        try:
            config = validate_config(values, base_dir=base)
            backend = build_backend(config)
            check_runnable(config, backend)
            check_trials(config, backend)  # a sweep's: each trial's hyperparameters
            return notes
        except ConfigError as exc:
            raw_data = values.get("data")
            data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
            missing = [
                p
                for p in exc.problems
                if p.field.startswith("data.")
                and "does not exist" in p.message
                and data.get(p.field.removeprefix("data.")) not in (None, str(stand_in))
            ]
            not_here = [
                p
                for p in exc.problems
                if p.field in ("environment.framework", "tracking.mlflow_uri")
                and "is not installed" in p.message
            ]
            refused = [p for p in exc.problems if p not in missing and p not in not_here]
            if refused:
                raise ConfigError(
                    problems=[
                        Problem(f"config.{p.field}" if p.field else "config", p.message)
                        for p in refused
                    ]
                ) from None
            for problem in missing:
                channel = problem.field.removeprefix("data.")
                notes.append(
                    f"config.{problem.field}: {data[channel]} is not in {base}; "
                    "the run fails unless the worker's checkout has it"
                )
                data[channel] = str(stand_in)  # a folder with a file: check the rest
            if missing:
                continue
            notes += [
                f"config.{p.field}: {p.message.partition(' for ')[0]} here; "
                "the worker's interpreter must have it"
                if p.field == "environment.framework"
                else f"config.{p.field}: {p.message.partition(', which')[0]}, not installed "
                "here; the worker's interpreter must have it"
                for p in not_here
            ]
            return notes
