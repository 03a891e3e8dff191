"""Bring-your-own-key transfer blobs (.byok files), as Azure specifies them: JSON
{"schema_version", "header": {"kid": the key-exchange key's id with its version,
"alg": "dir", "enc": "CKM_RSA_AES_KEY_WRAP"}, "ciphertext": base64url, "generator"},
given base64-encoded as a JWK's `key_hsm` member on import. The ciphertext is
RSA-OAEP-SHA1(KEK, ephemeral AES key) followed by AES key wrap with padding of the
PKCS#8 key; the keystore unwraps it inside the HSM (keystore/pkcs11.py)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from openkeyvault.crypto.encoding import b64_either_decode
from openkeyvault.vault.errors import BadParameter

MAX_BLOB_CHARS = 64 * 1024
ENCRYPTIONS = ("CKM_RSA_AES_KEY_WRAP",)
_KID_PATH = re.compile(r"/keys/([^/]+)/([^/]+)/?")


@dataclass(frozen=True)
class TransferBlob:
    kid: str
    enc: str
    ciphertext: bytes


def _b64(text: str, what: str) -> bytes:
    try:
        return b64_either_decode(text)
    except ValueError:
        raise BadParameter(f"{what} is not base64.") from None


def parse(key_hsm: str) -> TransferBlob:
    """The transfer blob in a `key_hsm` member; 400 for anything else."""
    if not isinstance(key_hsm, str) or not key_hsm or len(key_hsm) > MAX_BLOB_CHARS:
        raise BadParameter(f"key_hsm must be a base64 transfer blob of at most "
                           f"{MAX_BLOB_CHARS} characters.")
    raw = _b64(key_hsm, "key_hsm")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise BadParameter("key_hsm does not hold a transfer blob (a .byok file's JSON).") \
            from None
    header = doc.get("header") if isinstance(doc, dict) else None
    if not isinstance(header, dict) or not isinstance(doc.get("ciphertext"), str):
        raise BadParameter("The transfer blob needs a header and a ciphertext.")
    kid, alg, enc = header.get("kid"), header.get("alg"), header.get("enc")
    if not isinstance(kid, str) or not kid:
        raise BadParameter("The transfer blob's header must name its key-exchange key (kid).")
    if alg != "dir":
        raise BadParameter(f"The transfer blob's header alg must be 'dir', not "
                           f"'{str(alg)[:32]}'.")
    if enc not in ENCRYPTIONS:
        raise BadParameter(f"The transfer blob's header enc must be one of "
                           f"{', '.join(ENCRYPTIONS)}, not '{str(enc)[:32]}'.")
    ciphertext = _b64(doc["ciphertext"], "The transfer blob's ciphertext")
    if not ciphertext:
        raise BadParameter("The transfer blob's ciphertext is empty.")
    return TransferBlob(kid, enc, ciphertext)


def kek_name(kid: str, vault: str) -> tuple[str, str]:
    """(name, version) of a key-exchange key id; refused when it names no version or a
    key of another vault (by its host, where the host names a vault)."""
    parts = urlsplit(kid)
    found = _KID_PATH.fullmatch(parts.path or "")
    if found is None:
        raise BadParameter("The key-exchange key id (kid) must be a key identifier with its "
                           "version: https://VAULT/keys/NAME/VERSION.")
    host = (parts.hostname or "").lower()
    if (".vault." in host or ".managedhsm." in host) and host.split(".")[0] != vault.lower():
        raise BadParameter("The key-exchange key must be a key of the vault the key is "
                           "imported into.")
    return found.group(1), found.group(2)
