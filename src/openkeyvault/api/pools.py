"""The data plane of a managed HSM pool (`{name}.managedhsm.{domain}`): its local RBAC.

A pool's host runs the same pipeline as a vault's (api/app.py: challenge, the pool's
token audience, network rules, api-version, route guard, body) with this route table:
role assignments and role definitions at `/`, `/keys` and `/keys/NAME`
(vault/hsmrbac.py), decided by the pool's local RBAC alone.

The rest of a pool's data plane (keys, the security domain, full backup and restore,
settings) is not served yet: every other path answers 404 with a message that says so,
and no body is read for it.
"""

from __future__ import annotations

from starlette.responses import Response

from openkeyvault.access.authorize import Authorizer
from openkeyvault.api.http import Ctx
from openkeyvault.api.rbac import rbac_routes
from openkeyvault.api.router import Route, Router
from openkeyvault.deployment import Deployment
from openkeyvault.vault.context import Caller
from openkeyvault.vault.errors import NotFound
from openkeyvault.vault.hsmrbac import PoolAccessControl

NOT_SERVED = ("This managed HSM serves role management only (role assignments and role "
              "definitions at /, /keys and /keys/NAME); keys, the security domain, backup, "
              "restore and settings are not available on it.")


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
    """Decides from the assignments made at a vault or pool (or below) only."""
    return Authorizer(d.rbac.local_to_resources, d.repo.snapshot)


def pool_router(d: Deployment) -> PoolRouter:
    authorizer = pool_authorizer(d)
    service = PoolAccessControl(authorizer, d.rbac, d.rbac.definitions)
    return PoolRouter(rbac_routes(service, ("keys",), authorizer))
