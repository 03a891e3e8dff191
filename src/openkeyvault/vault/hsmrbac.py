"""Role management on one managed HSM pool: the pool's local RBAC.

The operations of rbac.json as `AccessControlService` runs them for a vault, with what
makes a pool different:

- scopes are the pool's `/`, `/keys` and `/keys/NAME` (internally `/vaults/POOL...`);
- only the pool's own assignments count and show: none made at the deployment `/` or at a
  subscription reaches a pool, so nobody but its initial administrators holds a role on a
  new pool until one of them assigns it (the `Authorizer` given here sees only those);
- the roles are Managed HSM's built-in roles and the pool's own custom roles, which are
  created, changed and deleted at the pool's `/` with its `roleDefinitions/write|delete`
  data actions (access/definitions.py keeps them apart from every other pool's and vault's);
- an assignment is named by a GUID unique in the pool, so at `/` (which covers the whole
  pool) one is found, read and deleted by its name whatever its scope: the Azure CLI
  deletes `--name X` at `/` when no `--scope` is given, and the SDK takes a 404 there as
  done.
"""

from __future__ import annotations

from collections.abc import Iterable

from openkeyvault.access.definitions import POOL_SCOPE, guid_of
from openkeyvault.access.roles import RoleDefinition
from openkeyvault.storage.records import RoleAssignmentRecord
from openkeyvault.vault.accesscontrol import (
    AccessControlService,
    Assignment,
    _domain_errors,
    definition_document,
)
from openkeyvault.vault.context import Caller
from openkeyvault.vault.controlrequests import RoleAssignmentCreate, RoleDefinitionCreate
from openkeyvault.vault.errors import BadParameter, NotFound


def _pool(caller: Caller) -> str:
    return caller.vault.name.lower()


class PoolAccessControl(AccessControlService):
    @staticmethod
    def scope(rel: str) -> str:
        if len(rel) > 256 or not POOL_SCOPE.fullmatch(rel):
            raise BadParameter(f"The scope '{rel[:200]}' is not valid: use /, /keys or "
                               "/keys/NAME.")
        return rel

    def _visible(self, caller: Caller, r: RoleAssignmentRecord) -> Assignment | None:
        """The record as the pool shows it: made at the pool or below it, else None."""
        scope, home = r.scope.lower(), f"/vaults/{_pool(caller)}"
        if scope != home and not scope.startswith(home + "/"):
            return None
        rel = r.scope[len(home):] or "/"
        return Assignment(r.id, rel, r.role_definition_id, r.principal_id)

    def _lookup(self, caller: Caller, rel: str, name: str) -> tuple[Assignment, str]:
        record = self._assignments.get(name)
        a = self._visible(caller, record) if record is not None else None
        if record is None or a is None or (rel != "/" and a.scope.lower() != rel.lower()):
            raise NotFound(f"Role assignment '{name}' was not found at scope '{rel}'.",
                           "RoleAssignmentNotFound")
        return a, record.scope

    def _applies(self, caller: Caller, role: RoleDefinition) -> bool:
        """Managed HSM's built-in roles and the pool's own custom roles."""
        if role.built_in:
            return role.kind == "managedhsm"
        return role.owner == _pool(caller)

    # ---- role assignments -----------------------------------------------------------
    def create_assignment(self, caller: Caller, rel: str, name: str,
                          request: RoleAssignmentCreate | None) -> tuple[Assignment, bool]:
        if request is not None and request.role_definition_id:
            # Authorization first (the base class checks it again, with the role).
            self._authorize(caller, "roleAssignments", "write",
                            self._internal(caller, self.scope(rel)))
            guid = guid_of(request.role_definition_id)
            role = self._definitions.get(guid) if guid is not None else None
            if role is None or not self._applies(caller, role):
                raise BadParameter(f"The role definition "
                                   f"'{request.role_definition_id[:120]}' does not exist "
                                   "on this managed HSM.")
        return super().create_assignment(caller, rel, name, request)

    # ---- role definitions -----------------------------------------------------------
    def _listed_definitions(self, caller: Caller) -> Iterable[RoleDefinition]:
        return self._definitions.all(_pool(caller))

    def set_definition(self, caller: Caller, rel: str, name: str,
                       request: RoleDefinitionCreate | None) -> RoleDefinition:
        self._definition_scope(rel)
        self._authorize(caller, "roleDefinitions", "write", self._internal(caller, "/"))
        guid = self._name(name, "role definition")
        with _domain_errors():
            return self._definitions.set(guid, definition_document(request),
                                         _pool(caller))[0]

    def delete_definition(self, caller: Caller, rel: str, name: str) -> RoleDefinition:
        self._definition_scope(rel)
        self._authorize(caller, "roleDefinitions", "delete", self._internal(caller, "/"))
        guid = self._name(name, "role definition")
        with _domain_errors():
            return self._definitions.delete(guid, _pool(caller))
