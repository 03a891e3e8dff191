"""Activating a managed HSM pool in tests: wrapping certificates made with `cryptography`
and the security domain download (POST /securitydomain/download) that activates a pool.

`activate(url)` downloads through KeyClient's pipeline (its challenge authentication, the
dev identity's token); `download_body(...)` is the request body for other clients.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
from typing import Any

from azure.core.rest import HttpRequest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

API_VERSION = "7.5"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def certificate(key: Any, name: str = "security domain") -> x509.Certificate:
    """A self-signed certificate for `key`'s public key (any key type `cryptography` signs
    with)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))


@functools.cache
def wrapping_keys(count: int = 3, bits: int = 2048
                  ) -> tuple[tuple[rsa.RSAPrivateKey, x509.Certificate], ...]:
    """`count` RSA key pairs with their certificates (made once per process)."""
    out = []
    for i in range(count):
        key = rsa.generate_private_key(65537, bits)
        out.append((key, certificate(key, f"security domain {i}")))
    return tuple(out)


def wrapping_jwk(cert: x509.Certificate) -> dict[str, Any]:
    """A SecurityDomainJsonWebKey as `az keyvault security-domain download` makes it."""
    der = cert.public_bytes(serialization.Encoding.DER)
    jwk: dict[str, Any] = {
        "x5c": [base64.b64encode(der).decode()],
        "x5t": b64u(hashlib.sha1(der).digest()),  # noqa: S324 (the JWK's x5t is SHA-1)
        "x5t#S256": b64u(hashlib.sha256(der).digest()),
        "key_ops": ["verify", "encrypt", "wrapKey"], "alg": "RSA-OAEP-256"}
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        jwk.update(kty="RSA", n=b64u(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8,
                                                        "big")),
                   e=b64u(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")))
    else:
        jwk["kty"] = "EC"
    return jwk


def download_body(certs: list[x509.Certificate] | None = None, required: int = 2
                  ) -> dict[str, Any]:
    certs = certs if certs is not None else [c for _, c in wrapping_keys()]
    return {"certificates": [wrapping_jwk(c) for c in certs], "required": required}


def activate(url: str, credential: Any = None) -> dict[str, Any]:
    """Download the pool's security domain (three test certificates, quorum 2), which
    activates it; returns the 202 response's body (`{"value": file}`)."""
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.keys import KeyClient

    kc = KeyClient(url, credential or ManagedIdentityCredential())
    r = kc.send_request(HttpRequest("POST", "/securitydomain/download",
                                    params={"api-version": API_VERSION},
                                    json=download_body()))
    assert r.status_code == 202, r.text()
    body: dict[str, Any] = r.json()
    return body
