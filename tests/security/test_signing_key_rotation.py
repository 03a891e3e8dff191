"""Token signing-key rotation: `okv token rotate-key` and the scheduled rotation.

The previous key keeps verifying — and stays in the JWKS — until every token it signed has
expired, then it is dropped; every worker process picks a rotation up without a restart.
This module runs its own two-worker server: its clock moves by days.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests

from openkeyvault.access.tokens import RETAIN_SECONDS
from openkeyvault.deployment import Deployment
from tests.security.conftest import Rest, open_deployment, resource
from tests.security.test_tokens import assert_challenge
from tests.security.trust_support import okv
from tests.support.server import DevServer, running

DAY = 86_400
ROTATE_DAYS = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with running(tmp_path_factory.mktemp("okv-token-keys") / "data", workers=2,
                 extra_args=("--token-key-days", str(ROTATE_DAYS))) as s:
        yield s


@pytest.fixture(scope="module")
def d(server: DevServer) -> Iterator[Deployment]:
    dep = open_deployment(server)
    yield dep
    dep.close()


def advance(server: DevServer, seconds: int) -> dict[str, Any]:
    r = requests.post(f"{server.url}/_okv/dev/clock", json={"advanceSeconds": seconds},
                      headers={"X-IDENTITY-HEADER": server.env["IDENTITY_HEADER"]},
                      verify=server.ca, timeout=30)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def jwks_kids(server: DevServer, d: Deployment) -> list[str]:
    """The kids the JWKS endpoint lists, each read over a new connection (any worker)."""
    seen = []
    for _ in range(4):
        r = requests.get(f"{server.url}/{d.tenant_id}/discovery/v2.0/keys", verify=server.ca,
                         timeout=30)
        assert r.status_code == 200
        seen.append([k["kid"] for k in r.json()["keys"]])
    assert all(s == seen[0] for s in seen), seen
    return seen[0]


def server_token(server: DevServer) -> str:
    """A token from the server's managed-identity endpoint (signed by a worker)."""
    r = requests.get(f"{server.url}/msi/token",
                     params={"api-version": "2019-08-01", "resource": resource(server)},
                     headers={"X-IDENTITY-HEADER": server.env["IDENTITY_HEADER"]},
                     verify=server.ca, timeout=30)
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def signed_by(d: Deployment, server: DevServer, kid: str, key: Any) -> str:
    """A token valid in every way now, signed by `key` as `kid`."""
    now = int(d.clock.now())
    oid = d.dev_principal.object_id
    claims = {"iss": d.tokens.issuer, "aud": resource(server), "iat": now, "nbf": now,
              "exp": now + 3600, "oid": oid, "sub": oid, "tid": d.tenant_id,
              "appid": d.dev_principal.app_id}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})


def refused_before_any_handler(rest: Rest, server: DevServer, token: str, reason: str) -> None:
    name = f"rot-{uuid.uuid4().hex[:8]}"
    r = rest.call("PUT", f"/secrets/{name}", token=token, json={"value": "must not exist"})
    assert reason in assert_challenge(r, server, token)
    assert rest.call("GET", f"/secrets/{name}", token=server_token(server)).status_code == 404


def test_rotation_keeps_the_previous_key_until_its_tokens_have_expired(
        server: DevServer, d: Deployment) -> None:
    rest = Rest(server)
    old_kid, old_key = d.tokens.keys.signer()
    old_token = server_token(server)
    assert jwt.get_unverified_header(old_token)["kid"] == old_kid
    assert rest.call("GET", "/secrets", token=old_token).status_code == 200
    assert jwks_kids(server, d) == [old_kid]

    new_kid = okv(server, "token", "rotate-key")["kid"]
    assert new_kid != old_kid
    assert jwks_kids(server, d) == [new_kid, old_kid]
    # Every worker signs with the new key and accepts both, without a restart.
    for _ in range(6):
        token = server_token(server)
        assert jwt.get_unverified_header(token)["kid"] == new_kid
        assert requests.get(f"{server.url}/secrets?api-version=7.5", verify=server.ca,
                            headers={"Authorization": f"Bearer {token}"},
                            timeout=30).status_code == 200
        assert requests.get(f"{server.url}/secrets?api-version=7.5", verify=server.ca,
                            headers={"Authorization": f"Bearer {old_token}"},
                            timeout=30).status_code == 200
    keys = {k["kid"]: k for k in okv(server, "token", "keys", "-o", "json")}
    assert keys[new_kid]["current"] and keys[new_kid]["retired"] is None
    assert keys[old_kid]["verifies_until"] == keys[old_kid]["retired"] + RETAIN_SECONDS

    # Just before the retention ends the previous key still verifies a fresh token...
    advance(server, RETAIN_SECONDS - 120)
    assert rest.call("GET", "/secrets", token=signed_by(d, server, old_kid, old_key)
                     ).status_code == 200
    assert old_kid in jwks_kids(server, d)
    # ...and then it is gone: out of the JWKS, out of storage, refused.
    ran = advance(server, 121)
    assert ran["jobs"]["token-signing-keys"] >= 1
    assert jwks_kids(server, d) == [new_kid]
    assert [k["kid"] for k in okv(server, "token", "keys", "-o", "json")] == [new_kid]
    refused_before_any_handler(rest, server, signed_by(d, server, old_kid, old_key),
                               "signing key is unknown")
    assert rest.call("GET", "/secrets", token=server_token(server)).status_code == 200


def test_an_unknown_kid_is_refused(server: DevServer, d: Deployment) -> None:
    rest = Rest(server)
    kid, key = d.tokens.keys.signer()
    refused_before_any_handler(rest, server, signed_by(d, server, "not-a-kid", key),
                               "signing key is unknown")
    missing_kid = jwt.encode(jwt.decode(signed_by(d, server, kid, key),
                                        options={"verify_signature": False}),
                             key, algorithm="RS256")
    refused_before_any_handler(rest, server, missing_kid, "signing key is unknown")


def test_the_schedule_rotates_the_key(server: DevServer, d: Deployment) -> None:
    rest = Rest(server)
    before = d.tokens.jwk["kid"]
    (current,) = [k for k in okv(server, "token", "keys", "-o", "json") if k["current"]]
    due = current["created"] + ROTATE_DAYS * DAY
    advance(server, due - int(d.clock.now()) - 3600)
    assert jwks_kids(server, d)[0] == before
    ran = advance(server, 3600)
    assert ran["jobs"]["token-signing-keys"] >= 1
    kids = jwks_kids(server, d)
    assert kids[0] != before and kids[1:] == [before]
    token = server_token(server)
    assert jwt.get_unverified_header(token)["kid"] == kids[0]
    assert rest.call("GET", "/secrets", token=token).status_code == 200
    # Running the jobs again (as every worker does) rotates no further.
    assert advance(server, 0)["jobs"]["token-signing-keys"] == 0
    assert jwks_kids(server, d) == kids


def test_drop_previous_refuses_earlier_tokens_at_once(server: DevServer,
                                                      d: Deployment) -> None:
    rest = Rest(server)
    old = server_token(server)
    assert rest.call("GET", "/secrets", token=old).status_code == 200  # verified and cached
    new_kid = okv(server, "token", "rotate-key", "--drop-previous")["kid"]
    assert jwks_kids(server, d) == [new_kid]
    refused_before_any_handler(rest, server, old, "signing key is unknown")
    assert rest.call("GET", "/secrets", token=server_token(server)).status_code == 200
