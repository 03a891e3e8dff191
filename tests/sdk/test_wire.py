"""The Secrets REST API on the wire: raw HTTP with `requests`, against the real server.

Exact status codes and the error shape `{"error": {"code", "message"}}` for what the
SDKs never send on their own: unknown api-versions, odd paths and hosts, bodies
that break the limits. Every refusal must leave what was stored before untouched.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.sdk.clients import unique
from tests.support.server import DevServer

LATEST = "2026-04-01"
API = f"api-version={LATEST}"
SUPPORTED = ("2016-10-01", "7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "7.6-preview.2",
             "2025-07-01", "2026-04-01")  # every version: tests/security/test_api_versions.py
VALUE_LIMIT = 25 * 1024  # bytes of UTF-8
BODY_LIMIT = 256 * 1024
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass
class Wire:
    """One HTTPS session to the server, with a bearer token from its managed identity."""

    server: DevServer
    session: requests.Session
    token: str

    @property
    def port(self) -> int:
        return self.server.port

    def host(self, name: str = "127.0.0.1") -> str:
        return f"{name}:{self.port}"

    def request(self, method: str, path: str, *, query: str | None = API,
                host: str | None = None, auth: bool = True, **kw: Any) -> requests.Response:
        """Send to 127.0.0.1 (any Host header) with the path and query exactly as given."""
        url = f"https://127.0.0.1:{self.port}{path}" + (f"?{query}" if query is not None else "")
        headers = dict(kw.pop("headers", {}))
        if auth:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        if host is not None:
            headers["Host"] = host
        return self.session.request(method, url, headers=headers, verify=self.server.ca,
                                    timeout=30, **kw)

    def follow(self, url: str) -> requests.Response:
        """GET an absolute URL verbatim (a nextLink), with the bearer token."""
        return self.session.get(url, headers={"Authorization": f"Bearer {self.token}"},
                                verify=self.server.ca, timeout=30)

    def put(self, name: str, value: str = "v", **fields: Any) -> dict[str, Any]:
        r = self.request("PUT", f"/secrets/{name}", json={"value": value, **fields})
        assert r.status_code == 200, r.text
        return r.json()

    def snapshot(self, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Everything stored under a name: the latest version (with value) and all versions."""
        latest = self.request("GET", f"/secrets/{name}")
        assert latest.status_code == 200, latest.text
        versions = self.request("GET", f"/secrets/{name}/versions")
        assert versions.status_code == 200, versions.text
        return latest.json(), versions.json()["value"]


def token_for(server: DevServer) -> str:
    r = requests.get(
        f"https://localhost:{server.port}/msi/token",
        params={"api-version": "2019-08-01", "resource": f"https://vault.localhost:{server.port}"},
        headers={"X-IDENTITY-HEADER": server.env["IDENTITY_HEADER"]},
        verify=server.ca, timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.fixture(scope="module")
def wire(server: DevServer) -> Iterator[Wire]:
    with requests.Session() as session:
        yield Wire(server, session, token_for(server))


@pytest.fixture
def stored(wire: Wire) -> Iterator[str]:
    """A secret with one known version; the test's refusals must leave it exactly as it was."""
    name = unique("keep")
    wire.put(name, "original", contentType="text/plain", tags={"keep": "me"})
    before = wire.snapshot(name)
    yield name
    assert wire.snapshot(name) == before


def error_of(r: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert the Key Vault error shape and return the inner error object."""
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["error"]
    err = body["error"]
    assert set(err) <= {"code", "message", "innererror"}
    assert isinstance(err["code"], str) and err["code"]
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code
    return err


def b64_token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def walk(wire: Wire, first: requests.Response) -> list[dict[str, Any]]:
    """Every page of a list, following each nextLink verbatim."""
    pages = []
    r = first
    while True:
        assert r.status_code == 200, r.text
        page = r.json()
        assert set(page) == {"value", "nextLink"}
        pages.append(page)
        if page["nextLink"] is None:
            return pages
        assert len(pages) < 100
        r = wire.follow(page["nextLink"])


# ---- api-version ------------------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED)
def test_each_supported_api_version_is_accepted(wire: Wire, version: str) -> None:
    name = unique()
    q = f"api-version={version}"
    r = wire.request("PUT", f"/secrets/{name}", query=q, json={"value": version})
    assert r.status_code == 200, r.text
    assert wire.request("GET", f"/secrets/{name}", query=q).json()["value"] == version
    assert wire.request("GET", "/secrets", query=f"{q}&maxresults=1").status_code == 200


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/secrets/{name}"), ("GET", "/secrets"), ("PUT", "/secrets/{name}"),
    ("GET", "/secrets/{name}/versions"), ("DELETE", "/secrets/{name}"),
])
def test_missing_api_version_is_400(wire: Wire, stored: str, method: str, path: str) -> None:
    body = {"value": "changed"} if method == "PUT" else None
    r = wire.request(method, path.format(name=stored), query=None, json=body)
    error_of(r, 400, "BadParameter")
    r = wire.request(method, path.format(name=stored), query="maxresults=1", json=body)
    error_of(r, 400, "BadParameter")


@pytest.mark.parametrize("version", ["9.9", "2016-10-02", "7.7", "2025-07-02", "7.5-preview", ""])
def test_unknown_api_version_is_400_naming_the_latest(wire: Wire, stored: str,
                                                       version: str) -> None:
    expected = (f"The specified version ({version}) is not recognized. Consider using the "
                f"latest supported version ({LATEST}).")
    q = f"api-version={version}"
    err = error_of(wire.request("GET", f"/secrets/{stored}", query=q), 400, "BadParameter")
    assert err["message"] == expected
    err = error_of(wire.request("PUT", f"/secrets/{stored}", query=q, json={"value": "changed"}),
                   400, "BadParameter")
    assert err["message"] == expected


def test_percent_encoded_api_version_is_accepted(wire: Wire) -> None:
    name = unique()
    r = wire.request("PUT", f"/secrets/{name}", query="api%2Dversion=7.5", json={"value": "pe"})
    assert r.status_code == 200, r.text
    for q in ("api%2Dversion=7.5", "api-version=2025%2D07%2D01", "api%2dversion=7%2E6"):
        r = wire.request("GET", f"/secrets/{name}", query=q)
        assert r.status_code == 200, r.text
        assert r.json()["value"] == "pe"
    r = wire.request("GET", "/secrets", query="api%2Dversion=7.5&maxresults=1")
    assert r.status_code == 200, r.text


# ---- latest version and trailing slashes ------------------------------------------------


def test_latest_version_with_and_without_trailing_slash(wire: Wire) -> None:
    name = unique()
    v1 = wire.put(name, "one")["id"].rsplit("/", 1)[1]
    second = wire.put(name, "two")
    v2 = second["id"].rsplit("/", 1)[1]
    for path in (f"/secrets/{name}/", f"/secrets/{name}"):
        r = wire.request("GET", path)
        assert r.status_code == 200, r.text
        assert r.json() == second

    r = wire.request("PATCH", f"/secrets/{name}/", json={"tags": {"slash": "yes"}})
    assert r.status_code == 200, r.text
    assert r.json()["id"].endswith(f"/{name}/{v2}")
    assert r.json()["tags"] == {"slash": "yes"}
    r = wire.request("PATCH", f"/secrets/{name}", json={"contentType": "text/x-latest"})
    assert r.status_code == 200, r.text
    assert r.json()["id"].endswith(f"/{name}/{v2}")

    latest = wire.request("GET", f"/secrets/{name}/").json()
    assert latest["value"] == "two"
    assert latest["tags"] == {"slash": "yes"} and latest["contentType"] == "text/x-latest"
    old = wire.request("GET", f"/secrets/{name}/{v1}").json()
    assert old["value"] == "one" and "tags" not in old and "contentType" not in old


# ---- paging -----------------------------------------------------------------------------


LIST_PATHS = ("/secrets", "/deletedsecrets", "/secrets/{name}/versions")


@pytest.mark.parametrize("path", LIST_PATHS)
@pytest.mark.parametrize("maxresults", ["0", "26", "-1", "abc", "2.5", "1e1", "100000000000"])
def test_maxresults_out_of_range_is_400(wire: Wire, path: str, maxresults: str) -> None:
    r = wire.request("GET", path.format(name=unique()), query=f"{API}&maxresults={maxresults}")
    err = error_of(r, 400, "BadParameter")
    assert "maxresults" in err["message"]


def test_maxresults_1_and_25_page_versions_with_absolute_next_links(wire: Wire) -> None:
    name = unique()
    ids = [wire.put(name, str(i))["id"] for i in range(26)]

    pages = walk(wire, wire.request("GET", f"/secrets/{name}/versions",
                                    query=f"{API}&maxresults=1"))
    assert [len(p["value"]) for p in pages] == [1] * 26
    assert [p["value"][0]["id"] for p in pages] == ids  # oldest first, each once
    for p in pages[:-1]:
        assert p["nextLink"].startswith(f"https://127.0.0.1:{wire.port}/secrets/{name}/versions?")
        assert "maxresults=1" in p["nextLink"]

    for query in (f"{API}&maxresults=25", API):
        pages = walk(wire, wire.request("GET", f"/secrets/{name}/versions", query=query))
        assert [len(p["value"]) for p in pages] == [25, 1]
        assert [i["id"] for p in pages for i in p["value"]] == ids


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "dev.vault.localhost"])
def test_next_link_keeps_the_scheme_host_and_port_of_the_request(
    wire: Wire, host: str, resolve_localhost: None
) -> None:
    name = unique()
    for i in range(3):
        wire.put(name, str(i))
    first = wire.request("GET", f"/secrets/{name}/versions", query=f"{API}&maxresults=2",
                         host=wire.host(host))
    pages = walk(wire, first)
    assert [len(p["value"]) for p in pages] == [2, 1]
    link = pages[0]["nextLink"]
    assert link.startswith(f"https://{host}:{wire.port}/secrets/{name}/versions?")
    for item in (i for p in pages for i in p["value"]):
        assert item["id"].startswith(f"https://{host}:{wire.port}/secrets/{name}/")


@pytest.mark.parametrize("path", LIST_PATHS)
@pytest.mark.parametrize("token", [
    "zz!",
    "%FF%FE",
    b64_token(b"not json"),
    b64_token(b"[1, 2]"),
    b64_token(b"{}"),
    b64_token(b'{"a": 1, "s": "x"}'),
    b64_token(b'{"a": [1], "s": true}'),
    b64_token(b'{"a": null, "s": 100000000000000000000000000000}'),
    b64_token(b'{"s": -1}'),
])
def test_invalid_skiptoken_is_400(wire: Wire, path: str, token: str) -> None:
    r = wire.request("GET", path.format(name=unique()), query=f"{API}&$skiptoken={token}")
    err = error_of(r, 400, "BadParameter")
    assert "skiptoken" in err["message"]


def test_fresh_vault_lists_empty_then_pages_on_its_own_host(
    wire: Wire, server: DevServer, resolve_localhost: None
) -> None:
    vault = unique("w")
    created = server.okv("vault", "create", vault)
    assert created.returncode == 0, created.stderr
    host = wire.host(f"{vault}.vault.localhost")
    for path in ("/secrets", "/deletedsecrets"):
        r = wire.request("GET", path, host=host)
        assert r.status_code == 200, r.text
        assert r.json() == {"value": [], "nextLink": None}
        assert r.text == '{"value":[],"nextLink":null}'

    names = sorted(f"{vault}-{i}" for i in range(3))
    for n in names:
        r = wire.request("PUT", f"/secrets/{n}", host=host, json={"value": n})
        assert r.status_code == 200, r.text
        # the dev vault does not see it
        error_of(wire.request("GET", f"/secrets/{n}"), 404, "SecretNotFound")

    pages = walk(wire, wire.request("GET", "/secrets", query=f"{API}&maxresults=1", host=host))
    assert [len(p["value"]) for p in pages] == [1, 1, 1]
    assert sorted(p["value"][0]["id"] for p in pages) == [
        f"https://{host}/secrets/{n}" for n in names
    ]
    for p in pages[:-1]:
        assert p["nextLink"].startswith(f"https://{host}/secrets?")
    whole = wire.request("GET", "/secrets", query=f"{API}&maxresults=25", host=host)
    assert whole.json()["nextLink"] is None and len(whole.json()["value"]) == 3


# ---- identifiers follow the Host header -------------------------------------------------


def test_ids_are_rendered_from_the_host_header(wire: Wire) -> None:
    hosts = [wire.host("localhost"), wire.host("127.0.0.1"), wire.host("dev.vault.localhost")]
    name = unique()
    r = wire.request("PUT", f"/secrets/{name}", host=hosts[0], json={"value": "v"})
    assert r.status_code == 200, r.text
    version = r.json()["id"].rsplit("/", 1)[1]
    assert r.json()["id"] == f"https://{hosts[0]}/secrets/{name}/{version}"
    for host in hosts:
        got = wire.request("GET", f"/secrets/{name}", host=host).json()
        assert got["id"] == f"https://{host}/secrets/{name}/{version}"
        patched = wire.request("PATCH", f"/secrets/{name}/{version}", host=host,
                               json={"tags": {"via": host}}).json()
        assert patched["id"] == f"https://{host}/secrets/{name}/{version}"
        listed = wire.request("GET", f"/secrets/{name}/versions", host=host).json()
        assert [i["id"] for i in listed["value"]] == [f"https://{host}/secrets/{name}/{version}"]
    deleted = wire.request("DELETE", f"/secrets/{name}", host=hosts[2]).json()
    assert deleted["recoveryId"] == f"https://{hosts[2]}/deletedsecrets/{name}"
    for host in hosts:
        got = wire.request("GET", f"/deletedsecrets/{name}", host=host).json()
        assert got["recoveryId"] == f"https://{host}/deletedsecrets/{name}"
        assert got["id"] == f"https://{host}/secrets/{name}/{version}"
    r = wire.request("DELETE", f"/deletedsecrets/{name}", host=hosts[1])
    assert r.status_code == 204


# ---- exact success codes ----------------------------------------------------------------


def test_exact_success_codes(wire: Wire) -> None:
    name = unique()

    def ok(r: requests.Response) -> dict[str, Any]:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"] == "application/json; charset=utf-8"
        assert int(r.headers["Content-Length"]) == len(r.content)
        return r.json()

    created = ok(wire.request("PUT", f"/secrets/{name}", json={"value": "s3cr3t"}))
    version = created["id"].rsplit("/", 1)[1]
    assert ok(wire.request("GET", f"/secrets/{name}/{version}"))["value"] == "s3cr3t"
    assert ok(wire.request("PATCH", f"/secrets/{name}/{version}",
                           json={"attributes": {"enabled": True}}))["id"] == created["id"]
    ok(wire.request("GET", "/secrets", query=f"{API}&maxresults=1"))
    ok(wire.request("GET", f"/secrets/{name}/versions"))
    blob = ok(wire.request("POST", f"/secrets/{name}/backup"))
    assert list(blob) == ["value"] and isinstance(blob["value"], str)

    deleted = ok(wire.request("DELETE", f"/secrets/{name}"))
    assert {"recoveryId", "deletedDate", "scheduledPurgeDate"} <= set(deleted)
    ok(wire.request("GET", f"/deletedsecrets/{name}"))
    ok(wire.request("GET", "/deletedsecrets", query=f"{API}&maxresults=1"))
    assert ok(wire.request("POST", f"/deletedsecrets/{name}/recover"))["id"] == created["id"]
    assert ok(wire.request("GET", f"/secrets/{name}/"))["value"] == "s3cr3t"

    ok(wire.request("DELETE", f"/secrets/{name}"))
    purged = wire.request("DELETE", f"/deletedsecrets/{name}")
    assert purged.status_code == 204
    assert purged.content == b""
    error_of(wire.request("GET", f"/deletedsecrets/{name}"), 404, "SecretNotFound")

    restored = ok(wire.request("POST", "/secrets/restore", json=blob))
    assert restored["id"] == created["id"]
    assert ok(wire.request("GET", f"/secrets/{name}"))["value"] == "s3cr3t"


# ---- refusals ---------------------------------------------------------------------------


def _tags(n: int) -> dict[str, str]:
    return {f"t{i}": "v" for i in range(n)}


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


PUT_REFUSALS: dict[str, bytes] = {
    "value-over-25KiB": _json({"value": "x" * (VALUE_LIMIT + 1)}),
    "value-over-25KiB-of-utf8": _json({"value": "é" * (VALUE_LIMIT // 2 + 1)}),
    "value-number": _json({"value": 5}),
    "value-null": _json({"value": None}),
    "value-bool": _json({"value": True}),
    "value-object": _json({"value": {"a": "b"}}),
    "value-list": _json({"value": ["x"]}),
    "value-lone-surrogate": b'{"value": "\\ud800"}',
    "value-surrogate-bytes": b'{"value": "\xed\xa0\x80"}',
    "value-bad-utf8": b'{"value": "\xff"}',
    "missing-value": _json({"contentType": "text/plain", "tags": {"a": "b"}}),
    "16-tags": _json({"value": "x", "tags": _tags(16)}),
    "tag-name-513": _json({"value": "x", "tags": {"n" * 513: "v"}}),
    "tag-value-513": _json({"value": "x", "tags": {"n": "v" * 513}}),
    "tag-value-number": _json({"value": "x", "tags": {"n": 1}}),
    "tag-value-null": _json({"value": "x", "tags": {"n": None}}),
    "tag-value-bool": _json({"value": "x", "tags": {"n": False}}),
    "tag-value-object": _json({"value": "x", "tags": {"n": {"x": "y"}}}),
    "tag-empty-name": _json({"value": "x", "tags": {"": "v"}}),
    "tags-list": _json({"value": "x", "tags": ["a"]}),
    "tags-string": _json({"value": "x", "tags": "a=b"}),
    "tag-lone-surrogate": b'{"value": "x", "tags": {"\\udc00": "v"}}',
    "content-type-number": _json({"value": "x", "contentType": 5}),
    "content-type-lone-surrogate": b'{"value": "x", "contentType": "\\ud800"}',
    "enabled-yes": _json({"value": "x", "attributes": {"enabled": "yes"}}),
    "enabled-1": _json({"value": "x", "attributes": {"enabled": 1}}),
    "exp-tomorrow": _json({"value": "x", "attributes": {"exp": "tomorrow"}}),
    "exp-bool": _json({"value": "x", "attributes": {"exp": True}}),
    "nbf-string-digits": _json({"value": "x", "attributes": {"nbf": "1700000000"}}),
    "attributes-string": _json({"value": "x", "attributes": "enabled"}),
    "attributes-list": _json({"value": "x", "attributes": []}),
    "not-json": b"value=x",
    "truncated-json": b'{"value": "x"',
    "json-array": b'[{"value": "x"}]',
    "json-empty-array": b"[]",
    "json-string": b'"x"',
    "json-null": b"null",
    "empty-body": b"",
    "whitespace-body": b" \r\n ",
}


@pytest.mark.parametrize("body", PUT_REFUSALS.values(), ids=PUT_REFUSALS.keys())
def test_put_refusals_are_400_and_lose_nothing(wire: Wire, stored: str, body: bytes) -> None:
    r = wire.request("PUT", f"/secrets/{stored}", data=body, headers=JSON_HEADERS)
    error_of(r, 400, "BadParameter")
    # a new name is not created by a refused body either
    fresh = unique()
    r = wire.request("PUT", f"/secrets/{fresh}", data=body, headers=JSON_HEADERS)
    error_of(r, 400, "BadParameter")
    error_of(wire.request("GET", f"/secrets/{fresh}"), 404, "SecretNotFound")


PATCH_REFUSALS: dict[str, bytes] = {
    k: v for k, v in PUT_REFUSALS.items()
    if not k.startswith(("value", "missing"))
}


@pytest.mark.parametrize("body", PATCH_REFUSALS.values(), ids=PATCH_REFUSALS.keys())
def test_patch_refusals_are_400_and_lose_nothing(wire: Wire, stored: str, body: bytes) -> None:
    for path in (f"/secrets/{stored}", f"/secrets/{stored}/"):
        error_of(wire.request("PATCH", path, data=body, headers=JSON_HEADERS), 400,
                 "BadParameter")


def test_limits_themselves_are_accepted(wire: Wire) -> None:
    name = unique()
    accepted = [
        "x" * VALUE_LIMIT,
        "é" * (VALUE_LIMIT // 2),  # 2 bytes each
        "😀" * (VALUE_LIMIT // 4),  # 4 bytes each
    ]
    for value in accepted:
        assert wire.put(name, value)["value"] == value
        assert wire.request("GET", f"/secrets/{name}").json()["value"] == value
    # a surrogate pair escape is one proper character
    r = wire.request("PUT", f"/secrets/{name}", data=b'{"value": "\\ud83d\\ude00"}',
                     headers=JSON_HEADERS)
    assert r.status_code == 200 and r.json()["value"] == "😀"
    refused = "€" * (VALUE_LIMIT // 3 + 1)  # 8,534 characters, 25,602 bytes
    error_of(wire.request("PUT", f"/secrets/{name}", json={"value": refused}), 400,
             "BadParameter")

    tags = {f"{i:02d}" + "k" * 510: "v" * 512 for i in range(15)}
    got = wire.put(name, "tagged", tags=tags)
    assert got["tags"] == tags
    patched = wire.request("PATCH", f"/secrets/{name}", json={"tags": tags})
    assert patched.status_code == 200 and patched.json()["tags"] == tags
    long_name = "n" * 127
    assert wire.put(long_name, "v")["id"].split("/")[4] == long_name


@pytest.mark.parametrize("name", ["a_b", "x" * 128, "a.b", "%C3%A9", "a%20b", "a~b", "a%2Eb"])
def test_invalid_names_are_400_on_put(wire: Wire, name: str) -> None:
    err = error_of(wire.request("PUT", f"/secrets/{name}", json={"value": "v"}), 400,
                   "BadParameter")
    assert "name" in err["message"]
    error_of(wire.request("GET", f"/secrets/{name}"), 404, "SecretNotFound")


def test_body_over_the_limit_is_413_and_loses_nothing(wire: Wire, stored: str) -> None:
    big = _json({"value": "x" * BODY_LIMIT})
    assert len(big) > BODY_LIMIT
    for method in ("PUT", "PATCH"):
        r = wire.request(method, f"/secrets/{stored}", data=big, headers=JSON_HEADERS)
        error_of(r, 413, "RequestEntityTooLarge")

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b'{"value": "'
        for _ in range(BODY_LIMIT // 8192 + 1):
            yield b"x" * 8192
        yield b'"}'

    r = wire.request("PUT", f"/secrets/{stored}", data=chunked(), headers=JSON_HEADERS)
    error_of(r, 413, "RequestEntityTooLarge")
    # a body just under the limit is parsed (and refused for its value size, not its size)
    under = _json({"value": "x" * (BODY_LIMIT - 64)})
    assert len(under) <= BODY_LIMIT
    error_of(wire.request("PUT", f"/secrets/{stored}", data=under, headers=JSON_HEADERS), 400,
             "BadParameter")


@pytest.mark.parametrize("path", [
    "/", "/nope", "/widgets/x", "/secrets/n/v/extra", "/deletedsecrets/n/recover/extra",
    "/secrets/n/backup/extra", "/deletedsecrets/n/x",
])
def test_unknown_path_is_404(wire: Wire, path: str) -> None:
    for method in ("GET", "POST"):
        error_of(wire.request(method, path, json={}), 404, "NotFound")


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/secrets/{name}"), ("DELETE", "/secrets"), ("PATCH", "/secrets"),
    ("PUT", "/secrets/{name}/versions"), ("PUT", "/deletedsecrets/{name}"),
    ("DELETE", "/deletedsecrets"), ("GET", "/deletedsecrets/{name}/recover"),
    ("PUT", "/secrets/{name}/backup"), ("DELETE", "/secrets/{name}/"),
])
def test_wrong_method_on_a_known_path_is_405(wire: Wire, stored: str, method: str,
                                             path: str) -> None:
    body = {"value": "changed"} if method in ("PUT", "POST", "PATCH") else None
    r = wire.request(method, path.format(name=stored), json=body)
    error_of(r, 405)


@pytest.mark.parametrize("vault_host", [
    "nosuch.vault.localhost", "deep.dev.vault.localhost", "vault.localhost", "example.com",
])
def test_unknown_vault_host_is_404(wire: Wire, stored: str, vault_host: str) -> None:
    host = wire.host(vault_host)
    error_of(wire.request("GET", "/secrets", host=host), 404)
    error_of(wire.request("GET", f"/secrets/{stored}", host=host), 404)
    error_of(wire.request("PUT", f"/secrets/{stored}", host=host, json={"value": "x"}), 404)
    error_of(wire.request("DELETE", f"/secrets/{stored}", host=host), 404)


def test_deleted_operations_on_a_live_secret_are_404(wire: Wire, stored: str) -> None:
    error_of(wire.request("GET", f"/deletedsecrets/{stored}"), 404, "SecretNotFound")
    error_of(wire.request("POST", f"/deletedsecrets/{stored}/recover"), 404, "SecretNotFound")
    error_of(wire.request("DELETE", f"/deletedsecrets/{stored}"), 404, "SecretNotFound")
    listed = wire.request("GET", "/deletedsecrets").json()
    assert all(not i["id"].endswith(f"/{stored}") for i in listed["value"])


def test_requests_without_a_valid_token_are_challenged(wire: Wire, stored: str) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic eDp5"},
                    {"Authorization": f"Bearer {wire.token}x"}):
        r = wire.request("PUT", f"/secrets/{stored}", auth=False, headers=headers,
                         json={"value": "changed"})
        error_of(r, 401, "Unauthorized")
        challenge = r.headers["WWW-Authenticate"]
        claims = wire.token.split(".")[1]
        tenant = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["tid"]
        assert challenge == (f'Bearer authorization="https://localhost:{wire.port}/{tenant}", '
                             f'resource="https://vault.localhost:{wire.port}"')
