"""The authorization decision every domain operation asks for.

Deny by default: a principal may do a data action at a scope only if one of its
role assignments covers the scope and the assigned role grants the action.
Scopes are paths: `/` (the deployment), `/vaults/NAME`, `/vaults/NAME/secrets`,
`/vaults/NAME/secrets/SECRET` (and likewise for keys). An assignment at a subscription or
resource-group scope (`/subscriptions/S[/resourceGroups/RG]`, access/control.py) covers
the vaults placed there, as the optional `placement` lookup reports.
"""

from __future__ import annotations

import threading
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


_MEMO_LIMIT = 16_384


class Authorizer:
    """Decides from the principal's role assignments, fetched through `lookup` (storage
    memoises them until anything is written, so a change applies from the next request)."""

    def __init__(self, lookup: Callable[[str], Iterable[RoleAssignment]],
                 generation: Callable[[], object] | None = None,
                 placement: Callable[[str], tuple[str, str] | None] | None = None) -> None:
        """`generation()` returns the same object for as long as nothing `lookup` reads has
        changed (storage's snapshot); decisions are memoised under it, per thread, so a
        repeated decision costs one dict lookup and a change applies from the next request."""
        self._lookup = lookup
        self._generation = generation
        self._placement = placement
        self._local = threading.local()

    @classmethod
    def static(cls, assignments: Iterable[RoleAssignment] = ()) -> Authorizer:
        by_principal: dict[str, list[RoleAssignment]] = {}
        for a in assignments:
            by_principal.setdefault(a.principal_id, []).append(a)
        return cls(lambda oid: by_principal.get(oid, ()))

    def allowed(self, principal: Principal, data_action: str, scope: Scope) -> bool:
        if self._generation is None:
            return self._decide(principal.object_id, data_action, scope)
        generation = self._generation()
        local = self._local
        memo: dict[tuple[str, str, str, str], bool] | None = getattr(local, "memo", None)
        if memo is None or local.generation is not generation or len(memo) >= _MEMO_LIMIT:
            memo = local.memo = {}
            local.generation = generation
        key = (principal.object_id, data_action, scope.vault, scope.path)
        found = memo.get(key)
        if found is None:
            found = memo[key] = self._decide(principal.object_id, data_action, scope)
        return found

    def _decide(self, object_id: str, data_action: str, scope: Scope) -> bool:
        if data_action not in ALL:
            return False
        resource = scope.resource
        found = self._lookup(object_id)
        return any((a.covers(resource) or self._placed_under(a, resource))
                   and permits(a.role, data_action) for a in found)

    def _placed_under(self, a: RoleAssignment, resource: str) -> bool:
        """True if `a` is at the subscription or resource group of the resource's vault."""
        if self._placement is None or not a.scope.startswith("/subscriptions/") \
                or not resource.startswith("/vaults/"):
            return False
        where = self._placement(resource.split("/", 3)[2])
        if where is None:
            return False
        sub = f"/subscriptions/{where[0]}".lower()
        scope = a.scope.lower().rstrip("/")
        return scope == sub or scope == f"{sub}/resourcegroups/{where[1].lower()}"

    def allowed_at(self, principal: Principal, action: str, resource: str,
                   assigning: str | None = None) -> bool:
        """Like `allowed`, at a resource path (`/` is the whole deployment, `/vaults/V/keys/K`
        one key). With `assigning`, the GUID of the role whose assignment is written or
        deleted, a role that carries an assignment condition grants only for the roles the
        condition names."""
        if action not in ALL:
            return False
        resource = resource.lower()
        return any((a.covers(resource) or self._placed_under(a, resource))
                   and permits(a.role, action)
                   and (assigning is None or a.role.assignable_roles is None
                        or assigning.lower() in a.role.assignable_roles)
                   for a in self._lookup(principal.object_id))
