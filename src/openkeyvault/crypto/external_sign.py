"""X.509 certificates and PKCS#10 requests signed by a key this process cannot hold: one in
an HSM, which signs a digest and returns the signature.

cryptography's builders sign only with a private key object. So the certificate (or the
request) is built and signed once with a throwaway key of the same family, with the same
signature algorithm: its to-be-signed bytes and its signature AlgorithmIdentifier are then
the ones the real key's signature needs. A request carries its key's
SubjectPublicKeyInfo inside what is signed, so the throwaway's is replaced by the real
key's first. The real key signs the digest of the to-be-signed bytes, and the DER is
assembled again: SEQUENCE { toBeSigned, signatureAlgorithm, signatureValue BIT STRING },
the same outer shape for a Certificate and a CertificationRequest.

Algorithms are named as in JWS and read from the algorithm table (crypto/algorithms.py):
RS256/384/512 (PKCS#1 v1.5), PS256/384/512 (PSS, MGF1 with the same hash, a salt as long as
the digest: what the keystores sign), ES256, ES256K, ES384 and ES512 (ECDSA; the
AlgorithmIdentifier names only the hash, so one throwaway curve serves every curve).
The throwaway key's signature is dropped. ECDSA signers return r||s as PKCS#11's
CKM_ECDSA and JWS do; X.509 wants the DER `Ecdsa-Sig-Value`, so `ecdsa_der` converts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from openkeyvault.crypto import algorithms
from openkeyvault.crypto.jwk import PrivateKey, PublicKey

# The digest of the to-be-signed bytes (with the algorithm's hash) → the signature as JWS
# has it (r||s for ECDSA).
DigestSigner = Callable[[bytes], bytes]
DEFAULT_ALGORITHM = "ES384"  # the attestation keys' (EC P-384)
_DER = serialization.Encoding.DER
_NOT_DER = "Not the DER structure expected."


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


def digest(algorithm: str, data: bytes) -> bytes:
    """`data` hashed as signature algorithm `algorithm` hashes it."""
    h = hashes.Hash(_spec(algorithm).hash())
    h.update(data)
    return h.finalize()


def sign_certificate(builder: x509.CertificateBuilder, sign: DigestSigner,
                     algorithm: str = DEFAULT_ALGORITHM, *,
                     verify_with: PublicKey | None = None) -> x509.Certificate:
    """The certificate `builder` describes, signed with `algorithm` by `sign` (a key held
    elsewhere). The builder must be complete (subject, issuer, key, serial, validity);
    `sign` gets the digest of the TBS. `verify_with`: the signing key's public key, to
    check the signature before the certificate is returned (ExternalSignError if it
    does not verify)."""
    spec = _spec(algorithm)
    placeholder = _placeholder_signed(builder, spec)
    assert isinstance(placeholder, x509.Certificate)
    tbs = placeholder.tbs_certificate_bytes
    algorithm_id = signature_algorithm(placeholder.public_bytes(_DER))
    signature = _signature(sign, algorithm, tbs, verify_with)
    der = _tlv(0x30, tbs + algorithm_id + _tlv(0x03, b"\x00" + signature))
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise ExternalSignError("The assembled certificate could not be read.") from None


def sign_csr(builder: x509.CertificateSigningRequestBuilder, public_key: PublicKey,
             sign: DigestSigner, algorithm: str) -> x509.CertificateSigningRequest:
    """The PKCS#10 request `builder` describes for `public_key`, signed with `algorithm` by
    `sign` (that key's private half, held elsewhere). The request's own signature is
    checked: a signer that is not that key's gives ExternalSignError."""
    spec = _spec(algorithm)
    placeholder = _placeholder_signed(builder, spec)
    assert isinstance(placeholder, x509.CertificateSigningRequest)
    info = _with_public_key(placeholder.tbs_certrequest_bytes, public_key.public_bytes(
        _DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    algorithm_id = signature_algorithm(placeholder.public_bytes(_DER))
    signature = _signature(sign, algorithm, info, None)
    der = _tlv(0x30, info + algorithm_id + _tlv(0x03, b"\x00" + signature))
    try:
        csr = x509.load_der_x509_csr(der)
        valid = csr.is_signature_valid
    except ValueError:
        raise ExternalSignError("The assembled certificate request could not be read.") \
            from None
    if not valid:
        raise ExternalSignError("The signature of the certificate request does not verify "
                                "with its public key.")
    return csr


def signature_algorithm(der: bytes) -> bytes:
    """The DER signatureAlgorithm (an AlgorithmIdentifier) of a DER certificate or
    certificate request: the element after the to-be-signed part in the outer SEQUENCE."""
    body, _ = _element(der, 0, 0x30)
    _, after_tbs = _element(der, body, 0x30)
    end = _element(der, after_tbs, 0x30)[1]
    return der[after_tbs:end]


# --- Signing -------------------------------------------------------------------------


def _spec(algorithm: str) -> algorithms.SignAlg:
    spec = algorithms.SIGN.get(algorithm)
    if spec is None:
        raise ExternalSignError(f"Unknown signature algorithm '{algorithm[:16]}'.")
    return spec


@functools.cache
def _rsa_placeholder() -> rsa.RSAPrivateKey:
    """One throwaway RSA key per process (its signatures are all dropped; an RSA key
    takes a while to make)."""
    return rsa.generate_private_key(65537, 2048)


def _placeholder_key(spec: algorithms.SignAlg) -> PrivateKey:
    if spec.family == "RSA":
        return _rsa_placeholder()
    return ec.generate_private_key(ec.SECP256R1())


def _placeholder_signed(
        builder: x509.CertificateBuilder | x509.CertificateSigningRequestBuilder,
        spec: algorithms.SignAlg) -> x509.Certificate | x509.CertificateSigningRequest:
    """`builder` signed by a throwaway key with the algorithm's hash (and PSS padding)."""
    pss = spec.rsa_padding if spec.pss else None
    hash_ = spec.hash()
    if not isinstance(hash_, hashes.SHA256 | hashes.SHA384 | hashes.SHA512):
        raise ExternalSignError("Certificates are signed with SHA-256, SHA-384 or SHA-512.")
    try:
        if isinstance(pss, padding.PSS):
            return builder.sign(_placeholder_key(spec), hash_, rsa_padding=pss)
        return builder.sign(_placeholder_key(spec), hash_)
    except (ValueError, TypeError) as exc:
        raise ExternalSignError(f"The certificate could not be built: {exc}") from None


def _signature(sign: DigestSigner, algorithm: str, tbs: bytes,
               verify_with: PublicKey | None) -> bytes:
    """The signatureValue's bits: the signer's answer over the digest of `tbs` (DER
    Ecdsa-Sig-Value for ECDSA), checked with `verify_with` when given."""
    dg = digest(algorithm, tbs)
    raw = sign(dg)
    if not raw:
        raise ExternalSignError("The signer returned no signature.")
    if verify_with is not None:
        try:
            ok = algorithms.verify(verify_with, algorithm, dg, raw)
        except algorithms.AlgorithmError as exc:
            raise ExternalSignError(str(exc)) from None
        if not ok:
            raise ExternalSignError("The external signature does not verify with the "
                                    "signing key's public key.")
    return ecdsa_der(raw) if _spec(algorithm).family == "EC" else raw


# --- DER -----------------------------------------------------------------------------


def _with_public_key(info: bytes, spki: bytes) -> bytes:
    """A CertificationRequestInfo ::= SEQUENCE { version, subject, subjectPKInfo,
    attributes [0] } with `spki` in place of its subjectPKInfo."""
    start, end = _element(info, 0, 0x30)
    parts = _children(info, start, end)
    if len(parts) != 4 or info[parts[2][0]] != 0x30 or end != len(info):
        raise ExternalSignError(_NOT_DER)
    at, after = parts[2]
    return _tlv(0x30, info[start:at] + spki + info[after:end])


def _header(der: bytes, at: int, limit: int) -> tuple[int, int, int]:
    """The element at `at` (ending by `limit`): (its tag, where its content starts, where
    it ends)."""
    if at + 2 > limit:
        raise ExternalSignError(_NOT_DER)
    first = der[at + 1]
    if first < 0x80:
        start, length = at + 2, first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or at + 2 + count > limit:
            raise ExternalSignError(_NOT_DER)
        start = at + 2 + count
        length = int.from_bytes(der[at + 2:start], "big")
    if start + length > limit:
        raise ExternalSignError(_NOT_DER)
    return der[at], start, start + length


def _element(der: bytes, at: int, tag: int) -> tuple[int, int]:
    """The element with `tag` at `at`: (where its content starts, where it ends)."""
    found, start, end = _header(der, at, len(der))
    if found != tag:
        raise ExternalSignError(_NOT_DER)
    return start, end


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """(where each element starts, where it ends) of the elements from `start` to `end`."""
    out = []
    at = start
    while at < end:
        _, _, after = _header(der, at, end)
        out.append((at, after))
        at = after
    return out


def _tlv(tag: int, content: bytes) -> bytes:
    """A DER element: tag, definite length, content."""
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + content
