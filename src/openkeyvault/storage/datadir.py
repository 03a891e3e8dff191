"""Opening the data directory: its checks come before anything is served or created.

- Permissions: the directory and the files that hold key material or sealed data must
  be private. What can be restricted safely is restricted, with one log line naming
  each change; `root.key` readable by others is refused by the seal instead (it may
  have been copied, and only the operator can judge that).
- Key material without a database (or a database without its root key) is a lost
  file, not a new deployment: refused, naming what was found and what to do, before
  anything is created.
- The root key must open the stored data keys before the first request.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

from openkeyvault.storage.barrier import SYSTEM, Barrier
from openkeyvault.storage.db import Engines, open_postgres, open_sqlite, redacted
from openkeyvault.storage.dbkeyring import DatabaseKeyRing
from openkeyvault.storage.errors import StartupRefused
from openkeyvault.storage.keyring import KEYRING_DIR, SUFFIX, FileKeyRing, KeyRing
from openkeyvault.storage.repository import Repository
from openkeyvault.storage.seal import dev_seal_root_key

log = logging.getLogger("openkeyvault.startup")

ROOT_KEY = "root.key"
# Private files restricted to 0600 when found open to others (root.key is refused instead).
PRIVATE_FILES = ("okv.db", "okv.db-wal", "okv.db-shm", "server.key", "ca.key", "dev.env")


def _restrict(path: Path, mode: int, repaired: list[str]) -> None:
    """chmod `path` to `mode` if others may access it; StartupRefused if that fails."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        return  # the target is checked by whoever opens it (keyring and seal refuse links)
    current = stat.S_IMODE(info.st_mode)
    if not current & 0o077:
        return
    try:
        os.chmod(path, mode)
    except OSError as e:
        raise StartupRefused(
            f"{path} is open to other users (mode {current:o}) and could not be restricted "
            f"({e.strerror}): run chmod {mode:o} {path}") from None
    repaired.append(f"{path} ({current:o} -> {mode:o})")


def secure_permissions(data: Path) -> None:
    """Create the data directory (0700), or restrict it and its private files."""
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    repaired: list[str] = []
    _restrict(data, 0o700, repaired)
    for name in PRIVATE_FILES:
        _restrict(data / name, 0o600, repaired)
    ring = data / KEYRING_DIR
    if ring.is_dir() and not ring.is_symlink():
        _restrict(ring, 0o700, repaired)
        for kek in sorted(ring.glob("*" + SUFFIX)):
            _restrict(kek, 0o600, repaired)
    if repaired:
        log.warning("okv: restricted permissions that let other users into the data "
                    "directory: %s", ", ".join(repaired))


def _kek_files(data: Path) -> int:
    ring = data / KEYRING_DIR
    return len(list(ring.glob("*" + SUFFIX))) if ring.is_dir() else 0


def refuse_orphaned_key_material(data: Path, db: Path) -> None:
    """StartupRefused when the database is missing (or empty) beside key material of an
    existing deployment: starting would create an empty deployment next to it."""
    if db.exists() and db.stat().st_size > 0:
        return
    _refuse_key_material_beside(data, f"{db} is {'empty' if db.exists() else 'missing'}",
                                f"Restore {db.name} from your backup")


def _refuse_key_material_beside(data: Path, state: str,
                                remedy: str = "Point at the deployment's database") -> None:
    found = []
    if (data / ROOT_KEY).exists():
        found.append(ROOT_KEY)
    keks = _kek_files(data)
    if keks:
        found.append(f"{keks} vault key file{'s' if keks != 1 else ''} in {KEYRING_DIR}/")
    if found:
        raise StartupRefused(
            f"{state}, but {data} holds {' and '.join(found)} of an existing "
            f"deployment: starting would create an empty deployment beside them. {remedy}; "
            f"or, to start a new deployment, move {ROOT_KEY} and {KEYRING_DIR}/ out of "
            f"{data} (nothing was created)")


def open_storage(data: Path, db: Path, url: str | None = None, root_key: bytes | None = None
                 ) -> tuple[Engines, Repository, Barrier]:
    """The database (the SQLite file `db`, or the PostgreSQL database at `url`) behind the
    barrier, after the checks above; StartupRefused (or a StorageError when the database
    cannot be read) with nothing created otherwise.

    `root_key`: given by a seal (production); None: the dev seal's key file in `data`.
    The vaults' key-encryption keys live in the database where nodes share only it (a
    PostgreSQL URL, or a sealed root key), else in `data`/keyring/."""
    secure_permissions(data)
    by_seal = root_key is not None
    if url is None:
        if not by_seal:
            refuse_orphaned_key_material(data, db)
        engines = open_sqlite(db)
    else:
        engines = open_postgres(url)
    try:
        repo = Repository(engines)
        empty = repo.data_key(SYSTEM) is None
        if url is not None and empty and not by_seal:
            _refuse_key_material_beside(data, f"the database {redacted(url)} is empty")
        if not by_seal:
            # A root key is made only for a database that holds nothing sealed yet, and
            # never beside keyring files (they were sealed by the lost one).
            fresh = empty and _kek_files(data) == 0
            root_key = dev_seal_root_key(data / ROOT_KEY, create=fresh)
        assert root_key is not None
        keyring: KeyRing
        if url is not None or by_seal:
            keyring = DatabaseKeyRing(repo, root_key, time.time)
        else:
            # Per-vault key-encryption keys as files beside the database (one node).
            keyring = FileKeyRing(data / KEYRING_DIR, root_key)
        barrier = Barrier(root_key, repo, keyring)
        barrier.verify_root()
    except BaseException:
        engines.dispose()
        raise
    return engines, repo, barrier
