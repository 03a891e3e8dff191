"""Path matching, Host routing and paging tokens."""

from __future__ import annotations

import pytest

from openkeyvault.api.hosts import HostMap, split_host
from openkeyvault.api.router import Route, Router, pattern
from openkeyvault.vault import paging
from openkeyvault.vault.errors import BadParameter


def _router() -> Router:
    names = ["list", "set", "versions", "restore", "get", "backup"]
    table = [("GET", "/secrets"), ("PUT", "/secrets/{name}"), ("GET", "/secrets/{name}/versions"),
             ("POST", "/secrets/restore"), ("GET", "/secrets/{name}/{version?}"),
             ("POST", "/secrets/{name}/backup")]
    return Router([Route(m, pattern(p), lambda ctx, n=n: n) for n, (m, p) in zip(names, table,
                                                                                  strict=True)])


@pytest.mark.parametrize(("method", "path", "handler", "params"), [
    ("GET", "/secrets", "list", {}),
    ("PUT", "/secrets/abc", "set", {"name": "abc"}),
    ("PUT", "/secrets/restore", "set", {"name": "restore"}),
    ("POST", "/secrets/restore", "restore", {}),
    ("GET", "/secrets/abc/versions", "versions", {"name": "abc"}),
    ("GET", "/secrets/abc/", "get", {"name": "abc", "version": ""}),
    ("GET", "/secrets/abc", "get", {"name": "abc", "version": ""}),
    ("GET", "/secrets/abc/0123", "get", {"name": "abc", "version": "0123"}),
    ("GET", "/SECRETS/abc", "get", {"name": "abc", "version": ""}),
    ("POST", "/secrets/abc/backup", "backup", {"name": "abc"}),
])
def test_resolve(method: str, path: str, handler: str, params: dict[str, str]) -> None:
    found = _router().resolve(method, path)
    assert isinstance(found, tuple)
    route, got = found
    assert route.handler(None) == handler
    assert got == params


def test_unknown_path_and_wrong_method() -> None:
    r = _router()
    assert r.resolve("GET", "/nothing") is None
    assert r.resolve("GET", "/secrets//") is None  # empty name never matches
    assert r.resolve("GET", "/secrets/a/b/c") is None
    assert r.resolve("DELETE", "/secrets") is False


@pytest.mark.parametrize(("host", "name", "port"), [
    ("localhost:8443", "localhost", "8443"),
    ("Dev.Vault.Localhost:1", "dev.vault.localhost", "1"),
    ("[::1]:8443", "::1", "8443"),
    ("[::1]", "::1", None),
    ("example.com", "example.com", None),
])
def test_split_host(host: str, name: str, port: str | None) -> None:
    assert split_host(host) == (name, port)


def test_host_map() -> None:
    hm = HostMap("localhost", "dev")
    assert hm.vault_name("localhost:8443") == "dev"
    assert hm.vault_name("127.0.0.1:8443") == "dev"
    assert hm.vault_name("[::1]:8443") == "dev"
    assert hm.vault_name("host.docker.internal:8443") == "dev"
    assert hm.vault_name("payments.vault.localhost:8443") == "payments"
    assert hm.vault_name("a.b.vault.localhost:8443") is None
    assert hm.vault_name(".vault.localhost") is None
    assert hm.vault_name("example.com") is None
    assert hm.resource("payments.vault.localhost:8443") == "https://vault.localhost:8443"
    assert hm.resource("localhost:8443") == "https://vault.localhost:8443"
    assert hm.resource("x.vault.localhost") == "https://vault.localhost"
    assert hm.resource("x.vault.localhost:443") == "https://vault.localhost"
    assert hm.audiences("x.vault.localhost:9") == frozenset({"https://vault.localhost:9"})


def test_paging_tokens_and_sizes() -> None:
    assert paging.page_size(None) == 25
    assert paging.page_size("1") == 1
    for bad in ("0", "26", "-1", "x", "2.5"):
        with pytest.raises(BadParameter):
            paging.page_size(bad)
    token = paging.encode_token({"a": "name-1"})
    assert paging.decode_token(token) == {"a": "name-1"}
    assert paging.decode_token(None) == {}
    for bad in ("!!!", "bm90IGpzb24", "WzFd"):  # not base64, not JSON, not an object
        with pytest.raises(BadParameter):
            paging.decode_token(bad)
