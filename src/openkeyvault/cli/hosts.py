"""Whether a vault's host name resolves here, and the hosts line that makes it.

Many resolvers answer `*.localhost` with the loopback address, some do not (glibc
without systemd-resolved, many containers): there a new vault's host needs a line in
/etc/hosts before a client can reach it.
"""

from __future__ import annotations

import socket


def resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
        return True
    except OSError:
        return False


def hosts_note(host: str) -> list[str]:
    """Lines telling how to make `host` resolve ([] when it already does)."""
    if resolves(host):
        return []
    return [f"Note: {host} does not resolve on this machine. Add this line to /etc/hosts:",
            f"  127.0.0.1 {host}"]
