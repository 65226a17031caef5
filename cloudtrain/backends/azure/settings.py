"""The ``azure:`` section of a config: the Azure ML workspace, its compute and datastore."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cloudtrain.config import PipelineConfig, Section
from cloudtrain.errors import ConfigError
from cloudtrain.quantities import Count, Seconds


class AzureConfig(Section):
    """Which Azure ML workspace runs the jobs and on what compute."""

    subscription_id: str | None = Field(None, description="Azure subscription id.")
    resource_group: str | None = Field(None, description="Resource group.")
    workspace: str | None = Field(None, description="Azure ML workspace name.")
    compute: str | None = Field(None, description="Compute target name.")
    compute_type: Literal["amlcompute", "computeinstance", "kubernetes", "serverless"] = Field(
        "amlcompute", description="Kind of compute target."
    )
    min_instances: Count = Field(0, ge=0, description="Cluster minimum nodes.")
    max_instances: Count = Field(4, ge=1, description="Cluster maximum nodes.")
    idle_time_before_scale_down: Seconds = Field(
        120, ge=0, description="Seconds a node idles before the cluster scales down."
    )
    datastore: str = Field("workspaceblobstore", description="Datastore for data.")
    prefix: str = Field("cloudtrain", description="Path prefix inside the datastore.")
    register_model: bool = Field(
        False, description="Register the trained model in the workspace, named after the pipeline."
    )
    credentials_block: str | None = Field(
        None,
        description="Name of a prefect-azure credentials block (else DefaultAzureCredential).",
    )


def azure_settings(config: PipelineConfig) -> AzureConfig:
    """The ``azure:`` section; a config for cloud azure without one is refused here."""
    azure = config.section("azure", AzureConfig)
    if azure is None:
        raise ConfigError("azure", "is required for cloud azure (subscription, workspace)")
    return azure
