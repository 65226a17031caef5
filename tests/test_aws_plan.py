"""The CreateTrainingJob requests `plan` prints, per environment kind; pure, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudtrain.backends.aws.backend import AwsBackend
from cloudtrain.backends.aws.training_job import validate_request
from cloudtrain.config import load_config
from cloudtrain.errors import ConfigError
from cloudtrain.planning import plan


def plan_for(tmp_path: Path, environment: dict[str, Any], **compute: Any) -> dict[str, Any]:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "train.py").write_text("print('acc=1')\n")
    raw = {
        "name": "plan",
        "cloud": "aws",
        "code": {"source_dir": "src", "entry_point": "train.py"},
        "hyperparameters": {"k": 10, "mode": "fast", "flag": True},
        "data": {"train": "s3://shared-bucket/datasets/train/"},
        "metrics": ["acc"],
        "environment": environment,
        "compute": {"instance_type": "ml.m5.large", "spot": True, "max_run": 100, **compute},
        "retry": {"max_attempts": 2},
        "aws": {"role": "arn:aws:iam::123456789012:role/R", "bucket": "my-bucket"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(tmp_path / "c.yaml")
    return plan(AwsBackend(config), config)


def requests(planned: dict[str, Any]) -> list[dict[str, Any]]:
    """The CreateTrainingJob request of every attempt, in order."""
    return [attempt["request"] for attempt in planned["attempts"]]


def test_framework_requests_are_script_mode_with_json_values(tmp_path: Path) -> None:
    planned = plan_for(tmp_path, {"framework": "sklearn", "framework_version": "1.2"})
    first, fallback = requests(planned)
    hps = first["HyperParameters"]
    assert (hps["k"], hps["mode"], hps["flag"]) == ("10", '"fast"', "true")
    assert json.loads(hps["sagemaker_program"]) == "train.py"
    assert (
        first["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
        == "s3://shared-bucket/datasets/train/"
    )
    assert first["StoppingCondition"] == {"MaxRuntimeInSeconds": 100, "MaxWaitTimeInSeconds": 100}
    assert fallback["EnableManagedSpotTraining"] is False
    assert planned["uploads"]["code"]["to"].startswith("s3://my-bucket/cloudtrain/plan/code/")
    assert "train" not in planned["uploads"]  # an s3:// channel is used as it is


def test_builtin_requests_carry_no_script_and_no_metric_definitions(tmp_path: Path) -> None:
    planned = plan_for(tmp_path, {"builtin": "kmeans"})
    request = requests(planned)[0]
    assert (
        request["AlgorithmSpecification"]["TrainingImage"]
        == "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1"
    )
    assert "MetricDefinitions" not in request["AlgorithmSpecification"]
    assert "Environment" not in request
    assert request["HyperParameters"] == {"k": "10", "mode": "fast", "flag": "True"}
    assert "code" not in planned["uploads"]


def test_byoc_requests_run_the_script_with_plain_values(tmp_path: Path) -> None:
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/train:1.0"
    request = requests(plan_for(tmp_path, {"image": image}))[0]
    assert request["AlgorithmSpecification"]["TrainingImage"] == image
    hps = request["HyperParameters"]
    assert (hps["k"], hps["mode"]) == ("10", "fast")
    assert json.loads(hps["sagemaker_program"]) == "train.py"
    assert request["Environment"]["SM_CHECKPOINT_DIR"] == "/opt/ml/checkpoints"


def test_a_gpu_instance_gets_the_gpu_image(tmp_path: Path) -> None:
    request = requests(
        plan_for(tmp_path, {"framework": "pytorch"}, instance_type="ml.g4dn.xlarge")
    )[0]
    assert "-gpu-" in request["AlgorithmSpecification"]["TrainingImage"]


def test_botocore_validation_refuses_a_malformed_request() -> None:
    with pytest.raises(ConfigError, match="the CreateTrainingJob request is invalid"):
        validate_request(
            {"TrainingJobName": "x", "AlgorithmSpecification": {"TrainingInputMode": "File"}}
        )


def test_the_service_model_is_the_one_a_botocore_session_reads() -> None:
    """limits.sagemaker_model reads it with botocore's loader, without a session."""
    import botocore.session

    from cloudtrain.backends.aws.limits import sagemaker_model

    session_model = botocore.session.get_session().get_service_model("sagemaker")
    ours = sagemaker_model()
    assert ours.metadata == session_model.metadata
    assert ours.operation_names == session_model.operation_names
    request = ours.operation_model("CreateTrainingJob").input_shape
    assert request.members.keys() == (
        session_model.operation_model("CreateTrainingJob").input_shape.members.keys()
    )
