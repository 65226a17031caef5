"""Proof of resume on the real local backend: the digits example resumed after 1 and 2
reclaims ends with the uninterrupted model, and a script that ignores its checkpoint is
caught and stopped with outcome no_progress."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
from helpers import script, train_locally

from cloudtrain.errors import TrainingError


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
    # and the resume check says so: each later attempt started past epoch 1, no warning
    assert [a.resumed for a in once.attempts] == [None, True]
    assert [a.resumed for a in twice.attempts] == [None, True, True]
    assert twice.attempts[1].epoch_start > twice.attempts[0].epoch_start == 1
    assert once.warnings == twice.warnings == [] and twice.stopped is None

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


def ignoring_config(write_config: Callable[..., Path], **retry: object) -> Path:
    return write_config(
        script("ignores_its_checkpoint"),
        hyperparameters={"epochs": 200, "epoch_seconds": 0.05},
        compute={"spot": True},
        retry={"max_attempts": 5, "on_demand_fallback": False, **retry},
        local={"spot_interruptions": ["^epoch=3 "] * 5},
    )


def test_a_script_that_ignores_its_checkpoint_is_flagged_and_stopped(
    write_config: Callable[..., Path],
) -> None:
    _, error, lines = train_locally(ignoring_config(write_config))
    assert isinstance(error, TrainingError)
    result = error.result
    # 3 of the 5 attempts: the 2nd restart from zero stops the run (no_progress_limit: 2)
    assert [a.outcome.value for a in result.attempts] == ["interrupted"] * 3
    assert result.stopped == "no_progress"
    assert [a.resumed_from for a in result.attempts] == [0, 2, 2]
    assert [a.epoch_start for a in result.attempts] == [1, 1, 1]
    assert [a.resumed for a in result.attempts] == [None, False, False]
    flag = "attempt 2 started at epoch 1 although the checkpoint held 2 files: the script did not resume"
    assert result.warnings[0] == flag and f"warning: {flag}" in lines
    assert result.warnings[1].startswith("attempt 3 started at epoch 1 although")
    assert "attempts 2 and 3 started from zero" in result.stop_reason
    assert str(error).startswith("training stopped after 3 attempt(s): no_progress: ")
    assert not any(line.startswith("resubmitting as attempt 4") for line in lines)


def test_no_progress_limit_zero_pays_for_every_attempt(write_config: Callable[..., Path]) -> None:
    """Control: the stop above is the limit's doing; without it all 5 attempts run."""
    _, error, _ = train_locally(ignoring_config(write_config, no_progress_limit=0))
    assert isinstance(error, TrainingError)
    assert len(error.result.attempts) == 5 and error.result.stopped is None
    assert [a.resumed for a in error.result.attempts] == [None] + [False] * 4
    assert len(error.result.warnings) == 4


def test_a_spot_reclaim_before_any_checkpoint_is_warned_about(
    write_config: Callable[..., Path],
) -> None:
    path = write_config(
        script("checkpoints_only_at_the_end"),
        hyperparameters={"epochs": 6, "epoch_seconds": 0.2},
        compute={"spot": True},
        retry={"max_attempts": 2, "on_demand_fallback": True},
        local={"spot_interruptions": ["^epoch=2 "]},
    )
    _, result, lines = train_locally(path)
    assert [a.outcome.value for a in result.attempts] == ["interrupted", "succeeded"]
    assert [a.resumed_from for a in result.attempts] == [0, 0]
    (warning,) = result.warnings
    assert warning.startswith(
        "attempt 1 ran on spot and was reclaimed before any checkpoint was written: "
        "attempt 2 found its checkpoint location empty and started from scratch"
    )
    assert "SM_CHECKPOINT_DIR" in warning and f"warning: {warning}" in lines
    assert result.attempts[1].resumed is None  # nothing to resume from: not a restart
