"""prefect.yaml points at real flows with parameters that validate."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from cloudtrain.config import validate_config

REPO = Path(__file__).resolve().parents[1]


def test_every_deployment_has_a_flow_and_a_valid_config(digits_data: Path) -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert spec["deployments"], "prefect.yaml has no deployments"
    for deployment in spec["deployments"]:
        path, _, name = deployment["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        assert flow.name.endswith("-training")
        raw = dict(deployment["parameters"]["config"])
        # the data is prepared in the checkout before a run; here it comes from the fixture
        raw["data"] = {
            channel: str(digits_data / Path(p).name) for channel, p in raw["data"].items()
        }
        config = validate_config(raw, base_dir=REPO)
        assert config.code.source_dir == REPO / "examples" / "digits" / "src"
        assert {"pipeline:" + config.name, "cloud:" + config.cloud} <= set(deployment["tags"])
