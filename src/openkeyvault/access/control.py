"""Control-plane authorization: who may manage vaults as ARM resources.

Azure's control-plane roles (Owner, Contributor, Reader, Key Vault Contributor) live with
the other built-in roles in `access/roles.py`; `CONTROL_ROLES` names them. They carry
`actions` only: managing a vault never grants access to its keys, secrets or certificates.

Scopes. Role assignments are stored with internal scopes; ARM scopes map onto them:

    /                                                          → /   (the deployment)
    /subscriptions/S                                           → /subscriptions/s
    /subscriptions/S/resourceGroups/RG                         → /subscriptions/s/resourceGroups/rg
    /subscriptions/S/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/NAME[/secrets[/X]]
                                                               → /vaults/name[/secrets[/X]]

(and likewise keys, certificates). Subscription ids and resource-group names are
case-insensitive in ARM and kept in lower case. A vault name is unique in the deployment,
so a vault scope drops its subscription and resource group. An assignment at a subscription
or resource-group scope covers the vaults placed there: the decision asks storage where a
vault is placed (`placement`), never the caller's URL, so naming another resource group in
a request gains nothing.

`ControlAuthorizer.allowed_control` decides deny-by-default from the principal's role
assignments: one whose scope covers the target and whose role grants the action
(`actions`, Azure's wildcards, `notActions` taking back) permits it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from openkeyvault.access import actions as a
from openkeyvault.access.authorize import RoleAssignment
from openkeyvault.access.principals import Principal
from openkeyvault.access.roles import BY_NAME, RoleDefinition, permits

__all__ = ["CONTROL_ROLES", "ControlAuthorizer", "Placement", "arm_to_internal",
           "internal_to_arm", "vault_scopes"]

CONTROL_ROLES: tuple[RoleDefinition, ...] = tuple(
    BY_NAME[n] for n in ("owner", "contributor", "reader", "key vault contributor"))

MAX_SCOPE_CHARS = 1024
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# Azure's resource-group name rules: 1-90 letters, digits, '_', '-', '.', '(' and ')';
# not ending in '.'.
_RG = r"[-\w.()]{0,89}[-\w()]"
_VAULT = r"[a-zA-Z0-9-]{3,24}"
_OBJECT = r"(?P<collection>secrets|keys|certificates)(?:/(?P<object>[0-9a-zA-Z-]{1,127}))?"
_ARM_SCOPE = re.compile(
    rf"/subscriptions/(?P<sub>{_GUID})"
    rf"(?:/resourceGroups/(?P<rg>{_RG})"
    rf"(?:/providers/Microsoft\.KeyVault/vaults/(?P<vault>{_VAULT})(?:/{_OBJECT})?)?)?",
    re.IGNORECASE,
)
_INTERNAL_SUB = re.compile(
    rf"/subscriptions/(?P<sub>{_GUID})(?:/resourceGroups/(?P<rg>{_RG}))?", re.IGNORECASE)

# Where a vault is placed: vault name → (subscription, resource group), None if unknown.
Placement = Callable[[str], "tuple[str, str] | None"]


def subscription_scope(subscription: str) -> str:
    return f"/subscriptions/{subscription.lower()}"


def resource_group_scope(subscription: str, resource_group: str) -> str:
    return f"{subscription_scope(subscription)}/resourceGroups/{resource_group.lower()}"


def arm_to_internal(scope: str) -> str | None:
    """The internal scope for an ARM scope; None when `scope` is not one this service
    manages (`/`, a subscription, a resource group, a vault or an object in one)."""
    if not isinstance(scope, str) or not scope.startswith("/") or len(scope) > MAX_SCOPE_CHARS:
        return None
    scope = scope.rstrip("/") or "/"
    if scope == "/":
        return "/"
    m = _ARM_SCOPE.fullmatch(scope)
    if m is None:
        return None
    if m["vault"] is None:
        if m["rg"] is None:
            return subscription_scope(m["sub"])
        return resource_group_scope(m["sub"], m["rg"])
    out = f"/vaults/{m['vault'].lower()}"
    if m["collection"]:
        out += f"/{m['collection'].lower()}"
        if m["object"]:
            out += f"/{m['object']}"
    return out


def is_placement_scope(scope: str) -> bool:
    """True for an internal subscription or resource-group scope."""
    return len(scope) <= MAX_SCOPE_CHARS and _INTERNAL_SUB.fullmatch(scope) is not None


def internal_to_arm(scope: str, placement: Placement | None = None) -> str:
    """The ARM form of an internal scope, for display. A vault scope needs the vault's
    placement; without one it is answered as it is."""
    if scope == "/" or is_placement_scope(scope):
        return scope
    m = re.fullmatch(r"/vaults/([^/]+)(/.*)?", scope, re.IGNORECASE)
    where = placement(m[1]) if m and placement is not None else None
    if m is None or where is None:
        return scope
    sub, rg = where
    return (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/"
            f"{m[1]}{m[2] or ''}")


def vault_scopes(vault: str | None, subscription: str | None,
                 resource_group: str | None) -> tuple[str, ...]:
    """The internal scopes whose assignments cover the target (lower case): the
    deployment, the subscription, the resource group and the vault, as far as given."""
    out = ["/"]
    if subscription:
        out.append(subscription_scope(subscription))
        if resource_group:
            out.append(resource_group_scope(subscription, resource_group).lower())
    if vault:
        out.append(f"/vaults/{vault.lower()}")
    return tuple(out)


class ControlAuthorizer:
    """Decides control-plane actions from the principal's role assignments (`lookup`, the
    same one the data plane's Authorizer reads, so a change applies on the next request)."""

    def __init__(self, lookup: Callable[[str], Iterable[RoleAssignment]],
                 placement: Placement | None = None) -> None:
        self._lookup = lookup
        self._placement = placement

    def allowed_control(self, principal: Principal, action: str, subscription: str | None,
                        resource_group: str | None, vault_name: str | None = None) -> bool:
        """May `principal` do control-plane `action` on vault `vault_name` (None: on the
        subscription or resource group itself, e.g. list or checkNameAvailability)?

        For an existing vault the subscription and resource group come from its stored
        placement, not from the arguments; for a new vault (create) from the arguments."""
        if action not in a.CONTROL:
            return False
        if vault_name is not None:
            where = self._placement(vault_name.lower()) if self._placement else None
            if where is not None:
                subscription, resource_group = where
        scopes = vault_scopes(vault_name, subscription, resource_group)
        return any(_covers_any(x.scope, scopes) and permits(x.role, action)
                   for x in self._lookup(principal.object_id))

    def readable_vaults(self, principal: Principal, names: Iterable[str]) -> list[str]:
        """The vaults of `names` the principal may read (`vaults/read`): what a list shows."""
        return [n for n in names
                if self.allowed_control(principal, a.VAULTS_READ, None, None, n)]


def _covers_any(scope: str, scopes: tuple[str, ...]) -> bool:
    s = scope.lower().rstrip("/") or "/"
    return s in scopes
