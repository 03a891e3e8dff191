"""Certificate credentials: `okv principal cert add`, the SDK's CertificateCredential, and
every way a client assertion is refused at the token endpoint."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import CertificateCredential, DefaultAzureCredential
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from openkeyvault.access.directory import DirectoryError
from openkeyvault.deployment import Deployment
from tests.security.trust_support import (
    ClientCert,
    assert_oauth_refusal,
    assertion_form,
    b64url,
    make_cert,
    okv,
    scope,
    token_call,
    token_endpoint,
    unique,
)
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env")


def new_app(deployment: Deployment, cert: ClientCert | None = None) -> dict[str, Any]:
    """A service principal (made in-process, in the server's database) with `cert`."""
    record, _ = deployment.directory.create(unique("cert-app"))
    if cert is not None:
        deployment.directory.add_certificate(record.object_id, cert.key_pem + cert.cert_pem)
    return {"tenant_id": record.tenant_id, "client_id": record.client_id,
            "object_id": record.object_id}


@pytest.fixture
def app_with_cert(server: DevServer, tmp_path: Path) -> tuple[dict[str, Any], ClientCert]:
    """A service principal with one RSA certificate, registered with the CLI from a PEM file
    that also holds the private key, as the SDK wants it."""
    p = okv(server, "principal", "create", unique("cert-app"))
    cert = make_cert()
    added = okv(server, "principal", "cert", "add", p["client_id"],
                "--cert", str(cert.write(tmp_path)))
    assert added["thumbprint"] == cert.sha1.hex().upper()
    assert added["thumbprint_sha256"] == cert.sha256.hex().upper()
    return p, cert


def _credential(server: DevServer, p: dict[str, Any], path: Path,
                **kw: Any) -> CertificateCredential:
    return CertificateCredential(p["tenant_id"], p["client_id"], certificate_path=str(path),
                                 authority=f"https://localhost:{server.port}",
                                 disable_instance_discovery=True, connection_verify=server.ca,
                                 **kw)


def test_certificate_credential_gets_a_token_and_reads_a_secret_with_a_role(
        server: DevServer, app_with_cert: tuple[dict[str, Any], ClientCert],
        tmp_path: Path) -> None:
    p, cert = app_with_cert
    credential = _credential(server, p, cert.write(tmp_path))
    token = credential.get_token(scope(server)).token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["oid"], claims["appid"]) == (p["object_id"], p["client_id"])

    name = unique("cert")
    admin = SecretClient(server.url, DefaultAzureCredential(), verify_challenge_resource=False)
    admin.set_secret(name, "for the certificate app")
    client = SecretClient(server.url, credential, verify_challenge_resource=False)
    with pytest.raises(HttpResponseError) as e:
        client.get_secret(name)
    assert e.value.status_code == 403  # authenticated, no role yet
    okv(server, "role", "assign", "--principal", p["client_id"], "--role",
        "Key Vault Secrets User", "--scope", f"/vaults/dev/secrets/{name}")
    assert client.get_secret(name).value == "for the certificate app"


def test_sha256_thumbprint_and_ps256_as_newer_msal_sends_them(
        server: DevServer, deployment: Deployment, tmp_path: Path) -> None:
    """With send_certificate_chain MSAL signs PS256 with an x5t#S256 header and an x5c."""
    cert = make_cert()
    p = new_app(deployment, cert)
    credential = _credential(server, p, cert.write(tmp_path), send_certificate_chain=True)
    token = credential.get_token(scope(server)).token
    assert jwt.decode(token, options={"verify_signature": False})["oid"] == p["object_id"]


def test_an_ec_certificate_signs_es256_assertions(server: DevServer,
                                                  deployment: Deployment) -> None:
    cert = make_cert("ec")
    p = new_app(deployment, cert)
    r = token_call(server, p["tenant_id"], assertion_form(
        server, p["client_id"], cert.assertion(p["client_id"],
                                               token_endpoint(server, p["tenant_id"]),
                                               header={"x5t#S256": b64url(cert.sha256)})))
    assert r.status_code == 200, r.text
    claims = jwt.decode(r.json()["access_token"], options={"verify_signature": False})
    assert claims["oid"] == p["object_id"]


def test_list_shows_certificates_and_remove_revokes(
        server: DevServer, app_with_cert: tuple[dict[str, Any], ClientCert],
        tmp_path: Path) -> None:
    p, cert = app_with_cert
    listed = {x["client_id"]: x for x in okv(server, "principal", "list", "-o", "json")}
    (shown,) = listed[p["client_id"]]["certificates"]
    assert shown["thumbprint"] == cert.sha1.hex().upper()
    assert shown["thumbprint_sha256"] == cert.sha256.hex().upper()
    assert shown["expires"] <= int(cert.cert.not_valid_after_utc.timestamp())
    assert listed[p["client_id"]]["secrets"]  # the first client secret is still listed apart

    credential = _credential(server, p, cert.write(tmp_path))
    assert credential.get_token(scope(server)).token
    okv(server, "principal", "cert", "remove", p["client_id"], cert.sha1.hex())
    listed = {x["client_id"]: x for x in okv(server, "principal", "list", "-o", "json")}
    assert listed[p["client_id"]]["certificates"] == []
    with pytest.raises(ClientAuthenticationError) as e:
        _credential(server, p, cert.write(tmp_path)).get_token(scope(server))
    assert "AADSTS700027" in str(e.value)


def test_the_private_key_in_the_pem_is_not_stored(
        server: DevServer, app_with_cert: tuple[dict[str, Any], ClientCert]) -> None:
    _, cert = app_with_cert
    blob = b"".join(f.read_bytes() for f in server.data_dir.glob("okv.db*"))
    body = b"".join(cert.key_pem.splitlines()[1:-1])
    for i in range(0, len(body) - 40, 40):
        assert body[i:i + 40] not in blob


def test_cert_add_refusals(server: DevServer, deployment: Deployment, tmp_path: Path) -> None:
    p = new_app(deployment)
    mi = deployment.directory.create_managed_identity(unique("cert-mi"))
    cert = make_cert()
    small = make_cert()  # with a 1024-bit RSA key
    small.key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    small.cert = (x509.CertificateBuilder().subject_name(cert.cert.subject)
                  .issuer_name(cert.cert.subject).public_key(small.key.public_key())
                  .serial_number(1).not_valid_before(cert.cert.not_valid_before_utc)
                  .not_valid_after(cert.cert.not_valid_after_utc).sign(small.key, hashes.SHA256()))
    garbage = b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
    cases: list[tuple[str, bytes, int | None, str]] = [
        (p["object_id"], garbage, None, "could not be read"),
        (p["object_id"], cert.key_pem, None, "no PEM certificate"),
        (p["object_id"], b"x" * 70_000 + cert.cert_pem, None, "larger"),
        (p["object_id"], small.cert_pem, None, "2048"),
        (mi.object_id, cert.cert_pem, None, "cannot have"),
        (str(uuid.uuid4()), cert.cert_pem, None, "No such principal"),
        (p["object_id"], cert.cert_pem, 0, "lifetime"),
    ]
    for object_id, pem, days, reason in cases:
        with pytest.raises(DirectoryError, match=reason):
            deployment.directory.add_certificate(object_id, pem, days)
    assert deployment.directory.certificates(p["object_id"]) == []
    assert deployment.directory.certificates(mi.object_id) == []
    deployment.directory.add_certificate(p["object_id"], cert.cert_pem)
    with pytest.raises(DirectoryError, match="already registered"):
        deployment.directory.add_certificate(p["object_id"], cert.key_pem + cert.cert_pem)
    assert len(deployment.directory.certificates(p["object_id"])) == 1
    # The CLI reports a refusal on stderr with exit code 1.
    done = server.okv("principal", "cert", "add", p["client_id"], "--cert",
                      str(small.write(tmp_path)))
    assert (done.returncode, done.stdout) == (1, "")
    assert "2048" in done.stderr
    done = server.okv("principal", "cert", "remove", p["client_id"], str(uuid.uuid4()))
    assert done.returncode == 1 and "no certificate" in done.stderr


def test_days_shortens_the_credential(deployment: Deployment) -> None:
    p = new_app(deployment)
    cert = make_cert(days=300)
    added = deployment.directory.add_certificate(p["object_id"], cert.cert_pem, 2)
    assert added.expires == int(deployment.clock.now()) + 2 * 86_400 or \
        abs(added.expires - (int(deployment.clock.now()) + 2 * 86_400)) <= 5
    assert added.expires < int(cert.cert.not_valid_after_utc.timestamp())
    longer = deployment.directory.add_certificate(p["object_id"], make_cert(days=3).cert_pem,
                                                  200)
    assert longer.expires <= int(deployment.clock.now()) + 3 * 86_400


# ---- refusals at the token endpoint (raw HTTP) --------------------------------------
@pytest.fixture(scope="module")
def shared_app(deployment: Deployment) -> tuple[dict[str, Any], ClientCert]:
    cert = make_cert()
    return new_app(deployment, cert), cert


def _refusal(name: str, server: DevServer, p: dict[str, Any], cert: ClientCert
             ) -> tuple[str, str, int, str, str]:
    """(client_id, assertion, status, error, AADSTS code) of one refusal case."""
    cid, aud = p["client_id"], token_endpoint(server, p["tenant_id"])
    other = make_cert()
    now = int(time.time())
    unknown = str(uuid.uuid4())
    cases = {
        "certificate not registered": lambda: (cid, other.assertion(cid, aud), 401,
                                               "invalid_client", "700027"),
        "signed with another key": lambda: (cid, cert.assertion(cid, aud, signer=other.key),
                                            401, "invalid_client", "700027"),
        "no thumbprint": lambda: (cid, cert.assertion(cid, aud, header={}), 401,
                                  "invalid_client", "700027"),
        "hmac with the certificate as secret": lambda: (cid, cert.assertion(
            cid, aud, alg="HS256", signer=cert.cert_pem), 401, "invalid_client", "700027"),
        "expired": lambda: (cid, cert.assertion(cid, aud, exp=now - 3600, nbf=now - 7200,
                                                iat=now - 7200), 401, "invalid_client",
                            "700024"),
        "not yet valid": lambda: (cid, cert.assertion(cid, aud, nbf=now + 3600, exp=now + 4000),
                                  401, "invalid_client", "700024"),
        "lives too long": lambda: (cid, cert.assertion(cid, aud, exp=now + 30 * 86_400), 401,
                                   "invalid_client", "700024"),
        "wrong audience": lambda: (cid, cert.assertion(
            cid, "https://login.microsoftonline.com/common/oauth2/v2.0/token"), 401,
            "invalid_client", "700023"),
        "audience of another tenant": lambda: (cid, cert.assertion(
            cid, token_endpoint(server, str(uuid.uuid4()))), 401, "invalid_client", "700023"),
        "audience of another port": lambda: (cid, cert.assertion(
            cid, aud.replace(f":{server.port}/", f":{server.port + 1}/")), 401,
            "invalid_client", "700023"),
        "subject is not the client": lambda: (cid, cert.assertion(cid, aud,
                                                                  sub=str(uuid.uuid4())),
                                              401, "invalid_client", "700021"),
        "issuer is another client": lambda: (cid, cert.assertion(str(uuid.uuid4()), aud), 401,
                                             "invalid_client", "700021"),
        "another client's assertion": lambda: (str(uuid.uuid4()), cert.assertion(cid, aud),
                                               401, "invalid_client", "700021"),
        "unknown client": lambda: (unknown, cert.assertion(unknown, aud), 401,
                                   "invalid_client", "700027"),
        "no jti": lambda: (cid, cert.assertion(cid, aud, jti=None), 400, "invalid_request",
                           "50027"),
        "no exp": lambda: (cid, cert.assertion(cid, aud, exp=None), 400, "invalid_request",
                           "50027"),
        "garbage": lambda: (cid, "not.a.jwt", 400, "invalid_request", "50027"),
        "too long": lambda: (cid, "e" * 40_000, 400, "invalid_request", "50027"),
    }
    return cases[name]()


REFUSALS = ["certificate not registered", "signed with another key", "no thumbprint",
            "hmac with the certificate as secret", "expired", "not yet valid", "lives too long",
            "wrong audience", "audience of another tenant", "audience of another port",
            "subject is not the client", "issuer is another client",
            "another client's assertion", "unknown client",
            "no jti", "no exp", "garbage", "too long"]


@pytest.mark.parametrize("name", REFUSALS)
def test_assertion_refusals(server: DevServer, shared_app: tuple[dict[str, Any], ClientCert],
                            name: str) -> None:
    p, cert = shared_app
    client_id, assertion, status, error, code = _refusal(name, server, p, cert)
    r = token_call(server, p["tenant_id"], assertion_form(server, client_id, assertion))
    assert_oauth_refusal(r, status, error, code, assertion)


def test_assertion_form_refusals(server: DevServer,
                                 shared_app: tuple[dict[str, Any], ClientCert]) -> None:
    p, cert = shared_app
    good = assertion_form(server, p["client_id"], cert.assertion(
        p["client_id"], token_endpoint(server, p["tenant_id"])))
    cases = [
        ({**good, "client_assertion_type": "urn:other"}, "700022"),
        ({**good, "client_secret": "also a secret"}, "90014"),
        ({k: v for k, v in good.items() if k != "client_id"}, "900144"),
    ]
    for form, code in cases:
        assert_oauth_refusal(token_call(server, p["tenant_id"], form), 400, "invalid_request",
                             code, good["client_assertion"])
    # None of the refusals used the assertion up.
    assert token_call(server, p["tenant_id"], good).status_code == 200


def test_a_replayed_assertion_is_refused(server: DevServer, deployment: Deployment,
                                         shared_app: tuple[dict[str, Any], ClientCert]) -> None:
    p, cert = shared_app
    assertion = cert.assertion(p["client_id"], token_endpoint(server, p["tenant_id"]))
    form = assertion_form(server, p["client_id"], assertion)
    assert token_call(server, p["tenant_id"], form).status_code == 200
    body = assert_oauth_refusal(token_call(server, p["tenant_id"], form), 401,
                                "invalid_client", "50027", assertion)
    assert "already used" in body["error_description"]
    # The same jti in another client's assertion is that client's own business.
    other = make_cert()
    q = new_app(deployment, other)
    jti = jwt.decode(assertion, options={"verify_signature": False})["jti"]
    r = token_call(server, q["tenant_id"], assertion_form(server, q["client_id"], other.assertion(
        q["client_id"], token_endpoint(server, q["tenant_id"]), jti=jti)))
    assert r.status_code == 200, r.text


def test_accepted_audiences(server: DevServer,
                            shared_app: tuple[dict[str, Any], ClientCert]) -> None:
    """The token endpoint as the client called it (v2.0 or v1), or the issuer."""
    p, cert = shared_app
    tenant, cid = p["tenant_id"], p["client_id"]
    base = f"https://localhost:{server.port}"
    issuer = requests.get(f"{base}/{tenant}/v2.0/.well-known/openid-configuration",
                          verify=server.ca, timeout=30).json()["issuer"]
    for url, aud in [
        (token_endpoint(server, tenant), token_endpoint(server, tenant)),
        (token_endpoint(server, tenant), f"{base}/{tenant}/oauth2/token"),
        (token_endpoint(server, tenant), issuer),
        (token_endpoint(server, tenant), [token_endpoint(server, tenant), "https://x.example"]),
        (f"https://127.0.0.1:{server.port}/{tenant}/oauth2/v2.0/token",
         f"https://127.0.0.1:{server.port}/{tenant}/oauth2/v2.0/token"),
    ]:
        r = requests.post(url, data=assertion_form(server, cid, cert.assertion(cid, aud)),
                          verify=server.ca, timeout=30)
        assert r.status_code == 200, (aud, r.text)
    # A Host header this deployment does not answer for is no accepted audience.
    evil = "login.microsoftonline.com"
    r = requests.post(token_endpoint(server, tenant), headers={"Host": evil},
                      data=assertion_form(server, cid, cert.assertion(
                          cid, f"https://{evil}/{tenant}/oauth2/v2.0/token")),
                      verify=server.ca, timeout=30)
    assert_oauth_refusal(r, 401, "invalid_client", "700023")
