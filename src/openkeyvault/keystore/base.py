"""The KeyStore protocol: every backend implements it (software, PKCS#11).

A backend turns key specs into `StoredKey`s: the public JWK members plus an opaque
`blob` the vault layer seals through the barrier and stores. For the software backend
the blob is the PKCS#8 private key; for a PKCS#11 token it names the token's objects
(the private key never leaves the token). Each key version records the name of the
backend that made it (`props["keystore"]`), and its operations are routed by that
name, never by the key type.

Operations take a `KeyRef`: a stable cache id for the key version, the key's family and
a way to fetch the blob only when the backend has not already loaded it. Algorithms are
JSON Web Algorithm names; each backend checks them against the typed tables of
`crypto/algorithms.py` and answers `KeyStoreError` (or `AlgorithmError`,
`DecryptionError`: all `ValueError`s with messages safe to show) for what it refuses.

Symmetric (oct) keys are AES keys an HSM holds (`Capabilities.families` says whether a
backend has them). Their encryptions carry an iv, additional authenticated data and a tag
besides the data, so they have operations of their own, `encrypt_symmetric` and
`decrypt_symmetric` (AES-GCM, AES-CBC, AES-CBC with padding); `encrypt` and `decrypt` are
the RSA algorithms', whose result is the bytes alone. `wrap` and `unwrap` take the key
wrap algorithm of either family (RSA encryption, or AES key wrap for an oct key).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

RSA, EC, OCT = "RSA", "EC", "oct"

# A get-or-create of a small value the deployment keeps (first writer wins): (key, make)
# → the stored value; make() is called only when none is stored yet.
MetaStore = Callable[[str, Callable[[], str]], str]


@dataclass(frozen=True)
class KeySpec:
    family: str  # RSA, EC or oct
    size: int | None = None  # RSA modulus bits (AES key bits for oct)
    public_exponent: int = 65537
    curve: str | None = None  # EC curve, Key Vault spelling (P-256, P-256K, P-384, P-521)
    exportable: bool = False  # the key may be exported (released) wrapped to a public key


@dataclass(frozen=True)
class SymmetricResult:
    """An `encrypt_symmetric` result: the ciphertext, the iv it was made with (for AES-GCM
    made by the backend, for AES-CBC the caller's) and the authentication tag (AES-GCM;
    None otherwise)."""

    ciphertext: bytes
    iv: bytes | None
    tag: bytes | None


@dataclass(frozen=True)
class StoredKey:
    public: dict[str, Any]  # n/e or crv/x/y, base64url (empty for oct)
    blob: bytes  # opaque to everyone but the backend
    size: int  # RSA modulus bits, EC field bits or AES key bits
    # The public name of what the backend holds outside storage for this key (an HSM's
    # object id), as `held()` lists it; None when storage's blob is all there is.
    handle: str | None = None


@dataclass(frozen=True)
class KeyRef:
    cache_id: str
    family: str
    blob: Callable[[], bytes]


@dataclass(frozen=True)
class PlainKey:
    """Key material given in the clear (JWK private members), for `import_key`."""

    jwk: dict[str, Any]
    family: str
    exportable: bool = False


@dataclass(frozen=True)
class WrappedKey:
    """Key material wrapped to a key-exchange key the backend holds (`kek`), for
    `import_key`: `alg` names the wrapping (e.g. CKM_RSA_AES_KEY_WRAP)."""

    kek: KeyRef
    alg: str
    blob: bytes
    family: str
    exportable: bool = False


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, for the vault layer to choose and refuse with."""

    hardware: bool  # keys are protected by hardware (kty RSA-HSM, EC-HSM, oct-HSM)
    families: frozenset[str]
    rsa_sizes: tuple[int, ...] = ()
    curves: tuple[str, ...] = ()
    sign: frozenset[str] = frozenset()  # JWA signature algorithms
    encrypt: frozenset[str] = frozenset()  # JWA RSA encryption (and key wrap) algorithms
    aes_sizes: tuple[int, ...] = ()  # oct key sizes, in bits (when families has oct)
    # JWA AES algorithms of oct keys: encrypt_symmetric/decrypt_symmetric, wrap/unwrap (KW)
    symmetric: frozenset[str] = frozenset()
    wrapped_import: frozenset[str] = frozenset()  # WrappedKey algorithms accepted
    export: bool = False  # exportable keys can be made, and exported wrapped to a public key
    # Keys held outside storage carry, in their blob, a copy wrapped by a key of the backend
    # (so a backup can hold it and `restore_key` make it live again).
    backup: bool = False
    # Where the backend does part of an algorithm on the host, and why (docs, tests).
    host_steps: dict[str, str] = field(default_factory=dict)


class KeyStoreError(ValueError):
    """Bad key input for this backend, or what it cannot do (message safe to show)."""


class KeyStoreUnavailable(RuntimeError):
    """The backend cannot be reached (its module, token or PIN); not the caller's fault."""


class AttestationSigner(Protocol):
    """The deployment's attestation keys in a keystore (EC P-384, made and used inside it,
    never extractable), named by handles the caller stores. `role` is "root" (signs the
    certificates) or "signing" (signs the statements about keys)."""

    def generate(self, role: str) -> str:
        """A new key for `role`; its handle."""

    def public(self, role: str, handle: str) -> ec.EllipticCurvePublicKey: ...

    def sign(self, role: str, handle: str, digest: bytes) -> bytes:
        """ECDSA over a SHA-384 digest: r||s, 48 bytes each."""

    def destroy(self, role: str, handle: str) -> None:
        """Destroy a key made in vain (none left is not an error)."""


class KeyStore(Protocol):
    name: str

    def capabilities(self) -> Capabilities: ...

    def generate(self, spec: KeySpec) -> StoredKey: ...

    def import_key(self, material: PlainKey | WrappedKey) -> StoredKey: ...

    def destroy(self, ref: KeyRef) -> None:
        """Remove the key from the backend for good (purge). Destroying a key that is
        already gone is not an error."""

    def held(self) -> frozenset[str]:
        """The handles of every key this backend holds outside storage for this
        deployment (empty for a backend that holds none)."""

    def destroy_held(self, handle: str) -> None:
        """Destroy a held key by its handle (one no key version names any more)."""

    def backup_blob(self, ref: KeyRef) -> bytes:
        """What a key backup holds of the key: a blob `restore_key` accepts in this
        deployment. KeyStoreError for a key that cannot be backed up."""

    def restore_key(self, family: str, blob: bytes, public: dict[str, Any]) -> StoredKey:
        """Make the key of a backup's blob live in this backend again (an HSM: a new object
        unwrapped inside it); `public` is the key's stored public JWK members, checked
        against the key. KeyStoreError when the blob cannot be restored here."""

    def export(self, ref: KeyRef, wrapping: dict[str, Any], alg: str) -> bytes:
        """An exportable key's private material wrapped to `wrapping` (the public members of
        an RSA JWK) with `alg` (crypto/transfer.py WRAPPINGS): RSA-OAEP of a fresh AES-256
        key, then AES key wrap with padding of the PKCS#8 key (of an oct key: its key
        bytes). KeyStoreError for a key that is not exportable."""

    def sign(self, ref: KeyRef, alg: str, digest: bytes) -> bytes: ...

    def verify(self, ref: KeyRef, alg: str, digest: bytes, signature: bytes) -> bool: ...

    def encrypt(self, ref: KeyRef, alg: str, plaintext: bytes) -> bytes:
        """RSA encryption (RSA1_5, RSA-OAEP, RSA-OAEP-256)."""

    def decrypt(self, ref: KeyRef, alg: str, ciphertext: bytes) -> bytes:
        """RSA decryption; DecryptionError for any ciphertext that does not decrypt."""

    def encrypt_symmetric(self, ref: KeyRef, alg: str, plaintext: bytes,
                          iv: bytes | None = None,
                          aad: bytes | None = None) -> SymmetricResult:
        """AES encryption with an oct key of the algorithm's size. A128GCM, A192GCM,
        A256GCM: the backend makes a fresh 12-byte iv (an iv given is refused), `aad` is
        optional, the 16-byte tag is returned apart from the ciphertext. A128CBC...A256CBC
        (the plaintext a multiple of 16 bytes) and A128CBCPAD...A256CBCPAD (PKCS#7
        padding): the caller's 16-byte iv is required; no aad. KeyStoreError for inputs
        that do not fit, AlgorithmError for an algorithm that does not fit the key;
        KeyStoreError where the backend has no oct keys."""

    def decrypt_symmetric(self, ref: KeyRef, alg: str, ciphertext: bytes,
                          iv: bytes | None = None, aad: bytes | None = None,
                          tag: bytes | None = None) -> bytes:
        """The plaintext of an `encrypt_symmetric` ciphertext, given its iv (and for GCM
        its tag and aad). A wrong key, tag, iv or aad, a bad CBC padding, a ciphertext of
        a bad length: all are the one DecryptionError, whatever went wrong."""

    def wrap(self, ref: KeyRef, alg: str, key: bytes) -> bytes:
        """`key` encrypted with an RSA key wrap algorithm, or with an oct key by AES key
        wrap (A128KW, A192KW, A256KW: RFC 3394; the key a multiple of 8 bytes, at least
        16)."""

    def unwrap(self, ref: KeyRef, alg: str, wrapped: bytes) -> bytes:
        """The key `wrap` wrapped; DecryptionError for a wrapped key that does not
        unwrap (for AES key wrap: a failed integrity check, or a bad length)."""

    def attest(self, ref: KeyRef) -> dict[str, Any]:
        """What the backend itself reports of the key, read from it now: {"keystore",
        "token": {label, manufacturer, model, serial}, "attributes": {sensitive,
        extractable, always_sensitive, never_extractable, local}, "public": the public
        JWK members of its public object}. KeyStoreError where keys are not attested."""

    def attestation_signer(self) -> AttestationSigner:
        """The backend's attestation keys; KeyStoreError where it has none."""

    def forget(self, cache_id_prefix: str) -> None:
        """Drop what is cached for keys whose cache id starts with the prefix."""

    def close(self) -> None: ...
