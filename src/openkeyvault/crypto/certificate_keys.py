"""Key pairs and encodings the certificate service needs: generate a certificate's key,
keep it as PKCS#8 DER (the software keystore's blob), and move certificates and
requests to and from DER. Pure functions; no storage.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openkeyvault.crypto.certificates import CertificateInputError
from openkeyvault.crypto.jwk import (
    CURVES,
    RSA_SIZES,
    JwkError,
    PrivateKey,
    PublicKey,
    b64u,
    public_from_jwk,
    public_jwk,
)

MAX_CHAIN = 10


def generate(family: str, size: int | None, curve: str | None) -> PrivateKey:
    """A new RSA (`size` bits) or EC (`curve`, Key Vault spelling) private key."""
    if family == "RSA":
        if size not in RSA_SIZES:
            raise CertificateInputError(
                f"RSA key size must be one of {', '.join(map(str, RSA_SIZES))}.")
        return rsa.generate_private_key(65537, size)
    if curve not in CURVES:
        raise CertificateInputError(f"Unsupported curve; use one of {', '.join(CURVES)}.")
    return ec.generate_private_key(CURVES[curve][0]())


def to_blob(key: PrivateKey) -> bytes:
    """PKCS#8 DER: the software keystore's blob."""
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def from_blob(blob: bytes) -> PrivateKey:
    key = serialization.load_der_private_key(blob, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertificateInputError("The stored key has an unexpected type.")
    return key


def public_key(key: PrivateKey) -> PublicKey:
    return key.public_key()


def public_members(key: PrivateKey | PublicKey) -> dict[str, object]:
    """The public JWK members (kty, n/e or crv/x/y)."""
    return public_jwk(key)


def key_size(key: PrivateKey) -> int:
    return key.key_size if isinstance(key, rsa.RSAPrivateKey) else key.curve.key_size


def family(key: PrivateKey) -> str:
    return "RSA" if isinstance(key, rsa.RSAPrivateKey) else "EC"


def curve(key: PrivateKey) -> str | None:
    if isinstance(key, rsa.RSAPrivateKey):
        return None
    return next((n for n, (cls, _) in CURVES.items() if cls().name == key.curve.name), None)


def cert_der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def cert_from_der(data: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise CertificateInputError("The certificate is not a valid DER X.509 certificate.") \
            from None


def csr_der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def validity(certificate: x509.Certificate) -> tuple[int, int]:
    """(notBefore, notAfter) as Unix seconds."""
    return (int(certificate.not_valid_before_utc.timestamp()),
            int(certificate.not_valid_after_utc.timestamp()))


def private_members(key: PrivateKey) -> dict[str, object]:
    """The JWK members of a private key (RSA n, e, d, p, q, dp, dq, qi; EC crv, x, y, d),
    as a keystore's import takes them."""
    out = public_jwk(key)
    if isinstance(key, rsa.RSAPrivateKey):
        nums = key.private_numbers()
        for name, value in (("d", nums.d), ("p", nums.p), ("q", nums.q), ("dp", nums.dmp1),
                            ("dq", nums.dmq1), ("qi", nums.iqmp)):
            out[name] = b64u(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))
        return out
    size = CURVES[str(out["crv"])][1]
    out["d"] = b64u(key.private_numbers().private_value.to_bytes(size, "big"))
    return out


def public_from_members(members: dict[str, object], family: str) -> PublicKey:
    """The public key of stored public JWK members (a key version's `public`)."""
    try:
        return public_from_jwk(dict(members), family)
    except JwkError as exc:
        raise CertificateInputError(str(exc)) from None
