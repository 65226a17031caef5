"""A failover route: its config, its plan, and a local run that fails over and resumes.

The cloud legs (moto, Azurite and the MLClient fake) are in test_failover_clouds.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import train_locally

from cloudtrain.backend import build_backend
from cloudtrain.config import load_config
from cloudtrain.errors import ConfigError
from cloudtrain.planning import plan
from cloudtrain.runnable import check_runnable

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
AZURE = {"subscription_id": "sub", "resource_group": "rg", "workspace": "ws", "compute": "gpu"}
AWS = {"role": ROLE, "bucket": "my-bucket"}


def write(tmp_path: Path, **raw: Any) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "train.py").write_text("print('acc=1')\n")
    config = {
        "name": "route",
        "code": {"source_dir": "src", "entry_point": "train.py"},
        "environment": {"framework": "pytorch", "framework_version": "2.1"},
        "compute": {
            "instance_type": {"aws": "ml.g4dn.xlarge", "azure": "Standard_NC4as_T4_v3"},
            "spot": True,
            "max_run": 600,
        },
        "clouds": ["aws", "azure"],
        "retry": {"max_attempts": 5},
        "aws": AWS,
        "azure": AZURE,
        **raw,
    }
    path = tmp_path / "cloudtrain.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -- the config -------------------------------------------------------------------------


def test_a_route_starts_on_its_first_cloud_with_failover_and_its_instance_type(
    tmp_path: Path,
) -> None:
    config = load_config(write(tmp_path))
    assert (config.cloud, config.route, config.retry.strategy) == (
        "aws",
        ["aws", "azure"],
        "failover",
    )
    assert config.compute.instance_type == "ml.g4dn.xlarge"
    azure = config.on_cloud("azure")
    assert (azure.cloud, azure.clouds, azure.compute.instance_type) == (
        "azure",
        [],
        "Standard_NC4as_T4_v3",
    )
    # the config travels to Prefect as JSON and back: the route survives the round trip
    again = type(config).model_validate(json.loads(config.model_dump_json()))
    assert (again.route, again.compute.instance_types) == (
        config.route,
        config.compute.instance_types,
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"cloud": "azure"}, "cloud: is where the route starts, the first of clouds (aws)"),
        (
            {"retry": {"strategy": "checkpoint_resume"}},
            "retry.strategy: checkpoint_resume stays on one cloud; a route of 2 clouds needs "
            "strategy failover",
        ),
        (
            {"compute": {"instance_type": {"aws": "ml.m5.large"}, "spot": True}},
            "compute.instance_type: names no instance type for azure (it has aws)",
        ),
        (
            {"compute": {"instance_type": {"aws": "ml.m5.large", "azur": "x", "azure": "y"}}},
            "compute.instance_type.azur: unknown cloud 'azur'",
        ),
        ({"clouds": ["aws", "gcp"]}, "clouds[1]: unknown cloud 'gcp'"),
        ({"clouds": ["aws"] * 9}, "clouds: List should have at most 8 items"),
    ],
)
def test_a_bad_route_is_one_line_naming_the_field(
    tmp_path: Path, raw: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, **raw))
    assert message in str(caught.value)


def test_every_cloud_of_the_route_is_validated_before_anything_is_created(
    tmp_path: Path,
) -> None:
    """Problems of the second cloud are found with the first's, in one pass."""
    config = load_config(
        write(
            tmp_path,
            aws={"bucket": "my-bucket"},  # no role
            azure={"subscription_id": "sub", "compute": "gpu"},  # no group, no workspace
            compute={
                "instance_type": {"aws": "ml.g4dn.xlarge", "azure": "Standard_Nope"},
                "spot": True,
            },
        )
    )
    with pytest.raises(ConfigError) as caught:
        check_runnable(config, build_backend(config))
    fields = [problem.field for problem in caught.value.problems]
    assert "aws.role" in fields
    assert {"azure.resource_group", "azure.workspace"} <= set(fields)
    assert "compute.instance_type.azure" in fields  # the entry of the cloud it belongs to


def test_cloud_on_the_command_line_runs_there_alone(tmp_path: Path) -> None:
    config = load_config(write(tmp_path), cloud="azure")
    assert (config.cloud, config.route) == ("azure", ["azure"])
    assert config.compute.instance_type == "Standard_NC4as_T4_v3"


def test_a_single_cloud_config_is_unchanged(digits_config: Callable[..., Path]) -> None:
    """No route: the plan keeps its old shape (the digits example, its data prepared)."""
    config = load_config(digits_config())
    assert config.route == ["local"] and config.clouds == [] and config.budget is None
    planned = plan(build_backend(config), config)
    assert "route" not in planned and all("cloud" not in a for a in planned["attempts"])


# -- the plan ---------------------------------------------------------------------------


def test_plan_shows_the_whole_route_with_each_clouds_request(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, retry={"max_attempts": 5, "reclaims_per_cloud": 2}))
    check_runnable(config, build_backend(config))
    planned = plan(build_backend(config), config)
    attempts = planned["attempts"]
    assert [(a["cloud"], a["capacity"]) for a in attempts] == [
        ("aws", "spot"),
        ("aws", "spot"),
        ("azure", "spot"),
        ("azure", "spot"),
        ("azure", "on-demand"),
    ]
    # each attempt is its own cloud's request
    assert attempts[0]["request"]["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge"
    assert attempts[0]["request"]["EnableManagedSpotTraining"] is True
    azure_body = attempts[2]["request"]
    assert azure_body["properties"]["jobType"] == "Command"
    checkpoints = azure_body["properties"]["outputs"]["checkpoints"]["uri"]
    assert checkpoints.endswith("/checkpoints/<run-id>-leg2/")
    assert "fails over to leg 2 (azure)" in attempts[2]["when"]
    route = planned["route"]
    assert [(leg["cloud"], leg["instance_type"], leg["attempts"]) for leg in route] == [
        ("aws", "ml.g4dn.xlarge", [1, 2]),
        ("azure", "Standard_NC4as_T4_v3", [3, 4, 5]),
    ]
    assert route[1]["checkpoint_uri"] == checkpoints
    assert "compute" in route[1]["stages"]  # what preparing azure would send


# -- a local route: fails over, carries the checkpoint, ends with the same model ---------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_local_failover_resumes_from_the_copied_checkpoint_and_ends_with_the_same_model(
    digits_config: Callable[..., Path],
) -> None:
    straight_path = digits_config(hyperparameters={"epochs": 12})
    _, straight, _ = train_locally(straight_path)
    assert straight.succeeded

    route_path = digits_config(
        hyperparameters={"epochs": 12},
        work_dir=".ct-route",
        clouds=["local", "local"],
        retry={"strategy": "failover", "max_attempts": 4, "reclaims_per_cloud": 2},
        local={"spot_interruptions": ["^epoch=4 ", None, "^epoch=9 "], "capacity_outages": [2]},
    )
    backend, routed, lines = train_locally(route_path)
    assert routed.succeeded, getattr(routed, "result", routed)
    assert [(a.leg, a.spot, a.outcome.value) for a in routed.attempts] == [
        (0, True, "interrupted"),
        (0, True, "no_capacity"),  # the outage: fail over at once
        (1, True, "interrupted"),
        (1, False, "succeeded"),  # the end of the route: on demand
    ]
    (copy,) = routed.copies
    first_leg, second_leg = routed.attempts[0].checkpoint_uri, routed.attempts[2].checkpoint_uri
    assert (copy.source, copy.target) == (first_leg, second_leg) and first_leg != second_leg
    assert routed.attempts[2].checkpoint_from == first_leg
    assert routed.attempts[3].checkpoint_from is None  # same leg: nothing copied again
    # what arrived is what left: the copy's per-file digests are the source files'
    source_files = {
        p.relative_to(first_leg).as_posix(): p for p in Path(first_leg).rglob("*") if p.is_file()
    }
    assert copy.files == len(source_files) >= 1
    assert copy.sha256 == {name: sha256(path) for name, path in sorted(source_files.items())}
    assert routed.attempts[2].resumed_from == copy.files
    resumed_at = [
        int(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("resumed from checkpoint: epoch ")
    ]
    # attempt 3 resumed on leg 2 from the copy (past epoch 1), attempt 4 from leg 2's own
    assert len(resumed_at) == 2 and 1 < resumed_at[0] < resumed_at[1]

    def model(result: Any) -> Path:
        return (
            backend.root
            / "runs"
            / "digits-sgd"
            / result.run_id
            / "attempts"
            / str(result.final.number)
            / "model"
            / "weights.npz"
        )

    straight_weights = (
        (Path(straight_path).parent / ".cloudtrain" / "runs" / "digits-sgd" / straight.run_id)
        / "attempts"
        / "1"
        / "model"
        / "weights.npz"
    )
    assert sha256(model(routed)) == sha256(straight_weights)
    assert routed.metrics == straight.metrics


@pytest.mark.prefect
def test_one_flow_run_fails_over_and_shows_the_route(
    prefect_server: str, digits_config: Callable[..., Path]
) -> None:
    """The flow prepares the second leg with the same stage tasks, and the summary and the
    report say, per attempt, where it ran and where its checkpoint came from."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.local_training import local_training

    config = load_config(
        digits_config(
            hyperparameters={"epochs": 8},
            clouds=["local", "local"],
            retry={"strategy": "failover", "max_attempts": 3, "reclaims_per_cloud": 1},
            local={"spot_interruptions": ["^epoch=4 "]},
        )
    )
    state = local_training(config=config, return_state=True)
    assert state.is_completed()
    summary = state.result()
    attempts = summary["attempts"]
    assert [(a["cloud"], a["capacity"], a["outcome"]) for a in attempts] == [
        ("local", "spot", "interrupted"),
        ("local", "spot", "succeeded"),
    ]
    (copy,) = summary["checkpoint_copies"]
    assert attempts[1]["checkpoint_from"] == attempts[0]["checkpoint_uri"] == copy["source"]
    assert attempts[1]["checkpoint_uri"] == copy["target"] == summary["checkpoint_uri"]
    assert attempts[1]["resumed_from_checkpoint_files"] == copy["files"] >= 1
    assert summary["route"] == ["local", "local"]
    assert list(summary["legs"]) == ["2:local"]  # the second leg, prepared when reached
    assert summary["legs"]["2:local"]["checkpoint_uri"] == copy["target"]

    with get_client(sync_client=True) as client:
        flow_run_id = state.state_details.flow_run_id
        assert "route:local-local" in client.read_flow_run(flow_run_id).tags
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    report = next(a for a in artifacts if a.key == "digits-sgd-report").data
    assert f"checkpoint copied local -> local: {copy['files']} file(s)" in report
    assert "| route | local (ml.m5.large) -> local (ml.m5.large)" in report
    names = sorted(run.name.rsplit("-", 1)[0] for run in task_runs)
    assert names.count("upload-data") == 2 and names.count("ensure-compute") == 2


def test_a_route_needs_an_attempt_per_cloud(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, retry={"max_attempts": 1}))
    assert str(caught.value) == (
        "retry.max_attempts: 1 attempt(s) cannot reach every cloud of a route of 2; give at least 2"
    )
