"""The resume check as a pure function of attempt records: no backend, no Prefect."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloudtrain.config import PipelineConfig, load_config
from cloudtrain.recovery import Outcome
from cloudtrain.results import AttemptRecord, TrainingResult
from cloudtrain.resumes import AttemptProgress, ResumeCheck, Verdict

LOST, DONE = Outcome.INTERRUPTED, Outcome.SUCCEEDED


@pytest.fixture
def config(write_config: Callable[..., Path]) -> Callable[..., PipelineConfig]:
    """A spot config of 10 epochs and 5 attempts, ``retry`` settings as given."""

    def make(**retry: Any) -> PipelineConfig:
        path = write_config(
            hyperparameters={"epochs": 10},
            compute={"spot": True},
            retry={"max_attempts": 5, **retry},
        )
        return load_config(path)

    return make


def attempt(
    number: int,
    outcome: Outcome = LOST,
    files: int | None = 0,
    epochs: tuple[int, int] | None = None,
    progress: tuple[float, float] | None = None,
    spot: bool = True,
) -> AttemptRecord:
    record = AttemptRecord(number, f"job-{number}", spot, outcome, "", None, None)
    record.resumed_from = files
    if epochs is not None:
        record.epoch_start, record.epoch_end = epochs
        record.progress_start, record.progress_end = epochs[0] / 10, epochs[1] / 10
    if progress is not None:
        record.progress_start, record.progress_end = progress
    return record


def judge(check: ResumeCheck, *records: AttemptRecord) -> list[Verdict]:
    """Each record as the attempt loop hands it over: appended, then judged."""
    result = TrainingResult("run", "/ckpt")
    verdicts = []
    for record in records:
        result.attempts.append(record)
        verdicts.append(check.after(record, result))
    return verdicts


def test_attempts_that_resume_are_marked_and_not_warned_about(
    config: Callable[..., PipelineConfig],
) -> None:
    records = (
        attempt(1, epochs=(1, 8)),
        attempt(2, files=1, epochs=(9, 15)),
        attempt(3, DONE, files=1, epochs=(16, 30), spot=False),
    )
    verdicts = judge(ResumeCheck(config()), *records)
    assert [r.resumed for r in records] == [None, True, True]
    assert verdicts == [Verdict()] * 3


def test_a_restart_from_zero_is_flagged_and_the_second_stops_the_run(
    config: Callable[..., PipelineConfig],
) -> None:
    check = ResumeCheck(config())  # retry.no_progress_limit: 2, the default
    records = (
        attempt(1, epochs=(1, 4)),
        attempt(2, files=4, epochs=(1, 4)),
        attempt(3, files=4, epochs=(1, 4)),
    )
    first, second, third = judge(check, *records)
    assert first == Verdict()
    assert second == Verdict(
        (
            "attempt 2 started at epoch 1 although the checkpoint held 4 files: "
            "the script did not resume",
        )
    )
    assert third.warnings == (
        "attempt 3 started at epoch 1 although the checkpoint held 4 files: "
        "the script did not resume",
    )
    assert third.stop is not None
    assert "attempts 2 and 3 started from zero" in third.stop
    assert "retry.no_progress_limit: 2" in third.stop and "SM_CHECKPOINT_DIR" in third.stop
    assert [r.resumed for r in records] == [None, False, False]
    assert check.restarts == [2, 3]


@pytest.mark.parametrize(
    ("limit", "stops_at", "named"),
    [(1, 2, "attempt 2 started"), (3, 4, "attempts 2, 3 and 4 started"), (0, None, "")],
)
def test_the_limit_is_configurable_and_zero_never_stops(
    limit: int, stops_at: int | None, named: str, config: Callable[..., PipelineConfig]
) -> None:
    records = [attempt(1, epochs=(1, 3))]
    records += [attempt(n, files=3, epochs=(1, 3)) for n in range(2, 6)]
    verdicts = judge(ResumeCheck(config(no_progress_limit=limit)), *records)
    stops = [n for n, verdict in enumerate(verdicts, 1) if verdict.stop is not None]
    assert stops[:1] == ([stops_at] if stops_at else [])
    if stops_at is not None:
        assert (verdicts[stops_at - 1].stop or "").startswith(f"{named} from zero although")
    assert all(r.resumed is False for r in records[1:])


def test_without_epochs_the_message_names_the_progress(
    config: Callable[..., PipelineConfig],
) -> None:
    records = (
        attempt(1, progress=(0.1, 0.6)),
        attempt(2, files=1, progress=(0.1, 0.3)),
        attempt(3, files=1, progress=(0.4, 0.9)),
    )
    verdicts = judge(ResumeCheck(config()), *records)
    assert verdicts[1].warnings == (
        "attempt 2 started at 10% although the checkpoint held 1 file: the script did not resume",
    )
    assert [r.resumed for r in records] == [None, False, True]
    assert verdicts[2] == Verdict()


def test_a_restart_that_lost_nothing_is_not_a_restart(
    config: Callable[..., PipelineConfig],
) -> None:
    """Reclaimed before the first epoch ended: starting at epoch 1 again is all it can do,
    even with a file in the checkpoint (say, a config written at start)."""
    records = (attempt(1, epochs=(1, 1)), attempt(2, files=1, epochs=(1, 5)))
    verdicts = judge(ResumeCheck(config()), *records)
    assert verdicts == [Verdict(), Verdict()] and records[1].resumed is None


def test_an_empty_checkpoint_after_a_spot_reclaim_is_warned_about_once(
    config: Callable[..., PipelineConfig],
) -> None:
    records = (
        attempt(1, epochs=(1, 6)),
        attempt(2, files=0, epochs=(1, 6)),
        attempt(3, files=0, epochs=(1, 6)),
    )
    verdicts = judge(ResumeCheck(config()), *records)
    (warning,) = verdicts[1].warnings
    assert warning.startswith(
        "attempt 1 ran on spot and was reclaimed before any checkpoint was written: "
        "attempt 2 found its checkpoint location empty"
    )
    assert "SM_CHECKPOINT_DIR" in warning
    assert verdicts[2] == Verdict()  # once per run; and no restart: nothing was there
    assert [r.resumed for r in records] == [None, None, None]


def test_no_empty_checkpoint_warning_when_the_count_is_unknown_or_nothing_was_reclaimed(
    config: Callable[..., PipelineConfig],
) -> None:
    not_counted = (attempt(1, epochs=(1, 6)), attempt(2, files=None, epochs=(7, 9)))
    assert judge(ResumeCheck(config()), *not_counted)[1] == Verdict()
    assert not_counted[1].resumed is True  # past the fresh start, files counted or not
    on_demand = (attempt(1, spot=False), attempt(2, files=0))
    assert judge(ResumeCheck(config()), *on_demand)[1] == Verdict()
    no_capacity = (attempt(1, Outcome.NO_CAPACITY), attempt(2, files=0))
    assert judge(ResumeCheck(config()), *no_capacity)[1] == Verdict()


def test_a_script_that_prints_no_progress_cannot_be_judged_and_says_so_once(
    config: Callable[..., PipelineConfig],
) -> None:
    records = (attempt(1), attempt(2, files=2), attempt(3, DONE, files=3))
    verdicts = judge(ResumeCheck(config()), *records)
    assert verdicts[1].warnings == (
        "attempt 2 printed no progress (`epoch=N` or `progress=0.4` lines), so whether it "
        "resumed from the 2 files in its checkpoint cannot be told",
    )
    assert verdicts[2] == Verdict()
    assert [r.resumed for r in records] == [None, None, None]


def test_after_a_failover_the_copied_files_count(config: Callable[..., PipelineConfig]) -> None:
    """Attempt 3 runs on the next leg, its checkpoint copied there: it starts from zero."""
    lost = attempt(1, epochs=(1, 5))
    outage = attempt(2, Outcome.NO_CAPACITY, files=5)
    moved = attempt(3, files=5, epochs=(1, 5))
    moved.leg, moved.checkpoint_from = 1, "/ckpt"
    verdicts = judge(ResumeCheck(config(no_progress_limit=1)), lost, outage, moved)
    assert verdicts[1] == Verdict() and outage.resumed is None  # it never ran
    assert verdicts[2].warnings[0].startswith("attempt 3 started at epoch 1 although")
    assert verdicts[2].stop is not None


def test_a_final_outcome_is_reported_as_it_is_not_as_no_progress(
    config: Callable[..., PipelineConfig],
) -> None:
    """A restart that then succeeds or fails is flagged; the run is not stopped for it."""
    for final in (DONE, Outcome.FAILED):
        records = (
            attempt(1, epochs=(1, 4)),
            attempt(2, files=4, epochs=(1, 4)),
            attempt(3, final, files=4, epochs=(1, 10)),
        )
        verdicts = judge(ResumeCheck(config()), *records)
        assert records[2].resumed is False and verdicts[2].warnings
        assert verdicts[2].stop is None


def test_a_run_resumed_from_a_crashed_orchestrators_checkpoint_is_the_baseline(
    config: Callable[..., PipelineConfig],
) -> None:
    """Attempt 1 itself started past zero (a crashed run's checkpoint): later attempts are
    measured against where it started."""
    records = (
        attempt(1, files=3, epochs=(15, 18)),
        attempt(2, files=3, epochs=(19, 22)),
        attempt(3, files=3, epochs=(1, 4)),
    )
    verdicts = judge(ResumeCheck(config()), *records)
    assert [r.resumed for r in records] == [None, True, False]
    assert verdicts[2].warnings[0].startswith("attempt 3 started at epoch 1 although")


def test_attempt_progress_keeps_the_first_and_last_epoch_and_fraction(
    config: Callable[..., PipelineConfig],
) -> None:
    progress = AttemptProgress(config())
    for line in ["loading", "epoch=3 train_loss=0.5", "note epoch=x", "epoch=7 loss=0.2"]:
        progress.feed(line)
    assert (progress.first_epoch, progress.last_epoch) == (3, 7)
    assert (progress.start, progress.end) == (0.3, 0.7)


def test_attempt_progress_ignores_cloudtrains_own_notes(
    config: Callable[..., PipelineConfig],
) -> None:
    progress = AttemptProgress(config())
    for line in [
        "epoch=4 loss=0.1",
        "[cloudtrain] simulated spot reclaim: the output matched '^epoch=1[0-9] ': SIGTERM now",
        "[cloudtrain] simulated spot reclaim: the output matched 'progress=0.9'",
    ]:
        progress.feed(line)
    assert (progress.first_epoch, progress.last_epoch) == (4, 4)
    assert (progress.start, progress.end) == (0.4, 0.4)
