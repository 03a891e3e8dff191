"""AES-256-GCM sealing: the only cipher the barrier uses.

A sealed value is `nonce (12 bytes) || ciphertext || tag (16 bytes)`. The
associated data binds the ciphertext to where it belongs, so a value copied
to another row does not open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class SealError(Exception):
    """A sealed value failed authentication (wrong key, wrong context or tampered)."""


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return Sealer(key).seal(plaintext, aad)


def open_sealed(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    return Sealer(key).open(sealed, aad)


class Sealer:
    """seal/open with one key, keeping the cipher object (building it costs as much as a
    small seal)."""

    __slots__ = ("_cipher",)

    def __init__(self, key: bytes) -> None:
        self._cipher = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._cipher.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        if len(sealed) < NONCE_BYTES + 16:
            raise SealError("sealed value too short")
        try:
            return self._cipher.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
        except InvalidTag:
            raise SealError("sealed value failed authentication") from None
