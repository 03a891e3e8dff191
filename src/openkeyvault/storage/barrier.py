"""The barrier: the single point of encryption between storage and everything above.

Root key → per-owner data keys (an owner is a vault, or `system` for the
deployment's own secrets) → sealed values. Data keys are stored wrapped by
the root key; each sealed value records which data-key version sealed it, so
the keyring can gain versions without rewriting rows. Unwrapped data keys are
cached in memory (as ready cipher objects): a given (owner, version) never changes.
"""

from __future__ import annotations

import threading

from openkeyvault.crypto import aead
from openkeyvault.storage.repository import Repository

SYSTEM = "system"


class BarrierError(Exception):
    """A sealed value could not be opened (tampered, swapped or foreign)."""


def vault_owner(vault_id: int) -> str:
    return f"vault:{vault_id}"


class Barrier:
    def __init__(self, root_key: bytes, repo: Repository) -> None:
        self._root = root_key
        self._repo = repo
        self._cache: dict[tuple[str, int], aead.Sealer] = {}
        self._current: dict[str, int] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _wrap_aad(owner: str, version: int) -> bytes:
        return f"okv/data-key/{owner}/{version}".encode()

    def ensure_owner(self, owner: str, now: int) -> None:
        """Create version 1 of the owner's data key if it has none."""
        self._repo.add_data_key_if_absent(
            owner, lambda v: aead.seal(self._root, aead.new_key(), self._wrap_aad(owner, v)), now
        )

    def _key(self, owner: str, version: int | None) -> tuple[int, aead.Sealer]:
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
        try:
            sealer = aead.Sealer(aead.open_sealed(self._root, wrapped, self._wrap_aad(owner, v)))
        except aead.SealError:
            raise BarrierError("data key does not open under the root key") from None
        with self._lock:
            self._cache[(owner, v)] = sealer
            self._current.setdefault(owner, v)
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
