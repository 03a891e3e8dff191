"""Verifiers for client secrets.

Client secrets are made by the server with 240 random bits, so a slow password hash buys
nothing against guessing and costs a CPU-second per few dozen requests: new secrets are
verified with one HMAC-SHA256 under a deployment key (`keyed_hash`). The scrypt functions
remain for secrets stored before, until each is used once and re-stored as a keyed hash.
All comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import os

SALT_BYTES = 16
KEYED_HASH_KEY_BYTES = 32
_N, _R, _P = 2**14, 8, 1


def keyed_hash(key: bytes, context: bytes, secret: str) -> bytes:
    """HMAC-SHA256 of a high-entropy secret, bound to `context` (which holds no NUL)."""
    return hmac.new(key, context + b"\x00" + secret.encode(), hashlib.sha256).digest()


def digests_match(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def hash_secret(secret: str, salt: bytes | None = None) -> tuple[bytes, bytes]:
    """(salt, scrypt hash) of a client secret (the format stored before keyed hashes)."""
    salt = salt or os.urandom(SALT_BYTES)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return salt, digest


def secret_matches(secret: str, salt: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret, salt)[1], expected)
