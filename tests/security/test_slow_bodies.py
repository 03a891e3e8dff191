"""A body that trickles in is cut off: 408 once its deadline passes, nothing stored, and
the worker is free for everyone else meanwhile."""

from __future__ import annotations

import socket
import ssl
import time

from openkeyvault.api.http import BODY_SECONDS, body_deadline
from tests.security.conftest import Rest
from tests.support.server import DevServer
from tests.support.tls import LOOPBACK, healthz


def test_a_trickled_body_gets_408_and_stores_nothing(server: DevServer, rest: Rest) -> None:
    body = b'{"value":"' + b"x" * 80 + b'"}'
    deadline = body_deadline(len(body))
    ctx = ssl.create_default_context(cafile=server.ca)
    with socket.create_connection((LOOPBACK, server.port), timeout=60) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(
            f"PUT /secrets/trickled?api-version=7.6 HTTP/1.1\r\nHost: localhost:{server.port}"
            f"\r\nAuthorization: Bearer {rest.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode())
        tls.settimeout(0.5)
        started, answer, sent, others_served = time.monotonic(), b"", 0, None
        while time.monotonic() - started < deadline + 30 and b"\r\n\r\n" not in answer:
            if sent < len(body) - 1:  # never the last byte: the body stays incomplete
                tls.sendall(body[sent:sent + 1])
                sent += 1
            if others_served is None and time.monotonic() - started > 2:
                others_served = healthz(server.port, server.ca, timeout=5)
            try:
                chunk = tls.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                break
            answer += chunk
    assert others_served, "the worker did not serve others while a body trickled in"
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code":"RequestTimeout"' in answer, answer
    assert time.monotonic() - started >= BODY_SECONDS  # cut at the deadline, not before
    assert rest.call("GET", "/secrets/trickled").status_code == 404


def test_the_deadline_grows_with_the_body() -> None:
    assert body_deadline(0) == BODY_SECONDS
    assert body_deadline(32 * 1024 * 1024) == BODY_SECONDS + 512  # 64 KiB/s at the least
