"""The Certificates API through the official SDK (sync CertificateClient, with SecretClient,
KeyClient and CryptographyClient for the certificate's secret and key).

Every certificate the service issues is read back with pyca/cryptography field by field
(subject, SANs, key usage, EKUs, validity, key type), its secret is opened as the PFX or PEM
a user would download, and its key signs a digest that verifies with the certificate's own
public key. Certificates from other issuers are made here: a CA built with `cryptography`
signs the CSR of an `Unknown`-issuer operation, and chains are checked with `openssl verify`.

Refusals are checked for status and error code, and that nothing changed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.keyvault.certificates import (
    AdministratorContact,
    CertificateClient,
    CertificateContact,
    CertificateContentType,
    CertificateOperation,
    CertificatePolicy,
    CertificatePolicyAction,
    KeyVaultCertificate,
    LifetimeAction,
    WellKnownIssuerNames,
)
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from tests.sdk.certs_support import (
    CLIENT_AUTH,
    CODE_SIGNING,
    PEM,
    PKCS12,
    POLL,
    SERVER_AUTH,
    Authority,
    assert_validity_months,
    cer,
    cn,
    der,
    ekus_of,
    key_description,
    key_usage_of,
    leaf,
    name_of,
    openssl_verify,
    parse_pfx,
    refused,
    same_public,
    sans_of,
    secret_material,
    self_signed,
    sha1,
    subject_pairs,
    to_pem,
    to_pfx,
)
from tests.sdk.clients import unique
from tests.sdk.keys_support import environment, public_key, rest
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("module_env", "sdk_env")

DEFAULT_USAGE = {"digitalSignature", "keyEncipherment"}


@pytest.fixture(scope="module")
def module_env(server: DevServer) -> Iterator[dict[str, str]]:
    yield from environment(server)


@pytest.fixture(scope="module")
def credential(module_env: dict[str, str]) -> ManagedIdentityCredential:
    return ManagedIdentityCredential()


@pytest.fixture(scope="module")
def cc(server: DevServer, credential: ManagedIdentityCredential) -> CertificateClient:
    return CertificateClient(server.url, credential, verify_challenge_resource=False)


@pytest.fixture(scope="module")
def sc(server: DevServer, credential: ManagedIdentityCredential) -> SecretClient:
    return SecretClient(server.url, credential, verify_challenge_resource=False)


@pytest.fixture(scope="module")
def kc(server: DevServer, credential: ManagedIdentityCredential) -> KeyClient:
    return KeyClient(server.url, credential, verify_challenge_resource=False)


@pytest.fixture(scope="module")
def default_cert(cc: CertificateClient) -> KeyVaultCertificate:
    """One certificate from the SDK's default policy, shared by the read-only tests."""
    name = unique("cert")
    result = cc.begin_create_certificate(name, CertificatePolicy.get_default(), **POLL).result()
    assert isinstance(result, KeyVaultCertificate), result
    return result


def create(cc: CertificateClient, policy: CertificatePolicy, name: str | None = None,
           **kw: Any) -> KeyVaultCertificate:
    result = cc.begin_create_certificate(name or unique("cert"), policy, **kw, **POLL).result()
    assert isinstance(result, KeyVaultCertificate), (result.status, result.status_details,
                                                     result.error)
    return result


def missing(cc: CertificateClient, name: str) -> None:
    """Nothing of that name: no certificate, no pending operation."""
    with pytest.raises(ResourceNotFoundError) as e:
        cc.get_certificate(name)
    assert refused(e) == (404, "CertificateNotFound")
    with pytest.raises(ResourceNotFoundError) as e:
        cc.get_certificate_operation(name)
    assert refused(e) == (404, "PendingCertificateNotFound")


def sign_and_verify(server: DevServer, credential: Any, certificate: KeyVaultCertificate,
                    alg: str) -> None:
    """The certificate's key signs in the vault; the signature verifies locally with the
    certificate's public key."""
    assert certificate.key_id
    crypto = CryptographyClient(certificate.key_id, credential, verify_challenge_resource=False)
    h: hashes.HashAlgorithm = {"256": hashes.SHA256(), "384": hashes.SHA384(),
                               "512": hashes.SHA512()}[alg[2:]]
    data = f"signed by {certificate.name}".encode()
    hasher = hashes.Hash(h)
    hasher.update(data)
    digest = hasher.finalize()
    signature = crypto.sign(SignatureAlgorithm(alg), digest).signature
    pub = cer(certificate).public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        pub.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(h))
    else:
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        size = len(signature) // 2
        r, s = (int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big"))
        pub.verify(utils.encode_dss_signature(r, s), digest, ec.ECDSA(utils.Prehashed(h)))


def assert_three_objects(server: DevServer, certificate: KeyVaultCertificate, sc: SecretClient,
                         kc: KeyClient, *, exportable: bool = True,
                         content_type: str = PKCS12) -> None:
    """The certificate, its key and its secret share name and version; the key is the
    certificate's public key; the secret holds the certificate (and its private key when
    exportable)."""
    name, version = certificate.name, certificate.properties.version
    assert name and version
    assert certificate.id == f"{server.url}/certificates/{name}/{version}"
    assert certificate.key_id == f"{server.url}/keys/{name}/{version}"
    assert certificate.secret_id == f"{server.url}/secrets/{name}/{version}"
    leaf_cert = cer(certificate)
    assert certificate.properties.x509_thumbprint == sha1(leaf_cert)
    assert certificate.properties.not_before == leaf_cert.not_valid_before_utc
    assert certificate.properties.expires_on == leaf_cert.not_valid_after_utc

    key = kc.get_key(name)
    assert key.id == certificate.key_id and key.properties.managed is True
    assert same_public(public_key(key.key), leaf_cert.public_key())
    for member in ("d", "p", "q", "dp", "dq", "qi"):
        assert getattr(key.key, member, None) is None, member

    secret = sc.get_secret(name)
    assert secret.id == certificate.secret_id
    assert secret.properties.managed is True
    assert secret.properties.key_id == certificate.key_id
    assert secret.properties.content_type == content_type
    material = secret_material(secret)
    assert material.cert == leaf_cert
    if exportable:
        assert material.key is not None
        assert same_public(material.key.public_key(), leaf_cert.public_key())
    else:
        assert material.key is None


# ---- create ------------------------------------------------------------------------------------
def test_create_with_the_default_policy(server: DevServer, credential: Any,
                                        default_cert: KeyVaultCertificate, sc: SecretClient,
                                        kc: KeyClient) -> None:
    c = default_cert
    leaf_cert = cer(c)
    assert subject_pairs(leaf_cert) == name_of("CN=DefaultPolicy")
    assert leaf_cert.issuer == leaf_cert.subject  # self-signed, by its own key
    leaf_cert.verify_directly_issued_by(leaf_cert)
    assert key_description(leaf_cert.public_key()) == ("RSA", 2048)
    assert_validity_months(leaf_cert, 12)
    assert key_usage_of(leaf_cert) == DEFAULT_USAGE
    assert c.properties.enabled is True
    assert c.properties.recovery_level == "Recoverable+Purgeable"
    assert_three_objects(server, c, sc, kc)
    sign_and_verify(server, credential, c, "RS256")


def test_default_policy_reads_back_as_azure_fills_it(cc: CertificateClient,
                                                     default_cert: KeyVaultCertificate) -> None:
    for p in (default_cert.policy, cc.get_certificate_policy(default_cert.name)):
        assert p is not None
        assert p.issuer_name == "Self"
        assert p.subject == "CN=DefaultPolicy"
        assert p.key_type == "RSA" and p.key_size == 2048
        assert p.exportable is True and p.reuse_key is False
        assert p.content_type == PKCS12
        assert p.validity_in_months == 12
        assert set(p.key_usage or []) == DEFAULT_USAGE
        assert p.enhanced_key_usage == [SERVER_AUTH, CLIENT_AUTH]
        assert [(a.action, a.lifetime_percentage, a.days_before_expiry)
                for a in p.lifetime_actions or []] == [(CertificatePolicyAction.auto_renew, 80,
                                                        None)]
    assert ekus_of(cer(default_cert)) == [SERVER_AUTH, CLIENT_AUTH]


def test_create_operation_is_202_with_the_pending_id(cc: CertificateClient,
                                                     server: DevServer) -> None:
    name = unique("cert")
    body = {"policy": {"issuer": {"name": "Self"}, "x509_props": {"subject": "CN=wire"},
                       "key_props": {"kty": "EC", "crv": "P-256"}}}
    response = cc.send_request(HttpRequest("POST", f"/certificates/{name}/create", json=body))
    assert response.status_code == 202, response.text()
    op = response.json()
    assert op["id"] == f"{server.url}/certificates/{name}/pending"
    assert op["issuer"]["name"] == "Self"
    assert op["status"] in ("inProgress", "completed")
    csr = x509.load_der_x509_csr(base64.b64decode(op["csr"], validate=True))
    assert subject_pairs(csr) == name_of("CN=wire") and csr.is_signature_valid
    pending = rest(cc, "GET", f"/certificates/{name}/pending")
    assert pending.status == 200 and pending.body["id"] == op["id"]


KEY_CASES = [("RSA", 2048, None, "RS256"), ("RSA", 3072, None, "RS384"),
             ("RSA", 4096, None, "RS512"), ("EC", None, "P-256", "ES256"),
             ("EC", None, "P-384", "ES384"), ("EC", None, "P-521", "ES512")]


@pytest.mark.parametrize(("kty", "size", "crv", "alg"), KEY_CASES,
                         ids=[f"{k}-{s or c}" for k, s, c, _ in KEY_CASES])
def test_create_key_types(cc: CertificateClient, sc: SecretClient, kc: KeyClient,
                          server: DevServer, credential: Any, kty: str, size: int | None,
                          crv: str | None, alg: str) -> None:
    usage = ["digitalSignature"] if kty == "EC" else ["digitalSignature", "keyEncipherment"]
    policy = CertificatePolicy(issuer_name="Self", subject=f"CN={kty.lower()}.example.com",
                               key_type=kty, key_size=size, key_curve_name=crv,
                               key_usage=usage, validity_in_months=6)
    c = create(cc, policy)
    leaf_cert = cer(c)
    assert key_description(leaf_cert.public_key()) == (kty, size or str(crv))
    leaf_cert.verify_directly_issued_by(leaf_cert)
    assert_validity_months(leaf_cert, 6)
    assert key_usage_of(leaf_cert) == set(usage)
    assert c.policy is not None and c.policy.key_type == kty
    assert (c.policy.key_size if kty == "RSA" else c.policy.key_curve_name) == (size or crv)
    key = kc.get_key(c.name)
    assert key.key_type == kty and (key.key.crv == crv if crv else len(key.key.n) * 8 == size)
    assert_three_objects(server, c, sc, kc)
    sign_and_verify(server, credential, c, alg)


SUBJECT = "CN=app.example.com, O=Example Org, OU=Platform, L=Zurich, S=Zurich, C=CH"
DNS = ["app.example.com", "www.example.com"]
EMAILS = ["ops@example.com"]
UPNS = ["svc@example.com"]


def test_create_custom_policy_pem(cc: CertificateClient, sc: SecretClient, kc: KeyClient,
                                  server: DevServer) -> None:
    usage = ["digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment"]
    policy = CertificatePolicy(
        issuer_name=WellKnownIssuerNames.self, subject=SUBJECT, san_dns_names=DNS,
        san_emails=EMAILS, san_user_principal_names=UPNS, key_type="RSA", key_size=3072,
        key_usage=usage, enhanced_key_usage=[SERVER_AUTH, CODE_SIGNING], validity_in_months=7,
        content_type=CertificateContentType.pem, exportable=True, reuse_key=False)
    c = create(cc, policy, tags={"team": "platform"})
    leaf_cert = cer(c)
    assert subject_pairs(leaf_cert) == name_of(SUBJECT)
    sans = sans_of(leaf_cert)
    assert (list(sans.dns), list(sans.emails), list(sans.upns)) == (DNS, EMAILS, UPNS)
    assert key_usage_of(leaf_cert) == set(usage)
    assert ekus_of(leaf_cert) == [SERVER_AUTH, CODE_SIGNING]
    assert_validity_months(leaf_cert, 7)
    assert key_description(leaf_cert.public_key()) == ("RSA", 3072)
    assert c.properties.tags == {"team": "platform"}
    # the policy reads back as given
    p = cc.get_certificate_policy(c.name)
    assert p.subject == SUBJECT
    assert (p.san_dns_names, p.san_emails, p.san_user_principal_names) == (DNS, EMAILS, UPNS)
    assert set(p.key_usage or []) == set(usage)
    assert p.enhanced_key_usage == [SERVER_AUTH, CODE_SIGNING]
    assert p.validity_in_months == 7 and p.content_type == PEM
    assert_three_objects(server, c, sc, kc, content_type=PEM)
    # Azure's PEM secret: the private key (PKCS#8) first, then the certificate
    value = sc.get_secret(c.name).value or ""
    assert value.lstrip().startswith("-----BEGIN PRIVATE KEY-----")
    assert value.index("-----BEGIN CERTIFICATE-----") > value.index("-----END PRIVATE KEY-----")


def test_create_with_sans_only(cc: CertificateClient) -> None:
    policy = CertificatePolicy(issuer_name="Self", san_dns_names=["only.example.com"],
                               san_ip_addresses=["10.0.0.1", "2001:db8::1"])
    c = create(cc, policy)
    leaf_cert = cer(c)
    sans = sans_of(leaf_cert)
    assert list(sans.dns) == ["only.example.com"]
    assert list(sans.ips) == ["10.0.0.1", "2001:db8::1"]
    assert c.policy is not None and c.policy.san_dns_names == ["only.example.com"]
    assert c.policy.san_ip_addresses == ["10.0.0.1", "2001:db8::1"]


@pytest.mark.parametrize("content_type", [PKCS12, PEM])
def test_not_exportable_secret_has_no_private_key(cc: CertificateClient, sc: SecretClient,
                                                  kc: KeyClient, server: DevServer,
                                                  credential: Any, content_type: str) -> None:
    # the SDK sends key_props only when a truthy key field is set: name the key type
    policy = CertificatePolicy(issuer_name="Self", subject="CN=sealed", exportable=False,
                               key_type="RSA", content_type=content_type)
    c = create(cc, policy)
    assert c.policy is not None and c.policy.exportable is False
    assert_three_objects(server, c, sc, kc, exportable=False, content_type=content_type)
    value = sc.get_secret(c.name).value or ""
    assert "PRIVATE KEY" not in value
    sign_and_verify(server, credential, c, "RS256")  # the key still works inside the vault


@pytest.mark.parametrize("reuse", [False, True])
def test_new_version_key_reuse(cc: CertificateClient, kc: KeyClient, reuse: bool) -> None:
    name = unique("cert")
    policy = CertificatePolicy(issuer_name="Self", subject="CN=versions", reuse_key=reuse)
    first = create(cc, policy, name)
    second = create(cc, policy, name)
    assert second.properties.version != first.properties.version
    assert cc.get_certificate(name).properties.version == second.properties.version
    assert same_public(cer(first).public_key(), cer(second).public_key()) is reuse
    assert cer(first).serial_number != cer(second).serial_number
    versions = [p.version for p in cc.list_properties_of_certificate_versions(name)]
    assert sorted(versions) == sorted([first.properties.version, second.properties.version])
    # the key and the secret have the same two versions
    assert sorted(p.version for p in kc.list_properties_of_key_versions(name)) == \
        sorted(versions)
    old = cc.get_certificate_version(name, first.properties.version)
    assert old.cer == first.cer and old.properties.version == first.properties.version


def test_create_disabled_with_tags(cc: CertificateClient) -> None:
    c = create(cc, CertificatePolicy.get_default(), enabled=False, tags={"a": "b"})
    assert c.properties.enabled is False and c.properties.tags == {"a": "b"}
    props = cc.get_certificate_version(c.name, c.properties.version or "").properties
    assert props.enabled is False and props.tags == {"a": "b"}


# ---- issuers: the built-in CA, Unknown + merge ------------------------------------------------
def test_builtin_ca_issuer(cc: CertificateClient, sc: SecretClient, kc: KeyClient,
                           server: DevServer, tmp_path: Path) -> None:
    issuer = unique("ca")
    created = cc.create_issuer(issuer, provider="OpenKeyVault")
    assert created.name == issuer and created.provider == "OpenKeyVault"
    policy = CertificatePolicy(issuer_name=issuer, subject="CN=issued.example.com",
                               san_dns_names=["issued.example.com"], validity_in_months=3)
    c = create(cc, policy)
    leaf_cert = cer(c)
    assert leaf_cert.issuer != leaf_cert.subject
    assert list(sans_of(leaf_cert).dns) == ["issued.example.com"]
    assert_validity_months(leaf_cert, 3)
    assert c.policy is not None and c.policy.issuer_name == issuer
    assert_three_objects(server, c, sc, kc)
    root = requests.get(f"{server.url}/ca.pem", verify=server.ca, timeout=30)
    assert root.status_code == 200, root.text
    roots = x509.load_pem_x509_certificates(root.content)
    material = secret_material(sc.get_secret(c.name))
    # the secret carries the chain up to (not necessarily including) the root
    result = openssl_verify(tmp_path, root.content, leaf_cert, material.chain)
    assert result.returncode == 0, result.stdout + result.stderr
    assert leaf_cert.issuer in {r.subject for r in [*roots, *material.chain]}
    # and a self-signed certificate does not pass as issued by it
    other = openssl_verify(tmp_path / "self", root.content, self_signed("impostor")[1])
    assert other.returncode != 0


def _unknown(cc: CertificateClient, name: str, **extra: Any) -> CertificateOperation:
    policy = CertificatePolicy(issuer_name=WellKnownIssuerNames.unknown,
                               subject="CN=external.example.com",
                               san_dns_names=["external.example.com"],
                               enhanced_key_usage=[SERVER_AUTH], **extra)
    op = cc.begin_create_certificate(name, policy, **POLL).result()
    assert isinstance(op, CertificateOperation), op
    return op


def test_unknown_issuer_csr_then_merge(cc: CertificateClient, sc: SecretClient, kc: KeyClient,
                                       server: DevServer, credential: Any,
                                       tmp_path: Path) -> None:
    name = unique("merge")
    op = _unknown(cc, name)
    assert op.issuer_name == "Unknown" and op.status == "inProgress"
    assert op.id == f"{server.url}/certificates/{name}/pending"
    assert op.csr is not None
    csr = x509.load_der_x509_csr(bytes(op.csr))
    assert csr.is_signature_valid
    assert subject_pairs(csr) == name_of("CN=external.example.com")
    assert list(sans_of(csr).dns) == ["external.example.com"]
    assert key_description(csr.public_key()) == ("RSA", 2048)
    again = cc.get_certificate_operation(name)
    assert again.csr == op.csr and again.status == "inProgress"
    # pending certificates are listed only when asked for
    assert name not in {p.name for p in cc.list_properties_of_certificates()}
    assert name in {p.name for p in cc.list_properties_of_certificates(include_pending=True)}

    ca = Authority.make("Merge Test Root")
    signed = ca.sign_csr(csr)
    merged = cc.merge_certificate(name, [der(signed), der(ca.cert)])
    assert merged.name == name and cer(merged) == signed
    assert cc.get_certificate_operation(name).status == "completed"
    got = cc.get_certificate(name)
    assert got.cer == merged.cer and got.properties.version == merged.properties.version
    assert_three_objects(server, merged, sc, kc)
    material = secret_material(sc.get_secret(name))
    assert material.chain == [ca.cert]
    result = openssl_verify(tmp_path, ca.cert.public_bytes(serialization.Encoding.PEM),
                            cer(merged), material.chain)
    assert result.returncode == 0, result.stdout + result.stderr
    sign_and_verify(server, credential, merged, "RS256")


def test_merge_with_a_certificate_for_another_key_is_refused(cc: CertificateClient) -> None:
    name = unique("merge")
    op = _unknown(cc, name)
    ca = Authority.make()
    _, wrong = leaf(ca, "external.example.com")  # right subject, wrong key
    with pytest.raises(HttpResponseError) as e:
        cc.merge_certificate(name, [der(wrong)])
    assert refused(e) == (400, "BadParameter")
    after = cc.get_certificate_operation(name)
    assert after.status == "inProgress" and after.csr == op.csr
    # the right one still merges
    assert cer(cc.merge_certificate(name, [der(ca.sign_csr(x509.load_der_x509_csr(
        bytes(op.csr or b""))))])).public_key() is not None


def test_merge_without_a_pending_operation_is_refused(cc: CertificateClient,
                                                      default_cert: KeyVaultCertificate) -> None:
    _, cert = self_signed("x")
    with pytest.raises(HttpResponseError) as e:
        cc.merge_certificate(unique("none"), [der(cert)])
    assert refused(e) == (404, "PendingCertificateNotFound")
    with pytest.raises(HttpResponseError) as e:
        cc.merge_certificate(default_cert.name, [der(cert)])  # completed: nothing to merge
    assert refused(e) == (400, "BadParameter")
    assert cc.get_certificate(default_cert.name).cer == default_cert.cer


def test_second_create_while_pending_is_409(cc: CertificateClient) -> None:
    name = unique("pend")
    op = _unknown(cc, name)
    with pytest.raises(HttpResponseError) as e:
        cc.begin_create_certificate(name, CertificatePolicy.get_default(), **POLL)
    assert refused(e) == (409, "Conflict")
    assert cc.get_certificate_operation(name).csr == op.csr


def test_cancel_and_delete_operation(cc: CertificateClient) -> None:
    name = unique("cancel")
    _unknown(cc, name)
    cancelled = cc.cancel_certificate_operation(name)
    assert cancelled.cancellation_requested is True
    assert cc.get_certificate_operation(name).cancellation_requested is True
    deleted = cc.delete_certificate_operation(name)
    assert deleted.id is not None and deleted.id.endswith(f"/certificates/{name}/pending")
    with pytest.raises(ResourceNotFoundError):
        cc.get_certificate_operation(name)
    with pytest.raises(ResourceNotFoundError):
        cc.delete_certificate_operation(name)


# ---- read, list, update, policy ---------------------------------------------------------------
def test_get_missing_certificate_is_404(cc: CertificateClient) -> None:
    name = unique("nope")
    with pytest.raises(ResourceNotFoundError) as e:
        cc.get_certificate(name)
    assert refused(e) == (404, "CertificateNotFound")
    with pytest.raises(ResourceNotFoundError):
        cc.get_certificate_version(name, "0" * 32)
    with pytest.raises(ResourceNotFoundError):
        cc.get_certificate_policy(name)


def test_list_certificates(cc: CertificateClient, default_cert: KeyVaultCertificate) -> None:
    found = {p.name: p for p in cc.list_properties_of_certificates()}
    assert default_cert.name in found
    item = found[default_cert.name]
    assert item.id == default_cert.id.rsplit("/", 1)[0]  # list items carry no version
    assert item.x509_thumbprint == default_cert.properties.x509_thumbprint
    assert item.enabled is True


def test_update_properties(cc: CertificateClient) -> None:
    name = unique("upd")
    policy = CertificatePolicy.get_default()
    first = create(cc, policy, name)
    second = create(cc, policy, name)
    updated = cc.update_certificate_properties(name, enabled=False, tags={"k": "v"})
    assert updated.properties.version == second.properties.version
    assert updated.properties.enabled is False and updated.properties.tags == {"k": "v"}
    assert updated.cer == second.cer
    old = cc.update_certificate_properties(name, first.properties.version, tags={"old": "1"})
    assert old.properties.version == first.properties.version
    assert old.properties.tags == {"old": "1"} and old.properties.enabled is True
    got = cc.get_certificate(name)
    assert got.properties.enabled is False and got.properties.tags == {"k": "v"}


def test_update_policy(cc: CertificateClient) -> None:
    c = create(cc, CertificatePolicy.get_default())
    new = CertificatePolicy(issuer_name="Self", subject="CN=renewed.example.com",
                            validity_in_months=24, key_type="RSA", key_size=3072,
                            lifetime_actions=[LifetimeAction(
                                CertificatePolicyAction.email_contacts, days_before_expiry=30)])
    updated = cc.update_certificate_policy(c.name, new)
    for p in (updated, cc.get_certificate_policy(c.name)):
        assert p.subject == "CN=renewed.example.com" and p.validity_in_months == 24
        assert p.key_type == "RSA" and p.key_size == 3072
        assert [(a.action, a.days_before_expiry) for a in p.lifetime_actions or []] == [
            (CertificatePolicyAction.email_contacts, 30)]
    # the existing version is untouched
    assert cc.get_certificate(c.name).cer == c.cer
    # the next version follows the new policy
    result = cc.begin_create_certificate(c.name, cc.get_certificate_policy(c.name),
                                         **POLL).result()
    assert isinstance(result, KeyVaultCertificate)
    assert key_description(cer(result).public_key()) == ("RSA", 3072)
    assert subject_pairs(cer(result)) == name_of("CN=renewed.example.com")


# ---- import --------------------------------------------------------------------------------------
def _assert_imported(server: DevServer, c: KeyVaultCertificate, key: Any, cert: x509.Certificate,
                     chain: list[x509.Certificate], sc: SecretClient, kc: KeyClient,
                     content_type: str) -> None:
    assert cer(c) == cert
    assert c.properties.x509_thumbprint == sha1(cert)
    assert_three_objects(server, c, sc, kc, content_type=content_type)
    material = secret_material(sc.get_secret(c.name))
    assert material.chain == chain
    assert material.key is not None
    assert material.key.private_numbers() == key.private_numbers()
    p = c.policy
    assert p is not None
    assert p.subject == "CN=imported.example.com" and p.content_type == content_type
    assert p.key_type == "RSA" and p.key_size == 2048 and p.exportable is True


def test_import_pfx_without_password(cc: CertificateClient, sc: SecretClient, kc: KeyClient,
                                     server: DevServer, credential: Any) -> None:
    ca = Authority.make("Import Root")
    key, cert = leaf(ca, "imported.example.com", dns=["imported.example.com"])
    c = cc.import_certificate(unique("imp"), to_pfx(key, cert, [ca.cert]), tags={"src": "pfx"})
    _assert_imported(server, c, key, cert, [ca.cert], sc, kc, PKCS12)
    assert c.properties.tags == {"src": "pfx"}
    assert c.policy is not None and c.policy.san_dns_names == ["imported.example.com"]
    sign_and_verify(server, credential, c, "RS256")


def test_import_pfx_with_password(cc: CertificateClient, sc: SecretClient, kc: KeyClient,
                                  server: DevServer) -> None:
    ca = Authority.make("Import Root")
    key, cert = leaf(ca, "imported.example.com")
    c = cc.import_certificate(unique("imp"), to_pfx(key, cert, [ca.cert], b"p@ss w0rd"),
                              password="p@ss w0rd", enabled=False)
    assert c.properties.enabled is False
    # a disabled certificate's secret is disabled too
    with pytest.raises(HttpResponseError) as e:
        sc.get_secret(c.name)
    assert refused(e) == (403, "Forbidden")
    c = cc.update_certificate_properties(c.name, enabled=True)
    _assert_imported(server, c, key, cert, [ca.cert], sc, kc, PKCS12)
    # the secret is the PFX without a password, as Azure serves it
    secret = sc.get_secret(c.name).value or ""
    assert parse_pfx(base64.b64decode(secret)).key is not None


def test_import_pem_with_key_and_chain(cc: CertificateClient, sc: SecretClient, kc: KeyClient,
                                       server: DevServer) -> None:
    root = Authority.make("PEM Root")
    intermediate = Authority.make("PEM Intermediate", parent=root)
    key, cert = leaf(intermediate, "imported.example.com")
    policy = CertificatePolicy(content_type=CertificateContentType.pem)
    c = cc.import_certificate(unique("imp"), to_pem(key, cert, [intermediate.cert, root.cert]),
                              policy=policy)
    _assert_imported(server, c, key, cert, [intermediate.cert, root.cert], sc, kc, PEM)


def test_import_self_signed_ec(cc: CertificateClient, kc: KeyClient) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    _, cert = self_signed("ec-import", key)
    c = cc.import_certificate(unique("imp"), to_pfx(key, cert))
    assert cer(c) == cert
    assert c.policy is not None and c.policy.key_type == "EC"
    assert c.policy.key_curve_name == "P-384"
    assert kc.get_key(c.name).key.crv == "P-384"


def _import_refused(cc: CertificateClient, data: bytes, **kw: Any) -> tuple[int | None,
                                                                              str | None]:
    name = unique("bad")
    with pytest.raises(HttpResponseError) as e:
        cc.import_certificate(name, data, **kw)
    text = e.value.response.text()
    assert "PRIVATE KEY" not in text and "secret-pw" not in text
    missing(cc, name)
    return refused(e)


def test_import_refusals(cc: CertificateClient) -> None:
    ca = Authority.make()
    key, cert = leaf(ca, "imported.example.com")
    other_key = rsa.generate_private_key(65537, 2048)
    pem = CertificatePolicy(content_type=CertificateContentType.pem)
    cases = {
        "malformed pfx": (b"\x30\x82not a pfx at all", {}),
        "malformed pem": (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                          {"policy": pem}),
        "wrong password": (to_pfx(key, cert, password=b"secret-pw"), {"password": "wrong"}),
        "missing password": (to_pfx(key, cert, password=b"secret-pw"), {}),
        "pem key of another certificate": (to_pem(other_key, cert), {"policy": pem}),
        "pem without a key": (to_pem(None, cert), {"policy": pem}),
        "pfx without a key": (to_pfx(None, cert), {}),
    }
    for label, (data, kw) in cases.items():
        assert _import_refused(cc, data, **kw) == (400, "BadParameter"), label


POLICY_REFUSALS = {
    "ec with key_size": {"kty": "EC", "key_size": 2048},
    "rsa with crv": {"kty": "RSA", "crv": "P-256"},
    "validity 0": {"validity_months": 0},
    "unknown issuer": {"issuer": "no-such-issuer"},
    "no subject and no sans": {"subject": ""},
    "rsa 1024": {"kty": "RSA", "key_size": 1024},
    "bad subject": {"subject": "not a distinguished name"},
}


@pytest.mark.parametrize("label", list(POLICY_REFUSALS))
def test_create_refuses_a_policy_azure_refuses(cc: CertificateClient, label: str) -> None:
    change = POLICY_REFUSALS[label]
    key_props: dict[str, Any] = {"kty": "RSA", "key_size": 2048}
    if "kty" in change:
        key_props = {k: change[k] for k in ("kty", "key_size", "crv") if k in change}
    x509_props: dict[str, Any] = {"subject": change.get("subject", "CN=refused"),
                                  "validity_months": change.get("validity_months", 12)}
    body = {"policy": {"issuer": {"name": change.get("issuer", "Self")},
                       "key_props": key_props, "x509_props": x509_props}}
    name = unique("refused")
    reply = rest(cc, "POST", f"/certificates/{name}/create", body)
    assert (reply.status, reply.code) == (400, "BadParameter"), reply.body
    missing(cc, name)


def test_name_taken_by_a_secret_or_a_key_is_409(cc: CertificateClient, sc: SecretClient,
                                                kc: KeyClient) -> None:
    secret_name, key_name = unique("taken"), unique("taken")
    sc.set_secret(secret_name, "standalone")
    key = kc.create_ec_key(key_name, curve="P-256")
    ca = Authority.make()
    k, cert = leaf(ca, "taken.example.com")
    for name in (secret_name, key_name):
        with pytest.raises(HttpResponseError) as e:
            cc.begin_create_certificate(name, CertificatePolicy.get_default(), **POLL)
        assert refused(e) == (409, "Conflict")
        with pytest.raises(HttpResponseError) as e:
            cc.import_certificate(name, to_pfx(k, cert))
        assert refused(e) == (409, "Conflict")
        with pytest.raises(ResourceNotFoundError):
            cc.get_certificate(name)
    assert sc.get_secret(secret_name).value == "standalone"
    assert sc.get_secret(secret_name).properties.managed is not True
    assert kc.get_key(key_name).properties.version == key.properties.version


def test_certificate_managed_secret_and_key_refuse_direct_changes(
        cc: CertificateClient, sc: SecretClient, kc: KeyClient,
        default_cert: KeyVaultCertificate) -> None:
    name = default_cert.name
    before = sc.get_secret(name)
    key_before = kc.get_key(name)
    # a certificate's name is not free for a standalone secret or key ...
    with pytest.raises(HttpResponseError) as e:
        sc.set_secret(name, "overwrite")
    assert refused(e) == (409, "Conflict")
    with pytest.raises(HttpResponseError) as e:
        kc.create_ec_key(name, curve="P-256")
    assert refused(e) == (409, "Conflict")
    # ... and its key and secret change only through the certificate
    with pytest.raises(HttpResponseError) as e:
        kc.begin_delete_key(name, **POLL)
    assert refused(e) == (403, "Forbidden")
    with pytest.raises(HttpResponseError) as e:
        sc.begin_delete_secret(name, **POLL)
    assert refused(e) == (403, "Forbidden")
    with pytest.raises(HttpResponseError) as e:
        kc.update_key_properties(name, tags={"changed": "1"})
    assert refused(e) == (403, "Forbidden")
    with pytest.raises(HttpResponseError) as e:
        sc.update_secret_properties(name, tags={"changed": "1"})
    assert refused(e) == (403, "Forbidden")
    with pytest.raises(HttpResponseError) as e:
        kc.rotate_key(name)
    assert refused(e) == (403, "Forbidden")
    after = sc.get_secret(name)
    assert after.value == before.value and after.properties.version == before.properties.version
    assert after.properties.tags == before.properties.tags
    key_after = kc.get_key(name)
    assert key_after.id == default_cert.key_id
    assert key_after.properties.updated_on == key_before.properties.updated_on
    assert key_after.properties.tags == key_before.properties.tags
    assert cc.get_certificate(name).cer == default_cert.cer


# ---- delete, recover, purge ----------------------------------------------------------------------
def test_delete_recover_purge(cc: CertificateClient, sc: SecretClient, kc: KeyClient,
                              server: DevServer) -> None:
    c = create(cc, CertificatePolicy.get_default(), tags={"life": "cycle"})
    name = c.name
    deleted = cc.begin_delete_certificate(name, **POLL).result()
    assert deleted.name == name and deleted.cer == c.cer
    assert deleted.recovery_id == f"{server.url}/deletedcertificates/{name}"
    assert deleted.deleted_on is not None and deleted.scheduled_purge_date is not None
    assert deleted.scheduled_purge_date - deleted.deleted_on == dt.timedelta(days=90)
    with pytest.raises(ResourceNotFoundError):
        cc.get_certificate(name)
    with pytest.raises(ResourceNotFoundError):
        sc.get_secret(name)
    with pytest.raises(ResourceNotFoundError):
        kc.get_key(name)
    got = cc.get_deleted_certificate(name)
    assert got.cer == c.cer and got.properties.tags == {"life": "cycle"}
    assert name in {d.name for d in cc.list_deleted_certificates()}
    # a deleted name cannot be reused
    with pytest.raises(HttpResponseError) as e:
        cc.begin_create_certificate(name, CertificatePolicy.get_default(), **POLL)
    assert refused(e) == (409, "Conflict")

    recovered = cc.begin_recover_deleted_certificate(name, **POLL).result()
    assert recovered.name == name and recovered.cer == c.cer
    assert cc.get_certificate(name).properties.version == c.properties.version
    assert secret_material(sc.get_secret(name)).cert == cer(c)
    assert kc.get_key(name).id == c.key_id
    with pytest.raises(ResourceNotFoundError):
        cc.get_deleted_certificate(name)

    cc.begin_delete_certificate(name, **POLL).wait()
    cc.purge_deleted_certificate(name)
    with pytest.raises(ResourceNotFoundError):
        cc.get_deleted_certificate(name)
    assert name not in {d.name for d in cc.list_deleted_certificates()}
    # the name is free again, for every collection
    again = create(cc, CertificatePolicy.get_default(), name)
    assert again.properties.version != c.properties.version


def test_purge_and_recover_of_missing_are_404(cc: CertificateClient) -> None:
    name = unique("none")
    with pytest.raises(ResourceNotFoundError):
        cc.purge_deleted_certificate(name)
    with pytest.raises(ResourceNotFoundError):
        cc.begin_recover_deleted_certificate(name, **POLL)
    with pytest.raises(ResourceNotFoundError):
        cc.begin_delete_certificate(name, **POLL)


def test_purge_status_is_204(cc: CertificateClient) -> None:
    c = create(cc, CertificatePolicy.get_default())
    cc.begin_delete_certificate(c.name, **POLL).wait()
    reply = rest(cc, "DELETE", f"/deletedcertificates/{c.name}")
    assert reply.status == 204 and reply.body is None


# ---- backup / restore ----------------------------------------------------------------------------
def test_backup_restore_into_a_second_vault(cc: CertificateClient, server: DevServer,
                                            resolve_localhost: None, credential: Any) -> None:
    second = unique("kv")[:20]
    result = server.okv("vault", "create", second)
    assert result.returncode == 0, result.stderr
    dac = DefaultAzureCredential()
    src = CertificateClient(server.vault_url(), dac)
    dst = CertificateClient(server.vault_url(second), dac)
    name = unique("bk")
    policy = CertificatePolicy(issuer_name="Self", subject="CN=backup", exportable=True)
    first = create(src, policy, name)
    latest = create(src, policy, name, tags={"v": "2"})
    blob = src.backup_certificate(name)
    secret = SecretClient(server.vault_url(), dac).get_secret(name)
    material = secret_material(secret)
    assert material.key is not None
    pkcs8 = material.key.private_bytes(serialization.Encoding.DER,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    for form in (pkcs8, base64.b64encode(pkcs8), (secret.value or "").encode()):
        assert form not in blob

    restored = dst.restore_certificate_backup(blob)
    assert restored.id == f"{server.vault_url(second)}/certificates/{name}/" \
        f"{latest.properties.version}"
    assert restored.cer == latest.cer and restored.properties.tags == {"v": "2"}
    versions = {p.version for p in dst.list_properties_of_certificate_versions(name)}
    assert versions == {first.properties.version, latest.properties.version}
    assert dst.get_certificate_policy(name).subject == "CN=backup"
    moved = SecretClient(server.vault_url(second), dac).get_secret(name)
    assert secret_material(moved).key is not None
    assert secret_material(moved).cert == cer(latest)
    dst_keys = KeyClient(server.vault_url(second), dac)
    assert same_public(public_key(dst_keys.get_key(name).key), cer(latest).public_key())
    # restoring over a live certificate is refused
    with pytest.raises(HttpResponseError) as e:
        src.restore_certificate_backup(blob)
    assert refused(e) == (409, "Conflict")
    # independent copies
    dst.begin_delete_certificate(name, **POLL).wait()
    assert src.get_certificate(name).cer == latest.cer


def test_tampered_backup_is_refused(cc: CertificateClient,
                                    default_cert: KeyVaultCertificate) -> None:
    blob = bytearray(cc.backup_certificate(default_cert.name))
    blob[len(blob) // 2] ^= 0x01
    with pytest.raises(HttpResponseError) as e:
        cc.restore_certificate_backup(bytes(blob))
    assert refused(e) == (400, "BadParameter")


# ---- contacts and issuers ------------------------------------------------------------------------
def test_contacts_round_trip(cc: CertificateClient) -> None:
    contacts = [CertificateContact(email="admin@example.com", name="Admin", phone="555-0100"),
                CertificateContact(email="ops@example.com")]
    saved = cc.set_contacts(contacts)
    got = cc.get_contacts()
    for listed in (saved, got):
        assert [(c.email, c.name, c.phone) for c in listed] == [
            ("admin@example.com", "Admin", "555-0100"), ("ops@example.com", None, None)]
    deleted = cc.delete_contacts()
    assert [c.email for c in deleted] == ["admin@example.com", "ops@example.com"]
    with pytest.raises(ResourceNotFoundError):
        cc.get_contacts()


def test_issuer_round_trip(cc: CertificateClient, server: DevServer) -> None:
    name = unique("iss")
    admin = AdministratorContact(first_name="Ada", last_name="Admin", email="ada@example.com",
                                 phone="555-0101")
    created = cc.create_issuer(name, provider="Test", account_id="acct", password="issuer-pw",
                               organization_id="org-1", admin_contacts=[admin])
    assert created.id == f"{server.url}/certificates/issuers/{name}"
    got = cc.get_issuer(name)
    for i in (created, got):
        assert i.name == name and i.provider == "Test" and i.enabled is True
        assert i.account_id == "acct" and i.organization_id == "org-1"
        assert [(a.first_name, a.last_name, a.email, a.phone) for a in i.admin_contacts or []] \
            == [("Ada", "Admin", "ada@example.com", "555-0101")]
    assert name in {i.name for i in cc.list_properties_of_issuers()}
    updated = cc.update_issuer(name, enabled=False)
    assert updated.enabled is False and updated.provider == "Test"
    assert cc.get_issuer(name).enabled is False
    deleted = cc.delete_issuer(name)
    assert deleted.name == name
    with pytest.raises(ResourceNotFoundError):
        cc.get_issuer(name)
    assert name not in {i.name for i in cc.list_properties_of_issuers()}


def test_get_missing_issuer_is_404(cc: CertificateClient) -> None:
    with pytest.raises(ResourceNotFoundError):
        cc.get_issuer(unique("none"))
    with pytest.raises(ResourceNotFoundError):
        cc.delete_issuer(unique("none"))


# ---- the SDK's challenge verification on a vault host ----------------------------------
def test_default_credential_on_a_vault_host(server: DevServer, resolve_localhost: None) -> None:
    client = CertificateClient(server.vault_url(), DefaultAzureCredential())
    c = create(client, CertificatePolicy(issuer_name="Self", subject="CN=vault-host",
                                         key_type="EC", key_curve_name="P-256"))
    assert c.id == f"{server.vault_url()}/certificates/{c.name}/{c.properties.version}"
    assert hashlib.sha1(bytes(c.cer or b"")).digest() == c.properties.x509_thumbprint  # noqa: S324
    assert cn("vault-host") == cer(c).subject
