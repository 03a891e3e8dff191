"""Checking a key attestation offline (`okv attestation verify`): the KeyBundle the
attestation endpoint returned, with no server.

What holds when `verify` returns: the attestation root is self-signed, a CA, valid now
(and the one given, if one is); the signing certificate is issued by it, not a CA, for
digital signatures, valid now; both statements are JWS signed by the signing
certificate's key and name it; they speak of the bundle's key (its kid, type and
public members). Each failure raises `AttestationInvalid` with one line saying which
check failed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from openkeyvault.crypto.attestation import FORMAT_VERSION, JWS_ALG, JWS_TYPE, thumbprint
from openkeyvault.crypto.encoding import b64url_decode
from openkeyvault.crypto.external_sign import ExternalSignError, ecdsa_der

_NOT_PUBLIC = ("kid", "kty", "key_ops")  # the JWK members that are not the public key's
_P384_HALF = 48


class AttestationInvalid(ValueError):
    """A check failed; the message names it."""


@dataclass(frozen=True)
class Facts:
    """What a valid attestation states of the key."""

    kid: str
    kty: str
    sensitive: bool
    extractable: bool
    always_sensitive: bool
    never_extractable: bool
    generated_in_hsm: bool
    token: dict[str, Any]
    root: x509.Certificate


def load_root(pem: bytes) -> x509.Certificate:
    """The trusted attestation root from its PEM (ValueError when it holds none)."""
    return x509.load_pem_x509_certificate(pem)


def verify(bundle: Any, now: dt.datetime, root: x509.Certificate | None = None) -> Facts:
    """Check the attestation in a KeyBundle (parsed JSON) against its own chain, and that
    chain against `root` when one is given."""
    key, attestation = _parts(bundle)
    signing, chain_root = _chain(attestation["certificatePemFile"], now)
    if root is not None and _der(root) != _der(chain_root):
        raise AttestationInvalid("the attestation root is not the one given (--root)")
    public = {k: v for k, v in key.items() if k not in _NOT_PUBLIC}
    private = _statement(attestation["privateKeyAttestation"], signing, "private key")
    public_stmt = _statement(attestation["publicKeyAttestation"], signing, "public key")
    for name, claims, kind in (("private key", private, "private"),
                               ("public key", public_stmt, "public")):
        if claims.get("version") != FORMAT_VERSION or claims.get("object") != kind:
            raise AttestationInvalid(f"the {name} statement is not a version "
                                     f"{FORMAT_VERSION} statement about a {kind} key")
        if claims.get("kid") != key["kid"]:
            raise AttestationInvalid(f"the {name} statement names another key id")
        if claims.get("kty") != key.get("kty") or claims.get("public") != public:
            raise AttestationInvalid(f"the {name} statement describes another public key")
    attributes = private.get("attributes")
    token = private.get("token")
    if not isinstance(attributes, dict) or not isinstance(token, dict):
        raise AttestationInvalid("the private key statement has no token attributes")
    flags: dict[str, bool] = {}
    for name in ("sensitive", "extractable", "always_sensitive", "never_extractable",
                 "local"):
        if not isinstance(attributes.get(name), bool):
            raise AttestationInvalid(f"the private key statement has no '{name}' attribute")
        flags[name] = attributes[name]
    if private.get("generated_in_hsm") is not flags["local"]:
        raise AttestationInvalid("the private key statement's generated_in_hsm differs "
                                 "from its CKA_LOCAL")
    return Facts(kid=key["kid"], kty=str(key.get("kty")), sensitive=flags["sensitive"],
                 extractable=flags["extractable"],
                 always_sensitive=flags["always_sensitive"],
                 never_extractable=flags["never_extractable"],
                 generated_in_hsm=flags["local"], token=dict(token), root=chain_root)


def _parts(bundle: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The bundle's key and its attestation, checked for shape."""
    if not isinstance(bundle, dict):
        raise AttestationInvalid("the file is not a KeyBundle (a JSON object)")
    key = bundle.get("key")
    attributes = bundle.get("attributes")
    if not isinstance(key, dict) or not isinstance(key.get("kid"), str):
        raise AttestationInvalid("the KeyBundle has no key with a kid")
    attestation = attributes.get("attestation") if isinstance(attributes, dict) else None
    if not isinstance(attestation, dict):
        raise AttestationInvalid("the KeyBundle holds no attestation (attributes.attestation)")
    for name in ("certificatePemFile", "privateKeyAttestation", "publicKeyAttestation"):
        if not isinstance(attestation.get(name), str):
            raise AttestationInvalid(f"the attestation has no {name}")
    if attestation.get("version") != FORMAT_VERSION:
        raise AttestationInvalid(f"the attestation is not of version {FORMAT_VERSION}")
    return key, attestation


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _b64url(value: str, what: str) -> bytes:
    try:
        return b64url_decode(value)
    except ValueError:
        raise AttestationInvalid(f"{what} is not base64url") from None


def _chain(pem_file: str, now: dt.datetime) -> tuple[x509.Certificate, x509.Certificate]:
    """(signing certificate, root), each checked."""
    try:
        certificates = x509.load_pem_x509_certificates(_b64url(pem_file, "certificatePemFile"))
    except ValueError:
        raise AttestationInvalid("certificatePemFile holds no readable PEM certificates") \
            from None
    if len(certificates) != 2:
        raise AttestationInvalid("certificatePemFile does not hold exactly the signing "
                                 "certificate and the root")
    signing, root = certificates
    _issued(root, root, "the attestation root is not self-signed")
    _issued(signing, root, "the signing certificate is not issued by the attestation root")
    for certificate, what, ca in ((root, "attestation root", True),
                                  (signing, "signing certificate", False)):
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise AttestationInvalid(f"the {what} is not valid now")
        try:
            constraints = certificate.extensions.get_extension_for_class(
                x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            raise AttestationInvalid(f"the {what} has no basic constraints") from None
        if constraints.ca is not ca:
            raise AttestationInvalid(f"the {what} is {'not ' if ca else ''}a CA")
    try:
        usage = signing.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise AttestationInvalid("the signing certificate has no key usage") from None
    if not usage.digital_signature:
        raise AttestationInvalid("the signing certificate is not for digital signatures")
    public = signing.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp384r1":
        raise AttestationInvalid("the signing certificate's key is not EC P-384")
    return signing, root


def _issued(certificate: x509.Certificate, issuer: x509.Certificate, failure: str) -> None:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise AttestationInvalid(failure) from None


def _statement(value: str, signing: x509.Certificate, name: str) -> dict[str, Any]:
    """The claims of a statement (base64url of a compact JWS), its signature checked."""
    try:
        compact = _b64url(value, f"the {name} attestation").decode("ascii")
    except UnicodeDecodeError:
        raise AttestationInvalid(f"the {name} attestation is not a compact JWS") from None
    parts = compact.split(".")
    if len(parts) != 3:
        raise AttestationInvalid(f"the {name} attestation is not a compact JWS")
    header = _json(_b64url(parts[0], f"the {name} JWS header"), f"the {name} JWS header")
    if header.get("alg") != JWS_ALG or header.get("typ") != JWS_TYPE:
        raise AttestationInvalid(f"the {name} JWS is not an {JWS_ALG} {JWS_TYPE}")
    if header.get("x5t#S256") != thumbprint(signing):
        raise AttestationInvalid(f"the {name} JWS names another signing certificate")
    signature = _b64url(parts[2], f"the {name} JWS signature")
    public = signing.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    try:
        if len(signature) != 2 * _P384_HALF:
            raise InvalidSignature
        public.verify(ecdsa_der(signature), f"{parts[0]}.{parts[1]}".encode("ascii"),
                      ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ExternalSignError):
        raise AttestationInvalid(f"the {name} JWS signature does not verify with the "
                                 "signing certificate") from None
    return _json(_b64url(parts[1], f"the {name} JWS payload"), f"the {name} JWS payload")


def _json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise AttestationInvalid(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise AttestationInvalid(f"{what} is not a JSON object")
    return value
