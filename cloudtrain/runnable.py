"""Everything that can refuse a config before anything is created, on every cloud of
its route, all problems at once.

Its own module because it needs both the config and the backends that judge it (one per
cloud of a route), and the config must not import the backends' protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from cloudtrain import secrets as secret_refs
from cloudtrain import tracking
from cloudtrain.backend import build_backend
from cloudtrain.config import (
    PipelineConfig,
    Section,
    check_parameter_size,
    is_uri,
)
from cloudtrain.errors import ConfigError, Problem, Problems


class _Validates(Protocol):
    def validate(self, config: PipelineConfig) -> None: ...


def check_runnable(config: PipelineConfig, backend: _Validates) -> None:
    """Everything that can refuse ``config`` before anything is created, all problems at
    once: each cloud's backend checks (``backend`` is the first cloud's; the others of a
    route are built here), then what the sections of clouds off the route forbid."""
    from cloudtrain.channel_files import check_channels

    problems = _route_problems(config, backend)
    with problems.check():  # the MLflow plugin its tracking URI needs, installed here
        tracking.check_plugin(config)
    with problems.check():
        # The symlink policy and the empty-channel rule, as every backend reads a channel.
        check_channels({c: Path(p) for c, p in config.data.items() if not is_uri(p)})
    for name, section in config.sections().items():
        if name not in config.route and isinstance(section, Section):
            with problems.check():
                section.check_other_cloud(config)
    problems.raise_if_any()


def _route_problems(config: PipelineConfig, backend: _Validates) -> Problems:
    """What the hyperparameters and each cloud of the route judge: the parameters' size,
    every leg's backend checks and the secret kinds it resolves."""
    problems = Problems()
    with problems.check():
        check_parameter_size(config)
    seen: list[tuple[Problem, ...]] = []
    for cloud, leg_config, leg_backend in _route_backends(config, backend):
        leg = Problems()
        with leg.check():
            leg_backend.validate(leg_config)
        with leg.check():  # what the backend resolves itself, and what its jobs resolve
            kinds = (
                *getattr(leg_backend, "secret_kinds", ()),
                *getattr(leg_backend, "job_secret_kinds", ()),
            )
            secret_refs.check_kinds(config.secrets, cloud, kinds)
        for error in leg.errors:
            error = _on_leg(error, cloud, config)
            if error.problems not in seen:  # a cloud's problem once, however often it recurs
                seen.append(error.problems)
                problems.add(error)
    return problems


def check_trials(config: PipelineConfig, backend: _Validates) -> None:
    """A sweep's trials judged as the runs they are (their hyperparameters on the cloud's
    limits), each problem once with the first trial that has it. Only what a trial's
    hyperparameters can change is judged again: the channels, the tracking plugin and the
    other sections were judged once, for the sweep, by ``check_runnable``."""
    from cloudtrain.sweep import trial_config
    from cloudtrain.trials import make_trials

    if config.sweep is None:
        return
    found: dict[Problem, int] = {}
    for trial in make_trials(config.sweep):
        try:
            _route_problems(trial_config(config, trial), backend).raise_if_any()
        except ConfigError as exc:
            for problem in exc.problems:
                found.setdefault(problem, trial.number)
    if found:
        swept = {f"hyperparameters.{name}": name for name in config.sweep.parameters}
        raise ConfigError(
            problems=[
                Problem(
                    # a swept value is fixed in sweep.parameters, not in hyperparameters
                    f"sweep.parameters.{swept[problem.field]}"
                    if problem.field in swept
                    else problem.field,
                    f"{problem.message} (sweep trial {number})",
                )
                for problem, number in found.items()
            ]
        )


def _on_leg(error: ConfigError, cloud: str, config: PipelineConfig) -> ConfigError:
    """With an instance type per cloud, a problem with one names its cloud's entry."""
    if not config.compute.instance_types or all(
        problem.field != "compute.instance_type" for problem in error.problems
    ):
        return error
    return ConfigError(
        problems=[
            Problem(f"compute.instance_type.{cloud}", problem.message)
            if problem.field == "compute.instance_type"
            else problem
            for problem in error.problems
        ]
    )


def _route_backends(
    config: PipelineConfig, first: _Validates
) -> Iterator[tuple[str, PipelineConfig, _Validates]]:
    """Each cloud of the route once, with the config pinned to it and its backend."""
    if len(config.route) == 1:
        yield config.cloud, config, first
        return
    for cloud in dict.fromkeys(config.route):
        pinned = config.on_cloud(cloud)
        yield cloud, pinned, first if cloud == config.cloud else build_backend(pinned)
