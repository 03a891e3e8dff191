"""A bring-your-own-key transfer blob (.byok file) made from a private key and a
key-exchange key's public key, as an on-premises HSM vendor's tool makes it (Azure's BYOK
specification): a fresh AES-256 key encrypted to the KEK with RSA-OAEP (SHA-1), then the
PKCS#8 private key wrapped with it by AES key wrap with padding (RFC 5649); the JSON
names the KEK by its key id. For `okv byok`, for people without a vendor tool; the
service reads such files in vault/byok.py and unwraps them in the HSM."""

from __future__ import annotations

import json
import os
from typing import Any

from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from openkeyvault.crypto.encoding import b64_either_decode, b64url_encode
from openkeyvault.crypto.jwk import CURVES, RSA_SIZES, PrivateKey, curve_name

ENC = "CKM_RSA_AES_KEY_WRAP"
# The key wrappings of a transfer (RSA-OAEP of a fresh AES-256 key, then AES key wrap with
# padding of the PKCS#8 key): `enc` → the OAEP hash (and MGF1 hash).
WRAPPINGS: dict[str, type[hashes.HashAlgorithm]] = {
    ENC: hashes.SHA1, "RSA_AES_KEY_WRAP_256": hashes.SHA256,
    "RSA_AES_KEY_WRAP_384": hashes.SHA384,
}


class TransferError(ValueError):
    """The key or the KEK cannot make a transfer blob (message safe to show)."""


def load_private_key(data: bytes, password: bytes | None = None) -> PrivateKey:
    """An RSA or EC private key from PEM or DER (PKCS#8, PKCS#1 or SEC 1)."""
    loaders = (serialization.load_pem_private_key, serialization.load_der_private_key)
    for load in loaders:
        try:
            key = load(data, password)
        except (ValueError, TypeError):
            continue
        if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            return key
        raise TransferError("the key must be an RSA or EC private key")
    raise TransferError("the key file holds no private key readable as PEM or DER (an "
                        "encrypted one needs its password)")


def load_kek(data: bytes) -> tuple[rsa.RSAPublicKey, str | None]:
    """The KEK's RSA public key, and its key id when the file says it: a PEM public key
    (`az keyvault key download`), or JSON holding a JWK (`az keyvault key show`, or the
    `key` of a Key Vault key bundle)."""
    text = data.strip()
    if text.startswith(b"{"):
        try:
            doc: Any = json.loads(text)
        except ValueError:
            raise TransferError("the KEK file is not valid JSON") from None
        jwk = doc.get("key", doc) if isinstance(doc, dict) else None
        if not isinstance(jwk, dict) or not str(jwk.get("kty", "")).startswith("RSA"):
            raise TransferError("the KEK's JWK must be an RSA key (kty RSA-HSM)")
        try:
            n, e = (int.from_bytes(b64_either_decode(jwk[m]), "big") for m in ("n", "e"))
        except (KeyError, TypeError, ValueError):
            raise TransferError("the KEK's JWK needs its n and e") from None
        kid = jwk.get("kid")
        return rsa.RSAPublicNumbers(e, n).public_key(), kid if isinstance(kid, str) else None
    try:
        key = serialization.load_pem_public_key(text)
    except ValueError:
        try:
            key = serialization.load_der_public_key(text)
        except ValueError:
            raise TransferError("the KEK file holds neither a public key nor a JWK") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise TransferError("the KEK must be an RSA public key")
    return key, None


def transfer_blob(kek: rsa.RSAPublicKey, kid: str, key: PrivateKey,
                  generator: str) -> bytes:
    """The .byok file's bytes (JSON) carrying `key` wrapped to `kek`."""
    if kek.key_size not in RSA_SIZES:
        raise TransferError(f"the KEK must be RSA {', '.join(map(str, RSA_SIZES))}")
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size not in RSA_SIZES:
            raise TransferError(f"an RSA key must be {', '.join(map(str, RSA_SIZES))} bits")
    else:
        try:
            curve_name(key)
        except KeyError:
            raise TransferError(f"an EC key must be on {', '.join(CURVES)}") from None
    aes = os.urandom(32)
    pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    ciphertext = encrypt_transfer_key(kek, ENC, aes)
    ciphertext += keywrap.aes_key_wrap_with_padding(aes, pkcs8)
    return json.dumps({
        "schema_version": "1.0.0",
        "header": {"kid": kid, "alg": "dir", "enc": ENC},
        "ciphertext": b64url_encode(ciphertext),
        "generator": generator,
    }, indent=1).encode() + b"\n"


def encrypt_transfer_key(kek: rsa.RSAPublicKey, enc: str, aes: bytes) -> bytes:
    """The first part of a transfer's ciphertext: the AES key encrypted to `kek` with the
    RSA-OAEP of `enc` (one of WRAPPINGS; SHA-1 is what CKM_RSA_AES_KEY_WRAP specifies)."""
    if enc not in WRAPPINGS:
        raise TransferError(f"unsupported key wrapping '{enc[:32]}'; use one of "
                            f"{', '.join(WRAPPINGS)}")
    h = WRAPPINGS[enc]()
    return kek.encrypt(aes, padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None))


def key_type(key: PrivateKey) -> tuple[str, str | None]:
    """The kty (and crv) to import the key as."""
    if isinstance(key, rsa.RSAPrivateKey):
        return "RSA-HSM", None
    return "EC-HSM", curve_name(key)
