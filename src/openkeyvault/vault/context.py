"""What every domain operation receives: who is calling, on which vault, and the checks."""

from __future__ import annotations

from dataclasses import dataclass

from openkeyvault.access.authorize import Authorizer, Scope
from openkeyvault.access.principals import Principal
from openkeyvault.storage.records import VaultRecord
from openkeyvault.vault.errors import Forbidden


@dataclass(frozen=True)
class Caller:
    principal: Principal
    vault: VaultRecord


def authorize(authorizer: Authorizer, caller: Caller, data_action: str, path: str) -> None:
    """Deny by default: raise Forbidden unless `caller` may do `data_action` at `path`."""
    if authorizer.allowed(caller.principal, data_action, Scope(caller.vault.name, path)):
        return
    raise Forbidden(
        "Caller is not authorized to perform action on resource.\r\n"
        "If role assignments, deny assignments or role definitions were changed recently, "
        "please observe propagation time.\r\n"
        f"Caller: {caller.principal.describe()}\r\n"
        f"Action: '{data_action}'\r\n"
        f"Resource: '/vaults/{caller.vault.name}{path}'\r\n"
        "Assignment: (not found)\r\n"
        f"Vault: {caller.vault.name};location=local\r\n",
        inner="ForbiddenByRbac",
    )
