"""Vault network rules: a vault whose default action is Deny answers only clients whose
address is in one of its IP rules; anyone else gets 403 `ForbiddenByFirewall`
after authentication and before routing or reading the body, and nothing changes.

The session server has no trusted proxies, so X-Forwarded-For counts for nothing
there; a second server started with `--trusted-proxy 127.0.0.1/32` takes the
client address from it (the right-most entry that is not a trusted proxy).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from openkeyvault.deployment import Deployment
from tests.security.conftest import API, Rest, open_deployment
from tests.support.server import DevServer, running

pytestmark = pytest.mark.usefixtures("resolve_localhost")

FIREWALL = "Client address is not authorized and caller is not a trusted service."


class VaultHttp:
    """Raw HTTPS to one vault's own host name, with the dev identity's token."""

    def __init__(self, server: DevServer, vault: str) -> None:
        self.rest = Rest(server)
        self.base = server.vault_url(vault)

    def __call__(self, method: str, path: str, *, token: bool = True,
                 forwarded_for: str | None = None, **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {self.rest.token}"
        if forwarded_for is not None:
            headers["X-Forwarded-For"] = forwarded_for
        sep = "&" if "?" in path else "?"
        return self.rest.session.request(method, f"{self.base}{path}{sep}{API}",
                                         headers=headers, **kw)


def _vault(d: Deployment) -> str:
    return d.vaults.create(f"fw{uuid.uuid4().hex[:10]}").name


def _refused_by_firewall(r: requests.Response, vault: str, client: str) -> None:
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["code"] == "Forbidden"
    assert error["innererror"] == {"code": "ForbiddenByFirewall"}
    lines = error["message"].split("\r\n")
    assert lines[0] == FIREWALL
    assert lines[1] == f"Client address: {client}"
    assert lines[2].startswith("Caller: appid=") and ";oid=" in lines[2] and ";iss=" in lines[2]
    assert lines[3] == f"Vault: {vault};location=local"


def _put(http: VaultHttp, name: str, value: str, **kw: Any) -> requests.Response:
    return http("PUT", f"/secrets/{name}", json={"value": value}, **kw)


def test_deny_admits_only_addresses_in_the_rules(server: DevServer,
                                                 deployment: Deployment) -> None:
    vault = _vault(deployment)
    http = VaultHttp(server, vault)
    props = deployment.vault_properties
    assert _put(http, "before", "v0").status_code == 200

    shown = json.loads(server.okv("vault", "update", vault, "--default-action", "Deny",
                                      "--output", "json").stdout)
    assert shown["properties"]["networkAcls"]["defaultAction"] == "Deny"
    _refused_by_firewall(http("GET", "/secrets/before"), vault, "127.0.0.1")
    _refused_by_firewall(_put(http, "refused", "v1"), vault, "127.0.0.1")
    # Authentication comes first: without a token the SDKs still get their challenge.
    r = http("GET", "/secrets/before", token=False)
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    # Before routing and before the body is read: no 404 for a path, no 413 for a body.
    _refused_by_firewall(http("GET", "/nothing/here"), vault, "127.0.0.1")
    _refused_by_firewall(_put(http, "big", "x" * (300 * 1024)), vault, "127.0.0.1")
    # Rules for other addresses do not help, and without a trusted proxy a client
    # cannot claim another address.
    props.add_ip_rule(vault, "203.0.113.7")
    props.add_ip_rule(vault, "127.0.0.2/32")
    _refused_by_firewall(http("GET", "/secrets/before", forwarded_for="203.0.113.7"),
                         vault, "127.0.0.1")

    added = json.loads(server.okv("vault", "network", "add-rule", vault, "127.0.0.1").stdout)
    assert {"value": "127.0.0.1/32"} in added["properties"]["networkAcls"]["ipRules"]
    assert http("GET", "/secrets/before").json()["value"] == "v0"
    for name in ("refused", "big"):  # the refused PUTs created nothing
        r = http("GET", f"/secrets/{name}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "SecretNotFound"
    assert _put(http, "after", "v2").status_code == 200

    removed = server.okv("vault", "network", "remove-rule", vault, "127.0.0.1/32")
    assert removed.returncode == 0, removed.stderr
    _refused_by_firewall(http("GET", "/secrets/after"), vault, "127.0.0.1")
    props.add_ip_rule(vault, "127.0.0.0/8")
    assert http("GET", "/secrets/after").status_code == 200
    props.remove_ip_rule(vault, "127.0.0.0/8")
    props.update(vault, default_action="Allow")  # the rules stay but no longer matter
    assert http("GET", "/secrets/after").json()["value"] == "v2"


def test_other_vaults_are_not_affected(server: DevServer, deployment: Deployment) -> None:
    vault = _vault(deployment)
    deployment.vault_properties.update(vault, default_action="Deny")
    other = VaultHttp(server, "dev")
    assert _put(other, f"fw-{uuid.uuid4().hex[:8]}", "v").status_code == 200
    _refused_by_firewall(VaultHttp(server, vault)("GET", "/secrets"), vault, "127.0.0.1")


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """A server that trusts the X-Forwarded-For of peers in 127.0.0.1/32."""
    with running(tmp_path_factory.mktemp("okv-proxied") / "data",
                 extra_args=("--trusted-proxy", "127.0.0.1/32")) as s:
        yield s


def test_forwarded_for_from_a_trusted_proxy_names_the_client(proxied: DevServer) -> None:
    d = open_deployment(proxied)
    try:
        vault = _vault(d)
        d.vault_properties.update(vault, default_action="Deny")
        d.vault_properties.add_ip_rule(vault, "203.0.113.7")
        d.vault_properties.add_ip_rule(vault, "2001:db8:1::/48")
    finally:
        d.close()
    http = VaultHttp(proxied, vault)

    assert _put(http, "s", "v", forwarded_for="203.0.113.7").status_code == 200
    assert http("GET", "/secrets/s", forwarded_for="2001:db8:1::5").json()["value"] == "v"
    # The right-most entry that is not a trusted proxy is the client; what the client
    # itself put further left counts for nothing.
    assert http("GET", "/secrets/s",
                forwarded_for="198.51.100.1, 203.0.113.7, 127.0.0.1").status_code == 200
    _refused_by_firewall(http("GET", "/secrets/s", forwarded_for="203.0.113.7, 198.51.100.1"),
                         vault, "198.51.100.1")
    _refused_by_firewall(http("GET", "/secrets/s", forwarded_for="2001:db8:2::1"),
                         vault, "2001:db8:2::1")
    # No header, a malformed one, or only trusted proxies: the proxy's own address.
    for header in (None, "garbage", "203.0.113.7:8080", "203.0.113.7,, nonsense", "127.0.0.1"):
        _refused_by_firewall(http("GET", "/secrets/s", forwarded_for=header), vault,
                             "127.0.0.1")
    r = _put(http, "s", "changed", forwarded_for="198.51.100.1")
    _refused_by_firewall(r, vault, "198.51.100.1")
    assert http("GET", "/secrets/s", forwarded_for="203.0.113.7").json()["value"] == "v"


def test_a_malformed_trusted_proxy_is_refused_at_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "openkeyvault", "server", "--dev", "--data-dir",
         str(tmp_path / "data"), "--trusted-proxy", "10.0.0.1/8"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "trusted proxy" in done.stderr
    assert not (tmp_path / "data").exists()
