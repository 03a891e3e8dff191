"""Leases: a duty that one process of the whole deployment performs at a time.

A lease is a row (name, holder, expires). Taking it and renewing it are one conditional
upsert: the row is written only if it is free, expired or already the caller's, and
RETURNING tells whether it was. On PostgreSQL at READ COMMITTED the conflicting row is
locked and the condition re-checked on its latest version, so of two processes racing
for a free lease exactly one gets it; on SQLite writers are serialised anyway.

Expiry is decided by the DATABASE's clock (`now()` on PostgreSQL, `julianday('now')` on
SQLite), never by a node's: nodes whose clocks disagree still agree on who holds a lease.
The deployment's own clock (the dev server's movable one) plays no part here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, bindparam, delete, literal_column, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

from openkeyvault.storage.db import Engines
from openkeyvault.storage.schema import leases
from openkeyvault.storage.store import Store

# The database's time in Unix milliseconds, as a SQL expression of each dialect.
_NOW_MS = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)",
    "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
}
HOLDER_LENGTH = 200


@dataclass(frozen=True)
class Lease:
    holder: str
    remaining: float  # seconds until it expires, by the database's clock


def _statements(dialect: str) -> tuple[Any, Any, Any]:
    """The acquire, release and read statements of `dialect` (built once per store)."""
    now = literal_column(_NOW_MS[dialect], BigInteger)
    insert = (postgresql if dialect == "postgresql" else sqlite_dialect).insert(leases)
    take = insert.values(name=bindparam("name"), holder=bindparam("holder"),
                         expires=now + bindparam("ttl_ms", type_=BigInteger))
    acquire = take.on_conflict_do_update(
        index_elements=[leases.c.name],
        set_={"holder": take.excluded.holder, "expires": take.excluded.expires},
        where=or_(leases.c.holder == take.excluded.holder, leases.c.expires <= now),
    ).returning(leases.c.holder)
    release = delete(leases).where(leases.c.name == bindparam("name"),
                                   leases.c.holder == bindparam("holder"))
    read = select(leases.c.holder, (leases.c.expires - now).label("left_ms")).where(
        leases.c.name == bindparam("name"), leases.c.expires > now)
    return acquire, release, read


class LeaseStore(Store):
    def __init__(self, engines: Engines) -> None:
        super().__init__(engines)
        self._acquire, self._release, self._read = _statements(engines.dialect)

    def acquire(self, name: str, holder: str, ttl: float) -> bool:
        """Take the lease `name` for `holder` for `ttl` seconds if it is free or expired,
        or renew it if `holder` has it; whether `holder` now holds it."""
        if not 0 < len(holder) <= HOLDER_LENGTH:
            raise ValueError(f"a lease holder is 1 to {HOLDER_LENGTH} characters")
        params = {"name": name, "holder": holder, "ttl_ms": max(1, round(ttl * 1000))}
        with self._write() as c:
            return c.execute(self._acquire, params).first() is not None

    def release(self, name: str, holder: str) -> bool:
        """Give the lease up at once (another process may take it at its next try), if
        `holder` still has it; whether it did."""
        with self._write() as c:
            return bool(c.execute(self._release, {"name": name, "holder": holder}).rowcount)

    def holder(self, name: str) -> Lease | None:
        """Who holds the lease `name` now, None if no one (free or expired)."""
        with self._r.connect() as c:
            row = c.execute(self._read, {"name": name}).first()
        return None if row is None else Lease(row.holder, row.left_ms / 1000)
