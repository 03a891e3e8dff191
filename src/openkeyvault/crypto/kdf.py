"""Slow hashing for client secrets (scrypt), checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os

SALT_BYTES = 16
_N, _R, _P = 2**14, 8, 1


def hash_secret(secret: str, salt: bytes | None = None) -> tuple[bytes, bytes]:
    """(salt, hash) of a client secret."""
    salt = salt or os.urandom(SALT_BYTES)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return salt, digest


def secret_matches(secret: str, salt: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret, salt)[1], expected)
