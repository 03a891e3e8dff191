"""Soft-delete vocabulary shared by secrets, keys and certificates."""

from __future__ import annotations

from openkeyvault.ops.clock import Clock
from openkeyvault.storage.repository import Repository

DEFAULT_RETENTION_DAYS = 90
MIN_RETENTION_DAYS = 7
MAX_RETENTION_DAYS = 90
DAY = 86_400


def recovery_level(retention_days: int, purge_protection: bool) -> str:
    """`DeletionRecoveryLevel` for a vault with soft delete on (always, for new vaults)."""
    base = "Recoverable" if retention_days >= DEFAULT_RETENTION_DAYS else "CustomizedRecoverable"
    return base if purge_protection else f"{base}+Purgeable"


def purge_expired(repo: Repository, clock: Clock) -> int:
    """Purge every soft-deleted object whose retention has ended; returns how many."""
    return repo.purge_expired(int(clock.now()))
