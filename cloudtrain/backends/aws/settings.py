"""The ``aws:`` section of a config: where SageMaker jobs run and keep their data."""

from __future__ import annotations

from pydantic import Field

from cloudtrain.config import PipelineConfig, Section
from cloudtrain.errors import ConfigError


class AwsConfig(Section):
    """Where SageMaker jobs run and keep their data."""

    region: str = Field("us-east-1", description="AWS region.")
    role: str | None = Field(None, description="IAM role ARN the training job assumes.")
    bucket: str | None = Field(None, description="S3 bucket for data and models.")
    prefix: str = Field("cloudtrain", description="Key prefix inside the bucket.")
    verify_uploads: bool = Field(
        False,
        description="LIST each channel's S3 prefix even when its manifest shows no change, "
        "to upload again objects deleted by hand (one LIST per 1,000 files).",
    )
    credentials_block: str | None = Field(
        None, description="Name of a prefect-aws AwsCredentials block (else boto3's chain)."
    )


def aws_settings(config: PipelineConfig) -> AwsConfig:
    """The ``aws:`` section; a config for cloud aws without one is refused here."""
    aws = config.section("aws", AwsConfig)
    if aws is None:
        raise ConfigError("aws", "is required for cloud aws (region, role, bucket)")
    return aws
