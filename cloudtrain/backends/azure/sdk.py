"""The azure-ai-ml internals the Azure backend needs, each behind one typed function.

azure-ai-ml offers no public API for three things cloudtrain does, so only these
functions use private SDK names (checked against azure-ai-ml 1.35.2, the range pinned in
pyproject.toml):

- ``MLClient.jobs._runs_operations.get_run_details``: a job's start, end and error;
- ``_to_rest_object()`` on an entity: the REST body an operation sends (``cloudtrain plan``);
- ``Command._to_job()``: the CommandJob a ``command()`` node is submitted as.

tests/test_sdk_adapters.py runs each function against the real SDK (not the fake), so an
upgrade that moves a name fails a test naming the function instead of a production run;
it also fails if a module outside the adapters uses a private SDK name. azure-ai-ml costs
~1.3 s to import: it is imported only for type checking here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml._restclient.runhistory.models import RunDetails
    from azure.ai.ml.entities import AmlCompute, Command, CommandJob, Data, Environment


def run_details(ml_client: MLClient, name: str) -> RunDetails:
    """Run history's record of job ``name``: ``start_time_utc``, ``end_time_utc`` and
    ``error.error.code`` / ``.message``.

    Private because the public ``jobs.get`` returns a Job with neither times nor error;
    only run history has them (the SDK's own ``jobs.stream`` reads them this same way).
    """
    return ml_client.jobs._runs_operations.get_run_details(name)


def rest_body(entity: AmlCompute | Data | Environment | CommandJob) -> dict[str, Any]:
    """The REST body azure-ai-ml sends to create ``entity``, from its own serializer.

    Private because publicly an entity serializes only to its YAML spec (``dump()``),
    which is not the request (``tier: low_priority`` there, ``vmPriority`` on the wire).
    """
    rest = entity._to_rest_object()
    if rest is None:  # Data of a type the SDK has no REST model for
        raise ValueError(f"azure-ai-ml cannot serialize {type(entity).__name__} {entity.name!r}")
    body: dict[str, Any] = rest.as_dict()
    return body


def as_command_job(job: Command | CommandJob) -> CommandJob:
    """The CommandJob that ``jobs.create_or_update`` submits for a ``command()`` node.

    Private because the SDK converts the node only internally when it submits it
    (``command._to_job()._to_rest_object()`` in entities/_job/to_rest_functions.py).
    """
    from azure.ai.ml.entities import CommandJob

    return job if isinstance(job, CommandJob) else job._to_job()
