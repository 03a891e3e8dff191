"""What the Premium vault tests share: a Premium vault made on the shared dev server,
and a KeyClient on its own host (the SDK's challenge verification on)."""

from __future__ import annotations

from azure.identity import DefaultAzureCredential
from azure.keyvault.keys import KeyClient

from tests.sdk.clients import unique
from tests.support.server import DevServer


def premium_vault(server: DevServer, prefix: str) -> str:
    """A new Premium vault's name (made with `okv vault create --sku premium`)."""
    name = unique(prefix)[:20]
    made = server.okv("vault", "create", name, "--sku", "premium")
    assert made.returncode == 0, made.stderr
    return name


def key_client(server: DevServer, vault: str) -> KeyClient:
    return KeyClient(server.vault_url(vault), DefaultAzureCredential())
