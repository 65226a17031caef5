"""The backend registry: a cloud is a name and a class; a broken one breaks only itself."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_backend.backend import FakeBackend

from cloudtrain import backends
from cloudtrain.backend import build_backend, use_backend
from cloudtrain.cli import main
from cloudtrain.config import PipelineConfig, load_config
from cloudtrain.errors import ConfigError


@pytest.fixture
def project(tmp_path: Path) -> Callable[..., Path]:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print('ok')\n")

    def write(**fields: Any) -> Path:
        raw = {
            "name": "registry",
            "code": {"source_dir": "src", "entry_point": "train.py"},
            "environment": {"framework": "sklearn"},
            **fields,
        }
        path = tmp_path / "cloudtrain.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    return write


@pytest.fixture
def broken_plugin(tmp_path: Path) -> Iterator[str]:
    """An installed package whose entry point names a module that does not import."""
    site = tmp_path / "site"
    info = site / "cloudtrain_gcp-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cloudtrain-gcp\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[cloudtrain.backends]\ngcp = cloudtrain_gcp_missing.backend:GcpBackend\n"
    )
    sys.path.insert(0, str(site))
    backends._entry_points.cache_clear()
    yield "gcp"
    sys.path.remove(str(site))
    backends._entry_points.cache_clear()
    backends.backend_class.cache_clear()


def test_an_installed_plugin_is_a_cloud(broken_plugin: str) -> None:
    assert "gcp" in backends.cloud_names()


def test_a_broken_plugin_breaks_only_configs_that_name_it(
    broken_plugin: str, project: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError) as caught:  # a typo elsewhere: its own one line
        load_config(project(nmae="x"))
    assert caught.value.field == "nmae"
    assert "local" in PipelineConfig.model_json_schema()["properties"]  # every flow's form

    assert main(["plan", str(project()), "--cloud", "gcp"]) == 2
    err = capsys.readouterr().err
    assert "cloud: the gcp backend (cloudtrain_gcp_missing.backend:GcpBackend) cannot be" in err


def test_a_class_registered_under_another_name_is_refused_in_one_line(
    project: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    class Misnamed(FakeBackend):
        name = "other"

    backends.register("misnamed", Misnamed)
    try:
        assert main(["plan", str(project()), "--cloud", "misnamed"]) == 2
        assert "declares another name, 'other'" in capsys.readouterr().err
    finally:
        backends.unregister("misnamed")


def test_registering_a_name_again_replaces_its_backend_and_its_flow() -> None:
    from flows.pipeline import training_flow

    class First(FakeBackend):
        name = "swap"
        description = "first backend"

    class Second(FakeBackend):
        name = "swap"
        description = "second backend"

    backends.register("swap", First)
    try:
        assert backends.backend_class("swap") is First
        assert (training_flow("swap").description or "").startswith("first backend")
        backends.register("swap", Second)
        assert backends.backend_class("swap") is Second
        assert (training_flow("swap").description or "").startswith("second backend")
    finally:
        backends.unregister("swap")
    with pytest.raises(ConfigError, match="unknown cloud 'swap'"):
        backends.backend_class("swap")


def test_a_backend_handed_in_serves_only_inside_and_only_its_cloud(
    project: Callable[..., Path],
) -> None:
    config = load_config(project())
    handed = build_backend(config)
    with use_backend(handed):
        assert build_backend(config) is handed
        elsewhere = config.model_copy(update={"cloud": "aws"})
        assert build_backend(elsewhere) is not handed
    assert build_backend(config) is not handed
