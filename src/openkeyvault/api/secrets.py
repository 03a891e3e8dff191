"""Secrets routes: wire JSON ⇄ SecretService calls."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from openkeyvault.api import render
from openkeyvault.api.http import Ctx, b64url_decode, b64url_encode, empty_response, json_response
from openkeyvault.vault.backup import MAX_BLOB_BYTES
from openkeyvault.vault.errors import BadParameter
from openkeyvault.vault.secrets import SecretService

RESTORE_BODY_LIMIT = MAX_BLOB_BYTES * 4 // 3 + 1024

_ATTRIBUTE_FIELDS = ("enabled", "nbf", "exp")


def _attributes(body: dict[str, Any]) -> dict[str, Any]:
    attrs = body.get("attributes")
    if attrs is None:
        return {}
    if not isinstance(attrs, dict):
        raise BadParameter("attributes must be a JSON object.")
    return attrs


class SecretRoutes:
    def __init__(self, service: SecretService) -> None:
        self.s = service

    def set(self, ctx: Ctx) -> Response:
        body = ctx.body
        if "value" not in body:
            raise BadParameter("The request body must contain 'value'.")
        b = self.s.set(ctx.caller, ctx.params["name"], body["value"], body.get("contentType"),
                       _attributes(body), body.get("tags"))
        return json_response(render.secret(ctx.base, b))

    def get(self, ctx: Ctx) -> Response:
        b = self.s.get(ctx.caller, ctx.params["name"], ctx.params.get("version"))
        return json_response(render.secret(ctx.base, b))

    def update(self, ctx: Ctx) -> Response:
        body = ctx.body
        attrs = _attributes(body)
        sent: set[str] = {k for k in ("contentType", "tags") if k in body}
        sent |= {k for k in _ATTRIBUTE_FIELDS if k in attrs}
        b = self.s.update(ctx.caller, ctx.params["name"], ctx.params.get("version"),
                          body.get("contentType"), attrs, body.get("tags"), frozenset(sent))
        return json_response(render.secret(ctx.base, b))

    def _list(self, ctx: Ctx, page: Any, versioned: bool) -> Response:
        items = [render.secret(ctx.base, b, versioned=versioned) for b in page.items]
        return json_response(render.page(ctx.base, ctx.path, ctx.api_version,
                                         ctx.query.get("maxresults"), page, items))

    def list(self, ctx: Ctx) -> Response:
        p = self.s.list(ctx.caller, ctx.query.get("maxresults"), ctx.query.get("$skiptoken"))
        return self._list(ctx, p, versioned=False)

    def list_versions(self, ctx: Ctx) -> Response:
        p = self.s.list_versions(ctx.caller, ctx.params["name"], ctx.query.get("maxresults"),
                                 ctx.query.get("$skiptoken"))
        return self._list(ctx, p, versioned=True)

    def list_deleted(self, ctx: Ctx) -> Response:
        p = self.s.list_deleted(ctx.caller, ctx.query.get("maxresults"),
                                ctx.query.get("$skiptoken"))
        return self._list(ctx, p, versioned=False)

    def delete(self, ctx: Ctx) -> Response:
        return json_response(render.secret(ctx.base, self.s.delete(ctx.caller,
                                                                   ctx.params["name"])))

    def get_deleted(self, ctx: Ctx) -> Response:
        b = self.s.get_deleted(ctx.caller, ctx.params["name"])
        return json_response(render.secret(ctx.base, b))

    def recover(self, ctx: Ctx) -> Response:
        b = self.s.recover(ctx.caller, ctx.params["name"])
        return json_response(render.secret(ctx.base, b))

    def purge(self, ctx: Ctx) -> Response:
        self.s.purge(ctx.caller, ctx.params["name"])
        return empty_response(204)

    def backup(self, ctx: Ctx) -> Response:
        blob = self.s.backup(ctx.caller, ctx.params["name"])
        return json_response({"value": b64url_encode(blob)})

    def restore(self, ctx: Ctx) -> Response:
        blob = b64url_decode(ctx.body.get("value"), "value")
        return json_response(render.secret(ctx.base, self.s.restore(ctx.caller, blob)))
