"""Turn ``environment:`` into the training image SageMaker pulls, or a one-line error.

Framework and built-in images come from sagemaker's own bundled JSON tables (which
versions, Python versions, processors and regions exist) and its ``image_uris`` rules, so
the answer is the one the SDK's estimators give, offline. Bring-your-own images must be private ECR
URIs in the job's region (SageMaker refuses cross-region pulls); whether the repository
and tag exist is a separate network check, ``check_ecr_image``.

``sagemaker.core.image_uris`` costs about 1.9 s to import, so the tables are read without it
(``sdk.image_uri_config``) and the URI is composed by ``image_uri``, which imports the SDK
only for the cases its plain rule does not cover (Hugging Face, AWS Neuron, ...).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from cloudtrain.backends.aws.errors import DENIED_CODES, error_code
from cloudtrain.backends.aws.image_uri import algorithm_training_uri, framework_training_uri
from cloudtrain.backends.aws.instances import accelerator
from cloudtrain.backends.aws.sdk import image_uri_config, image_uri_config_names
from cloudtrain.config import FRAMEWORKS, unknown_name_message
from cloudtrain.errors import BackendError, ConfigError, UnsupportedError, quote

if TYPE_CHECKING:
    from cloudtrain.backends.aws.clients import AwsClients
    from cloudtrain.config import EnvironmentConfig

#: xgboost's version "1" (alias "latest") is the legacy algorithm image: it runs no script.
_LEGACY_XGBOOST = ("1", "latest")
#: Versions such as "2.3.0" or "1.2-1"; variants like "1.4-2-py312" are only used by name.
_PLAIN_VERSION = re.compile(r"\d+(\.\d+)*(-\d+)?")

ECR_FORM = "<12-digit account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag|@sha256:<digest>]"
_ECR_HOST = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d{1,2})"
    r"\.amazonaws\.com(?P<cn>\.cn)?"
)
#: botocore's pattern for ECR RepositoryName (2 to 256 characters).
_REPOSITORY = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*")
#: Docker's tag grammar (ECR allows up to 300 characters, Docker clients 128).
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class ResolvedImage:
    """The training image and how it was chosen.

    ``script_mode`` is true when the job runs ``code.entry_point`` inside the image
    (framework and bring-your-own images); built-in algorithms run their own code.
    ``processor`` is the image's processor token (cpu, gpu, trn), or None when one image
    serves every instance type or is not known (bring-your-own).
    """

    uri: str
    kind: str
    name: str
    version: str | None
    processor: str | None
    script_mode: bool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class EcrImage:
    """A private ECR image reference, split into the parts ECR's API takes."""

    account: str
    region: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def uri(self) -> str:
        suffix = ".cn" if self.region.startswith("cn-") else ""
        reference = f"@{self.digest}" if self.digest else f":{self.tag}" if self.tag else ""
        return (
            f"{self.account}.dkr.ecr.{self.region}.amazonaws.com{suffix}/"
            f"{self.repository}{reference}"
        )


def resolve_image(
    environment: EnvironmentConfig, *, region: str, instance_type: str
) -> ResolvedImage:
    """The image a SageMaker training job in ``region`` on ``instance_type`` should pull."""
    kind = environment.kind
    if kind == "curated":
        raise UnsupportedError(
            "environment.curated",
            "curated environments are Azure ML only; on SageMaker use framework, image or builtin",
        )
    if kind == "image":
        assert environment.image is not None
        return _own_image(environment.image, region)
    if kind == "builtin":
        assert environment.builtin is not None
        return _builtin(environment.builtin, region, instance_type)
    assert environment.framework is not None
    return _framework(environment.framework, environment.framework_version, region, instance_type)


# --- script-mode frameworks ----------------------------------------------------------------


def _framework(
    framework: str, requested: str | None, region: str, instance_type: str
) -> ResolvedImage:
    if framework not in FRAMEWORKS:
        raise ConfigError(
            "environment.framework", unknown_name_message("framework", framework, FRAMEWORKS)
        )
    device = accelerator(instance_type)
    config_name = framework
    if device == "neuron":
        if framework != "pytorch":
            raise ConfigError(
                "compute.instance_type",
                f"{instance_type} (AWS Neuron) runs pytorch framework images only, not {framework}",
            )
        config_name = "pytorch-neuron"  # what image_uris switches to for trn/inf
    training = image_uri_config(config_name).get("training")
    if not training:
        raise ConfigError("environment.framework", f"{framework} has no training images")
    versions: dict[str, Any] = dict(training["versions"])
    aliases: dict[str, str] = dict(training.get("version_aliases", {}))
    if framework == "xgboost":
        for legacy in _LEGACY_XGBOOST:
            versions.pop(legacy, None)
            aliases.pop(legacy, None)

    label = f"{framework} version" + (" for AWS Neuron" if device == "neuron" else "")
    key, version, warnings = _pick_version(label, requested, versions, aliases, region)
    version_config = versions[key]
    base: str | None = None
    if framework == "huggingface":
        base = _huggingface_base(version_config)
        version_config = version_config[base]
    table_py_version: str | None = None
    if "registries" not in version_config:  # split by Python version (tensorflow 1.13)
        table_py_version = max(version_config, key=version_numbers)
        version_config = version_config[table_py_version]
    _check_region(version_config["registries"], region, f"{framework} {key} images")

    processors = training.get("processors") or version_config.get("processors")
    processor = _processor(processors, device, framework, key, instance_type)
    py_versions = version_config.get("py_versions") or []
    py_version = max(py_versions, key=version_numbers) if py_versions else table_py_version
    extra: dict[str, str] = {}
    if base is not None:
        name = "pytorch" if base.startswith("pytorch") else "tensorflow"
        extra[f"{name}_version"] = base.removeprefix(name)  # pytorch2.8.0 -> pytorch_version
    try:
        uri = framework_training_uri(
            framework,
            region,
            version=version,
            py_version=py_version,
            instance_type=instance_type,
            scope=training,
            base=extra,
        )
    except ValueError as exc:  # a combination the checks above did not foresee
        raise ConfigError("environment.framework_version", f"{framework} {key}: {exc}") from exc
    return ResolvedImage(
        uri=uri,
        kind="framework",
        name=framework,
        version=version,
        processor=processor,
        script_mode=True,
        warnings=tuple(warnings),
    )


def _pick_version(
    label: str,
    requested: str | None,
    versions: dict[str, Any],
    aliases: dict[str, str],
    region: str,
) -> tuple[str, str, list[str]]:
    """``(config key, version to hand image_uris, warnings)`` for ``requested``.

    An exact version or an alias ("2.3") is handed over as written, as the SDK's own
    estimators do; otherwise the newest revision of it ("1.2" -> "1.2-1"). With no
    version, the newest one published in ``region``, with a warning.
    """
    field = "environment.framework_version"
    plain = [v for v in versions if _PLAIN_VERSION.fullmatch(v)]
    if requested is None:
        here = [v for v in plain if region in _registries(versions[v])] or plain
        latest = max(here, key=version_numbers)
        warning = (
            f"{field}: not set, so {label} {latest} (the newest this sagemaker SDK knows) "
            "is used; pin it for repeatable runs"
        )
        return latest, latest, [warning]
    if requested in versions:
        return requested, requested, []
    if aliases.get(requested) in versions:
        return aliases[requested], requested, []
    revisions = [v for v in plain if v.startswith((requested + "-", requested + "."))]
    if revisions:
        newest = max(revisions, key=version_numbers)
        return newest, newest, []
    # List what a user would type: the aliases, and the versions no alias points at.
    valid = set(aliases).union(v for v in versions if v not in aliases.values())
    raise ConfigError(field, _unknown_version(label, requested, valid))


def _huggingface_base(version_config: dict[str, Any]) -> str:
    """The newest PyTorch base of a transformers version (TensorFlow if it has no PyTorch)."""
    bases = [key for key in version_config if re.fullmatch(r"(pytorch|tensorflow)\d.*", key)]
    torch = [key for key in bases if key.startswith("pytorch")]
    return max(torch or bases, key=version_numbers)


def _processor(
    processors: list[str] | None, device: str, framework: str, version: str, instance_type: str
) -> str | None:
    """The image's processor token, or a clear error when no image fits the instance."""
    if not processors:
        return None  # one image for every instance type (xgboost >= 1.2-1)
    wanted = "trn" if device == "neuron" else device
    if wanted not in processors:
        raise ConfigError(
            "compute.instance_type",
            f"{framework} {version} has {'/'.join(processors)} training images only, "
            f"and {instance_type} is a {device.upper()} instance type",
        )
    return wanted


# --- built-in algorithms ---------------------------------------------------------------------


@lru_cache(maxsize=1)
def builtin_algorithms() -> frozenset[str]:
    """SageMaker's built-in training algorithms, as sagemaker's bundled configs list them
    (all of them read: for messages and tests; ``is_builtin_algorithm`` reads one)."""
    return frozenset(name for name in image_uri_config_names() if is_builtin_algorithm(name))


def is_builtin_algorithm(name: str) -> bool:
    """Whether sagemaker's bundled config ``name`` is a built-in training algorithm.

    A built-in algorithm's config serves training and inference with one image and names
    no Python version (it runs no user script); that leaves out the script-mode and RL
    toolkits (chainer, vw, ...). xgboost is both an algorithm and a script-mode
    framework, and its config is framework-shaped, so it is named here.
    """
    if name == "xgboost":
        return True
    if name not in image_uri_config_names():
        return False
    config = image_uri_config(name)
    return (
        "versions" in config
        and {"training", "inference"} <= set(config.get("scope", ()))
        and not any("py_versions" in version for version in config["versions"].values())
    )


def _builtin(value: str, region: str, instance_type: str) -> ResolvedImage:
    """``kmeans``, or ``xgboost:1.7-1`` to pin the version of a multi-version algorithm."""
    field = "environment.builtin"
    name, _, requested = value.partition(":")
    if not is_builtin_algorithm(name):
        if name in FRAMEWORKS:
            raise ConfigError(
                field, f"{name} is a script-mode framework: set environment.framework: {name}"
            )
        raise ConfigError(
            field, unknown_name_message("built-in algorithm", name, builtin_algorithms())
        )
    config = image_uri_config(name)
    training = config if "scope" in config else config["training"]
    versions: dict[str, Any] = training["versions"]
    warnings: list[str] = []
    if requested:
        if requested not in versions:
            raise ConfigError(field, _unknown_version(f"{name} version", requested, versions))
        version = requested
    elif len(versions) == 1:
        version = next(iter(versions))
    else:
        plain = [v for v in versions if _PLAIN_VERSION.fullmatch(v) and "-" in v]
        version = max(plain, key=version_numbers)
        warnings.append(
            f"{field}: no version given, so {name} {version} (the newest this sagemaker SDK "
            f"knows) is used; pin it as {name}:{version} for repeatable runs"
        )
    _check_region(versions[version]["registries"], region, f"{name} {version} images")
    try:
        uri = algorithm_training_uri(
            name, region, version=version, instance_type=instance_type, scope=training
        )
    except ValueError as exc:
        raise ConfigError(field, f"{value}: {exc}") from exc
    return ResolvedImage(
        uri=uri,
        kind="builtin",
        name=name,
        version=version,
        processor=None,
        script_mode=False,
        warnings=tuple(warnings),
    )


# --- bring your own container ----------------------------------------------------------------


def parse_ecr_uri(uri: str, field: str = "environment.image") -> EcrImage:
    """Split a private ECR image URI, refusing anything SageMaker training cannot pull."""

    def bad(reason: str) -> ConfigError:
        return ConfigError(field, f"{quote(uri)}: {reason}; expected {ECR_FORM}")

    if "://" in uri:
        raise bad("drop the scheme")
    host, _, path = uri.partition("/")
    match = _ECR_HOST.fullmatch(host)
    if match is None:
        if ".dkr.ecr." in host:
            raise bad("malformed ECR registry (a 12-digit account, then .dkr.ecr.<region>)")
        raise bad(
            "SageMaker training pulls from private Amazon ECR, not this registry "
            "(push the image to ECR)"
        )
    account, region = match["account"], match["region"]
    if bool(match["cn"]) != region.startswith("cn-"):
        raise bad(f"{region} is served from amazonaws.com{'.cn' if not match['cn'] else ''}")
    tag = digest = None
    if "@" in path:
        path, _, digest = path.partition("@")
        if ":" in path:
            raise bad("give a tag or a digest, not both")
        if not _DIGEST.fullmatch(digest):
            raise bad("a digest is sha256: and 64 lowercase hex digits")
    elif ":" in path:
        path, _, tag = path.partition(":")
        if not _TAG.fullmatch(tag):
            raise bad(f"{quote(tag)} is not a valid tag")
    if not path:
        raise bad("no repository")
    if not (2 <= len(path) <= 256 and _REPOSITORY.fullmatch(path)):
        raise bad(
            f"{quote(path)} is not a valid repository name (lowercase letters, digits, "
            "'.', '_', '-', '/'-separated, 2 to 256 characters)"
        )
    return EcrImage(account=account, region=region, repository=path, tag=tag, digest=digest)


def check_ecr_image(
    clients: AwsClients, image: EcrImage, field: str = "environment.image"
) -> str | None:
    """NETWORK: refuse a missing repository or tag (or another region's image) before a
    job fails on it.

    Returns a warning instead when ECR cannot be asked (unreachable, no credentials,
    access denied to another account's registry): SageMaker will still check at start.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    if image.region != clients.region:
        raise ConfigError(field, _cross_region(image.region, clients.region))
    ecr = clients.client("ecr")
    image_id = (
        {"imageDigest": image.digest} if image.digest else {"imageTag": image.tag or "latest"}
    )
    try:
        ecr.describe_images(
            registryId=image.account, repositoryName=image.repository, imageIds=[image_id]
        )
    except ClientError as exc:
        code = error_code(exc)
        if code == "RepositoryNotFoundException":
            raise ConfigError(
                field,
                f"repository {image.repository!r} does not exist in registry "
                f"{image.account} ({image.region})",
            ) from exc
        if code == "ImageNotFoundException":
            raise ConfigError(field, _missing_image(ecr, image)) from exc
        if code in DENIED_CODES:
            return f"{field}: could not check {image.uri} ({code}); SageMaker checks it at start"
        raise BackendError(f"ECR DescribeImages for {image.uri} failed: {exc}") from exc
    except BotoCoreError as exc:
        return (
            f"{field}: could not reach ECR to check {image.uri} ({exc}); "
            "SageMaker checks it at start"
        )
    return None


def _own_image(value: str, region: str) -> ResolvedImage:
    image = parse_ecr_uri(value)
    if image.region != region:
        raise ConfigError("environment.image", _cross_region(image.region, region))
    warnings = []
    if image.tag is None and image.digest is None:
        warnings.append(
            "environment.image: no tag or digest, so ':latest' is pulled, which can change "
            "between attempts; pin a tag or a digest"
        )
    return ResolvedImage(
        uri=value,
        kind="image",
        name=image.repository,
        version=image.digest or image.tag,
        processor=None,
        script_mode=True,
        warnings=tuple(warnings),
    )


def _missing_image(ecr: Any, image: EcrImage) -> str:
    """Name what is missing and, when ECR will say, the tags that do exist."""
    reference = image.digest or f"tag {image.tag or 'latest'!r}"
    message = f"repository {image.repository!r} has no image with {reference}"
    if image.digest:
        return message
    try:
        listed = ecr.list_images(
            registryId=image.account,
            repositoryName=image.repository,
            filter={"tagStatus": "TAGGED"},
            maxResults=100,
        )
    except Exception:  # the hint is a courtesy; the error stands without it
        return message
    tags = sorted({i["imageTag"] for i in listed.get("imageIds", []) if i.get("imageTag")})
    if not tags:
        return message + " (it has no tagged images)"
    close = difflib.get_close_matches(image.tag or "latest", tags, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return message + f" (tags: {', '.join(tags[:20])}{', ...' if len(tags) > 20 else ''}){hint}"


# --- helpers -------------------------------------------------------------------------------


def _check_region(registries: dict[str, str], region: str, what: str) -> None:
    if region not in registries:
        close = difflib.get_close_matches(region, list(registries), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            "aws.region",
            f"{what} are not published in {region!r}; regions: "
            f"{', '.join(sorted(registries))}{hint}",
        )


def _unknown_version(what: str, value: str, valid: Iterable[str]) -> str:
    """Like ``unknown_name_message``, in version order, suggesting the same major.minor."""
    names = sorted(valid, key=lambda v: (version_numbers(v), v))
    same_minor = [v for v in names if version_numbers(v)[:2] == version_numbers(value)[:2]]
    close = same_minor[-1:] or difflib.get_close_matches(value, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {quote(value)}; valid: {', '.join(names)}{hint}"


def _cross_region(image_region: str, job_region: str) -> str:
    return (
        f"the image is in {image_region} but jobs run in {job_region}, and SageMaker does not "
        f"pull images across regions; push or replicate it to ECR in {job_region}"
    )


def _registries(version_config: dict[str, Any]) -> set[str]:
    """Regions a version is published in (huggingface nests them under a base framework)."""
    if "registries" in version_config:
        return set(version_config["registries"])
    nested = (
        v for k, v in version_config.items() if isinstance(v, dict) and k != "version_aliases"
    )
    return set().union(*(_registries(v) for v in nested))


def version_numbers(version: str) -> tuple[int, ...]:
    """Compare the digit runs as numbers: 2.10.0 > 2.9.1, py312 > py39."""
    return tuple(int(part) for part in re.findall(r"\d+", version))
