"""The barrier: the single point of encryption between storage and everything above.

Root key → per-owner key-encryption key (KEK, in the keyring, outside the database)
→ per-owner data keys (in the database, wrapped by the KEK) → sealed values. An
owner is a vault, or `system` for the deployment's own secrets.

- A vault owner's data keys are wrapped by its KEK (storage/keyring.py), and the KEK
  is sealed by the root key. `destroy_owner` destroys the KEK: nothing the vault
  sealed opens again, also not from a copy of the database taken before.
- `system` keeps its data keys wrapped by the root key alone: it is never purged, and
  the deployment's own identity should not depend on a keyring file.
- Data keys stored before KEKs existed (wrapped by the root key alone) keep working;
  the owner gets a KEK at `rotate_owner` (a new data-key version), which also rewraps
  its earlier versions under the KEK. The two formats are told apart by length and
  a marker (`KEK_WRAPPED`).

Each sealed value records which data-key version sealed it, so an owner can gain
versions without rewriting rows. Unwrapped data keys are cached in memory (as ready
cipher objects); the cache is dropped whenever the barrier generation in storage
changes (a data key destroyed or added), so every worker process stops using a
destroyed owner's keys at its next request.
"""

from __future__ import annotations

import threading

from openkeyvault.crypto import aead
from openkeyvault.storage.errors import BarrierError, ForeignRootKey, KeyMaterialMissing
from openkeyvault.storage.keyring import (
    FileKeyRing,
    Kek,
    KeyRing,
    KeyRingError,
    KeyRingUnavailable,
)
from openkeyvault.storage.repository import Repository

__all__ = ["KEK_WRAPPED", "SYSTEM", "Barrier", "BarrierError", "KeyMaterialMissing",
           "kek_wrapped", "vault_owner"]

SYSTEM = "system"
# A data key wrapped by its owner's KEK: KEK_WRAPPED || nonce || wrapped key || tag.
KEK_WRAPPED = b"okv:kek:1:"
# A data key wrapped by the root key alone (no marker): nonce || wrapped key || tag.
_ROOT_WRAPPED_BYTES = aead.NONCE_BYTES + aead.KEY_BYTES + 16


def vault_owner(vault_id: int) -> str:
    return f"vault:{vault_id}"


def kek_wrapped(wrapped: bytes) -> bool:
    """Whether a stored data key is wrapped by its owner's KEK (else by the root key alone)."""
    return len(wrapped) != _ROOT_WRAPPED_BYTES and wrapped.startswith(KEK_WRAPPED)


class Barrier:
    def __init__(self, root_key: bytes, repo: Repository, keyring: KeyRing | None = None) -> None:
        """Without a keyring every owner's data keys are wrapped by the root key alone, and
        KEK-wrapped ones do not open."""
        self._root = aead.Sealer(root_key)
        self._repo = repo
        self._keyring = keyring
        # KEK files can be lost apart from the database (a restore of one without the
        # other); KEK rows in the database cannot.
        self.keks_in_files = isinstance(keyring, FileKeyRing)
        self._cache: dict[tuple[str, int], aead.Sealer] = {}
        self._current: dict[str, int] = {}
        self._generation = -1  # the storage generation the cache was filled under
        self._lock = threading.Lock()

    @staticmethod
    def _wrap_aad(owner: str, version: int) -> bytes:
        return f"okv/data-key/{owner}/{version}".encode()

    @staticmethod
    def _kek_aad(owner: str, version: int) -> bytes:
        return f"okv/data-key/{owner}/{version}/kek".encode()

    def _uses_kek(self, owner: str) -> bool:
        return self._keyring is not None and owner != SYSTEM

    def _kek(self, owner: str) -> Kek | None:
        """The KEK to wrap `owner`'s new data keys with (created if absent), or None for an
        owner whose data keys are wrapped by the root key alone."""
        if not self._uses_kek(owner):
            return None
        assert self._keyring is not None
        try:
            return self._keyring.create(owner)
        except KeyRingUnavailable as e:  # the disk's fault: kept as the cause
            raise BarrierError(f"no key-encryption key for {owner}: {e}") from e
        except KeyRingError as e:
            raise KeyMaterialMissing(owner, f"cannot be used ({e})") from None

    def _wrap(self, owner: str, version: int, key: bytes, kek: Kek | None) -> bytes:
        if kek is None:
            return self._root.seal(key, self._wrap_aad(owner, version))
        return KEK_WRAPPED + kek.wrap(key, self._kek_aad(owner, version))

    def _unwrap(self, owner: str, version: int, wrapped: bytes) -> bytes:
        if not kek_wrapped(wrapped):
            try:
                return self._root.open(wrapped, self._wrap_aad(owner, version))
            except aead.SealError:
                raise BarrierError("data key does not open under the root key") from None
        try:
            kek = self._keyring.get(owner) if self._keyring is not None else None
        except KeyRingUnavailable as e:  # the disk's fault: kept as the cause
            raise BarrierError(f"the key-encryption key of {owner} cannot be read: {e}") from e
        except KeyRingError as e:
            raise KeyMaterialMissing(owner, f"does not open ({e})") from None
        if kek is None:
            # Its data keys are still stored, so the owner was not destroyed: the file was
            # lost. Also without a keyring (a barrier built without one cannot open it).
            raise KeyMaterialMissing(owner, "is gone from the keyring")
        try:
            return kek.unwrap(wrapped[len(KEK_WRAPPED):], self._kek_aad(owner, version))
        except KeyRingError:
            raise BarrierError("data key does not open under its key-encryption key") from None

    def verify_root(self) -> None:
        """ForeignRootKey (a StartupRefused) unless the root key opens the stored `system`
        data key: a root key of another deployment must stop the server before it serves."""
        found = self._repo.data_key(SYSTEM)
        if found is None:
            return
        try:
            self._unwrap(SYSTEM, *found)
        except BarrierError:
            raise ForeignRootKey(
                "root.key does not open the data keys stored in okv.db: it is not the root "
                "key this database was sealed with. Restore the matching root.key from your "
                "backup (nothing was changed)") from None

    def unusable_owners(self, owners: list[str]) -> list[tuple[str, str]]:
        """(owner, reason) for each of `owners` whose newest data key does not open: a KEK
        file lost or damaged. Read at start-up to name such owners before any request."""
        out: list[tuple[str, str]] = []
        newest = self._repo.newest_data_keys()  # one query, not one per vault
        for owner in owners:
            found = newest.get(owner)
            if found is None or not kek_wrapped(found[1]):
                continue
            try:
                self._unwrap(owner, *found)
            except KeyMaterialMissing as e:
                out.append((owner, str(e)))
            except BarrierError:
                out.append((owner, f"the data key of {owner} does not open"))
        return out

    def ensure_owner(self, owner: str, now: int) -> None:
        """Create version 1 of the owner's data key if it has none."""
        if self._repo.data_key(owner) is not None:
            return
        kek = self._kek(owner)  # file I/O outside the write transaction
        self._repo.add_data_key_if_absent(
            owner, lambda v: self._wrap(owner, v, aead.new_key(), kek), now)

    def rotate_owner(self, owner: str, now: int) -> int:
        """Add a new data-key version for `owner` (new values are sealed with it; older
        ones keep opening). A vault owner gets its KEK now if it has none, and data keys
        wrapped by the root key alone are rewrapped under it. Returns the new version."""
        kek = self._kek(owner)  # file I/O outside the write transaction

        def rewrap(version: int, wrapped: bytes) -> bytes | None:
            if kek is None or kek_wrapped(wrapped):
                return None
            return self._wrap(owner, version, self._unwrap(owner, version, wrapped), kek)

        version = self._repo.add_data_key_version(
            owner, lambda v: self._wrap(owner, v, aead.new_key(), kek), rewrap, now)
        self._forget(owner)
        return version

    def destroy_owner(self, owner: str) -> None:
        """Destroy the owner's key material irrecoverably: its KEK first (from then on
        nothing it sealed opens, from this database or any copy of it), then its data keys
        and every unwrapped copy in memory; other processes drop theirs when they see the
        barrier generation change. Idempotent. The `system` owner cannot be destroyed."""
        if owner == SYSTEM:
            raise ValueError("the system owner's keys cannot be destroyed")
        if self._keyring is not None:
            try:
                self._keyring.destroy(owner)
            except KeyRingError as e:
                raise BarrierError(f"the key-encryption key of {owner} was not destroyed: {e}"
                                   ) from (e if isinstance(e, KeyRingUnavailable) else None)
        self._forget(owner)
        self._repo.drop_data_keys(owner)
        self._forget(owner)

    def _forget(self, owner: str) -> None:
        with self._lock:
            for k in [k for k in self._cache if k[0] == owner]:
                del self._cache[k]
            self._current.pop(owner, None)

    def _fresh(self) -> int:
        """The storage generation; the cache is emptied when it grew. Read once per request
        on the hot path (storage/readcache.py)."""
        generation = self._repo.barrier_generation()
        if generation > self._generation:  # a thread still in an older snapshot changes nothing
            with self._lock:
                if generation > self._generation:
                    self._cache.clear()
                    self._current.clear()
                    self._generation = generation
        return generation

    def _key(self, owner: str, version: int | None) -> tuple[int, aead.Sealer]:
        generation = self._fresh()
        latest = version is None
        if version is None:
            version = self._current.get(owner)
        if version is not None:
            hit = self._cache.get((owner, version))
            if hit is not None:
                return version, hit
        found = self._repo.data_key(owner, version)
        if found is None:
            raise BarrierError(f"no data key for {owner}")
        v, wrapped = found
        sealer = aead.Sealer(self._unwrap(owner, v, wrapped))
        with self._lock:
            # Only a key read under the generation the cache holds may enter it: a key read
            # before a destroy that another thread has already seen stays out.
            if generation == self._generation:
                self._cache[(owner, v)] = sealer
                if latest:
                    self._current[owner] = v
        return v, sealer

    def seal(self, owner: str, context: bytes, plaintext: bytes) -> tuple[int, bytes]:
        version, sealer = self._key(owner, None)
        return version, sealer.seal(plaintext, context)

    def open(self, owner: str, key_version: int, context: bytes, sealed: bytes) -> bytes:
        _, sealer = self._key(owner, key_version)
        try:
            return sealer.open(sealed, context)
        except aead.SealError:
            raise BarrierError("sealed value failed authentication") from None
