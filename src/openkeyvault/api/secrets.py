"""Secrets routes: wire JSON ⇄ SecretService calls."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from openkeyvault.api import render
from openkeyvault.api.http import Ctx, json_response
from openkeyvault.api.objects import ObjectRoutes
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


class SecretRoutes(ObjectRoutes):
    def __init__(self, service: SecretService) -> None:
        self.s = service

    def bundle(self, base: str, b: Any) -> dict[str, Any]:
        return render.secret(base, b)

    def item(self, base: str, b: Any, versioned: bool) -> dict[str, Any]:
        return render.secret(base, b, versioned=versioned)

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
