"""The barrier with a keyring: vault data keys wrapped by a KEK kept outside the database,
destroyed so that nothing the owner sealed opens again — in this process or any other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from openkeyvault.crypto import aead
from openkeyvault.storage.barrier import (
    KEK_WRAPPED,
    SYSTEM,
    Barrier,
    BarrierError,
    kek_wrapped,
    vault_owner,
)
from openkeyvault.storage.db import Engines, open_sqlite
from openkeyvault.storage.keyring import FileKeyRing
from openkeyvault.storage.repository import Repository
from openkeyvault.storage.schema import data_keys

NOW = 1_700_000_000
V1, V2 = vault_owner(1), vault_owner(2)
CTX = b"okv/test/context"


@pytest.fixture
def root() -> bytes:
    return aead.new_key()


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    e = open_sqlite(tmp_path / "okv.db")
    yield e
    e.dispose()


@pytest.fixture
def repo(engines: Engines) -> Repository:
    return Repository(engines)


def keyring(tmp_path: Path, root: bytes) -> FileKeyRing:
    return FileKeyRing(tmp_path / "keyring", root)


@pytest.fixture
def barrier(tmp_path: Path, repo: Repository, root: bytes) -> Barrier:
    b = Barrier(root, repo, keyring(tmp_path, root))
    for owner in (SYSTEM, V1, V2):
        b.ensure_owner(owner, NOW)
    return b


def wrapped_keys(engines: Engines, owner: str) -> dict[int, bytes]:
    with engines.read.connect() as c:
        return {r.version: r.wrapped for r in c.execute(
            select(data_keys.c.version, data_keys.c.wrapped).where(data_keys.c.owner == owner))}


def test_vault_data_keys_are_wrapped_by_a_kek_and_system_by_the_root(
        barrier: Barrier, engines: Engines, tmp_path: Path) -> None:
    assert all(kek_wrapped(w) for w in wrapped_keys(engines, V1).values())
    assert not any(kek_wrapped(w) for w in wrapped_keys(engines, SYSTEM).values())
    assert sorted(p.name for p in (tmp_path / "keyring").iterdir()) == [
        "vault.1.kek", "vault.2.kek"]
    version, sealed = barrier.seal(V1, CTX, b"s3cret")
    assert barrier.open(V1, version, CTX, sealed) == b"s3cret"


def test_the_root_key_alone_does_not_open_a_vault_data_key(barrier: Barrier, repo: Repository,
                                                           root: bytes) -> None:
    version, sealed = barrier.seal(V1, CTX, b"s3cret")
    without_keyring = Barrier(root, repo)
    with pytest.raises(BarrierError, match="key-encryption key"):
        without_keyring.open(V1, version, CTX, sealed)
    # The system owner needs no keyring.
    sv, ssealed = barrier.seal(SYSTEM, CTX, b"system")
    assert without_keyring.open(SYSTEM, sv, CTX, ssealed) == b"system"


def test_a_missing_or_foreign_kek_file_refuses(barrier: Barrier, repo: Repository, root: bytes,
                                               tmp_path: Path) -> None:
    v1, sealed1 = barrier.seal(V1, CTX, b"one")
    ring = tmp_path / "keyring"
    # vault 2's KEK under vault 1's name: sealed to another owner, it does not open.
    (ring / "vault.1.kek").unlink()
    (ring / "vault.1.kek").write_bytes((ring / "vault.2.kek").read_bytes())
    (ring / "vault.1.kek").chmod(0o600)
    with pytest.raises(BarrierError, match="key-encryption key"):
        Barrier(root, repo, keyring(tmp_path, root)).open(V1, v1, CTX, sealed1)
    (ring / "vault.1.kek").unlink()
    with pytest.raises(BarrierError, match="gone"):
        Barrier(root, repo, keyring(tmp_path, root)).open(V1, v1, CTX, sealed1)


def test_destroy_owner_shreds_only_that_owner(barrier: Barrier, engines: Engines,
                                              tmp_path: Path) -> None:
    v1, sealed1 = barrier.seal(V1, CTX, b"one")
    v2, sealed2 = barrier.seal(V2, CTX, b"two")
    vs, sealeds = barrier.seal(SYSTEM, CTX, b"sys")
    barrier.destroy_owner(V1)
    assert not (tmp_path / "keyring" / "vault.1.kek").exists()
    assert wrapped_keys(engines, V1) == {}
    with pytest.raises(BarrierError):
        barrier.open(V1, v1, CTX, sealed1)
    with pytest.raises(BarrierError):
        barrier.seal(V1, CTX, b"new")
    assert barrier.open(V2, v2, CTX, sealed2) == b"two"
    assert barrier.open(SYSTEM, vs, CTX, sealeds) == b"sys"
    barrier.destroy_owner(V1)  # idempotent


def test_the_system_owner_cannot_be_destroyed(barrier: Barrier, engines: Engines) -> None:
    before = wrapped_keys(engines, SYSTEM)
    with pytest.raises(ValueError, match="system"):
        barrier.destroy_owner(SYSTEM)
    assert wrapped_keys(engines, SYSTEM) == before
    v, sealed = barrier.seal(SYSTEM, CTX, b"still")
    assert barrier.open(SYSTEM, v, CTX, sealed) == b"still"


def test_another_process_with_the_owner_cached_refuses_after_destroy(
        barrier: Barrier, tmp_path: Path, root: bytes) -> None:
    """Two barriers on one data directory, as two worker processes: each its own engines."""
    other_engines = open_sqlite(tmp_path / "okv.db")
    try:
        worker = Barrier(root, Repository(other_engines), keyring(tmp_path, root))
        v1, sealed1 = barrier.seal(V1, CTX, b"one")
        v2, sealed2 = barrier.seal(V2, CTX, b"two")
        assert worker.open(V1, v1, CTX, sealed1) == b"one"  # now cached in the worker
        assert worker.open(V2, v2, CTX, sealed2) == b"two"
        barrier.destroy_owner(V1)
        with pytest.raises(BarrierError):
            worker.open(V1, v1, CTX, sealed1)
        with pytest.raises(BarrierError):
            worker.seal(V1, CTX, b"planted")
        assert worker.open(V2, v2, CTX, sealed2) == b"two"
    finally:
        other_engines.dispose()


def test_a_reused_owner_id_gets_a_new_key_everywhere(barrier: Barrier, tmp_path: Path,
                                                     root: bytes) -> None:
    """A vault id freed by a purge may be given to a new vault: no process may keep using
    the old data key for it."""
    other_engines = open_sqlite(tmp_path / "okv.db")
    try:
        worker = Barrier(root, Repository(other_engines), keyring(tmp_path, root))
        v_old, sealed_old = worker.seal(V1, CTX, b"old")
        barrier.destroy_owner(V1)
        barrier.ensure_owner(V1, NOW + 1)
        v_new, sealed_new = worker.seal(V1, CTX, b"new")  # the worker's cache was dropped
        assert barrier.open(V1, v_new, CTX, sealed_new) == b"new"
        with pytest.raises(BarrierError):
            barrier.open(V1, v_old, CTX, sealed_old)
        with pytest.raises(BarrierError):
            worker.open(V1, v_old, CTX, sealed_old)
    finally:
        other_engines.dispose()


def test_legacy_root_wrapped_keys_keep_working_and_move_under_a_kek_at_rotation(
        tmp_path: Path, repo: Repository, engines: Engines, root: bytes) -> None:
    legacy = Barrier(root, repo)  # a data directory from before KEKs existed
    legacy.ensure_owner(V1, NOW)
    v1, sealed1 = legacy.seal(V1, CTX, b"from-before")
    assert not any(kek_wrapped(w) for w in wrapped_keys(engines, V1).values())

    barrier = Barrier(root, repo, keyring(tmp_path, root))
    assert barrier.open(V1, v1, CTX, sealed1) == b"from-before"
    barrier.ensure_owner(V1, NOW)  # does not touch an owner that has keys
    assert not (tmp_path / "keyring").exists() or not list((tmp_path / "keyring").iterdir())

    v2 = barrier.rotate_owner(V1, NOW + 1)
    assert v2 == v1 + 1
    keys = wrapped_keys(engines, V1)
    assert sorted(keys) == [v1, v2] and all(w.startswith(KEK_WRAPPED) for w in keys.values())
    assert (tmp_path / "keyring" / "vault.1.kek").exists()
    new_version, sealed2 = barrier.seal(V1, CTX, b"after")
    assert new_version == v2
    assert barrier.open(V1, v1, CTX, sealed1) == b"from-before"  # same key, rewrapped
    assert barrier.open(V1, v2, CTX, sealed2) == b"after"

    barrier.destroy_owner(V1)
    for v, sealed in ((v1, sealed1), (v2, sealed2)):
        with pytest.raises(BarrierError):
            barrier.open(V1, v, CTX, sealed)


def test_rotation_is_seen_by_another_process(barrier: Barrier, tmp_path: Path,
                                             root: bytes) -> None:
    other_engines = open_sqlite(tmp_path / "okv.db")
    try:
        worker = Barrier(root, Repository(other_engines), keyring(tmp_path, root))
        assert worker.seal(V1, CTX, b"x")[0] == 1
        v2 = barrier.rotate_owner(V1, NOW + 1)
        assert worker.seal(V1, CTX, b"y")[0] == v2
    finally:
        other_engines.dispose()


def test_opening_an_older_version_does_not_make_it_current(barrier: Barrier) -> None:
    v1, sealed1 = barrier.seal(V1, CTX, b"one")
    v2 = barrier.rotate_owner(V1, NOW + 1)
    fresh = barrier  # cache emptied by the rotation
    assert fresh.open(V1, v1, CTX, sealed1) == b"one"
    assert fresh.seal(V1, CTX, b"two")[0] == v2


def test_the_root_key_is_needed_even_with_the_keyring(barrier: Barrier, repo: Repository,
                                                      tmp_path: Path) -> None:
    version, sealed = barrier.seal(V1, CTX, b"s3cret")
    intruder_root = aead.new_key()
    intruder = Barrier(intruder_root, repo, keyring(tmp_path, intruder_root))
    with pytest.raises(BarrierError):
        intruder.open(V1, version, CTX, sealed)


def test_no_data_key_is_stored_when_the_kek_cannot_be_made(tmp_path: Path, repo: Repository,
                                                           root: bytes) -> None:
    broken = Barrier(root, repo, FileKeyRing(tmp_path / "missing" / "keyring", root))
    with pytest.raises(BarrierError, match="key-encryption key"):
        broken.ensure_owner(V1, NOW)
    assert repo.data_key(V1) is None
    broken.ensure_owner(SYSTEM, NOW)  # the system owner needs no keyring
    assert repo.data_key(SYSTEM) is not None
