"""Runs first inside a cloud training job: secret references in, values into the script's
environment, then the training script in this same process.

Why: SageMaker shows a job's Environment in DescribeTrainingJob and Azure ML shows a
command job's environment variables, so a value passed there is readable by anyone who
may describe jobs. Only references travel (``CLOUDTRAIN_SECRETS``, JSON); the job's own
identity (the SageMaker execution role, the Azure ML compute's identity) reads the values
from AWS Secrets Manager or Azure Key Vault, and the script is started with ``os.execv``,
so it keeps the launcher's process (signals, exit code) and nothing else sees the values.

This file is shipped into the job as it is: the standard library, plus boto3 (in every
SageMaker image) or azure-identity and azure-keyvault-secrets (in the Azure ML
environment); it imports nothing from cloudtrain. ``cloudtrain.secrets`` uses its fetch
functions on the orchestrator too.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

#: The name the launcher has inside the job (beside the script in SageMaker's code archive).
FILE_NAME = "cloudtrain_secrets_launcher.py"
REFS_VARIABLE = "CLOUDTRAIN_SECRETS"  # {NAME: {kind: reference}}
ENTRY_VARIABLE = "CLOUDTRAIN_ENTRY_POINT"  # the script to run
REGION_VARIABLE = "CLOUDTRAIN_SECRETS_REGION"  # Secrets Manager's region for plain names


def fetch_aws(secret_id: str, region: str | None) -> str:
    """A string secret from AWS Secrets Manager (an ARN names its own region)."""
    import boto3

    if secret_id.startswith("arn:"):
        region = secret_id.split(":")[3] or region
    answer = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=secret_id)
    if "SecretString" not in answer:
        raise ValueError("a binary secret; store it as a string")
    return str(answer["SecretString"])


def fetch_key_vault(vault_url: str, name: str, version: str | None) -> str:
    """A secret from Azure Key Vault with the job's (or the caller's) Azure identity."""
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    client = SecretClient(vault_url, DefaultAzureCredential())
    return client.get_secret(name, version).value or ""


def vault_url(vault: str) -> str:
    return (
        vault.rstrip("/") + "/"
        if vault.startswith("https://")
        else f"https://{vault}.vault.azure.net/"
    )


def fetch(ref: dict[str, Any], region: str | None) -> str:
    """One reference as ``cloudtrain.secrets.SecretRef`` writes it for a job."""
    if ref.get("aws_secrets_manager"):
        return fetch_aws(ref["aws_secrets_manager"], region)
    vault = ref.get("azure_key_vault")
    if vault:
        return fetch_key_vault(vault_url(vault["vault"]), vault["name"], vault.get("version"))
    raise ValueError(f"this job cannot resolve {sorted(ref)}")


def main(argv: list[str]) -> None:
    refs: dict[str, dict[str, Any]] = json.loads(os.environ.pop(REFS_VARIABLE, "{}"))
    region = os.environ.get(REGION_VARIABLE) or os.environ.get("AWS_REGION")
    for name, ref in refs.items():
        try:
            os.environ[name] = fetch(ref, region)
        except Exception as exc:  # one line naming the secret, never a value
            print(
                f"cloudtrain: secrets.{name}: cannot read it: {type(exc).__name__}: {exc}"[:300],
                file=sys.stderr,
            )
            raise SystemExit(2) from None
    entry = os.environ.get(ENTRY_VARIABLE) or (argv.pop(0) if argv else "")
    if not entry:
        print(f"cloudtrain: no script to run ({ENTRY_VARIABLE} is not set)", file=sys.stderr)
        raise SystemExit(2)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, entry, *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
