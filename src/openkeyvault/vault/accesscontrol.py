"""Role management on one vault: the operations of rbac.json as domain calls.

Scopes here are the data plane's, relative to the vault the request addresses:
`/` is the vault itself (internal scope `/vaults/V`), `/keys` its keys, `/keys/K`
one key (likewise secrets and certificates). An assignment made with `okv role` at
the deployment scope `/` covers every vault; each vault shows it at `/`.

Deny by default. Each operation needs the action `actions.ROLE_MANAGEMENT` names
for the vault's kind (on a vault the control-plane `Microsoft.Authorization/...`
actions, granted through a role's `actions`; on a Managed HSM its data actions):

- reading assignments or definitions: `.../read` at the requested scope;
- creating an assignment: `roleAssignments/write` at its scope, and a role's
  assignment condition (Key Vault Data Access Administrator's) must admit the role
  being assigned; deleting one: `roleAssignments/delete` at its scope, likewise;
- creating, changing or deleting a custom role definition: `roleDefinitions/write`
  or `/delete` at the deployment scope `/`, since a definition is shared by every
  vault of the deployment.

Role assignments are authorized by roles whatever the vault's permission model.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from openkeyvault.access.authorize import Authorizer
from openkeyvault.access.definitions import (
    GUID,
    RELATIVE_SCOPE,
    RbacConflict,
    RbacError,
    RbacNotFound,
    RoleDefinitions,
    guid_of,
    not_found,
)
from openkeyvault.access.rbac import RoleAssignments, relative
from openkeyvault.access.roles import RoleDefinition
from openkeyvault.storage.records import RoleAssignmentRecord
from openkeyvault.vault import paging
from openkeyvault.vault.context import Caller, authorize_control
from openkeyvault.vault.controlrequests import RoleAssignmentCreate, RoleDefinitionCreate
from openkeyvault.vault.errors import (
    BadParameter,
    NotFound,
    RoleAssignmentExists,
    RoleDefinitionExists,
)
from openkeyvault.vault.models import Page

MAX_FILTER_CHARS = 256
_PRINCIPAL_FILTER = re.compile(r"principalId\s+eq\s+'([0-9A-Za-z-]{1,64})'", re.IGNORECASE)
_ROLE_NAME_FILTER = re.compile(r"roleName\s+eq\s+'([^']{1,512})'", re.IGNORECASE)
_SCOPE_FILTERS = ("atscope()", "atscopeandbelow()")
DEPLOYMENT = "/"


@dataclass(frozen=True)
class Assignment:
    """A role assignment as one vault shows it."""

    name: str
    scope: str  # data-plane scope, relative to the vault
    role_definition_id: str  # GUID
    principal_id: str


def _covers(outer: str, inner: str) -> bool:
    """True if relative scope `outer` is `inner` or above it."""
    outer, inner = outer.lower(), inner.lower()
    return outer == "/" or inner == outer or inner.startswith(outer + "/")


@contextlib.contextmanager
def _domain_errors() -> Iterator[None]:
    try:
        yield
    except RbacNotFound as exc:
        raise NotFound(str(exc), exc.code) from None
    except RbacConflict as exc:
        cls = RoleAssignmentExists if exc.code == "RoleAssignmentExists" \
            else RoleDefinitionExists
        raise cls(str(exc)) from None
    except RbacError as exc:
        raise BadParameter(str(exc)) from None


def definition_document(r: RoleDefinitionCreate | None) -> dict[str, Any] | None:
    """The role definition store's input (access/definitions.py, which checks the action
    names, scopes and limits): the typed request with its Azure names, and only the
    fields the client sent."""
    if r is None:
        return None
    doc: dict[str, Any] = {"roleName": r.role_name, "description": r.description,
                           "type": r.type, "assignableScopes": r.assignable_scopes}
    if r.permissions is not None:
        doc["permissions"] = [{"actions": p.actions, "notActions": p.not_actions,
                               "dataActions": p.data_actions,
                               "notDataActions": p.not_data_actions}
                              for p in r.permissions]
    return {k: v for k, v in doc.items() if v is not None}


def _filter(raw: str | None) -> str:
    if raw is not None and len(raw) > MAX_FILTER_CHARS:
        raise BadParameter(f"The $filter is longer than {MAX_FILTER_CHARS} characters.")
    return (raw or "").strip()


class AccessControlService:
    def __init__(self, authorizer: Authorizer, assignments: RoleAssignments,
                 definitions: RoleDefinitions) -> None:
        self._authz = authorizer
        self._assignments = assignments
        self._definitions = definitions

    # ---- scopes and checks ----------------------------------------------------------
    @staticmethod
    def scope(rel: str) -> str:
        """A valid data-plane scope, normalised; BadParameter otherwise."""
        if len(rel) > 256 or not RELATIVE_SCOPE.fullmatch(rel):
            raise BadParameter(f"The scope '{rel[:200]}' is not valid: use /, /keys, /keys/NAME "
                               "(or secrets, certificates).")
        return rel

    @staticmethod
    def _internal(caller: Caller, rel: str) -> str:
        return f"/vaults/{caller.vault.name}" + ("" if rel == "/" else rel)

    def _authorize(self, caller: Caller, what: str, verb: str, resource: str,
                   assigning: str | None = None) -> None:
        authorize_control(self._authz, caller, what, verb, resource, assigning)

    @staticmethod
    def _name(name: str, what: str) -> str:
        if not GUID.fullmatch(name):
            raise BadParameter(f"The {what} name '{name[:64]}' is not valid: it must be a GUID.")
        return name.lower()

    def _visible(self, caller: Caller, r: RoleAssignmentRecord) -> Assignment | None:
        """The record as this vault shows it, or None if it lies in another vault."""
        scope = r.scope.lower()
        vault = f"/vaults/{caller.vault.name}".lower()
        if scope != DEPLOYMENT and scope != vault and not scope.startswith(vault + "/"):
            return None
        return Assignment(r.id, relative(r.scope), r.role_definition_id, r.principal_id)

    # ---- role assignments -----------------------------------------------------------
    def list_assignments(self, caller: Caller, rel: str, filter_: str | None,
                         token: str | None, maxresults: str | None) -> Page:
        """Assignments at, above and below the scope; `atScope()`: at or above;
        `principalId eq '...'`: one principal's, at, above and below."""
        rel = self.scope(rel)
        self._authorize(caller, "roleAssignments", "read", self._internal(caller, rel))
        f = _filter(filter_)
        principal: str | None = None
        at_or_above = False
        if f.lower() == "atscope()":
            at_or_above = True
        elif (m := _PRINCIPAL_FILTER.fullmatch(f)) is not None:
            principal = m.group(1).lower()
        elif f:
            raise BadParameter("The $filter is not supported: use atScope() or "
                               "principalId eq '{id}'.")
        size = paging.page_size(maxresults)
        after = paging.position(token, "n", str)
        found = []
        for r in self._assignments.all():
            a = self._visible(caller, r)
            if a is None or (principal is not None and a.principal_id.lower() != principal):
                continue
            if _covers(a.scope, rel) or (not at_or_above and _covers(rel, a.scope)):
                found.append(a)
        found.sort(key=lambda a: a.name)
        if after is not None:
            found = [a for a in found if a.name > after]
        items = found[:size]
        more = len(found) > size
        return Page(items, paging.encode_token({"n": items[-1].name}) if more else None)

    def _lookup(self, caller: Caller, rel: str, name: str) -> tuple[Assignment, str]:
        """The assignment `name` at scope `rel` (at `/`: anywhere in the vault, as names are
        unique in it and the Azure CLI sends `/` when no scope is given), with its internal
        scope; 404 otherwise."""
        record = self._assignments.get(name)
        a = self._visible(caller, record) if record is not None else None
        if record is None or a is None or (rel != "/" and a.scope.lower() != rel.lower()):
            raise NotFound(f"Role assignment '{name}' was not found at scope '{rel}'.",
                           "RoleAssignmentNotFound")
        return a, record.scope

    def get_assignment(self, caller: Caller, rel: str, name: str) -> Assignment:
        rel = self.scope(rel)
        self._authorize(caller, "roleAssignments", "read", self._internal(caller, rel))
        return self._lookup(caller, rel, self._name(name, "role assignment"))[0]

    def create_assignment(self, caller: Caller, rel: str, name: str,
                          request: RoleAssignmentCreate | None) -> tuple[Assignment, bool]:
        """RoleAssignmentCreateParameters (None: the body had no `properties`)."""
        rel = self.scope(rel)
        internal = self._internal(caller, rel)
        if request is None:
            raise BadParameter("The request body must contain 'properties', a JSON object.")
        role, principal = request.role_definition_id, request.principal_id
        if not role or not principal:
            raise BadParameter("'properties.roleDefinitionId' and 'properties.principalId' "
                               "are required strings.")
        self._authorize(caller, "roleAssignments", "write", internal,
                        assigning=guid_of(role) or role[:64].lower())
        name = self._name(name, "role assignment")
        guid = guid_of(role)
        if guid is None:
            raise BadParameter(f"The role definition '{role[:120]}' does not exist.")
        with _domain_errors():
            record, created = self._assignments.create(name, principal, guid, internal)
        return Assignment(record.id, rel, record.role_definition_id, record.principal_id), \
            created

    def delete_assignment(self, caller: Caller, rel: str, name: str) -> Assignment:
        rel = self.scope(rel)
        self._authorize(caller, "roleAssignments", "delete", self._internal(caller, rel))
        a, internal = self._lookup(caller, rel, self._name(name, "role assignment"))
        # The assignment's own scope (the deployment, for one made there) and the role it
        # gives must both be within the caller's reach.
        self._authorize(caller, "roleAssignments", "delete", internal,
                        assigning=a.role_definition_id)
        if not self._assignments.remove(a.name):
            raise NotFound(f"Role assignment '{name}' was not found at scope '{rel}'.",
                           "RoleAssignmentNotFound")
        return a

    # ---- role definitions -----------------------------------------------------------
    def _applies(self, caller: Caller, role: RoleDefinition) -> bool:
        """Custom roles show on every vault; built-in ones on vaults of their kind."""
        return not role.built_in or role.kind == caller.vault.kind.lower()

    def _listed_definitions(self, caller: Caller) -> Iterable[RoleDefinition]:
        """The definitions a listing looks through (a pool has its own custom roles)."""
        return self._definitions.all()

    def list_definitions(self, caller: Caller, rel: str, filter_: str | None,
                         token: str | None, maxresults: str | None) -> Page:
        rel = self.scope(rel)
        self._authorize(caller, "roleDefinitions", "read", self._internal(caller, rel))
        f = _filter(filter_)
        name: str | None = None
        if (m := _ROLE_NAME_FILTER.fullmatch(f)) is not None:
            name = m.group(1).lower()
        elif f and f.lower() not in _SCOPE_FILTERS:
            raise BadParameter("The $filter is not supported: use atScope(), "
                               "atScopeAndBelow() or roleName eq '{name}'.")
        size = paging.page_size(maxresults)
        after = paging.position(token, "n", str)
        found = sorted((r for r in self._listed_definitions(caller)
                        if self._applies(caller, r)
                        and (name is None or r.name.lower() == name)
                        and (after is None or r.id > after)), key=lambda r: r.id)
        items = found[:size]
        more = len(found) > size
        return Page(items, paging.encode_token({"n": items[-1].id}) if more else None)

    def get_definition(self, caller: Caller, rel: str, name: str) -> RoleDefinition:
        rel = self.scope(rel)
        self._authorize(caller, "roleDefinitions", "read", self._internal(caller, rel))
        guid = self._name(name, "role definition")
        role = self._definitions.get(guid)
        if role is None or not self._applies(caller, role):
            raise NotFound(str(not_found(guid)), "RoleDefinitionNotFound")
        return role

    def _definition_scope(self, rel: str) -> None:
        if self.scope(rel) != "/":
            raise BadParameter("Role definitions are created and deleted at scope '/' only.")

    def set_definition(self, caller: Caller, rel: str, name: str,
                       request: RoleDefinitionCreate | None) -> RoleDefinition:
        """RoleDefinitionCreateParameters (None: the body had no `properties`)."""
        self._definition_scope(rel)
        self._authorize(caller, "roleDefinitions", "write", DEPLOYMENT)
        guid = self._name(name, "role definition")
        with _domain_errors():
            return self._definitions.set(guid, definition_document(request))[0]

    def delete_definition(self, caller: Caller, rel: str, name: str) -> RoleDefinition:
        self._definition_scope(rel)
        self._authorize(caller, "roleDefinitions", "delete", DEPLOYMENT)
        guid = self._name(name, "role definition")
        with _domain_errors():
            return self._definitions.delete(guid)

