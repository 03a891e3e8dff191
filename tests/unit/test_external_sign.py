"""Certificates and PKCS#10 requests signed outside the process (crypto/external_sign.py,
crypto/certificate_signing.py) with every signature algorithm and key a certificate can
have: RSA (PKCS#1 v1.5 and PSS) and ECDSA on every Key Vault curve. A software key stands
in for the HSM's, asked through a function that gets only the algorithm and the digest
(as `KeyStore.sign` does) and answers as JWS does (r||s for ECDSA). Every result is checked
by `cryptography` and, where the tool is installed, by `openssl`."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from openkeyvault.crypto import algorithms
from openkeyvault.crypto import certificate_signing as cs
from openkeyvault.crypto.certificates import X509Request, build_csr
from openkeyvault.crypto.external_sign import ExternalSignError, sign_certificate, sign_csr
from openkeyvault.crypto.jwk import PrivateKey, PublicKey

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
REQUEST = X509Request(subject="CN=hsm.example, O=Example", dns_names=("hsm.example",),
                      key_usage=("digitalSignature", "keyEncipherment"),
                      ekus=("1.3.6.1.5.5.7.3.1",), validity_months=12)
CURVES = {"P-256": ec.SECP256R1, "P-256K": ec.SECP256K1, "P-384": ec.SECP384R1,
          "P-521": ec.SECP521R1}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def digest_signer(key: PrivateKey, alg: str) -> Callable[[bytes], bytes]:
    """The key signing a digest with `alg`, answering as a keystore does."""
    return lambda digest: algorithms.sign(key, alg, digest)


def keystore_signer(key: PrivateKey, seen: list[str]) -> cs.Signer:
    def sign(alg: str, digest: bytes) -> bytes:
        seen.append(alg)
        return algorithms.sign(key, alg, digest)
    return sign


def builder(public: PublicKey) -> x509.CertificateBuilder:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "external")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number()).not_valid_before(NOW)
            .not_valid_after(NOW + dt.timedelta(days=30)))


def csr_builder() -> x509.CertificateSigningRequestBuilder:
    return x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "external request")]))


def openssl_verifies(args: list[str], pem: bytes) -> None:
    if shutil.which("openssl") is None:
        return
    done = subprocess.run(["openssl", *args, "-noout"], input=pem, capture_output=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr


def check_rsa_signature(public: rsa.RSAPublicKey, alg: str, signature: bytes,
                        data: bytes) -> None:
    spec = algorithms.SIGN[alg]
    public.verify(signature, data, spec.rsa_padding, spec.hash())


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
def test_rsa_certificate_and_request_every_algorithm(rsa_key: rsa.RSAPrivateKey,
                                                      alg: str) -> None:
    public = rsa_key.public_key()
    cert = sign_certificate(builder(public), digest_signer(rsa_key, alg), alg,
                            verify_with=public)
    cert.verify_directly_issued_by(cert)
    check_rsa_signature(public, alg, cert.signature, cert.tbs_certificate_bytes)
    assert cert.signature_hash_algorithm.name == algorithms.SIGN[alg].hash.name
    if alg.startswith("PS"):
        assert isinstance(cert.signature_algorithm_parameters, padding.PSS)
    openssl_verifies(["x509", "-in", "/dev/stdin"], cert.public_bytes(
        serialization.Encoding.PEM))
    csr = sign_csr(csr_builder(), public, digest_signer(rsa_key, alg), alg)
    assert csr.is_signature_valid and csr.public_key() == public
    check_rsa_signature(public, alg, csr.signature, csr.tbs_certrequest_bytes)
    openssl_verifies(["req", "-verify"], csr.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize("crv", list(CURVES))
def test_ec_certificate_and_request_every_curve(crv: str) -> None:
    key = ec.generate_private_key(CURVES[crv]())
    public = key.public_key()
    alg = cs.signature_algorithm(public)
    assert alg == {"P-256": "ES256", "P-256K": "ES256K", "P-384": "ES384",
                   "P-521": "ES512"}[crv]
    cert = sign_certificate(builder(public), digest_signer(key, alg), alg, verify_with=public)
    cert.verify_directly_issued_by(cert)
    public.verify(cert.signature, cert.tbs_certificate_bytes,
                  ec.ECDSA(algorithms.SIGN[alg].hash()))
    csr = sign_csr(csr_builder(), public, digest_signer(key, alg), alg)
    assert csr.is_signature_valid and csr.public_key() == public
    openssl_verifies(["req", "-verify"], csr.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize("kind", ["RSA", "P-256", "P-256K", "P-384", "P-521"])
def test_certificates_api_builders_match_the_software_path(rsa_key: rsa.RSAPrivateKey,
                                                           kind: str) -> None:
    """A request and a self-signed certificate made through a signer carry what the
    software path's carry, signed with the algorithm a software key would use."""
    key: PrivateKey = rsa_key if kind == "RSA" else ec.generate_private_key(CURVES[kind]())
    public = key.public_key()
    seen: list[str] = []
    csr = cs.build_csr(REQUEST, public, keystore_signer(key, seen))
    software = build_csr(REQUEST, key)
    assert csr.is_signature_valid and csr.public_key() == public
    assert csr.subject == software.subject and list(csr.extensions) == list(software.extensions)
    assert csr.signature_algorithm_oid == software.signature_algorithm_oid
    cert = cs.build_self_signed(REQUEST, public, keystore_signer(key, seen), NOW)
    cert.verify_directly_issued_by(cert)
    assert cert.public_key() == public and cert.subject == cert.issuer
    assert cert.not_valid_before_utc == NOW
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["hsm.example"]
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).critical
    expected = {"RSA": "RS256", "P-256": "ES256", "P-256K": "ES256K", "P-384": "ES384",
                "P-521": "ES512"}[kind]
    assert seen == [expected, expected]


def test_a_signer_that_is_not_the_key_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(65537, 2048)
    with pytest.raises(ExternalSignError):
        sign_csr(csr_builder(), rsa_key.public_key(), digest_signer(other, "RS256"), "RS256")
    with pytest.raises(ExternalSignError):
        sign_certificate(builder(rsa_key.public_key()), digest_signer(other, "RS256"),
                         "RS256", verify_with=rsa_key.public_key())
    # without verify_with the certificate is made, and does not verify
    cert = sign_certificate(builder(rsa_key.public_key()), digest_signer(other, "RS256"),
                            "RS256")
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(cert)


@pytest.mark.parametrize("alg", ["HS256", "RSA-OAEP", ""])
def test_an_unknown_algorithm_is_refused(rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    with pytest.raises(ExternalSignError):
        sign_certificate(builder(rsa_key.public_key()), lambda _: b"x", alg)


def test_an_empty_signature_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ExternalSignError):
        sign_csr(csr_builder(), rsa_key.public_key(), lambda _: b"", "RS256")


def test_the_digest_matches_the_algorithm(rsa_key: rsa.RSAPrivateKey) -> None:
    sizes: list[int] = []

    def sign(digest: bytes) -> bytes:
        sizes.append(len(digest))
        return algorithms.sign(rsa_key, "RS512", digest)

    sign_certificate(builder(rsa_key.public_key()), sign, "RS512")
    assert sizes == [hashes.SHA512.digest_size]
