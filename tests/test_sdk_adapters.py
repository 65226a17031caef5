"""The SDK adapters (cloudtrain/backends/*/sdk.py) against the real SDKs, not the fake.

Each adapter function reaches into an SDK where no public API serves; these tests run it
on the SDK's own objects (a real ``MLClient`` whose HTTP goes to canned answers through
azure-core's ``RequestsTransport``, real entities, a real prefect-aws block on a Prefect
test server), so an SDK upgrade that moves a name fails here, naming the adapter
function, instead of in a production run. The last tests keep private SDK names out of
every other module.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from cloudtrain.backends.aws import sdk as aws_sdk
from cloudtrain.backends.azure import sdk as azure_sdk
from cloudtrain.config import PipelineConfig, load_config
from cloudtrain.results import AttemptSpec, ComputeTarget, ResolvedEnvironment

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cloudtrain", "tasks", "flows")  # ours: private names of these are fine
ADAPTERS = {REPO / "cloudtrain/backends/azure/sdk.py", REPO / "cloudtrain/backends/aws/sdk.py"}


@contextlib.contextmanager
def adapter(function: Callable[..., Any], *sdks: str) -> Iterator[None]:
    """Turn any failure inside into one that names the adapter function and SDK versions."""
    try:
        yield
    except Exception as exc:
        versions = ", ".join(f"{sdk} {version(sdk)}" for sdk in sdks)
        pytest.fail(
            f"SDK adapter {function.__module__}.{function.__name__} broke against "
            f"{versions}: {type(exc).__name__}: {exc}"
        )


# --- azure-ai-ml: run history through a real MLClient ------------------------------------

SUBSCRIPTION, GROUP, WORKSPACE = "00000000-0000-0000-0000-000000000000", "rg", "ws"
WORKSPACE_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}"
    f"/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}"
)
API = "https://westeurope.api.azureml.ms"
JOB = "digits-0123abcd-a1"
# Answers shaped after the service's (field names from the SDK's own REST models: the ARM
# workspace, the workspace's discovery document, run history's RunDetails); written for
# these tests, not captured from Azure.
ANSWERS: dict[str, dict[str, Any]] = {
    f"https://management.azure.com{WORKSPACE_ID}": {
        "id": WORKSPACE_ID,
        "name": WORKSPACE,
        "type": "Microsoft.MachineLearningServices/workspaces",
        "location": "westeurope",
        "kind": "Default",
        "properties": {
            "friendlyName": WORKSPACE,
            "workspaceId": "11111111-2222-3333-4444-555555555555",
            "discoveryUrl": f"{API}/discovery",
            "provisioningState": "Succeeded",
        },
    },
    f"{API}/discovery": {
        "api": API,
        "catalog": API,
        "experimentation": API,
        "history": API,
        "modelmanagement": API,
        "pipelines": API,
        "studiourl": "https://ml.azure.com",
    },
    f"{API}/history/v1.0{WORKSPACE_ID}/runs/{JOB}/details": {
        "runId": JOB,
        "runUuid": "66666666-7777-8888-9999-000000000000",
        "status": "Failed",
        "target": "cpu-cluster",
        "createdTimeUtc": "2026-12-01T09:58:41.2040000+00:00",
        "startTimeUtc": "2026-12-01T10:00:05.1230000+00:00",
        "endTimeUtc": "2026-12-01T10:07:35.0000000+00:00",
        "error": {
            "error": {
                "code": "JobPreempted",
                "severity": None,
                "message": "The low priority node running the job was preempted.",
                "messageFormat": "The low priority node running the job was preempted.",
                "messageParameters": {},
                "details": [],
            },
            "time": "2026-12-01T10:07:35.0000000+00:00",
            "componentName": "RunHistory",
        },
        "warnings": None,
        "tags": {"cloudtrain:attempt": "1"},
        "properties": {"azureml.runsource": "azureml.scriptrun"},
        "logFiles": {},
        "runDefinition": None,
    },
}


class CannedAzure:
    """A requests adapter that answers the GETs above and records every request."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def mount(self) -> Any:
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.response import HTTPResponse

        canned = self

        class Adapter(HTTPAdapter):
            def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
                canned.requests.append(request)
                answer = ANSWERS.get(request.url.split("?")[0])
                status = 200 if answer is not None and request.method == "GET" else 404
                if status == 404:
                    answer = {"error": {"code": "NotFound", "message": request.url}}
                raw = HTTPResponse(
                    body=io.BytesIO(json.dumps(answer).encode()),
                    headers={"Content-Type": "application/json; charset=utf-8"},
                    status=status,
                    preload_content=False,
                )
                return self.build_response(request, raw)

        session = requests.Session()
        session.mount("https://", Adapter())
        return session


class StaticToken:
    """A credential as azure-core calls it (``get_token`` returning an ``AccessToken``)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken("test-token", int(time.time()) + 3600)


@pytest.fixture
def azure_service() -> CannedAzure:
    return CannedAzure()


@pytest.fixture
def ml_client(azure_service: CannedAzure) -> Any:
    """A real MLClient, built as AzureClients builds it, its HTTP answered by CannedAzure."""
    from azure.ai.ml import MLClient
    from azure.core.pipeline.transport import RequestsTransport

    session = azure_service.mount()
    return MLClient(
        StaticToken(), SUBSCRIPTION, GROUP, WORKSPACE, transport=RequestsTransport(session=session)
    )


def test_run_details_reads_start_end_and_error_from_run_history(
    ml_client: Any, azure_service: CannedAzure
) -> None:
    from cloudtrain.backends.azure.backend import _error_message

    with adapter(azure_sdk.run_details, "azure-ai-ml"):
        details = azure_sdk.run_details(ml_client, JOB)
        assert details.start_time_utc == datetime(2026, 12, 1, 10, 0, 5, 123000, tzinfo=UTC)
        assert details.end_time_utc == datetime(2026, 12, 1, 10, 7, 35, tzinfo=UTC)
        # what describe_attempt classifies the outcome from
        assert _error_message(details) == (
            "JobPreempted: The low priority node running the job was preempted."
        )
    last = azure_service.requests[-1]
    assert last.url.startswith(f"{API}/history/v1.0{WORKSPACE_ID}/runs/{JOB}/details")
    assert last.headers["Authorization"] == "Bearer test-token"


def test_run_details_of_an_unknown_job_raises_the_sdk_error(ml_client: Any) -> None:
    from azure.core.exceptions import HttpResponseError

    from cloudtrain.backends.azure.errors import is_not_found

    with adapter(azure_sdk.run_details, "azure-ai-ml"), pytest.raises(HttpResponseError) as raised:
        azure_sdk.run_details(ml_client, "no-such-job")
    assert is_not_found(raised.value)  # what the backend maps to "not found"


# --- azure-ai-ml: entities serialized to their REST bodies ---------------------------------


@pytest.fixture
def azure_config(write_config: Callable[..., Path]) -> Callable[..., PipelineConfig]:
    def make(**sections: Any) -> PipelineConfig:
        azure = {
            "subscription_id": SUBSCRIPTION,
            "resource_group": GROUP,
            "workspace": WORKSPACE,
            "compute": "cpu-cluster",
            **sections.pop("azure", {}),
        }
        path = write_config(
            cloud="azure",
            compute={"instance_type": "Standard_DS3_v2", "spot": True, "max_run": 5400},
            azure=azure,
            **sections,
        )
        return load_config(path)

    return make


def test_rest_body_of_a_low_priority_cluster(azure_config: Callable[..., PipelineConfig]) -> None:
    from cloudtrain.backends.azure.compute import desired_cluster

    cluster = desired_cluster(azure_config(), low_priority=True)
    with adapter(azure_sdk.rest_body, "azure-ai-ml"):
        body = azure_sdk.rest_body(cluster)["properties"]
        assert body["computeType"] == "AmlCompute"
        assert body["properties"]["vmSize"] == "Standard_DS3_v2"
        assert body["properties"]["vmPriority"] == "LowPriority"
        assert body["properties"]["scaleSettings"] == {
            "minNodeCount": 0,
            "maxNodeCount": 4,
            "nodeIdleTimeBeforeScaleDown": "PT2M",
        }


def test_rest_body_of_a_data_asset() -> None:
    from azure.ai.ml.entities import Data

    uri = "azureml://datastores/workspaceblobstore/paths/cloudtrain/digits/train/"
    asset = Data(name="digits-train", version="ab12", type="uri_folder", path=uri)
    with adapter(azure_sdk.rest_body, "azure-ai-ml"):
        body = azure_sdk.rest_body(asset)["properties"]
        assert (body["dataType"], body["dataUri"]) == ("uri_folder", uri)


def test_rest_body_of_a_custom_environment_carries_its_conda_file(
    azure_config: Callable[..., PipelineConfig],
) -> None:
    from cloudtrain.backends.azure.environments import conda_spec, custom_environment

    image = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
    config = azure_config()
    conda = conda_spec("3.10", ["scikit-learn==1.2.*"])
    with adapter(azure_sdk.rest_body, "azure-ai-ml"):
        body = azure_sdk.rest_body(custom_environment(config, image=image, conda=conda))
        assert body["properties"]["image"] == image
        assert "  - scikit-learn==1.2.*\n" in body["properties"]["condaFile"]
        plain = azure_sdk.rest_body(custom_environment(config, image=image, conda=None))
        assert plain["properties"]["image"] == image
        assert plain["properties"].get("condaFile") is None


@pytest.mark.parametrize("serverless", [False, True])
def test_a_command_job_body_is_what_create_or_update_sends(
    azure_config: Callable[..., PipelineConfig], serverless: bool
) -> None:
    from azure.ai.ml.entities import Command, CommandJob
    from azure.ai.ml.entities._job.to_rest_functions import to_rest_job_object

    from cloudtrain.backends.azure import jobs

    config = azure_config(
        azure={"compute_type": "serverless", "compute": None} if serverless else {}
    )
    checkpoints = jobs.datastore_uri("workspaceblobstore", "cloudtrain/digits/checkpoints/r")
    spec = AttemptSpec(
        run_id="0123abcd",
        number=1,
        spot=True,
        job_name=JOB,
        checkpoint_uri=checkpoints,
        channels={"train": "azureml:digits-train:ab12"},
        compute=ComputeTarget("cpu-cluster", "Standard_DS3_v2", 1),
        environment=ResolvedEnvironment(
            "curated", "azureml:AzureML-sklearn-1.5-ubuntu22.04-py39-cpu:3", "curated"
        ),
    )
    node = jobs.command_job(
        config,
        spec,
        compute=None if serverless else "cpu-cluster",
        inputs={"train": ("uri_folder", "azureml:digits-train:ab12")},
    )
    assert isinstance(node, Command)  # what command() builds and create_or_update takes

    with adapter(azure_sdk.as_command_job, "azure-ai-ml"):
        job = azure_sdk.as_command_job(node)
        assert isinstance(job, CommandJob), f"a {type(job).__name__}, not a CommandJob"
        assert job.name == JOB
        assert azure_sdk.as_command_job(job) is job
    with adapter(azure_sdk.rest_body, "azure-ai-ml"):
        body = azure_sdk.rest_body(job)
        props = body["properties"]
        assert (body["name"], props["jobType"]) == (JOB, "Command")
        assert props["command"].startswith("env SM_CHANNEL_TRAIN=${{inputs.train}} ")
        assert props["environmentId"] == "azureml:AzureML-sklearn-1.5-ubuntu22.04-py39-cpu:3"
        assert props["environmentVariables"]["CLOUDTRAIN_ATTEMPT"] == "1"
        assert props["inputs"]["train"]["uri"] == "azureml:digits-train:ab12"
        assert props["outputs"]["checkpoints"]["mode"] == "ReadWriteMount"
        assert props["outputs"]["checkpoints"]["uri"] == checkpoints
        assert props["limits"]["timeout"] == "PT1H30M"
        if serverless:
            assert props["queueSettings"] == {"jobTier": "Spot"}
            assert props["resources"]["instanceType"] == "Standard_DS3_v2"
        else:
            assert props["computeId"] == "cpu-cluster"
    # ``cloudtrain plan`` prints the body ``jobs.create_or_update`` would send
    sent = to_rest_job_object(node).as_dict()
    assert jobs.rest_body(node) == sent, (
        "azure-ai-ml no longer submits a command() node as _to_job()._to_rest_object(): "
        "cloudtrain/backends/azure/sdk.py as_command_job/rest_body print another body "
        "than the one jobs.create_or_update sends"
    )


# --- prefect-aws: a real AwsCredentials block -----------------------------------------------

BLOCK = "cloudtrain-test-sdk-adapter"
KEY_ID, SECRET = "AKIASDKADAPTER000001", "sdk-adapter-secret-value"


@pytest.fixture
def credentials_block(prefect_server: str) -> str:
    from prefect_aws import AwsCredentials

    AwsCredentials(
        aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, region_name="eu-west-1"
    ).save(BLOCK, overwrite=True)
    return BLOCK


@pytest.mark.prefect
def test_load_block_returns_the_saved_aws_credentials(credentials_block: str) -> None:
    from prefect_aws import AwsCredentials

    from cloudtrain.backends.aws.clients import AwsClients
    from cloudtrain.backends.aws.settings import AwsConfig

    with adapter(aws_sdk.load_block, "prefect", "prefect-aws"):
        block = aws_sdk.load_block(AwsCredentials, credentials_block)
        assert isinstance(block, AwsCredentials)
        assert block.aws_access_key_id == KEY_ID
        assert block.aws_secret_access_key is not None
        assert block.aws_secret_access_key.get_secret_value() == SECRET
    # the call site: a boto3 session signed with the block's keys
    session = AwsClients.from_config(AwsConfig(credentials_block=credentials_block)).session
    credentials = session.get_credentials()
    assert credentials is not None and credentials.access_key == KEY_ID
    assert session.region_name == "eu-west-1"


@pytest.mark.prefect
def test_load_block_returns_the_block_also_inside_a_coroutine(credentials_block: str) -> None:
    """Where a bare ``AwsCredentials.load(name)`` would return a coroutine."""
    from prefect_aws import AwsCredentials

    async def sync_code_called_from_a_coroutine() -> Any:
        return aws_sdk.load_block(AwsCredentials, credentials_block)

    with adapter(aws_sdk.load_block, "prefect", "prefect-aws"):
        block = asyncio.run(sync_code_called_from_a_coroutine())
        assert isinstance(block, AwsCredentials) and block.aws_access_key_id == KEY_ID


@pytest.mark.prefect
def test_a_missing_block_is_a_config_error(prefect_server: str) -> None:
    from cloudtrain.backends.aws.clients import AwsClients
    from cloudtrain.backends.aws.settings import AwsConfig
    from cloudtrain.errors import ConfigError

    expected = "aws.credentials_block: no AwsCredentials block"
    with adapter(aws_sdk.load_block, "prefect", "prefect-aws"):
        with pytest.raises(ConfigError, match=expected):
            AwsClients.from_config(AwsConfig(credentials_block="no-such-block"))


# --- sagemaker: the image URI tables, read without importing sagemaker.core -----------------


def test_image_uri_tables_are_what_config_for_framework_reads() -> None:
    from sagemaker.core import image_uris

    with adapter(aws_sdk.image_uri_config, "sagemaker-core"):
        names = aws_sdk.image_uri_config_names()
        assert set(image_uris.list_frameworks()) <= set(names)
        assert {"sklearn", "pytorch", "kmeans", "instance_gpu_info"} <= set(names)
        for name in names:
            assert aws_sdk.image_uri_config(name) == image_uris.config_for_framework(name), name


def test_image_uri_tables_are_read_without_importing_sagemaker_core() -> None:
    """In a new interpreter: finding and reading the tables runs no SDK code."""
    code = (
        "import sys; from cloudtrain.backends.aws import sdk; "
        "sdk.image_uri_config('sklearn'); "
        "print(sorted(m for m in sys.modules if m.startswith('sagemaker')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert result.stdout.strip() == "['sagemaker']"  # the namespace package only


# --- the rule: private SDK names only in the adapters -------------------------------------


def private_uses(source: str) -> list[str]:
    """Private names of other packages used in ``source``: ``x._name`` (x not self, cls,
    nor a name this module defines or imports from our packages), ``f(_kw=...)``,
    imports from ``_private`` modules, and ``getattr``/``hasattr`` of ``"_name"``."""
    tree = ast.parse(source)
    ours = {"self", "cls"}
    for statement in tree.body:
        if isinstance(statement, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            ours.add(statement.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
            ours.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            ours.update(
                (alias.asname or alias.name).split(".")[0]
                for alias in node.names
                if alias.name.split(".")[0] in PACKAGES
            )

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ours:
                continue
            if isinstance(base, ast.Call) and ast.unparse(base.func) == "super":
                continue
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.keyword) and node.arg and private(node.arg):
            found.append(f"{node.value.lineno}: {node.arg}=")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in (*PACKAGES, "__future__"):
                continue
            names = [*node.module.split("."), *(alias.name for alias in node.names)]
            if any(private(name) for name in names):
                found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] not in PACKAGES and any(private(part) for part in parts):
                    found.append(f"{node.lineno}: import {alias.name}")
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in {"getattr", "hasattr", "setattr"}
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and private(str(node.args[1].value))
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_private_sdk_name_outside_the_adapters() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{use}"
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        if path not in ADAPTERS
        for use in private_uses(path.read_text())
    ]
    assert not offenders, (
        "private SDK names outside the adapters; call them through "
        "cloudtrain/backends/<cloud>/sdk.py (one function each, with a line on why no "
        "public API serves, and a test here), or make the name public if it is ours:\n  "
        + "\n  ".join(offenders)
    )


@pytest.mark.parametrize(
    "line",
    [
        "details = self.ml.jobs._runs_operations.get_run_details(name)",
        "body = entity._to_rest_object().as_dict()",
        "block = AwsCredentials.load(name, _sync=True)",
        "from azure.ai.ml._restclient.runhistory.models import RunDetails",
        "import azure.ai.ml._utils.utils",
        "from prefect.utilities.asyncutils import _private_helper",
        "job = job._to_job() if hasattr(job, '_to_job') else job",
    ],
)
def test_the_rule_finds_private_sdk_names(line: str) -> None:
    assert private_uses(line)


def test_the_rule_allows_our_own_private_names() -> None:
    source = textwrap.dedent(
        """
        from cloudtrain import recovery
        from tasks._common import retry_transient
        import cloudtrain.backends.azure.jobs as jobs

        class Registry:
            _ITEMS = {}

            def add(self):
                self._ITEMS[1] = super()._key()
                return Registry._ITEMS, recovery._strategies, jobs._PREEMPTED

        value = getattr(annotation, "__args__", None)
        """
    )
    assert private_uses(source) == []
