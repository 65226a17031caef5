"""Retrain only when something changed: the fingerprint, the decision, and the flow."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from cloudtrain.changes import RunRecords, config_digest, decide, fingerprint
from cloudtrain.config import load_config
from cloudtrain.contract import ProgressParser
from cloudtrain.results import ChannelData


def channels(digest: str = "d" * 64) -> dict[str, ChannelData]:
    return {"train": ChannelData("train", "/x", digest, 1, 1)}


def test_each_input_changes_the_fingerprint(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = load_config(write_config(hyperparameters={"lr": 0.1}))
    base = fingerprint(config, channels())
    assert base is not None
    assert fingerprint(config, channels("e" * 64)).digest != base.digest  # data
    assert (
        fingerprint(load_config(write_config(hyperparameters={"lr": 0.2})), channels()).digest
        != base.digest
    )
    (tmp_path / "src" / "train.py").write_text("print('changed')\n")
    assert fingerprint(config, channels()).digest != base.digest  # code
    # recovery settings do not change the model
    (tmp_path / "src" / "train.py").write_text("print('ok')\n")
    same = load_config(write_config(hyperparameters={"lr": 0.1}, retry={"max_attempts": 7}))
    assert fingerprint(same, channels()).digest == fingerprint(config, channels()).digest


def test_the_decision_and_its_reason(write_config: Callable[..., Path]) -> None:
    config = load_config(write_config())
    current = fingerprint(config, channels())
    assert current is not None
    records = RunRecords(config.work_dir)
    assert decide(current, None, force=False).reason == "no earlier successful run to compare with"
    records.save_success("unit", "local", current, {"run_id": "r1", "metrics": {"acc": 1.0}})
    previous = records.last_success("unit", "local")
    skip = decide(current, previous, force=False)
    assert not skip.train and "unchanged since run r1" in skip.reason
    assert decide(current, previous, force=True).train
    changed = decide(fingerprint(config, channels("e" * 64)), previous, force=False)
    assert changed.train and changed.reason.endswith("data:train")
    uri = {"train": ChannelData("train", "s3://b/k/", "", 0, 0)}
    assert decide(fingerprint(config, uri), previous, force=False).train


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("progress=0.25", 0.25),
        ("step 3 progress=40%", 0.4),
        ("progress=75", 0.75),
        ("epoch=5 loss=1", 0.5),
        ("no progress here", None),
        ("myepoch=3", None),
    ],
)
def test_progress_from_the_output(line: str, expected: float | None) -> None:
    assert ProgressParser(total_epochs=10).feed(line) == expected


@pytest.mark.prefect
def test_a_second_run_with_nothing_changed_is_skipped_and_force_trains(
    prefect_server: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.local_training import local_training

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("x\n1\n")
    config = load_config(
        write_config(
            "print('epoch=1'); print('acc=0.9')\n",
            name="reuse",
            data={"train": "data/a.csv"},
            metrics=["acc"],
            hyperparameters={"epochs": 1},
        )
    )
    first = local_training(config=config)
    assert first["status"] == "succeeded"
    second_state = local_training(config=config, return_state=True)
    second = second_state.result()
    assert second["status"] == "skipped" and second["reused_run_id"] == first["run_id"]
    assert "unchanged since run" in second["skip_reason"]
    assert second["metrics"] == {"acc": 0.9} and second["model"] == first["model"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[second_state.state_details.flow_run_id])
            )
        )
    report = next(a.data for a in artifacts if a.key == "reuse-report")
    assert "Skipped training: data, code and config are unchanged" in report
    forced = local_training(config=config, force=True)
    assert forced["status"] == "succeeded" and forced["run_id"] != first["run_id"]
    assert forced["decision"] == "forced (force=true)"
    (tmp_path / "data" / "a.csv").write_text("x\n2\n")
    changed = local_training(config=config)
    assert changed["status"] == "succeeded" and "data:train" in changed["decision"]


@pytest.mark.prefect
def test_training_progress_is_an_artifact(
    prefect_server: str, write_config: Callable[..., Path]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.local_training import local_training

    script = "for e in range(1, 5): print(f'epoch={e}')\n"
    config = load_config(write_config(script, name="progress", hyperparameters={"epochs": 4}))
    state = local_training(config=config, return_state=True)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    progress = next(a for a in artifacts if a.key == "progress-progress")
    assert progress.type == "progress" and float(progress.data) == 100.0


# Digests of these configs as cloudtrain 0.1 (commit 4173d77, when aws/azure/local were
# fields of the config) computed them: a config unchanged across the move of the cloud
# sections to their backends keeps its digest, so nothing retrains for the upgrade alone.
DIGESTS_BEFORE_REGISTERED_CLOUDS = {
    """
    name: digest-check
    cloud: local
    code: {source_dir: src, entry_point: train.py}
    hyperparameters: {epochs: 3, learning_rate: 0.00001, note: "é"}
    environment: {framework: sklearn, framework_version: "1.2"}
    compute: {instance_type: ml.m5.large, spot: true, max_run: 600, max_wait: 1200}
    retry: {max_attempts: 2}
    local: {spot_interruptions: ["^epoch=1 ", 2.5], grace_period: 2}
    aws: {region: eu-west-1, bucket: my-bucket}
    """: "ae253e8078073f7b41f3f2de718fd7e0ec336b6503e308f9760c9edef4a2b3da",
    """
    name: digest-two
    code: {source_dir: src, entry_point: train.py}
    environment: {image: "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1"}
    azure: {subscription_id: s, resource_group: r, workspace: w, compute: cpu}
    """: "b9c1ab4421a78eb17de9865ac046507b28414149fe54f4130468140add501f09",
}


@pytest.mark.parametrize("text", list(DIGESTS_BEFORE_REGISTERED_CLOUDS))
def test_a_config_keeps_its_digest_across_the_upgrade(tmp_path: Path, text: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print(1)\n")
    (tmp_path / "cloudtrain.yaml").write_text(textwrap.dedent(text))
    config = load_config(tmp_path / "cloudtrain.yaml")
    assert config_digest(config) == DIGESTS_BEFORE_REGISTERED_CLOUDS[text]


@pytest.mark.parametrize("text", list(DIGESTS_BEFORE_REGISTERED_CLOUDS))
def test_tracking_settings_do_not_change_the_digest(tmp_path: Path, text: str) -> None:
    """Where a run is logged is not what it learns: turning MLflow on does not retrain."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print(1)\n")
    tracked = textwrap.dedent(text) + "tracking: {mlflow_uri: 'https://mlflow.example.com'}\n"
    (tmp_path / "cloudtrain.yaml").write_text(tracked)
    config = load_config(tmp_path / "cloudtrain.yaml")
    assert config.tracking is not None
    assert config_digest(config) == DIGESTS_BEFORE_REGISTERED_CLOUDS[text]
