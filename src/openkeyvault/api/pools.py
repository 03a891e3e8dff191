"""The data plane of a managed HSM pool (`{name}.managedhsm.{domain}`): its local RBAC,
its keys and its settings.

A pool's host runs the same pipeline as a vault's (api/app.py: challenge, the pool's
token audience, network rules, api-version, route guard, body) with this route table,
decided by the pool's local RBAC alone:

- role assignments and role definitions at `/`, `/keys` and `/keys/NAME`
  (vault/hsmrbac.py);
- the Keys API and random bytes: the vault's routes and key service, each operation
  decided by Managed HSM's data action (vault/operations.POOL_ACTIONS); a pool takes the
  key types of keytypes.ACCEPTED["managedhsm"];
- its settings at `/settings` and `/settings/NAME` (vault/hsmsettings.py, api/hsmsettings.py)
  and its security domain at `/securitydomain/download[/pending]` and
  `/securitydomain/upload[/pending]` (download; exchange key, upload: vault/securitydomain.py,
  api/securitydomain.py), rows only a pool serves (vault/operations.POOL_ONLY).

A pool that is not activated (its security domain never downloaded) refuses every keys
route with 403 after the role check (`Activated`, vault/activation.py). The rest of a
pool's data plane (full backup and restore) is not served yet: every other path answers
404 with a message that says so, and no body is read for it.
"""

from __future__ import annotations

import dataclasses

from starlette.responses import Response

from openkeyvault.access.authorize import Authorizer
from openkeyvault.api.hsmsettings import settings_routes
from openkeyvault.api.http import Ctx
from openkeyvault.api.keys import KeyRoutes
from openkeyvault.api.rbac import LocalGuard, rbac_routes
from openkeyvault.api.router import Guard, Route, Router, data_guard
from openkeyvault.api.routes import key_routes
from openkeyvault.api.securitydomain import security_domain_routes
from openkeyvault.deployment import Deployment
from openkeyvault.storage.readcache import ACCESS, IDENTITIES, VAULTS
from openkeyvault.vault import operations
from openkeyvault.vault.activation import require_activated
from openkeyvault.vault.context import Caller
from openkeyvault.vault.errors import NotFound
from openkeyvault.vault.hsmrbac import PoolAccessControl
from openkeyvault.vault.hsmsettings import HsmSettingsService
from openkeyvault.vault.securitydomain import SecurityDomainService

NOT_SERVED = ("This managed HSM serves role management (role assignments and role "
              "definitions at /, /keys and /keys/NAME), keys, settings and the security "
              "domain (download, exchange key and upload) only; full backup and restore are "
              "not available on it.")


@dataclasses.dataclass(frozen=True)
class Activated:
    """`inner`, then the pool's activation: a keys route of a pool that is not activated
    is refused (vault/activation.py) before the body is read."""

    inner: Guard

    def check(self, authorizer: Authorizer, caller: Caller, params: dict[str, str]) -> None:
        self.inner.check(authorizer, caller, params)
        require_activated(caller.vault)


class NotServed:
    """The guard of every path a pool does not serve: refuses before the body is read."""

    def check(self, authorizer: Authorizer, caller: Caller, params: dict[str, str]) -> None:
        raise NotFound(NOT_SERVED)


def _not_served(ctx: Ctx) -> Response:  # never reached: the guard refuses first
    raise NotFound(NOT_SERVED)


_FALLBACK = Route("GET", ("",), _not_served, guard=NotServed())


class PoolRouter(Router):
    """The pool's routes; any other path resolves to a route that refuses it."""

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None | bool:
        found = super().resolve(method, path)
        return (_FALLBACK, {}) if found is None else found


def pool_authorizer(d: Deployment) -> Authorizer:
    """Decides from the assignments made at a vault or pool (or below) only; its decisions
    are memoised until a role assignment, role definition, principal or vault changes (a
    revoked role applies from the next request)."""
    return Authorizer(d.rbac.local_to_resources,
                      lambda: d.repo.snapshot(VAULTS, ACCESS, IDENTITIES))


def pool_router(d: Deployment) -> PoolRouter:
    authorizer = pool_authorizer(d)
    service = PoolAccessControl(authorizer, d.rbac, d.rbac.definitions)
    keys = KeyRoutes(d.keys.with_authorizer(authorizer))
    settings = HsmSettingsService(d.repo, authorizer, d.clock)
    domain = SecurityDomainService(d.repo, d.barrier, authorizer, d.clock)
    return PoolRouter(rbac_routes(service, ("keys",), authorizer)
                      + [_activated(_on_pool(r, authorizer)) for r in key_routes(keys)]
                      + [_on_pool(r, authorizer) for r in settings_routes(settings)]
                      + [_on_pool(r, authorizer) for r in security_domain_routes(domain)])


def _activated(route: Route) -> Route:
    assert route.guard is not None
    return dataclasses.replace(route, guard=Activated(route.guard))


def _on_pool(route: Route, authorizer: Authorizer) -> Route:
    """A keys, settings or security domain route as a pool serves it: its operation
    decided by Managed HSM's data action (operations.for_pool) with the pool's local
    RBAC."""
    assert route.operation is not None
    op = operations.for_pool(route.operation)
    return dataclasses.replace(route, operation=op,
                               guard=LocalGuard(data_guard(op), authorizer))
