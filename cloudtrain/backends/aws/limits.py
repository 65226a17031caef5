"""SageMaker's length and count limits on a CreateTrainingJob request, checked before
anything runs.

The limits are read from botocore's SageMaker service model, the machine-readable API
reference (HyperParameters: at most 100 entries, keys of 256 and values of 2,500
characters; TrainingJobName 63; MetricDefinitions 40, each Regex 500; InputDataConfig 20
channels; S3 URIs 1,024...). botocore's own validator checks only minimums, so without this
a request over a maximum is refused by SageMaker after the data was uploaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from cloudtrain.errors import ConfigError, Problem


@lru_cache(maxsize=1)
def sagemaker_model() -> Any:
    """botocore's SageMaker service model, read once: parsing its JSON takes ~0.1 s, and
    a sweep's plan checks and validates two requests per trial against it.

    Read with botocore's loader, as ``Session.get_service_model`` does (the same search
    path, ``AWS_DATA_PATH`` included), without importing ``botocore.session``, whose client
    and documentation modules cost ``plan`` ~0.07 s more.
    """
    import botocore.loaders
    import botocore.model

    loader = botocore.loaders.create_loader(os.environ.get("AWS_DATA_PATH"))
    return botocore.model.ServiceModel(
        loader.load_service_model("sagemaker", "service-2"), service_name="sagemaker"
    )


def check_request_limits(request: Mapping[str, Any], field_of: Callable[[str], str]) -> None:
    """Refuse every value of ``request`` over SageMaker's maximum, each problem naming
    the config field ``field_of(request path)`` with the limit."""
    shape = sagemaker_model().operation_model("CreateTrainingJob").input_shape
    problems = [Problem(field_of(path), message) for path, message in _over(request, shape, "")]
    if problems:
        raise ConfigError(problems=problems)


def _over(value: Any, shape: Any, path: str) -> Iterator[tuple[str, str]]:
    """(request path, what is over) for each value above its shape's ``max``."""
    limit = shape.metadata.get("max")
    kind = shape.type_name
    if kind == "string" and isinstance(value, str):
        if limit is not None and len(value) > limit:
            yield path, _too_long(path, len(value), limit)
    elif kind == "structure" and isinstance(value, Mapping):
        for name, member in shape.members.items():
            if name in value:
                yield from _over(value[name], member, f"{path}.{name}" if path else name)
    elif kind == "list" and isinstance(value, list):
        if limit is not None and len(value) > limit:
            yield path, f"makes {len(value)} {path} entries; SageMaker takes at most {limit}"
        for index, item in enumerate(value):
            yield from _over(item, shape.member, f"{path}[{index}]")
    elif kind == "map" and isinstance(value, Mapping):
        if limit is not None and len(value) > limit:
            yield path, f"makes {len(value)} {path} entries; SageMaker takes at most {limit}"
        key_limit = shape.key.metadata.get("max")
        for key, item in value.items():
            if key_limit is not None and len(key) > key_limit:
                yield (
                    f"{path}.{key}",
                    f"the name is {len(key):,} characters as a {path} key; "
                    f"SageMaker takes at most {key_limit:,}",
                )
            yield from _over(item, shape.value, f"{path}.{key}")


def _too_long(path: str, length: int, limit: int) -> str:
    where = path.split(".")[0].split("[")[0]
    return f"is {length:,} characters in {where}; SageMaker takes at most {limit:,}"
