"""What every domain operation receives: who is calling, on which vault, and the checks."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from openkeyvault.access.actions import ROLE_MANAGEMENT
from openkeyvault.access.authorize import Authorizer, Scope
from openkeyvault.access.policies import required
from openkeyvault.access.principals import Principal
from openkeyvault.ops import requestscope
from openkeyvault.storage.records import VaultRecord
from openkeyvault.vault import operations
from openkeyvault.vault.errors import Forbidden
from openkeyvault.vault.managedhsms import KIND as POOL_KIND
from openkeyvault.vault.properties import properties_of

HELP_ACCESS_POLICY = "https://go.microsoft.com/fwlink/?linkid=2125287"


@dataclass(frozen=True)
class Caller:
    principal: Principal
    vault: VaultRecord


# The request's last decision that allowed: (request number, caller, data action, path,
# hint). The route's guard decides before the body is read and the domain checks again
# (defense in depth); when the domain's check is that very decision, for the same request
# and the same Caller object, it is not made twice. Outside a request (number 0) nothing
# is reused. A context variable: each request's task has its own, so requests whose
# bodies arrive meanwhile do not take the place of this one's.
_allowed: ContextVar[tuple[object, ...]] = ContextVar(
    "okv_allowed", default=(0, None, None, None, None))


def authorize(authorizer: Authorizer, caller: Caller, data_action: str, path: str,
              operation: str | None = None) -> None:
    """Deny by default: raise Forbidden unless `caller` may do `data_action` at `path`
    (the same decision already made for this request and Caller is not made again)."""
    request = requestscope.current.get()
    if request:
        seen = _allowed.get()
        if seen[0] == request and seen[1] is caller and seen[2] == data_action \
                and seen[3] == path and seen[4] == operation:
            return
    _decide(authorizer, caller, data_action, path, operation)
    reaffirm(caller, data_action, path, operation)


def reaffirm(caller: Caller, data_action: str, path: str, operation: str | None) -> None:
    """For this request, the decision `authorize` would make for these arguments allowed
    (it just did, or it did for an earlier request on storage that has not changed since:
    api/admitted.py). The domain's own check of it is then not made again."""
    request = requestscope.current.get()
    if request:
        _allowed.set((request, caller, data_action, path, operation))


def authorize_operation(authorizer: Authorizer, caller: Caller, operation: str,
                        path: str) -> None:
    """`authorize` for the row `operation` of vault/operations.py (its data action and
    access-policy permission) at `path`: how the domain services check, so that no service
    spells out what an operation needs."""
    op = operations.get(operation)
    if caller.vault.kind == POOL_KIND:
        op = operations.for_pool(op)
    authorize(authorizer, caller, op.action or "", path, op.permission)


def _decide(authorizer: Authorizer, caller: Caller, data_action: str, path: str,
            operation: str | None) -> None:
    """Deny by default: raise Forbidden unless `caller` may do `data_action` at `path`.

    The vault's `enableRbacAuthorization` picks the model: role assignments, or (when
    false) the vault's access policies, where `operation` names the permission the
    operation needs when its data action does not determine it (keys `get` and `list`
    share `keys/read`).
    """
    props = properties_of(caller.vault)
    if not props.enable_rbac_authorization:
        if props.access_policies.allows(caller.principal, data_action, operation):
            return
        raise Forbidden(
            "The user, group or application "
            f"'{caller.principal.describe_with_issuer()}' does not have "
            f"{required(data_action, operation)} permission on key vault "
            f"'{caller.vault.name};location=local'. For help resolving this issue, please see "
            f"{HELP_ACCESS_POLICY}",
            inner="AccessDenied",
        )
    if authorizer.allowed(caller.principal, data_action, Scope(caller.vault.name, path)):
        return
    raise rbac_refusal(caller, data_action, f"/vaults/{caller.vault.name}{path}")


def authorize_control(authorizer: Authorizer, caller: Caller, what: str, verb: str,
                      resource: str, assigning: str | None = None) -> None:
    """Deny by default for role management: `what` ("roleAssignments" | "roleDefinitions")
    and `verb` ("read" | "write" | "delete") name the action for the vault's kind
    (`ROLE_MANAGEMENT`); `resource` is an internal scope (`/vaults/V/keys`, `/`). With
    `assigning`, the GUID of the role being assigned, an assignment condition must admit
    it. Roles decide whatever the vault's permission model."""
    action = ROLE_MANAGEMENT.get((caller.vault.kind.lower(), what, verb))
    if action is not None and authorizer.allowed_at(caller.principal, action, resource,
                                                    assigning):
        return
    raise rbac_refusal(caller, action or f"{what}/{verb}", resource)


def rbac_refusal(caller: Caller, action: str, resource: str) -> Forbidden:
    """Azure's 403 ForbiddenByRbac for `caller` lacking `action` at `resource`."""
    return Forbidden(
        "Caller is not authorized to perform action on resource.\r\n"
        "If role assignments, deny assignments or role definitions were changed recently, "
        "please observe propagation time.\r\n"
        f"Caller: {caller.principal.describe()}\r\n"
        f"Action: '{action}'\r\n"
        f"Resource: '{resource}'\r\n"
        "Assignment: (not found)\r\n"
        f"Vault: {caller.vault.name};location=local\r\n",
        inner="ForbiddenByRbac",
    )
