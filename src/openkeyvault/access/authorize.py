"""The authorization decision every domain operation asks for.

For now the deployment's dev identity may do everything and every other
principal is refused; role definitions and assignments come behind the same
call.
"""

from __future__ import annotations

from dataclasses import dataclass

from openkeyvault.access.actions import ALL
from openkeyvault.access.principals import Principal


@dataclass(frozen=True)
class Scope:
    vault: str
    path: str = "/"  # "/", "/secrets", "/secrets/NAME"


class Authorizer:
    def __init__(self, admin_object_ids: frozenset[str]) -> None:
        self._admins = admin_object_ids

    def allowed(self, principal: Principal, data_action: str, scope: Scope) -> bool:
        if data_action not in ALL:
            return False
        return principal.object_id in self._admins
