"""The ``aws:`` section of a config: where SageMaker jobs run and keep their data."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from cloudtrain.config import PipelineConfig, Section
from cloudtrain.errors import ConfigError, quote

ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
BUCKET_NAME = re.compile(r"(?!xn--)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
REGION = re.compile(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d")
ROLE_FORM = "must be an IAM role ARN, arn:aws:iam::<account>:role/<name>"


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

    # Forms are checked with the rest of the config, so they come in its list of problems;
    # that role and bucket are given at all is cloud aws's own check (the backend's).

    @field_validator("region")
    @classmethod
    def _region_name(cls, value: str) -> str:
        if not REGION.fullmatch(value):
            raise ValueError(f"{quote(value)} is not an AWS region name")
        return value

    @field_validator("role")
    @classmethod
    def _role_arn(cls, value: str | None) -> str | None:
        if value is not None and not ROLE_ARN.fullmatch(value):
            raise ValueError(ROLE_FORM)
        return value

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str | None) -> str | None:
        if value is not None and not BUCKET_NAME.fullmatch(value):
            raise ValueError(f"{quote(value)} is not a valid S3 bucket name")
        return value


def aws_settings(config: PipelineConfig) -> AwsConfig:
    """The ``aws:`` section; a config for cloud aws without one is refused here."""
    aws = config.section("aws", AwsConfig)
    if aws is None:
        raise ConfigError("aws", "is required for cloud aws (region, role, bucket)")
    return aws
