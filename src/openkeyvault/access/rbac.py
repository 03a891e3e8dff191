"""Role assignments: who holds which role at which scope (stored; read on every decision).

The rules for a new assignment live here once, for the REST API and `okv role`
alike: a known scope, a known role definition assignable there, an existing
principal, a GUID name, and no second assignment with the same content.
Scopes are paths: `/` (the deployment), `/vaults/NAME`, `/vaults/NAME/keys`,
`/vaults/NAME/keys/KEY` (likewise secrets, certificates), and the placement scopes
`/subscriptions/S` and `/subscriptions/S/resourceGroups/RG`; ARM scopes are accepted and
stored in this internal form (access/control.py).
"""

from __future__ import annotations

import re
import uuid

from openkeyvault.access.authorize import RoleAssignment
from openkeyvault.access.control import arm_to_internal, is_placement_scope
from openkeyvault.access.definitions import (
    GUID,
    RbacConflict,
    RbacError,
    RbacNotFound,
    RoleDefinitions,
)
from openkeyvault.access.roles import BY_ID, RoleDefinition
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.records import RoleAssignmentRecord, RoleDefinitionRecord
from openkeyvault.storage.repository import Repository

__all__ = ["SCOPE", "RbacConflict", "RbacError", "RbacNotFound", "RoleAssignments"]

SCOPE = re.compile(
    r"/|/vaults/[a-z0-9-]{3,24}(/(secrets|keys|certificates)(/[0-9a-z-]{1,127})?)?",
    re.IGNORECASE,
)
# ARM scopes (`/subscriptions/...`) are stored in their internal form (access/control.py):
# a vault scope as `/vaults/NAME...`, a subscription or resource group as itself.
_VAULT_PREFIX = re.compile(r"/vaults/[^/]+", re.IGNORECASE)


def relative(scope: str) -> str:
    """The part of an internal scope below its vault: `/vaults/V/keys/K` → `/keys/K`;
    the deployment `/` and a vault both → `/`."""
    return _VAULT_PREFIX.sub("", scope, count=1) or "/"


def assignable_at(role: RoleDefinition, scope: str) -> bool:
    """Whether `role` may be assigned at internal `scope`: a pool's own custom role only
    within that pool."""
    if role.owner is not None:
        home = f"/vaults/{role.owner}"
        if scope.lower() != home and not scope.lower().startswith(home + "/"):
            return False
    rel = relative(scope).lower()
    return any(s == "/" or rel == s.lower() or rel.startswith(s.lower() + "/")
               for s in role.assignable_scopes)


def exists_conflict() -> RbacConflict:
    return RbacConflict("The role assignment already exists.", "RoleAssignmentExists")


class RoleAssignments:
    def __init__(self, repo: Repository, clock: Clock, definitions: RoleDefinitions) -> None:
        self._repo = repo
        self._clock = clock
        self.definitions = definitions
        self._converted: dict[str, tuple[tuple[RoleAssignmentRecord, ...],
                                         tuple[RoleDefinitionRecord, ...] | None,
                                         tuple[RoleAssignment, ...]]] = {}

    def _prepare(self, name: str, principal_id: str, role: str, scope: str
                 ) -> tuple[RoleAssignmentRecord, RoleDefinition]:
        if not isinstance(name, str) or not GUID.fullmatch(name):
            raise RbacError("The role assignment name must be a GUID.")
        internal: str | None = scope
        if isinstance(scope, str) and scope.lower().startswith("/subscriptions/"):
            internal = arm_to_internal(scope)
        if not isinstance(internal, str) or len(internal) > 512 or not (
                SCOPE.fullmatch(internal.rstrip("/") or "/") or is_placement_scope(internal)):
            raise RbacError(
                f"Invalid scope '{str(scope)[:200]}': use /, /vaults/NAME, "
                "/vaults/NAME/secrets, /vaults/NAME/secrets/NAME (or keys, certificates), "
                "or an ARM scope: /subscriptions/ID[/resourceGroups/RG[/providers/"
                "Microsoft.KeyVault/vaults/NAME[/secrets[/NAME]]]]."
            )
        scope = internal.rstrip("/") or "/"
        definition = self.definitions.find(role) if isinstance(role, str) else None
        if definition is None:
            raise RbacError(f"The role definition '{str(role)[:120]}' does not exist.")
        if not assignable_at(definition, scope):
            raise RbacError(f"The role definition '{definition.id}' is not assignable at "
                            f"scope '{scope}'.")
        if not isinstance(principal_id, str) or len(principal_id) > 64 \
                or self._repo.get_principal(object_id=principal_id) is None:
            raise RbacError(f"Principal '{str(principal_id)[:64]}' does not exist in the "
                            "directory.")
        return RoleAssignmentRecord(name.lower(), scope, definition.id, principal_id,
                                    int(self._clock.now())), definition

    def create(self, name: str, principal_id: str, role: str, scope: str
               ) -> tuple[RoleAssignmentRecord, bool]:
        """Create assignment `name`; (record, created). The same name with the same content
        answers the stored one; another content, or the same content under another name,
        is RoleAssignmentExists."""
        return self._create(name, principal_id, role, scope, idempotent=False)

    def assign(self, principal_id: str, role: str, scope: str = "/") -> RoleAssignmentRecord:
        """Give a principal a role (role by name, GUID or id) under a new name; when an
        identical assignment exists it is answered as it is."""
        return self._create(str(uuid.uuid4()), principal_id, role, scope, idempotent=True)[0]

    def _create(self, name: str, principal_id: str, role: str, scope: str, idempotent: bool
                ) -> tuple[RoleAssignmentRecord, bool]:
        record, definition = self._prepare(name, principal_id, role, scope)
        status, existing = self._repo.create_role_assignment(record, not definition.built_in)
        if status == "created":
            return record, True
        if existing is not None and (status == "same"
                                     or (status == "duplicate" and idempotent)):
            return existing, False
        if status == "no_definition":
            raise RbacError(f"The role definition '{definition.id}' does not exist.")
        raise exists_conflict()

    def get(self, name: str) -> RoleAssignmentRecord | None:
        if not isinstance(name, str) or not GUID.fullmatch(name):
            return None
        return self._repo.get_role_assignment(name.lower())

    def remove(self, name: str) -> bool:
        return GUID.fullmatch(name) is not None and \
            self._repo.delete_role_assignment(name.lower())

    def all(self) -> list[RoleAssignmentRecord]:
        return self._repo.role_assignments()

    def local_to_resources(self, principal_id: str) -> tuple[RoleAssignment, ...]:
        """The principal's assignments made at a vault or pool or below it, none at the
        deployment or a subscription: a managed HSM pool decides with these only (its local
        RBAC)."""
        return tuple(a for a in self.of(principal_id)
                     if a.scope.lower().startswith("/vaults/"))

    def of(self, principal_id: str) -> tuple[RoleAssignment, ...]:
        """The principal's assignments whose role is known, for the Authorizer.

        Converted once per change: of the principal's assignments, and (only when it holds
        a custom role) of the custom role definitions, so an edited role applies from the
        next request.
        """
        records = tuple(self._repo.role_assignments(principal_id))
        custom = None
        if any(r.role_definition_id not in BY_ID for r in records):
            custom = self._repo.role_definitions()
        hit = self._converted.get(principal_id)
        if hit is not None and hit[0] == records and hit[1] == custom:
            return hit[2]
        out = []
        for r in records:
            definition = self.definitions.get(r.role_definition_id)
            if definition is not None:
                out.append(RoleAssignment(r.principal_id, definition, r.scope))
        if len(self._converted) > 4096:
            self._converted.clear()
        self._converted[principal_id] = (records, custom, tuple(out))
        return tuple(out)
