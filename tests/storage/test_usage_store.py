"""The usage table on SQLite and PostgreSQL: adds from concurrent processes all land, a
snapshot only rises, and the meters read from storage count what they should."""

from __future__ import annotations

import calendar
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from sqlalchemy import insert, select

from openkeyvault.ops.usage import record_snapshots, report
from openkeyvault.storage.db import Engines, open_database
from openkeyvault.storage.schema import events, objects, usage, vaults, versions
from openkeyvault.storage.usage import SNAPSHOT, UsageStore

ADDER = textwrap.dedent("""
    import sys
    from openkeyvault.storage.db import open_database
    from openkeyvault.storage.usage import UsageStore

    target, who, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    engines = open_database(target)
    store = UsageStore(engines)
    for i in range(rounds):
        # The shared keys in both processes, plus one of this process's own.
        store.add({("v1", "operations", "2026-12"): 3, ("v2", "operations", "2026-12"): 1,
                   ("v1", "advanced_key_operations", "2026-12"): 2,
                   (who, "operations", "2026-12"): 1})
    engines.dispose()
""")

ROUNDS = 150


def _open(database: str) -> Engines:
    return open_database(database if "://" in database else Path(database))


def test_concurrent_adds_from_two_processes_all_land(database: str) -> None:
    _open(database).dispose()  # migrated once, before the racers start
    procs = [subprocess.Popen([sys.executable, "-c", ADDER, database, who, str(ROUNDS)])
             for who in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=300) == 0
    engines = _open(database)
    try:
        got = {(r.vault, r.meter, r.month): r.count for r in UsageStore(engines).rows()}
    finally:
        engines.dispose()
    assert got == {("v1", "operations", "2026-12"): 2 * 3 * ROUNDS,
                   ("v2", "operations", "2026-12"): 2 * ROUNDS,
                   ("v1", "advanced_key_operations", "2026-12"): 2 * 2 * ROUNDS,
                   ("a", "operations", "2026-12"): ROUNDS,
                   ("b", "operations", "2026-12"): ROUNDS}


def test_add_and_raise_to(database: str) -> None:
    engines = _open(database)
    try:
        store = UsageStore(engines)
        key = ("v1", "operations", "2026-12")
        store.add({key: 5})
        store.add({key: 7, ("v1", "operations", "2027-01"): 0})  # a zero writes nothing
        snap = ("v1", "key_rotation" + SNAPSHOT, "2026-12")
        store.raise_to({snap: 4})
        store.raise_to({snap: 2})  # lower: kept at 4
        store.raise_to({snap: 6})
        got = {(r.vault, r.meter, r.month): r.count for r in store.rows()}
        assert got == {key: 12, snap: 6}
        assert [r.meter for r in store.rows(vault="v1", month="2026-12")] == \
            ["key_rotation" + SNAPSHOT, "operations"]
        assert store.rows(vault="nope") == []
    finally:
        engines.dispose()


DEC = calendar.timegm((2026, 12, 1, 0, 0, 0))
NOV = calendar.timegm((2026, 11, 1, 0, 0, 0))


def _vault(c: object, name: str, kind: str, created: int) -> int:
    row = c.execute(insert(vaults).values(  # type: ignore[attr-defined]
        name=name, kind=kind, sku="premium", retention_days=90, purge_protection=False,
        created=created).returning(vaults.c.id)).first()
    return int(row[0])


def _key(c: object, vault_id: int, name: str, props: list[dict[str, object]],
         created: int, deleted: int | None = None) -> None:
    oid = c.execute(insert(objects).values(  # type: ignore[attr-defined]
        vault_id=vault_id, collection="keys", name=name, name_lc=name.lower(),
        deleted_date=deleted).returning(objects.c.id)).first()[0]
    for i, p in enumerate(props):
        c.execute(insert(versions).values(  # type: ignore[attr-defined]
            object_id=oid, version=f"{name}{i}", created=created, updated=created,
            enabled=True, props=json.dumps(p)))


def test_meters_read_from_storage(database: str) -> None:
    engines = _open(database)
    try:
        with engines.write.begin() as c:
            v = _vault(c, "hsmvault", "vault", NOV)
            _key(c, v, "a", [{"kty": "RSA-HSM", "size": 2048}] * 2, NOV + 10)
            _key(c, v, "b", [{"kty": "EC-HSM", "size": 256}], DEC + 10)
            _key(c, v, "c", [{"kty": "RSA", "size": 4096}], NOV)  # software: not billed
            _key(c, v, "d", [{"kty": "RSA-HSM", "size": 4096}], NOV, deleted=NOV + 100)
            _vault(c, "pool1", "managedHsm", DEC - 3600 * 5 - 1)  # 5 h 1 s in November
            for i, (kind, t) in enumerate([("KeyRotated", DEC + 5), ("KeyRotated", DEC + 6),
                                           ("KeyRotated", NOV + 6),
                                           ("CertificateRenewed", DEC + 7),
                                           ("KeyNearExpiry", DEC + 8)]):
                c.execute(insert(events).values(vault_id=v, type=kind, object_name=f"o{i}",
                                                version="1", time=t))
        store = UsageStore(engines)
        now = DEC + 3600 * 10 + 1  # 10 h 1 s into December
        assert store.hsm_key_versions_by_vault("2026-12") == {
            ("hsmvault", "hsm_key_months"): 2, ("hsmvault", "hsm_advanced_key_months"): 1}
        assert store.hsm_key_versions_by_vault("2026-11") == {
            ("hsmvault", "hsm_key_months"): 2, ("hsmvault", "hsm_advanced_key_months"): 1}
        assert store.pool_hours_by_vault("2026-11", now) == {"pool1": 6}
        assert store.pool_hours_by_vault("2026-12", now) == {"pool1": 11}
        assert store.pool_hours_by_vault("2026-10", now) == {}
        assert store.events_by_vault("KeyRotated", "2026-12") == {"hsmvault": 2}
        assert store.events_by_vault("CertificateRenewed", "2026-12") == {"hsmvault": 1}

        store.add({("hsmvault", "operations", "2026-12"): 9})
        assert record_snapshots(store, now) > 0
        assert record_snapshots(store, now) == 0  # nothing rose: nothing written
        assert record_snapshots(store, now + 3600) == 1  # the pool's next hour
        # The pool is purged: its row goes, the billed hours stay.
        with engines.write.begin() as c:
            c.execute(vaults.delete().where(vaults.c.name == "pool1"))
        now += 3600
        lines = {(ln.vault, ln.meter): ln.count for ln in report(store, now, month="2026-12")}
        assert lines == {("hsmvault", "operations"): 9, ("hsmvault", "hsm_key_months"): 2,
                         ("hsmvault", "hsm_advanced_key_months"): 1,
                         ("hsmvault", "key_rotation"): 2,
                         ("hsmvault", "certificate_renewal"): 1,
                         ("pool1", "managed_hsm_pool_hours"): 12}
        only = report(store, now, vault="pool1", month="2026-11")
        assert [(ln.meter, ln.count) for ln in only] == [("managed_hsm_pool_hours", 6)]
        with engines.read.connect() as c:
            assert c.execute(select(usage.c.count).where(
                usage.c.meter == "managed_hsm_pool_hours" + SNAPSHOT,
                usage.c.month == "2026-12")).scalar() == 12
    finally:
        engines.dispose()
