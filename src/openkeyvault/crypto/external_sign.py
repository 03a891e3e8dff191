"""X.509 certificates signed by a key this process cannot hold: one in an HSM, which signs
a digest and returns the signature.

cryptography's `CertificateBuilder.sign` needs a private key object. So the certificate
is built and signed once with a throwaway key of the same type (EC P-384 with SHA-384:
the signature AlgorithmIdentifier, inside the to-be-signed part and after it, is then
the one the real key's signature needs), its to-be-signed bytes are taken, the real
key signs their SHA-384 digest, and the certificate is assembled again:
Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING }.

The throwaway key's signature is dropped; only the TBS and the AlgorithmIdentifier of
its certificate are kept. ECDSA signers return r||s as PKCS#11's CKM_ECDSA and JWS do;
X.509 wants the DER `Ecdsa-Sig-Value`, so `ecdsa_der` converts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

# SHA-384 digest → the raw ECDSA signature r||s (each half 48 bytes for P-384).
DigestSigner = Callable[[bytes], bytes]


class ExternalSignError(ValueError):
    """The external signer's answer cannot make a certificate (safe to show)."""


def ecdsa_der(raw: bytes) -> bytes:
    """The DER Ecdsa-Sig-Value SEQUENCE { r INTEGER, s INTEGER } of a raw r||s."""
    if not raw or len(raw) % 2:
        raise ExternalSignError("The ECDSA signature is not r||s of two equal halves.")
    half = len(raw) // 2
    return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                      int.from_bytes(raw[half:], "big"))


def ecdsa_raw(der: bytes, size: int) -> bytes:
    """The raw r||s (each half `size` bytes) of a DER Ecdsa-Sig-Value."""
    r, s = utils.decode_dss_signature(der)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def sign_certificate(builder: x509.CertificateBuilder, sign: DigestSigner) -> x509.Certificate:
    """The certificate `builder` describes, signed ecdsa-with-SHA384 by `sign` (a P-384
    key held elsewhere). The builder must be complete (subject, issuer, key, serial,
    validity); `sign` gets the SHA-384 digest of the TBS and returns r||s."""
    placeholder = builder.sign(ec.generate_private_key(ec.SECP384R1()), hashes.SHA384())
    tbs = placeholder.tbs_certificate_bytes
    algorithm = signature_algorithm(placeholder.public_bytes(serialization.Encoding.DER))
    signature = ecdsa_der(sign(hashlib.sha384(tbs).digest()))
    der = _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature))
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise ExternalSignError("The assembled certificate could not be read.") from None


def signature_algorithm(certificate_der: bytes) -> bytes:
    """The DER signatureAlgorithm (an AlgorithmIdentifier) of a DER certificate: the
    element after the TBS in the outer SEQUENCE."""
    body, _ = _element(certificate_der, 0, 0x30)
    _, after_tbs = _element(certificate_der, body, 0x30)
    end = _element(certificate_der, after_tbs, 0x30)[1]
    return certificate_der[after_tbs:end]


def _element(der: bytes, at: int, tag: int) -> tuple[int, int]:
    """The element with `tag` at `at`: (where its content starts, where it ends)."""
    if at + 2 > len(der) or der[at] != tag:
        raise ExternalSignError("Not the DER certificate structure expected.")
    first = der[at + 1]
    if first < 0x80:
        start, length = at + 2, first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or at + 2 + count > len(der):
            raise ExternalSignError("Not the DER certificate structure expected.")
        start = at + 2 + count
        length = int.from_bytes(der[at + 2:start], "big")
    if start + length > len(der):
        raise ExternalSignError("Not the DER certificate structure expected.")
    return start, start + length


def _tlv(tag: int, content: bytes) -> bytes:
    """A DER element: tag, definite length, content."""
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + content
