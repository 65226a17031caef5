"""Operating cloudtrain: deployments from prefect.yaml, runs triggered from CI.

The first tests check ``cloudtrain trigger``'s parts without a server. The ones marked
``prefect`` run what the README's Operating section gives a person, against a real
``prefect server start`` with a process worker (the ``prefect_stack`` fixture, see
tests/prefect_server.py), and check what happened through the Prefect API.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect_server import IMAGE as CONTAINER_IMAGE
from prefect_server import PrefectStack

from cloudtrain.errors import ConfigError
from cloudtrain.trigger import TriggeredRun, build_parameters, check_config
from cloudtrain.trigger.outcome import read_report

REPO = Path(__file__).resolve().parents[1]
SMOKE = "local-training/smoke"


def deployment_parameters(flow: str, name: str) -> dict[str, Any]:
    parameters: dict[str, Any] = yaml.safe_load(
        (REPO / "deployments" / flow / f"{name}.yaml").read_text()
    )
    return parameters


SCHEMA = {"properties": {"config": {}, "dataframes": {}, "force": {}}}


# --- without a server ---------------------------------------------------------------------


def test_overrides_apply_to_the_deployments_parameters() -> None:
    defaults = deployment_parameters("local-training", "smoke")
    parameters = build_parameters(
        defaults,
        SCHEMA,
        ["config.hyperparameters.epochs=2", "force=true", "config.local.spot_interruptions=[]"],
        "local-training",
    )
    assert parameters["force"] is True
    assert parameters["config"]["hyperparameters"] == {
        **defaults["config"]["hyperparameters"],
        "epochs": 2,
    }
    assert parameters["config"]["local"]["spot_interruptions"] == []
    assert defaults["config"]["hyperparameters"]["epochs"] == 3  # the defaults are untouched
    assert parameters["config"]["code"]["source_dir"] == "examples/smoke/src"  # still relative
    assert check_config(parameters["config"], "local-training", REPO) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["forse=true"],
            "--set forse: local-training has no parameter 'forse' (parameters: config, "
            "dataframes, force); did you mean 'force'?",
        ),
        (["nonsense"], "--set: 'nonsense' is not key.path=value"),
        (["config.compute=3", "config.compute.spot=true"], "--set config.compute.spot:"),
    ],
)
def test_bad_overrides_name_what_is_wrong(overrides: list[str], message: str) -> None:
    defaults = deployment_parameters("local-training", "smoke")
    with pytest.raises(ConfigError) as caught:
        build_parameters(defaults, SCHEMA, overrides, "local-training")
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("flow", "override", "message"),
    [
        (
            "local-training",
            "compute.max_wait=1",
            "config.compute.max_wait: must be >= compute.max_run (60)",
        ),
        ("local-training", "compute.instance_count=33", "config.compute.instance_count:"),
        ("local-training", "code.entry_point=nope.py", "config.code.entry_point:"),
        ("local-training", "retry.strategy=nope", "config.retry.strategy: unknown"),
        # the flow pins its cloud: the smoke config has no aws section
        ("aws-training", "name=smoke", "config.aws: is required for cloud aws"),
    ],
)
def test_config_is_checked_as_the_flow_will(flow: str, override: str, message: str) -> None:
    raw = deployment_parameters("local-training", "smoke")["config"]
    from cloudtrain.config import apply_override

    apply_override(raw, override)
    with pytest.raises(ConfigError) as caught:
        check_config(raw, flow, REPO)
    assert str(caught.value).startswith(message)


def test_missing_data_is_a_note_and_the_rest_is_still_checked(tmp_path: Path) -> None:
    """Data is often generated or mounted on the worker's machine, code never is."""
    (tmp_path / "examples" / "digits").mkdir(parents=True)
    (tmp_path / "examples" / "digits" / "src").symlink_to(REPO / "examples" / "digits" / "src")
    raw = deployment_parameters("local-training", "digits-nightly")["config"]
    notes = check_config(raw, "local-training", tmp_path)
    assert [note.split(":")[0] for note in notes] == ["config.data.train", "config.data.test"]
    raw["compute"]["instance_count"] = 33
    with pytest.raises(ConfigError, match=r"^config\.compute\.instance_count"):
        check_config(raw, "local-training", tmp_path)


def test_missing_data_is_not_stood_in_for_by_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The channel check walks what stands in for missing data: never the checkout
    (a virtualenv in it holds thousands of files)."""
    from cloudtrain import channel_files

    walked: list[Path] = []
    real = channel_files.channel_files
    monkeypatch.setattr(
        channel_files,
        "channel_files",
        lambda channel, source: walked.append(Path(source)) or real(channel, source),
    )
    (tmp_path / "examples" / "digits").mkdir(parents=True)
    (tmp_path / "examples" / "digits" / "src").symlink_to(REPO / "examples" / "digits" / "src")
    raw = deployment_parameters("local-training", "digits-nightly")["config"]
    assert len(check_config(raw, "local-training", tmp_path)) == 2
    assert walked and all(tmp_path.resolve() not in (p, *p.parents) for p in walked), walked


class ArtifactsOf:
    """A Prefect client that knows one flow run's artifacts, newest first."""

    def __init__(self, *artifacts: Any) -> None:
        self.artifacts = list(artifacts)

    def read_artifacts(self, **filters: Any) -> list[Any]:
        return self.artifacts


def artifact(key: str, markdown: str | None = None, table: Any = None) -> Any:
    """An artifact as the API gives it back: a table's rows are a JSON string."""
    from prefect.artifacts import TableArtifact
    from prefect.client.schemas.objects import Artifact

    if table is not None:
        return Artifact(key=key, type="table", data=TableArtifact(key=key, table=table).format())
    return Artifact(key=key, type="markdown", data=markdown)


def outcome_row(status: str, pipeline: str = "digits-sgd", **fields: Any) -> dict[str, Any]:
    return {
        "status": status,
        "pipeline": pipeline,
        "cloud": "local",
        "run_id": "0123456789abcdef",
        "reused_run_id": None,
        "attempts": 1,
        "error": None,
        **fields,
    }


def status_of(*artifacts: Any, pipeline: str | None = "digits-sgd") -> str | None:
    """The status ``cloudtrain trigger --json`` reports for a run with these artifacts."""
    parameters = {"config": {"name": pipeline}} if pipeline else {}
    report = read_report(ArtifactsOf(*artifacts), uuid.uuid4(), parameters)
    return report["status"] if report else None


def test_the_status_is_the_outcome_tables_beside_the_report() -> None:
    """The same runs the report's first line used to be read from, and the same answers."""
    heading = artifact("digits-sgd-report", "# digits-sgd on local: succeeded\n\n## Config")
    outcome = artifact("digits-sgd-outcome", table=[outcome_row("succeeded")])
    assert status_of(outcome, heading) == "succeeded"
    skipped = artifact("cloudtrain-smoke-report", "# cloudtrain-smoke on local: skipped\n")
    row = outcome_row("skipped", "cloudtrain-smoke", run_id=None, attempts=0)
    outcome = artifact("cloudtrain-smoke-outcome", table=[row])
    assert status_of(outcome, skipped, pipeline="cloudtrain-smoke") == "skipped"
    assert status_of(artifact("digits-sgd-report", "no heading")) is None


def test_the_status_does_not_depend_on_the_reports_wording() -> None:
    """The markdown is for people: reworded, or missing, CI still sees the outcome."""
    row = outcome_row("succeeded")
    reworded = artifact("digits-sgd-report", "## Training report\n\ndigits-sgd: all good")
    assert status_of(artifact("digits-sgd-outcome", table=[row]), reworded) == "succeeded"
    assert status_of(artifact("digits-sgd-outcome", table=[row])) == "succeeded"
    # a heading that says otherwise does not win over the data
    failed = artifact("digits-sgd-outcome", table=[outcome_row("failed", error="boom")])
    heading = artifact("digits-sgd-report", "# digits-sgd on local: succeeded\n")
    assert status_of(failed, heading) == "failed"
    assert status_of(failed, heading, pipeline=None) == "failed"  # no config: any pipeline's
    # newest first: a later outcome under the same key is the one that counts
    earlier = artifact("digits-sgd-outcome", table=[outcome_row("succeeded")])
    assert status_of(failed, earlier) == "failed"


def test_what_trigger_reports_keeps_the_markdown_and_the_attempts() -> None:
    rows = [{"attempt": 1, "outcome": "interrupted"}, {"attempt": 2, "outcome": "succeeded"}]
    markdown = "# digits-sgd on local: succeeded\n"
    row = outcome_row("succeeded", attempts=2)
    report = read_report(
        ArtifactsOf(
            artifact("digits-sgd-outcome", table=[row]),
            artifact("digits-sgd-attempt-2", table=[{"field": "attempt", "value": 2}]),
            artifact("digits-sgd-attempts", table=rows),
            artifact("digits-sgd-report", markdown),
            artifact("other-outcome", table=[outcome_row("failed", "other")]),
        ),
        uuid.uuid4(),
        {"config": {"name": "digits-sgd"}},
    )
    assert report == {
        "status": "succeeded",
        "outcome": row,
        "key": "digits-sgd-report",
        "markdown": markdown,
        "attempts": rows,
    }
    assert read_report(ArtifactsOf(), uuid.uuid4(), {}) is None


def test_the_outcome_row_is_the_runs_status_as_data() -> None:
    """What publish_report puts in ``<pipeline>-outcome`` for each way a run ends."""
    from cloudtrain.config import validate_config
    from cloudtrain.report import RunReport
    from cloudtrain.results import ModelArtifacts, TrainingResult

    config = validate_config(deployment_parameters("local-training", "smoke")["config"], REPO)
    skipped = RunReport(config, reused={"run_id": "earlier"}, decision="nothing changed")
    assert skipped.outcome() == {
        "status": "skipped",
        "pipeline": "cloudtrain-smoke",
        "cloud": "local",
        "run_id": None,
        "reused_run_id": "earlier",
        "attempts": 0,
        "error": None,
    }
    failed = RunReport(config, error="training failed after 1 attempt")
    assert (failed.outcome()["status"], failed.outcome()["error"]) == (
        "failed",
        "training failed after 1 attempt",
    )
    succeeded = RunReport(
        config, artifacts=ModelArtifacts("file:///model", None, None, {"loss": 0.1})
    )
    assert succeeded.outcome()["status"] == "succeeded"
    stopped = TrainingResult("run", "/ckpt", stopped="no_progress", stop_reason="no resume")
    no_progress = RunReport(config, result=stopped, error="training stopped: no_progress")
    assert no_progress.outcome()["status"] == "no_progress"
    assert "> stopped: no_progress: no resume" in no_progress.markdown()
    assert (
        status_of(
            artifact("cloudtrain-smoke-outcome", table=[skipped.outcome()]),
            pipeline="cloudtrain-smoke",
        )
        == "skipped"
    )


@pytest.mark.parametrize(
    ("state", "timed_out", "code"),
    [
        (None, False, 0),  # created, not followed
        ("COMPLETED", False, 0),
        ("FAILED", False, 1),
        ("CRASHED", False, 1),
        ("CANCELLED", False, 1),
        ("RUNNING", True, 1),
    ],
)
def test_exit_codes(state: str | None, timed_out: bool, code: int) -> None:
    run = TriggeredRun("f/d", "id", "name", "url", {}, state=state, timed_out=timed_out)
    assert run.exit_code == code


@pytest.mark.parametrize(
    ("status", "code"),
    [("succeeded", 0), ("skipped", 0), ("failed", 1), ("no_progress", 1), ("over_budget", 1)],
)
def test_a_run_that_stopped_itself_fails_ci_whatever_its_state(status: str, code: int) -> None:
    run = TriggeredRun("f/d", "id", "name", "url", {}, state="COMPLETED")
    run.report = {"status": status, "outcome": {"status": status}, "attempts": []}
    assert run.exit_code == code


class StatesOf:
    """A Prefect client whose flow run goes through ``states``, one per read, without logs."""

    def __init__(self, *states: Any) -> None:
        self.states = list(states)
        self.run_id = uuid.uuid4()

    def read_flow_run(self, flow_run_id: Any) -> Any:
        from types import SimpleNamespace

        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return SimpleNamespace(id=self.run_id, name="smoke/local/now", state=state)

    def read_logs(self, **filters: Any) -> list[Any]:
        return []


def test_following_polls_until_the_run_is_final(monkeypatch: pytest.MonkeyPatch) -> None:
    """The polling constants are read where they live, so a test can shrink them."""
    from prefect.states import Completed, Pending, Running, Scheduled

    from cloudtrain.trigger import follow

    for name in ("POLL_INITIAL_SECONDS", "POLL_MAX_SECONDS", "LOG_DRAIN_SECONDS"):
        monkeypatch.setattr(follow, name, 0.0)
    client = StatesOf(Scheduled(), Pending(), Running(), Running(), Completed())
    said: list[str] = []
    started = time.monotonic()
    flow_run, timed_out = follow.follow_run(
        client, client.read_flow_run(None), None, None, said.append
    )
    assert time.monotonic() - started < 1.0  # unpatched: 3.5 s of polls, 5 s of log drain
    assert (flow_run.state.type.value, timed_out) == ("COMPLETED", False)
    assert said == ["state: Pending", "state: Running", "state: Completed"]

    client = StatesOf(Running())
    flow_run, timed_out = follow.follow_run(
        client, client.read_flow_run(None), 0.05, None, said.append
    )
    assert (flow_run.state.type.value, timed_out) == ("RUNNING", True)


def test_without_an_api_it_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path)  # no profile that could name an API
    for args, message in (
        ([SMOKE], "cloudtrain: PREFECT_API_URL is not set"),
        (["smoke"], "cloudtrain: invalid deployment 'smoke': expected FLOW/DEPLOYMENT"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "cloudtrain.cli", "trigger", *args, "--wait"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 2
        assert done.stderr.startswith(message), done.stderr


# --- against a real server and worker --------------------------------------------------


@contextmanager
def api(stack: PrefectStack) -> Iterator[Any]:
    """A Prefect client for the stack's server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        with get_client(sync_client=True) as client:
            yield client


def trigger(stack: PrefectStack, *args: str) -> tuple[int, dict[str, Any], str]:
    """``cloudtrain trigger ... --json`` from the checkout; (exit code, JSON, stderr)."""
    done = stack.run("cloudtrain", "trigger", *args, "--json", check=False, timeout=300)
    try:
        result = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"no JSON on stdout ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.returncode, result, done.stderr


def task_names(client: Any, flow_run_id: str) -> set[str]:
    """The tasks that ran in a flow run: ``train``, ``upload-data``, ..."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    )
    return {run.name.rsplit("-", 1)[0] for run in runs}


def smoke_runs(client: Any) -> int:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deployment = client.read_deployment_by_name(SMOKE)
    return len(
        client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        )
    )


CONTAINER_DEPLOYMENTS = {
    "aws-training/digits-nightly-ecs": "cloudtrain-ecs",
    "aws-training/digits-nightly-k8s": "cloudtrain-kubernetes",
    "azure-training/digits-nightly-k8s": "cloudtrain-kubernetes",
}


def prefect_yaml_job_variables(name: str) -> dict[str, Any]:
    """A deployment's job variables in prefect.yaml, the image variable as deploy resolves it."""
    flow, _, short = name.partition("/")
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    [deployment] = [
        d
        for d in spec["deployments"]
        if d["name"] == short and d["entrypoint"].startswith(f"flows/{flow.split('-')[0]}_")
    ]
    values: dict[str, Any] = deployment["work_pool"].get("job_variables") or {}
    if "image" in values:
        assert values["image"] == "{{ prefect.variables.cloudtrain_image }}"
        values["image"] = CONTAINER_IMAGE
    return values


@pytest.mark.prefect
def test_prefect_yaml_deploys_every_deployment(prefect_stack: PrefectStack) -> None:
    with api(prefect_stack) as client:
        flows = {flow.id: flow.name for flow in client.read_flows()}
        deployments = {f"{flows[d.flow_id]}/{d.name}": d for d in client.read_deployments()}
        pools = {pool.name: pool.type for pool in client.read_work_pools()}
    assert sorted(deployments) == [
        "aws-training/digits-nightly",
        "aws-training/digits-nightly-ecs",
        "aws-training/digits-nightly-k8s",
        "azure-training/digits-nightly",
        "azure-training/digits-nightly-k8s",
        "local-training/digits-nightly",
        "local-training/smoke",
    ]
    assert pools == {
        "cloudtrain-process": "process",
        "cloudtrain-kubernetes": "kubernetes",
        "cloudtrain-ecs": "ecs",
    }
    for name, deployment in deployments.items():
        pool = CONTAINER_DEPLOYMENTS.get(name, "cloudtrain-process")
        assert deployment.work_pool_name == pool, name
        assert deployment.enforce_parameter_schema, name
        # the process worker runs in the checkout; the containers in the image's
        directory = (
            "/opt/cloudtrain" if name in CONTAINER_DEPLOYMENTS else str(prefect_stack.checkout)
        )
        assert deployment.pull_steps[0] == {
            "prefect.deployments.steps.set_working_directory": {"directory": directory}
        }, name
        assert set(deployment.parameter_openapi_schema["properties"]) >= {"config", "force"}
        flow, _, short = name.partition("/")
        assert deployment.parameters == deployment_parameters(flow, short), name
        # registered with their job variables, the image read from the Prefect variable
        assert deployment.job_variables == prefect_yaml_job_variables(name), name
    schedules = {
        name: [(s.schedule.cron, s.active) for s in d.schedules] for name, d in deployments.items()
    }
    assert schedules == {
        "local-training/smoke": [],
        "local-training/digits-nightly": [("0 3 * * *", True)],
        "aws-training/digits-nightly": [("0 4 * * *", False)],  # nobody's account yet
        "azure-training/digits-nightly": [("0 5 * * *", False)],
        "aws-training/digits-nightly-ecs": [("0 4 * * *", False)],
        "aws-training/digits-nightly-k8s": [("0 4 * * *", False)],
        "azure-training/digits-nightly-k8s": [("0 5 * * *", False)],
    }


@pytest.mark.prefect
def test_the_container_deployments_render_from_the_server(prefect_stack: PrefectStack) -> None:
    """What a Kubernetes or ECS worker would build for a run of each container deployment,
    from what the server holds: the pool's template as `prefect work-pool create` stored it
    and the deployment's job variables as `prefect deploy` registered them (the workers'
    own ``resolve_for_flow_run``; no cluster is asked). The runs are deleted afterwards."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_aws.workers.ecs_worker import ECSJobConfiguration
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    classes = {
        "cloudtrain-kubernetes": KubernetesWorkerJobConfiguration,
        "cloudtrain-ecs": ECSJobConfiguration,
    }

    async def render() -> dict[str, Any]:
        rendered: dict[str, Any] = {}
        async with get_client() as client:
            for name, pool_name in CONTAINER_DEPLOYMENTS.items():
                deployment = await client.read_deployment_by_name(name)
                flow_run = await client.create_flow_run_from_deployment(deployment.id)
                try:
                    pool = await client.read_work_pool(pool_name)
                    configuration = await classes[pool_name].resolve_for_flow_run(
                        flow_run, client=client, work_pool=pool, worker_name="operating-tests"
                    )
                finally:
                    await client.delete_flow_run(flow_run.id)
                rendered[name] = (configuration, flow_run)
        return rendered

    with temporary_settings({PREFECT_API_URL: prefect_stack.api_url}):
        rendered = asyncio.run(render())

    for name, (configuration, flow_run) in rendered.items():
        if CONTAINER_DEPLOYMENTS[name] == "cloudtrain-kubernetes":
            job = configuration.job_manifest
            [container] = job["spec"]["template"]["spec"]["containers"]
            assert job["metadata"]["namespace"] == "cloudtrain", name
            assert container["image"] == CONTAINER_IMAGE, name
            assert container["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}, name
            assert container["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}, name
            account = job["spec"]["template"]["spec"]["serviceAccountName"]
            assert account == ("cloudtrain-sagemaker" if "aws" in name else "cloudtrain-azureml")
            env = {item["name"]: item.get("value") for item in container["env"]}
        else:
            [container] = configuration.task_definition["containerDefinitions"]
            assert container["image"] == CONTAINER_IMAGE
            overrides = configuration.task_run_request["overrides"]
            assert overrides["taskRoleArn"].endswith(":role/cloudtrain-ecs-task")
            assert configuration.execution_role_arn.endswith(":role/cloudtrain-ecs-execution")
            assert (
                configuration.task_definition["cpu"],
                configuration.task_definition["memory"],
            ) == (1024, 2048)
            assert configuration.cluster == "cloudtrain"
            env = configuration.env
        assert env["PREFECT__FLOW_RUN_ID"] == str(flow_run.id), name
        assert env["PREFECT_API_URL"] == prefect_stack.api_url, name  # the pod reports back here


@pytest.mark.prefect
def test_trigger_runs_the_smoke_deployment_with_overrides(prefect_stack: PrefectStack) -> None:
    code, result, stderr = trigger(
        prefect_stack, SMOKE, "--set", "config.hyperparameters.epochs=2", "--wait"
    )
    assert code == 0, stderr
    assert (result["state"], result["status"]) == ("COMPLETED", "succeeded")
    run_id = result["flow_run_id"]
    ui = prefect_stack.api_url.removesuffix("/api")
    assert result["url"] == f"{ui}/runs/flow-run/{run_id}"
    assert f"watch it at {result['url']}" in stderr
    assert "| epoch=2 loss=" in stderr  # the run's logs, followed

    with api(prefect_stack) as client:
        flow_run = client.read_flow_run(run_id)
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        artifacts = {
            artifact.key: artifact
            for artifact in client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
        }
        tasks = task_names(client, run_id)
    assert flow_run.state.is_completed()
    assert flow_run.name.startswith("cloudtrain-smoke/local/")
    assert {"pipeline:cloudtrain-smoke", "cloud:local", "ci"} <= set(flow_run.tags)
    hyperparameters = flow_run.parameters["config"]["hyperparameters"]
    assert hyperparameters == {
        "epochs": 2,
        "learning_rate": 0.02,
        "epoch_seconds": 0.3,
        "fail": False,
    }
    assert "train" in tasks

    report = artifacts["cloudtrain-smoke-report"].data
    assert report.startswith("# cloudtrain-smoke on local: succeeded")
    assert "`epochs=2`" in report
    rows = json.loads(artifacts["cloudtrain-smoke-attempts"].data)
    assert [row["outcome"] for row in rows] == ["interrupted", "succeeded"]  # resumed once
    assert result["report"]["attempts"] == rows
    outcome = json.loads(artifacts["cloudtrain-smoke-outcome"].data)
    assert outcome == [result["report"]["outcome"]]  # what trigger read the status from
    assert outcome[0] == {
        "status": "succeeded",
        "pipeline": "cloudtrain-smoke",
        "cloud": "local",
        "run_id": run_id,
        "reused_run_id": None,
        "attempts": 2,
        "error": None,
    }
    archive = re.search(r"- archive: `([^`]+)`", report)
    assert archive and Path(archive.group(1)).is_file()
    assert Path(archive.group(1)).is_relative_to(prefect_stack.checkout)  # the flow ran there


@pytest.mark.prefect
def test_unchanged_trigger_skips_training_and_force_retrains(
    prefect_stack: PrefectStack,
) -> None:
    name = ("--set", "config.name=smoke-rerun")  # a pipeline of its own: no earlier runs
    first = trigger(prefect_stack, SMOKE, *name, "--wait")
    again = trigger(prefect_stack, SMOKE, *name, "--wait")
    forced = trigger(prefect_stack, SMOKE, *name, "--set", "force=true", "--wait")

    assert [code for code, _, _ in (first, again, forced)] == [0, 0, 0]
    assert [result["status"] for _, result, _ in (first, again, forced)] == [
        "succeeded",
        "skipped",
        "succeeded",
    ]
    assert "Skipped training" in again[1]["report"]["markdown"]
    outcomes = [result["report"]["outcome"] for _, result, _ in (first, again, forced)]
    assert [(o["status"], o["attempts"]) for o in outcomes] == [
        ("succeeded", 2),
        ("skipped", 0),
        ("succeeded", 2),
    ]
    assert outcomes[1]["reused_run_id"] == outcomes[0]["run_id"] == first[1]["flow_run_id"]
    with api(prefect_stack) as client:
        trained = [
            "train" in task_names(client, r["flow_run_id"]) for _, r, _ in (first, again, forced)
        ]
        forced_run = client.read_flow_run(forced[1]["flow_run_id"])
    assert trained == [True, False, True]
    assert forced_run.parameters["force"] is True


@pytest.mark.prefect
def test_a_failing_training_script_fails_the_trigger(prefect_stack: PrefectStack) -> None:
    code, result, stderr = trigger(
        prefect_stack, SMOKE, "--set", "config.hyperparameters.fail=true", "--wait"
    )
    assert code == 1
    assert (result["state"], result["status"]) == ("FAILED", "failed")
    assert "failing on purpose" in result["message"]
    assert "| failing on purpose: hyperparameter fail is true" in stderr
    outcome = result["report"]["outcome"]
    assert (outcome["status"], outcome["run_id"]) == ("failed", result["flow_run_id"])
    assert outcome["attempts"] == len(result["report"]["attempts"]) >= 1
    assert outcome["error"]
    with api(prefect_stack) as client:
        assert client.read_flow_run(result["flow_run_id"]).state.is_failed()


@pytest.mark.prefect
def test_invalid_input_exits_2_and_creates_no_run(prefect_stack: PrefectStack) -> None:
    with api(prefect_stack) as client:
        before = smoke_runs(client)
    cases = [
        (
            [SMOKE, "--set", "config.compute.max_wait=1"],
            "cloudtrain: invalid parameters: config.compute.max_wait: "
            "must be >= compute.max_run (60)",
        ),
        (
            ["local-training/smok"],
            "cloudtrain: unknown deployment 'local-training/smok'; valid: "
            "aws-training/digits-nightly, aws-training/digits-nightly-ecs, "
            "aws-training/digits-nightly-k8s, azure-training/digits-nightly, "
            "azure-training/digits-nightly-k8s, local-training/digits-nightly, "
            "local-training/smoke "
            "(did you mean 'local-training/smoke'?)",
        ),
        ([SMOKE, "--set", "forse=true"], "cloudtrain: invalid parameters: --set forse:"),
        # not a config value: the server checks it against the flow's signature
        (
            [SMOKE, "--set", "force=maybe"],
            "cloudtrain: invalid parameters: Error creating flow run: Validation failed "
            "for field 'force'",
        ),
    ]
    for args, message in cases:
        code, result, stderr = trigger(prefect_stack, *args, "--wait")
        assert code == 2, stderr
        assert result["status"] == "invalid"
        assert stderr.startswith(message), stderr
        assert len(stderr.strip().splitlines()) == 1, stderr
    with api(prefect_stack) as client:
        assert smoke_runs(client) == before


@pytest.mark.prefect
def test_timeout_exits_1_and_the_run_goes_on(prefect_stack: PrefectStack) -> None:
    code, result, stderr = trigger(
        prefect_stack,
        SMOKE,
        "--set",
        "config.name=smoke-timeout",
        "--set",
        "config.hyperparameters.epoch_seconds=1",
        "--timeout",
        "1",
    )
    assert code == 1, stderr
    assert result["timed_out"] is True
    assert result["state"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
    with api(prefect_stack) as client:  # not cancelled: it finishes on its own
        deadline = time.monotonic() + 120
        while not (run := client.read_flow_run(result["flow_run_id"])).state.is_final():
            assert time.monotonic() < deadline, run.state
            time.sleep(0.5)
    assert run.state.is_completed()


def test_what_only_the_worker_can_know_is_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CI job that installed only cloudtrain may trigger a run that needs scikit-learn."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a)
    )
    raw = deployment_parameters("local-training", "smoke")["config"]
    assert check_config(raw, "local-training", REPO) == [
        "config.environment.framework: sklearn is not installed here; "
        "the worker's interpreter must have it"
    ]


def test_the_load_check_catches_lost_runs_shared_folders_and_overruns(tmp_path: Path) -> None:
    """What the queued-runs figure checks, on runs made up here: each fault is reported."""
    from datetime import UTC, datetime, timedelta

    sys.path.insert(0, str(REPO / "bench"))
    from queued_runs import Batch, Run, problems

    t0 = datetime(2026, 12, 1, tzinfo=UTC)

    def run(n: int, start: int, end: int, folder: str | None = None, **fields: Any) -> Run:
        run_id = f"run-{n}"
        folder = folder or run_id
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "checkpoint.json").write_text("{}")
        values: dict[str, Any] = {
            "state": "COMPLETED",
            "status": "succeeded",
            "run_id": run_id,
            "checkpoint_uri": str(tmp_path / folder),
            "attempts": [{"outcome": "interrupted"}, {"outcome": "succeeded"}],
            **fields,
        }
        return Run(
            run_id,
            values.pop("state"),
            t0 + timedelta(seconds=start),
            t0 + timedelta(seconds=end),
            **values,
        )

    fine = [run(1, 0, 10), run(2, 0, 10), run(3, 10, 20)]  # one ends as the next starts
    assert Batch(fine, 20.0, 2).max_concurrent == 2
    assert problems(Batch(fine, 20.0, 2), tmp_path) == []
    assert problems(Batch(fine, 20.0, 1), tmp_path) == ["2 runs at once, over the limit of 1"]
    shared = [run(1, 0, 10), run(2, 10, 20, folder="run-1")]
    found = problems(Batch(shared, 20.0, 2), tmp_path)
    assert "1 checkpoint folder(s) shared" in found
    assert any("is not the run's own" in line for line in found)
    lost = [run(1, 0, 10), run(2, 0, 10, state="CRASHED", status=None)]
    assert problems(Batch(lost, 20.0, 2), tmp_path) == ["run run-2: CRASHED, outcome None"]


@pytest.mark.prefect
def test_twenty_queued_runs_all_complete_each_in_its_own_checkpoint_folder(
    prefect_stack: PrefectStack,
) -> None:
    """The process pool's load figure (bench/queued_runs.py prints it with its times): 20
    smoke runs queued at once on one worker under a pool concurrency limit of 4. None is
    lost, the server never hands out more than 4 at a time, and runs of the same pipeline
    side by side never share a checkpoint folder (each trains under its own run id, and
    a live run's lease is not taken for a crashed one)."""
    sys.path.insert(0, str(REPO / "bench"))
    from queued_runs import problems, run_batch

    with api(prefect_stack) as client:
        batch = run_batch(prefect_stack, client, 20, 4)
        limit = client.read_work_pool("cloudtrain-process").concurrency_limit
    assert len(batch.runs) == 20
    assert problems(batch, prefect_stack.checkout) == []
    assert 1 <= batch.max_concurrent <= 4
    assert limit is None  # cleared again for the other tests
    assert len({run.checkpoint_uri for run in batch.runs}) == 20
