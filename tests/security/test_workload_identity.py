"""Workload identity: a trusted issuer's token (a Kubernetes service-account token, say) is
the client assertion of a federated credential, through the SDK's credentials — and every
way such an assertion is refused."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import (
    DefaultAzureCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from azure.keyvault.secrets import SecretClient

from openkeyvault.access.directory import DirectoryError
from openkeyvault.access.issuers import IssuerError
from openkeyvault.deployment import Deployment
from tests.security.trust_support import (
    FEDERATED_AUDIENCE,
    TestIssuer,
    assert_oauth_refusal,
    assertion_form,
    hs256,
    okv,
    scope,
    token_call,
    unique,
)
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env")


@dataclass
class Workload:
    tenant_id: str
    client_id: str
    object_id: str
    subject: str


@pytest.fixture(scope="module")
def issuer(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> TestIssuer:
    """A trusted issuer whose keys come from a local JWKS file (federation only: no
    audience, so its tokens are not accepted on the data plane)."""
    iss = TestIssuer()
    path = iss.write_jwks(tmp_path_factory.mktemp("jwks") / "jwks.json")
    deployment.tokens.issuers.add(unique("cluster"), iss.url, jwks_file=path)
    return iss


def new_workload(deployment: Deployment, issuer: TestIssuer,
                 audience: str = FEDERATED_AUDIENCE) -> Workload:
    record, _ = deployment.directory.create(unique("workload"))
    subject = f"system:serviceaccount:apps:{uuid.uuid4().hex[:8]}"
    deployment.directory.add_federated(record.object_id, issuer.url, subject, audience)
    return Workload(record.tenant_id, record.client_id, record.object_id, subject)


@pytest.fixture
def workload(deployment: Deployment, issuer: TestIssuer) -> Workload:
    return new_workload(deployment, issuer)


def _token_file(tmp_path: Path, token: str) -> str:
    path = tmp_path / "token"
    path.write_text(token)
    return str(path)


def test_cli_trust_and_workload_identity_credential(server: DevServer, tmp_path: Path) -> None:
    """The whole flow with the CLI: trust the issuer, create the principal, add the
    federated credential, give it a role; WorkloadIdentityCredential then reads a secret."""
    iss = TestIssuer()
    name = unique("k8s")
    added = okv(server, "issuer", "add", name, "--issuer", iss.url, "--jwks-file",
                str(iss.write_jwks(tmp_path / "jwks.json")))
    assert (added["name"], added["issuer"], added["audience"]) == (name, iss.url, None)
    assert name in {i["name"] for i in okv(server, "issuer", "list", "-o", "json")}
    p = okv(server, "principal", "create", unique("pod"))
    subject = "system:serviceaccount:payments:api"
    fed = okv(server, "principal", "federated", "add", p["client_id"], "--issuer", iss.url,
              "--subject", subject)
    assert fed["audience"] == FEDERATED_AUDIENCE
    listed = {x["client_id"]: x for x in okv(server, "principal", "list", "-o", "json")}
    assert listed[p["client_id"]]["federated_credentials"] == [
        {"id": fed["credential_id"], "issuer": iss.url, "subject": subject,
         "audience": FEDERATED_AUDIENCE}]

    credential = WorkloadIdentityCredential(
        tenant_id=p["tenant_id"], client_id=p["client_id"],
        token_file_path=_token_file(tmp_path, iss.token(subject)),
        authority=f"https://localhost:{server.port}", connection_verify=server.ca)
    claims = jwt.decode(credential.get_token(scope(server)).token,
                        options={"verify_signature": False})
    assert (claims["oid"], claims["appid"]) == (p["object_id"], p["client_id"])

    secret = unique("wi")
    SecretClient(server.url, DefaultAzureCredential(),
                 verify_challenge_resource=False).set_secret(secret, "for the pod")
    client = SecretClient(server.url, credential, verify_challenge_resource=False)
    with pytest.raises(HttpResponseError) as e:
        client.get_secret(secret)
    assert e.value.status_code == 403
    okv(server, "role", "assign", "--principal", p["client_id"], "--role",
        "Key Vault Secrets User", "--scope", f"/vaults/dev/secrets/{secret}")
    assert client.get_secret(secret).value == "for the pod"

    okv(server, "principal", "federated", "remove", p["client_id"], fed["credential_id"])
    with pytest.raises(ClientAuthenticationError) as refused:
        WorkloadIdentityCredential(
            tenant_id=p["tenant_id"], client_id=p["client_id"],
            token_file_path=_token_file(tmp_path, iss.token(subject)),
            authority=f"https://localhost:{server.port}").get_token(scope(server))
    assert "AADSTS700211" in str(refused.value)
    assert okv(server, "issuer", "remove", name) == {"removed": name}
    assert name not in {i["name"] for i in okv(server, "issuer", "list", "-o", "json")}


def test_default_azure_credential_from_the_pod_environment(
        server: DevServer, deployment: Deployment, issuer: TestIssuer, workload: Workload,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the AKS workload-identity webhook injects, and nothing else."""
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE",
                       _token_file(tmp_path, issuer.token(workload.subject)))
    monkeypatch.setenv("AZURE_CLIENT_ID", workload.client_id)
    monkeypatch.setenv("AZURE_TENANT_ID", workload.tenant_id)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", f"https://localhost:{server.port}")
    token = DefaultAzureCredential().get_token(scope(server)).token
    assert jwt.decode(token, options={"verify_signature": False})["oid"] == workload.object_id

    # ManagedIdentityCredential in such a pod exchanges the same token.
    monkeypatch.delenv("IDENTITY_ENDPOINT")
    monkeypatch.delenv("IDENTITY_HEADER")
    token = ManagedIdentityCredential(client_id=workload.client_id).get_token(
        scope(server)).token
    assert jwt.decode(token, options={"verify_signature": False})["oid"] == workload.object_id


def test_managed_identity_credential_is_unchanged(server: DevServer,
                                                  deployment: Deployment) -> None:
    token = ManagedIdentityCredential().get_token(scope(server)).token
    oid = jwt.decode(token, options={"verify_signature": False})["oid"]
    assert oid == deployment.dev_principal.object_id


def test_a_managed_identity_may_hold_a_federated_credential(
        server: DevServer, deployment: Deployment, issuer: TestIssuer) -> None:
    mi = deployment.directory.create_managed_identity(unique("mi-fic"))
    deployment.directory.add_federated(mi.object_id, issuer.url, "sub-of-mi")
    r = token_call(server, mi.tenant_id, assertion_form(server, mi.client_id,
                                                        issuer.token("sub-of-mi")))
    assert r.status_code == 200, r.text


def test_the_audience_of_a_federated_credential_is_configurable(
        server: DevServer, deployment: Deployment, issuer: TestIssuer) -> None:
    w = new_workload(deployment, issuer, audience="api://okv-exchange")
    assert token_call(server, w.tenant_id, assertion_form(
        server, w.client_id, issuer.token(w.subject, "api://okv-exchange"))).status_code == 200
    assert_oauth_refusal(token_call(server, w.tenant_id, assertion_form(
        server, w.client_id, issuer.token(w.subject))), 401, "invalid_client", "700212")


def test_a_federated_token_may_be_presented_again(server: DevServer, workload: Workload,
                                                  issuer: TestIssuer) -> None:
    """Unlike a certificate assertion, the projected token is reused until it expires."""
    form = assertion_form(server, workload.client_id, issuer.token(workload.subject))
    for _ in range(2):
        assert token_call(server, workload.tenant_id, form).status_code == 200


def test_federated_and_issuer_refusals_at_registration(deployment: Deployment,
                                                       issuer: TestIssuer,
                                                       workload: Workload,
                                                       tmp_path: Path) -> None:
    d = deployment.directory
    for args, reason in [
        ((workload.object_id, "http://insecure.example", "s"), "https URL"),
        ((workload.object_id, issuer.url, ""), "subject"),
        ((workload.object_id, issuer.url, "x" * 601), "subject"),
        ((workload.object_id, issuer.url, "s", ""), "audience"),
        ((workload.object_id, issuer.url, workload.subject), "already has"),
        ((str(uuid.uuid4()), issuer.url, "s"), "No such principal"),
    ]:
        with pytest.raises(DirectoryError, match=reason):
            d.add_federated(*args)
    assert len(d.federated(workload.object_id)) == 1

    issuers = deployment.tokens.issuers
    jwks = issuer.write_jwks(tmp_path / "jwks.json")
    bad_jwks = tmp_path / "bad.json"
    bad_jwks.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))
    for kwargs, reason in [
        ({"name": "bad name!", "issuer": "https://x.example", "jwks_file": jwks}, "name"),
        ({"name": unique("i"), "issuer": "http://x.example", "jwks_file": jwks}, "https"),
        ({"name": unique("i"), "issuer": "https://x.example"}, "exactly one"),
        ({"name": unique("i"), "issuer": "https://x.example", "jwks_file": jwks,
          "jwks_url": "https://x.example/keys"}, "exactly one"),
        ({"name": unique("i"), "issuer": "https://x.example",
          "jwks_url": "http://x.example/keys"}, "https URL"),
        ({"name": unique("i"), "issuer": "https://x.example", "jwks_file": bad_jwks},
         "no RSA"),
        ({"name": unique("i"), "issuer": "https://x.example",
          "jwks_file": tmp_path / "missing.json"}, "cannot be read"),
        ({"name": unique("i"), "issuer": issuer.url, "jwks_file": jwks}, "already trusted"),
    ]:
        with pytest.raises(IssuerError, match=reason):
            issuers.add(**kwargs)  # type: ignore[arg-type]
    assert [i.issuer for i in issuers.all()].count(issuer.url) == 1


# ---- refusals at the token endpoint (raw HTTP) --------------------------------------
def _case(name: str, issuer: TestIssuer, w: Workload) -> tuple[str, int, str, str]:
    """(assertion, status, error, AADSTS code) of one refusal."""
    now = int(time.time())
    stranger = TestIssuer()
    forger = TestIssuer()
    cases: dict[str, Any] = {
        "untrusted issuer": lambda: (stranger.token(w.subject), 401, "invalid_client",
                                     "700211"),
        "issuer that names a trusted issuer but signs with its own key": lambda: (
            forger.token(w.subject, iss=issuer.url, kid=issuer.current,
                         signer=forger.keys[forger.current]), 401, "invalid_client", "50013"),
        "unknown kid": lambda: (issuer.token(w.subject, header={"kid": "no-such-kid",
                                                                 "alg": "RS256"}),
                                401, "invalid_client", "50013"),
        "no kid with several keys": lambda: (issuer.token(w.subject, header={}), 401,
                                             "invalid_client", "50013"),
        "alg none": lambda: (jwt.encode({"iss": issuer.url, "sub": w.subject,
                                         "aud": FEDERATED_AUDIENCE, "exp": now + 600},
                                        None, algorithm="none"),
                             401, "invalid_client", "50013"),
        "hs256 with the public key": lambda: (hs256(
            {"alg": "HS256", "kid": issuer.current},
            {"iss": issuer.url, "sub": w.subject, "aud": FEDERATED_AUDIENCE,
             "exp": now + 600}, json.dumps(issuer.jwks()).encode()), 401, "invalid_client",
            "50013"),
        "wrong subject": lambda: (issuer.token(w.subject + "-other"), 401, "invalid_client",
                                  "700213"),
        "subject differs in case": lambda: (issuer.token(w.subject.upper()), 401,
                                            "invalid_client", "700213"),
        "wrong audience": lambda: (issuer.token(w.subject, "api://other"), 401,
                                   "invalid_client", "700212"),
        "expired": lambda: (issuer.token(w.subject, exp=now - 3600, nbf=now - 7200,
                                         iat=now - 7200), 401, "invalid_client", "700024"),
        "not yet valid": lambda: (issuer.token(w.subject, nbf=now + 3600, exp=now + 7200),
                                  401, "invalid_client", "700024"),
        "no exp": lambda: (issuer.token(w.subject, exp=None), 401, "invalid_client", "50013"),
        "too long": lambda: ("a" * 40_000, 400, "invalid_request", "50027"),
    }
    return cases[name]()  # type: ignore[no-any-return]


FEDERATED_REFUSALS = [
    "untrusted issuer", "issuer that names a trusted issuer but signs with its own key",
    "unknown kid", "no kid with several keys", "alg none", "hs256 with the public key",
    "wrong subject", "subject differs in case", "wrong audience", "expired", "not yet valid",
    "no exp", "too long"]


@pytest.fixture(scope="module")
def two_key_issuer(deployment: Deployment,
                   tmp_path_factory: pytest.TempPathFactory) -> TestIssuer:
    iss = TestIssuer()
    iss.add_key()
    path = iss.write_jwks(tmp_path_factory.mktemp("jwks2") / "jwks.json")
    deployment.tokens.issuers.add(unique("two-keys"), iss.url, jwks_file=path)
    return iss


@pytest.mark.parametrize("name", FEDERATED_REFUSALS)
def test_federated_assertion_refusals(server: DevServer, deployment: Deployment,
                                      two_key_issuer: TestIssuer, name: str) -> None:
    w = new_workload(deployment, two_key_issuer)
    assertion, status, error, code = _case(name, two_key_issuer, w)
    r = token_call(server, w.tenant_id, assertion_form(server, w.client_id, assertion))
    assert_oauth_refusal(r, status, error, code, assertion)
    # The control: the right token for the same workload is accepted.
    r = token_call(server, w.tenant_id, assertion_form(server, w.client_id,
                                                       two_key_issuer.token(w.subject)))
    assert r.status_code == 200, r.text


def test_another_principals_federated_credential_does_not_help(
        server: DevServer, deployment: Deployment, issuer: TestIssuer) -> None:
    a, b = new_workload(deployment, issuer), new_workload(deployment, issuer)
    r = token_call(server, b.tenant_id, assertion_form(server, b.client_id,
                                                       issuer.token(a.subject)))
    assert_oauth_refusal(r, 401, "invalid_client", "700213")
    r = token_call(server, b.tenant_id, assertion_form(server, str(uuid.uuid4()),
                                                       issuer.token(b.subject)))
    assert_oauth_refusal(r, 401, "invalid_client", "700211")


def test_a_removed_issuer_is_no_longer_trusted(server: DevServer, deployment: Deployment,
                                               tmp_path: Path) -> None:
    iss = TestIssuer()
    name = unique("gone")
    deployment.tokens.issuers.add(name, iss.url, jwks_file=iss.write_jwks(tmp_path / "j.json"))
    w = new_workload(deployment, iss)
    form = assertion_form(server, w.client_id, iss.token(w.subject))
    assert token_call(server, w.tenant_id, form).status_code == 200
    assert deployment.tokens.issuers.remove(name)
    assert_oauth_refusal(token_call(server, w.tenant_id, form), 401, "invalid_client",
                         "700211")


def test_a_rotated_jwks_file_is_read_again(server: DevServer, deployment: Deployment,
                                           tmp_path: Path) -> None:
    iss = TestIssuer()
    path = iss.write_jwks(tmp_path / "jwks.json")
    deployment.tokens.issuers.add(unique("rotating"), iss.url, jwks_file=path)
    w = new_workload(deployment, iss)
    old = iss.current
    assert token_call(server, w.tenant_id, assertion_form(
        server, w.client_id, iss.token(w.subject))).status_code == 200
    iss.add_key()
    new_token = iss.token(w.subject)
    assert_oauth_refusal(token_call(server, w.tenant_id, assertion_form(
        server, w.client_id, new_token)), 401, "invalid_client", "50013")
    iss.write_jwks(path)  # the cluster published its new key
    assert token_call(server, w.tenant_id, assertion_form(
        server, w.client_id, new_token)).status_code == 200
    del iss.keys[old]
    iss.write_jwks(path)  # and dropped the old one
    assert_oauth_refusal(token_call(server, w.tenant_id, assertion_form(
        server, w.client_id, iss.token(w.subject, kid=old))), 401, "invalid_client", "50013")
