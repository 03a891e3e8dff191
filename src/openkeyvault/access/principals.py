"""Who is calling."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    object_id: str
    tenant_id: str
    app_id: str | None = None

    def describe(self) -> str:
        return f"appid={self.app_id or '-'};oid={self.object_id}"
