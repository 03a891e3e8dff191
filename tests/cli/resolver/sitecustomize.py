"""Loaded by the `az` subprocesses of tests/cli (PYTHONPATH): `*.localhost` resolves to the
loopback address inside that process only, as tests/support/dns.py does in the test process,
so the tests need no /etc/hosts line for each vault."""

import socket

_real_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    if isinstance(host, bytes):
        host = host.decode()
    if isinstance(host, str) and host.lower().endswith(".localhost"):
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo
