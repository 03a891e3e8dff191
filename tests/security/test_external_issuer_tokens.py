"""Access tokens of a trusted external issuer, presented directly to the vault.

The issuer is trusted with an audience; its token's `oid` (else `sub`) must map to a
principal of this deployment (`okv principal create --external-issuer --external-subject`).
Every refusal is a 401 challenge before any handler runs: a PUT with the token creates
nothing.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from azure.core.credentials import AccessToken
from azure.keyvault.secrets import SecretClient

from openkeyvault.deployment import Deployment
from tests.security.conftest import Rest, resource
from tests.security.test_tokens import assert_challenge
from tests.security.trust_support import TestIssuer, hs256, okv, unique
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env")


class StaticToken:
    """A credential that hands out one token it was given (what an app holding an external
    issuer's access token does)."""

    def __init__(self, token: str, expires_on: int | None = None) -> None:
        self.token = token
        self.expires_on = expires_on or int(time.time()) + 3600

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, self.expires_on)


@pytest.fixture(scope="module")
def idp(server: DevServer, deployment: Deployment,
        tmp_path_factory: pytest.TempPathFactory) -> tuple[TestIssuer, str]:
    """An external issuer trusted for the vault's own resource as audience."""
    iss = TestIssuer()
    name = unique("corp-idp")
    deployment.tokens.issuers.add(
        name, iss.url, jwks_file=iss.write_jwks(tmp_path_factory.mktemp("idp") / "jwks.json"),
        audience=resource(server))
    return iss, name


def _mapped(deployment: Deployment, issuer_name: str) -> tuple[str, str]:
    """(subject, object id) of a new principal mapped to an external subject."""
    subject = str(uuid.uuid4())
    record = deployment.directory.create_external(unique("ext"), issuer_name, subject)
    deployment.rbac.assign(record.object_id, "Key Vault Secrets Officer", "/vaults/dev")
    return subject, record.object_id


def _put_is_refused(rest: Rest, server: DevServer, token: str, reason: str) -> None:
    name = unique("ext-refused")
    r = rest.call("PUT", f"/secrets/{name}", token=token, json={"value": "must not exist"})
    message = assert_challenge(r, server, token)
    assert reason.lower() in message.lower(), message
    assert rest.call("GET", f"/secrets/{name}").status_code == 404


def test_cli_maps_an_external_subject_and_the_sdk_uses_its_token(
        server: DevServer, tmp_path: Path) -> None:
    iss = TestIssuer()
    name = unique("partner")
    okv(server, "issuer", "add", name, "--issuer", iss.url, "--jwks-file",
        str(iss.write_jwks(tmp_path / "jwks.json")), "--audience", "api://okv")
    oid = str(uuid.uuid4())
    p = okv(server, "principal", "create", unique("partner-app"), "--external-issuer", name,
            "--external-subject", oid)
    assert "client_secret" not in p and p["external_subject"] == oid
    listed = {x["client_id"]: x for x in okv(server, "principal", "list", "-o", "json")}
    assert listed[p["client_id"]]["external_identities"] == [{"issuer": name, "subject": oid}]
    assert listed[p["client_id"]]["secrets"] == []
    okv(server, "role", "assign", "--principal", p["client_id"], "--role",
        "Key Vault Secrets Officer", "--scope", "/vaults/dev")

    client = SecretClient(server.url, StaticToken(iss.token(oid, "api://okv", oid=oid)),
                          verify_challenge_resource=False)
    secret = unique("ext")
    client.set_secret(secret, "from a partner")
    assert client.get_secret(secret).value == "from a partner"

    refused = server.okv("principal", "create", unique("p2"), "--external-issuer", "nope",
                         "--external-subject", oid)
    assert refused.returncode == 1 and "No trusted issuer" in refused.stderr
    refused = server.okv("principal", "create", unique("p3"), "--external-issuer", name,
                         "--external-subject", oid)
    assert refused.returncode == 1 and "already maps" in refused.stderr
    refused = server.okv("principal", "create", unique("p4"), "--external-issuer", name)
    assert refused.returncode == 2


def test_oid_is_preferred_to_sub_and_the_vault_resource_works(
        server: DevServer, deployment: Deployment, rest: Rest,
        idp: tuple[TestIssuer, str]) -> None:
    iss, name = idp
    subject, object_id = _mapped(deployment, name)
    token = iss.token("some-app-sub", resource(server), oid=subject)
    r = rest.call("PUT", f"/secrets/{unique('ext-oid')}", token=token, json={"value": "v"})
    assert r.status_code == 200, r.text
    token = iss.token(subject, resource(server))  # no oid: sub is the subject
    assert rest.call("GET", "/secrets", token=token).status_code == 200


def _refusal(name: str, iss: TestIssuer, subject: str, aud: str) -> tuple[str, str]:
    """(token, a word of the challenge message)."""
    now = int(time.time())
    stranger = TestIssuer()
    cases: dict[str, Any] = {
        "untrusted issuer": lambda: (stranger.token(subject, aud), "issuer"),
        "trusted issuer url signed by another key": lambda: (
            stranger.token(subject, aud, iss=iss.url, kid=iss.current,
                           signer=stranger.keys[stranger.current]), "signature"),
        "unknown subject": lambda: (iss.token(str(uuid.uuid4()), aud), "not a principal"),
        "wrong audience": lambda: (iss.token(subject, "https://vault.azure.net"), "audience"),
        "expired": lambda: (iss.token(subject, aud, exp=now - 3600, nbf=now - 7200), "expired"),
        "not yet valid": lambda: (iss.token(subject, aud, nbf=now + 3600, exp=now + 7200),
                                  "not yet valid"),
        "unknown kid": lambda: (iss.token(subject, aud, header={"kid": "nope"}),
                                "signing key"),
        "alg none": lambda: (jwt.encode({"iss": iss.url, "sub": subject, "aud": aud,
                                         "exp": now + 600}, None, algorithm="none",
                                        headers={"kid": iss.current}), "algorithm"),
        "hs256 with the jwks as secret": lambda: (hs256(
            {"alg": "HS256", "kid": iss.current},
            {"iss": iss.url, "sub": subject, "aud": aud, "exp": now + 600},
            json.dumps(iss.jwks()).encode()), "algorithm"),
        "another tenant of this deployment's issuer": lambda: (
            stranger.token(subject, aud, iss=f"https://localhost:1/{uuid.uuid4()}/v2.0"),
            "issuer"),
    }
    return cases[name]()  # type: ignore[no-any-return]


EXTERNAL_REFUSALS = ["untrusted issuer", "trusted issuer url signed by another key",
                     "unknown subject", "wrong audience", "expired", "not yet valid",
                     "unknown kid", "alg none", "hs256 with the jwks as secret",
                     "another tenant of this deployment's issuer"]


@pytest.mark.parametrize("case", EXTERNAL_REFUSALS)
def test_external_token_refusals(server: DevServer, deployment: Deployment, rest: Rest,
                                 idp: tuple[TestIssuer, str], case: str) -> None:
    iss, name = idp
    subject, _ = _mapped(deployment, name)
    token, reason = _refusal(case, iss, subject, resource(server))
    _put_is_refused(rest, server, token, reason)
    # The control: the good token of the same subject is accepted.
    assert rest.call("GET", "/secrets", token=iss.token(subject, resource(server))
                     ).status_code == 200


def test_an_issuer_trusted_only_for_federation_cannot_call_the_vault(
        server: DevServer, deployment: Deployment, rest: Rest, tmp_path: Path) -> None:
    iss = TestIssuer()
    name = unique("fed-only")
    deployment.tokens.issuers.add(name, iss.url, jwks_file=iss.write_jwks(tmp_path / "j.json"))
    subject = str(uuid.uuid4())
    deployment.directory.create_external(unique("fed-only-app"), name, subject)
    _put_is_refused(rest, server, iss.token(subject, resource(server)), "issuer")


def test_deleting_the_principal_or_the_issuer_refuses_a_cached_token(
        server: DevServer, deployment: Deployment, rest: Rest, tmp_path: Path) -> None:
    iss = TestIssuer()
    name = unique("revocable")
    deployment.tokens.issuers.add(name, iss.url, jwks_file=iss.write_jwks(tmp_path / "j.json"),
                                  audience=resource(server))
    subject, object_id = _mapped(deployment, name)
    token = iss.token(subject, resource(server))
    assert rest.call("GET", "/secrets", token=token).status_code == 200  # verified, cached
    assert deployment.directory.delete(object_id)
    _put_is_refused(rest, server, token, "no longer exists")

    subject, _ = _mapped(deployment, name)
    token = iss.token(subject, resource(server))
    assert rest.call("GET", "/secrets", token=token).status_code == 200
    assert deployment.tokens.issuers.remove(name)
    _put_is_refused(rest, server, token, "issuer")
