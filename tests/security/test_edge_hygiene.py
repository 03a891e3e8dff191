"""The edge of the HTTP front: the IMDS-style token endpoint serves only this machine, log
lines cannot be forged, a request with two Host headers is refused, and deeply nested JSON
is a 400 wherever a body is parsed. All over raw HTTPS against the real server."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.security.conftest import Rest, resource
from tests.support.server import DevServer, free_port, read_env_file

IMDS = "/metadata/identity/oauth2/token"
MANAGEMENT = "https://management.azure.com"


# ---- raw HTTPS to any local address ------------------------------------------------------

@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_https(address: str, port: int, ca: str, head: str, body: bytes = b"") -> Reply:
    """Send one request as written (`head` without the final blank line) and read the reply.

    The server's certificate names localhost, so it is verified as localhost whatever
    address of this machine the connection goes to."""
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection((address, port), timeout=30) as sock, \
            ctx.wrap_socket(sock, server_hostname="localhost") as tls:
        tls.sendall(head.encode("latin-1") + b"\r\nConnection: close\r\n\r\n" + body)
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    top, _, payload = data.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return Reply(int(status_line.split()[1]), headers, payload)


def imds_get(address: str, server: DevServer, extra: str = "") -> Reply:
    query = urllib.parse.urlencode({"api-version": "2018-02-01", "resource": resource(server)})
    head = (f"GET {IMDS}?{query} HTTP/1.1\r\nHost: localhost:{server.port}\r\n"
            f"Metadata: true{extra}")
    return raw_https(address, server.port, server.ca, head)


def assert_imds_refusal(r: Reply, status: int, words: str) -> None:
    assert r.status == status, r.body
    body = r.json()
    assert set(body) == {"error", "error_description"}  # IMDS's error shape
    assert isinstance(body["error"], str) and words in body["error_description"]
    assert b"access_token" not in r.body


# ---- servers bound to other addresses ----------------------------------------------------

def local_address() -> str | None:
    """An IPv4 address of this machine's own interfaces that is not a loopback address."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except OSError:
        return None
    for word in out.split():
        try:
            ip = ipaddress.ip_address(word)
        except ValueError:
            continue
        if ip.version == 4 and not (ip.is_loopback or ip.is_link_local):
            return word
    return None


@dataclass
class BoundServer(DevServer):
    """A dev server listening on `address` (DevServer always probes 127.0.0.1)."""

    address: str = "127.0.0.1"

    def start(self, timeout: float = 60) -> None:
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "openkeyvault", "server", "--dev",
                 "--data-dir", str(self.data_dir), "--port", str(self.port),
                 "--host", self.address, *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            if (self.data_dir / "dev.env").exists():
                try:
                    r = raw_https(self.address, self.port, self.ca,
                                  f"GET /healthz HTTP/1.1\r\nHost: localhost:{self.port}")
                    if r.status == 200:
                        self.env = read_env_file(self.data_dir / "dev.env")
                        return
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become ready:\n{self.log()}")


@pytest.fixture(scope="module")
def bound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start servers on other addresses; all are stopped when the module ends."""
    started: list[BoundServer] = []

    def start(address: str, *args: str) -> BoundServer:
        data = tmp_path_factory.mktemp("bound") / "data"
        s = BoundServer(data_dir=data, port=free_port(), address=address, extra_args=args)
        started.append(s)
        s.start()
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def here() -> str:
    address = local_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to bind")
    return address


def notice_lines(server: DevServer) -> list[str]:
    return [ln for ln in server.log().splitlines() if "IMDS token endpoint" in ln]


# ---- IMDS --------------------------------------------------------------------------------

def test_imds_is_off_on_a_non_loopback_bind(bound: Any, here: str) -> None:
    s = bound(here)
    assert_imds_refusal(imds_get(here, s), 403, "--imds")
    [line] = notice_lines(s)  # one clear line at start-up
    assert "is off" in line and here in line and "--imds" in line


def test_msi_keeps_its_header_on_a_non_loopback_bind(bound: Any, here: str) -> None:
    s = bound(here)
    query = urllib.parse.urlencode({"api-version": "2019-08-01", "resource": resource(s)})
    head = f"GET /msi/token?{query} HTTP/1.1\r\nHost: localhost:{s.port}"
    r = raw_https(here, s.port, s.ca, head)
    assert r.status == 401 and b"access_token" not in r.body
    r = raw_https(here, s.port, s.ca, head + f"\r\nX-IDENTITY-HEADER: {s.env['IDENTITY_HEADER']}")
    assert r.status == 200 and r.json()["access_token"]


def test_imds_when_enabled_still_refuses_a_non_loopback_peer(bound: Any, here: str) -> None:
    s = bound(here, "--imds")
    # This machine's own interface address is the peer: not a loopback address.
    assert_imds_refusal(imds_get(here, s), 403, "only to callers on this machine")
    [line] = notice_lines(s)
    assert "is on" in line and "--imds" in line


def test_imds_serves_a_loopback_bind_other_than_127_0_0_1(bound: Any) -> None:
    s = bound("127.0.0.2")
    r = imds_get("127.0.0.2", s)
    assert r.status == 200, r.body
    assert r.json()["access_token"] and r.json()["token_type"] == "Bearer"
    assert notice_lines(s) == []


def test_no_imds_turns_it_off_on_loopback(bound: Any) -> None:
    s = bound("127.0.0.1", "--no-imds")
    assert_imds_refusal(imds_get("127.0.0.1", s), 403, "--no-imds")
    [line] = notice_lines(s)
    assert "is off" in line


@pytest.mark.parametrize("header", ["X-Forwarded-For: 127.0.0.1", "Forwarded: for=127.0.0.1",
                                    "X-Real-IP: 127.0.0.1"])
def test_imds_refuses_a_proxied_request(server: DevServer, header: str) -> None:
    """A proxy on this machine would make any caller look local: such requests are refused."""
    assert_imds_refusal(imds_get("127.0.0.1", server, "\r\n" + header), 403, "proxy")


def test_imds_serves_the_loopback_peer(server: DevServer) -> None:
    r = imds_get("127.0.0.1", server)
    assert r.status == 200 and r.json()["access_token"]


def test_imds_refusals_have_the_imds_shape(server: DevServer) -> None:
    query = urllib.parse.urlencode({"api-version": "2018-02-01", "resource": resource(server)})
    r = raw_https("127.0.0.1", server.port, server.ca,
                  f"GET {IMDS}?{query} HTTP/1.1\r\nHost: localhost:{server.port}")
    assert_imds_refusal(r, 400, "Required metadata header not specified")
    r = raw_https("127.0.0.1", server.port, server.ca,
                  f"GET {IMDS}?api-version=2018-02-01 HTTP/1.1\r\n"
                  f"Host: localhost:{server.port}\r\nMetadata: true")
    assert_imds_refusal(r, 400, "resource")


# ---- log lines ---------------------------------------------------------------------------

FAKE = "1999-01-01 00:00:00,000 INFO openkeyvault.request rid=forged GET /admin 200 0.1ms"


def wait_for_log(server: DevServer, marker: str, count: int) -> list[str]:
    """The log lines holding `marker`, once `count` of them are there (or 20 s passed: each
    line is written just after its response is sent)."""
    deadline = time.monotonic() + 20
    while True:
        lines = [ln for ln in server.log().split("\n") if marker in ln]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_a_request_path_cannot_forge_a_log_line(server: DevServer) -> None:
    marker = f"edge-{uuid.uuid4().hex[:12]}"
    quoted = urllib.parse.quote(f"\r\n{FAKE}", safe="/:,=")
    paths = [
        f"/secrets/{marker}{quoted}",  # CR LF and a whole fake line
        f"/secrets/{marker}%1b[2J%1b]0;title%07",  # terminal control: clear screen, title
        f"/secrets/{marker}%e2%80%a8%e2%80%a9%c2%85%7f%00%09",  # U+2028/9, NEL, DEL, NUL, TAB
        f"/secrets/{marker}%0a%0d%ff%fe",  # bare LF, CR, bytes that are not UTF-8
    ]
    for path in paths:
        r = raw_https("127.0.0.1", server.port, server.ca,
                      f"GET {path}?api-version=7.5 HTTP/1.1\r\nHost: localhost:{server.port}")
        assert r.status in (400, 401, 404), r.body
    lines = wait_for_log(server, marker, len(paths))
    assert len(lines) == len(paths)  # one request, one line
    log = server.log()
    assert not any(ln.startswith("1999-") for ln in log.split("\n"))
    for ln in lines:
        assert re.search(r" (400|401|404) [0-9.]+ms op=\S+ vault=\S+ oid=\S+ ip=\S+$", ln), ln
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]", ln), ln
        # date time level logger rid method path status ms op vault oid ip
        assert len(ln.split(" ")) == 13
    shown = "\n".join(lines)
    for escape in ("\\r\\n1999-01-01", "\\x1b[2J", "\\x07", "\\u2028", "\\u2029", "\\x85",
                   "\\x7f", "\\x00", "\\t", "\\n"):
        assert escape in shown, escape


# ---- two Host headers --------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/secrets/x?api-version=7.5",  # data plane, before authentication (no token sent)
    f"{IMDS}?api-version=2018-02-01&resource=https://vault.localhost",
    "/msi/token?api-version=2019-08-01&resource=https://vault.localhost",
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v"
    "?api-version=2026-05-15",
    "/healthz",
])
@pytest.mark.parametrize("second", ["Host: evil.example", "host: localhost", "HOST: localhost"])
def test_two_host_headers_are_refused(server: DevServer, path: str, second: str) -> None:
    first = f"Host: localhost:{server.port}"
    r = raw_https("127.0.0.1", server.port, server.ca,
                  f"GET {path} HTTP/1.1\r\n{first}\r\n{second.replace('localhost', first[6:])}"
                  "\r\nMetadata: true")
    assert r.status == 400, r.body
    assert r.json()["error"]["code"] == "BadParameter"
    assert "Host" in r.json()["error"]["message"]
    assert b"access_token" not in r.body


def test_one_host_header_still_reaches_authentication(server: DevServer) -> None:
    r = raw_https("127.0.0.1", server.port, server.ca,
                  f"GET /secrets/x?api-version=7.5 HTTP/1.1\r\nHost: localhost:{server.port}")
    assert r.status == 401


# ---- nested JSON -------------------------------------------------------------------------

def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def send_json(rest: Rest, method: str, path: str, body: bytes, token: str | None = "dev",
              query: str = "api-version=7.5", **headers: str) -> Any:
    return rest.call(method, path, token=token, query=query, data=body,
                     headers={"Content-Type": "application/json", **headers})


def assert_too_deep(r: Any) -> None:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "BadParameter" and "64 levels" in error["message"]


@pytest.mark.parametrize("depth", [65, 1000, 50_000])
@pytest.mark.parametrize(("method", "path", "wrap"), [
    ("PUT", "/secrets/deep", b'{"value": %s}'),
    ("PATCH", "/secrets/deep/", b'{"tags": %s}'),
    ("POST", "/keys/deep/create", b'{"kty": "RSA", "key_ops": %s}'),
    ("POST", "/certificates/deep/create", b'{"policy": {"x509_props": %s}}'),
    ("PATCH", "/certificates/deep/policy", b'{"issuer": %s}'),
    ("POST", "/certificates/deep/import", b'{"value": "x", "policy": %s}'),
])
def test_deep_json_is_a_400(rest: Rest, method: str, path: str, wrap: bytes,
                            depth: int) -> None:
    assert_too_deep(send_json(rest, method, path, wrap % nested(depth)))


def test_deep_json_in_utf16_is_a_400(rest: Rest) -> None:
    body = ('{"value": "\\"", "tags": ' + "[" * 2000 + "]" * 2000 + "}").encode("utf-16-le")
    assert_too_deep(send_json(rest, "PUT", "/secrets/deep16", body))


def test_brackets_inside_a_string_do_not_count(rest: Rest) -> None:
    value = "[{" * 2000 + '"\\'
    r = send_json(rest, "PUT", "/secrets/brackets", json.dumps({"value": value}).encode())
    assert r.status_code == 200, r.text
    assert rest.call("GET", "/secrets/brackets").json()["value"] == value


def test_deep_json_on_the_management_api(rest: Rest) -> None:
    token = rest.msi_token(MANAGEMENT)["access_token"]
    path = f"/subscriptions/{uuid.uuid4()}/resourceGroups/rg/providers/Microsoft.KeyVault" \
           f"/vaults/deep{uuid.uuid4().hex[:8]}"
    r = send_json(rest, "PUT", path, b'{"location": "local", "properties": %s}' % nested(1000),
                  token=token, query="api-version=2026-05-15")
    assert r.status_code == 400, r.text
    assert "64 levels" in r.json()["error"]["message"]


def test_deep_json_on_the_dev_clock(rest: Rest, server: DevServer) -> None:
    r = send_json(rest, "POST", "/_okv/dev/clock", b'{"advanceSeconds": %s}' % nested(1000),
                  token=None, query="", **{"X-IDENTITY-HEADER": server.env["IDENTITY_HEADER"]})
    assert_too_deep(r)


def test_no_request_here_hit_a_recursion_limit(server: DevServer) -> None:
    assert "RecursionError" not in server.log()
