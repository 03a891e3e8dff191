"""Busy connections per client address: one address cannot take every slot.

The server speaks HTTP/1.1 only, so a connection carries at most one request at a
time, and a connection with no request in progress is closed after the idle timeout.
What lasts, then, is a connection whose request is in progress (a slow body, a long
operation): counting requests in progress per socket peer bounds what one address can
hold, and leaves the rest of `--max-connections` to everyone else. Past the limit a
request is answered 429 at once, its body is not read, and its connection is closed.

Counts are per worker process (the kernel spreads one address's connections over the
workers by their ports). Reverse proxies named by `--trusted-proxy` carry many clients
on their connections and are not counted. Connections that never send a request's
head are bounded by the idle timeout and `--max-connections` (docs/configuration.md).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.responses import Response

from openkeyvault.api.errors import error_body
from openkeyvault.api.http import json_response

RETRY_AFTER_SECONDS = 1
NOT_COUNTED = ""


class BusyPeers:
    def __init__(self, limit: int, trusted_proxies: tuple[str, ...] = ()) -> None:
        self.limit = limit  # 0: no limit
        self._busy: dict[str, int] = {}
        self._proxies = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        self._proxy_cache: dict[str, bool] = {}

    def enter(self, scope: dict[str, Any]) -> str | None:
        """The key to `leave` with once the response is sent (NOT_COUNTED when the
        request is not counted), or None when the address has `limit` requests in
        progress already."""
        if not self.limit:
            return NOT_COUNTED
        client = scope.get("client")
        if not client:
            return NOT_COUNTED
        address: str = client[0]
        if self._proxies and self._is_proxy(address):
            return NOT_COUNTED
        busy = self._busy.get(address, 0)
        if busy >= self.limit:
            return None
        self._busy[address] = busy + 1
        return address

    def leave(self, key: str) -> None:
        if key:
            busy = self._busy[key] - 1
            if busy:
                self._busy[key] = busy
            else:
                del self._busy[key]

    def busy(self, address: str) -> int:
        return self._busy.get(address, 0)

    def _is_proxy(self, address: str) -> bool:
        hit = self._proxy_cache.get(address)
        if hit is None:
            try:
                ip = ipaddress.ip_address(address)
                hit = any(ip in net for net in self._proxies)
            except ValueError:
                hit = False
            if len(self._proxy_cache) >= 4096:
                self._proxy_cache.clear()
            self._proxy_cache[address] = hit
        return hit

    def refusal(self) -> Response:
        """429 in Key Vault's throttling shape; the connection is closed after it, as
        its unread body would otherwise have to be drained."""
        return json_response(
            error_body("Throttled", "Too many requests in progress from this client "
                       f"address (at most {self.limit} at once); retry later."),
            429, headers={"Retry-After": str(RETRY_AFTER_SECONDS), "Connection": "close"})
