"""Turn ``environment:`` into the Azure ML environment a command job runs in.

- ``curated: NAME@VERSION`` is that curated environment; ``NAME@latest`` or a bare
  ``NAME`` takes the newest version (with a warning to pin it). A typo gets the closest
  names the registry has.
- ``framework`` (+ ``framework_version``) picks the best curated environment by reading
  the names of the ``azureml`` registry, which follow one convention:
  ``AzureML-[acpt-]<framework>-<version>[-ubuntu<os>][-py<python>][-cuda<cuda>][-cpu|-gpu]``.
  GPU or CPU follows the VM size. When no curated environment has that framework or
  version, a custom one is built on Azure ML's base image with the framework pip-pinned,
  so a config written for SageMaker still runs here.
- ``image`` becomes a custom environment from that image.
- A ``requirements.txt`` in ``code.source_dir`` becomes a custom environment on top of the
  chosen base image, with a conda file generated from it.
- ``builtin`` is refused: Azure ML has no built-in algorithms.

Custom environments are named ``cloudtrain-<pipeline>`` and versioned by a digest of
their content, so the same content is found again instead of rebuilt, and a change is a
new version.

Curated environments live in the ``azureml`` registry. Every lookup goes through
``environments.get(name, version=...)``, ``get(name, label="latest")`` and ``list()`` of
the client given as ``curated_client`` (an ``MLClient(credential, registry_name="azureml")``),
or of the workspace client when none is given; custom environments are written to the
workspace client. azure-ai-ml is imported inside functions (~1.3 s).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtrain.backends.azure import sdk
from cloudtrain.config import FRAMEWORKS
from cloudtrain.errors import ConfigError, UnsupportedError

if TYPE_CHECKING:
    from azure.ai.ml.entities import Environment

    from cloudtrain.config import PipelineConfig

CURATED_REGISTRY = "azureml"
REQUIREMENTS_FILE = "requirements.txt"
CUSTOM_NAME_PREFIX = "cloudtrain-"  # names starting with AzureML are reserved for curated ones
#: Python of the conda environment cloudtrain generates when nothing says which.
DEFAULT_PYTHON = "3.10"
#: Azure ML's own base images (MPI, Ubuntu 22.04; CUDA 11.8 for GPU sizes).
BASE_IMAGES = {
    "cpu": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest",
    "gpu": "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04:latest",
}
#: Where the images of curated environments are published: <repository>/<name>:<version>.
CURATED_IMAGES = "mcr.microsoft.com/azureml/curated"
#: pip distribution per framework token (FRAMEWORKS, plus frameworks only Azure curates).
PIP_PACKAGES: dict[str, str] = {**FRAMEWORKS, "lightgbm": "lightgbm"}
#: What a framework needs besides its own package to train.
COMPANION_PACKAGES: dict[str, tuple[str, ...]] = {"huggingface": ("torch",)}

_VERSION = re.compile(r"\d+(\.\d+)*")
_REQUESTED_VERSION = re.compile(r"(?P<version>\d+(\.\d+)*)(?P<revision>-\d+)?")
_OS = re.compile(r"ubuntu(\d+\.\d+)")
_PYTHON = re.compile(r"py(\d)(\d+)")
_CUDA = re.compile(r"cuda(\d+(\.\d+)?)")
_ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_REGISTRY_URI = re.compile(
    r"azureml://registries/(?P<registry>[^/]+)/environments/(?P<name>[^/]+)"
    r"(?:/versions/(?P<version>[^/]+)|/labels/(?P<label>[^/]+))?"
)
_IMAGE = re.compile(
    r"(?:(?P<host>[A-Za-z0-9.-]+\.[A-Za-z0-9-]+(?::\d+)?|localhost(?::\d+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})|@(?P<digest>sha256:[0-9a-f]{64}))?"
)
_PUBLIC_HOSTS = ("mcr.microsoft.com", "docker.io", "registry-1.docker.io", "ghcr.io")


@dataclass(frozen=True)
class CuratedName:
    """What a curated environment's name says about it."""

    name: str
    framework: str
    version: str
    os: str | None  # "ubuntu22.04"
    python: str | None  # "3.9"
    cuda: str | None  # "11.7"
    accelerator: str  # "cpu" or "gpu"
    acpt: bool = False  # Azure Container for PyTorch
    extras: tuple[str, ...] = ()  # tokens outside the convention, e.g. "inference"


@dataclass(frozen=True)
class ResolvedAzureEnvironment:
    """The environment a job names, and how it was chosen.

    ``reference`` is what a command job's ``environment=`` takes. ``image`` is the image
    the environment runs (None when the registry did not say); ``conda_file`` is the conda
    file cloudtrain generated, for custom environments only.
    """

    reference: str
    name: str
    version: str | None
    kind: str  # curated | framework | image | custom
    image: str | None
    conda_file: str | None
    warnings: tuple[str, ...] = ()


# --- names -----------------------------------------------------------------------------------


def parse_curated_name(name: str) -> CuratedName | None:
    """Read a curated environment name; None when it does not start with framework-version.

    ``AzureML-pytorch-1.13-ubuntu20.04-py38-cuda11.7-gpu`` -> pytorch 1.13, ubuntu20.04,
    Python 3.8, CUDA 11.7, gpu. A CUDA token alone means GPU; no accelerator token, CPU.
    """
    tokens = name.split("-")
    if tokens and tokens[0].lower() == "azureml":
        tokens = tokens[1:]
    acpt = bool(tokens) and tokens[0].lower() == "acpt"
    if acpt:
        tokens = tokens[1:]
    if len(tokens) < 2:
        return None
    framework, version = tokens[0].lower(), tokens[1]
    if not re.fullmatch(r"[a-z][a-z0-9]*", framework) or not _VERSION.fullmatch(version):
        return None
    os_name = python = cuda = device = None
    extras: list[str] = []
    for token in (t.lower() for t in tokens[2:]):
        if match := _OS.fullmatch(token):
            os_name = token
        elif match := _PYTHON.fullmatch(token):
            python = f"{match[1]}.{match[2]}"
        elif match := _CUDA.fullmatch(token):
            cuda = match[1]
        elif token in ("cpu", "gpu"):
            device = token
        else:
            extras.append(token)
    return CuratedName(
        name=name,
        framework=framework,
        version=version,
        os=os_name,
        python=python,
        cuda=cuda,
        accelerator="gpu" if device == "gpu" or cuda else "cpu",
        acpt=acpt,
        extras=tuple(extras),
    )


def parse_curated_spec(value: str) -> tuple[str, str | None]:
    """``NAME@VERSION``, ``NAME:VERSION``, ``NAME@latest``, ``NAME`` or a registry URI ->
    (name, version or None for the latest)."""
    field = "environment.curated"
    text = value.strip()
    uri = _REGISTRY_URI.fullmatch(text)
    if uri:
        if uri["registry"] != CURATED_REGISTRY:
            raise UnsupportedError(
                field, f"curated environments come from the {CURATED_REGISTRY} registry"
            )
        if uri["label"] not in (None, "latest"):
            raise ConfigError(field, f"label {uri['label']!r}: only 'latest' is supported")
        name, version = uri["name"], uri["version"]
    else:
        text = text.removeprefix("azureml:")
        name, sep, version = text.partition("@")
        if not sep:
            name, _, version = text.partition(":")
    if not _ASSET_NAME.fullmatch(name):
        raise ConfigError(field, f"{value!r}: expected NAME@VERSION, NAME@latest or NAME")
    if version and version != "latest" and not _ASSET_NAME.fullmatch(version):
        raise ConfigError(field, f"{value!r}: {version!r} is not a version")
    return name, (version if version and version != "latest" else None)


def custom_name(config: PipelineConfig) -> str:
    return CUSTOM_NAME_PREFIX + config.name


# --- resolve (network) -----------------------------------------------------------------------


def resolve_environment(
    ml_client: Any, config: PipelineConfig, *, gpu: bool, curated_client: Any | None = None
) -> ResolvedAzureEnvironment:
    """The environment for ``config`` on a GPU or CPU size; creates a custom one if needed."""
    environment = config.environment
    _refuse_builtin(config)
    requirements = read_requirements(config.code.source_dir)
    registry = curated_client if curated_client is not None else ml_client
    if environment.image:
        warnings = check_image(environment.image)
        conda = None
        if requirements:
            conda = conda_spec(DEFAULT_PYTHON, requirements)
            warnings.append(_new_conda_warning(environment.image, DEFAULT_PYTHON, pinned=False))
        return _ensure_custom(
            ml_client,
            config,
            image=environment.image,
            conda=conda,
            kind="custom" if conda else "image",
            warnings=warnings,
        )
    if environment.curated:
        entity, warnings = _curated(registry, environment.curated)
        base = _described(entity, "curated", warnings)
    else:
        assert environment.framework is not None
        found, warnings = _framework(
            registry, environment.framework, environment.framework_version, gpu
        )
        if found is None:
            return _ensure_custom(
                ml_client,
                config,
                image=BASE_IMAGES["gpu" if gpu else "cpu"],
                conda=conda_spec(
                    DEFAULT_PYTHON,
                    _framework_packages(
                        environment.framework, environment.framework_version, requirements
                    )
                    + (requirements or []),
                ),
                kind="custom",
                warnings=warnings,
            )
        entity = found
        base = _described(entity, "framework", warnings)
    if not requirements:
        return base
    return _layered(ml_client, config, entity, requirements, list(base.warnings))


def _curated(registry: Any, spec: str) -> tuple[Any, list[str]]:
    from cloudtrain.backends.azure.errors import service_error

    name, version = parse_curated_spec(spec)
    try:
        if version:
            entity = registry.environments.get(name, version=version)
        else:
            entity = registry.environments.get(name, label="latest")
    except Exception as exc:
        if _not_found(exc):
            message = _missing_curated(registry, name, version)
            raise ConfigError("environment.curated", message) from exc
        raise service_error(exc, f"reading curated environment {name}") from exc
    warnings = []
    if not version:
        warnings.append(
            f"environment.curated: no version, so {name} version {entity.version} (the latest) "
            f"is used; pin it as {name}@{entity.version} for repeatable runs"
        )
    return entity, warnings


def _missing_curated(registry: Any, name: str, version: str | None) -> str:
    """Say what exists instead: the versions of that name, or the closest names."""
    try:
        names = sorted({str(e.name) for e in registry.environments.list()})
        if version and name in names:
            versions = sorted(
                (str(e.version) for e in registry.environments.list(name=name)), key=_numbers
            )
            shown = ", ".join(versions[-10:])
            return (
                f"{name} has no version {version!r}; its versions: "
                f"{'..., ' if len(versions) > 10 else ''}{shown} (or {name}@latest)"
            )
    except Exception:  # the hint is a courtesy; the error stands without it
        return f"no curated environment {name}" + (f" version {version}" if version else "")
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)
    hint = "; closest: " + ", ".join(by_lower[c] for c in close) if close else ""
    return f"no environment {name!r} in the {CURATED_REGISTRY} registry{hint}"


def _framework(
    registry: Any, framework: str, requested: str | None, gpu: bool
) -> tuple[Any | None, list[str]]:
    """The best curated environment for the framework, or None (with the reason)."""
    from cloudtrain.backends.azure.errors import service_error

    version = _requested_version(requested)
    field = "environment.framework"
    try:
        names = sorted({str(e.name) for e in registry.environments.list()})
    except Exception as exc:
        raise service_error(exc, "listing curated environments") from exc
    candidates = [
        parsed
        for parsed in map(parse_curated_name, names)
        if parsed and parsed.framework == framework and not parsed.extras
    ]
    device = "gpu" if gpu else "cpu"
    warnings: list[str] = []
    on_device = [c for c in candidates if c.accelerator == device]
    if candidates and not on_device:
        other = "CPU" if gpu else "GPU (CUDA)"
        warnings.append(
            f"{field}: no curated {framework} environment for {device.upper()} sizes, so a "
            f"{other} one is used"
            + ("; the GPU stays idle" if gpu else "; it runs on the CPU, in a larger image")
        )
        on_device = candidates
    matching = [c for c in on_device if _version_matches(c.version, version)]
    if not matching:
        curated_versions = sorted({c.version for c in candidates}, key=_numbers)
        package = " ".join(_framework_packages(framework, requested))
        have = (
            f"curated {framework} versions: {', '.join(curated_versions)}"
            if curated_versions
            else f"the {CURATED_REGISTRY} registry curates no {framework} environment"
        )
        warnings.append(
            f"{field}: no curated environment for {framework} {version or ''}".rstrip()
            + f" ({have}); building a custom one on {BASE_IMAGES[device]} with "
            f"{package} (Python {DEFAULT_PYTHON})"
        )
        return None, warnings
    best = max(matching, key=_rank)
    try:
        entity = registry.environments.get(best.name, label="latest")
    except Exception as exc:
        raise service_error(exc, f"reading curated environment {best.name}") from exc
    if version is None:
        warnings.append(
            f"environment.framework_version: not set, so {framework} {best.version} (the newest "
            f"curated: {best.name}) is used; pin it for repeatable runs"
        )
    return entity, warnings


def _layered(
    ml_client: Any,
    config: PipelineConfig,
    base: Any,
    requirements: list[str],
    warnings: list[str],
) -> ResolvedAzureEnvironment:
    """A custom environment: the base environment's image, plus a conda file with the
    base's framework pinned and the requirements."""
    parsed = parse_curated_name(str(base.name))
    image = base.image
    if not image:
        image = f"{CURATED_IMAGES}/{str(base.name).lower().removeprefix('azureml-')}:{base.version}"
        warnings.append(
            f"environment: {base.name} names no image, so {image} (where curated images are "
            "published) is used as the base"
        )
    python = (parsed.python if parsed else None) or DEFAULT_PYTHON
    if isinstance(base.conda_file, dict):
        conda = _with_pip(base.conda_file, requirements)
    else:
        pins = (
            _framework_packages(parsed.framework, parsed.version, requirements)
            if parsed and parsed.framework in PIP_PACKAGES
            else []
        )
        conda = conda_spec(python, pins + requirements)
    warnings.append(_new_conda_warning(image, python, pinned=True))
    return _ensure_custom(
        ml_client, config, image=image, conda=conda, kind="custom", warnings=warnings
    )


def _ensure_custom(
    ml_client: Any,
    config: PipelineConfig,
    *,
    image: str,
    conda: dict[str, Any] | None,
    kind: str,
    warnings: list[str],
) -> ResolvedAzureEnvironment:
    """Find the custom environment with this content, or create it."""
    from cloudtrain.backends.azure.errors import service_error

    entity = custom_environment(config, image=image, conda=conda)
    name, version = str(entity.name), str(entity.version)
    try:
        ml_client.environments.get(name, version=version)
    except Exception as exc:
        if not _not_found(exc):
            raise service_error(exc, f"reading environment {name}:{version}") from exc
        try:
            ml_client.environments.create_or_update(entity)
        except Exception as exc:
            raise service_error(exc, f"creating environment {name}:{version}") from exc
    return ResolvedAzureEnvironment(
        reference=f"azureml:{name}:{version}",
        name=name,
        version=version,
        kind=kind,
        image=image,
        conda_file=sdk.rest_body(entity)["properties"].get("condaFile"),
        warnings=tuple(warnings),
    )


def custom_environment(
    config: PipelineConfig, *, image: str, conda: dict[str, Any] | None
) -> Environment:
    """The custom Environment entity; its version is a digest of image and conda file."""
    from azure.ai.ml.entities import Environment

    content = json.dumps({"image": image, "conda": conda}, sort_keys=True)
    version = hashlib.sha256(content.encode()).hexdigest()[:16]
    return Environment(
        name=custom_name(config),
        version=version,
        image=image,
        conda_file=conda,
        description=f"cloudtrain environment of pipeline {config.name}",
        tags={"cloudtrain:pipeline": config.name},
    )


def _described(entity: Any, kind: str, warnings: list[str]) -> ResolvedAzureEnvironment:
    entity_id = str(getattr(entity, "id", None) or "")
    reference = (
        entity_id
        if entity_id.startswith("azureml://registries/")
        else f"azureml:{entity.name}:{entity.version}"
    )
    return ResolvedAzureEnvironment(
        reference=reference,
        name=str(entity.name),
        version=str(entity.version) if entity.version is not None else None,
        kind=kind,
        image=entity.image,
        conda_file=None,
        warnings=tuple(warnings),
    )


# --- plan (pure) -----------------------------------------------------------------------------


def plan_environment(config: PipelineConfig, *, gpu: bool) -> dict[str, Any]:
    """What ``resolve_environment`` would look up or create, offline.

    For an image, the exact REST body of the custom environment; for curated and
    framework, the lookup (its answer decides the rest at run time).
    """
    environment = config.environment
    _refuse_builtin(config)
    requirements = read_requirements(config.code.source_dir)
    if environment.image:
        warnings = check_image(environment.image)
        conda = conda_spec(DEFAULT_PYTHON, requirements) if requirements else None
        entity = custom_environment(config, image=environment.image, conda=conda)
        return {
            "kind": "custom" if conda else "image",
            "reference": f"azureml:{entity.name}:{entity.version}",
            "create_or_reuse": sdk.rest_body(entity),
            "warnings": warnings,
        }
    plan: dict[str, Any]
    if environment.curated:
        name, version = parse_curated_spec(environment.curated)
        lookup = {"version": version} if version else {"label": "latest"}
        plan = {
            "kind": "curated",
            "lookup": {"registry": CURATED_REGISTRY, "name": name, **lookup},
        }
    else:
        plan = {
            "kind": "framework",
            "select": {
                "registry": CURATED_REGISTRY,
                "framework": environment.framework,
                "version": _requested_version(environment.framework_version),
                "accelerator": "gpu" if gpu else "cpu",
                "rule": "newest matching version, then CUDA, OS and Python; without one, "
                f"a custom environment on {BASE_IMAGES['gpu' if gpu else 'cpu']}",
            },
        }
    if requirements:
        plan["requirements"] = {
            "packages": requirements,
            "custom_environment": custom_name(config),
            "note": "built on the selected environment's image; version derived from "
            "the content at run time",
        }
    return plan


# --- pieces ----------------------------------------------------------------------------------


def read_requirements(source_dir: Path) -> list[str] | None:
    """The package lines of ``source_dir/requirements.txt``, or None without one."""
    path = source_dir / REQUIREMENTS_FILE
    if not path.is_file():
        return None
    packages: list[str] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r", "--requirement", "-c", "--constraint", "-e", "--editable")) or (
            line.startswith((".", "/", "file:"))
        ):
            raise ConfigError(
                "code.source_dir",
                f"{path} line {number}: {line!r} refers to local files, which the Azure ML "
                "image build cannot see; list packages only",
            )
        packages.append(line)
    return packages or None


def conda_spec(python: str, pip: list[str]) -> dict[str, Any]:
    return {
        "name": "cloudtrain",
        "channels": ["conda-forge"],
        "dependencies": [f"python={python}", "pip", {"pip": list(pip)}],
    }


def check_image(image: str, field: str = "environment.image") -> list[str]:
    """Refuse an image reference Azure ML cannot pull; warn about a floating tag."""
    match = _IMAGE.fullmatch(image.strip())
    if match is None:
        raise ConfigError(field, f"{image!r} is not a container image reference")
    host = match["host"] or "docker.io"
    if ".dkr.ecr." in host:
        raise UnsupportedError(
            field,
            f"{image} is in Amazon ECR, which Azure ML cannot pull from; push the image to "
            "the workspace's Azure Container Registry",
        )
    warnings = []
    if not match["tag"] and not match["digest"]:
        warnings.append(
            f"{field}: no tag or digest, so ':latest' is pulled, which can change between "
            "attempts; pin a tag or a digest"
        )
    if host not in _PUBLIC_HOSTS and not host.endswith(".azurecr.io"):
        warnings.append(
            f"{field}: {host} is neither public nor an Azure Container Registry; the "
            "workspace needs credentials for it"
        )
    return warnings


def _not_found(exc: Exception) -> bool:
    """A 404, or the SDK's own "asset does not exist" (what ``label="latest"`` raises)."""
    from azure.ai.ml.exceptions import ValidationErrorType
    from azure.core.exceptions import ResourceNotFoundError

    return (
        isinstance(exc, ResourceNotFoundError)
        or getattr(exc, "status_code", None) == 404
        or getattr(exc, "error_type", None) == ValidationErrorType.RESOURCE_NOT_FOUND
    )


def _refuse_builtin(config: PipelineConfig) -> None:
    if config.environment.builtin:
        raise UnsupportedError(
            "environment.builtin",
            f"{config.environment.builtin!r} is a SageMaker built-in algorithm, and Azure ML "
            "has no built-in algorithms; run a script with environment.framework or "
            "environment.curated",
        )


def _requested_version(requested: str | None) -> str | None:
    """``"1.2"`` as is; SageMaker's ``"1.2-1"`` revision suffix dropped; junk refused."""
    if requested is None:
        return None
    match = _REQUESTED_VERSION.fullmatch(requested.strip())
    if match is None:
        raise ConfigError(
            "environment.framework_version", f"{requested!r} is not a version such as 1.5"
        )
    return match["version"]


def _version_matches(curated: str, requested: str | None) -> bool:
    """Curated names carry major.minor: "1.13" serves 1.13.1, and "2" takes any 2.x."""
    if requested is None:
        return True
    have, want = _numbers(curated), _numbers(requested)
    size = min(len(have), len(want))
    return have[:size] == want[:size]


def _rank(name: CuratedName) -> tuple[Any, ...]:
    """Newest version, CUDA, OS and Python first; the plain framework image over ACPT."""
    os_version = _numbers(name.os or "")
    return (
        _numbers(name.version),
        _numbers(name.cuda or ""),
        os_version,
        _numbers(name.python or ""),
        not name.acpt,
        name.name,
    )


def _framework_packages(
    framework: str, version: str | None, requirements: list[str] | None = None
) -> list[str]:
    """The pip lines that install the framework, unless the requirements already do."""
    package = PIP_PACKAGES.get(framework, framework)
    listed = {_distribution(line) for line in requirements or []}
    packages = [] if _normalized(package) in listed else [package]
    if packages and version:
        packages = [f"{package}=={_requested_version(version)}.*"]
    packages += [p for p in COMPANION_PACKAGES.get(framework, ()) if _normalized(p) not in listed]
    return packages


def _with_pip(base: dict[str, Any], requirements: list[str]) -> dict[str, Any]:
    """The base conda file with the requirements added to its pip section."""
    conda = json.loads(json.dumps(base))
    dependencies = conda.setdefault("dependencies", [])
    section = next((d for d in dependencies if isinstance(d, dict) and "pip" in d), None)
    if section is None:
        section = {"pip": []}
        dependencies.append(section)
    section["pip"] = list(section["pip"]) + requirements
    return dict(conda)


def _new_conda_warning(image: str, python: str, *, pinned: bool) -> str:
    return (
        f"{REQUIREMENTS_FILE}: Azure ML builds a new conda environment (Python {python}) "
        f"from it on {image}; packages installed in the image outside it are not visible"
        + (", so the framework is pinned in it too" if pinned else "")
    )


def _distribution(line: str) -> str:
    return _normalized(re.split(r"[\s\[<>=!~;@]", line, maxsplit=1)[0])


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))
