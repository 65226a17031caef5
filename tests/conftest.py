"""Shared fixtures: configs written to tmp folders, the digits data, a Prefect server."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import base_config
from moto_server import REGION, MotoServer

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"
sys.path.insert(0, str(DIGITS))  # prepare_data


@pytest.fixture(scope="session", autouse=True)
def no_reused_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite runs flows on Prefect's embedded server or a test server, as before the
    reused local server existed, and never starts one in the user's home:
    ``cloudtrain run`` here (in-process or a subprocess, which inherits this) has reuse
    off, and CLOUDTRAIN_HOME is a tmp folder. tests/test_local_server.py turns reuse on,
    each test in its own tmp home."""
    home = tmp_path_factory.mktemp("cloudtrain-home")
    saved = {name: os.environ.get(name) for name in ("CLOUDTRAIN_HOME", "CLOUDTRAIN_SERVER_REUSE")}
    os.environ.update(CLOUDTRAIN_HOME=str(home), CLOUDTRAIN_SERVER_REUSE="0")
    yield
    from cloudtrain import local_server

    local_server.stop(home / "server", force=True)  # none should run; never leave one behind
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write ``src/train.py`` (when given) and ``cloudtrain.yaml``; returns the YAML path."""

    def write(script: str | None = None, **sections: Any) -> Path:
        (tmp_path / "src").mkdir(exist_ok=True)
        if script is not None:
            (tmp_path / "src" / "train.py").write_text(textwrap.dedent(script))
        elif not (tmp_path / "src" / "train.py").exists():
            (tmp_path / "src" / "train.py").write_text("print('ok')\n")
        path = tmp_path / "cloudtrain.yaml"
        path.write_text(yaml.safe_dump(base_config(**sections), sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prepare_data import prepare

    folder = tmp_path_factory.mktemp("digits-data")
    prepare(folder)
    return folder


@pytest.fixture
def digits_config(tmp_path: Path, digits_data: Path) -> Callable[..., Path]:
    """The digits example in a tmp folder, with overrides."""
    shutil.copytree(DIGITS / "src", tmp_path / "src")
    shutil.copytree(digits_data, tmp_path / "data")
    example = yaml.safe_load((DIGITS / "cloudtrain.yaml").read_text())

    def write(**overrides: Any) -> Path:
        config = {**example}
        config["hyperparameters"] = {**example["hyperparameters"], "epoch_seconds": 0}
        config["local"] = {**example["local"], "spot_interruptions": [], "grace_period": 5}
        for key, value in overrides.items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
        path = tmp_path / "cloudtrain.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A temporary Prefect server for the session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's server on loopback for the session (S3, SageMaker, ECR, STS, IAM)."""
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """A clean moto for one test, and an AWS environment that can reach nothing else."""
    moto_server.reset()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)  # boto3 honours it for every service
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    yield moto_server


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """Azurite's blob service on loopback for the session; yields its connection string.

    Fails (never skips) when Azurite is not installed: `make test` installs it with npm.
    """
    from azurite import Azurite, AzuriteError

    server = Azurite()
    try:
        server.start()
        reason = ""
    except AzuriteError as exc:
        server.close()
        reason = str(exc)
    if reason:
        pytest.fail(reason, pytrace=False)
    yield server.connection_string
    server.close()


@pytest.fixture
def azurite_container(azurite: str) -> Iterator[str]:
    """A new, empty blob container on Azurite for one test; yields its name."""
    import uuid

    from azure.storage.blob import ContainerClient

    name = f"test-{uuid.uuid4().hex}"
    with ContainerClient.from_connection_string(azurite, container_name=name) as container:
        container.create_container()
        yield name
        container.delete_container()


@pytest.fixture
def s3_remote(aws: MotoServer) -> Any:
    """An S3Store on a new bucket on moto, with the request log (tests/object_stores.py)."""
    from object_stores import S3Remote

    return S3Remote(aws)


@pytest.fixture
def blob_remote(azurite: str, azurite_container: str) -> Iterator[Any]:
    """A BlobStore on a new container on Azurite, with the wire log (tests/object_stores.py)."""
    from object_stores import BlobRemote

    remote = BlobRemote(azurite, azurite_container)
    yield remote
    remote.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A channel: nested small files and one file above the stores' (lowered) thresholds
    for multipart uploads and streaming from disk."""
    data = tmp_path / "data"
    (data / "sub" / "deeper").mkdir(parents=True)
    for index in range(4):
        (data / f"part-{index}.csv").write_text(f"x,y\n{index},{index * 2}\n" * 50)
    (data / "sub" / "labels.json").write_text('{"a": 1}')
    (data / "sub" / "deeper" / "notes.txt").write_text("nested")
    (data / "big.bin").write_bytes(os.urandom(11 * 1024 * 1024))  # 3 parts: 5 + 5 + 1 MiB
    return data


@pytest.fixture(scope="session")
def prefect_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Prefect server on loopback, prefect.yaml deployed from a copy of the
    checkout, and a process worker (tests/prefect_server.py); all stopped by process id
    at the end of the session, also when a test failed."""
    from prefect_server import PrefectStack

    stack = PrefectStack(tmp_path_factory.mktemp("prefect-stack"))
    try:
        yield stack.start()
    finally:
        stack.stop()
