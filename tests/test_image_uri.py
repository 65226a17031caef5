"""The image URIs ``plan`` and ``run`` compute without importing the SDK are the SDK's.

``image_uri.plain_uri`` composes a URI from sagemaker's bundled tables for the plain cases
and leaves the rest to ``sagemaker.core.image_uris``. Each test resolves the same
environments twice, once as cloudtrain does and once with ``plain_uri`` switched off, so
that the real ``retrieve`` / ``get_training_image_uri`` answers every call, and compares
the results: the URI, or the one-line error. The grid is every framework version and
alias and every built-in algorithm version cloudtrain accepts, on CPU, GPU, p2, p4d and
Trainium instance types, in a handful of regions (China, GovCloud, Israel among them), and
every training instance family.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import botocore.loaders
import pytest

from cloudtrain.backends.aws import image_uri
from cloudtrain.backends.aws.images import ResolvedImage, builtin_algorithms, resolve_image
from cloudtrain.backends.aws.instances import instance_family, training_instance_types
from cloudtrain.backends.aws.sdk import image_uri_config, image_uri_config_names
from cloudtrain.config import FRAMEWORKS, EnvironmentConfig
from cloudtrain.errors import CloudtrainError

INSTANCE_TYPES = (
    "ml.m5.large",
    "ml.c5.xlarge",
    "ml.g5.xlarge",
    "ml.p3.2xlarge",
    "ml.p4d.24xlarge",
    "ml.p2.xlarge",
    "ml.trn1.2xlarge",
)
REGIONS = (
    "eu-west-1",
    "ap-southeast-2",
    "cn-north-1",
    "us-gov-west-1",
    "il-central-1",
    "me-central-1",
)

Case = tuple[dict[str, str], str, str]  # environment, region, instance type


def versions(name: str) -> list[str]:
    """Every version and alias of ``name``'s training table (what a config may name)."""
    config = image_uri_config(name)
    training = config if "scope" in config else config["training"]
    return sorted({*training["versions"], *training.get("version_aliases", {})})


def framework_cases(framework: str) -> Iterator[Case]:
    names = versions(framework) + (versions("pytorch-neuron") if framework == "pytorch" else [])
    for version in [*names, None]:
        environment = {"framework": framework}
        if version is not None:
            environment["framework_version"] = version
        for instance_type in INSTANCE_TYPES:
            yield environment, "us-east-1", instance_type
        default = "ml.g5.xlarge" if framework == "huggingface" else "ml.m5.large"
        for region in REGIONS:
            yield environment, region, default


def builtin_cases(name: str) -> Iterator[Case]:
    for version in [*versions(name), None]:
        environment = {"builtin": f"{name}:{version}" if version else name}
        for instance_type in ("ml.m5.large", "ml.g5.xlarge", "ml.p4d.24xlarge", "ml.trn1.2xlarge"):
            yield environment, "us-east-1", instance_type
        for region in REGIONS:
            yield environment, region, "ml.m5.large"


def outcome(case: Case) -> Any:
    """The resolved image, or the error's field and message."""
    environment, region, instance_type = case
    try:
        return resolve_image(
            EnvironmentConfig(**environment), region=region, instance_type=instance_type
        )
    except CloudtrainError as exc:
        return (type(exc).__name__, getattr(exc, "field", None), str(exc))


@pytest.fixture(autouse=True)
def one_botocore_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK builds botocore's endpoint data anew on every call (~20-150 ms here); one
    shared loader (it caches what it read) keeps this grid of thousands of calls to
    seconds. The data and the answers are the same."""
    shared = botocore.loaders.create_loader()
    monkeypatch.setattr(botocore.loaders, "create_loader", lambda *args, **kwargs: shared)


def compare(cases: Iterable[Case], monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Assert both paths agree on every case; returns (URIs cloudtrain composed without the
    SDK, cases that resolved to a URI)."""
    cases = list(cases)
    original = image_uri.plain_uri
    composed: list[str] = []

    def recording(*args: Any) -> str | None:
        uri = original(*args)
        if uri is not None:
            composed.append(uri)
        return uri

    monkeypatch.setattr(image_uri, "plain_uri", recording)
    ours = [outcome(case) for case in cases]
    monkeypatch.setattr(image_uri, "plain_uri", lambda *args: None)  # the SDK answers all
    theirs = [outcome(case) for case in cases]
    mismatches = [
        f"{case}: cloudtrain {mine!r}\n    sdk {sdk!r}"
        for case, mine, sdk in zip(cases, ours, theirs, strict=True)
        if mine != sdk
    ]
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ:\n" + "\n".join(
        mismatches[:10]
    )
    return len(composed), sum(isinstance(result, ResolvedImage) for result in ours)


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_framework_images_are_the_sdks(framework: str, monkeypatch: pytest.MonkeyPatch) -> None:
    composed, resolved = compare(framework_cases(framework), monkeypatch)
    print(framework, composed, resolved)
    if framework == "huggingface":
        assert composed == 0  # its tags are the SDK's rule alone
    else:
        assert composed > resolved / 2  # most answers never imported the SDK


@pytest.mark.parametrize("name", sorted(builtin_algorithms()))
def test_builtin_images_are_the_sdks(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    composed, resolved = compare(builtin_cases(name), monkeypatch)
    print(name, composed, resolved)
    assert composed > resolved / 2


def test_every_training_instance_family_is_the_sdks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A family the SDK gives its own image or tag (p4d, Graviton, Neuron) is left to it."""
    families: dict[str, str] = {}
    for instance_type in sorted(training_instance_types()):
        families.setdefault(instance_family(instance_type), instance_type)
    cases = [
        (environment, "us-east-1", instance_type)
        for instance_type in families.values()
        for environment in (
            {"framework": "sklearn", "framework_version": "1.2"},
            {"framework": "pytorch", "framework_version": "2.3"},
            {"framework": "tensorflow", "framework_version": "2.16"},
            {"framework": "xgboost", "framework_version": "1.7"},
            {"builtin": "kmeans"},
        )
    ]
    composed, resolved = compare(cases, monkeypatch)
    print(composed, resolved)
    assert composed > resolved / 2


def test_builtin_algorithms_are_the_ones_the_sdks_own_listing_gives() -> None:
    from sagemaker.core import image_uris

    def algorithm(name: str) -> bool:
        config = image_uris.config_for_framework(name)
        return {"training", "inference"} <= set(config.get("scope", ())) and not any(
            "py_versions" in version for version in config["versions"].values()
        )

    expected = {"xgboost"} | {name for name in image_uris.list_frameworks() if algorithm(name)}
    assert builtin_algorithms() == expected


def test_ecr_hostnames_are_what_botocores_endpoint_resolver_gives() -> None:
    """The SDK's way (``EndpointResolver`` over endpoints.json, and its il-central-1
    fallback) for every region any of sagemaker's tables publishes an image in."""
    from botocore.regions import EndpointResolver

    resolver = EndpointResolver(botocore.loaders.create_loader().load_data("endpoints"))
    regions: set[str] = set()

    def collect(table: Any) -> None:
        if isinstance(table, dict):
            regions.update(table.get("registries", {}) if "repository" in table else ())
            for value in table.values():
                collect(value)

    for name in image_uri_config_names():
        collect(image_uri_config(name))
    assert {"us-east-1", "cn-north-1", "us-gov-west-1", "us-iso-east-1", "il-central-1"} <= regions
    for region in sorted(regions):
        endpoint = resolver.construct_endpoint("ecr", region)
        if not endpoint and region == "il-central-1":
            endpoint = {"hostname": f"ecr.{region}.amazonaws.com"}
        assert image_uri.ecr_hostname(region) == (endpoint or {}).get("hostname"), region
    assert image_uri.ecr_hostname("xx-nowhere-1") is None


def test_the_plain_path_answers_the_common_cases_alone() -> None:
    training = image_uri_config("sklearn")["training"]
    assert (
        image_uri.plain_uri(training, "us-east-1", "1.2-1", "py3", "ml.m5.large")
        == "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
    )
    kmeans = image_uri_config("kmeans")
    assert (
        image_uri.plain_uri(kmeans, "cn-north-1", "1", None, "ml.m5.large")
        == "390948362332.dkr.ecr.cn-north-1.amazonaws.com.cn/kmeans:1"
    )


@pytest.mark.parametrize(
    ("change", "instance_type"),
    [
        ({"container_version": {"cpu": "cu121"}}, "ml.m5.large"),  # a key it does not know
        ({"processor_in_tag": False}, "ml.m5.large"),
        ({}, "ml.p4d.24xlarge"),  # the SDK may add a CUDA suffix
        ({}, "ml.trn1.2xlarge"),  # Neuron images
        ({"registries": {}}, "ml.m5.large"),  # not in this region: the SDK's error
    ],
)
def test_the_plain_path_leaves_the_rest_to_the_sdk(
    change: dict[str, Any], instance_type: str
) -> None:
    training = image_uri_config("pytorch")["training"]
    assert image_uri.plain_uri(training, "us-east-1", "2.3", "py311", "ml.m5.large")
    training["versions"]["2.3.0"].update(change)
    assert image_uri.plain_uri(training, "us-east-1", "2.3", "py311", instance_type) is None


def test_an_image_built_for_one_instance_family_is_left_to_the_sdk() -> None:
    training = image_uri_config("pytorch")["training"]
    assert image_uri.plain_uri(training, "us-east-1", "2.3", "py311", "ml.c5.xlarge")
    training["processors"] = ["cpu", "gpu", "c5"]
    assert image_uri.plain_uri(training, "us-east-1", "2.3", "py311", "ml.c5.xlarge") is None
