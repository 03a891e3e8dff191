"""Clients on new TLS connections to a loopback server, as tests and benchmarks open them.

A request on a new connection cannot hide behind a pooled one (what a flood of idle
connections would starve first), and a large body sent by hand can stop the moment the
answer begins (what shows whether a server refuses before it reads).
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import time
import urllib.request
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"
CHUNK = 256 * 1024


def healthz(port: int, ca: str, timeout: float) -> bool:
    """One GET /healthz on a new TLS connection: True if it was answered 200."""
    ctx = ssl.create_default_context(cafile=ca)
    try:
        with urllib.request.urlopen(f"https://{LOOPBACK}:{port}/healthz",  # noqa: S310
                                    context=ctx, timeout=timeout) as r:
            status: int = r.status
            return status == 200
    except OSError:
        return False


@dataclass
class LargePost:
    status: int | None  # None: the connection closed before an answer began
    sent: int  # bytes of the body sent
    error: str | None  # the OSError's class name, if one ended the exchange


def post_large(port: int, ca: str, path: str, token: str, size: int,
               timeout: float = 120.0) -> LargePost:
    """POST a `size`-byte `{"value": "AAA..."}` body to `path` (with its query), sending it
    while watching for the answer and stopping once it begins, as a client that reads
    early would."""
    ctx = ssl.create_default_context(cafile=ca)
    s = ctx.wrap_socket(socket.create_connection((LOOPBACK, port), timeout=timeout),
                        server_hostname="localhost")
    head = (f"POST {path} HTTP/1.1\r\nHost: localhost:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    prefix, suffix, filler = b'{"value":"', b'"}', b"A" * CHUNK
    sent, got, error = 0, b"", None
    deadline = time.monotonic() + timeout
    try:
        s.sendall(head)
        s.setblocking(False)
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536)
                if not data:
                    break
                got += data
                if _complete(got):
                    break
                continue
            except (ssl.SSLWantReadError, BlockingIOError):
                pass
            if sent < size and not got:
                tail = size - len(suffix)
                piece = (prefix[sent:] if sent < len(prefix) else
                         suffix[sent - tail:] if sent >= tail else filler[: tail - sent])
                try:
                    sent += s.send(piece)
                except (ssl.SSLWantWriteError, BlockingIOError):
                    select.select([s], [s], [], 0.05)
            else:
                select.select([s], [], [], 0.05)
    except OSError as exc:  # closed by the server: the caller judges by what was sent
        error = type(exc).__name__
    finally:
        s.close()
    status = int(got.split(b" ", 2)[1]) if got.startswith(b"HTTP/1.1 ") else None
    return LargePost(status, sent, error)


def _complete(got: bytes) -> bool:
    """Whether `got` holds a whole answer: its head and as much body as it declares."""
    head, sep, rest = got.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    return m is None or len(rest) >= int(m.group(1))
