"""Which instance types a SageMaker training job accepts, and what each one accelerates with.

SageMaker has no persistent compute to create, so "ensure compute" is a check made before
anything is spent. The list of valid types is botocore's own service model (the enum of
``CreateTrainingJob.ResourceConfig.InstanceType``), so it follows boto3 upgrades rather
than a table kept here, less the burstable ``ml.t2.*``/``ml.t3.*`` notebook types: the API
lists ``ml.t3.*``, but SageMaker's compute guidance keeps them for notebooks, and training
jobs need the m5, c5, p3 or g4dn families or newer ones.
"""

from __future__ import annotations

import difflib
from functools import lru_cache

from cloudtrain.errors import ConfigError, quote

#: Burstable families sized for notebooks, refused for training jobs.
NOTEBOOK_FAMILIES: tuple[str, ...] = ("t2", "t3")
#: The usual small training type, suggested instead of a notebook one.
SMALL_TRAINING_TYPE = "ml.m5.large"


@lru_cache(maxsize=1)
def training_instance_types() -> frozenset[str]:
    """Every instance type CreateTrainingJob accepts (botocore's service model) that
    cloudtrain trains on: all but the notebook families."""
    from cloudtrain.backends.aws.limits import sagemaker_model

    request = sagemaker_model().operation_model("CreateTrainingJob").input_shape
    resource = request.members["ResourceConfig"]
    return frozenset(
        name
        for name in resource.members["InstanceType"].enum
        if instance_family(name) not in NOTEBOOK_FAMILIES
    )


def instance_family(instance_type: str) -> str:
    """``ml.g4dn.xlarge`` -> ``g4dn``; ``""`` when the name has no ``ml.<family>.`` form."""
    parts = instance_type.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "ml" else ""


def check_training_instance(instance_type: str, field: str = "compute.instance_type") -> None:
    """Refuse a type SageMaker training would reject, or one meant for notebooks.

    Runs offline, so ``cloudtrain plan`` and config checks catch a typo or a notebook
    type in one line naming ``field`` instead of a ValidationException from the API (or
    a training job held to a burstable type's baseline CPU share).
    """
    if instance_family(instance_type.strip().lower()) in NOTEBOOK_FAMILIES:
        raise ConfigError(
            field,
            f"{instance_type} is a notebook instance type, not one for training jobs: "
            "SageMaker training needs the m5, c5, p3 or g4dn families or newer ones "
            f"({SMALL_TRAINING_TYPE} is the usual small training type)",
        )
    valid = training_instance_types()
    if instance_type not in valid:
        raise ConfigError(field, _not_a_training_type(instance_type, valid))


def accelerator(instance_type: str) -> str:
    """``"gpu"``, ``"neuron"`` (Trainium, Inferentia) or ``"cpu"``: picks the image's processor.

    Follows the rule sagemaker's ``image_uris`` uses: a family starting with ``g`` or ``p``
    carries NVIDIA GPUs, ``trn``/``inf`` carry AWS Neuron devices, anything else is CPU.
    """
    family = instance_family(instance_type)
    if family.startswith(("trn", "inf")):
        return "neuron"
    if family.startswith(("g", "p")):
        return "gpu"
    return "cpu"


def _not_a_training_type(instance_type: str, valid: frozenset[str]) -> str:
    message = f"{quote(instance_type)} is not a SageMaker training instance type"
    candidate = instance_type.strip().lower()
    if candidate.startswith("standard_"):
        message += " (it looks like an Azure VM size)"
    elif not candidate.startswith("ml."):
        candidate = "ml." + candidate
    family = candidate.split(".")[1] if candidate.count(".") >= 1 else ""
    sizes = sorted((t for t in valid if instance_family(t) == family), key=_size_rank)
    close = difflib.get_close_matches(candidate, sizes or sorted(valid), n=1, cutoff=0.75)
    if close:
        message += f"; did you mean {close[0]!r}?"
    if sizes:
        return message + f" (ml.{family} sizes: " + ", ".join(t.split(".")[2] for t in sizes) + ")"
    if close:
        return message
    families = sorted({instance_family(name) for name in valid})
    return message + "; training families: " + ", ".join(f"ml.{f}.*" for f in families)


def _size_rank(instance_type: str) -> float:
    """medium < large < xlarge < 2xlarge < ... so sizes read smallest first."""
    size = instance_type.rpartition(".")[2]
    if size.endswith("xlarge"):
        return 2.0 * int(size.removesuffix("xlarge") or 1)
    return {"medium": 0.5, "large": 1.0}.get(size, 0.0)
