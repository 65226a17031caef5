"""The local flow on a real (temporary) Prefect server: tasks, artifacts, names, tags."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from cloudtrain.config import load_config
from cloudtrain.errors import ConfigError, TrainingError

pytestmark = pytest.mark.prefect


def read_run(flow_run_id: Any) -> tuple[Any, dict[str, Any], list[Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return flow_run, {artifact.key: artifact for artifact in artifacts}, task_runs


def test_digits_flow_survives_two_reclaims(
    prefect_server: str, digits_config: Callable[..., Path]
) -> None:
    from flows.local_training import local_training

    config = load_config(
        digits_config(
            hyperparameters={"epochs": 10},
            local={"spot_interruptions": ["^epoch=3 ", "^epoch=6 "]},
        )
    )
    state = local_training(config=config, return_state=True)  # no tags() around it
    assert state.is_completed()
    summary = state.result()
    assert summary["status"] == "succeeded"
    assert [a["outcome"] for a in summary["attempts"]] == [
        "interrupted",
        "interrupted",
        "succeeded",
    ]
    assert [a["capacity"] for a in summary["attempts"]] == ["spot", "spot", "on-demand"]
    assert Path(summary["model"]["model_archive"]).is_file()
    assert set(summary["metrics"]) == {"val_accuracy", "train_loss"}

    flow_run, artifacts, task_runs = read_run(state.state_details.flow_run_id)
    assert flow_run.name.startswith("digits-sgd/local/20")
    assert {"pipeline:digits-sgd", "cloud:local"} <= set(flow_run.tags)
    assert {run.name.rsplit("-", 1)[0] for run in task_runs} == {
        "upload-data",
        "check-for-changes",
        "ensure-compute",
        "resolve-environment",
        "train",
        "collect-artifacts",
        "publish-report",
    }
    report = artifacts["digits-sgd-report"].data
    assert "# digits-sgd on local: succeeded" in report
    assert "simulated spot reclaim: the output matched '^epoch=3 '" in report
    assert "| val_accuracy |" in report and "model.tar.gz" in report
    second = artifacts["digits-sgd-attempt-2"]
    assert {"field": "outcome", "value": "interrupted"} in json.loads(second.data)
    table = artifacts["digits-sgd-attempts"]
    assert table.type == "table" and '"outcome": "interrupted"' in str(table.data)


def test_a_failing_script_fails_the_flow_and_still_reports(
    prefect_server: str, write_config: Callable[..., Path]
) -> None:
    from flows.local_training import local_training

    config = load_config(write_config("raise SystemExit(3)\n", name="broken"))
    state = local_training(config=config, return_state=True)
    assert state.is_failed()
    with pytest.raises(
        TrainingError, match=r"attempt 1 failed \(the script failed \(exit code 3\)\); not retried"
    ):
        state.result()
    _, artifacts, _ = read_run(state.state_details.flow_run_id)
    assert "# broken on local: failed" in artifacts["broken-report"].data


def test_dataframes_become_channels(prefect_server: str, write_config: Callable[..., Path]) -> None:
    from flows.local_training import local_training

    script = """
        import os, pandas as pd
        frame = pd.read_parquet(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "data.parquet"))
        print(f"rows={len(frame)} total={frame['x'].sum():g}")
    """
    config = load_config(write_config(script, name="frames", metrics=["rows", "total"]))
    frame = pd.DataFrame({"x": [1.5, 2.5, 3.0]})
    summary = local_training(config=config, dataframes={"train": frame})
    assert summary["metrics"] == {"rows": 3.0, "total": 7.0}
    assert summary["data"]["train"]["source"] == "DataFrame 3x1"
    again = local_training(config=config, dataframes={"train": frame})
    assert again["data"]["train"]["unchanged"] is True


def test_the_train_task_timeout_stops_the_script(
    prefect_server: str,
    write_config: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the orchestrator's own timeout fires, the attempt is stopped, not left running."""
    import os

    from flows.local_training import local_training

    pid_file = tmp_path / "pid"
    script = f"""
        import os, time
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(120)
    """
    monkeypatch.setattr("flows.pipeline.training_budget_seconds", lambda config: 3.0)
    config = load_config(write_config(script, name="slow", local={"grace_period": 1}))
    state = local_training(config=config, return_state=True)
    assert not state.is_completed()
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_work_dir_that_cannot_be_made_is_the_configs_problem_before_any_data_moves(
    prefect_server: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    from flows.local_training import local_training

    (tmp_path / "data.csv").write_text("x\n1\n")
    (tmp_path / "a-file").write_text("not a folder")
    # Refused when the config loads; a folder that turns into a file after that is the
    # run's first check.
    with pytest.raises(ConfigError, match="a-file is a file"):
        load_config(write_config(work_dir=str(tmp_path / "a-file" / "work")))
    config = load_config(write_config(data={"train": "data.csv"}))
    config = config.model_copy(update={"work_dir": tmp_path / "a-file" / "work"})
    state = local_training(config=config, return_state=True)
    with pytest.raises(ConfigError) as caught:
        state.result()
    assert caught.value.field == "work_dir"
    assert caught.value.message.startswith(f"cannot make {tmp_path / 'a-file' / 'work'}")
