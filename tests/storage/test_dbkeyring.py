"""Vault key-encryption keys in the database (several nodes share only it): the same KEK
on every node, useless without the root key, and destroyed for every node at a purge."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from openkeyvault.crypto.aead import new_key
from openkeyvault.storage.barrier import Barrier, BarrierError, vault_owner
from openkeyvault.storage.db import Engines, open_database
from openkeyvault.storage.dbkeyring import PREFIX, DatabaseKeyRing
from openkeyvault.storage.keyring import KeyRingError
from openkeyvault.storage.repository import Repository
from tests.support.race import race

ROOT = new_key()


@pytest.fixture
def two(database: str) -> Iterator[tuple[Repository, Repository]]:
    engines: list[Engines] = [open_database(database), open_database(database)]
    try:
        yield Repository(engines[0]), Repository(engines[1])
    finally:
        for e in engines:
            e.dispose()


def _barrier(repo: Repository, root: bytes = ROOT) -> Barrier:
    barrier = Barrier(root, repo, DatabaseKeyRing(repo, root, time.time))
    barrier.ensure_owner("system", 1)
    return barrier


def test_nodes_share_a_vault_kek_and_a_purge_shreds_it_for_all(
        two: tuple[Repository, Repository]) -> None:
    a, b = (_barrier(r) for r in two)
    owner = vault_owner(7)
    a.ensure_owner(owner, 1)
    a.rotate_owner(owner, 2)  # data keys wrapped by the KEK
    version, sealed = a.seal(owner, b"ctx", b"the value")
    assert b.open(owner, version, b"ctx", sealed) == b"the value"  # the other node
    a.destroy_owner(owner)
    assert two[0].data_key(PREFIX + owner) is None
    fresh = _barrier(two[1])  # a node with nothing cached
    with pytest.raises(BarrierError):
        fresh.open(owner, version, b"ctx", sealed)


def test_concurrent_creators_get_one_kek(two: tuple[Repository, Repository]) -> None:
    a, b = (DatabaseKeyRing(r, ROOT, time.time) for r in two)
    for i in range(8):
        owner = vault_owner(100 + i)
        ka, kb = race(lambda: a.create(owner), lambda: b.create(owner))  # noqa: B023
        wrapped = ka.wrap(b"k" * 32, b"aad")
        assert kb.unwrap(wrapped, b"aad") == b"k" * 32


def test_a_kek_row_does_not_open_under_another_root_or_owner(
        two: tuple[Repository, Repository]) -> None:
    repo = two[0]
    DatabaseKeyRing(repo, ROOT, time.time).create(vault_owner(1))
    with pytest.raises(KeyRingError):
        DatabaseKeyRing(repo, new_key(), time.time).get(vault_owner(1))
    # the row copied to another owner's name
    version, wrapped = repo.data_key(PREFIX + vault_owner(1)) or (0, b"")
    repo.add_data_key_if_absent(PREFIX + vault_owner(2), lambda v: wrapped, 1)
    with pytest.raises(KeyRingError):
        DatabaseKeyRing(repo, ROOT, time.time).get(vault_owner(2))
