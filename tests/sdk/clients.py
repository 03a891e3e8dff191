"""Client constructors shared by the SDK tests."""

from __future__ import annotations

import uuid

from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from tests.support.server import DevServer


def unique(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def localhost_client(server: DevServer) -> SecretClient:
    """The default vault on bare localhost: challenge verification must be off."""
    return SecretClient(server.url, ManagedIdentityCredential(), verify_challenge_resource=False)


def vault_client(server: DevServer, vault: str = "dev") -> SecretClient:
    """A vault on its own host name, with the SDK's challenge verification on."""
    return SecretClient(server.vault_url(vault), DefaultAzureCredential())
