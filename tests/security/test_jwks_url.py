"""A trusted issuer's keys fetched from an HTTPS JWKS URL: cached, fetched again for an
unknown key id at most once a minute, never over a redirect or beyond the size cap.

The JWKS is served by a small HTTPS server in the test (its certificate signed by the dev
server's CA, which a dev server trusts for these fetches). The dev clock (POST
/_okv/dev/clock) moves time past the refresh interval.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from openkeyvault.access.jwks import MAX_JWKS_BYTES, MIN_REFRESH_SECONDS
from openkeyvault.crypto.x509 import make_server_cert
from openkeyvault.deployment import Deployment
from tests.security.conftest import Rest, resource
from tests.security.trust_support import TestIssuer, unique
from tests.support.server import DevServer


class JwksServer:
    """Serves `body` at /jwks over HTTPS, counting requests."""

    def __init__(self, server: DevServer, tmp: Path) -> None:
        cert, key = make_server_cert((server.data_dir / "ca.pem").read_bytes(),
                                     (server.data_dir / "ca.key").read_bytes(),
                                     ["127.0.0.1"], dt.datetime.now(dt.UTC))
        (tmp / "jwks.pem").write_bytes(cert)
        (tmp / "jwks.key").write_bytes(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp / "jwks.pem", tmp / "jwks.key")
        self.body = b"{}"
        self.redirect: str | None = None
        self.hits: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                if outer.redirect and self.path == "/jwks":
                    self.send_response(302)
                    self.send_header("Location", outer.redirect)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, issuer: TestIssuer) -> None:
        self.body = json.dumps(issuer.jwks()).encode()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server(server: DevServer, tmp_path: Path) -> Iterator[JwksServer]:
    s = JwksServer(server, tmp_path)
    yield s
    s.close()


def advance(server: DevServer, seconds: int) -> None:
    r = requests.post(f"{server.url}/_okv/dev/clock", json={"advanceSeconds": seconds},
                      headers={"X-IDENTITY-HEADER": server.env["IDENTITY_HEADER"]},
                      verify=server.ca, timeout=30)
    assert r.status_code == 200, r.text


def test_keys_come_from_the_url_and_are_refreshed_for_a_new_kid(
        server: DevServer, deployment: Deployment, rest: Rest,
        jwks_server: JwksServer) -> None:
    iss = TestIssuer()
    jwks_server.serve(iss)
    name = unique("remote-idp")
    deployment.tokens.issuers.add(name, iss.url, jwks_url=jwks_server.url,
                                  audience=resource(server))
    subject = str(uuid.uuid4())
    deployment.directory.create_external(unique("remote-app"), name, subject)

    def status(token: str) -> int:
        return rest.call("GET", "/secrets", token=token).status_code

    # Authenticated (then 403: no role), with one fetch; a second token needs none.
    assert status(iss.token(subject, resource(server))) == 403
    assert status(iss.token(subject, resource(server), jti="second")) == 403
    assert jwks_server.hits == {"/jwks": 1}

    # The issuer rotates: a token with the new kid is refused until a refresh is allowed.
    iss.add_key()
    jwks_server.serve(iss)
    rotated = iss.token(subject, resource(server))
    assert status(rotated) == 401
    assert jwks_server.hits == {"/jwks": 1}
    advance(server, MIN_REFRESH_SECONDS + 1)
    assert status(rotated) == 403
    assert jwks_server.hits == {"/jwks": 2}

    # A document over the size cap is not used; the keys held are kept.
    iss.add_key()
    jwks_server.body = b" " * (MAX_JWKS_BYTES + 10) + json.dumps(iss.jwks()).encode()
    advance(server, MIN_REFRESH_SECONDS + 1)
    assert status(iss.token(subject, resource(server))) == 401
    assert jwks_server.hits == {"/jwks": 3}
    assert status(iss.token(subject, resource(server), kid=next(iter(iss.keys)))) == 403

    # A redirect is not followed.
    jwks_server.serve(iss)
    jwks_server.redirect = jwks_server.url.replace("/jwks", "/elsewhere")
    advance(server, MIN_REFRESH_SECONDS + 1)
    assert status(iss.token(subject, resource(server))) == 401
    assert jwks_server.hits == {"/jwks": 4}

    jwks_server.redirect = None
    advance(server, MIN_REFRESH_SECONDS + 1)
    assert status(iss.token(subject, resource(server))) == 403
    assert jwks_server.hits == {"/jwks": 5}
