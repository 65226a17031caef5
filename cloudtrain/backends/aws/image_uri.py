"""The training image URI sagemaker's ``image_uris`` would return, without importing it when
the answer is plain.

``from sagemaker.core import image_uris`` costs ~1.9 s (the package's ``__init__`` and the
module's own imports pull JumpStart, the API shapes, processing and pandas), most of
``cloudtrain plan --cloud aws``. For the common case the SDK's answer is a plain join over its
bundled tables: ``{registry}.dkr.{ECR hostname}/{repository}:{tag prefix}-{cpu|gpu}-{py}``.
``plain_uri`` composes that from the same tables (read by ``sdk.image_uri_config``) and the
same ECR hostname (from botocore's partition data), and answers None for anything else: a table
key it does not know, a container version, Hugging Face, AWS Neuron, p2/p4d (the SDK
special-cases those), a region or version the table lacks. Then the SDK itself is imported
and asked, so its rules, messages and errors stay the answer. tests/test_image_uri.py
compares both paths over every framework version and built-in algorithm cloudtrain accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cloudtrain.backends.aws.instances import accelerator, instance_family

#: Keys of a version's table entry that ``plain_uri`` understands; any other one (a
#: ``container_version``, ``sdk_versions``, ``processor_in_tag``, a table nested by Python
#: version or base framework) means the SDK has a rule for it, so the SDK answers.
PLAIN_VERSION_KEYS = frozenset(
    {"registries", "repository", "py_versions", "tag_prefix", "processors"}
)
#: Keys of a scope's table (``training``, or an algorithm's whole table) ``plain_uri`` reads.
PLAIN_SCOPE_KEYS = frozenset({"versions", "version_aliases", "processors", "scope"})
#: Instance families the SDK's tag rules treat specially: p2 is refused for newer PyTorch
#: and TensorFlow, p4d may get a CUDA container suffix.
SDK_FAMILIES = frozenset({"p2", "p4d"})


def framework_training_uri(
    framework: str,
    region: str,
    *,
    version: str,
    py_version: str | None,
    instance_type: str,
    scope: Mapping[str, Any],
    base: Mapping[str, str] | None = None,
) -> str:
    """``image_uris.get_training_image_uri(region, framework, version, py_version,
    instance_type=..., **base)``; ``scope`` is the framework's ``training`` table.

    Raises the SDK's ValueError for a combination it refuses.
    """
    if framework != "huggingface" and not base:
        uri = plain_uri(scope, region, version, py_version, instance_type)
        if uri is not None:
            return uri
    from sagemaker.core import image_uris

    uri = image_uris.get_training_image_uri(
        region=region,
        framework=framework,
        framework_version=version,
        py_version=py_version,
        instance_type=instance_type,
        **dict(base or {}),
    )
    return str(uri)


def algorithm_training_uri(
    name: str, region: str, *, version: str, instance_type: str, scope: Mapping[str, Any]
) -> str:
    """``image_uris.retrieve(name, region, version=..., image_scope="training",
    instance_type=...)`` for a built-in algorithm; ``scope`` is its training table."""
    uri = plain_uri(scope, region, version, None, instance_type)
    if uri is not None:
        return uri
    from sagemaker.core import image_uris

    return str(
        image_uris.retrieve(
            name, region, version=version, image_scope="training", instance_type=instance_type
        )
    )


def plain_uri(
    scope: Mapping[str, Any],
    region: str,
    version: str,
    py_version: str | None,
    instance_type: str,
) -> str | None:
    """The SDK's URI for a plain table entry, or None when the SDK must be asked."""
    family = instance_family(instance_type)
    if not family or family in SDK_FAMILIES or accelerator(instance_type) == "neuron":
        return None
    if not set(scope) <= PLAIN_SCOPE_KEYS:
        return None
    versions: Mapping[str, Any] = scope["versions"]
    aliases: Mapping[str, str] = scope.get("version_aliases", {})
    if len(versions) == 1 and version not in aliases:
        version = next(iter(versions))  # the SDK ignores the version of a one-version table
    entry = versions.get(aliases.get(version, version))
    if not isinstance(entry, Mapping) or not set(entry) <= PLAIN_VERSION_KEYS:
        return None
    py_versions = entry.get("py_versions") or []
    if not py_versions:
        py_version = None
    elif py_version is None and len(py_versions) == 1:
        py_version = py_versions[0]
    elif py_version not in py_versions:
        return None
    registry = entry["registries"].get(region)
    hostname = ecr_hostname(region)
    if registry is None or hostname is None:
        return None
    processors = scope.get("processors") or entry.get("processors")
    processor: str | None = None
    if processors:
        if family in processors:
            return None  # an image built for this family: the SDK's rule
        processor = "gpu" if family[0] in ("g", "p") else "cpu"
        if processor not in processors:
            return None
    tag = "-".join(
        part for part in (entry.get("tag_prefix", version), processor, py_version) if part
    )
    repository = entry["repository"] + (f":{tag}" if tag else "")
    return f"{registry}.dkr.{hostname}/{repository}"


@lru_cache(maxsize=64)
def ecr_hostname(region: str) -> str | None:
    """ECR's hostname in ``region`` (``ecr.us-east-1.amazonaws.com``,
    ``ecr.cn-north-1.amazonaws.com.cn``), or None for a region of no known partition.

    The SDK asks botocore's ``EndpointResolver`` over ``endpoints.json`` (1.2 MB, ~30 ms to
    parse); ECR there is ``{service}.{region}.{dnsSuffix}`` in every partition, so the
    partition's DNS suffix from botocore's ``partitions.json`` (7 KB) gives the same name.
    tests/test_image_uri.py compares both for every region of sagemaker's tables.
    """
    for partition in _partitions():
        if region in partition["regions"] or re.fullmatch(partition["regionRegex"], region):
            return f"ecr.{region}.{partition['outputs']['dnsSuffix']}"
    return None


@lru_cache(maxsize=1)
def _partitions() -> list[dict[str, Any]]:
    """botocore's partitions (id, region pattern, DNS suffix), from its bundled data."""
    import botocore.loaders

    partitions: list[dict[str, Any]] = botocore.loaders.create_loader().load_data("partitions")[
        "partitions"
    ]
    return partitions
