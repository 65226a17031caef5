"""The report and the summary (``--json``) show what each stage produced, warnings too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cloudtrain.config import load_config
from cloudtrain.report import RunReport
from cloudtrain.results import ComputeTarget, ResolvedEnvironment

DRIFT = "compute cpu-cluster: vm size Standard_DS2_v2 differs from Standard_DS3_v2"


def test_compute_warnings_are_typed_and_shown_like_environment_warnings(
    write_config: Callable[..., Path],
) -> None:
    run = RunReport(load_config(write_config()))
    run.compute = ComputeTarget(
        "cpu-cluster", "Standard_DS2_v2", 1, {"action": "unchanged"}, (DRIFT,)
    )
    run.environment = ResolvedEnvironment(
        "curated", "azureml:x@latest", "curated x", ("old image",)
    )

    summary = run.summary()
    assert summary["compute"]["warnings"] == [DRIFT]
    assert summary["compute"]["details"] == {"action": "unchanged"}  # not buried in details
    assert summary["environment"]["warnings"] == ["old image"]
    markdown = run.markdown()
    assert f"> warning: {DRIFT}" in markdown
    assert "> warning: old image" in markdown
    assert markdown.index("Compute: cpu-cluster") < markdown.index(f"> warning: {DRIFT}")


def test_the_report_shows_which_attempts_did_not_resume(
    write_config: Callable[..., Path],
) -> None:
    from cloudtrain.recovery import Outcome
    from cloudtrain.report import attempts_table
    from cloudtrain.results import AttemptRecord, TrainingResult

    config = load_config(write_config(compute={"spot": True}))
    result = TrainingResult("run", "/ckpt", stopped="no_progress", stop_reason="no resume")
    for number, files, resumed in ((1, 0, None), (2, 2, False), (3, None, None)):
        record = AttemptRecord(number, f"job-{number}", True, Outcome.INTERRUPTED, "", None, None)
        record.resumed_from, record.resumed = files, resumed
        record.progress_start, record.progress_end = 0.1, 0.3
        result.attempts.append(record)
    markdown = RunReport(config, result=result).markdown()
    assert markdown.startswith("# unit on local: no_progress")
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert "| 10% -> 30% | 0 file(s) |" in rows[-3]
    assert "| 10% -> 30% (did not resume) | 2 file(s) |" in rows[-2]
    assert "| 10% -> 30% | not counted |" in rows[-1]
    assert "(3 interruption(s); 1 attempt(s) started from scratch)" in markdown
    assert [row["resumed"] for row in attempts_table(result)] == [None, False, None]
    # an attempt that found the checkpoint empty after a reclaim did not resume either
    result.attempts[1].resumed_from, result.attempts[1].resumed = 0, None
    assert "(3 interruption(s); 1 attempt(s) started from scratch)" in (
        RunReport(config, result=result).markdown()
    )
    result.attempts[1].resumed_from, result.attempts[1].resumed = 2, True
    assert "(3 interruption(s) resumed from it)" in RunReport(config, result=result).markdown()
