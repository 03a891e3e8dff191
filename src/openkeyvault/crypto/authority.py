"""The deployment's built-in issuing CA: a root that signs certificates whose policy names
an issuer of provider `BUILTIN_PROVIDER`.

The root is an EC P-384 key (ecdsa-with-SHA384) with a self-signed certificate valid for
`ROOT_VALIDITY_YEARS`. It is made on first use; its private key and certificate are
stored together as one value through `store(make)`, a get-or-create that the
composition root backs with a barrier-sealed `meta` row (first writer wins, so
several worker processes agree on one root). The key never leaves this object
unsealed: callers get certificates only.

This CA is not the TLS development CA (`crypto/x509.py`, `bootstrap.py`), which only
signs the dev server's HTTPS certificate.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from openkeyvault.crypto.certificates import (
    CertificateInputError,
    X509Request,
    build_certificate,
)
from openkeyvault.crypto.jwk import PublicKey

BUILTIN_PROVIDER = "OpenKeyVault"
ROOT_VALIDITY_YEARS = 20
ROOT_ORGANIZATION = "OpenKeyVault"
_CERT_MARK = b"-----BEGIN CERTIFICATE-----"


def new_root(common_name: str, now: dt.datetime) -> bytes:
    """A new root: its PKCS#8 private key PEM followed by its certificate PEM."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ROOT_ORGANIZATION),
    ])
    start = now.astimezone(dt.UTC).replace(microsecond=0)
    try:
        end = start.replace(year=start.year + ROOT_VALIDITY_YEARS)
    except ValueError:  # 29 February
        end = start.replace(year=start.year + ROOT_VALIDITY_YEARS, day=28)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA384())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def _split(material: bytes) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    at = material.index(_CERT_MARK)
    key = serialization.load_pem_private_key(material[:at], password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the issuing CA's stored key is not an EC key")
    return key, x509.load_pem_x509_certificate(material[at:])


class CertificateAuthority:
    """The issuing CA, loaded (or created) on first use and kept in memory after."""

    def __init__(self, store: Callable[[Callable[[], bytes]], bytes],
                 now: Callable[[], dt.datetime], common_name: str) -> None:
        self._store = store
        self._now = now
        self._common_name = common_name
        self._lock = threading.Lock()
        self._loaded: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None

    def _material(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        loaded = self._loaded
        if loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = _split(self._store(
                        lambda: new_root(self._common_name, self._now())))
                loaded = self._loaded
        return loaded

    def root(self) -> x509.Certificate:
        return self._material()[1]

    def root_pem(self) -> bytes:
        return self.root().public_bytes(serialization.Encoding.PEM)

    def issue(self, req: X509Request, public_key: PublicKey, now: dt.datetime
              ) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
        """A leaf for `public_key` as `req` describes it, signed by the root; with its chain
        (the root). CertificateInputError if the leaf would outlive the root."""
        key, root = self._material()
        leaf = build_certificate(req, public_key, key, root, now)
        if leaf.not_valid_after_utc > root.not_valid_after_utc:
            raise CertificateInputError(
                "The requested validity ends after the issuing CA's certificate "
                f"({root.not_valid_after_utc:%Y-%m-%d}); ask for fewer months.")
        return leaf, (root,)
