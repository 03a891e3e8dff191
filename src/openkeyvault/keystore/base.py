"""The KeyStore protocol: every backend (software now, PKCS#11 next) implements it.

A backend turns key specs into `StoredKey`s: the public JWK members, plus an
opaque `blob` the vault layer seals through the barrier and stores (for the
software backend the PKCS#8 private key; for an HSM a handle). Operations take
a `KeyRef`: a stable cache id for the key version and a way to fetch the blob
only when the backend has not already loaded it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class KeySpec:
    family: str  # "RSA" or "EC"
    size: int | None = None  # RSA modulus bits
    public_exponent: int = 65537
    curve: str | None = None  # EC curve, Key Vault spelling


@dataclass(frozen=True)
class StoredKey:
    public: dict[str, Any]  # n/e or crv/x/y, base64url
    blob: bytes  # opaque to everyone but the backend
    size: int  # RSA modulus bits or EC field bits


@dataclass(frozen=True)
class KeyRef:
    cache_id: str
    family: str
    blob: Callable[[], bytes]


class KeyStoreError(ValueError):
    """Bad key input for this backend (message safe to show)."""


class KeyStore(Protocol):
    name: str

    def generate(self, spec: KeySpec) -> StoredKey: ...

    def import_jwk(self, jwk: dict[str, Any], family: str) -> StoredKey: ...

    def sign(self, ref: KeyRef, alg: str, digest: bytes) -> bytes: ...

    def verify(self, ref: KeyRef, alg: str, digest: bytes, signature: bytes) -> bool: ...

    def encrypt(self, ref: KeyRef, alg: str, plaintext: bytes) -> bytes: ...

    def decrypt(self, ref: KeyRef, alg: str, ciphertext: bytes) -> bytes: ...

    def forget(self, cache_id_prefix: str) -> None: ...
