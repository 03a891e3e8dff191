"""What every storage class shares: the engines, write transactions that move the
generations of the domains they change, and reads memoised under those generations.

The storage contract, for every backend: a compare-and-set is decided inside its write
transaction, on rows that transaction has locked or inserted, never on a read made before
it. Writers of a domain of rarely written rows queue on its generation row (bumped first,
storage/readcache.py); writers of one object lock its `objects` row (`lock_object`);
uniqueness is the database's (`insert_ignore`, unique constraints). SQLite's
`BEGIN IMMEDIATE` serialises all writers anyway; PostgreSQL at READ COMMITTED needs each
of these. tests/storage/test_contract.py races two connections at every one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

from openkeyvault.storage import readcache
from openkeyvault.storage.db import Engines

# A write transaction in progress, as a storage method hands it to its caller's `also`
# hook (what must commit with the change: ops/events.py). Outside storage/ it is only
# passed back to storage methods, never used to run SQL.
Transaction = Connection


class Store:
    def __init__(self, engines: Engines) -> None:
        self._r = engines.read
        self._w = engines.write
        self._fast = engines.fast
        self._cache = engines.cache
        # SQLite's writers hold the whole database (BEGIN IMMEDIATE) for a transaction.
        self._serialised = engines.dialect == "sqlite"

    @contextlib.contextmanager
    def _write(self, *domains: str) -> Iterator[Connection]:
        """A write transaction that changes `domains` (their generations move first, in
        it); afterwards this thread's memoised reads are re-checked, so a request that
        writes, then reads, sees its own write."""
        try:
            with self._w.begin() as c:
                if not domains:
                    yield c
                elif self._serialised:
                    # SQLite: writers queue on the database; the generations move only if
                    # something was written (a read-only database stays untouched).
                    raw = c.connection.dbapi_connection
                    before = raw.total_changes  # type: ignore[union-attr]
                    yield c
                    if raw.total_changes != before:  # type: ignore[union-attr]
                        readcache.bump(c, domains)
                else:
                    readcache.bump(c, domains)  # first: writers of the domain queue on it
                    yield c
        finally:
            self._cache.invalidate()

    # ---- reads ------------------------------------------------------------------
    def _first(self, statement: Any, params: dict[str, Any]) -> Any:
        """The first row of a Core select with bindparams (through the hot-path reader)."""
        if self._fast is not None:
            return self._fast.first(statement, params)
        with self._r.connect() as c:
            return c.execute(statement, params).first()

    def _all(self, statement: Any, params: dict[str, Any]) -> tuple[Any, ...]:
        if self._fast is not None:
            return self._fast.all(statement, params)
        with self._r.connect() as c:
            return tuple(c.execute(statement, params).all())

    def _first_cached(self, domains: tuple[str, ...], statement: Any,
                      params: dict[str, Any]) -> Any:
        """`_first`, memoised while none of `domains` changed. (Keyed by the parameters in
        the caller's order: the same values in another order only miss, never mix up.)"""
        if domains == (readcache.OBJECTS,) and not self._cache.memoises_objects:
            return self._first_object(statement, params)
        memo = self._cache.memo(domains)
        key = (id(statement), False, *params.items())
        if key in memo:
            return memo[key]
        found = memo[key] = self._first(statement, params)
        return found

    def _first_object(self, statement: Any, params: dict[str, Any]) -> Any:
        """`_first` of an object read (params name its `vault_id`), memoised under that
        vault's objects generation where this request's check read it (PostgreSQL)."""
        stamp = self._cache.objects_stamp(params["vault_id"])
        if stamp is None:
            return self._first(statement, params)
        memo = self._cache.objects_memo()
        key = (id(statement), *params.items())
        hit = memo.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        found = self._first(statement, params)
        memo[key] = (stamp, found)
        return found

    def _all_cached(self, domains: tuple[str, ...], statement: Any,
                    params: dict[str, Any]) -> tuple[Any, ...]:
        """`_all`, memoised while none of `domains` changed (the same tuple object while
        it holds, so callers may keep what they derived from it)."""
        memo = self._cache.memo(domains)
        key = (id(statement), True, *params.items())
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = self._all(statement, params)
        return hit

    def snapshot(self, *domains: str) -> dict[Any, Any]:
        """The same object for as long as none of `domains` changed (for this thread): a
        dict, where a caller may also memoise what it decides from `domains` alone (a new,
        empty one as soon as one of them changed; keys must not collide with the reads
        memoised there, whose keys start with an int)."""
        return self._cache.memo(domains)

    def generation(self, domain: str) -> int:
        return self._cache.generation(domain)


def insert_ignore(c: Connection, table: Table, values: dict[str, Any]) -> bool:
    """Insert a row unless it would break a unique constraint; whether it was inserted.
    (`INSERT ... ON CONFLICT DO NOTHING`: no error, so no aborted transaction.)"""
    dialect = postgresql if c.dialect.name == "postgresql" else sqlite_dialect
    key = next(iter(table.primary_key.columns))
    # RETURNING tells (a driver's rowcount does not always: psycopg's is -1 here).
    statement = dialect.insert(table).values(**values).on_conflict_do_nothing().returning(key)
    return c.execute(statement).first() is not None
