"""The key of a certificate version, made where its key type says: in this process for RSA
and EC, in the HSM keystore for RSA-HSM and EC-HSM. An HSM key is generated in the token,
signs the certificate signing request and a self-signed certificate there
(`KeyStore.sign`), and never leaves it: this process sees its public key and the
keystore's blob, which names the token's objects.

A `CertificateKey` carries what the version's key object records (`stored_props`: kty,
public, size, keystore, handle) and the blob the barrier seals, so the keys service
serves a certificate's key from the keystore named there, like any key version.
Signing asks the keystore with a cache id under the certificate's key prefix
(`{vault id}/{name}/`), so what the keystore caches is dropped with the key's.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from openkeyvault.crypto import certificate_keys as ck
from openkeyvault.crypto import certificate_signing as cs
from openkeyvault.crypto import certificates as x5
from openkeyvault.crypto.jwk import PrivateKey, PublicKey
from openkeyvault.keystore.base import (
    KeyRef,
    KeySpec,
    KeyStore,
    KeyStoreUnavailable,
    PlainKey,
    StoredKey,
)
from openkeyvault.vault import keytypes
from openkeyvault.vault.errors import BadParameter, Unavailable
from openkeyvault.vault.keystore_faults import keystore_faults

SOFTWARE = "software"
NO_HSM = ("HSM-protected key types need an HSM keystore, and none is configured for this "
          "deployment.")

log = logging.getLogger("openkeyvault.certificates")


@dataclass(frozen=True)
class CertificateKey:
    kty: str  # RSA, EC (software) or RSA-HSM, EC-HSM (held in an HSM keystore)
    keystore: str  # the keystore that holds it: "software" (the blob is its PKCS#8)
    blob: bytes  # the keystore's blob: what the barrier seals
    public: PublicKey
    size: int
    handle: str | None = None  # what an HSM holds (StoredKey.handle)
    private: PrivateKey | None = None  # a software key's private key; None in an HSM

    @property
    def family(self) -> str:
        return keytypes.KTY[self.kty][0]

    @property
    def held(self) -> bool:
        """Whether the key lives in a keystore outside storage (an HSM)."""
        return self.private is None

    def stored_props(self) -> dict[str, Any]:
        """What a key version (or a pending operation) records of the key."""
        return {"kty": self.kty, "public": dict(ck.public_members(self.public)),
                "size": self.size, "keystore": self.keystore,
                **({"handle": self.handle} if self.handle is not None else {})}


def software(kty: str, key: PrivateKey) -> CertificateKey:
    """A key in this process (RSA or EC)."""
    return CertificateKey(kty, SOFTWARE, ck.to_blob(key), ck.public_key(key),
                          ck.key_size(key), None, key)


class CertificateKeys:
    """Makes, loads, signs with and destroys certificate keys, in software or in the
    deployment's HSM keystore (`keystores` by name: the keys service's)."""

    def __init__(self, keystores: dict[str, KeyStore]) -> None:
        self._keystores = keystores
        self._hsm = next((k for k in keystores.values() if k.capabilities().hardware), None)

    def check(self, kty: str) -> None:
        """Refuse a hardware key type where no HSM keystore is configured."""
        if keytypes.KTY[kty][1] and self._hsm is None:
            raise BadParameter(NO_HSM)

    def _hsm_store(self) -> KeyStore:
        if self._hsm is None:
            raise BadParameter(NO_HSM)
        return self._hsm

    def generate(self, kty: str, size: int | None, crv: str | None) -> CertificateKey:
        """A new key of the policy's type: an HSM type's is generated in the HSM."""
        family, hardware = keytypes.KTY[kty]
        if not hardware:
            try:
                return software(kty, ck.generate(family, size, crv))
            except x5.CertificateInputError as exc:
                raise BadParameter(str(exc)) from None
        store = self._hsm_store()
        spec = KeySpec("RSA", size=size) if family == "RSA" else KeySpec("EC", curve=crv)
        with keystore_faults():
            stored = store.generate(spec)
        return self._held(kty, store.name, stored)

    def import_key(self, kty: str, key: PrivateKey) -> CertificateKey:
        """An imported certificate's key: an HSM type's is created in the HSM (the key
        passed through this process on its way in) and dropped from here."""
        family, hardware = keytypes.KTY[kty]
        if not hardware:
            return software(kty, key)
        store = self._hsm_store()
        with keystore_faults("The certificate's key could not be imported into the HSM: "):
            stored = store.import_key(PlainKey(ck.private_members(key), family))
        return self._held(kty, store.name, stored)

    def _held(self, kty: str, keystore: str, stored: StoredKey) -> CertificateKey:
        public = ck.public_from_members(stored.public, keytypes.KTY[kty][0])
        return CertificateKey(kty, keystore, stored.blob, public, stored.size, stored.handle)

    @staticmethod
    def loaded(props: dict[str, Any], blob: bytes) -> CertificateKey:
        """A stored key from what records it (a key version's props, a pending operation's
        `key`; none: a software key) and its unsealed blob."""
        keystore = props.get("keystore", SOFTWARE)
        if keystore == SOFTWARE:
            key = ck.from_blob(blob)
            return software(str(props.get("kty") or ck.family(key)), key)
        kty = str(props["kty"])
        public = ck.public_from_members(props["public"], keytypes.KTY[kty][0])
        return CertificateKey(kty, keystore, blob, public, int(props["size"]),
                              props.get("handle"))

    # ---- signing ------------------------------------------------------------------------
    def csr(self, req: x5.X509Request, key: CertificateKey, owner: str) -> Any:
        """The certificate signing request of `req`, signed by the key."""
        try:
            if key.private is not None:
                return x5.build_csr(req, key.private)
            return cs.build_csr(req, key.public, self._signer(key, owner))
        except x5.CertificateInputError as exc:
            raise BadParameter(str(exc)) from None

    def self_signed(self, req: x5.X509Request, key: CertificateKey, now: dt.datetime,
                    owner: str) -> Any:
        """The self-signed certificate of `req`, signed by the key."""
        try:
            if key.private is not None:
                return x5.build_certificate(req, key.public, key.private, None, now)
            return cs.build_self_signed(req, key.public, self._signer(key, owner), now)
        except x5.CertificateInputError as exc:
            raise BadParameter(str(exc)) from None

    def _store(self, key: CertificateKey) -> KeyStore:
        store = self._keystores.get(key.keystore)
        if store is None:
            log.error("certificates: a key is held by keystore '%s', which this deployment "
                      "does not configure", key.keystore)
            raise Unavailable("The keystore holding this certificate's key is not available "
                              "on the server.")
        return store

    def _ref(self, key: CertificateKey, owner: str) -> KeyRef:
        return KeyRef(f"{owner}certificate-{key.handle}", key.family, lambda: key.blob)

    def _signer(self, key: CertificateKey, owner: str) -> cs.Signer:
        store, ref = self._store(key), self._ref(key, owner)

        def sign(alg: str, digest: bytes) -> bytes:
            with keystore_faults():
                return store.sign(ref, alg, digest)

        return sign

    # ---- backup and restore ---------------------------------------------------------------
    def backup_blob(self, props: dict[str, Any], blob: bytes, owner: str) -> bytes:
        """What a certificate backup holds of a stored key: a software key's blob; an HSM
        key's copy wrapped inside the HSM by the deployment's backup key (a key made
        without one is refused)."""
        if props.get("keystore", SOFTWARE) == SOFTWARE:
            return blob
        key = self.loaded(props, blob)
        with keystore_faults("The certificate cannot be backed up: "):
            return self._store(key).backup_blob(self._ref(key, owner))

    def restore(self, props: dict[str, Any], blob: bytes) -> CertificateKey:
        """An HSM key of a backup made live again: its copy unwrapped inside the HSM into
        new objects (a new handle), checked against the stored public key."""
        kty = str(props["kty"])
        self.check(kty)
        store = self._keystores.get(str(props.get("keystore")))
        if store is None or not store.capabilities().hardware:
            raise BadParameter("The backup holds a key of a keystore this deployment does "
                               "not have.")
        with keystore_faults("The certificate cannot be restored: "):
            stored = store.restore_key(keytypes.KTY[kty][0], blob, dict(props["public"]))
        return self._held(kty, store.name, stored)

    # ---- removal ------------------------------------------------------------------------
    def destroy(self, keys: Iterable[CertificateKey], owner: str) -> None:
        """Destroy HSM keys for good (a purge, or keys made in vain). Best effort: a
        failure is logged, and the `hsm-orphans` job destroys what no version names."""
        done: set[tuple[str, str | None]] = set()
        for key in keys:
            if not key.held or (key.keystore, key.handle) in done:
                continue
            done.add((key.keystore, key.handle))
            store = self._keystores.get(key.keystore)
            if store is None:
                continue
            try:
                store.destroy(self._ref(key, owner))
            except (ValueError, KeyStoreUnavailable) as exc:
                log.error("certificates: a key could not be destroyed in keystore '%s': %s",
                          key.keystore, exc)

    def forget(self, owner: str) -> None:
        """Drop what the keystores cache for keys under this prefix."""
        for store in self._keystores.values():
            store.forget(owner)
