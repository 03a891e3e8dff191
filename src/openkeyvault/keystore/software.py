"""The software KeyStore: keys generated and used by pyca/cryptography in this process.

The blob is the PKCS#8 DER private key (sealed by the barrier before it is
stored). Loaded key objects are kept in a bounded in-memory cache keyed by
key version, so the hot path is one private-key operation. Its keys are the
software-protected types (RSA, EC); it neither imports wrapped keys nor exports, and has
no symmetric (oct) keys: those are held in an HSM only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openkeyvault.crypto import algorithms
from openkeyvault.crypto.jwk import (
    CURVES,
    RSA_SIZES,
    JwkError,
    PrivateKey,
    private_from_jwk,
    public_jwk,
)
from openkeyvault.keystore.base import (
    AttestationSigner,
    Capabilities,
    KeyRef,
    KeySpec,
    KeyStoreError,
    PlainKey,
    StoredKey,
    SymmetricResult,
    WrappedKey,
)

CACHE_SIZE = 4096
NOT_EXPORTABLE = "Keys in this keystore are not exportable."
NO_OCT = "Symmetric (oct) keys are available in an HSM only."
ATTESTATION_REFUSED = ("Key attestation is available for HSM-protected keys only; software "
                       "keys have none.")
CAPABILITIES = Capabilities(
    hardware=False, families=frozenset({"RSA", "EC"}), rsa_sizes=RSA_SIZES,
    curves=tuple(CURVES), sign=frozenset(algorithms.SIGN),
    encrypt=frozenset(algorithms.ENCRYPT), backup=True)


def _stored(key: PrivateKey) -> StoredKey:
    blob = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    return StoredKey(public_jwk(key), blob, key.key_size if isinstance(key, rsa.RSAPrivateKey)
                     else key.curve.key_size)


class SoftwareKeyStore:
    name = "software"

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._cache: OrderedDict[str, PrivateKey] = OrderedDict()
        self._size = cache_size
        self._lock = threading.Lock()

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def generate(self, spec: KeySpec) -> StoredKey:
        if spec.family == "oct":
            raise KeyStoreError(NO_OCT)
        if spec.exportable:
            raise KeyStoreError(NOT_EXPORTABLE)
        if spec.family == "RSA":
            if spec.size not in RSA_SIZES:
                raise KeyStoreError(
                    f"RSA key size must be one of {', '.join(map(str, RSA_SIZES))}."
                )
            if spec.public_exponent not in (3, 65537):
                raise KeyStoreError("The RSA public exponent must be 3 or 65537.")
            return _stored(rsa.generate_private_key(spec.public_exponent, spec.size))
        if spec.curve not in CURVES:
            raise KeyStoreError(f"Unsupported curve; use one of {', '.join(CURVES)}.")
        return _stored(ec.generate_private_key(CURVES[spec.curve][0]()))

    def import_key(self, material: PlainKey | WrappedKey) -> StoredKey:
        if isinstance(material, WrappedKey):
            raise KeyStoreError("Wrapped key material can only be imported into an HSM.")
        if material.exportable:
            raise KeyStoreError(NOT_EXPORTABLE)
        try:
            return _stored(private_from_jwk(material.jwk, material.family))
        except JwkError as exc:
            raise KeyStoreError(str(exc)) from None

    def destroy(self, ref: KeyRef) -> None:
        """Nothing is held outside storage: dropping the cached object is all."""
        self.forget(ref.cache_id)

    def held(self) -> frozenset[str]:
        return frozenset()

    def destroy_held(self, handle: str) -> None:
        raise KeyStoreError("The software keystore holds no key outside storage.")

    def backup_blob(self, ref: KeyRef) -> bytes:
        return ref.blob()

    def restore_key(self, family: str, blob: bytes, public: dict[str, Any]) -> StoredKey:
        try:
            key = serialization.load_der_private_key(blob, None)
        except (ValueError, TypeError):
            key = None
        wanted = rsa.RSAPrivateKey if family == "RSA" else ec.EllipticCurvePrivateKey
        if not isinstance(key, wanted) or public_jwk(key) != \
                {k: v for k, v in public.items() if k != "kty"}:
            raise KeyStoreError("The backup holds key material that does not match its key.")
        return _stored(key)

    def export(self, ref: KeyRef, wrapping: dict[str, Any], alg: str) -> bytes:
        raise KeyStoreError(NOT_EXPORTABLE)

    def attest(self, ref: KeyRef) -> dict[str, Any]:
        raise KeyStoreError(ATTESTATION_REFUSED)

    def attestation_signer(self) -> AttestationSigner:
        raise KeyStoreError(ATTESTATION_REFUSED)

    def _key(self, ref: KeyRef) -> PrivateKey:
        key = self._cache.get(ref.cache_id)
        if key is not None:
            return key
        loaded = serialization.load_der_private_key(
            ref.blob(), password=None, unsafe_skip_rsa_key_validation=True
        )
        if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise KeyStoreError("Stored key material has an unexpected type.")
        with self._lock:
            self._cache[ref.cache_id] = loaded
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return loaded

    def sign(self, ref: KeyRef, alg: str, digest: bytes) -> bytes:
        return algorithms.sign(self._key(ref), alg, digest)

    def verify(self, ref: KeyRef, alg: str, digest: bytes, signature: bytes) -> bool:
        return algorithms.verify(self._key(ref), alg, digest, signature)

    def encrypt(self, ref: KeyRef, alg: str, plaintext: bytes) -> bytes:
        return algorithms.encrypt(self._key(ref), alg, plaintext)

    def decrypt(self, ref: KeyRef, alg: str, ciphertext: bytes) -> bytes:
        return algorithms.decrypt(self._key(ref), alg, ciphertext)

    def encrypt_symmetric(self, ref: KeyRef, alg: str, plaintext: bytes,
                          iv: bytes | None = None,
                          aad: bytes | None = None) -> SymmetricResult:
        raise KeyStoreError(NO_OCT)

    def decrypt_symmetric(self, ref: KeyRef, alg: str, ciphertext: bytes,
                          iv: bytes | None = None, aad: bytes | None = None,
                          tag: bytes | None = None) -> bytes:
        raise KeyStoreError(NO_OCT)

    def wrap(self, ref: KeyRef, alg: str, key: bytes) -> bytes:
        return algorithms.encrypt(self._key(ref), alg, key)

    def unwrap(self, ref: KeyRef, alg: str, wrapped: bytes) -> bytes:
        return algorithms.decrypt(self._key(ref), alg, wrapped)

    def forget(self, cache_id_prefix: str) -> None:
        with self._lock:
            for k in [k for k in self._cache if k.startswith(cache_id_prefix)]:
                del self._cache[k]

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
