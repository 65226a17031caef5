"""The digits example resumed after 1 and 2 reclaims ends with the uninterrupted model."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
from helpers import train_locally


def trained(config_path: Path) -> tuple[object, Path, list[str]]:
    backend, result, lines = train_locally(config_path)
    assert result.succeeded, getattr(result, "result", result)
    model_dir = (
        backend.root
        / "runs"
        / "digits-sgd"
        / result.run_id
        / "attempts"
        / str(result.final.number)
        / "model"
    )
    return result, model_dir, lines


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resume_after_one_and_two_interruptions_gives_the_same_model(
    digits_config: Callable[..., Path], tmp_path: Path, digits_data: Path
) -> None:
    straight, straight_dir, _ = trained(digits_config(hyperparameters={"epochs": 12}))
    once, once_dir, once_lines = trained(
        digits_config(
            hyperparameters={"epochs": 12},
            work_dir=".ct-once",
            local={"spot_interruptions": ["^epoch=5 "]},
        )
    )
    twice, twice_dir, twice_lines = trained(
        digits_config(
            hyperparameters={"epochs": 12},
            work_dir=".ct-twice",
            local={"spot_interruptions": ["^epoch=3 ", "^epoch=8 "]},
        )
    )

    assert [a.outcome.value for a in straight.attempts] == ["succeeded"]
    assert [a.outcome.value for a in once.attempts] == ["interrupted", "succeeded"]
    assert [a.outcome.value for a in twice.attempts] == ["interrupted", "interrupted", "succeeded"]
    # each resumed attempt really started from a checkpoint, not from scratch
    assert any(line.startswith("resumed from checkpoint: epoch ") for line in once_lines)
    assert sum(line.startswith("resumed from checkpoint: epoch ") for line in twice_lines) == 2
    assert twice.attempts[1].resumed_from == 1 and twice.attempts[2].resumed_from == 1

    # byte-identical weights, identical predictions and final metrics
    digest = sha256(straight_dir / "weights.npz")
    assert sha256(once_dir / "weights.npz") == digest
    assert sha256(twice_dir / "weights.npz") == digest
    models = [
        pickle.loads((d / "model.pkl").read_bytes()) for d in (straight_dir, once_dir, twice_dir)
    ]
    features = np.loadtxt(digits_data / "test.csv", delimiter=",", skiprows=1)[:, :-1] / 16.0
    predictions = [model.predict_proba(features) for model in models]
    assert np.array_equal(predictions[0], predictions[1]) and np.array_equal(
        predictions[0], predictions[2]
    )
    assert straight.metrics == once.metrics == twice.metrics
    assert set(straight.metrics) == {"val_accuracy", "train_loss"}


def test_weights_depend_on_the_seed_so_the_equality_above_means_something(
    digits_config: Callable[..., Path],
) -> None:
    """Control: a different seed gives different weights."""
    _, seed7, _ = trained(digits_config(hyperparameters={"epochs": 3}))
    _, seed8, _ = trained(
        digits_config(hyperparameters={"epochs": 3, "seed": 8}, work_dir=".ct-seed")
    )
    assert sha256(seed7 / "weights.npz") != sha256(seed8 / "weights.npz")
