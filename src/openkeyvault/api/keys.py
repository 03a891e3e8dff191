"""Keys routes: wire JSON ⇄ KeyService calls."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from openkeyvault.api import render
from openkeyvault.api.http import Ctx, b64url_decode, b64url_encode, empty_response, json_response
from openkeyvault.vault.keys import KeyService
from openkeyvault.vault.models import KeyOperationResult, Page


class KeyRoutes:
    def __init__(self, service: KeyService) -> None:
        self.s = service

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

    def _list(self, ctx: Ctx, page: Page, versioned: bool) -> Response:
        items = [render.key_item(ctx.base, b, versioned=versioned) for b in page.items]
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
        return json_response(render.key(ctx.base, self.s.delete(ctx.caller, ctx.params["name"])))

    def get_deleted(self, ctx: Ctx) -> Response:
        return json_response(render.key(ctx.base, self.s.get_deleted(ctx.caller,
                                                                     ctx.params["name"])))

    def recover(self, ctx: Ctx) -> Response:
        return json_response(render.key(ctx.base, self.s.recover(ctx.caller, ctx.params["name"])))

    def purge(self, ctx: Ctx) -> Response:
        self.s.purge(ctx.caller, ctx.params["name"])
        return empty_response(204)

    def backup(self, ctx: Ctx) -> Response:
        return json_response({"value": b64url_encode(self.s.backup(ctx.caller,
                                                                   ctx.params["name"]))})

    def restore(self, ctx: Ctx) -> Response:
        blob = b64url_decode(ctx.body.get("value"), "value")
        return json_response(render.key(ctx.base, self.s.restore(ctx.caller, blob)))

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
