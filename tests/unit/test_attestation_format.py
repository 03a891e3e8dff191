"""Certificates signed outside the process (crypto/external_sign.py) and the attestation
format (crypto/attestation.py, crypto/attestation_check.py), with software P-384 keys
standing in for the HSM's: each signature is asked of a function that gets a SHA-384
digest and answers r||s, as the token does. The results are checked by `cryptography`."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from openkeyvault.crypto import attestation
from openkeyvault.crypto.attestation_check import AttestationInvalid, verify
from openkeyvault.crypto.external_sign import (
    ExternalSignError,
    ecdsa_der,
    ecdsa_raw,
    sign_certificate,
    signature_algorithm,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
ECDSA_SHA384_DER = bytes.fromhex("300a06082a8648ce3d040303")


def signer(key: ec.EllipticCurvePrivateKey) -> Callable[[bytes], bytes]:
    """A digest signer like the token's CKM_ECDSA: SHA-384 digest in, r||s out."""
    def sign(digest: bytes) -> bytes:
        assert len(digest) == 48
        der = key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA384())))
        return ecdsa_raw(der, 48)
    return sign


def p384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def builder(subject: str, issuer: str, public: ec.EllipticCurvePublicKey
            ) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=30)))


# --- External signing -----------------------------------------------------------------


def test_self_signed_certificate_verifies_and_parses() -> None:
    key = p384()
    cert = sign_certificate(builder("self", "self", key.public_key()), signer(key))
    cert.verify_directly_issued_by(cert)
    key.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                            ec.ECDSA(hashes.SHA384()))
    assert cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA384
    der = cert.public_bytes(serialization.Encoding.DER)
    again = x509.load_der_x509_certificate(der)
    assert again == cert and again.public_bytes(serialization.Encoding.DER) == der
    assert signature_algorithm(der) == ECDSA_SHA384_DER
    assert x509.load_pem_x509_certificate(cert.public_bytes(serialization.Encoding.PEM)) == cert


def test_certificate_issued_by_another_key() -> None:
    issuer_key, subject_key = p384(), p384()
    issuer = sign_certificate(builder("ca", "ca", issuer_key.public_key()), signer(issuer_key))
    leaf = sign_certificate(builder("leaf", "ca", subject_key.public_key()), signer(issuer_key))
    leaf.verify_directly_issued_by(issuer)
    assert leaf.public_key() == subject_key.public_key()
    with pytest.raises(InvalidSignature):
        leaf.verify_directly_issued_by(sign_certificate(
            builder("ca", "ca", subject_key.public_key()), signer(subject_key)))


def test_a_wrong_signature_gives_a_certificate_that_does_not_verify() -> None:
    key, other = p384(), p384()
    cert = sign_certificate(builder("self", "self", key.public_key()), signer(other))
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(cert)


@pytest.mark.parametrize("raw", [b"", b"\x01" * 95, b"\x01"], ids=["empty", "odd", "one"])
def test_a_malformed_signature_is_refused(raw: bytes) -> None:
    key = p384()
    with pytest.raises(ExternalSignError):
        sign_certificate(builder("self", "self", key.public_key()), lambda _: raw)


def test_ecdsa_encodings_round_trip_with_leading_zeros() -> None:
    raw = bytes(47) + b"\x05" + b"\x00\x80" + bytes(45) + b"\x07"
    der = ecdsa_der(raw)
    assert utils.decode_dss_signature(der) == (5, int.from_bytes(raw[48:], "big"))
    assert ecdsa_raw(der, 48) == raw


@pytest.mark.parametrize("der", [b"", b"\x31\x00", b"\x30\x85\x00", b"\x30\x05\x30\x01"])
def test_signature_algorithm_refuses_what_is_no_certificate(der: bytes) -> None:
    with pytest.raises(ExternalSignError):
        signature_algorithm(der)


# --- The attestation chain and statements ---------------------------------------------


def make_chain() -> tuple[x509.Certificate, x509.Certificate, ec.EllipticCurvePrivateKey]:
    root_key, signing_key = p384(), p384()
    root = attestation.root_certificate(root_key.public_key(), "Root test", NOW,
                                        signer(root_key))
    signing = attestation.signing_certificate(signing_key.public_key(), "Signing test", root,
                                              NOW, signer(root_key))
    return root, signing, signing_key


def test_root_and_signing_certificates() -> None:
    root, signing, _ = make_chain()
    root.verify_directly_issued_by(root)
    signing.verify_directly_issued_by(root)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and not usage.digital_signature
    assert signing.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = signing.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert root.not_valid_after_utc.year == NOW.year + 20
    assert signing.not_valid_after_utc.year == NOW.year + 10
    assert signing.issuer == root.subject
    aki = signing.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bundle_for(root: x509.Certificate, signing: x509.Certificate,
               signing_key: ec.EllipticCurvePrivateKey, **change: Any) -> dict[str, Any]:
    kid = "https://v.vault.localhost/keys/k/0123"
    public = {"crv": "P-256", "x": "eA", "y": "eQ"}
    facts = {"keystore": "pkcs11", "token": {"label": "t", "manufacturer": "m", "model": "x",
                                              "serial": "1"},
             "attributes": {"sensitive": True, "extractable": False, "always_sensitive": True,
                            "never_extractable": True, "local": True}}
    private = attestation.private_claims(kid, "EC-HSM", ["sign"], public, facts, 1)
    public_stmt = attestation.public_claims(kid, "EC-HSM", public, facts, 1)
    private.update(change)
    sign = signer(signing_key)
    return {
        "key": {"kid": kid, "kty": "EC-HSM", "key_ops": ["sign"], **public},
        "attributes": {"enabled": True, "attestation": {
            "certificatePemFile": b64u(attestation.chain_pem(signing, root)),
            "privateKeyAttestation": b64u(attestation.compact_jws(private, signing,
                                                                  sign).encode()),
            "publicKeyAttestation": b64u(attestation.compact_jws(public_stmt, signing,
                                                                 sign).encode()),
            "version": "1.0"}},
    }


def test_verify_accepts_a_good_attestation() -> None:
    root, signing, signing_key = make_chain()
    facts = verify(bundle_for(root, signing, signing_key), NOW, root)
    assert (facts.sensitive, facts.extractable, facts.generated_in_hsm) == (True, False, True)
    assert facts.root == root and facts.token["label"] == "t"


def _flip_payload(value: str) -> str:
    compact = base64.urlsafe_b64decode(value + "==").decode()
    head, payload, sig = compact.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["attributes"]["extractable"] = True
    return b64u(f"{head}.{b64u(json.dumps(claims).encode())}.{sig}".encode())


def test_verify_names_the_check_that_failed() -> None:
    root, signing, signing_key = make_chain()
    other_root, _, _ = make_chain()
    good = bundle_for(root, signing, signing_key)

    def fails(bundle: Any, message: str, trusted: x509.Certificate | None = None,
              now: dt.datetime = NOW) -> None:
        with pytest.raises(AttestationInvalid) as err:
            verify(bundle, now, trusted)
        assert message in str(err.value)

    fails(good, "not the one given", other_root)
    fails(good, "not valid now", now=NOW + dt.timedelta(days=365 * 11))
    tampered = json.loads(json.dumps(good))
    att = tampered["attributes"]["attestation"]
    att["privateKeyAttestation"] = _flip_payload(att["privateKeyAttestation"])
    fails(tampered, "private key JWS signature does not verify")
    other = json.loads(json.dumps(good))
    other["key"]["kid"] += "0"
    fails(other, "names another key id")
    fails(bundle_for(root, signing, signing_key, public={"crv": "P-256", "x": "AA"}),
          "describes another public key")
    fails(bundle_for(root, signing, signing_key, generated_in_hsm=False), "generated_in_hsm")
    foreign_signing = make_chain()[1]
    fails(bundle_for(root, foreign_signing, signing_key), "not issued by the attestation root")
    fails({"key": good["key"], "attributes": {}}, "holds no attestation")
