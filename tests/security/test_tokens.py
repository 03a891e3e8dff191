"""Bearer tokens on the data plane: every bad token is a 401 challenge, before anything else.

Tokens are made with the deployment's real signing key (the data directory is
opened in-process) so that each forgery differs from a good token in one way only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from openkeyvault.access.principals import Principal
from openkeyvault.deployment import Deployment
from openkeyvault.ops.clock import ManualClock
from tests.security.conftest import (
    Rest,
    b64url,
    b64url_decode,
    challenge,
    open_deployment,
    resource,
)
from tests.support.server import DevServer

DAY = 86_400


def _parts(token: str) -> tuple[dict[str, object], dict[str, object], str]:
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), s


def _enc(obj: dict[str, object]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def _compact(header: dict[str, object], claims: dict[str, object], sig: str) -> str:
    return f"{_enc(header)}.{_enc(claims)}.{sig}"


def _hs256(header: dict[str, object], claims: dict[str, object], secret: bytes) -> str:
    unsigned = _compact(header, claims, "").rstrip(".")
    mac = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{b64url(mac)}"


def _public_key(d: Deployment) -> rsa.RSAPublicKey:
    key = RSAAlgorithm.from_jwk(json.dumps(d.tokens.jwk))
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def _at(server: DevServer, d: Deployment, offset: float) -> str:
    """A dev-identity token issued by the real key with the clock moved by `offset`."""
    shifted = open_deployment(server, clock=ManualClock(d.clock.now() + offset))
    try:
        return shifted.tokens.issue(shifted.dev_principal, resource(server)).access_token
    finally:
        shifted.close()


# Each maker returns the Authorization header value (None: send no header).
Maker = Callable[[DevServer, Deployment], str | None]


def _good(server: DevServer, d: Deployment) -> str:
    return d.tokens.issue(d.dev_principal, resource(server)).access_token


def _no_header(server: DevServer, d: Deployment) -> None:
    return None


def _basic(server: DevServer, d: Deployment) -> str:
    return "Basic dXNlcjpwYXNzd29yZA=="


def _pop_scheme_with_good_token(server: DevServer, d: Deployment) -> str:
    return f"PoP {_good(server, d)}"


def _empty_bearer(server: DevServer, d: Deployment) -> str:
    return "Bearer "


def _garbage(server: DevServer, d: Deployment) -> str:
    return "Bearer not-a-token-at-all"


def _garbage_segments(server: DevServer, d: Deployment) -> str:
    return "Bearer eyJhbGciOiJSUzI1NiJ9.e30.AAAA"


def _too_long(server: DevServer, d: Deployment) -> str:
    return "Bearer " + "A" * 20_000


def _expired(server: DevServer, d: Deployment) -> str:
    return f"Bearer {_at(server, d, -2 * DAY)}"  # expired a day ago


def _not_yet_valid(server: DevServer, d: Deployment) -> str:
    return f"Bearer {_at(server, d, 3600)}"  # nbf an hour from now


def _alg_none(server: DevServer, d: Deployment) -> str:
    header, claims, _ = _parts(_good(server, d))
    return f"Bearer {_compact({**header, 'alg': 'none'}, claims, '')}"


def _alg_none_keeping_signature(server: DevServer, d: Deployment) -> str:
    header, claims, sig = _parts(_good(server, d))
    return f"Bearer {_compact({**header, 'alg': 'none'}, claims, sig)}"


def _hs256_public_pem(server: DevServer, d: Deployment) -> str:
    header, claims, _ = _parts(_good(server, d))
    pem = _public_key(d).public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"Bearer {_hs256({**header, 'alg': 'HS256'}, claims, pem)}"


def _hs256_public_pkcs1(server: DevServer, d: Deployment) -> str:
    header, claims, _ = _parts(_good(server, d))
    pem = _public_key(d).public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.PKCS1)
    return f"Bearer {_hs256({**header, 'alg': 'HS256'}, claims, pem)}"


def _other_key_same_kid(server: DevServer, d: Deployment) -> str:
    _, claims, _ = _parts(_good(server, d))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims, other, algorithm="RS256",
                       headers={"kid": d.tokens.jwk["kid"], "typ": "JWT"})
    return f"Bearer {token}"


def _tampered_claims(server: DevServer, d: Deployment) -> str:
    """Another principal's genuine token with its `oid` rewritten to the dev identity's."""
    stranger = Principal(str(uuid.uuid4()), d.tenant_id)
    header, claims, sig = _parts(d.tokens.issue(stranger, resource(server)).access_token)
    claims = {**claims, "oid": d.dev_principal.object_id, "sub": d.dev_principal.object_id}
    return f"Bearer {_compact(header, claims, sig)}"


def _wrong_audience(server: DevServer, d: Deployment) -> str:
    return f"Bearer {d.tokens.issue(d.dev_principal, 'https://vault.azure.net').access_token}"


def _wrong_audience_port(server: DevServer, d: Deployment) -> str:
    aud = f"https://vault.localhost:{server.port + 1}"
    return f"Bearer {d.tokens.issue(d.dev_principal, aud).access_token}"


def _wrong_issuer(server: DevServer, d: Deployment) -> str:
    # Same data directory (same signing key), but its issuer names another port.
    other = open_deployment(server, port=server.port + 1)
    try:
        assert other.tokens.issuer != d.tokens.issuer
        return f"Bearer {other.tokens.issue(other.dev_principal, resource(server)).access_token}"
    finally:
        other.close()


BAD: dict[str, tuple[Maker, str]] = {
    # name: (maker, a word the error message must contain)
    "no-header": (_no_header, "AKV10000"),
    "basic-scheme": (_basic, "AKV10000"),
    "pop-scheme": (_pop_scheme_with_good_token, "AKV10000"),
    "empty-bearer": (_empty_bearer, "AKV10000"),
    "garbage": (_garbage, "malformed"),
    "garbage-segments": (_garbage_segments, "AKV10032"),
    "too-long": (_too_long, "too long"),
    "expired": (_expired, "expired"),
    "not-yet-valid": (_not_yet_valid, "not yet valid"),
    "alg-none": (_alg_none, "algorithm"),
    "alg-none-with-signature": (_alg_none_keeping_signature, "algorithm"),
    "hs256-public-key-spki": (_hs256_public_pem, "algorithm"),
    "hs256-public-key-pkcs1": (_hs256_public_pkcs1, "algorithm"),
    "other-rsa-key-same-kid": (_other_key_same_kid, "signature"),
    "tampered-claims": (_tampered_claims, "signature"),
    "wrong-audience": (_wrong_audience, "audience"),
    "wrong-audience-port": (_wrong_audience_port, "audience"),
    "wrong-issuer": (_wrong_issuer, "issuer"),
}


def assert_challenge(r: requests.Response, server: DevServer, secret: str | None = None,
                     host: str | None = None) -> str:
    """A proper 401 challenge; returns the error message."""
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"] == challenge(server)
    assert "Retry-After" not in r.headers
    body = r.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "Unauthorized"
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    if secret:
        assert secret not in r.text
        for part in secret.split("."):
            if len(part) > 8:
                assert part not in r.text
        assert secret not in str(r.headers)
    return message


def test_a_good_token_is_accepted(server: DevServer, deployment: Deployment, rest: Rest) -> None:
    """The control: the makers below differ from this token in one way each."""
    r = rest.call("GET", "/secrets", token=_good(server, deployment))
    assert r.status_code == 200, r.text
    assert "value" in r.json()


def test_tokens_just_inside_the_clock_skew_are_accepted(
    server: DevServer, deployment: Deployment, rest: Rest
) -> None:
    expired_a_minute_ago = _at(server, deployment, -DAY - 60)
    valid_in_a_minute = _at(server, deployment, 60)
    for token in (expired_a_minute_ago, valid_in_a_minute):
        assert rest.call("GET", "/secrets", token=token).status_code == 200


@pytest.mark.parametrize("name", list(BAD))
@pytest.mark.parametrize("method,path,body", [
    ("GET", "/secrets", None),
    ("PUT", "/secrets/sec-token-test", b'{"value":"v"}'),
])
def test_bad_credentials_get_a_challenge(server: DevServer, deployment: Deployment, rest: Rest,
                                         name: str, method: str, path: str,
                                         body: bytes | None) -> None:
    maker, reason = BAD[name]
    auth = maker(server, deployment)
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    r = rest.call(method, path, token=None, headers=headers, data=body)
    secret = auth.partition(" ")[2] if auth else None
    message = assert_challenge(r, server, secret)
    assert reason.lower() in message.lower()


def test_a_rejected_set_creates_nothing(server: DevServer, deployment: Deployment,
                                        rest: Rest) -> None:
    name = f"sec-{uuid.uuid4().hex[:10]}"
    for maker, _ in BAD.values():
        auth = maker(server, deployment)
        headers = {"Authorization": auth} if auth else {}
        r = rest.call("PUT", f"/secrets/{name}", token=None, headers=headers,
                      json={"value": "must-not-be-stored"})
        assert r.status_code == 401
    assert rest.call("GET", f"/secrets/{name}").status_code == 404


@pytest.mark.parametrize("method,path,query,kw", [
    ("PUT", "/secrets/bad-json", "api-version=7.5",
     {"data": b"{not json", "headers": {"Content-Type": "application/json"}}),
    ("PUT", "/secrets/bad-json", "api-version=7.5", {"data": b"[1, 2, 3]"}),
    ("PUT", "/secrets/no-body", "api-version=7.5",
     {"headers": {"Content-Type": "application/json", "Content-Length": "0"}}),
    ("PATCH", "/secrets/x/y", "api-version=7.5", {"data": b"nonsense"}),
    ("POST", "/secrets/restore", "api-version=7.5", {"json": {"value": "!!!"}}),
    ("GET", "/no/such/route", "api-version=7.5", {}),
    ("DELETE", "/", "api-version=7.5", {}),
    ("GET", "/secrets", "api-version=1999-01-01", {}),
    ("GET", "/secrets", "", {}),
    ("GET", "/secrets/has space/", "api-version=7.5", {}),
    ("POST", "/secrets", "api-version=7.5", {}),  # a method the route does not allow
])
def test_challenge_comes_before_routing_and_body_checks(
    server: DevServer, rest: Rest, method: str, path: str, query: str, kw: dict[str, object]
) -> None:
    r = rest.call(method, path, token=None, query=query, **kw)
    assert_challenge(r, server)


def test_challenge_comes_before_routing_with_a_bad_token(server: DevServer,
                                                         rest: Rest) -> None:
    r = rest.call("PUT", "/secrets/bad-json", token="garbage", query="api-version=0.0",
                  data=b"{not json")
    assert_challenge(r, server, "garbage")


def test_challenge_comes_before_vault_lookup(server: DevServer, rest: Rest) -> None:
    host = f"nosuchvault.vault.localhost:{server.port}"
    r = rest.call("GET", "/secrets", token=None, headers={"Host": host})
    assert_challenge(r, server, host=host)
    # With a good token the same request reaches vault routing.
    r = rest.call("GET", "/secrets", headers={"Host": host})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "VaultNotFound"


def test_challenge_for_a_vault_host_names_that_host(server: DevServer, rest: Rest) -> None:
    host = f"dev.vault.localhost:{server.port}"
    r = rest.call("GET", "/secrets", token=None, headers={"Host": host})
    assert_challenge(r, server, host=host)


def test_a_valid_token_for_one_port_is_refused_on_another_audience(
    server: DevServer, deployment: Deployment, rest: Rest
) -> None:
    """The cache of verified tokens still checks the audience."""
    token = _good(server, deployment)
    assert rest.call("GET", "/secrets", token=token).status_code == 200  # now cached
    other_host = f"localhost:{server.port + 1}"
    r = rest.call("GET", "/secrets", token=token, headers={"Host": other_host})
    assert r.status_code == 401
    assert "audience" in r.json()["error"]["message"]


def test_a_host_header_cannot_add_challenge_parameters(server: DevServer, rest: Rest) -> None:
    host = 'evil.example/", resource="https://evil.example'
    r = rest.call("GET", "/secrets", token=None, headers={"Host": host})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "BadParameter"
    assert "WWW-Authenticate" not in r.headers
    assert "evil.example" not in r.text
