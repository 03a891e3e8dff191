"""What the token service needs from a client certificate: thumbprints, validity, public key.

Only the certificate is read from the input; a private key in the same PEM file (the form
the SDKs' CertificateCredential takes) is ignored and never returned.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

MAX_PEM_BYTES = 64 * 1024
MIN_RSA_BITS = 2048
# The JWS algorithms an assertion signed with each kind of key may use.
_EC_ALGORITHMS = {"secp256r1": ("ES256",), "secp384r1": ("ES384",), "secp521r1": ("ES512",)}
_RSA_ALGORITHMS = ("RS256", "PS256")


class CertificateError(ValueError):
    """The input is not a usable certificate (message safe to show)."""


@dataclass(frozen=True)
class CertificateInfo:
    pem: str  # the certificate alone
    sha1: str  # lower-case hex
    sha256: str
    not_before: int
    not_after: int
    subject: str
    public_pem: str
    algorithms: tuple[str, ...]


def certificate_info(data: bytes) -> CertificateInfo:
    """The first certificate in a PEM file."""
    if len(data) > MAX_PEM_BYTES:
        raise CertificateError(f"The PEM file is larger than {MAX_PEM_BYTES} bytes.")
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise CertificateError("The file holds no PEM certificate.")
    try:
        cert = x509.load_pem_x509_certificates(data)[0]
    except (ValueError, IndexError):
        raise CertificateError("The PEM certificate could not be read.") from None
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CertificateError(f"RSA certificates need a key of {MIN_RSA_BITS} bits or more.")
        algorithms: tuple[str, ...] = _RSA_ALGORITHMS
    elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGORITHMS:
        algorithms = _EC_ALGORITHMS[key.curve.name]
    else:
        raise CertificateError("Only RSA and EC (P-256, P-384, P-521) certificates are accepted.")
    der = cert.public_bytes(serialization.Encoding.DER)
    return CertificateInfo(
        pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        sha1=hashlib.sha1(der, usedforsecurity=False).hexdigest(),
        sha256=hashlib.sha256(der).hexdigest(),
        not_before=int(cert.not_valid_before_utc.timestamp()),
        not_after=int(cert.not_valid_after_utc.timestamp()),
        subject=cert.subject.rfc4514_string()[:256],
        public_pem=key.public_bytes(serialization.Encoding.PEM,
                                    serialization.PublicFormat.SubjectPublicKeyInfo
                                    ).decode("ascii"),
        algorithms=algorithms,
    )
