"""A managed HSM pool's settings routes (settings.json): wire JSON → request model →
HsmSettingsService call → wire JSON.

`GET /settings` answers `{"settings": [Setting]}` (not paged), `GET /settings/{name}` and
`PATCH /settings/{name}` (body UpdateSettingRequest `{"value": "..."}`) one Setting
`{"name", "value", "type"}`. Served on a pool's host only (api/pools.py).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from openkeyvault.api.http import Ctx, json_response
from openkeyvault.api.models import decode_body
from openkeyvault.api.models.settings import UpdateSettingRequest
from openkeyvault.api.router import Route, pattern
from openkeyvault.vault import operations
from openkeyvault.vault.hsmsettings import HsmSettingsService, Setting


def setting(s: Setting) -> dict[str, Any]:
    return {"name": s.name, "value": s.value, "type": s.type}


class SettingRoutes:
    def __init__(self, service: HsmSettingsService) -> None:
        self.s = service

    def list(self, ctx: Ctx) -> Response:
        return json_response({"settings": [setting(s) for s in self.s.list(ctx.caller)]})

    def get(self, ctx: Ctx) -> Response:
        return json_response(setting(self.s.get(ctx.caller, ctx.params["name"])))

    def update(self, ctx: Ctx) -> Response:
        p = decode_body(ctx, UpdateSettingRequest)
        return json_response(setting(self.s.update(ctx.caller, ctx.params["name"], p.value)))


def settings_routes(service: HsmSettingsService) -> list[Route]:
    """The settings routes, each naming its row (vault/operations.py); api/pools.py gives
    them the pool's guard."""
    h = SettingRoutes(service)
    op = operations.get
    return [
        Route("GET", pattern("/settings"), h.list, inline=True, operation=op("SettingList")),
        Route("GET", pattern("/settings/{name}"), h.get, inline=True,
              operation=op("SettingGet")),
        Route("PATCH", pattern("/settings/{name}"), h.update, operation=op("SettingUpdate")),
    ]
