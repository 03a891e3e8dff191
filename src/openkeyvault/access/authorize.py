"""The authorization decision every domain operation asks for.

Deny by default: a principal may do a data action at a scope only if one of its
role assignments covers the scope and the assigned role grants the action.
Scopes are paths: `/` (the deployment), `/vaults/NAME`, `/vaults/NAME/secrets`,
`/vaults/NAME/secrets/SECRET` (and likewise for keys).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
    """Decides from the principal's role assignments, fetched through `lookup` (storage
    memoises them until anything is written, so a change applies from the next request)."""

    def __init__(self, lookup: Callable[[str], Iterable[RoleAssignment]]) -> None:
        self._lookup = lookup

    @classmethod
    def static(cls, assignments: Iterable[RoleAssignment] = ()) -> Authorizer:
        by_principal: dict[str, list[RoleAssignment]] = {}
        for a in assignments:
            by_principal.setdefault(a.principal_id, []).append(a)
        return cls(lambda oid: by_principal.get(oid, ()))

    def allowed(self, principal: Principal, data_action: str, scope: Scope) -> bool:
        if data_action not in ALL:
            return False
        resource = scope.resource
        return any(a.covers(resource) and permits(a.role, data_action)
                   for a in self._lookup(principal.object_id))
