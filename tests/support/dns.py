"""Resolve `*.localhost` to loopback inside the test process only (never /etc/hosts)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

_real_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(host, bytes):
        host = host.decode()
    if isinstance(host, str) and host.lower().endswith(".localhost"):
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


@contextlib.contextmanager
def localhost_subdomains() -> Iterator[None]:
    socket.getaddrinfo = _getaddrinfo
    try:
        yield
    finally:
        socket.getaddrinfo = _real_getaddrinfo
