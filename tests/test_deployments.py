"""prefect.yaml: real flows, parameters that validate and match deployments/, schedules.

``tests/test_operating.py`` deploys the file to a real server; these checks need none.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudtrain.trigger import build_parameters, check_config

REPO = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text())
DEPLOYMENTS: list[dict[str, Any]] = SPEC["deployments"]


def flow_of(deployment: dict[str, Any]) -> Any:
    path, _, name = deployment["entrypoint"].partition(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


def full_name(deployment: dict[str, Any]) -> str:
    return f"{flow_of(deployment).name}/{deployment['name']}"


def parameter_file(deployment: dict[str, Any]) -> Path:
    """deployments/<flow>/<deployment>.yaml, the documented source of the parameters."""
    return REPO / "deployments" / f"{full_name(deployment)}.yaml"


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=full_name)
def test_every_deployment_has_a_flow_and_a_valid_config(
    deployment: dict[str, Any], digits_data: Path
) -> None:
    flow = flow_of(deployment)
    assert flow.name.endswith("-training")
    assert set(deployment["parameters"]) <= set(inspect.signature(flow.fn).parameters)
    raw = copy.deepcopy(deployment["parameters"]["config"])
    # Digits data is generated in the checkout before a run; here it comes from the fixture.
    raw["data"] = {
        channel: str(digits_data / Path(path).name) if "examples/digits/data" in path else path
        for channel, path in raw["data"].items()
    }
    assert check_config(raw, flow.name, REPO) == []  # as the flow validates it, cloud pinned
    cloud = flow.name.removesuffix("-training")
    assert raw["cloud"] == cloud
    assert {f"pipeline:{raw['name']}", f"cloud:{cloud}"} <= set(deployment["tags"])


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=full_name)
def test_parameters_are_the_ones_in_the_deployments_folder(deployment: dict[str, Any]) -> None:
    path = parameter_file(deployment)
    assert path.is_file(), f"{path.relative_to(REPO)} is missing"
    assert yaml.safe_load(path.read_text()) == deployment["parameters"], (
        f"prefect.yaml and {path.relative_to(REPO)} differ for {full_name(deployment)}"
    )


def test_no_parameter_file_without_a_deployment() -> None:
    files = {p.relative_to(REPO / "deployments") for p in (REPO / "deployments").glob("*/*.yaml")}
    assert files == {parameter_file(d).relative_to(REPO / "deployments") for d in DEPLOYMENTS}


def test_schedules_work_pool_and_pull_steps() -> None:
    schedules = {
        full_name(d): [(s["cron"], s["timezone"], s["active"]) for s in d.get("schedules") or []]
        for d in DEPLOYMENTS
    }
    assert schedules == {
        "local-training/smoke": [],  # CI triggers it
        "local-training/digits-nightly": [("0 3 * * *", "UTC", True)],
        # deployed inactive: a fresh clone must not start jobs in nobody's account
        "aws-training/digits-nightly": [("0 4 * * *", "UTC", False)],
        "azure-training/digits-nightly": [("0 5 * * *", "UTC", False)],
        # the same nightly runs from a cluster, inactive too
        "aws-training/digits-nightly-k8s": [("0 4 * * *", "UTC", False)],
        "aws-training/digits-nightly-ecs": [("0 4 * * *", "UTC", False)],
        "azure-training/digits-nightly-k8s": [("0 5 * * *", "UTC", False)],
    }
    checkout = {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PWD }}"}}
    # the container pools run in the image's checkout (the Dockerfile's WORKDIR)
    image = {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/cloudtrain"}}
    pools = {
        "cloudtrain-process": checkout,
        "cloudtrain-kubernetes": image,
        "cloudtrain-ecs": image,
    }
    assert SPEC["pull"] == [checkout]
    for deployment in DEPLOYMENTS:
        pool = deployment["work_pool"]["name"]
        assert pool in pools, full_name(deployment)
        assert (deployment.get("pull") or SPEC["pull"])[0] == pools[pool]
        assert deployment.get("enforce_parameter_schema") is True
        assert ("-k8s" in deployment["name"]) == (pool == "cloudtrain-kubernetes")
        assert ("-ecs" in deployment["name"]) == (pool == "cloudtrain-ecs")


def test_the_ci_example_triggers_the_smoke_deployment_with_valid_overrides() -> None:
    workflow = yaml.safe_load((REPO / "deployments" / "ci-train.yml").read_text())
    commands = [
        step["run"]
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if "cloudtrain trigger" in step.get("run", "")
    ]
    assert len(commands) == 1
    inputs = {"${{ inputs.epochs || '2' }}": "2", "${{ inputs.force || false }}": "false"}
    command = commands[0]
    for placeholder, value in inputs.items():
        command = command.replace(placeholder, value)
    args = shlex.split(command.partition(">")[0])
    assert args[:3] == ["cloudtrain", "trigger", "local-training/smoke"]
    assert {"--wait", "--json"} <= set(args)
    overrides = [args[i + 1] for i, arg in enumerate(args) if arg == "--set"]
    smoke = next(d for d in DEPLOYMENTS if full_name(d) == "local-training/smoke")
    schema = {"properties": dict.fromkeys(inspect.signature(flow_of(smoke).fn).parameters)}
    parameters = build_parameters(smoke["parameters"], schema, overrides, "local-training")
    assert parameters["config"]["hyperparameters"]["epochs"] == 2
    assert parameters["force"] is False
    assert check_config(parameters["config"], "local-training", REPO) == []
