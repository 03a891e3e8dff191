"""The throwaway PostgreSQL cluster works, and the storage schema is valid PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, make_url, text

from openkeyvault.storage.schema import metadata
from tests.support.postgres import PostgresCluster, postgres_cluster


def test_cluster_serves_a_fresh_database_per_test(postgres: PostgresCluster, pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW fsync")).scalar() == "off"
            assert conn.execute(text("SHOW listen_addresses")).scalar() == ""
            database = conn.execute(text("SELECT current_database()")).scalar()
            assert database == make_url(pg_url).database
            tables = conn.execute(text(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar()
        assert tables == 0
    finally:
        engine.dispose()
    assert postgres.create_database() != pg_url


def test_schema_creates_on_postgresql(pg_url: str) -> None:
    """Every table of storage/schema.py, with its keys and indexes, is accepted."""
    engine = create_engine(pg_url)
    try:
        metadata.create_all(engine)
        found = inspect(engine)
        assert set(found.get_table_names()) == set(metadata.tables)
        with engine.begin() as conn:
            # Autoincrement keys, booleans and binary columns round-trip.
            vault_id = conn.execute(text(
                "INSERT INTO vaults (name, kind, sku, retention_days, purge_protection, created)"
                " VALUES ('v', 'vault', 'standard', 90, true, 1) RETURNING id")).scalar()
            conn.execute(text("INSERT INTO data_keys VALUES ('o', 1, :w, 1)"),
                         {"w": b"\x00\xff" * 8})
            row = conn.execute(text("SELECT purge_protection FROM vaults WHERE id = :i"),
                               {"i": vault_id}).one()
            assert row.purge_protection is True
            wrapped = conn.execute(text("SELECT wrapped FROM data_keys")).scalar()
            assert bytes(wrapped) == b"\x00\xff" * 8
    finally:
        engine.dispose()


def test_cluster_is_stopped_and_removed_even_on_failure() -> None:
    seen: list[Path] = []
    with pytest.raises(RuntimeError, match="boom"), postgres_cluster() as cluster:
        seen.append(cluster.base)
        assert (cluster.data / "postmaster.pid").exists()
        raise RuntimeError("boom")
    assert not seen[0].exists()
