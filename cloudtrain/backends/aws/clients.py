"""The one place boto3 clients are built: the seam tests point at moto's server.

Credentials come from boto3's default chain, or from a prefect-aws ``AwsCredentials``
block named in ``aws.credentials_block``. ``AWS_ENDPOINT_URL`` (which boto3 honours for
every service) or an explicit ``endpoint_url`` sends everything to an emulator. Clients
are created once per service and shared: they are thread-safe, sessions are not.

Every call goes through one retry policy: botocore's standard mode retries throttling and
5xx a few times within seconds, then ``cloudtrain.retrying`` waits and calls again for
minutes (``client``). Only s3transfer gets the bare client (``raw_client``): a transfer
retries its own parts, and a half-read body must not be sent again from outside.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from cloudtrain.backends.aws.errors import is_transient
from cloudtrain.backends.aws.sdk import load_block
from cloudtrain.errors import ConfigError, quote
from cloudtrain.retrying import RetryingProxy

if TYPE_CHECKING:
    import boto3
    from botocore.client import BaseClient

    from cloudtrain.backends.aws.settings import AwsConfig

#: botocore's own retries for every call (throttling included), before ours.
BOTOCORE_RETRIES = {"mode": "standard", "max_attempts": 5}
#: A botocore client's methods that make no request: not wrapped in the retry policy.
NOT_REQUESTS = frozenset(
    {
        "can_paginate",
        "close",
        "generate_presigned_post",
        "generate_presigned_url",
        "get_paginator",
        "get_waiter",
    }
)
#: Connections per client: enough for the upload's worker threads.
MAX_POOL_CONNECTIONS = 32


class AwsClients:
    """boto3 clients for one region and one set of credentials."""

    def __init__(self, session: boto3.Session, endpoint_url: str | None = None) -> None:
        self.session = session
        self.region = session.region_name or "us-east-1"
        self.endpoint_url = endpoint_url
        self._clients: dict[str, BaseClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, aws: AwsConfig, endpoint_url: str | None = None) -> AwsClients:
        import boto3

        if aws.credentials_block:
            return cls(_session_from_block(aws.credentials_block, aws.region), endpoint_url)
        return cls(boto3.Session(region_name=aws.region), endpoint_url)

    def client(self, service: str) -> Any:
        """The shared client for ``service`` (s3, sagemaker, ecr, sts, logs, iam), its
        calls retried while throttled (``cloudtrain.retrying``). Paginators bypass it."""
        return RetryingProxy(self.raw_client(service), is_transient, passthrough=NOT_REQUESTS)

    def raw_client(self, service: str) -> Any:
        """The botocore client itself (botocore's retries only), for s3transfer."""
        with self._lock:
            if service not in self._clients:
                from botocore.config import Config

                self._clients[service] = self.session.client(
                    service,
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    config=Config(
                        retries=BOTOCORE_RETRIES,
                        max_pool_connections=MAX_POOL_CONNECTIONS,
                    ),
                )
            return self._clients[service]


def _session_from_block(name: str, region: str) -> boto3.Session:
    """A boto3 session from a prefect-aws AwsCredentials block; its secret never leaves it."""
    try:
        from prefect_aws import AwsCredentials
    except ImportError:
        raise ConfigError(
            "aws.credentials_block", "needs prefect-aws: pip install prefect-aws"
        ) from None
    try:
        block = load_block(AwsCredentials, name)
    except ValueError as exc:
        raise ConfigError(
            "aws.credentials_block", f"no AwsCredentials block {quote(name)}"
        ) from exc
    session: boto3.Session = block.get_boto3_session()
    if session.region_name is None:
        import boto3

        credentials = session.get_credentials()
        session = boto3.Session(
            aws_access_key_id=credentials.access_key if credentials else None,
            aws_secret_access_key=credentials.secret_key if credentials else None,
            aws_session_token=credentials.token if credentials else None,
            region_name=region,
        )
    return session
