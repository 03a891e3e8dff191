"""The vault firewall: a vault whose network rules deny the client's address refuses
the request (403, inner `ForbiddenByFirewall`) before routing; the body is dropped
unread."""

from __future__ import annotations

from starlette.requests import Request

from openkeyvault.access.network import ClientAddresses, NetworkAcls
from openkeyvault.access.principals import Principal
from openkeyvault.storage.records import VaultRecord
from openkeyvault.vault.errors import Forbidden


def refusal(acls: NetworkAcls, addresses: ClientAddresses, request: Request,
            principal: Principal, vault: VaultRecord) -> Forbidden | None:
    """None if the client's address may reach the vault, else the refusal to raise."""
    client = request.scope.get("client")
    peer = client[0] if client else None
    forwarded = request.headers.getlist("x-forwarded-for") if addresses.trusted else []
    address = addresses.resolve(peer if isinstance(peer, str) else None, forwarded)
    if acls.allows(address):
        return None
    return Forbidden(
        "Client address is not authorized and caller is not a trusted service.\r\n"
        f"Client address: {address if address is not None else 'unknown'}\r\n"
        f"Caller: {principal.describe_with_issuer()}\r\n"
        f"Vault: {vault.name};location=local",
        inner="ForbiddenByFirewall",
    )
