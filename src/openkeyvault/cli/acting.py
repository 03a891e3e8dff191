"""The `okv` command's changes as operations: named by the operations table, authorized as
a principal of the deployment, and audited like any request.

Every command that changes the deployment (a vault, its access policies or network rules,
a role assignment or definition, a principal or its credentials, a vault's throttling
scale, an event subscription) calls `Acting.perform` with the name of its row of
vault/operations.py. That checks the row's action at its scope for the acting principal,
with the same decisions the API makes (the control plane's role assignments for a vault,
the role assignments at a scope for role management and the directory), refuses with exit
code 2 and changes nothing when they say no, and writes one audit record for the change
or the refusal into the deployment's audit trail (ops/audit.py), as a request would.
When the trail cannot be written and the deployment fails closed, nothing is changed.

The acting principal is the one `OKV_AS` names (object id, client id or display name),
else the administrator `okv init` created, else (a dev data directory) the dev identity.
No credential is asked: whoever runs `okv` on the data directory holds the database
already. What this gives is least privilege and accountability: a principal without the
role is refused, and each record names the principal, the operating-system user (in
`clientInfo`) and the command (in `requestUri`).
"""

from __future__ import annotations

import getpass
import os
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from openkeyvault import __version__
from openkeyvault.cli.vaults import NOUNS, fail

if TYPE_CHECKING:  # imported when a change is made: `okv --help` stays quick
    from openkeyvault.access.principals import Principal
    from openkeyvault.deployment import Deployment
    from openkeyvault.ops.audit import AuditTrail
    from openkeyvault.ops.events import Notice
    from openkeyvault.ops.outcome import CallerClaims, Outcome
    from openkeyvault.vault.operations import Operation

ENV_VAR = "OKV_AS"
ADMINISTRATOR = "administrator"  # the display name `okv init` gives the first administrator
LOCAL = "local"  # the audit record's callerIpAddress: no network was involved
T = TypeVar("T")


class Refused(Exception):
    """The acting principal may not do this (the API's 403)."""


def acting_principal(d: Deployment) -> Principal:
    """Who the command acts as (module docstring)."""
    from openkeyvault.access.principals import Principal

    named = os.environ.get(ENV_VAR, "").strip()
    if named:
        found = d.directory.find(named)
        if found is None:
            fail(f"{ENV_VAR}: no principal '{named[:64]}' (give its object id, client id "
                  "or name)")
        return Principal(found.object_id, found.tenant_id, found.client_id)
    admin = d.directory.find(ADMINISTRATOR)
    if admin is not None:
        return Principal(admin.object_id, admin.tenant_id, admin.client_id)
    return d.dev_principal


ARGV: list[str] = []  # the command line's words after `okv` (cli/main.py's `main` sets it)


def _command() -> str:
    """The command's path (`okv vault create`): the words of ARGV that name subcommands,
    never a value given to them."""
    import typer.main

    from openkeyvault.cli.main import app

    command: Any = typer.main.get_command(app)
    path = ["okv"]
    for word in ARGV:
        found = getattr(command, "commands", {}).get(word)
        if found is None:
            break
        path.append(word)
        command = found
    return " ".join(path)


class Acting:
    """One `okv` invocation's changes, made as operations (module docstring)."""

    def __init__(self, d: Deployment) -> None:
        self.d = d
        self.principal = acting_principal(d)
        self._trail: AuditTrail | None = None
        self._agent = f"okv/{__version__} (cli; user={_os_user()})"
        d.events.notified = self._notified  # events its changes publish (ops/events.py)

    def perform(self, name: str, act: Callable[[], T], *, vault: str | None = None,
                scope: str = "/", assigning: str | None = None,
                placement: tuple[str, str] | None = None, kind: str = "vault") -> T:
        """Do `act` as operation `name` on `vault` (its name; the management plane's and
        the throttling rows) or at `scope` (an internal scope, `/` for the deployment: role
        management and the directory), once authorized; audited either way. `placement`:
        the subscription and resource group of a vault not made yet; `assigning`: the
        role (GUID) a role assignment gives; `kind`: what `vault` names, a vault or a
        managed HSM pool (`managedHsm`), for the record's resource id."""
        from openkeyvault.ops.outcome import Attempt, CallerClaims
        from openkeyvault.vault import operations as ops

        op = ops.get(name)
        started, arrived = time.perf_counter(), self.d.clock.now()
        claims = CallerClaims(self.principal.object_id, self.principal.tenant_id,
                              self.principal.app_id)
        plane = "management" if op.plane == ops.MANAGEMENT_PLANE else \
            "identity" if op.scope == ops.DIRECTORY else "vault"
        # Where the vault is placed: a new one's from the command, a purged one's as it was.
        where = (self.d.vaults.placement_of(vault) if vault else None) or placement
        trail = self._audit()
        refusal = trail.admit(Attempt(op.name, plane, vault, op.throttle, 1.0, claims, LOCAL))
        if refusal is not None:
            fail(f"{refusal.message} Nothing was changed.")
        status, allowed = 500, None
        try:
            allowed = self._allowed(op, vault, scope, assigning, where)
            if not allowed:
                status = 403
                noun = NOUNS.get(kind, (kind, ""))[0]
                raise Refused(
                    f"'{self.principal.object_id}' may not perform '{op.action}' on "
                    f"{noun + ' ' + repr(vault) if vault else 'scope ' + repr(scope)} "
                    f"({op.name}); set {ENV_VAR} to a principal that holds a role with it. "
                    "Nothing was changed.")
            result = act()
            status = 200
            return result
        except typer.Exit as exc:  # a refusal of the command's own (`error: ...`)
            status = 400 if exc.exit_code else 200
            raise
        except Exception as exc:
            status = _status_of(exc, status)
            raise
        finally:
            trail.observe(self._outcome(op, plane, vault, where, scope, status, arrived,
                                        started, claims, allowed, kind))

    def _allowed(self, op: Operation, vault: str | None, scope: str,
                 assigning: str | None, where: tuple[str, str] | None) -> bool:
        from openkeyvault.vault import operations as ops

        assert op.action is not None, op.name
        if op.scope in (ops.RESOURCE, ops.SUBSCRIPTION, ops.RESOURCE_GROUP):
            sub, rg = (str(where[0]), str(where[1])) if where else (None, None)
            return self.d.control.allowed_control(self.principal, op.action, sub, rg, vault)
        if op.scope == ops.DIRECTORY:
            scope = "/"
        if op.name in ops.POOL_ONLY:  # a pool's own operation: its local RBAC alone decides
            from openkeyvault.access.authorize import Authorizer

            local = Authorizer(self.d.rbac.local_to_resources)
            return local.allowed_at(self.principal, op.action, scope, assigning)
        return self.d.authorizer.allowed_at(self.principal, op.action, scope, assigning)

    def _outcome(self, op: Operation, plane: str, vault: str | None,
                 where: tuple[str, str] | None, scope: str, status: int, arrived: float,
                 started: float, claims: CallerClaims, allowed: bool | None,
                 kind: str = "vault") -> Outcome:
        from openkeyvault.api.exchange import arm_id
        from openkeyvault.ops.outcome import Outcome

        resource_id = None
        if vault is not None and where is not None:
            resource_id = arm_id(str(where[0]), str(where[1]), kind, vault)
        target = vault if vault is not None else scope
        return Outcome(
            operation=op.name, resource_kind=plane,
            resource_name=vault.lower() if vault else None, resource_id=resource_id,
            object_id=None, api_version=None, status=status, time=arrived,
            duration_ms=(time.perf_counter() - started) * 1000, client_ip=LOCAL,
            correlation_id=None, request_id=str(uuid.uuid4()),
            request_uri=f"{_command()} {target}", user_agent=self._agent, caller=claims,
            rbac_authorized=allowed, access_policy_match=None, throttle_class=None,
            meter=None)

    def _notified(self, notice: Notice) -> None:
        """An event a change of this command published, as the API's accounting records
        one (api/exchange.py `Accounting.notice_recorder`): the service's own operation."""
        from openkeyvault.api.exchange import arm_id

        where = self.d.vaults.placement_of(notice.vault)
        self._audit().observe(notice.outcome(
            arm_id(where[0], where[1], "vault", notice.vault) if where else None))

    def _audit(self) -> AuditTrail:
        if self._trail is None:
            from openkeyvault.ops.audit import open_audit

            self._trail = open_audit(self.d.settings, self.d.engines, None,
                                     key=self.d.audit_key)
        return self._trail

    def close(self) -> None:
        """Write the records out (call before the deployment closes)."""
        if self._trail is not None:
            self._trail.close()
            self._trail = None


def _status_of(exc: BaseException, default: int) -> int:
    """The status the API would answer `exc` with: a domain error's own, 409 for a role
    conflict, 400 for the refusals of the directory, the issuers and role management
    (ValueErrors whose message is safe to show)."""
    from openkeyvault.access.definitions import RbacConflict
    from openkeyvault.api.errors import map_error
    from openkeyvault.vault.errors import DomainError

    if isinstance(exc, Refused):
        return 403
    if isinstance(exc, DomainError):
        return map_error(exc)[0]
    if isinstance(exc, RbacConflict):
        return 409
    if isinstance(exc, ValueError):
        return 400
    return default


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def perform(d: Deployment, name: str, act: Callable[[], T], **where: Any) -> T:
    """`act` as operation `name` (`Acting.perform`'s keywords say where), its record written
    at once; a refusal printed as `error: ...` with exit code 2."""
    acting = Acting(d)
    try:
        return acting.perform(name, act, **where)
    except Refused as exc:
        fail(str(exc))
    finally:
        acting.close()
