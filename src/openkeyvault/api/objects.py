"""Routes every object collection shares: lists, soft delete, recover, purge, backup, restore.

A concrete class names its service and how one bundle renders (as a full
bundle, and as a list item).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from openkeyvault.api import render
from openkeyvault.api.http import Ctx, b64url_decode, b64url_encode, empty_response, json_response
from openkeyvault.api.models import decode_body
from openkeyvault.api.models.common import RestoreParameters
from openkeyvault.vault.models import Page


class ObjectRoutes:
    s: Any  # an ObjectService with backup/restore
    restore_model: type[RestoreParameters] = RestoreParameters  # the collection's spec name

    def bundle(self, base: str, b: Any) -> dict[str, Any]:
        raise NotImplementedError

    def item(self, base: str, b: Any, versioned: bool) -> dict[str, Any]:
        raise NotImplementedError

    def _one(self, ctx: Ctx, b: Any) -> Response:
        return json_response(self.bundle(ctx.base, b))

    def _list(self, ctx: Ctx, page: Page, versioned: bool,
              keep: dict[str, str] | None = None) -> Response:
        items = [self.item(ctx.base, b, versioned) for b in page.items]
        return json_response(render.page(ctx.base, ctx.path, ctx.api_version,
                                         ctx.query.get("maxresults"), page, items, keep))

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
        return self._one(ctx, self.s.delete(ctx.caller, ctx.params["name"]))

    def get_deleted(self, ctx: Ctx) -> Response:
        return self._one(ctx, self.s.get_deleted(ctx.caller, ctx.params["name"]))

    def recover(self, ctx: Ctx) -> Response:
        return self._one(ctx, self.s.recover(ctx.caller, ctx.params["name"]))

    def purge(self, ctx: Ctx) -> Response:
        self.s.purge(ctx.caller, ctx.params["name"])
        return empty_response(204)

    def backup(self, ctx: Ctx) -> Response:
        return json_response({"value": b64url_encode(self.s.backup(ctx.caller,
                                                                   ctx.params["name"]))})

    def restore(self, ctx: Ctx) -> Response:
        blob = b64url_decode(decode_body(ctx, self.restore_model).value, "value")
        return self._one(ctx, self.s.restore(ctx.caller, blob))
