"""SageMaker compute and environment checks: instance types, images, ECR, spot cost."""

from __future__ import annotations

import json
import socket

import boto3
import pytest
from moto_server import ACCOUNT_ID, REGION, MotoServer

from cloudtrain.backends.aws import clients as clients_module
from cloudtrain.backends.aws.clients import AwsClients
from cloudtrain.backends.aws.images import (
    EcrImage,
    builtin_algorithms,
    check_ecr_image,
    parse_ecr_uri,
    resolve_image,
)
from cloudtrain.backends.aws.instances import (
    accelerator,
    check_training_instance,
    training_instance_types,
)
from cloudtrain.backends.aws.pricing import (
    ON_DEMAND_USD_PER_HOUR,
    PRICES_AS_OF,
    estimate_cost,
)
from cloudtrain.config import EnvironmentConfig
from cloudtrain.errors import ConfigError, UnsupportedError

REGISTRY = f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com"
DIGEST = "sha256:" + "ab" * 32


def resolve(region: str = REGION, instance_type: str = "ml.m5.large", **environment: str):
    return resolve_image(
        EnvironmentConfig(**environment), region=region, instance_type=instance_type
    )


# --- instance types ---------------------------------------------------------------------------


def test_instance_types_come_from_botocore_training_enum() -> None:
    types = training_instance_types()
    assert {"ml.m5.large", "ml.c5.xlarge", "ml.p3.2xlarge", "ml.g4dn.xlarge"} <= types
    assert "ml.t2.medium" not in types  # notebook-only
    assert not any(t.startswith(("ml.t2.", "ml.t3.")) for t in types)  # notebook families


@pytest.mark.parametrize("instance_type", ["ml.m5.large", "ml.c5.2xlarge", "ml.g5.xlarge"])
def test_training_types_pass(instance_type: str) -> None:
    check_training_instance(instance_type)


@pytest.mark.parametrize(
    "instance_type", ["ml.t3.medium", "ml.t3.large", "ml.t2.medium", "ml.t3.2xlarge", "ML.T3.LARGE"]
)
def test_notebook_types_are_refused_for_training(instance_type: str) -> None:
    """SageMaker's compute guidance: t3/t2 are for notebooks; training needs m5, c5, p3,
    g4dn or newer. botocore's enum lists ml.t3.*, so this is cloudtrain's own rule."""
    with pytest.raises(ConfigError) as caught:
        check_training_instance(instance_type)
    assert caught.value.field == "compute.instance_type"
    assert caught.value.message.startswith(
        f"{instance_type} is a notebook instance type, not one for training jobs: SageMaker "
        "training needs the m5, c5, p3 or g4dn families or newer ones"
    )
    assert "ml.m5.large" in caught.value.message


def test_a_typo_of_a_training_type_is_never_answered_with_a_notebook_type() -> None:
    with pytest.raises(ConfigError) as caught:
        check_training_instance("ml.t4.medium")
    assert "ml.t3" not in caught.value.message and "ml.t2" not in caught.value.message


@pytest.mark.parametrize(
    ("instance_type", "suggestion"),
    [
        ("ml.m5.larg", "ml.m5.large"),  # typo
        ("m5.large", "ml.m5.large"),  # missing prefix
        ("ML.M5.XLARGE", "ml.m5.xlarge"),
    ],
)
def test_non_training_types_are_refused_with_a_close_match(
    instance_type: str, suggestion: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_training_instance(instance_type)
    assert caught.value.field == "compute.instance_type"
    assert "not a SageMaker training instance type" in caught.value.message
    assert f"did you mean {suggestion!r}" in caught.value.message


def test_refusal_names_the_field_it_was_given_and_lists_sizes() -> None:
    with pytest.raises(ConfigError) as caught:
        check_training_instance("ml.p3.xlarge", field="retry.fallback_instance_type")
    assert caught.value.field == "retry.fallback_instance_type"
    assert "ml.p3 sizes: 2xlarge, 8xlarge, 16xlarge" in caught.value.message


def test_azure_vm_size_is_refused_with_the_training_families() -> None:
    with pytest.raises(ConfigError, match="Azure VM size.*ml.m5.\\*"):
        check_training_instance("Standard_DS3_v2")


@pytest.mark.parametrize(
    ("instance_type", "expected"),
    [
        ("ml.p3.2xlarge", "gpu"),
        ("ml.g4dn.xlarge", "gpu"),
        ("ml.g5.12xlarge", "gpu"),
        ("ml.p6-b200.48xlarge", "gpu"),
        ("ml.m5.large", "cpu"),
        ("ml.c5.xlarge", "cpu"),
        ("ml.t3.medium", "cpu"),
        ("ml.trn1.2xlarge", "neuron"),
    ],
)
def test_accelerator(instance_type: str, expected: str) -> None:
    assert accelerator(instance_type) == expected


def test_accelerator_agrees_with_sagemakers_gpu_table() -> None:
    from sagemaker.core import image_uris

    gpu_info = image_uris.config_for_framework("instance_gpu_info")[REGION]
    training_gpus = set(gpu_info) & training_instance_types()
    assert training_gpus  # the comparison below must compare something
    assert {t for t in training_gpus if accelerator(t) != "gpu"} == set()


# --- framework images -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "account"), [("us-east-1", "683313688378"), ("eu-west-1", "141502667606")]
)
def test_sklearn_short_version_maps_to_the_sdk_image(region: str, account: str) -> None:
    image = resolve(region, framework="sklearn", framework_version="1.2")
    assert image.uri == (
        f"{account}.dkr.ecr.{region}.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
    )
    assert (image.kind, image.name, image.version, image.processor) == (
        "framework",
        "sklearn",
        "1.2-1",
        "cpu",
    )
    assert image.script_mode and image.warnings == ()


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
@pytest.mark.parametrize(
    ("instance_type", "processor"), [("ml.g4dn.xlarge", "gpu"), ("ml.m5.xlarge", "cpu")]
)
def test_pytorch_processor_follows_the_instance_type(
    region: str, instance_type: str, processor: str
) -> None:
    image = resolve(region, instance_type, framework="pytorch", framework_version="2.3")
    registry, _, repository = image.uri.partition("/")
    assert registry == f"763104351884.dkr.ecr.{region}.amazonaws.com"
    assert repository.startswith("pytorch-training:2.3-")
    assert f"-{processor}-" in repository
    assert image.processor == processor


def test_framework_uri_is_what_image_uris_returns() -> None:
    from sagemaker.core import image_uris

    image = resolve("eu-west-1", "ml.p3.2xlarge", framework="tensorflow", framework_version="2.16")
    assert image.uri == image_uris.retrieve(
        "tensorflow",
        "eu-west-1",
        version="2.16",
        py_version="py310",
        instance_type="ml.p3.2xlarge",
        image_scope="training",
    )


def test_a_version_split_by_python_version_takes_the_newest_python() -> None:
    """tensorflow 1.13's table holds a py2 and a py3 image; it was a KeyError."""
    image = resolve(framework="tensorflow", framework_version="1.13")
    assert (
        image.uri == "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:1.13-cpu-py3"
    )


def test_missing_framework_version_picks_the_newest_and_warns() -> None:
    image = resolve(framework="sklearn")
    assert image.version == "1.9-0"
    assert ":1.9-0-cpu-py3" in image.uri
    assert len(image.warnings) == 1
    assert image.warnings[0].startswith("environment.framework_version: not set")


def test_unknown_framework_version_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(framework="sklearn", framework_version="1.3")
    assert caught.value.field == "environment.framework_version"
    assert "unknown sklearn version '1.3'" in caught.value.message
    assert "valid: 0.20.0, 0.23-1, 1.0-1, 1.2-1, 1.4-2" in caught.value.message


def test_unknown_version_suggests_the_same_minor_release() -> None:
    with pytest.raises(ConfigError, match=r"did you mean '1\.2-1'\?"):
        resolve(framework="sklearn", framework_version="1.2.0")


def test_exact_variant_version_is_used_as_written() -> None:
    image = resolve(framework="sklearn", framework_version="1.4-2-py312")
    assert image.version == "1.4-2-py312"
    assert image.uri.endswith("/sagemaker-scikit-learn:1.4-2-py312-cpu-py3")


def test_trainium_takes_the_neuron_pytorch_image_and_nothing_else() -> None:
    image = resolve(instance_type="ml.trn1.2xlarge", framework="pytorch", framework_version="1.11")
    assert "/pytorch-training-neuron:1.11-neuron-" in image.uri
    assert image.processor == "trn"
    with pytest.raises(ConfigError, match="runs pytorch framework images only") as caught:
        resolve(instance_type="ml.trn1.2xlarge", framework="tensorflow", framework_version="2.16")
    assert caught.value.field == "compute.instance_type"


def test_cpu_only_framework_on_a_gpu_type_names_the_instance_type() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(instance_type="ml.p3.2xlarge", framework="sklearn", framework_version="1.2")
    assert caught.value.field == "compute.instance_type"
    assert "cpu training images only" in caught.value.message


def test_xgboost_framework_image_serves_cpu_and_gpu() -> None:
    cpu = resolve(framework="xgboost", framework_version="1.7")
    gpu = resolve(instance_type="ml.g4dn.xlarge", framework="xgboost", framework_version="1.7")
    assert (
        cpu.uri == gpu.uri == "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
    )
    assert cpu.processor is None


def test_huggingface_picks_a_pytorch_base_and_needs_a_gpu() -> None:
    image = resolve(instance_type="ml.g5.xlarge", framework="huggingface", framework_version="4.56")
    assert "/huggingface-pytorch-training:" in image.uri
    assert "-transformers4.56.2-gpu-" in image.uri
    with pytest.raises(ConfigError, match="gpu training images only") as caught:
        resolve(instance_type="ml.m5.xlarge", framework="huggingface", framework_version="4.56")
    assert caught.value.field == "compute.instance_type"


def test_region_without_the_image_names_aws_region() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve("us-eats-1", framework="sklearn", framework_version="1.2")
    assert caught.value.field == "aws.region"
    assert "did you mean 'us-east-1'?" in caught.value.message


def test_curated_environment_is_azure_only() -> None:
    with pytest.raises(UnsupportedError) as caught:
        resolve(curated="AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@44")
    assert caught.value.field == "environment.curated"
    assert "Azure ML only" in caught.value.message


# --- built-in algorithms ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("builtin", "region", "uri"),
    [
        ("kmeans", "us-east-1", "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1"),
        ("kmeans", "eu-west-1", "438346466558.dkr.ecr.eu-west-1.amazonaws.com/kmeans:1"),
        (
            "linear-learner",
            "us-east-1",
            "382416733822.dkr.ecr.us-east-1.amazonaws.com/linear-learner:1",
        ),
        (
            "xgboost:1.7-1",
            "us-east-1",
            "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
        ),
    ],
)
def test_builtin_algorithm_uris(builtin: str, region: str, uri: str) -> None:
    image = resolve(region, builtin=builtin)
    assert image.uri == uri
    assert image.kind == "builtin"
    assert not image.script_mode
    assert image.warnings == ()


def test_builtin_xgboost_without_a_version_warns() -> None:
    image = resolve(builtin="xgboost")
    assert "/sagemaker-xgboost:" in image.uri
    assert image.warnings and f"xgboost:{image.version}" in image.warnings[0]


def test_builtin_algorithms_exclude_frameworks() -> None:
    names = builtin_algorithms()
    assert {"kmeans", "linear-learner", "xgboost", "pca", "blazingtext"} <= names
    assert not names & {"sklearn", "pytorch", "chainer", "vw", "debugger"}


@pytest.mark.parametrize(
    ("builtin", "close"), [("kmean", "kmeans"), ("linear_learner", "linear-learner")]
)
def test_unknown_builtin_lists_close_matches(builtin: str, close: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(builtin=builtin)
    assert caught.value.field == "environment.builtin"
    assert f"unknown built-in algorithm {builtin!r}" in caught.value.message
    assert f"(did you mean {close!r}?)" in caught.value.message


def test_framework_named_as_builtin_points_to_framework() -> None:
    with pytest.raises(ConfigError, match="set environment.framework: sklearn"):
        resolve(builtin="sklearn")


# --- bring your own container: URI form -------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (f"{REGISTRY}/train:1.0", EcrImage(ACCOUNT_ID, REGION, "train", "1.0", None)),
        (
            f"{REGISTRY}/team/train-x:v2_rc.1",
            EcrImage(ACCOUNT_ID, REGION, "team/train-x", "v2_rc.1", None),
        ),
        (f"{REGISTRY}/train@{DIGEST}", EcrImage(ACCOUNT_ID, REGION, "train", None, DIGEST)),
        (f"{REGISTRY}/train", EcrImage(ACCOUNT_ID, REGION, "train", None, None)),
        (
            f"{ACCOUNT_ID}.dkr.ecr.cn-north-1.amazonaws.com.cn/train:1",
            EcrImage(ACCOUNT_ID, "cn-north-1", "train", "1", None),
        ),
    ],
)
def test_valid_ecr_uris(uri: str, expected: EcrImage) -> None:
    assert parse_ecr_uri(uri) == expected
    assert expected.uri == uri


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        (f"https://{REGISTRY}/train:1.0", "drop the scheme"),
        (f"12345678901.dkr.ecr.{REGION}.amazonaws.com/train:1.0", "12-digit account"),
        ("docker.io/library/python:3.11", "private Amazon ECR"),
        ("public.ecr.aws/lambda/python:3.11", "private Amazon ECR"),
        (f"{REGISTRY}", "no repository"),
        (f"{REGISTRY}/:1.0", "no repository"),
        (f"{REGISTRY}/Train:1.0", "not a valid repository name"),
        (f"{REGISTRY}/train:", "not a valid tag"),
        (f"{REGISTRY}/train:-bad", "not a valid tag"),
        (f"{REGISTRY}/train@sha256:abc", "64 lowercase hex"),
        (f"{REGISTRY}/train:1.0@{DIGEST}", "not both"),
        (f"{ACCOUNT_ID}.dkr.ecr.cn-north-1.amazonaws.com/train:1", "amazonaws.com.cn"),
    ],
)
def test_bad_ecr_uris_name_the_field(uri: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_ecr_uri(uri, field="environment.image")
    assert caught.value.field == "environment.image"
    assert reason in caught.value.message
    assert "<12-digit account>.dkr.ecr.<region>" in caught.value.message


def test_own_image_is_used_as_is_and_untagged_warns() -> None:
    pinned = resolve(image=f"{REGISTRY}/train:1.0")
    assert (pinned.uri, pinned.kind, pinned.name, pinned.version) == (
        f"{REGISTRY}/train:1.0",
        "image",
        "train",
        "1.0",
    )
    assert pinned.warnings == ()
    untagged = resolve(image=f"{REGISTRY}/train")
    assert "':latest'" in untagged.warnings[0]


def test_own_image_in_another_region_is_refused() -> None:
    with pytest.raises(ConfigError, match="does not pull images across regions") as caught:
        resolve("eu-west-1", image=f"{REGISTRY}/train:1.0")
    assert caught.value.field == "environment.image"


# --- bring your own container: ECR against moto -----------------------------------------------


@pytest.fixture
def ecr_clients(aws: MotoServer) -> AwsClients:
    """AwsClients on moto, with repository 'train' holding tags 1.0 and 1.1."""
    clients = AwsClients(boto3.Session(region_name=REGION))
    ecr = clients.client("ecr")
    ecr.create_repository(repositoryName="train")
    for tag in ("1.0", "1.1"):
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"digest": "sha256:" + tag.replace(".", "") * 32, "size": 1},
            "layers": [],
        }
        ecr.put_image(repositoryName="train", imageManifest=json.dumps(manifest), imageTag=tag)
    aws.log.clear()
    return clients


def test_existing_image_passes_and_asks_ecr(ecr_clients: AwsClients, aws: MotoServer) -> None:
    assert check_ecr_image(ecr_clients, parse_ecr_uri(f"{REGISTRY}/train:1.0")) is None
    [call] = aws.log.actions("DescribeImages")
    assert call.json() == {
        "registryId": ACCOUNT_ID,
        "repositoryName": "train",
        "imageIds": [{"imageTag": "1.0"}],
    }


def test_missing_repository_is_refused(ecr_clients: AwsClients) -> None:
    with pytest.raises(ConfigError) as caught:
        check_ecr_image(ecr_clients, parse_ecr_uri(f"{REGISTRY}/nope:1.0"))
    assert caught.value.field == "environment.image"
    assert "repository 'nope' does not exist" in caught.value.message


def test_missing_tag_is_refused_with_the_tags_that_exist(ecr_clients: AwsClients) -> None:
    with pytest.raises(ConfigError) as caught:
        check_ecr_image(ecr_clients, parse_ecr_uri(f"{REGISTRY}/train:1.2"))
    assert caught.value.field == "environment.image"
    assert "has no image with tag '1.2'" in caught.value.message
    assert "tags: 1.0, 1.1" in caught.value.message


def test_untagged_uri_is_checked_as_latest(ecr_clients: AwsClients) -> None:
    with pytest.raises(ConfigError, match="tag 'latest'"):
        check_ecr_image(ecr_clients, parse_ecr_uri(f"{REGISTRY}/train"))


def test_unreachable_registry_warns_instead_of_failing(
    aws: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clients_module, "BOTOCORE_RETRIES", {"mode": "standard", "max_attempts": 1})
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    clients = AwsClients(boto3.Session(region_name=REGION), endpoint_url=closed)
    warning = check_ecr_image(clients, parse_ecr_uri(f"{REGISTRY}/train:1.0"))
    assert warning is not None
    assert warning.startswith("environment.image: could not reach ECR")


# --- spot savings -------------------------------------------------------------------------------


def test_spot_saving_in_percent_and_dollars() -> None:
    cost = estimate_cost("ml.m5.xlarge", 2, training_seconds=3600, billable_seconds=1200)
    assert cost is not None
    price = ON_DEMAND_USD_PER_HOUR["ml.m5.xlarge"]
    assert cost.saved_percent == pytest.approx(66.667, abs=0.001)
    assert cost.on_demand_usd == pytest.approx(2 * price)
    assert cost.billed_usd == pytest.approx(2 * price / 3)
    assert cost.saved_usd == pytest.approx(2 * price * 2 / 3)
    assert cost.prices_as_of == PRICES_AS_OF


def test_on_demand_job_saves_nothing() -> None:
    cost = estimate_cost("ml.g4dn.xlarge", 1, training_seconds=900, billable_seconds=900)
    assert cost is not None
    assert (cost.saved_usd, cost.saved_percent) == (0, 0)


def test_unpriced_type_has_no_estimate() -> None:
    assert estimate_cost("ml.r5.large", 1, 100, 50) is None


def test_price_table_covers_training_types_only() -> None:
    families = {name.split(".")[1] for name in ON_DEMAND_USD_PER_HOUR}
    assert {"m5", "c5", "p3", "g4dn", "g5"} <= families
    assert set(ON_DEMAND_USD_PER_HOUR) <= training_instance_types()
    assert all(price > 0 for price in ON_DEMAND_USD_PER_HOUR.values())
