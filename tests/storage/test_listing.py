"""Listing reads on every backend: pages in order, deleted and live apart, and the hot-path
reader on PostgreSQL surviving connections the server dropped.

The page queries were shaped so that a page costs the same in a vault of a million
objects (benchmarks/storage_scale.py measures that); these tests pin what they return.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from openkeyvault.storage.db import open_database
from openkeyvault.storage.records import VersionRecord
from openkeyvault.storage.repository import Repository
from tests.support.postgres import PostgresCluster


@pytest.fixture
def repo(database: str) -> Iterator[Repository]:
    engines = open_database(database)
    try:
        yield Repository(engines)
    finally:
        engines.dispose()


def _version(name: str, version: str | None = None) -> VersionRecord:
    return VersionRecord(name=name, version=version or uuid.uuid4().hex, created=1, updated=1,
                         enabled=True, sealed=b"x", key_version=1)


def test_versions_are_paged_in_order_to_the_last(repo: Repository) -> None:
    vault = repo.create_vault("pages", "vault", "standard", 90, False, 1).id
    written = [f"{i:032x}" for i in range(60)]
    for v in written:
        repo.add_version(vault, "secrets", _version("Many", v))
    repo.add_version(vault, "secrets", _version("other"))
    seen: list[str] = []
    after = None
    while True:
        page = repo.list_versions(vault, "secrets", "many", after, 25)
        seen += [r.version for r in page]
        if len(page) < 25:
            break
        after = page[-1].seq
        if len(seen) == 50:  # a version added while paging comes on the last page
            repo.add_version(vault, "secrets", _version("many", "f" * 32))
            written.append("f" * 32)
    assert seen == written
    assert {r.name for r in repo.list_versions(vault, "secrets", "many", None, 5)} == {"Many"}
    repo.soft_delete(vault, "secrets", "many", 2, 3)
    assert repo.list_versions(vault, "secrets", "many", None, 25) == []


def test_deleted_and_live_objects_are_listed_apart_in_name_order(repo: Repository) -> None:
    vault = repo.create_vault("apart", "vault", "standard", 90, False, 1).id
    other = repo.create_vault("elsewhere", "vault", "standard", 90, False, 1).id
    names = [f"n{i:03d}" for i in range(40)]
    for name in names:
        repo.add_version(vault, "secrets", _version(name))
        repo.add_version(vault, "secrets", _version(name))  # the latest is listed
    repo.add_version(other, "secrets", _version("n000"))
    repo.soft_delete(other, "secrets", "n000", 2, 3)
    deleted = names[::3]
    for name in deleted:
        repo.soft_delete(vault, "secrets", name, 2, 3)

    def pages(is_deleted: bool) -> list[str]:
        out: list[str] = []
        after = None
        while page := repo.list_latest(vault, "secrets", is_deleted, after, 4):
            out += [r.name for r in page]
            after = page[-1].name.lower()
        return out

    assert pages(True) == deleted
    assert pages(False) == [n for n in names if n not in deleted]
    latest = repo.list_latest(vault, "secrets", True, None, 1)[0]
    assert latest.version == repo.get_version(vault, "secrets", "n000", None, deleted=True
                                              ).version
    assert latest.scheduled_purge_date == 3


def test_newest_data_keys_are_read_in_one_go(repo: Repository) -> None:
    repo.add_data_key_if_absent("vault:1", lambda v: b"one-1", 1)
    repo.add_data_key_version("vault:1", lambda v: f"one-{v}".encode(), lambda v, w: None, 2)
    repo.add_data_key_if_absent("vault:2", lambda v: b"two-1", 1)
    newest = repo.newest_data_keys()
    assert newest["vault:1"] == (2, b"one-2")
    assert newest["vault:2"] == (1, b"two-1")


def test_reads_survive_connections_the_server_dropped(database: str,
                                                      request: pytest.FixtureRequest) -> None:
    if not database.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite has no server to drop connections")
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    engines = open_database(database)
    try:
        repo = Repository(engines)
        repo.create_vault("dropped", "vault", "standard", 90, False, 1)
        assert repo.get_vault("dropped") is not None
        dbname = database.rsplit("/", 1)[1].split("?", 1)[0]
        cluster.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()")
        assert repo.get_vault("nothere") is None  # a read on a new connection
        assert repo.get_vault("dropped") is not None
    finally:
        engines.dispose()
