"""compute.distribution: the config, the local launcher's ranks, and the clouds' requests.

Local jobs run real processes (bounded polls only, no timing assertions); the cloud
requests are checked by botocore's validator and azure-ai-ml's serializer, offline. The
Azure fake's REST round trip is in test_azure_training.py.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import base_config, train_locally
from test_local_faults import gone

from cloudtrain.backends.aws.backend import AwsBackend
from cloudtrain.backends.azure import jobs as azure_jobs
from cloudtrain.backends.local.backend import LocalBackend
from cloudtrain.changes import config_digest
from cloudtrain.config import PipelineConfig, load_config
from cloudtrain.errors import ConfigError, TrainingError, UnsupportedError
from cloudtrain.planning import plan
from cloudtrain.recovery import Outcome
from cloudtrain.results import AttemptSpec, ComputeTarget, ResolvedEnvironment

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "distributed"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
AZURE = {"subscription_id": "s", "resource_group": "r", "workspace": "w", "compute": "gpu"}
TORCHRUN_2X2 = {"instance_count": 2, "distribution": {"type": "torchrun", "processes_per_host": 2}}


def write(tmp_path: Path, script: str = "print('ok')\n", **sections: Any) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "train.py").write_text(textwrap.dedent(script))
    path = tmp_path / "cloudtrain.yaml"
    path.write_text(yaml.safe_dump(base_config(**sections), sort_keys=False))
    return path


# -- the config ---------------------------------------------------------------------------


def test_distribution_is_none_by_default_and_travels_through_json(tmp_path: Path) -> None:
    plain = load_config(write(tmp_path))
    assert (plain.compute.distribution.type, plain.compute.distribution.processes_per_host) == (
        "none",
        1,
    )
    config = load_config(write(tmp_path, compute=TORCHRUN_2X2))
    # the config reaches the flow as Prefect's JSON parameters, and comes back the same
    again = PipelineConfig.model_validate(json.loads(config.model_dump_json()))
    assert again.compute.distribution == config.compute.distribution
    assert again.compute.distribution.processes_per_host == 2
    short = load_config(write(tmp_path, compute={"distribution": "mpi"}))
    assert (short.compute.distribution.type, short.compute.distribution.processes_per_host) == (
        "mpi",
        1,
    )


@pytest.mark.parametrize(
    ("distribution", "message"),
    [
        (
            {"type": "torchrn"},
            "compute.distribution.type: unknown distribution type 'torchrn'; valid: mpi, none, "
            "torchrun (did you mean 'torchrun'?)",
        ),
        (
            {"type": "torchrun", "processes_per_host": 0},
            "compute.distribution.processes_per_host: Input should be greater than or equal to 1",
        ),
        (
            {"type": "mpi", "processes_per_host": 1000},
            "compute.distribution.processes_per_host: 1000 processes on one host is more than the "
            "largest training instances run (at most 192)",
        ),
        (
            {"processes_per_host": 2},
            "compute.distribution.processes_per_host: 2 processes per host need a launcher: "
            "set compute.distribution.type to torchrun or mpi",
        ),
        ({"type": "torchrun", "nproc": 2}, "compute.distribution.nproc: unknown key"),
        (
            {"type": "torchrun", "processes_per_host": True},
            "compute.distribution.processes_per_host: Input should be a valid integer",
        ),
    ],
)
def test_a_bad_distribution_is_one_line_naming_the_field(
    tmp_path: Path, distribution: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, compute={"distribution": distribution}))
    assert str(caught.value).startswith(message)


def test_no_distribution_keeps_the_digest_and_a_distribution_changes_it(tmp_path: Path) -> None:
    """Old configs keep their digest (test_changes pins some); naming the default changes
    nothing; a distribution trains a different job, so it retrains."""
    plain = config_digest(load_config(write(tmp_path)))
    named = load_config(write(tmp_path, compute={"distribution": {"type": "none"}}))
    assert config_digest(named) == plain
    assert config_digest(load_config(write(tmp_path, compute=TORCHRUN_2X2))) != plain


def test_the_local_backend_runs_at_most_32_processes(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / ".cloudtrain")
    with pytest.raises(UnsupportedError) as caught:
        backend.validate(load_config(write(tmp_path, compute={"instance_count": 33})))
    assert caught.value.field == "compute.instance_count"
    assert "at most 32 (got compute.instance_count 33 x processes_per_host 1 = 33)" in str(
        caught.value
    )
    wide = {"instance_count": 4, "distribution": {"type": "torchrun", "processes_per_host": 9}}
    with pytest.raises(UnsupportedError) as caught:
        backend.validate(load_config(write(tmp_path, compute=wide)))
    assert caught.value.field == "compute.distribution.processes_per_host"


def test_a_local_sweep_counts_the_processes_of_its_trials_at_once(tmp_path: Path) -> None:
    """A sweep's trials run on this machine together: 10 trials at once of a 2 x 16 job
    are 320 processes, not the 32 a job is held to."""
    backend = LocalBackend(tmp_path / ".cloudtrain")
    wide = {"instance_count": 2, "distribution": {"type": "torchrun", "processes_per_host": 8}}
    sweep = {
        "parameters": {"lr": [0.1 * n for n in range(1, 11)]},
        "max_parallel": 10,
        "objective": "loss",
        "goal": "min",
    }
    with pytest.raises(UnsupportedError) as caught:
        backend.validate(load_config(write(tmp_path, compute=wide, sweep=sweep, metrics=["loss"])))
    assert caught.value.field == "sweep.max_parallel"
    assert "10 trials at once x 16 processes = 160" in str(caught.value)
    # two at once fit (2 x 16 = 32); max_parallel beyond the trials counts the trials only
    for fits in ({**sweep, "max_parallel": 2}, {**sweep, "parameters": {"lr": [0.1, 0.2]}}):
        backend.validate(load_config(write(tmp_path, compute=wide, sweep=fits, metrics=["loss"])))


# -- local: the plan and the ranks --------------------------------------------------------


def test_local_plan_shows_the_launcher_and_every_ranks_variables(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, compute=TORCHRUN_2X2))
    request = plan(LocalBackend(config.work_dir), config)["attempts"][0]["request"]
    command = request["command"]
    assert command[2].endswith("cloudtrain/launcher.py")
    assert command[3:9] == ["--type", "torchrun", "--hosts", "2", "--processes-per-host", "2"]
    assert command[-2:] == ["-u", "train.py"]
    distribution = request["distribution"]
    assert (distribution["hosts"], distribution["ranks"]) == (["algo-1", "algo-2"], 4)
    rank3 = distribution["rank_environment"]["3"]
    assert (rank3["SM_CURRENT_HOST"], rank3["RANK"], rank3["LOCAL_RANK"]) == ("algo-2", "3", "1")
    assert rank3["MASTER_ADDR"] == "127.0.0.1" and "free port" in rank3["MASTER_PORT"]
    assert json.loads(request["environment_variables"]["SM_HOSTS"]) == ["algo-1", "algo-2"]


def test_one_host_without_a_distribution_runs_the_script_alone_as_before(tmp_path: Path) -> None:
    config = load_config(write(tmp_path))
    request = plan(LocalBackend(config.work_dir), config)["attempts"][0]["request"]
    assert request["command"][1:] == ["-u", "train.py"]
    assert "distribution" not in request


ENV_SCRIPT = """
    import json, os
    from pathlib import Path
    names = [n for n in os.environ if n.startswith(("SM_HOSTS", "SM_CURRENT_HOST", "OMPI_"))
             or n in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                      "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")]
    out = Path(os.environ["SM_OUTPUT_DATA_DIR"])
    key = os.environ["SM_CURRENT_HOST"] + "-" + os.environ.get("LOCAL_RANK", "0")
    (out / f"{key}.json").write_text(json.dumps({n: os.environ[n] for n in names}))
    print("wrote", key)
"""


def rank_files(backend: LocalBackend, attempt: int = 1) -> dict[str, dict[str, str]]:
    folder = backend.root / "runs" / "unit" / "0123456789abcdef" / "attempts" / str(attempt)
    files = (folder / "output" / "data").glob("*.json")
    return {path.stem: json.loads(path.read_text()) for path in files}


def test_torchrun_ranks_get_torchruns_variables_and_sagemakers_hosts(tmp_path: Path) -> None:
    backend, result, lines = train_locally(write(tmp_path, ENV_SCRIPT, compute=TORCHRUN_2X2))
    assert result.final.outcome is Outcome.SUCCEEDED
    ranks = rank_files(backend)
    assert sorted(ranks) == ["algo-1-0", "algo-1-1", "algo-2-0", "algo-2-1"]
    port = ranks["algo-1-0"]["MASTER_PORT"]
    assert port.isdigit() and int(port) > 0
    for key, env in ranks.items():
        host, local = key.rsplit("-", 1)
        node = int(host.split("-")[1]) - 1
        assert env == {
            "SM_HOSTS": '["algo-1", "algo-2"]',
            "SM_CURRENT_HOST": host,
            "WORLD_SIZE": "4",
            "RANK": str(node * 2 + int(local)),
            "LOCAL_RANK": local,
            "LOCAL_WORLD_SIZE": "2",
            "GROUP_RANK": str(node),
            "NODE_RANK": str(node),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,  # one rendezvous for the group
        }
    assert "[algo-2 rank 3] wrote algo-2-1" in lines  # every rank's output, with its rank


def test_mpi_ranks_get_open_mpis_variables_and_the_torch_ones(tmp_path: Path) -> None:
    mpi = {"instance_count": 1, "distribution": {"type": "mpi", "processes_per_host": 3}}
    backend, result, _ = train_locally(write(tmp_path, ENV_SCRIPT, compute=mpi))
    assert result.final.outcome is Outcome.SUCCEEDED
    env = rank_files(backend)["algo-1-2"]
    assert {k: v for k, v in env.items() if k.startswith("OMPI_")} == {
        "OMPI_COMM_WORLD_RANK": "2",
        "OMPI_COMM_WORLD_SIZE": "3",
        "OMPI_COMM_WORLD_LOCAL_RANK": "2",
        "OMPI_COMM_WORLD_LOCAL_SIZE": "3",
        "OMPI_COMM_WORLD_NODE_RANK": "0",
        "OMPI_UNIVERSE_SIZE": "3",
    }
    assert (env["RANK"], env["WORLD_SIZE"]) == ("2", "3")


def test_several_hosts_without_a_distribution_run_the_script_once_per_host(
    tmp_path: Path,
) -> None:
    """As SageMaker runs a script on each of instance_count hosts: no ranks, no rendezvous."""
    backend, result, _ = train_locally(write(tmp_path, ENV_SCRIPT, compute={"instance_count": 2}))
    assert result.final.outcome is Outcome.SUCCEEDED
    assert rank_files(backend) == {
        "algo-1-0": {"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-1"},
        "algo-2-0": {"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2"},
    }


def test_metrics_and_progress_are_rank_zeros(tmp_path: Path) -> None:
    script = """
        import os
        rank = int(os.environ["RANK"])
        print(f"epoch={rank + 1} loss={rank + 1}", flush=True)
    """
    _, result, lines = train_locally(
        write(
            tmp_path,
            script,
            compute=TORCHRUN_2X2,
            metrics=["loss"],
            hyperparameters={"epochs": 4},
        )
    )
    attempt = result.final
    assert attempt.metrics == {"loss": 1.0}
    assert (attempt.epoch_start, attempt.epoch_end, attempt.progress_end) == (1, 1, 0.25)
    assert "[algo-2 rank 3] epoch=4 loss=4" in lines  # the others are in the log


def test_a_failing_rank_fails_the_attempt_and_the_others_are_stopped(tmp_path: Path) -> None:
    script = """
        import os, sys, time
        from pathlib import Path
        rank = int(os.environ["RANK"])
        out = Path(os.environ["SM_OUTPUT_DATA_DIR"])
        (out / f"pid-{rank}").write_text(str(os.getpid()))
        if rank == 3:
            while len(list(out.glob("pid-*"))) < 4:
                time.sleep(0.05)
            print("rank 3: cannot go on", flush=True)
            sys.exit(3)
        time.sleep(600)
    """
    backend, error, _ = train_locally(write(tmp_path, script, compute=TORCHRUN_2X2))
    assert isinstance(error, TrainingError)
    (attempt,) = error.result.attempts  # a script failure is not retried
    assert attempt.outcome is Outcome.FAILED
    assert attempt.reason.startswith(
        "the script failed: rank 3 on algo-2 (local rank 1) exited with code 3, and the "
        "other ranks were stopped"
    )
    folder = backend.root / "runs" / "unit" / "0123456789abcdef" / "attempts" / "1"
    pids = [int((folder / "output" / "data" / f"pid-{r}").read_text()) for r in range(3)]
    assert gone(pids) == []
    log = (folder / "log.txt").read_text()
    assert "[algo-2 rank 3] rank 3: cannot go on" in log
    assert "rank 3 (algo-2) exited with code 3: stopping the other ranks" in log


def test_a_reclaim_stops_every_rank_and_the_next_attempt_starts_the_group_again(
    tmp_path: Path,
) -> None:
    """SIGTERM reaches every rank; one that ignores it is killed after the grace period."""
    script = """
        import os, signal, sys, time
        from pathlib import Path
        rank = int(os.environ["RANK"])
        if os.environ["CLOUDTRAIN_ATTEMPT"] == "2":
            print(f"rank {rank} done", flush=True)
            sys.exit(0)
        def on_term(signum, frame):
            print(f"rank {rank} got SIGTERM", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN if rank == 1 else on_term)
        out = Path(os.environ["SM_OUTPUT_DATA_DIR"])
        (out / f"pid-{rank}").write_text(str(os.getpid()))
        while rank == 0 and len(list(out.glob("pid-*"))) < 4:
            time.sleep(0.05)
        if rank == 0:
            print("ready", flush=True)
        time.sleep(600)
    """
    path = write(
        tmp_path,
        script,
        compute={**TORCHRUN_2X2, "spot": True},
        retry={"max_attempts": 2},
        local={"spot_interruptions": ["^ready"], "grace_period": 1},
    )
    backend, result, lines = train_locally(path)
    first, second = result.attempts
    assert (first.outcome, second.outcome, second.spot) == (
        Outcome.INTERRUPTED,
        Outcome.SUCCEEDED,
        False,
    )
    for rank, host in ((0, "algo-1"), (2, "algo-2"), (3, "algo-2")):  # one SIGTERM each
        assert lines.count(f"[{host} rank {rank}] rank {rank} got SIGTERM") == 1
    assert "[algo-1 rank 1] rank 1 got SIGTERM" not in lines
    folder = backend.root / "runs" / "unit" / "0123456789abcdef" / "attempts" / "1"
    assert gone([int((folder / "output" / "data" / "pid-1").read_text())]) == []
    assert sorted(line for line in lines if line.endswith(" done")) == [
        f"[algo-{r // 2 + 1} rank {r}] rank {r} done" for r in range(4)
    ]


# -- the done-when: the example, 2 x 2, reclaimed and resumed through the flow ------------


@pytest.fixture
def example(tmp_path: Path) -> Callable[..., Path]:
    for part in ("src", "data"):
        shutil.copytree(EXAMPLE / part, tmp_path / part)
    raw = yaml.safe_load((EXAMPLE / "cloudtrain.yaml").read_text())
    raw["hyperparameters"]["epoch_seconds"] = 0

    def make(**local: Any) -> Path:
        path = tmp_path / "cloudtrain.yaml"
        path.write_text(yaml.safe_dump({**raw, "local": {**raw["local"], **local}}))
        return path

    return make


def test_a_local_2x2_torchrun_job_is_reclaimed_resumes_and_finishes(
    prefect_server: str, example: Callable[..., Path]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.local_training import local_training

    config = load_config(example())
    assert (config.compute.instance_count, config.compute.distribution.processes_per_host) == (
        2,
        2,
    )
    state = local_training(config=config, return_state=True, force=True)
    assert state.is_completed()
    summary = state.result()
    first, second = summary["attempts"]
    assert (first["outcome"], first["capacity"]) == ("interrupted", "spot")
    assert (second["outcome"], second["capacity"]) == ("succeeded", "on-demand")
    assert first["epoch_start"] == 1 and first["epoch_end"] >= 4
    assert second["epoch_start"] == first["epoch_end"] + 1 and second["resumed"] is True
    assert second["epoch_end"] == 12
    resumed = json.loads((Path(summary["model"]["model_uri"]) / "model.json").read_text())
    assert resumed["world"] == 4
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    report = next(a for a in artifacts if a.key == "distributed-line-report").data
    assert "| compute | ml.m5.large x2, spot, max_run 120 s, torchrun x2 per host |" in report

    # the same group trained in one go makes the same model, bit for bit
    _, straight, _ = train_locally(example(spot_interruptions=[]))
    assert len(straight.attempts) == 1
    model_dir = config.work_dir / "runs" / config.name / straight.run_id / "attempts" / "1"
    assert json.loads((model_dir / "model" / "model.json").read_text()) == resumed


# -- the clouds' requests -----------------------------------------------------------------


def cloud_config(
    tmp_path: Path, cloud: str, compute: dict[str, Any] | None = None, **raw: Any
) -> PipelineConfig:
    sections: dict[str, Any] = {
        "cloud": cloud,
        "environment": {"framework": "pytorch", "framework_version": "2.3"},
        "compute": {
            "instance_type": "ml.g5.xlarge",
            "spot": True,
            **TORCHRUN_2X2,
            **(compute or {}),
        },
        "aws": {"role": ROLE, "bucket": "my-bucket"},
        "azure": AZURE,
        **raw,
    }
    return load_config(write(tmp_path, **sections))


@pytest.mark.parametrize(
    ("distribution", "expected"),
    [
        (
            {"type": "torchrun", "processes_per_host": 2},
            {
                "sagemaker_torch_distributed_enabled": "true",
                "sagemaker_mpi_num_of_processes_per_host": "2",
            },
        ),
        (
            {"type": "mpi", "processes_per_host": 4},
            {
                "sagemaker_mpi_enabled": "true",
                "sagemaker_mpi_num_of_processes_per_host": "4",
                "sagemaker_mpi_custom_mpi_options": '""',
            },
        ),
        ({"type": "none"}, {}),
    ],
)
def test_aws_plan_carries_the_toolkits_launch_hyperparameters(
    tmp_path: Path, distribution: dict[str, Any], expected: dict[str, str]
) -> None:
    """plan's requests pass botocore's validator (AwsBackend.attempt_request runs it)."""
    config = cloud_config(
        tmp_path, "aws", compute={"instance_count": 2, "distribution": distribution}
    )
    for attempt in plan(AwsBackend(config), config)["attempts"]:
        request = attempt["request"]
        assert request["ResourceConfig"]["InstanceCount"] == 2
        launch = {
            k: v
            for k, v in request["HyperParameters"].items()
            if k.startswith(("sagemaker_torch", "sagemaker_mpi"))
        }
        assert launch == expected


@pytest.mark.parametrize(
    ("environment", "distribution", "field", "message"),
    [
        (
            {"framework": None, "builtin": "kmeans"},
            "torchrun",
            "compute.distribution.type",
            "torchrun: a built-in algorithm (kmeans) distributes itself",
        ),
        (
            {"framework": "sklearn", "framework_version": "1.2"},
            "mpi",
            "compute.distribution.type",
            "mpi on SageMaker needs environment.framework pytorch or tensorflow or huggingface: "
            "the sklearn container runs the script once per host",
        ),
        (
            {"framework": "tensorflow", "framework_version": "2.14"},
            "torchrun",
            "compute.distribution.type",
            "torchrun on SageMaker needs environment.framework pytorch",
        ),
        (
            {"framework": "pytorch", "framework_version": "1.12"},
            "torchrun",
            "environment.framework_version",
            "torchrun on SageMaker needs a PyTorch 1.13 or later container (got 1.12)",
        ),
    ],
)
def test_aws_refuses_what_the_container_cannot_launch(
    tmp_path: Path, environment: dict[str, Any], distribution: str, field: str, message: str
) -> None:
    config = cloud_config(
        tmp_path, "aws", environment=environment, compute={"distribution": distribution}
    )
    with pytest.raises(ConfigError) as caught:
        AwsBackend(config).validate(config)
    (problem,) = [p for p in caught.value.problems if p.field == field]
    assert problem.message.startswith(message)


def azure_body(config: PipelineConfig) -> dict[str, Any]:
    spec = AttemptSpec(
        run_id="0123abcd",
        number=1,
        spot=True,
        job_name="unit-0123abcd-a1",
        checkpoint_uri=azure_jobs.datastore_uri("workspaceblobstore", "cloudtrain/unit/c/0123"),
        channels={},
        compute=ComputeTarget("gpu", "Standard_NC4as_T4_v3", 2),
        environment=ResolvedEnvironment("curated", "azureml:AzureML-pytorch:1", "curated"),
    )
    job = azure_jobs.command_job(config, spec, compute="gpu", inputs={})
    return azure_jobs.rest_body(job)["properties"]


@pytest.mark.parametrize(
    ("distribution", "expected"),
    [
        (
            {"type": "torchrun", "processes_per_host": 2},
            {"distributionType": "PyTorch", "processCountPerInstance": 2},
        ),
        (
            {"type": "mpi", "processes_per_host": 3},
            {"distributionType": "Mpi", "processCountPerInstance": 3},
        ),
        ({"type": "none"}, None),
    ],
)
def test_azure_command_job_carries_the_distribution_and_the_node_count(
    tmp_path: Path, distribution: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    config = cloud_config(
        tmp_path,
        "azure",
        compute={"instance_type": "Standard_NC4as_T4_v3", "distribution": distribution},
    )
    props = azure_body(config)  # azure-ai-ml's own REST serialization
    assert props.get("distribution") == expected
    assert props["resources"]["instanceCount"] == 2


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_the_torch_example_plans_offline_on_both_clouds(cloud: str) -> None:
    """examples/distributed/torch.yaml is not run here (torch is gigabytes), but its plan
    is: the SageMaker request through botocore's validator, the Azure ML job through
    azure-ai-ml's serializer."""
    from cloudtrain.backend import build_backend

    config = load_config(EXAMPLE / "torch.yaml", cloud=cloud)
    backend = build_backend(config)
    backend.validate(config)
    request = plan(backend, config)["attempts"][0]["request"]
    if cloud == "aws":
        assert request["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"
        assert request["ResourceConfig"]["InstanceCount"] == 2
    else:
        props = request["properties"]
        assert props["distribution"] == {
            "distributionType": "PyTorch",
            "processCountPerInstance": 1,
        }
        assert props["resources"]["instanceCount"] == 2
