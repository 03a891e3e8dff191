"""Key-encryption keys in the database, for deployments of several nodes.

A vault's KEK (storage/keyring.py) must be the same on every node, so where nodes share
only the database, the KEK lives there: a `data_keys` row of owner `kek:<owner>`,
holding the KEK sealed by the root key with the owner as associated data (a row copied
to another owner's name does not open). Rows alone are useless without the root key.

Destroying a KEK (at a vault's purge) deletes its row: on every node, nothing the vault
sealed opens again. A database backup taken before the purge still holds the row, so
the vault's data stays readable from that backup for whoever also holds the root key
(the seal's shares or the unsealing key) — see docs/storage.md.
"""

from __future__ import annotations

from collections.abc import Callable

from openkeyvault.crypto import aead
from openkeyvault.storage.keyring import Kek, KeyRingError, _SealedKek
from openkeyvault.storage.repository import Repository

PREFIX = "kek:"


class DatabaseKeyRing:
    def __init__(self, repo: Repository, root_key: bytes, now: Callable[[], float]) -> None:
        self._repo = repo
        self._root = aead.Sealer(root_key)
        self._now = now

    @staticmethod
    def _aad(owner: str) -> bytes:
        return f"openkeyvault kek {owner}".encode()

    def get(self, owner: str) -> Kek | None:
        found = self._repo.data_key(PREFIX + owner, 1)
        if found is None:
            return None
        try:
            return _SealedKek(self._root.open(found[1], self._aad(owner)))
        except aead.SealError:
            raise KeyRingError(f"the key-encryption key of {owner} does not open under the "
                               "root key") from None

    def create(self, owner: str) -> Kek:
        """Idempotent across nodes: the row is inserted only if absent, then read back, so
        every concurrent creator gets the same KEK."""
        kek = self.get(owner)
        if kek is not None:
            return kek
        sealed = self._root.seal(aead.new_key(), self._aad(owner))
        self._repo.add_data_key_if_absent(PREFIX + owner, lambda _version: sealed,
                                          int(self._now()))
        made = self.get(owner)
        assert made is not None
        return made

    def destroy(self, owner: str) -> None:
        self._repo.drop_data_keys(PREFIX + owner)
