"""Secrets: references in the config, values only in the script's environment, masked in
everything cloudtrain prints, stores or forwards."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sagemaker_lifecycle import lifecycle
from test_aws_training import aws_config

from cloudtrain.cli import main
from cloudtrain.config import load_config, validate_config
from cloudtrain.errors import ConfigError
from cloudtrain.secrets import (
    MASK,
    Redactor,
    SecretHyperparameterWarning,
    is_secret_name,
    resolve,
)

__all__ = ["aws_config", "lifecycle"]  # fixtures, imported for pytest

WANDB = "wandb-5f0c1d2e3a4b5c6d7e8f"
PREFECT_VALUE = "db-pass-9a8b7c6d5e4f"
AWS_VALUE = "hf_tokenvalue0123456789"
HP_VALUE = "hp-apikey-1122334455"

#: Prints a digest of each secret it gets (so a test can check the value arrived) and the
#: values themselves (so a test can check they are masked on the way out).
SCRIPT = """
    import hashlib, json, os, sys
    for name in sys.argv[1].split(","):
        value = os.environ.get(name, "")
        print(f"{name} sha256={hashlib.sha256(value.encode()).hexdigest()}")
        print(f"leak {name}: {value}")
    hps = json.loads(os.environ["SM_HPS"])
    print("leak hp:", hps.get("api_key"))
    os.makedirs(os.environ["SM_MODEL_DIR"], exist_ok=True)
    open(os.path.join(os.environ["SM_MODEL_DIR"], "m.txt"), "w").write("model")
    print("score=1.0")
"""


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "db_password",
        "passwd",
        "client_secret",
        "secret_key",
        "hf_token",
        "token",
        "auth_token",
        "api_key",
        "apiKey",
        "apikey",
        "wandb-api-key",
        "aws_access_key_id",
        "private_key",
        "storage_account_key",
        "credentials",
        "gcp.credential",
        "passphrase",
    ],
)
def test_secret_looking_names_are_recognised(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "num_keys",
        "key_size",
        "sort_key",
        "keys",
        "max_tokens",
        "num_tokens",
        "pad_token",
        "eos_token",
        "tokenizer",
        "learning_rate",
        "epochs",
        "secretary_count",
        "monkey",
    ],
)
def test_ordinary_names_are_not_masked(name: str) -> None:
    assert not is_secret_name(name)


def test_redactor_masks_every_value_longest_first() -> None:
    redact = Redactor(["abcd1234", "abcd12345678", "xy"])  # "xy" is too short to mask
    assert redact("a abcd12345678 b abcd1234 c xy") == f"a {MASK} b {MASK} c xy"
    assert Redactor([])("unchanged") == "unchanged"


# --- the section -----------------------------------------------------------------------


def test_secrets_section_takes_one_reference_per_variable(
    write_config: Callable[..., Path],
) -> None:
    config = load_config(
        write_config(
            secrets={
                "WANDB_API_KEY": {"env": "WANDB_API_KEY"},
                "DB_PASSWORD": {"prefect_secret": "db-password"},
                "HF_TOKEN": {"aws_secrets_manager": "arn:aws:secretsmanager:us-east-1:1:secret:hf"},
                "KV": {"azure_key_vault": {"vault": "my-vault", "name": "kv-secret"}},
            }
        )
    )
    assert {name: ref.kind for name, ref in config.secrets.items()} == {
        "WANDB_API_KEY": "env",
        "DB_PASSWORD": "prefect_secret",
        "HF_TOKEN": "aws_secrets_manager",
        "KV": "azure_key_vault",
    }


@pytest.mark.parametrize(
    ("secrets", "field", "message"),
    [
        ({"1BAD": {"env": "X"}}, "secrets.1BAD", "is not an environment variable name"),
        ({"SM_HPS": {"env": "X"}}, "secrets.SM_HPS", "is set by the script contract"),
        ({"PATH": {"env": "X"}}, "secrets.PATH", "is set by the script contract"),
        ({"A": {"env": "X", "prefect_secret": "y"}}, "secrets.A", "set exactly one of"),
        ({"A": {}}, "secrets.A", "set exactly one of"),
        ({"A": {"vault": "x"}}, "secrets.A.vault", "unknown key"),
        ({"A": {"env": "NOT-A-NAME"}}, "secrets.A.env", "is not an environment variable"),
        ({"A": {"prefect_secret": "Bad Name"}}, "secrets.A.prefect_secret", "block name"),
        (
            {"A": {"azure_key_vault": {"vault": "v", "name": "n"}}},
            "secrets.A.azure_key_vault.vault",
            "Key Vault name",
        ),
        ({"A": "plain-value"}, "secrets.A", ""),
    ],
)
def test_bad_secrets_are_refused_naming_the_variable(
    write_config: Callable[..., Path], secrets: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(secrets=secrets))
    assert [p.field for p in caught.value.problems] == [field]
    assert message in caught.value.problems[0].message


def test_a_secret_looking_hyperparameter_warns_and_points_to_secrets(
    write_config: Callable[..., Path],
) -> None:
    with pytest.warns(SecretHyperparameterWarning, match=r"api_key.*secrets: section"):
        load_config(write_config(hyperparameters={"api_key": HP_VALUE, "num_keys": 3}))


def test_the_stored_mask_read_back_is_refused(write_config: Callable[..., Path]) -> None:
    with pytest.raises(ConfigError, match=r"hyperparameters.api_key: is the mask"):
        load_config(write_config(hyperparameters={"api_key": MASK}))


def test_json_copies_of_the_config_mask_secret_looking_hyperparameters(
    write_config: Callable[..., Path],
) -> None:
    """What Prefect stores as the flow run's parameters is the config's JSON form."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecretHyperparameterWarning)
        config = load_config(write_config(hyperparameters={"api_key": HP_VALUE, "epochs": 3}))
    dumped = config.model_dump(mode="json")
    assert dumped["hyperparameters"] == {"api_key": MASK, "epochs": 3}
    assert HP_VALUE not in config.model_dump_json()
    assert config.hyperparameters["api_key"] == HP_VALUE  # the script still gets it
    revealed = config.model_dump(mode="json", context={"reveal_secrets": True})
    assert revealed["hyperparameters"]["api_key"] == HP_VALUE


# --- resolving ---------------------------------------------------------------------------


def test_env_references_resolve_and_missing_ones_name_the_field() -> None:
    refs = validate_config_secrets({"A": {"env": "SRC_A"}, "B": {"env": "SRC_B"}})
    assert resolve(refs, environ={"SRC_A": "va", "SRC_B": "vb"}).values == {"A": "va", "B": "vb"}
    with pytest.raises(ConfigError) as caught:
        resolve(refs, environ={"SRC_A": "va"})
    assert [str(p) for p in caught.value.problems] == [
        "secrets.B: environment variable SRC_B is not set"
    ]


def test_aws_secrets_manager_references_resolve_on_moto(aws: Any) -> None:
    import boto3

    client = boto3.client("secretsmanager")
    arn = client.create_secret(Name="hf-token", SecretString=AWS_VALUE)["ARN"]
    refs = validate_config_secrets(
        {"BY_NAME": {"aws_secrets_manager": "hf-token"}, "BY_ARN": {"aws_secrets_manager": arn}}
    )
    resolved = resolve(refs)
    assert resolved.values == {"BY_NAME": AWS_VALUE, "BY_ARN": AWS_VALUE}
    assert AWS_VALUE not in repr(resolved)
    missing = validate_config_secrets({"GONE": {"aws_secrets_manager": "no-such-secret"}})
    with pytest.raises(ConfigError, match=r"secrets.GONE: no secret 'no-such-secret'"):
        resolve(missing)


def validate_config_secrets(secrets: dict[str, Any]) -> Any:
    from cloudtrain.secrets import SecretRef

    return {name: SecretRef.model_validate(ref) for name, ref in secrets.items()}


# --- plan and CLI ------------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True])
def test_plan_shows_references_and_masks_hyperparameters(
    write_config: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    as_json: bool,
) -> None:
    monkeypatch.setenv("WANDB_SOURCE", WANDB)
    path = write_config(
        hyperparameters={"api_key": HP_VALUE, "epochs": 2},
        secrets={"WANDB_API_KEY": {"env": "WANDB_SOURCE"}},
    )
    assert main(["plan", str(path), *(["--json"] if as_json else [])]) == 0
    out = capsys.readouterr().out
    assert HP_VALUE not in out and WANDB not in out
    assert MASK in out
    plan = json.loads(out) if as_json else yaml.safe_load(out)
    request = plan["attempts"][0]["request"]
    assert request["secrets"] == {"WANDB_API_KEY": "<env WANDB_SOURCE>"}
    assert "--api_key" in request["command"]
    assert request["environment_variables"]["SM_HP_API_KEY"] == MASK


def test_aws_plan_masks_hyperparameters(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        cloud="aws",
        hyperparameters={"hf_token": HP_VALUE},
        data={"train": "s3://my-bucket/train/"},
        aws={"role": "arn:aws:iam::123456789012:role/R", "bucket": "my-bucket"},
    )
    assert main(["plan", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert HP_VALUE not in out
    request = json.loads(out)["attempts"][0]["request"]
    assert request["HyperParameters"]["hf_token"] == json.dumps(MASK)


def test_run_refuses_a_missing_env_secret_before_anything_is_created(
    write_config: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    path = write_config(secrets={"TOKEN_FOR_SCRIPT": {"env": "NOT_SET_ANYWHERE"}})
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "secrets.TOKEN_FOR_SCRIPT: environment variable NOT_SET_ANYWHERE is not set" in err
    assert not (tmp_path / ".cloudtrain").exists()


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_clouds_refuse_references_they_would_show_in_the_job(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str], cloud: str
) -> None:
    path = write_config(
        cloud=cloud,
        secrets={"WANDB_API_KEY": {"env": "WANDB_SOURCE"}},
        data={"train": "s3://my-bucket/train/" if cloud == "aws" else "azureml://x/y"},
        aws={"role": "arn:aws:iam::123456789012:role/R", "bucket": "my-bucket"},
        azure={"subscription_id": "s", "resource_group": "g", "workspace": "w"},
        compute={"instance_type": "Standard_DS3_v2"} if cloud == "azure" else {},
    )
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"secrets.WANDB_API_KEY: cloud {cloud} takes" in err


# --- a run ---------------------------------------------------------------------------------


def test_local_training_passes_values_and_masks_them_everywhere(
    write_config: Callable[..., Path], aws: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without Prefect: env and Secrets Manager (moto) values reach the script; every line
    we keep (forwarded lines, reasons, log.txt, records) has them masked."""
    import boto3

    from cloudtrain.backends.local.backend import LocalBackend
    from cloudtrain.data import upload_channels
    from cloudtrain.training import run_training

    boto3.client("secretsmanager").create_secret(Name="hf-token", SecretString=AWS_VALUE)
    monkeypatch.setenv("WANDB_SOURCE", WANDB)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecretHyperparameterWarning)
        config = load_config(
            write_config(
                SCRIPT.replace("sys.argv[1]", "'WANDB_API_KEY,HF_TOKEN'"),
                hyperparameters={"api_key": HP_VALUE},
                metrics=["score"],
                secrets={
                    "WANDB_API_KEY": {"env": "WANDB_SOURCE"},
                    "HF_TOKEN": {"aws_secrets_manager": "hf-token"},
                },
            )
        )
    backend = LocalBackend.from_config(config)
    secrets = resolve(config.secrets, backend.secret_kinds)
    compute = backend.ensure_compute(config)
    lines: list[str] = []
    result = run_training(
        backend,
        config,
        run_id="0123456789abcdef",
        channels={n: d.uri for n, d in upload_channels(backend, config).items()},
        compute=compute,
        environment=backend.resolve_environment(config, compute),
        log=lines.append,
        secrets=secrets,
    )
    backend.collect_artifacts(config, result)
    text = "\n".join(lines)
    assert f"WANDB_API_KEY sha256={digest(WANDB)}" in text
    assert f"HF_TOKEN sha256={digest(AWS_VALUE)}" in text
    assert f"leak WANDB_API_KEY: {MASK}" in text and f"leak hp: {MASK}" in text
    stored = [p.read_text() for p in (tmp_path / ".cloudtrain").rglob("*") if _is_text(p)]
    assert any("leak hp" in content for content in stored)  # log.txt is among them
    for value in (WANDB, AWS_VALUE, HP_VALUE):
        assert value not in text
        assert not [content for content in stored if value in content]


def _is_text(path: Path) -> bool:
    return path.is_file() and path.suffix in {".txt", ".json", ""}


pytestmark_prefect = pytest.mark.prefect


@pytestmark_prefect
def test_a_flow_run_keeps_only_references(
    prefect_server: str,
    write_config: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """On a real Prefect server: an env secret, a Prefect Secret block and a secret-looking
    hyperparameter reach the script; none is in the stored parameters, the logs, the
    artifacts, the task runs, the run's name and tags, or the files under work_dir."""
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    from flows.local_training import local_training

    Secret(value=PREFECT_VALUE).save("cloudtrain-test-db-password", overwrite=True)
    monkeypatch.setenv("WANDB_SOURCE", WANDB)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecretHyperparameterWarning)
        config = load_config(
            write_config(
                SCRIPT.replace("sys.argv[1]", "'WANDB_API_KEY,DB_PASSWORD'"),
                name="secret-run",
                hyperparameters={"api_key": HP_VALUE},
                metrics=["score"],
                secrets={
                    "WANDB_API_KEY": {"env": "WANDB_SOURCE"},
                    "DB_PASSWORD": {"prefect_secret": "cloudtrain-test-db-password"},
                },
            )
        )
    state = local_training(config=config, return_state=True)
    assert state.is_completed()
    run_id = state.state_details.flow_run_id
    APILogHandler().flush()  # logs travel in batches: send what is queued
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run_id)
        runs = FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        artifacts = client.read_artifacts(flow_run_filter=runs)
        task_runs = client.read_task_runs(flow_run_filter=runs)
        for _ in range(40):  # until the last line the run logs has been stored
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            log_text = "\n".join(log.message for log in logs)
            if any(log.task_run_id is None and "Finished in" in log.message for log in logs):
                break  # the flow's own last line
            time.sleep(0.25)
    assert f"WANDB_API_KEY sha256={digest(WANDB)}" in log_text
    assert f"DB_PASSWORD sha256={digest(PREFECT_VALUE)}" in log_text
    assert "look like secrets" in log_text  # the warning, in the run's log
    assert flow_run.parameters["config"]["hyperparameters"]["api_key"] == MASK
    assert flow_run.parameters["config"]["secrets"]["WANDB_API_KEY"] == {
        "env": "WANDB_SOURCE",
        "prefect_secret": None,
        "aws_secrets_manager": None,
        "azure_key_vault": None,
    }
    report = next(a.data for a in artifacts if a.key == "secret-run-report")
    assert f"`api_key={MASK}`" in report and "`DB_PASSWORD` from prefect_secret" in report
    stored = {
        "parameters": json.dumps(flow_run.parameters),
        "name and tags": f"{flow_run.name} {flow_run.tags}",
        "logs": log_text,
        "artifacts": json.dumps([a.model_dump(mode="json") for a in artifacts]),
        "task runs": json.dumps([t.model_dump(mode="json") for t in task_runs]),
        "summary": json.dumps(state.result(), default=str),
        **{
            str(path): path.read_text()
            for path in (tmp_path / ".cloudtrain").rglob("*")
            if _is_text(path)
        },
    }
    for value in (WANDB, PREFECT_VALUE, HP_VALUE):
        assert [where for where, text in stored.items() if value in text] == []


@pytestmark_prefect
def test_a_missing_prefect_secret_fails_before_anything_is_created(
    prefect_server: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    from flows.local_training import local_training

    config = load_config(write_config(secrets={"DB_PASSWORD": {"prefect_secret": "no-such-block"}}))
    with pytest.raises(ConfigError, match=r"secrets.DB_PASSWORD: no Prefect Secret block"):
        local_training(config=config)
    assert not (tmp_path / ".cloudtrain").exists()


def test_validate_config_keeps_secrets_out_of_the_digest_inputs(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a secret comes from is not a reason to retrain; a changed hyperparameter is."""
    from cloudtrain.changes import config_digest

    raw = yaml.safe_load(write_config().read_text())
    base = write_config().parent
    first = validate_config({**raw, "secrets": {"A": {"env": "X"}}}, base_dir=base)
    second = validate_config({**raw, "secrets": {"A": {"env": "Y"}}}, base_dir=base)
    assert config_digest(first) == config_digest(second)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecretHyperparameterWarning)
        one = validate_config({**raw, "hyperparameters": {"token": "aaaa1"}}, base_dir=base)
        two = validate_config({**raw, "hyperparameters": {"token": "aaaa2"}}, base_dir=base)
    assert config_digest(one) != config_digest(two)


# --- the clouds: only references travel; the job resolves them ---------------------------

HASH_SCRIPT = """\
import hashlib, os, sys
value = os.environ.get("HF_TOKEN", "")
print(f"HF_TOKEN sha256={hashlib.sha256(value.encode()).hexdigest()} args={sys.argv[1:]}")
print("val_accuracy=0.9")
"""


def test_a_sagemaker_job_gets_references_and_its_launcher_reads_secrets_manager(
    aws_config: Callable[..., Path], aws: Any, lifecycle: Any, tmp_path: Path
) -> None:
    """The CreateTrainingJob moto received holds the reference, never the value; the code
    archive holds the launcher, which (run as SageMaker runs sagemaker_program, against
    moto's Secrets Manager) puts the value in the script's environment."""
    import io
    import os
    import subprocess
    import sys
    import tarfile

    import boto3
    from sagemaker_lifecycle import COMPLETED, model_archive
    from test_aws_training import created, train

    from cloudtrain.secrets_launcher import FILE_NAME

    boto3.client("secretsmanager").create_secret(Name="hf-token", SecretString=AWS_VALUE)
    lifecycle.script("a1", {**COMPLETED, "model": model_archive({"m": b"w"})})
    path = aws_config(retry={"max_attempts": 1})
    raw = yaml.safe_load(path.read_text())
    raw["secrets"] = {"HF_TOKEN": {"aws_secrets_manager": "hf-token"}}
    path.write_text(yaml.safe_dump(raw))
    (path.parent / "src" / "train.py").write_text(HASH_SCRIPT)
    result, _ = train(path)
    assert not isinstance(result, Exception)
    (request,) = created(aws)
    assert AWS_VALUE not in json.dumps(request)
    assert json.loads(request["Environment"]["CLOUDTRAIN_SECRETS"]) == {
        "HF_TOKEN": {"aws_secrets_manager": "hf-token"}
    }
    assert json.loads(request["HyperParameters"]["sagemaker_program"]) == FILE_NAME
    assert request["Environment"]["CLOUDTRAIN_ENTRY_POINT"] == "train.py"

    bucket, _, key = (
        json.loads(request["HyperParameters"]["sagemaker_submit_directory"])
        .removeprefix("s3://")
        .partition("/")
    )
    archive = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    code = tmp_path / "opt-ml-code"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(code, filter="data")
    job_env = {**os.environ, **request["Environment"]}
    done = subprocess.run(
        [sys.executable, FILE_NAME, "--epochs", "3"],
        cwd=code,
        env=job_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"HF_TOKEN sha256={digest(AWS_VALUE)} args=['--epochs', '3']" in done.stdout

    job_env["CLOUDTRAIN_SECRETS"] = json.dumps({"HF_TOKEN": {"aws_secrets_manager": "gone"}})
    missing = subprocess.run(
        [sys.executable, FILE_NAME], cwd=code, env=job_env, capture_output=True, text=True
    )
    assert missing.returncode == 2
    assert "cloudtrain: secrets.HF_TOKEN: cannot read it: ResourceNotFoundException" in (
        missing.stderr
    )


def test_an_azure_ml_job_gets_references_and_runs_the_launcher_first(
    tmp_path: Path, aws: Any
) -> None:
    """The command job's body (azure-ai-ml's serializer) holds the Key Vault reference and
    the launcher; its command, run by bash as Azure ML runs it, execs the script after
    the launcher (shown here with a Secrets Manager reference on moto: no Key Vault is
    reachable from this machine)."""
    import os
    import subprocess

    import boto3
    from test_azure_jobs import azure_config, body

    config = azure_config(tmp_path)
    raw = yaml.safe_load((tmp_path / "c.yaml").read_text())
    raw["secrets"] = {"HF_TOKEN": {"azure_key_vault": {"vault": "team-vault", "name": "hf"}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(tmp_path / "c.yaml")
    job = body(config, "cpu-cluster")
    env = job["environmentVariables"]
    assert json.loads(env["CLOUDTRAIN_SECRETS"]) == {
        "HF_TOKEN": {"azure_key_vault": {"vault": "team-vault", "name": "hf"}}
    }
    assert job["command"].split(" python ", 1)[1].startswith('-c "$CLOUDTRAIN_LAUNCHER" train.py')

    boto3.client("secretsmanager").create_secret(Name="hf-token", SecretString=AWS_VALUE)
    (tmp_path / "src" / "train.py").write_text(HASH_SCRIPT)
    bindings = {"inputs", "outputs"}
    command = job["command"]
    for binding in bindings:  # Azure ML fills these in; any folder will do here
        command = re.sub(r"\$\{\{" + binding + r"\.\w+\}\}", str(tmp_path), command)
    env["CLOUDTRAIN_SECRETS"] = json.dumps({"HF_TOKEN": {"aws_secrets_manager": "hf-token"}})
    done = subprocess.run(
        ["bash", "-c", command.replace(" python ", f" {sys.executable} ", 1)],
        cwd=tmp_path / "src",
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"HF_TOKEN sha256={digest(AWS_VALUE)} args=['--epochs', '3'" in done.stdout


def test_a_builtin_algorithm_takes_no_secrets(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        cloud="aws",
        environment={"framework": None, "builtin": "kmeans"},
        data={"train": "s3://my-bucket/train/"},
        secrets={"HF_TOKEN": {"aws_secrets_manager": "hf-token"}},
        aws={"role": "arn:aws:iam::123456789012:role/R", "bucket": "my-bucket"},
    )
    assert main(["plan", str(path)]) == 2
    assert "secrets: a built-in algorithm runs no script" in capsys.readouterr().err


def test_the_report_masks_secret_looking_hyperparameters(
    write_config: Callable[..., Path],
) -> None:
    """The issue's example: ``password`` and ``*_token`` were in clear in the report."""
    from cloudtrain.report import RunReport

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecretHyperparameterWarning)
        config = load_config(
            write_config(hyperparameters={"password": HP_VALUE, "hf_token": WANDB, "epochs": 4})
        )
    report = RunReport(config).markdown()
    assert HP_VALUE not in report and WANDB not in report
    assert f"`password={MASK}`, `hf_token={MASK}`, `epochs=4`" in report


def test_the_attempt_loop_masks_what_any_backend_forwards(
    write_config: Callable[..., Path],
) -> None:
    """A cloud's log lines and reasons (CloudWatch, Azure ML's log, a FailureReason) are
    masked by the attempt loop itself, whatever the backend does."""
    from dataclasses import replace

    from cloudtrain.backends.local.backend import LocalBackend
    from cloudtrain.errors import TrainingError
    from cloudtrain.results import AttemptStatus
    from cloudtrain.secrets import ResolvedSecrets
    from cloudtrain.training import run_training

    class Leaky(LocalBackend):
        def read_logs(self, handle: str) -> list[str]:
            return [f"cloud log {WANDB} {HP_VALUE}", *super().read_logs(handle)]

        def describe_attempt(self, handle: str) -> AttemptStatus:
            status = super().describe_attempt(handle)
            return replace(status, reason=f"{status.reason}: {WANDB}") if status.ended else status

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecretHyperparameterWarning)
        config = load_config(
            write_config("raise SystemExit(1)\n", hyperparameters={"api_key": HP_VALUE})
        )
    backend = Leaky.from_config(config)
    compute = backend.ensure_compute(config)
    lines: list[str] = []
    with pytest.raises(TrainingError) as caught:
        run_training(
            backend,
            config,
            run_id="0123456789abcdef",
            channels={},
            compute=compute,
            environment=backend.resolve_environment(config, compute),
            log=lines.append,
            secrets=ResolvedSecrets({"WANDB_API_KEY": WANDB}),
        )
    forwarded = "\n".join([*lines, str(caught.value), caught.value.result.attempts[0].reason])
    assert f"cloud log {MASK} {MASK}" in forwarded
    assert WANDB not in forwarded and HP_VALUE not in forwarded


def test_prefects_run_loggers_are_masked_while_a_run_lasts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Prefect's own masking takes only PREFECT_API_KEY; ours covers what Prefect logs
    itself during a run (a task's exception, a state message)."""
    import logging

    from cloudtrain.secrets import redacting_logs

    # A logger of our own: Prefect's run loggers send to the API only inside a run (the
    # flow test above reads what they sent).
    logger = logging.getLogger("cloudtrain.tests.run_logger")
    with caplog.at_level(logging.INFO, logger=logger.name):
        with redacting_logs(Redactor([WANDB]), loggers=[logger.name]):
            logger.error("Task run failed: ConfigError(%r)", WANDB)
        logger.error("after the run: %s", "kept")
    assert [r.getMessage() for r in caplog.records] == [
        f"Task run failed: ConfigError('{MASK}')",
        "after the run: kept",
    ]


@pytestmark_prefect
def test_an_aws_run_refuses_a_missing_secrets_manager_secret_before_anything_is_created(
    prefect_server: str, aws_config: Callable[..., Path], aws: Any
) -> None:
    """The job would read it; the run checks it exists (DescribeSecret, never the value)
    before any upload or job."""
    from flows.aws_training import aws_training

    path = aws_config(retry={"max_attempts": 1})
    raw = yaml.safe_load(path.read_text())
    raw["secrets"] = {"HF_TOKEN": {"aws_secrets_manager": "not-there"}}
    path.write_text(yaml.safe_dump(raw))
    aws.log.clear()  # the fixture made the bucket and the role
    with pytest.raises(ConfigError, match=r"secrets.HF_TOKEN: no secret 'not-there'"):
        aws_training(config=load_config(path))
    assert [entry.action for entry in aws.log.entries] == ["DescribeSecret"]
