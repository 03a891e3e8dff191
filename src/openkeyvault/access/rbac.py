"""Role assignments: who holds which role at which scope (stored; read on every decision)."""

from __future__ import annotations

import re
import uuid

from openkeyvault.access.authorize import RoleAssignment
from openkeyvault.access.roles import RoleDefinition, find
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.records import RoleAssignmentRecord
from openkeyvault.storage.repository import Repository

SCOPE = re.compile(
    r"/|/vaults/[a-z0-9-]{3,24}(/(secrets|keys|certificates)(/[0-9a-z-]{1,127})?)?",
    re.IGNORECASE,
)


class RbacError(ValueError):
    """A refused change (message safe to show)."""


class RoleAssignments:
    def __init__(self, repo: Repository, clock: Clock) -> None:
        self._repo = repo
        self._clock = clock
        self._converted: dict[str, tuple[tuple[RoleAssignmentRecord, ...],
                                         tuple[RoleAssignment, ...]]] = {}

    def assign(self, principal_id: str, role: str, scope: str = "/") -> RoleAssignmentRecord:
        definition = find(role)
        if definition is None:
            raise RbacError(f"Unknown role '{role[:80]}'.")
        scope = scope.rstrip("/") or "/"
        if not SCOPE.fullmatch(scope):
            raise RbacError(
                f"Invalid scope '{scope[:200]}': use /, /vaults/NAME, /vaults/NAME/secrets, "
                "/vaults/NAME/secrets/NAME (or keys, certificates)."
            )
        if self._repo.get_principal(object_id=principal_id) is None:
            raise RbacError("No such principal.")
        for existing in self._repo.role_assignments(principal_id):
            if existing.role_definition_id == definition.id and \
                    existing.scope.lower() == scope.lower():
                return existing
        record = RoleAssignmentRecord(str(uuid.uuid4()), scope, definition.id, principal_id,
                                      int(self._clock.now()))
        self._repo.add_role_assignment(record)
        return record

    def remove(self, assignment_id: str) -> bool:
        return self._repo.delete_role_assignment(assignment_id)

    def all(self) -> list[RoleAssignmentRecord]:
        return self._repo.role_assignments()

    def of(self, principal_id: str) -> tuple[RoleAssignment, ...]:
        """The principal's assignments whose role is known, for the Authorizer."""
        records = tuple(self._repo.role_assignments(principal_id))
        hit = self._converted.get(principal_id)
        if hit is not None and hit[0] == records:
            return hit[1]
        out = []
        for r in records:
            definition: RoleDefinition | None = find(r.role_definition_id)
            if definition is not None:
                out.append(RoleAssignment(r.principal_id, definition, r.scope))
        if len(self._converted) > 4096:
            self._converted.clear()
        self._converted[principal_id] = (records, tuple(out))
        return tuple(out)
