"""The key attestation format: the deployment's attestation certificates and the signed
statements about a key (docs/hsm.md, "Key attestation").

Two EC P-384 keys held in the HSM sign everything here: the attestation root, whose
self-signed certificate is published (`okv attestation root`), and the attestation
signing key, whose certificate the root issues. A statement is a JWS in compact form,
ES384, signed by the signing key, with the SHA-256 thumbprint of the signing
certificate in its header (`x5t#S256`). The keys never leave the HSM: each signature
here is asked of a `DigestSigner` (crypto/external_sign.py).

The format is this service's own. Azure's attestation blobs are those of its HSM
vendor's firmware, which a PKCS#11 token does not produce.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from openkeyvault.crypto.encoding import b64url_encode
from openkeyvault.crypto.external_sign import DigestSigner, sign_certificate

FORMAT_VERSION = "1.0"
JWS_ALG = "ES384"
JWS_TYPE = "okv-key-attestation+jws"
ORGANIZATION = "OpenKeyVault"
ROOT_VALIDITY_YEARS = 20
SIGNING_VALIDITY_YEARS = 10
BACKDATE = dt.timedelta(minutes=5)  # clocks of verifiers a little behind
_UNREADABLE = "The stored attestation certificates cannot be read."


def _years_after(start: dt.datetime, years: int) -> dt.datetime:
    try:
        return start.replace(year=start.year + years)
    except ValueError:  # 29 February
        return start.replace(year=start.year + years, day=28)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)])


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def root_certificate(public: ec.EllipticCurvePublicKey, common_name: str, now: dt.datetime,
                     sign: DigestSigner) -> x509.Certificate:
    """The attestation root's self-signed certificate (CA, path length 0), `sign` being
    the root key's own signer."""
    start = now.astimezone(dt.UTC).replace(microsecond=0)
    name = _name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - BACKDATE)
        .not_valid_after(_years_after(start, ROOT_VALIDITY_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return sign_certificate(builder, sign)


def signing_certificate(public: ec.EllipticCurvePublicKey, common_name: str,
                        root: x509.Certificate, now: dt.datetime,
                        root_sign: DigestSigner) -> x509.Certificate:
    """The attestation signing key's certificate (not a CA, digitalSignature only),
    issued by `root` and signed by the root key (`root_sign`)."""
    start = now.astimezone(dt.UTC).replace(microsecond=0)
    end = min(_years_after(start, SIGNING_VALIDITY_YEARS), root.not_valid_after_utc)
    root_public = root.public_key()
    assert isinstance(root_public, ec.EllipticCurvePublicKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(root.subject).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - BACKDATE)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_public),
                       critical=False)
    )
    return sign_certificate(builder, root_sign)


def thumbprint(certificate: x509.Certificate) -> str:
    """`x5t#S256`: base64url of the SHA-256 of the certificate's DER."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    return b64url_encode(hashlib.sha256(der).digest())


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def compact_jws(claims: dict[str, Any], signing: x509.Certificate,
                sign: DigestSigner, root: x509.Certificate | None = None) -> str:
    """`claims` as a compact JWS (ES384) signed by the signing key (`sign`), naming
    `signing`, its certificate; with `root`, the header carries the chain (`x5c`: the
    signing certificate's DER, then the root's, standard base64)."""
    header: dict[str, Any] = {"alg": JWS_ALG, "typ": JWS_TYPE,
                              "x5t#S256": thumbprint(signing)}
    if root is not None:
        header["x5c"] = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                         for c in (signing, root)]
    signing_input = f"{b64url_encode(_json(header))}.{b64url_encode(_json(claims))}"
    signature = sign(hashlib.sha384(signing_input.encode("ascii")).digest())
    return f"{signing_input}.{b64url_encode(signature)}"


def chain_pem(signing: x509.Certificate, root: x509.Certificate) -> bytes:
    """The signing certificate's PEM followed by the root's."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (signing, root))


def private_claims(kid: str, kty: str, key_ops: list[str], public: dict[str, Any],
                   facts: dict[str, Any], iat: int) -> dict[str, Any]:
    """The statement about the private key: what the keystore reports of its object
    (`facts`: keystore, token, attributes) and what the API shows of the key."""
    attributes = dict(facts["attributes"])
    return {
        "version": FORMAT_VERSION, "object": "private", "kid": kid, "kty": kty,
        "key_ops": list(key_ops), "public": dict(public), "keystore": facts["keystore"],
        "token": dict(facts["token"]), "attributes": attributes,
        "generated_in_hsm": bool(attributes["local"]), "iat": iat,
    }


def public_claims(kid: str, kty: str, public: dict[str, Any], facts: dict[str, Any],
                  iat: int) -> dict[str, Any]:
    """The statement about the public key: the token's public object for `kid`."""
    return {
        "version": FORMAT_VERSION, "object": "public", "kid": kid, "kty": kty,
        "public": dict(public), "keystore": facts["keystore"],
        "token": dict(facts["token"]), "iat": iat,
    }


@dataclass(frozen=True)
class Chain:
    """A keystore's attestation keys (their handles) and certificates."""

    root_id: str
    signing_id: str
    root: x509.Certificate
    signing: x509.Certificate

    def to_json(self) -> str:
        pem = serialization.Encoding.PEM
        return json.dumps({
            "v": 1,
            "root": {"id": self.root_id, "certificate": self.root.public_bytes(pem).decode()},
            "signing": {"id": self.signing_id,
                        "certificate": self.signing.public_bytes(pem).decode()},
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, stored: str) -> Chain:
        try:
            doc = json.loads(stored)
            return cls(str(doc["root"]["id"]), str(doc["signing"]["id"]),
                       x509.load_pem_x509_certificate(doc["root"]["certificate"].encode()),
                       x509.load_pem_x509_certificate(
                           doc["signing"]["certificate"].encode()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError(_UNREADABLE) from None


def root_pem(stored: str) -> bytes:
    """The attestation root's PEM from a stored value (`okv attestation root`)."""
    return Chain.from_json(stored).root.public_bytes(serialization.Encoding.PEM)
