"""What ``plan`` prints is what a run sends: for every recovery strategy, with and without
the on-demand fallback, on every backend.

Each run loses capacity on every attempt it can (on the clouds every attempt finds no
capacity; locally every spot attempt is reclaimed, and an on-demand one then succeeds),
so the run walks as far along the planned route as it can go. The attempts it made must
be the plan's first attempts, capacity for capacity and request for request, once the
plan's placeholders (run id, content digest, resolved environment) are filled in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure_fake import FakeMLClient
from moto_server import MotoServer
from sagemaker_lifecycle import IN_PROGRESS, Lifecycle, lifecycle
from test_aws_training import RUN_ID as AWS_RUN_ID
from test_aws_training import aws_config, created
from test_aws_training import train as train_on_aws
from test_azure_training import RUN_ID as AZURE_RUN_ID
from test_azure_training import (
    Driver,
    azure_backend,
    azure_config,
    fake,
    job_bodies,
)
from test_azure_training import train as train_on_azure

from cloudtrain.backends.aws.backend import AwsBackend
from cloudtrain.backends.azure.backend import AzureBackend
from cloudtrain.config import PipelineConfig, load_config
from cloudtrain.errors import TrainingError
from cloudtrain.planning import plan
from cloudtrain.results import TrainingResult

__all__ = ["aws_config", "azure_backend", "azure_config", "fake", "lifecycle"]  # fixtures

STRATEGIES = ["checkpoint_resume", "eager_on_demand"]
ROUTES = pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "no-fallback"])
MAX_ATTEMPTS = 3


def filled(planned: Any, replacements: dict[str, str]) -> Any:
    """The plan with its placeholders replaced by what the run chose."""
    text = json.dumps(planned)
    for placeholder, value in replacements.items():
        text = text.replace(placeholder, value)
    return json.loads(text)


def attempts_of(outcome: TrainingResult | TrainingError) -> TrainingResult:
    result = outcome.result if isinstance(outcome, TrainingError) else outcome
    assert isinstance(result, TrainingResult), outcome
    return result


def route(planned: dict[str, Any]) -> list[tuple[int, str]]:
    return [(attempt["number"], attempt["capacity"]) for attempt in planned["attempts"]]


def made(result: TrainingResult) -> list[tuple[int, str]]:
    return [(a.number, "spot" if a.spot else "on-demand") for a in result.attempts]


# -- local: the script really runs ------------------------------------------------------

# Writes what it was started with; every spot attempt is reclaimed at its first line.
RECORDER = """
    import json, os, sys
    from pathlib import Path
    seen = {k: v for k, v in os.environ.items() if k.startswith(("SM_", "CLOUDTRAIN_"))}
    out = Path(os.environ["SM_CHECKPOINT_DIR"]) / f"attempt-{os.environ['CLOUDTRAIN_ATTEMPT']}.json"
    out.write_text(json.dumps({"argv": sys.argv[1:], "env": seen}))
    print("started", flush=True)
    if os.environ["CLOUDTRAIN_SPOT"] == "true":
        import time; time.sleep(30)
"""


@pytest.mark.parametrize("strategy", STRATEGIES)
@ROUTES
def test_local_runs_the_attempts_plan_prints(
    strategy: str, fallback: bool, write_config: Callable[..., Path]
) -> None:
    from helpers import train_locally

    from cloudtrain.backends.local.backend import LocalBackend

    path = write_config(
        RECORDER,
        compute={"spot": True},
        retry={"max_attempts": MAX_ATTEMPTS, "on_demand_fallback": fallback, "strategy": strategy},
        local={"spot_interruptions": ["^started"] * MAX_ATTEMPTS, "grace_period": 1},
        hyperparameters={"epochs": 2},
    )
    config = load_config(path)
    planned = plan(LocalBackend.from_config(config), config)
    backend, outcome, _ = train_locally(path)
    result = attempts_of(outcome)

    expected = route(planned)
    assert made(result) == expected[: len(result.attempts)]
    # it ends where the route says: at the first on-demand attempt, or after the last one
    first_on_demand = next((n for n, c in expected if c == "on-demand"), MAX_ATTEMPTS)
    assert len(result.attempts) == first_on_demand
    run_id = "0123456789abcdef"  # what train_locally runs as
    for attempt, planned_attempt in zip(result.attempts, planned["attempts"], strict=False):
        request = filled(
            planned_attempt["request"],
            {"<run-id>": run_id, "-<run>-": f"-{run_id[:8]}-"},
        )
        seen = json.loads(
            (Path(result.checkpoint_uri) / f"attempt-{attempt.number}.json").read_text()
        )
        assert seen["argv"] == request["command"][3:]
        planned_env = request["environment_variables"]
        channel_env = {k for k in planned_env if k.startswith("SM_CHANNEL_")}
        # What the script inherits from this process (the suite's CLOUDTRAIN_HOME, say) is
        # not the run's to plan.
        inherited = {k for k, v in os.environ.items() if k not in planned_env}
        ignored = channel_env | inherited
        assert {k: v for k, v in seen["env"].items() if k not in ignored} == {
            k: v for k, v in planned_env.items() if k not in ignored
        }
        assert attempt.job_name == planned_attempt["job_name"].replace("<run>", run_id[:8])


# -- AWS: the CreateTrainingJob requests moto received ---------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@ROUTES
def test_aws_sends_the_requests_plan_prints(
    strategy: str,
    fallback: bool,
    aws_config: Callable[..., Path],
    aws: MotoServer,
    lifecycle: Lifecycle,
) -> None:
    capacity_error = {
        "status": "Failed",
        "reason": "CapacityError: Unable to provision requested ML compute capacity.",
    }
    for number in range(1, MAX_ATTEMPTS + 1):
        lifecycle.script(f"a{number}", IN_PROGRESS, capacity_error)
    path = aws_config(
        retry={"max_attempts": MAX_ATTEMPTS, "on_demand_fallback": fallback, "strategy": strategy}
    )
    config = load_config(path)
    planned = plan(AwsBackend(config), config)

    result = attempts_of(train_on_aws(path)[0])

    assert made(result) == route(planned)  # every attempt of the route was made
    sent = created(aws)
    expected = [
        filled(a["request"], {"<run-id>": AWS_RUN_ID, "-<run>-": f"-{AWS_RUN_ID[:8]}-"})
        for a in planned["attempts"]
    ]
    assert sent == expected


# -- Azure: the job bodies the workspace received ------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@ROUTES
def test_azure_sends_the_jobs_plan_prints(
    strategy: str,
    fallback: bool,
    fake: FakeMLClient,
    azure_config: Callable[..., PipelineConfig],
    azure_backend: Callable[[PipelineConfig], AzureBackend],
) -> None:
    driver = Driver(fake)
    for number in range(1, MAX_ATTEMPTS + 1):
        driver.script(f"a{number}", ("Failed", "AllocationFailed: insufficient capacity"))
    config = azure_config(
        retry={"max_attempts": MAX_ATTEMPTS, "on_demand_fallback": fallback, "strategy": strategy}
    )
    planned = plan(azure_backend(config), config)

    backend, outcome, _ = train_on_azure(azure_backend(config), config, driver)
    result = attempts_of(outcome)

    assert made(result) == route(planned)
    sent = job_bodies(fake)
    environment = sent[0]["environmentId"]
    channel = sent[0]["inputs"]["train"]["uri"]
    expected = [
        filled(
            a["request"]["properties"],
            {
                "<run-id>": AZURE_RUN_ID,
                "-<run>-": f"-{AZURE_RUN_ID[:8]}-",
                "<resolved environment>": environment,
                "<content-digest>": channel.rsplit(":", 1)[-1],
            },
        )
        for a in planned["attempts"]
    ]
    for body, wanted in zip(sent, expected, strict=True):
        # What azure-ai-ml itself fills in on submit: the compute's ARM id for its name,
        # and the uploaded code asset for the local folder.
        assert body.pop("computeId").rsplit("/", 1)[-1] == wanted.pop("computeId")
        assert wanted.pop("codeId") is not None and body.pop("codeId")
        assert body == wanted
    # the dedicated twin exists exactly when the route has an on-demand attempt
    clusters = {compute.name for compute in fake.compute.list()}
    has_on_demand = any(capacity == "on-demand" for _, capacity in route(planned))
    assert ("cpu-cluster-od" in clusters) == has_on_demand


def test_azure_plans_a_registered_folder_asset_as_the_run_sends_it(
    fake: FakeMLClient,
    azure_config: Callable[..., PipelineConfig],
    azure_backend: Callable[[PipelineConfig], AzureBackend],
) -> None:
    """Offline, plan cannot read an asset's type: it takes it as a folder, as cloudtrain
    registers them, which is what the run reads and sends for a uri_folder asset."""
    from azure.ai.ml.entities import Data

    fake.data.create_or_update(
        Data(
            name="prepared",
            version="1",
            type="uri_folder",
            path="azureml://datastores/workspaceblobstore/paths/prepared/",
        )
    )
    driver = Driver(fake)
    driver.script("a1", ("Failed", "AllocationFailed: insufficient capacity"))
    config = azure_config(data={"train": "azureml:prepared:1"}, retry={"max_attempts": 1})
    planned = plan(azure_backend(config), config)
    train_on_azure(azure_backend(config), config, driver)

    sent = job_bodies(fake)[0]["inputs"]["train"]
    printed = planned["attempts"][0]["request"]["properties"]["inputs"]["train"]
    assert printed == sent == {**sent, "jobInputType": "uri_folder"}
