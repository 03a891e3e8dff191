"""Engines. SQLite in WAL mode is the embedded default.

Two engines share one file: reads run in SQLite's autocommit mode (no lock
held between statements, readers never wait for writers in WAL), writes run
in `BEGIN IMMEDIATE` transactions so concurrent writers from several worker
processes queue on the busy timeout instead of failing on lock upgrade.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import sqlite as sqlite_dialect

from openkeyvault.ops import requestscope
from openkeyvault.storage.schema import metadata

BUSY_TIMEOUT_MS = 15_000


@dataclass(frozen=True)
class Engines:
    read: Engine
    write: Engine
    fast: FastReader | None = field(default=None, compare=False)

    def dispose(self) -> None:
        self.read.dispose()
        self.write.dispose()


def configure_sqlite(conn: sqlite3.Connection) -> None:
    conn.isolation_level = None  # autocommit; writers issue BEGIN IMMEDIATE themselves
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _row_type(keys: tuple[str, ...]) -> Any:
    return namedtuple("Row", keys)  # noqa: PYI024


class FastReader:
    """Hot-path reads on SQLite: one plain connection per thread, statements compiled once.

    SQLAlchemy's per-execution overhead (pool checkout, result proxies) is several
    times the cost of an indexed SQLite lookup; the few queries on every request
    run here instead, from the same Core statements, so the SQL has one source.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        self._dialect = sqlite_dialect.dialect(paramstyle="qmark")
        self._compiled: dict[int, tuple[str, tuple[str, ...], dict[str, Any], Any]] = {}

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_MS / 1000,
                                   check_same_thread=False)
            configure_sqlite(conn)
            self._local.conn = conn
        return conn

    def invalidate(self) -> None:
        """Make this thread's next memoised read re-check the database (after a write)."""
        self._local.checked_for = None

    def all_cached(self, statement: Any, params: dict[str, Any]) -> tuple[Any, ...]:
        """Every row of `statement`, memoised like `first_cached`."""
        return self._cached(statement, params, all_rows=True)  # type: ignore[no-any-return]

    def first_cached(self, statement: Any, params: dict[str, Any]) -> Any:
        return self._cached(statement, params, all_rows=False)

    def _cached(self, statement: Any, params: dict[str, Any], all_rows: bool) -> Any:
        """`first`, answered from a per-thread memo while the database is unchanged.

        SQLite's `PRAGMA data_version` changes whenever another connection commits,
        so any write anywhere (any worker process, the CLI) empties the memo: it can
        never serve a row that was changed. Meant for rarely-written rows (vaults).
        """
        memo = self.snapshot()
        key = (id(statement), all_rows, *sorted(params.items()))
        if key in memo:
            return memo[key]
        found = memo[key] = (self.all(statement, params) if all_rows
                             else self.first(statement, params))
        return found

    def snapshot(self) -> dict[Any, Any]:
        """This thread's memo, after the freshness check: the same object for as long as the
        database is unchanged, so a caller may keep conclusions drawn from memoised reads
        while `snapshot()` returns the object it drew them under."""
        local = self._local
        memo: dict[Any, Any] | None = getattr(local, "memo", None)
        request = requestscope.current.get()
        # Check once per request (outside a request, on every call).
        if memo is None or not request or getattr(local, "checked_for", None) != request:
            version = self._conn().execute("PRAGMA data_version").fetchone()[0]
            local.checked_for = request
            if memo is None or local.memo_version != version or len(memo) > 1024:
                memo = local.memo = {}
                local.memo_version = version
        return memo

    def all(self, statement: Any, params: dict[str, Any]) -> tuple[Any, ...]:
        sql, values, row_type = self._prepare(statement, params)
        return tuple(row_type(*r) for r in self._conn().execute(sql, values).fetchall())

    def _prepare(self, statement: Any, params: dict[str, Any]) -> tuple[str, tuple[Any, ...], Any]:
        entry = self._compiled.get(id(statement))
        if entry is None:
            compiled = statement.compile(dialect=self._dialect)
            names = tuple(compiled.positiontup or ())
            row_type = _row_type(tuple(c.key for c in statement.selected_columns))
            entry = (str(compiled), names, dict(compiled.params), row_type)
            self._compiled[id(statement)] = entry
        sql, names, defaults, row_type = entry
        return sql, tuple(params[n] if n in params else defaults[n] for n in names), row_type

    def first(self, statement: Any, params: dict[str, Any]) -> Any:
        """The first row of `statement` (a Core select with bindparams), as a named tuple."""
        sql, values, row_type = self._prepare(statement, params)
        row = self._conn().execute(sql, values).fetchone()
        return row_type(*row) if row is not None else None


def _sqlite_engine(path: Path, immediate: bool) -> Engine:
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        pool_size=8,
        max_overflow=16,
        hide_parameters=True,  # errors must never carry row values into logs
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        configure_sqlite(dbapi_conn)

    if immediate:

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def open_sqlite(path: Path) -> Engines:
    if not path.exists():
        path.touch(mode=0o600)
    engines = Engines(read=_sqlite_engine(path, False), write=_sqlite_engine(path, True),
                      fast=FastReader(path))
    metadata.create_all(engines.write)
    return engines
