"""Who is calling."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    object_id: str
    tenant_id: str
    app_id: str | None = None
    issuer: str | None = None  # the token's `iss`, when the principal came from a token

    def describe(self) -> str:
        return f"appid={self.app_id or '-'};oid={self.object_id}"

    def describe_with_issuer(self) -> str:
        """As Azure names a caller in access-policy and firewall refusals."""
        return f"{self.describe()};iss={self.issuer or '-'}"
