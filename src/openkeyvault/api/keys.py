"""Keys routes: wire JSON ⇄ KeyService calls."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from openkeyvault.api import render
from openkeyvault.api.http import Ctx, b64url_encode, json_response
from openkeyvault.api.objects import ObjectRoutes
from openkeyvault.vault.keys import KeyService
from openkeyvault.vault.models import KeyOperationResult


class KeyRoutes(ObjectRoutes):
    def __init__(self, service: KeyService) -> None:
        self.s = service

    def bundle(self, base: str, b: Any) -> dict[str, Any]:
        return render.key(base, b)

    def item(self, base: str, b: Any, versioned: bool) -> dict[str, Any]:
        return render.key_item(base, b, versioned=versioned)

    def create(self, ctx: Ctx) -> Response:
        return json_response(render.key(ctx.base, self.s.create(ctx.caller, ctx.params["name"],
                                                                ctx.body)))

    def import_key(self, ctx: Ctx) -> Response:
        b = self.s.import_key(ctx.caller, ctx.params["name"], ctx.body)
        return json_response(render.key(ctx.base, b))

    def get(self, ctx: Ctx) -> Response:
        b = self.s.get(ctx.caller, ctx.params["name"], ctx.params.get("version"))
        return json_response(render.key(ctx.base, b))

    def update(self, ctx: Ctx) -> Response:
        b = self.s.update(ctx.caller, ctx.params["name"], ctx.params.get("version"), ctx.body)
        return json_response(render.key(ctx.base, b))

    def rotate(self, ctx: Ctx) -> Response:
        return json_response(render.key(ctx.base, self.s.rotate(ctx.caller, ctx.params["name"])))

    def get_rotation_policy(self, ctx: Ctx) -> Response:
        p = self.s.get_rotation_policy(ctx.caller, ctx.params["name"])
        return json_response(render.rotation_policy(ctx.base, p))

    def set_rotation_policy(self, ctx: Ctx) -> Response:
        p = self.s.set_rotation_policy(ctx.caller, ctx.params["name"], ctx.body)
        return json_response(render.rotation_policy(ctx.base, p))

    def operation(self, op: str) -> Any:
        def handler(ctx: Ctx) -> Response:
            result = self.s.operate(ctx.caller, ctx.params["name"], ctx.params.get("version"),
                                    op, ctx.body)
            if isinstance(result, bool):
                return json_response({"value": result})
            assert isinstance(result, KeyOperationResult)
            return json_response({
                "kid": f"{ctx.base}/keys/{result.name}/{result.version}",
                "value": b64url_encode(result.value),
            })
        return handler

    def rng(self, ctx: Ctx) -> Response:
        return json_response({"value": b64url_encode(self.s.random_bytes(ctx.caller,
                                                                         ctx.body.get("count")))})
