"""Plain helpers the tests import (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any


def base_config(**sections: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "unit",
        "code": {"source_dir": "src", "entry_point": "train.py"},
        "environment": {"framework": "sklearn"},
        "compute": {"instance_type": "ml.m5.large", "max_run": 120},
        "local": {"grace_period": 2},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def train_locally(config_path: Any, overrides: tuple[str, ...] = ()) -> tuple[Any, Any, list[str]]:
    """Run the five stages' cloud work on the local backend, without Prefect.

    Returns (backend, TrainingResult or the TrainingError, log lines).
    """
    from cloudtrain.backends.local.backend import LocalBackend
    from cloudtrain.config import load_config
    from cloudtrain.data import upload_channels
    from cloudtrain.errors import TrainingError
    from cloudtrain.training import run_training

    config = load_config(config_path, list(overrides))
    backend = LocalBackend.from_config(config)
    backend.validate(config)
    channels = upload_channels(backend, config)
    compute = backend.ensure_compute(config)
    environment = backend.resolve_environment(config, compute)
    lines: list[str] = []
    try:
        result = run_training(
            backend,
            config,
            run_id="0123456789abcdef",
            compute=compute,
            channels={name: data.uri for name, data in channels.items()},
            environment=environment,
            log=lines.append,
            script_log=lines.append,
        )
    except TrainingError as exc:
        return backend, exc, lines
    return backend, result, lines


def script(name: str) -> str:
    """The text of a training script in tests/scripts (``write_config`` writes it)."""
    from pathlib import Path

    return (Path(__file__).parent / "scripts" / f"{name}.py").read_text()
