"""Certificates whose key is held in the HSM (RSA-HSM, EC-HSM) in a Premium vault, through
azure-keyvault-certificates with azure-keyvault-keys and -secrets beside it.

The key is generated in the dev server's SoftHSM2 token and never leaves it: the request
(CSR) and the self-signed certificate are signed there, and the key version names the
token's objects, so the keys API signs with it in the token. Everything is checked outside
the service with `cryptography` (the certificate's public key is the key's JWK, the
self-signed and CSR signatures verify, a signature made through CryptographyClient verifies
with the certificate), and in the token itself (tests/support/softhsm.py): the private
object is sensitive and not extractable, labelled as the stored key names it, and a purge
destroys it. Software keys on the same vault work as before; a Standard vault, and an
exportable HSM key, are refused.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import DefaultAzureCredential
from azure.keyvault.certificates import (
    CertificateClient,
    CertificateContentType,
    CertificateOperation,
    CertificatePolicy,
    KeyCurveName,
    KeyType,
    KeyVaultCertificate,
    WellKnownIssuerNames,
)
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from openkeyvault.deployment import Deployment
from openkeyvault.keystore.configured import label_prefix
from openkeyvault.storage.barrier import vault_owner
from openkeyvault.vault.keys import _context as key_context
from tests.sdk.certs_support import (
    PEM,
    POLL,
    Authority,
    cer,
    der,
    openssl_verify,
    refused,
    same_public,
    secret_material,
    to_pfx,
)
from tests.sdk.clients import unique
from tests.sdk.keys_support import environment, public_key
from tests.sdk.premium_support import key_client, premium_vault
from tests.support.server import DevServer
from tests.support.softhsm import token_objects

pytestmark = pytest.mark.usefixtures("module_env", "sdk_env", "resolve_localhost")

# kty, size, curve → the JWS algorithm the certificate is signed with (and the key signs)
KINDS = {
    "rsa2048": (KeyType.rsa_hsm, 2048, None, "RS256"),
    "rsa3072": (KeyType.rsa_hsm, 3072, None, "RS256"),
    "p256": (KeyType.ec_hsm, None, KeyCurveName.p_256, "ES256"),
    "p256k": (KeyType.ec_hsm, None, KeyCurveName.p_256_k, "ES256K"),
    "p384": (KeyType.ec_hsm, None, KeyCurveName.p_384, "ES384"),
    "p521": (KeyType.ec_hsm, None, KeyCurveName.p_521, "ES512"),
}
HASHES = {"256": hashes.SHA256, "256K": hashes.SHA256, "384": hashes.SHA384,
          "512": hashes.SHA512}


@pytest.fixture(scope="module")
def module_env(server: DevServer) -> Iterator[dict[str, str]]:
    yield from environment(server)


@pytest.fixture(scope="module")
def premium(server: DevServer, module_env: dict[str, str]) -> str:
    return premium_vault(server, "pcert")


@pytest.fixture
def cc(server: DevServer, premium: str) -> CertificateClient:
    return CertificateClient(server.vault_url(premium), DefaultAzureCredential())


@pytest.fixture
def kc(server: DevServer, premium: str) -> KeyClient:
    return key_client(server, premium)


@pytest.fixture
def sc(server: DevServer, premium: str) -> SecretClient:
    return SecretClient(server.vault_url(premium), DefaultAzureCredential())


# ---- helpers ---------------------------------------------------------------------------------
def hsm_policy(kind: str, issuer: str = "Self", **extra: Any) -> CertificatePolicy:
    kty, size, curve, _ = KINDS[kind]
    return CertificatePolicy(issuer_name=issuer, subject=f"CN={kind}.hsm.example",
                             san_dns_names=[f"{kind}.hsm.example"], key_type=kty,
                             key_size=size, key_curve_name=curve, **extra)


def create(cc: CertificateClient, policy: CertificatePolicy, name: str | None = None
           ) -> KeyVaultCertificate:
    result = cc.begin_create_certificate(name or unique("hc"), policy, **POLL).result()
    assert isinstance(result, KeyVaultCertificate), (result.status, result.status_details,
                                                     result.error)
    return result


def private_objects(server: DevServer) -> dict[str, dict[str, object]]:
    return {str(o["id"]): o for o in token_objects(server.data_dir)
            if o["class"] == "PRIVATE_KEY"}


def stored_key(server: DevServer, vault: str, name: str, version: str
               ) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(the deployment's HSM label prefix, the key version's props, its key blob as the
    keystore wrote it), read from the server's storage in this process."""
    d = Deployment.open(server.settings())
    try:
        record = d.repo.get_vault(vault)
        assert record is not None
        rec = d.repo.get_version(record.id, "keys", name.lower(), version)
        assert rec is not None and rec.sealed is not None and rec.key_version is not None
        blob = d.barrier.open(vault_owner(record.id), rec.key_version,
                              key_context(record.id, name.lower(), version), rec.sealed)
        return label_prefix(d.deployment_id), dict(rec.props), json.loads(blob)
    finally:
        d.close()


def check_verifies(public: Any, alg: str, digest: bytes, signature: bytes) -> None:
    """A JWS signature (r||s for ECDSA) of `digest` verifies with `public`."""
    h = HASHES[alg[2:]]()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(h))
        return
    assert isinstance(public, ec.EllipticCurvePublicKey)
    size = len(signature) // 2
    r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    public.verify(utils.encode_dss_signature(r, s), digest, ec.ECDSA(utils.Prehashed(h)))


def sign_with_certificate_key(certificate: KeyVaultCertificate, alg: str,
                              key_id: str | None = None) -> None:
    """The certificate's key signs through CryptographyClient; the signature verifies with
    the certificate's public key."""
    crypto = CryptographyClient(key_id or certificate.key_id or "", DefaultAzureCredential())
    h = hashes.Hash(HASHES[alg[2:]]())
    h.update(f"signed by {certificate.name}".encode())
    digest = h.finalize()
    signature = crypto.sign(SignatureAlgorithm(alg), digest).signature
    check_verifies(cer(certificate).public_key(), alg, digest, signature)
    assert crypto.verify(SignatureAlgorithm(alg), digest, signature).is_valid


def check_hsm_key(server: DevServer, vault: str, kc: KeyClient,
                  certificate: KeyVaultCertificate, kty: str,
                  before: set[str], *, generated: bool = True) -> str:
    """The certificate's key: an HSM key of `kty` whose JWK is the certificate's public key,
    held in one new private token object, sensitive and not extractable (and made in the
    token: LOCAL, when `generated`), labelled as the stored key names it. Returns that
    object's CKA_ID (hex)."""
    name, version = certificate.name, certificate.properties.version
    assert name and version
    key = kc.get_key(name, version)
    assert key.key_type == kty and key.properties.managed is True
    assert key.key.d is None and same_public(public_key(key.key), cer(certificate).public_key())
    objects = private_objects(server)
    made = set(objects) - before
    assert len(made) == 1, made
    handle = made.pop()
    obj = objects[handle]
    assert (obj["SENSITIVE"], obj["EXTRACTABLE"], obj["LOCAL"], obj["TOKEN"],
            obj["PRIVATE"]) == (True, False, generated, True, True)
    prefix, props, blob = stored_key(server, vault, name, version)
    assert (props["keystore"], props["kty"], props["handle"], blob["id"]) == (
        "pkcs11", kty, handle, handle)
    assert obj["label"] == f"{prefix}-{handle}"
    return handle


def check_secret_without_key(sc: SecretClient, certificate: KeyVaultCertificate,
                             chain: list[x509.Certificate] | None = None) -> None:
    """The certificate's secret holds its certificate (and chain) and no private key."""
    material = secret_material(sc.get_secret(certificate.name or ""))
    assert material.key is None
    assert material.cert == cer(certificate)
    assert material.chain == (chain or [])


# ---- create, self-signed -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(KINDS))
def test_self_signed_certificate_with_an_hsm_key(kind: str, cc: CertificateClient,
                                                 kc: KeyClient, sc: SecretClient,
                                                 server: DevServer, premium: str) -> None:
    kty, size, curve, alg = KINDS[kind]
    before = set(private_objects(server))
    c = create(cc, hsm_policy(kind))
    assert c.policy is not None
    assert (c.policy.key_type, c.policy.exportable) == (kty, False)
    bits = {"P-256": 256, "P-256K": 256, "P-384": 384, "P-521": 521}
    assert (c.policy.key_size, c.policy.key_curve_name) == (
        size or bits[curve.value if curve else ""], curve)
    cert = cer(c)
    # self-signed by its own key, in the HSM, with the algorithm a software key would use
    cert.verify_directly_issued_by(cert)
    assert cert.issuer == cert.subject
    hash_name = HASHES[alg[2:]].name
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == hash_name
    pub = cert.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        assert pub.key_size == size
        pub.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                   hashes.SHA256())
    else:
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        pub.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(HASHES[alg[2:]]()))
    check_hsm_key(server, premium, kc, c, kty.value, before)
    sign_with_certificate_key(c, alg)
    check_secret_without_key(sc, c)
    # the certificate reads back, and is listed
    got = cc.get_certificate(c.name or "")
    assert got.cer == c.cer and got.policy is not None and got.policy.key_type == kty
    assert c.name in {p.name for p in cc.list_properties_of_certificates()}
    # the CSR made with it was signed in the HSM too
    op = cc.get_certificate_operation(c.name or "")
    assert op.status == "completed" and op.csr is not None
    csr = x509.load_der_x509_csr(bytes(op.csr))
    assert csr.is_signature_valid and same_public(csr.public_key(), pub)


def test_pem_secret_key_usage_and_attestation(cc: CertificateClient, kc: KeyClient,
                                               sc: SecretClient, server: DevServer,
                                               premium: str) -> None:
    """A PEM secret holds the certificate only; the key's operations follow the key usage;
    the key's attestation says it was generated in the HSM and cannot leave it."""
    c = create(cc, hsm_policy("rsa2048", content_type=CertificateContentType.pem,
                              key_usage=["digitalSignature"]))
    secret = sc.get_secret(c.name or "")
    assert secret.properties.content_type == PEM
    assert secret.value is not None and "PRIVATE KEY" not in secret.value
    check_secret_without_key(sc, c)
    assert sorted(kc.get_key(c.name or "").key_operations or []) == ["sign", "verify"]
    attesting = KeyClient(server.vault_url(premium), DefaultAzureCredential(),
                          api_version="2025-07-01")
    attested = attesting.get_key_attestation(c.name or "")
    jws = attested.properties.attestation.private_key_attestation  # type: ignore[union-attr]
    assert jws is not None
    payload = jws.split(b".")[1]
    statement = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
    assert (statement["kty"], statement["generated_in_hsm"]) == ("RSA-HSM", True)
    assert statement["attributes"]["extractable"] is False
    assert statement["kid"].endswith(f"/keys/{c.name}/{c.properties.version}")


# ---- Unknown issuer: pending with a CSR signed in the HSM, then merge -------------------------
@pytest.mark.parametrize("kind", ["rsa2048", "p384"])
def test_unknown_issuer_csr_signed_in_the_hsm_then_merge(
        kind: str, cc: CertificateClient, kc: KeyClient, sc: SecretClient,
        server: DevServer, premium: str, tmp_path: Path) -> None:
    kty, _, _, alg = KINDS[kind]
    before = set(private_objects(server))
    name = unique("hm")
    op = cc.begin_create_certificate(name, hsm_policy(kind, WellKnownIssuerNames.unknown),
                                     **POLL).result()
    assert isinstance(op, CertificateOperation) and op.status == "inProgress"
    assert op.csr is not None
    csr = x509.load_der_x509_csr(bytes(op.csr))
    assert csr.is_signature_valid
    # checked by hand as well: the signature over the request info, with its own key
    pub = csr.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        pub.verify(csr.signature, csr.tbs_certrequest_bytes, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        pub.verify(csr.signature, csr.tbs_certrequest_bytes, ec.ECDSA(hashes.SHA384()))
    assert csr.subject.rfc4514_string() == f"CN={kind}.hsm.example"
    # the pending key waits in the token
    pending = set(private_objects(server)) - before
    assert len(pending) == 1

    ca = Authority.make("HSM Merge Root")
    signed = ca.sign_csr(csr)
    merged = cc.merge_certificate(name, [der(signed), der(ca.cert)])
    assert cer(merged) == signed
    assert cc.get_certificate_operation(name).status == "completed"
    # the version's key is the one the request was signed with, still in the token
    assert pending == {check_hsm_key(server, premium, kc, merged, kty.value, before)}
    sign_with_certificate_key(merged, alg)
    check_secret_without_key(sc, merged, [ca.cert])
    result = openssl_verify(tmp_path, ca.cert.public_bytes(serialization.Encoding.PEM),
                            cer(merged), [ca.cert])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_deleted_pending_operation_destroys_its_hsm_key(cc: CertificateClient,
                                                          server: DevServer) -> None:
    before = set(private_objects(server))
    name = unique("hd")
    op = cc.begin_create_certificate(name, hsm_policy("p256", WellKnownIssuerNames.unknown),
                                     **POLL).result()
    assert isinstance(op, CertificateOperation)
    pending = set(private_objects(server)) - before
    assert len(pending) == 1
    cc.delete_certificate_operation(name)
    assert not pending & set(private_objects(server))
    # and a cancelled one
    name = unique("hx")
    cc.begin_create_certificate(name, hsm_policy("p256", WellKnownIssuerNames.unknown),
                                **POLL).result()
    pending = set(private_objects(server)) - before
    assert len(pending) == 1
    cancelled = cc.cancel_certificate_operation(name)
    assert cancelled.cancellation_requested and cancelled.status == "cancelled"
    assert not pending & set(private_objects(server))


# ---- the built-in issuing CA -------------------------------------------------------------------
def test_builtin_issuer_with_an_hsm_key(cc: CertificateClient, kc: KeyClient, sc: SecretClient,
                                        server: DevServer, premium: str,
                                        tmp_path: Path) -> None:
    issuer = unique("ca")
    cc.create_issuer(issuer, provider="OpenKeyVault")
    before = set(private_objects(server))
    c = create(cc, hsm_policy("p384", issuer))
    leaf = cer(c)
    assert leaf.issuer != leaf.subject
    check_hsm_key(server, premium, kc, c, "EC-HSM", before)
    sign_with_certificate_key(c, "ES384")
    material = secret_material(sc.get_secret(c.name or ""))
    assert material.key is None and material.cert == leaf and material.chain
    root = material.chain[-1]
    result = openssl_verify(tmp_path, root.public_bytes(serialization.Encoding.PEM), leaf,
                            material.chain)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- new versions, delete, recover, purge --------------------------------------------------------
def test_new_versions_reuse_key_and_purge(cc: CertificateClient, kc: KeyClient,
                                          server: DevServer, premium: str) -> None:
    """A new version makes a new key in the HSM, unless the policy reuses the key: then
    the new version is signed by the same HSM key. Every version's key signs; a soft delete
    keeps the token objects, a purge destroys them all."""
    before = set(private_objects(server))
    name = unique("hv")
    first = create(cc, hsm_policy("rsa2048"), name)
    second = create(cc, hsm_policy("rsa2048"), name)
    assert second.properties.version != first.properties.version
    assert not same_public(cer(first).public_key(), cer(second).public_key())
    assert len(set(private_objects(server)) - before) == 2
    cc.update_certificate_policy(name, hsm_policy("rsa2048", reuse_key=True))
    third = create(cc, hsm_policy("rsa2048", reuse_key=True), name)
    assert same_public(cer(third).public_key(), cer(second).public_key())
    cer(third).verify_directly_issued_by(cer(third))
    ours = set(private_objects(server)) - before
    assert len(ours) == 2  # the reused key made no new object
    _, props2, _ = stored_key(server, premium, name, second.properties.version or "")
    _, props3, _ = stored_key(server, premium, name, third.properties.version or "")
    assert props2["handle"] == props3["handle"]
    for c in (first, second, third):
        sign_with_certificate_key(c, "RS256", c.key_id)
    assert len(list(cc.list_properties_of_certificate_versions(name))) == 3

    cc.begin_delete_certificate(name, **POLL).wait()
    assert ours <= set(private_objects(server))
    cc.begin_recover_deleted_certificate(name, **POLL).wait()
    sign_with_certificate_key(cc.get_certificate(name), "RS256")
    cc.begin_delete_certificate(name, **POLL).wait()
    cc.purge_deleted_certificate(name)
    assert not ours & set(private_objects(server))


def test_a_software_certificate_moves_into_the_hsm(cc: CertificateClient, kc: KeyClient,
                                                   sc: SecretClient, server: DevServer,
                                                   premium: str) -> None:
    """A policy changed from RSA to RSA-HSM (exportable was true, and becomes false): the
    next version's key is made in the HSM, even with reuse_key; the older version's
    software key stays as it was."""
    name = unique("hm")
    first = create(cc, CertificatePolicy(issuer_name="Self", subject="CN=moving",
                                         key_type=KeyType.rsa, reuse_key=True), name)
    assert first.policy is not None and first.policy.exportable is True
    updated = cc.update_certificate_policy(name, CertificatePolicy(key_type=KeyType.rsa_hsm))
    assert (updated.key_type, updated.exportable, updated.reuse_key) == (
        KeyType.rsa_hsm, False, True)
    before = set(private_objects(server))
    second = create(cc, updated, name)
    check_hsm_key(server, premium, kc, second, "RSA-HSM", before)
    sign_with_certificate_key(second, "RS256")
    check_secret_without_key(sc, second)
    assert kc.get_key(name, first.properties.version or "").key_type == "RSA"
    assert secret_material(sc.get_secret(name, first.properties.version)).key is not None


# ---- import ------------------------------------------------------------------------------------
def test_import_into_the_hsm(cc: CertificateClient, kc: KeyClient, sc: SecretClient,
                             server: DevServer, premium: str) -> None:
    """A PFX imported with an HSM key type: its key is created in the token (it passed
    through the service on its way in), the secret keeps no private key."""
    key = rsa.generate_private_key(65537, 2048)
    ca = Authority.make("HSM Import Root")
    cert = ca.issue(key.public_key(), x509.Name.from_rfc4514_string("CN=imported.hsm"))
    before = set(private_objects(server))
    policy = CertificatePolicy(issuer_name=WellKnownIssuerNames.unknown,
                               key_type=KeyType.rsa_hsm, exportable=False)
    c = cc.import_certificate(unique("hi"), to_pfx(key, cert, [ca.cert]), policy=policy)
    assert cer(c) == cert
    assert c.policy is not None and c.policy.key_type == KeyType.rsa_hsm
    assert c.policy.exportable is False
    check_hsm_key(server, premium, kc, c, "RSA-HSM", before, generated=False)
    sign_with_certificate_key(c, "RS256")
    check_secret_without_key(sc, c, [ca.cert])
    # an exportable HSM key is refused here too, and nothing is left in the token
    before = set(private_objects(server))
    with pytest.raises(HttpResponseError) as e:
        cc.import_certificate(unique("hi"), to_pfx(key, cert), policy=CertificatePolicy(
            issuer_name=WellKnownIssuerNames.unknown, key_type=KeyType.rsa_hsm,
            exportable=True))
    assert refused(e) == (400, "BadParameter")
    assert set(private_objects(server)) == before


# ---- refusals and what stays as it was -----------------------------------------------------------
def test_exportable_hsm_key_is_refused(cc: CertificateClient, server: DevServer) -> None:
    """Azure: exportable keys are allowed only with RSA and EC; HSM keys are not
    exportable."""
    before = set(private_objects(server))
    name = unique("he")
    for kind in ("rsa2048", "p256"):
        with pytest.raises(HttpResponseError) as e:
            cc.begin_create_certificate(name, hsm_policy(kind, exportable=True), **POLL)
        assert refused(e) == (400, "BadParameter")
        message = e.value.response.json()["error"]["message"]
        assert "exportable" in message.lower() and "HSM" in message
    assert set(private_objects(server)) == before
    # an exportable software certificate next to it is fine
    c = create(cc, CertificatePolicy(issuer_name="Self", subject="CN=soft",
                                     key_type=KeyType.rsa, exportable=True), name)
    assert c.policy is not None and c.policy.exportable is True


def test_software_certificates_on_a_premium_vault(cc: CertificateClient, kc: KeyClient,
                                                  sc: SecretClient, server: DevServer) -> None:
    before = set(private_objects(server))
    for policy, kty in ((CertificatePolicy.get_default(), "RSA"),
                        (CertificatePolicy(issuer_name="Self", subject="CN=soft-ec",
                                           key_type=KeyType.ec,
                                           key_curve_name=KeyCurveName.p_384), "EC")):
        c = create(cc, policy)
        key = kc.get_key(c.name or "")
        assert key.key_type == kty and same_public(public_key(key.key), cer(c).public_key())
        material = secret_material(sc.get_secret(c.name or ""))
        assert material.key is not None and same_public(material.key.public_key(),
                                                        cer(c).public_key())
        sign_with_certificate_key(c, "RS256" if kty == "RSA" else "ES384")
    assert set(private_objects(server)) == before


def test_standard_vault_refuses_hsm_certificates(server: DevServer) -> None:
    standard = CertificateClient(server.url, DefaultAzureCredential(),
                                 verify_challenge_resource=False)
    for kind in ("rsa2048", "p256"):
        with pytest.raises(HttpResponseError) as e:
            standard.begin_create_certificate(unique("hs"), hsm_policy(kind), **POLL)
        assert refused(e) == (403, "Forbidden")
        assert e.value.response.json()["error"]["message"] == \
            "Hardware key operation not allowed on standard vault."


def test_backup_and_restore_of_an_hsm_certificate(cc: CertificateClient, kc: KeyClient,
                                                  sc: SecretClient, server: DevServer,
                                                  premium: str) -> None:
    """A backup holds each version's key as the copy the HSM wrapped with the deployment's
    backup key; a restore unwraps it in the token into new objects (none left when the
    restore is refused), and the restored certificate's keys sign there."""
    name = unique("hb")
    first = create(cc, hsm_policy("p256"), name)
    second = create(cc, hsm_policy("p256"), name)
    blob = cc.backup_certificate(name)
    held = set(private_objects(server))
    with pytest.raises(HttpResponseError) as e:
        cc.restore_certificate_backup(blob)
    assert refused(e)[0] == 409
    assert set(private_objects(server)) == held
    cc.begin_delete_certificate(name, **POLL).wait()
    cc.purge_deleted_certificate(name)
    before = set(private_objects(server))
    restored = cc.restore_certificate_backup(blob)
    assert restored.name == name and restored.cer == second.cer
    made = set(private_objects(server)) - before
    assert len(made) == 2
    for c in (first, second):
        version = c.properties.version or ""
        _, props, stored = stored_key(server, premium, name, version)
        assert props["keystore"] == "pkcs11" and props["handle"] in made
        assert stored["id"] == props["handle"]
        key = kc.get_key(name, version)
        assert key.key_type == "EC-HSM"
        assert same_public(public_key(key.key), cer(c).public_key())
        sign_with_certificate_key(c, "ES256", key.id)
    objects = private_objects(server)
    assert all((objects[h]["SENSITIVE"], objects[h]["EXTRACTABLE"]) == (True, False)
               for h in made)
    check_secret_without_key(sc, restored)
    cc.begin_delete_certificate(name, **POLL).wait()
    cc.purge_deleted_certificate(name)
    assert not made & set(private_objects(server))
