"""The storage layer's error family: faults of the deployment, never of a request.

`api/errors.py` maps each class to an HTTP status (a server fault is never a 4xx).
Messages are one line for the operator: they may name files of the data directory,
never key material or stored values. Clients see a fixed message per class instead.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every storage fault."""


class StorageUnavailable(StorageError):
    """The database or the keyring cannot be read or written now (I/O error, read-only
    file system, lock held beyond the busy timeout). Retrying later may succeed."""


class StorageFull(StorageUnavailable):
    """No space left on the device: writes fail until space is freed; reads still work."""


class BarrierError(Exception):
    """A sealed value could not be opened (tampered, swapped, foreign or shredded). Where a
    storage fault is the reason, it is chained as the cause."""


class KeyMaterialMissing(StorageError, BarrierError):
    """A live owner's key-encryption key is gone or unusable, so nothing it protects opens
    until the keyring file is restored. Retrying does not help: an operator must act.
    (Also a BarrierError: to the barrier's callers it is a value that does not open.)"""

    def __init__(self, owner: str, reason: str) -> None:
        super().__init__(f"the key-encryption key of {owner} {reason}")
        self.owner = owner


class StartupRefused(StorageError):
    """The data directory is not fit to serve from. The message says what was found and
    what to do; nothing was created or changed."""


class ForeignRootKey(StartupRefused, BarrierError):
    """The root key does not open the stored data keys: it belongs to another deployment
    (or the file was replaced). Refused before anything is served or written."""


def storage_fault_of(exc: BaseException) -> StorageError | None:
    """`exc` as a storage fault, or None: a StorageError itself, or SQLAlchemy's pool
    timeout (every connection busy for the whole wait, raised at checkout where no
    driver error handler runs)."""
    if isinstance(exc, StorageError):
        return exc
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, PoolTimeout):
        return StorageUnavailable("no database connection came free in time (the "
                                  "connection pool is exhausted)")
    return None
