"""Role management request bodies (rbac.json)."""

from __future__ import annotations

from openkeyvault.api.models.wire import Model
from openkeyvault.vault import controlrequests as c

_Strings = list[str]


class RoleAssignmentProperties(Model, frozen=True, rename="camel"):
    """Both fields are required; the service says which is missing, in its own words."""

    role_definition_id: str | None = None
    principal_id: str | None = None


class RoleAssignmentCreateParameters(Model, frozen=True):
    properties: RoleAssignmentProperties | None = None

    def to_request(self) -> c.RoleAssignmentCreate | None:
        p = self.properties
        return None if p is None else c.RoleAssignmentCreate(p.role_definition_id,
                                                              p.principal_id)


class Permission(Model, frozen=True, rename="camel"):
    actions: _Strings | None = None
    not_actions: _Strings | None = None
    data_actions: _Strings | None = None
    not_data_actions: _Strings | None = None

    def to_request(self) -> c.RolePermission:
        return c.RolePermission(self.actions, self.not_actions, self.data_actions,
                                self.not_data_actions)


class RoleDefinitionProperties(Model, frozen=True, rename="camel"):
    role_name: str | None = None
    description: str | None = None
    type: str | None = None  # only CustomRole may be created
    permissions: list[Permission] | None = None
    assignable_scopes: _Strings | None = None

    def to_request(self) -> c.RoleDefinitionCreate:
        return c.RoleDefinitionCreate(
            self.role_name, self.description, self.type,
            None if self.permissions is None else [p.to_request() for p in self.permissions],
            self.assignable_scopes)


class RoleDefinitionCreateParameters(Model, frozen=True):
    properties: RoleDefinitionProperties | None = None

    def to_request(self) -> c.RoleDefinitionCreate | None:
        return None if self.properties is None else self.properties.to_request()
