"""The authorization decision every domain operation asks for.

Deny by default: a principal may do a data action at a scope only if one of its
role assignments covers the scope and the assigned role grants the action.
Scopes are paths: `/` (the deployment), `/vaults/NAME`, `/vaults/NAME/secrets`,
`/vaults/NAME/secrets/SECRET` (and likewise for keys). For now assignments are
given at start-up (a dev server assigns Key Vault Administrator at `/` to its
dev identity); stored assignments and the RBAC API come behind the same call.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from openkeyvault.access.actions import ALL
from openkeyvault.access.principals import Principal
from openkeyvault.access.roles import RoleDefinition, permits


@dataclass(frozen=True)
class Scope:
    vault: str
    path: str = "/"  # "/", "/secrets", "/secrets/NAME"

    @property
    def resource(self) -> str:
        path = "" if self.path == "/" else self.path
        return f"/vaults/{self.vault}{path}".lower()


@dataclass(frozen=True)
class RoleAssignment:
    principal_id: str
    role: RoleDefinition
    scope: str = "/"

    def covers(self, resource: str) -> bool:
        scope = self.scope.lower().rstrip("/")
        return not scope or resource == scope or resource.startswith(scope + "/")


class Authorizer:
    def __init__(self, assignments: Iterable[RoleAssignment] = ()) -> None:
        self._by_principal: dict[str, list[RoleAssignment]] = {}
        for a in assignments:
            self._by_principal.setdefault(a.principal_id, []).append(a)

    def allowed(self, principal: Principal, data_action: str, scope: Scope) -> bool:
        if data_action not in ALL:
            return False
        resource = scope.resource
        return any(a.covers(resource) and permits(a.role, data_action)
                   for a in self._by_principal.get(principal.object_id, ()))
