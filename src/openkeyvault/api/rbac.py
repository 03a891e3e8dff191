"""Role management routes (rbac.json): wire JSON → request model → AccessControlService
call → wire JSON.

Paths are `/{scope}/providers/Microsoft.Authorization/roleAssignments[/{name}]` and
`.../roleDefinitions[/{name}]`, where scope is `/` (empty), `/keys`, `/keys/NAME`,
`/secrets`, ... Key names cannot hold a dot, so `/keys/providers` stays a key.

The same routes serve a managed HSM pool's local RBAC (api/pools.py) with the pool's
scopes (`/`, `/keys`, `/keys/NAME`), its own service (vault/hsmrbac.py) and its own
authorizer, which sees only the assignments made at the pool.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from openkeyvault.access.authorize import Authorizer
from openkeyvault.access.definitions import definition_id
from openkeyvault.access.roles import RoleDefinition
from openkeyvault.api import render
from openkeyvault.api.http import Ctx, json_response
from openkeyvault.api.models import decode_body
from openkeyvault.api.models.rbac import (
    RoleAssignmentCreateParameters,
    RoleDefinitionCreateParameters,
)
from openkeyvault.api.router import Guard, Route, pattern, role_guard
from openkeyvault.vault import operations
from openkeyvault.vault.accesscontrol import AccessControlService, Assignment
from openkeyvault.vault.context import Caller
from openkeyvault.vault.models import Page

PROVIDER = "providers/Microsoft.Authorization"
ASSIGNMENT_TYPE = "Microsoft.Authorization/roleAssignments"
DEFINITION_TYPE = "Microsoft.Authorization/roleDefinitions"
COLLECTIONS = ("keys", "secrets", "certificates")


def assignment(a: Assignment) -> dict[str, Any]:
    prefix = "" if a.scope == "/" else a.scope
    return {
        "id": f"{prefix}/{PROVIDER}/roleAssignments/{a.name}",
        "name": a.name,
        "type": ASSIGNMENT_TYPE,
        "properties": {"scope": a.scope, "roleDefinitionId": definition_id(a.role_definition_id),
                       "principalId": a.principal_id},
    }


def definition(r: RoleDefinition) -> dict[str, Any]:
    return {
        "id": definition_id(r.id),
        "name": r.id,
        "type": DEFINITION_TYPE,
        "properties": {
            "roleName": r.name,
            "description": r.description,
            "type": "AKVBuiltInRole" if r.built_in else "CustomRole",
            "permissions": [{"actions": list(p.actions), "notActions": list(p.not_actions),
                             "dataActions": list(p.data_actions),
                             "notDataActions": list(p.not_data_actions)}
                            for p in r.permissions],
            "assignableScopes": list(r.assignable_scopes),
        },
    }


def _scope(ctx: Ctx, collection: str | None) -> str:
    if collection is None:
        return "/"
    name = ctx.params.get("object")
    return f"/{collection}/{name}" if name is not None else f"/{collection}"


def _page(ctx: Ctx, p: Page, items: list[dict[str, Any]]) -> Response:
    body = render.page(ctx.base, ctx.path, ctx.api_version, ctx.query.get("maxresults"), p,
                       items)
    f = ctx.query.get("$filter")
    if body["nextLink"] and f:
        body["nextLink"] += f"&$filter={quote(f)}"
    return json_response(body)


class RbacRoutes:
    def __init__(self, service: AccessControlService) -> None:
        self.s = service

    def list_assignments(self, ctx: Ctx, collection: str | None) -> Response:
        p = self.s.list_assignments(ctx.caller, _scope(ctx, collection), ctx.query.get("$filter"),
                                    ctx.query.get("$skiptoken"), ctx.query.get("maxresults"))
        return _page(ctx, p, [assignment(a) for a in p.items])

    def get_assignment(self, ctx: Ctx, collection: str | None) -> Response:
        a = self.s.get_assignment(ctx.caller, _scope(ctx, collection), ctx.params["name"])
        return json_response(assignment(a))

    def create_assignment(self, ctx: Ctx, collection: str | None) -> Response:
        p = decode_body(ctx, RoleAssignmentCreateParameters)
        a, _ = self.s.create_assignment(ctx.caller, _scope(ctx, collection), ctx.params["name"],
                                        p.to_request())
        return json_response(assignment(a), 201)

    def delete_assignment(self, ctx: Ctx, collection: str | None) -> Response:
        a = self.s.delete_assignment(ctx.caller, _scope(ctx, collection), ctx.params["name"])
        return json_response(assignment(a))

    def list_definitions(self, ctx: Ctx, collection: str | None) -> Response:
        p = self.s.list_definitions(ctx.caller, _scope(ctx, collection), ctx.query.get("$filter"),
                                    ctx.query.get("$skiptoken"), ctx.query.get("maxresults"))
        return _page(ctx, p, [definition(r) for r in p.items])

    def get_definition(self, ctx: Ctx, collection: str | None) -> Response:
        r = self.s.get_definition(ctx.caller, _scope(ctx, collection), ctx.params["name"])
        return json_response(definition(r))

    def set_definition(self, ctx: Ctx, collection: str | None) -> Response:
        p = decode_body(ctx, RoleDefinitionCreateParameters)
        r = self.s.set_definition(ctx.caller, _scope(ctx, collection), ctx.params["name"],
                                  p.to_request())
        return json_response(definition(r), 201)

    def delete_definition(self, ctx: Ctx, collection: str | None) -> Response:
        r = self.s.delete_definition(ctx.caller, _scope(ctx, collection), ctx.params["name"])
        return json_response(definition(r))


def _bind(fn: Callable[[Ctx, str | None], Response],
          collection: str | None) -> Callable[[Ctx], Response]:
    @functools.wraps(fn)
    def handler(ctx: Ctx) -> Response:
        return fn(ctx, collection)
    return handler


@dataclass(frozen=True)
class LocalGuard:
    """`inner`, decided by `authorizer` instead of the one the app passes: a pool's
    role management is decided by its local RBAC only."""

    inner: Guard
    authorizer: Authorizer

    def check(self, authorizer: Authorizer, caller: Caller, params: dict[str, str]) -> None:
        self.inner.check(self.authorizer, caller, params)


def rbac_routes(service: AccessControlService,
                collections: tuple[str, ...] = COLLECTIONS,
                authorizer: Authorizer | None = None) -> list[Route]:
    """The role management routes of a vault; with `authorizer`, of a managed HSM pool:
    its guards decide with that authorizer, and custom role definitions belong to the
    pool (written at its `/`), not to the deployment."""
    h = RbacRoutes(service)
    pool = authorizer is not None

    def guard(g: Guard) -> Guard:
        return LocalGuard(g, authorizer) if authorizer is not None else g

    scopes: list[tuple[str, str | None, str]] = [("", None, "/")]
    for c in collections:
        scopes += [(f"/{c}", c, f"/{c}"), (f"/{c}/{{object}}", c, f"/{c}/{{object}}")]
    routes = []
    for prefix, collection, scope in scopes:
        for kind, what, ops in (
            ("roleassignments", "Assignment",
             (h.list_assignments, h.get_assignment, h.create_assignment, h.delete_assignment)),
            ("roledefinitions", "Definition",
             (h.list_definitions, h.get_definition, h.set_definition, h.delete_definition)),
        ):
            base = f"{prefix}/{PROVIDER.lower()}/{kind}"
            listing, get, put, delete = ops
            op = operations.get
            put_op = op(f"Role{what}Create" if what == "Assignment" else f"Role{what}Set")
            # Definitions are written at the deployment scope: a custom role is shared by
            # every vault of the deployment (vault/accesscontrol.py).
            # A pool's own definitions are written at the pool's `/`.
            shared = what == "Definition" and not pool
            write_scope = "/" if what == "Definition" else scope
            routes += [
                Route("GET", pattern(base), _bind(listing, collection), inline=True,
                      guard=guard(role_guard(op(f"Role{what}List"), scope)),
                      operation=op(f"Role{what}List")),
                Route("GET", pattern(base + "/{name}"), _bind(get, collection), inline=True,
                      guard=guard(role_guard(op(f"Role{what}Get"), scope)),
                      operation=op(f"Role{what}Get")),
                Route("PUT", pattern(base + "/{name}"), _bind(put, collection),
                      guard=guard(role_guard(put_op, write_scope, deployment=shared)),
                      operation=put_op),
                Route("DELETE", pattern(base + "/{name}"), _bind(delete, collection),
                      guard=guard(role_guard(op(f"Role{what}Delete"), write_scope,
                                             deployment=shared)),
                      operation=op(f"Role{what}Delete")),
            ]
    return routes
