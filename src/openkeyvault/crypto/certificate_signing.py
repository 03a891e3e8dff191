"""Certificates and requests of the Certificates API whose private key is held elsewhere
(an HSM): built as crypto/certificates.py builds them for a software key, then signed
through crypto/external_sign.py by a `Signer` that gets the algorithm and the digest,
never the key.

The signature algorithm is the one a software key of the same type signs with
(`certificates.signature_hash`): RS256 for RSA; ES256, ES256K, ES384 and ES512 for the
curves P-256, P-256K, P-384 and P-521. What the request asks for that cannot be built is
`CertificateInputError`, as for software keys; a signature that does not verify with the
key (a fault of the signer, not of the request) is `external_sign.ExternalSignError`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from openkeyvault.crypto import external_sign
from openkeyvault.crypto.certificates import (
    CertificateInputError,
    X509Request,
    certificate_builder,
    csr_builder,
)
from openkeyvault.crypto.jwk import PublicKey, curve_name

# (JWS algorithm, digest) → the signature as JWS has it (r||s for ECDSA).
Signer = Callable[[str, bytes], bytes]

EC_ALGORITHMS = {"P-256": "ES256", "P-256K": "ES256K", "P-384": "ES384", "P-521": "ES512"}


def signature_algorithm(public_key: PublicKey) -> str:
    """The JWS name of the algorithm a certificate of this key is signed with."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RS256"
    try:
        return EC_ALGORITHMS[curve_name(public_key)]
    except KeyError:
        raise CertificateInputError("The key's elliptic curve is not supported.") from None


def build_csr(req: X509Request, public_key: PublicKey, sign: Signer
              ) -> x509.CertificateSigningRequest:
    """The PKCS#10 request of `req` for `public_key`, signed by `sign` (its private key)."""
    alg = signature_algorithm(public_key)
    return external_sign.sign_csr(csr_builder(req), public_key,
                                  lambda digest: sign(alg, digest), alg)


def build_self_signed(req: X509Request, public_key: PublicKey, sign: Signer,
                      now: dt.datetime) -> x509.Certificate:
    """The self-signed certificate of `req` for `public_key`, signed by `sign` (its private
    key) and checked with `public_key` before it is returned."""
    alg = signature_algorithm(public_key)
    return external_sign.sign_certificate(
        certificate_builder(req, public_key, None, now), lambda digest: sign(alg, digest),
        alg, verify_with=public_key)
