"""The same config gets the same answer on every backend: an empty channel folder, or one
holding a link that leaves it, is refused on data.<channel> by the pipeline itself, before
anything is created: no run folder, no object, no request to the cloud."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from azure_fake import FakeMLClient
from moto_server import MotoServer
from sagemaker_lifecycle import Lifecycle, lifecycle
from test_aws_training import aws_config
from test_azure_training import azure_backend, azure_config, fake

from cloudtrain.backend import use_backend
from cloudtrain.backends.azure.backend import AzureBackend
from cloudtrain.config import PipelineConfig, load_config
from cloudtrain.errors import ConfigError

__all__ = ["aws_config", "azure_backend", "azure_config", "fake", "lifecycle"]  # fixtures

pytestmark = pytest.mark.prefect

LAYOUTS = ["empty", "empty subfolders", "a link that leaves"]


def channel(base: Path, layout: str) -> str:
    """A channel folder ``chan`` under ``base`` laid out as ``layout``; its config path."""
    folder = base / "chan"
    folder.mkdir()
    if layout == "empty subfolders":
        (folder / "a" / "b").mkdir(parents=True)
    elif layout == "a link that leaves":
        (folder / "ok.csv").write_text("x\n1\n")
        (base / "secret.txt").write_text("password")
        os.symlink(base / "secret.txt", folder / "leak.csv")
    return "chan"


def refusal(state: object) -> ConfigError:
    assert state.is_failed(), state  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as raised:
        state.result()  # type: ignore[attr-defined]
    assert {p.field for p in raised.value.problems} == {"data.train"}
    return raised.value


def expected(layout: str) -> str:
    return "leak.csv -> " if layout == "a link that leaves" else "holds no files to train on"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_local(
    prefect_server: str, write_config: Callable[..., Path], tmp_path: Path, layout: str
) -> None:
    from flows.local_training import local_training

    config = load_config(write_config(data={"train": channel(tmp_path, layout)}))

    error = refusal(local_training(config=config, return_state=True))

    assert expected(layout) in str(error)
    assert not config.work_dir.exists()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_aws(
    prefect_server: str,
    aws_config: Callable[..., Path],
    aws: MotoServer,
    lifecycle: Lifecycle,
    tmp_path: Path,
    layout: str,
) -> None:
    from flows.aws_training import aws_training

    config = load_config(aws_config(data={"train": channel(tmp_path, layout)}))
    aws.log.clear()

    error = refusal(aws_training(config=config, return_state=True))

    assert expected(layout) in str(error)
    assert aws.log.s3("PUT") == [] and aws.log.s3("POST") == []
    assert aws.log.actions("CreateTrainingJob") == []
    assert not config.work_dir.exists()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_azure(
    prefect_server: str,
    fake: FakeMLClient,
    azure_config: Callable[..., PipelineConfig],
    azure_backend: Callable[[PipelineConfig], AzureBackend],
    azurite: str,
    azurite_container: str,
    tmp_path: Path,
    layout: str,
) -> None:
    from azure.storage.blob import ContainerClient

    from flows.azure_training import azure_training

    config = azure_config(data={"train": channel(tmp_path, layout)})

    with use_backend(azure_backend(config)):
        error = refusal(azure_training(config=config, return_state=True))

    assert expected(layout) in str(error)
    assert fake.writes() == []
    with ContainerClient.from_connection_string(azurite, azurite_container) as container:
        assert list(container.list_blobs()) == []
    assert not config.work_dir.exists()
