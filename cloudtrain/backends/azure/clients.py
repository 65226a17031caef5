"""The one place Azure clients are built: the seam tests swap for a fake and Azurite.

``MLClient`` talks to the workspace's control plane (compute, environments, data assets,
jobs); blob clients talk to the datastore's storage account. Credentials come from
``DefaultAzureCredential`` or a prefect-azure credentials block. azure-ai-ml costs ~1.3 s
to import, so nothing here imports it before it is needed.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from cloudtrain.errors import ConfigError

if TYPE_CHECKING:
    from cloudtrain.config import AzureConfig


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
            return self._registry_client

    def container_client(self, account_url: str, container: str) -> Any:
        """A ContainerClient for a datastore's container (Azurite when a connection
        string was given)."""
        from azure.storage.blob import ContainerClient

        if self._blob_connection_string:
            return ContainerClient.from_connection_string(
                self._blob_connection_string, container_name=container
            )
        return ContainerClient(account_url, container, credential=self.credential)


def _credential(azure: AzureConfig) -> Any:
    if azure.credentials_block:
        try:
            from prefect_azure import AzureMlCredentials
        except ImportError:
            raise ConfigError(
                "azure.credentials_block", "needs prefect-azure: pip install prefect-azure"
            ) from None
        try:
            block: Any = AzureMlCredentials.load(azure.credentials_block, _sync=True)
        except ValueError as exc:
            raise ConfigError(
                "azure.credentials_block",
                f"no AzureMlCredentials block {azure.credentials_block!r}",
            ) from exc
        return block.get_credential()
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()
