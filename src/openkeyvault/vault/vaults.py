"""Vaults of the deployment (the full control plane comes later)."""

from __future__ import annotations

from openkeyvault.ops.clock import Clock
from openkeyvault.storage.barrier import Barrier, vault_owner
from openkeyvault.storage.records import NameConflict, VaultRecord
from openkeyvault.storage.repository import Repository
from openkeyvault.vault import names
from openkeyvault.vault.errors import BadParameter, Conflict
from openkeyvault.vault.lifecycle import (
    DEFAULT_RETENTION_DAYS,
    MAX_RETENTION_DAYS,
    MIN_RETENTION_DAYS,
)

SKUS = ("standard", "premium")


class VaultService:
    def __init__(self, repo: Repository, barrier: Barrier, clock: Clock) -> None:
        self._repo = repo
        self._barrier = barrier
        self._clock = clock

    def create(self, name: str, sku: str = "standard",
               retention_days: int = DEFAULT_RETENTION_DAYS,
               purge_protection: bool = False) -> VaultRecord:
        name = names.check_vault_name(name)
        if sku not in SKUS:
            raise BadParameter(f"Unknown SKU '{sku}': use one of {', '.join(SKUS)}.")
        if not MIN_RETENTION_DAYS <= retention_days <= MAX_RETENTION_DAYS:
            raise BadParameter(
                f"softDeleteRetentionInDays must be between {MIN_RETENTION_DAYS} and "
                f"{MAX_RETENTION_DAYS}."
            )
        now = int(self._clock.now())
        try:
            vault = self._repo.create_vault(name, "vault", sku, retention_days, purge_protection,
                                            now)
        except NameConflict:
            raise Conflict(f"A vault named '{name}' already exists.",
                           inner="VaultAlreadyExists") from None
        self._barrier.ensure_owner(vault_owner(vault.id), now)
        return vault

    def ensure(self, name: str) -> VaultRecord:
        vault = self._repo.get_vault(name.lower())
        return vault if vault is not None else self.create(name)

    def get(self, name: str) -> VaultRecord | None:
        return self._repo.get_vault(name.lower())

    def list(self) -> list[VaultRecord]:
        return self._repo.list_vaults()
