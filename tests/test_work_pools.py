"""The Kubernetes and ECS deployments, rendered by the workers' own code, offline.

No cluster and no ECS are reachable here. What a worker would send is built the way the
worker builds it: the pool type's default base job template (the one `prefect work-pool
create --type kubernetes|ecs` stores), the deployment's job variables from prefect.yaml,
``from_template_and_values`` and ``prepare_for_flow_run``. For ECS the worker's own
``run`` goes further, against moto: it registers the task definition, reads the VPC's
subnets to check the network configuration, and sends RunTask; the test reads both requests
as they went over the wire. tests/test_operating.py registers the same deployments on a
real server.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from moto_server import MotoServer

REPO = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text())
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cloudtrain:0.1.0"
IMAGE_VARIABLE = "{{ prefect.variables.cloudtrain_image }}"


@pytest.fixture(autouse=True)
def no_prefect_server() -> Any:
    """Rendering asks no API: an address nothing answers on keeps Prefect from starting
    its ephemeral server for the client the template resolution opens (no variable or
    block is referenced, so it sends nothing), and the worker's log stays local."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_LOGGING_TO_API_ENABLED,
        temporary_settings,
    )

    nowhere = {PREFECT_API_URL: "http://127.0.0.1:9/api", PREFECT_LOGGING_TO_API_ENABLED: False}
    with temporary_settings(nowhere):
        yield


def on_pool(pool: str) -> list[dict[str, Any]]:
    return [d for d in SPEC["deployments"] if d["work_pool"]["name"] == pool]


def label(deployment: dict[str, Any]) -> str:
    return f"{deployment['entrypoint'].split(':')[1].replace('_', '-')}/{deployment['name']}"


def job_variables(deployment: dict[str, Any]) -> dict[str, Any]:
    """The job variables as `prefect deploy` registers them: the image variable resolved."""
    values = copy.deepcopy(deployment["work_pool"]["job_variables"])
    assert values["image"] == IMAGE_VARIABLE  # the registry's image, never a hard-coded one
    values["image"] = IMAGE
    return values


def prepared(
    configuration_class: Any,
    template: dict[str, Any],
    deployment: dict[str, Any],
    values: dict[str, Any],
    pool: str,
) -> tuple[Any, Any]:
    """What a worker holds for one flow run of ``deployment``: (configuration, flow run)."""
    from prefect.client.schemas.objects import Flow, FlowRun, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse

    flow = Flow(id=uuid.uuid4(), name=deployment["entrypoint"].split(":")[1].replace("_", "-"))
    registered = DeploymentResponse(
        id=uuid.uuid4(), name=deployment["name"], flow_id=flow.id, job_variables=values
    )
    flow_run = FlowRun(
        id=uuid.uuid4(), name="nightly-otter", flow_id=flow.id, deployment_id=registered.id
    )
    configuration = asyncio.run(configuration_class.from_template_and_values(template, values))
    configuration.prepare_for_flow_run(
        flow_run,
        deployment=registered,
        flow=flow,
        work_pool=WorkPool(
            name=pool, type=pool.removeprefix("cloudtrain-"), base_job_template=template
        ),
        worker_name="cluster-worker",
    )
    return configuration, flow_run


def bundled_template(worker_type: str) -> dict[str, Any]:
    """The template a Prefect server hands out for a type whose worker package is not
    installed where `prefect work-pool create` runs (Prefect's bundled registry copy)."""
    import prefect.server.api

    views = Path(prefect.server.api.__file__).parent / "collections_data" / "views"
    metadata = json.loads((views / "aggregate-worker-metadata.json").read_text())
    for collection in metadata.values():
        for worker in collection.values():
            if worker.get("type") == worker_type:
                template: dict[str, Any] = worker["default_base_job_configuration"]
                return template
    raise AssertionError(f"no {worker_type} worker in Prefect's registry copy")


def test_there_are_kubernetes_and_ecs_deployments() -> None:
    assert sorted(map(label, on_pool("cloudtrain-kubernetes"))) == [
        "aws-training/digits-nightly-k8s",
        "azure-training/digits-nightly-k8s",
    ]
    assert list(map(label, on_pool("cloudtrain-ecs"))) == ["aws-training/digits-nightly-ecs"]


@pytest.mark.parametrize("pool", ["cloudtrain-kubernetes", "cloudtrain-ecs"])
def test_job_variables_are_the_pools_variables(pool: str) -> None:
    """A misspelt job variable is silently ignored by the template: every one must be a
    variable of the pool's template, installed worker's and server's registry copy alike."""
    from prefect_aws.workers.ecs_worker import ECSWorker
    from prefect_kubernetes.worker import KubernetesWorker

    worker = {"cloudtrain-kubernetes": KubernetesWorker, "cloudtrain-ecs": ECSWorker}[pool]
    assert on_pool(pool)
    for template in (worker.get_default_base_job_template(), bundled_template(worker.type)):
        known = set(template["variables"]["properties"])
        for deployment in on_pool(pool):
            assert set(deployment["work_pool"]["job_variables"]) <= known, (
                label(deployment),
                set(deployment["work_pool"]["job_variables"]) - known,
            )


@pytest.mark.parametrize("deployment", on_pool("cloudtrain-kubernetes"), ids=label)
def test_the_kubernetes_job_is_what_the_cluster_needs(deployment: dict[str, Any]) -> None:
    from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

    configuration, flow_run = prepared(
        KubernetesWorkerJobConfiguration,
        KubernetesWorker.get_default_base_job_template(),
        deployment,
        job_variables(deployment),
        "cloudtrain-kubernetes",
    )
    job = configuration.job_manifest
    pod = job["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["namespace"] == configuration.namespace == "cloudtrain"
    assert container["image"] == IMAGE
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }
    assert container["args"] == ["prefect", "flow-run", "execute"]  # the image's `prefect`
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["PREFECT__FLOW_RUN_ID"] == str(flow_run.id)
    assert job["spec"]["backoffLimit"] == 0  # an evicted pod: Prefect reschedules the run
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400
    assert pod["spec"]["restartPolicy"] == "Never"
    # cloud credentials: the service account's workload identity, no secret in the manifest
    assert not any(
        name.startswith(("AWS_SECRET", "AWS_ACCESS", "AZURE_CLIENT_SECRET")) for name in env
    )
    cloud = deployment["parameters"]["config"]["cloud"]
    if cloud == "aws":  # EKS: IRSA injects AWS_ROLE_ARN and the web identity token
        assert pod["spec"]["serviceAccountName"] == "cloudtrain-sagemaker"
        assert env["AWS_DEFAULT_REGION"] == deployment["parameters"]["config"]["aws"]["region"]
    else:  # AKS: the webhook acts only on pods carrying this label
        assert pod["spec"]["serviceAccountName"] == "cloudtrain-azureml"
        assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"


def test_the_service_accounts_are_the_ones_the_deployments_name() -> None:
    manifests = list(
        yaml.safe_load_all((REPO / "deployments" / "kubernetes-service-accounts.yaml").read_text())
    )
    accounts = {
        m["metadata"]["name"]: m["metadata"]["annotations"]
        for m in manifests
        if m["kind"] == "ServiceAccount" and m["metadata"]["namespace"] == "cloudtrain"
    }
    assert set(accounts["cloudtrain-sagemaker"]) == {"eks.amazonaws.com/role-arn"}
    assert set(accounts["cloudtrain-azureml"]) == {"azure.workload.identity/client-id"}
    named = {
        d["work_pool"]["job_variables"]["service_account_name"]
        for d in on_pool("cloudtrain-kubernetes")
    }
    assert named == set(accounts)


def test_the_ecs_task_is_what_ecs_needs(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from prefect_aws.workers.ecs_worker import ECSJobConfiguration, ECSWorker

    [deployment] = on_pool("cloudtrain-ecs")
    ec2, ecs = boto3.client("ec2"), boto3.client("ecs")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="cloudtrain", Description="flows", VpcId=vpc)
    ecs.create_cluster(clusterName=deployment["work_pool"]["job_variables"]["cluster"])
    # The account's ids are placeholders in prefect.yaml: moto's stand in for them.
    values = job_variables(deployment)
    values["vpc_id"] = vpc
    values["network_configuration"] = {
        **values["network_configuration"],
        "subnets": [subnet],
        "securityGroups": [group["GroupId"]],
    }
    # moto's RunTask fails on a Fargate task definition (it sums container memory that
    # Fargate sets per task): answer it with an error and read the request as sent.
    aws.faults.add("RunTask", 1, 400, "ClientException", "moto does not run Fargate tasks")
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AWS_ECS_WORKER_CREATE_TASK_RUN_MAX_ATTEMPTS", "1")
    configuration, flow_run = prepared(
        ECSJobConfiguration,
        ECSWorker.get_default_base_job_template(),
        deployment,
        values,
        "cloudtrain-ecs",
    )
    with pytest.raises(Exception, match="moto does not run Fargate tasks"):
        asyncio.run(ECSWorker(work_pool_name="cloudtrain-ecs").run(flow_run, configuration))

    [registered] = [r.json() for r in aws.log.actions("RegisterTaskDefinition")]
    [run_task] = [r.json() for r in aws.log.actions("RunTask")]
    [container] = registered["containerDefinitions"]
    assert container["image"] == IMAGE
    assert (registered["cpu"], registered["memory"]) == ("1024", "2048")
    assert registered["requiresCompatibilities"] == ["FARGATE"]
    assert registered["networkMode"] == "awsvpc"
    assert (
        registered["executionRoleArn"] == "arn:aws:iam::123456789012:role/cloudtrain-ecs-execution"
    )
    assert container["logConfiguration"]["options"]["awslogs-stream-prefix"] == "cloudtrain"

    assert (run_task["cluster"], run_task["launchType"]) == ("cloudtrain", "FARGATE")
    assert run_task["taskDefinition"].startswith(
        "arn:aws:ecs:us-east-1:123456789012:task-definition/"
    )
    # the task role is what the flow's boto3 calls (SageMaker, S3) run as
    assert (
        run_task["overrides"]["taskRoleArn"] == "arn:aws:iam::123456789012:role/cloudtrain-ecs-task"
    )
    assert run_task["networkConfiguration"] == {
        "awsvpcConfiguration": {
            "subnets": [subnet],
            "securityGroups": [group["GroupId"]],
            "assignPublicIp": "DISABLED",
        }
    }
    [override] = run_task["overrides"]["containerOverrides"]
    assert override["command"] == ["prefect", "flow-run", "execute"]
    env = {item["name"]: item["value"] for item in override["environment"]}
    assert env["PREFECT__FLOW_RUN_ID"] == str(flow_run.id)
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert not any(name.startswith(("AWS_SECRET", "AWS_ACCESS")) for name in env)
    tags = {tag["key"]: tag["value"] for tag in run_task["tags"]}
    assert tags["prefect.io/deployment-name"] == "digits-nightly-ecs"
    # the subnets were checked against the VPC before the task was asked for
    assert aws.log.actions("DescribeSubnets")


def test_the_ecs_task_role_can_be_assumed_by_ecs_tasks_only() -> None:
    trust = json.loads((REPO / "deployments" / "ecs-task-role-trust.json").read_text())
    [statement] = trust["Statement"]
    assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
