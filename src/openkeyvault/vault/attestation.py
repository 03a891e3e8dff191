"""Key attestation (GetKeyAttestation) for keys an HSM keystore holds: the deployment's
attestation keys and certificates, made on first use, and the signed statements.

The two attestation keys (root and signing, crypto/attestation.py) are generated in
the HSM by the keystore's `attestation_signer()`. Their CKA_IDs and certificates are
kept as one value in the database's `meta` table through `store(key, make)`, a
get-or-create (first writer wins): several worker processes may make keys at once,
and each one that finds another's value stored destroys the keys it made in vain.
Nothing in the value is secret (certificates and object ids), so it is not sealed:
`okv attestation root` reads the root from the database without the root key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

from openkeyvault.crypto import attestation
from openkeyvault.crypto.attestation import Chain
from openkeyvault.crypto.encoding import b64url_encode
from openkeyvault.keystore.base import (
    AttestationSigner,
    KeyRef,
    KeyStore,
    KeyStoreError,
    KeyStoreUnavailable,
)
from openkeyvault.vault.models import KeyAttestation, KeyBundle

META_PREFIX = "attestation_"  # + the keystore's name
ROOT_NAME = "OpenKeyVault Attestation Root"
SIGNING_NAME = "OpenKeyVault Key Attestation"

# (meta key, make) → the stored value: make() is called only when none is stored yet.
MetaStore = Callable[[str, Callable[[], str]], str]


def meta_key(keystore: str) -> str:
    """The `meta` key of a keystore's attestation keys and certificates."""
    return f"{META_PREFIX}{keystore}"


class Attestor:
    """Signs attestations of HSM keys; the chain of each keystore is loaded (or made) on
    first use and kept in memory after. `deployment` (a short id) names the root."""

    def __init__(self, store: MetaStore, now: Callable[[], dt.datetime],
                 deployment: str) -> None:
        self._store = store
        self._now = now
        self._root_name = f"{ROOT_NAME} {deployment}"
        self._signing_name = f"{SIGNING_NAME} {deployment}"
        self._lock = threading.Lock()
        self._chains: dict[str, Chain] = {}

    def attest(self, keystore: KeyStore, ref: KeyRef, kid: str,
               bundle: KeyBundle) -> KeyAttestation:
        """The attestation of the key version `ref` names, as the API shows it (`kid`,
        `bundle`). The keystore's facts are read first: a key the token does not hold,
        or whose public key is not the stored one, is refused (KeyStoreError)."""
        facts = keystore.attest(ref)
        if facts.get("public") != bundle.public:
            raise KeyStoreError("The key in the HSM does not match the stored key.")
        chain = self.chain(keystore)
        signer = keystore.attestation_signer()

        def sign(digest: bytes) -> bytes:
            return signer.sign("signing", chain.signing_id, digest)

        iat = int(self._now().timestamp())
        private = attestation.private_claims(kid, bundle.kty, bundle.key_ops, bundle.public,
                                             facts, iat)
        public = attestation.public_claims(kid, bundle.kty, bundle.public, facts, iat)
        return KeyAttestation(
            certificate_pem_file=b64url_encode(attestation.chain_pem(chain.signing,
                                                                     chain.root)),
            private_key_attestation=_b64(attestation.compact_jws(private, chain.signing,
                                                                 sign)),
            public_key_attestation=_b64(attestation.compact_jws(public, chain.signing, sign)),
            version=attestation.FORMAT_VERSION,
        )

    def sign_release(self, keystore: KeyStore, claims: dict[str, Any]) -> str:
        """A released key's signed object: `claims` as a compact JWS (ES384) signed by the
        keystore's attestation signing key, its header carrying the chain to the root."""
        chain = self.chain(keystore)
        signer = keystore.attestation_signer()
        return attestation.compact_jws(
            claims, chain.signing, lambda digest: signer.sign("signing", chain.signing_id,
                                                              digest), chain.root)

    def chain(self, keystore: KeyStore) -> Chain:
        """The keystore's attestation chain: stored, or made now and stored."""
        with self._lock:
            found = self._chains.get(keystore.name)
            if found is None:
                found = self._chains[keystore.name] = self._load_or_make(keystore)
            return found

    def _load_or_make(self, keystore: KeyStore) -> Chain:
        signer = keystore.attestation_signer()
        made: list[str] = []

        def make() -> str:
            value = self._make(signer)
            made.append(value)
            return value

        stored = self._store(meta_key(keystore.name), make)
        if made and stored != made[0]:  # another process stored its chain first
            _discard(signer, Chain.from_json(made[0]))
        return Chain.from_json(stored)

    def _make(self, signer: AttestationSigner) -> str:
        """New attestation keys in the keystore and their certificates; keys made before
        a failure are destroyed."""
        handles: list[tuple[str, str]] = []
        try:
            root_id = signer.generate("root")
            handles.append(("root", root_id))
            signing_id = signer.generate("signing")
            handles.append(("signing", signing_id))

            def root_sign(digest: bytes) -> bytes:
                return signer.sign("root", root_id, digest)

            now = self._now()
            root = attestation.root_certificate(signer.public("root", root_id),
                                                self._root_name, now, root_sign)
            signing = attestation.signing_certificate(
                signer.public("signing", signing_id), self._signing_name, root, now,
                root_sign)
        except BaseException:
            for role, handle in handles:
                with contextlib.suppress(ValueError, KeyStoreUnavailable):
                    signer.destroy(role, handle)
            raise
        return Chain(root_id, signing_id, root, signing).to_json()


def _discard(signer: AttestationSigner, chain: Chain) -> None:
    for role, handle in (("root", chain.root_id), ("signing", chain.signing_id)):
        with contextlib.suppress(ValueError, KeyStoreUnavailable):
            signer.destroy(role, handle)


def _b64(compact: str) -> str:
    return b64url_encode(compact.encode("ascii"))

