"""The one place Azure clients are built: the seam tests swap for a fake and Azurite.

``MLClient`` talks to the workspace's control plane (compute, environments, data assets,
jobs); blob clients talk to the datastore's storage account. Credentials come from
``DefaultAzureCredential`` or a prefect-azure credentials block. azure-ai-ml costs ~1.3 s
to import, so nothing here imports it before it is needed.

Every MLClient operation goes through one retry policy: azure-core's own RetryPolicy
retries 429/5xx a few times, then ``cloudtrain.retrying`` waits and calls again for
minutes, as for AWS.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from cloudtrain.backends.azure.errors import is_transient
from cloudtrain.errors import ConfigError, quote
from cloudtrain.retrying import RetryingProxy

if TYPE_CHECKING:
    from cloudtrain.backends.azure.settings import AzureConfig


#: MLClient's operation groups the backend calls (``ml_client.jobs.get(...)``).
OPERATION_GROUPS = frozenset({"compute", "data", "datastores", "environments", "jobs", "models"})


class AzureClients:
    """An MLClient for one workspace and blob container clients for its datastores.

    ``ml_client`` and ``container_for`` can be given directly (tests: a fake MLClient
    and containers on Azurite); otherwise they are built from the config on first use.
    """

    def __init__(
        self,
        azure: AzureConfig,
        *,
        ml_client: Any | None = None,
        registry_client: Any | None = None,
        credential: Any | None = None,
        blob_connection_string: str | None = None,
    ) -> None:
        self.azure = azure
        self._ml_client = ml_client
        self._registry_client = registry_client
        self._credential = credential
        self._blob_connection_string = blob_connection_string
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, azure: AzureConfig) -> AzureClients:
        """Built from the config; tests replace this to inject a fake MLClient and Azurite."""
        return cls(azure)

    @property
    def credential(self) -> Any:
        if self._credential is None:
            self._credential = _credential(self.azure)
        return self._credential

    @property
    def ml_client(self) -> Any:
        """The workspace's MLClient, its operations retried while throttled."""
        return RetryingProxy(self._workspace_client(), is_transient, groups=OPERATION_GROUPS)

    def _workspace_client(self) -> Any:
        with self._lock:
            if self._ml_client is None:
                from azure.ai.ml import MLClient

                azure = self.azure
                missing = [
                    name
                    for name in ("subscription_id", "resource_group", "workspace")
                    if not getattr(azure, name)
                ]
                if missing:
                    raise ConfigError(f"azure.{missing[0]}", "is required for cloud azure")
                self._ml_client = MLClient(
                    self.credential, azure.subscription_id, azure.resource_group, azure.workspace
                )
            return self._ml_client

    @property
    def registry_client(self) -> Any:
        """An MLClient on the ``azureml`` registry, where curated environments live."""
        with self._lock:
            if self._registry_client is None:
                from azure.ai.ml import MLClient

                self._registry_client = MLClient(self.credential, registry_name="azureml")
            raw = self._registry_client
        return RetryingProxy(raw, is_transient, groups=OPERATION_GROUPS)

    def container_client(self, account_url: str, container: str) -> Any:
        """A ContainerClient for a datastore's container (Azurite when a connection
        string was given)."""
        from azure.storage.blob import ContainerClient

        if self._blob_connection_string:
            return ContainerClient.from_connection_string(
                self._blob_connection_string, container_name=container
            )
        return ContainerClient(account_url, container, credential=self.credential)


#: prefect-azure's "AzureML Credentials" block: a service principal for one workspace.
AZUREML_BLOCK_TYPE = "azureml-credentials"


def _credential(azure: AzureConfig) -> Any:
    """DefaultAzureCredential, or a service principal from a prefect-azure block.

    The block document is read through Prefect's API, so prefect-azure (and what it pulls
    in) need not be installed; its secret goes straight into the credential object.
    """
    if not azure.credentials_block:
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()
    from azure.identity import ClientSecretCredential
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            document = client.read_block_document_by_name(
                azure.credentials_block, AZUREML_BLOCK_TYPE, include_secrets=True
            )
    except ObjectNotFound as exc:
        raise ConfigError(
            "azure.credentials_block",
            f"no {AZUREML_BLOCK_TYPE} block named {quote(azure.credentials_block)}",
        ) from exc
    data = document.data
    missing = [
        k
        for k in ("tenant_id", "service_principal_id", "service_principal_password")
        if not data.get(k)
    ]
    if missing:
        raise ConfigError("azure.credentials_block", f"the block has no {missing[0]}")
    secret = data["service_principal_password"]
    secret = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)
    return ClientSecretCredential(data["tenant_id"], data["service_principal_id"], secret)
