"""Secrets routes: wire JSON → request model → SecretService call → wire JSON."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from openkeyvault.api import render
from openkeyvault.api.http import Ctx, json_response
from openkeyvault.api.models import decode_body
from openkeyvault.api.models.common import attributes
from openkeyvault.api.models.secrets import (
    SecretRestoreParameters,
    SecretSetParameters,
    SecretUpdateParameters,
)
from openkeyvault.api.objects import ObjectRoutes
from openkeyvault.vault.secrets import SecretService


class SecretRoutes(ObjectRoutes):
    restore_model = SecretRestoreParameters

    def __init__(self, service: SecretService) -> None:
        self.s = service

    def bundle(self, base: str, b: Any) -> dict[str, Any]:
        return render.secret(base, b)

    def item(self, base: str, b: Any, versioned: bool) -> dict[str, Any]:
        return render.secret(base, b, versioned=versioned)

    def set(self, ctx: Ctx) -> Response:
        p = decode_body(ctx, SecretSetParameters)
        b = self.s.set(ctx.caller, ctx.params["name"], p.value, p.content_type,
                       attributes(p.attributes), p.tags)
        return json_response(render.secret(ctx.base, b))

    def get(self, ctx: Ctx) -> Response:
        b = self.s.get(ctx.caller, ctx.params["name"], ctx.params.get("version"))
        return json_response(render.secret(ctx.base, b))

    def update(self, ctx: Ctx) -> Response:
        p = decode_body(ctx, SecretUpdateParameters)
        b = self.s.update(ctx.caller, ctx.params["name"], ctx.params.get("version"),
                          p.to_request())
        return json_response(render.secret(ctx.base, b))
