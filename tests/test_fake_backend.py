"""A backend added as one folder (tests/fake_backend/) and one registration runs the
whole pipeline: config validation, plan, the Prefect flow and the CLI, with nothing
else in cloudtrain touched."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudtrain.backends import cloud_names, register, unregister
from cloudtrain.cli import main
from cloudtrain.config import PipelineConfig, load_config
from cloudtrain.errors import ConfigError


@pytest.fixture
def fake_cloud() -> Iterator[str]:
    register("fake", "fake_backend.backend:FakeBackend")  # the one registration
    yield "fake"
    unregister("fake")


@pytest.fixture
def fake_config(tmp_path: Path) -> Callable[..., Path]:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print('acc=0.5')\n")
    (tmp_path / "train.csv").write_text("x\n1\n")

    def write(**fake: Any) -> Path:
        raw = {
            "name": "fakes",
            "cloud": "fake",
            "code": {"source_dir": "src", "entry_point": "train.py"},
            "data": {"train": "train.csv"},
            "metrics": ["acc"],
            "environment": {"framework": "sklearn"},
            "compute": {"instance_type": "mem.small", "spot": True},
            "retry": {"max_attempts": 3, "on_demand_fallback": True},
            "fake": fake,
        }
        path = tmp_path / "cloudtrain.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    return write


def test_the_config_knows_the_new_cloud_and_its_section(
    fake_cloud: str, fake_config: Callable[..., Path]
) -> None:
    assert "fake" in cloud_names()
    config = load_config(fake_config(reclaims=2))
    assert config.cloud == "fake" and config.fake.reclaims == 2
    with pytest.raises(ConfigError) as caught:
        load_config(fake_config(reclaim=2))
    assert str(caught.value).startswith("fake.reclaim: unknown key; did you mean 'reclaims'?")
    schema = PipelineConfig.model_json_schema()
    assert "fake" in schema["properties"]["cloud"]["enum"] and "fake" in schema["properties"]


def test_without_the_registration_the_cloud_is_unknown(fake_config: Callable[..., Path]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(fake_config())
    assert [p.field for p in caught.value.problems] == ["cloud", "fake"]
    assert "unknown cloud 'fake'; valid: aws, azure, local" in str(caught.value)


def test_plan_walks_the_route_on_the_new_cloud(
    fake_cloud: str, fake_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", str(fake_config()), "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["cloud"] == "fake" and planned["region"] == "memory-1"
    assert [a["capacity"] for a in planned["attempts"]] == ["spot", "spot", "on-demand"]
    assert planned["attempts"][2]["request"]["checkpoints"] == (
        "fake://memory-1/checkpoints/<run-id>/"
    )


@pytest.mark.prefect
def test_the_whole_flow_runs_on_the_new_cloud(
    prefect_server: str,
    fake_cloud: str,
    fake_config: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fake_backend.backend import FakeBackend

    from flows.pipeline import training_flow

    flow = training_flow("fake")
    assert flow.name == "fake-training"
    built = FakeBackend.built
    summary = flow(config=load_config(fake_config(reclaims=2)))
    assert FakeBackend.built == built + 1  # one backend for the whole run, every stage
    assert summary["status"] == "succeeded" and summary["cloud"] == "fake"
    assert [a["outcome"] for a in summary["attempts"]] == [
        "interrupted",
        "interrupted",
        "succeeded",
    ]
    assert [a["capacity"] for a in summary["attempts"]] == ["spot", "spot", "on-demand"]
    assert summary["metrics"] == {"acc": 0.5}
    assert summary["compute"]["warnings"] == ["memory is not a real machine"]
    assert Path(summary["model"]["local_model_dir"], "model.txt").is_file()

    # and from the CLI, which finds the flow through the same registry
    assert main(["run", str(fake_config(reclaims=1)), "--json"]) == 0
    ran = json.loads(capsys.readouterr().out)
    assert [a["outcome"] for a in ran["attempts"]] == ["interrupted", "succeeded"]
