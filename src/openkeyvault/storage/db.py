"""Engines. SQLite in WAL mode is the embedded default.

Two engines share one file: reads run in SQLite's autocommit mode (no lock
held between statements, readers never wait for writers in WAL), writes run
in `BEGIN IMMEDIATE` transactions so concurrent writers from several worker
processes queue on the busy timeout instead of failing on lock upgrade.

SQLite's faults of the disk (full, read-only, I/O error, locked) leave this module as
the storage error family (storage/errors.py), never as driver exceptions. On a
read-only file system the database is opened read-only: reads are served, writes
fail as StorageUnavailable.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.dialects import sqlite as sqlite_dialect

from openkeyvault.storage.errors import (
    StartupRefused,
    StorageError,
    StorageFull,
    StorageUnavailable,
)
from openkeyvault.storage.migrate import upgrade as upgrade_schema
from openkeyvault.storage.readcache import (
    DOMAINS,
    ReadCache,
    SqliteReadCache,
    SqlReadCache,
    ensure_rows,
)
from openkeyvault.storage.schema import generations

BUSY_TIMEOUT_MS = 15_000

# SQLite result codes (the primary code is the low byte of an extended one).
_FULL = 13
_IOERR_SHMSIZE = 10 | (19 << 8)  # the shared-memory file could not grow: no space
_UNAVAILABLE = {5: "is locked", 6: "is locked", 7: "is out of memory",
                8: "is read-only", 10: "hit an I/O error", 11: "is damaged",
                14: "cannot be opened", 15: "is locked", 26: "is not a database"}


def storage_error(exc: BaseException) -> StorageError | None:
    """The storage fault an SQLite error stands for, or None for an error of the caller
    (a constraint, a syntax error), which stays what it is."""
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(exc, sqlite3.Error) or code is None:
        return None
    if code & 0xFF == _FULL or code == _IOERR_SHMSIZE:
        return StorageFull("the database's disk is full (no space left on device)")
    what = _UNAVAILABLE.get(code & 0xFF)
    if what is None:
        return None
    return StorageUnavailable(f"the database {what} ({getattr(exc, 'sqlite_errorname', code)})")


def _reraise(e: sqlite3.Error) -> NoReturn:
    """Raise the storage fault `e` stands for, else `e` itself. (A plain try/except at
    each call: no context manager on the hot path.)"""
    fault = storage_error(e)
    if fault is None:
        raise e
    raise fault from None


@dataclass(frozen=True)
class Engines:
    read: Engine
    write: Engine
    fast: FastReader | None = field(default=None, compare=False)
    # Memoised reads, fresh by domain generations (storage/readcache.py).
    cache: ReadCache = field(default=None, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.cache is None:
            object.__setattr__(self, "cache", SqliteReadCache(self.fast) if self.fast
                               else SqlReadCache(self.read))

    @property
    def dialect(self) -> str:
        return self.write.dialect.name

    def dispose(self) -> None:
        self.read.dispose()
        self.write.dispose()
        if self.fast is not None:
            self.fast.close()


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

    def __init__(self, path: Path, uri: str | None = None) -> None:
        self._path = path
        self._uri = uri  # a `file:` URI (read-only mode) to open instead of the path
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []  # every thread's, for close()
        self._dialect = sqlite_dialect.dialect(paramstyle="qmark")
        self._compiled: dict[int, tuple[str, tuple[str, ...], dict[str, Any], Any]] = {}

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self._uri or self._path, timeout=BUSY_TIMEOUT_MS / 1000,
                                       check_same_thread=False, uri=self._uri is not None)
                configure_sqlite(conn)
            except sqlite3.Error as e:
                _reraise(e)
            self._local.conn = conn
            self._opened.append(conn)
        return conn

    def close(self) -> None:
        """Close every thread's connection (the last one closed lets SQLite fold the
        write-ahead log into the database and remove its side files)."""
        opened, self._opened = self._opened, []
        for conn in opened:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    def data_version(self) -> int:
        """SQLite's `PRAGMA data_version` on this thread's connection: it changes whenever
        another connection commits (storage/readcache.py)."""
        try:
            return int(self._conn().execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as e:
            _reraise(e)

    def all(self, statement: Any, params: dict[str, Any]) -> tuple[Any, ...]:
        sql, values, row_type = self._prepare(statement, params)
        try:
            rows = self._conn().execute(sql, values).fetchall()
        except sqlite3.Error as e:
            _reraise(e)
        return tuple(row_type(*r) for r in rows)

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
        try:
            row = self._conn().execute(sql, values).fetchone()
        except sqlite3.Error as e:
            _reraise(e)
        return row_type(*row) if row is not None else None


def _sqlite_engine(target: str, immediate: bool) -> Engine:
    engine = create_engine(
        f"sqlite:///{target}",
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        pool_size=8,
        max_overflow=16,
        hide_parameters=True,  # errors must never carry row values into logs
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        configure_sqlite(dbapi_conn)

    @event.listens_for(engine, "handle_error")
    def _on_error(context: Any) -> None:
        fault = storage_error(context.original_exception)
        if fault is not None:
            raise fault from None

    if immediate:

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _has_pending_wal(path: Path) -> bool:
    try:
        return os.stat(f"{path}-wal").st_size > 0
    except FileNotFoundError:
        return False


def _read_only_uri(path: Path) -> str:
    """`immutable`: SQLite needs no -shm file (which a read-only disk cannot hold) and
    takes no locks: right only where no one can write, i.e. on a read-only file system."""
    return f"file:{quote(str(path.resolve()))}?mode=ro&immutable=1"


def _open(target: str, immediate: bool, path: Path, uri: str | None) -> Engines:
    engines = Engines(read=_sqlite_engine(target, False),
                      write=_sqlite_engine(target, immediate), fast=FastReader(path, uri))
    try:
        # Read-only file system: a database at the schema head is only read.
        _prepare(engines, read_only=not immediate)
    except BaseException:
        engines.dispose()
        raise
    return engines


def _prepare(engines: Engines, read_only: bool = False) -> None:
    """Bring the schema to this version's and create what a new database lacks."""
    upgrade_schema(engines.write, read_only=read_only)
    _ensure_generations(engines)


def _ensure_generations(engines: Engines) -> None:
    """The generation rows of a new database (nothing is written when they exist, so a
    read-only database opens)."""
    with engines.read.connect() as c:
        count = c.execute(select(func.count()).select_from(generations)).scalar()
    if count != len(DOMAINS):
        with engines.write.begin() as c:
            ensure_rows(c)


def open_sqlite(path: Path) -> Engines:
    """Open (or create) the database. On a read-only file system an existing database
    opens read-only; StorageError when it cannot be opened at all."""
    if _read_only_fs(path.parent):
        if not path.exists():
            raise StartupRefused(f"{path} does not exist and its file system is read-only")
        if _has_pending_wal(path):
            # Recent commits still in the write-ahead log: reading around them would serve
            # stale data, and a read-only disk cannot fold them into the database.
            try:
                return _open(str(path), False, path, None)
            except StorageError:
                raise StartupRefused(
                    f"{path.name}-wal holds changes not yet written to {path.name}, and the "
                    "file system is read-only: mount it read-write once (start the server "
                    "and stop it cleanly), then read-only again") from None
        uri = _read_only_uri(path)
        return _open(f"{uri}&uri=true", False, path, uri)
    if not path.exists():
        path.touch(mode=0o600)
    return _open(str(path), True, path, None)


# ---- PostgreSQL ---------------------------------------------------------------------
POSTGRES_POOL_SIZE = 8  # per process; the workers of a node each have their own pool
POSTGRES_CONNECT_SECONDS = 10


def is_database_url(target: str) -> bool:
    return target.startswith(("postgresql:", "postgresql+psycopg:", "postgres:"))


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(_driver_url(url)).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL that does not parse is shown by its scheme only
        return url.split(":", 1)[0] + "://..."


def _driver_url(url: str) -> str:
    """`postgresql://` and `postgres://` (libpq's forms) with the psycopg 3 driver."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def postgres_error(exc: BaseException) -> StorageError | None:
    """The storage fault a psycopg error stands for: the server unreachable or going away,
    out of disk; None for an error of the caller (a constraint, a syntax error)."""
    import psycopg

    if isinstance(exc, psycopg.errors.DiskFull):
        return StorageFull("the database's disk is full (PostgreSQL: could not extend a file)")
    if isinstance(exc, psycopg.OperationalError | psycopg.errors.AdminShutdown |
                  psycopg.errors.CannotConnectNow):
        return StorageUnavailable("the database is unreachable")
    return None


def open_postgres(url: str) -> Engines:
    """Engines on a PostgreSQL database (READ COMMITTED; every compare-and-set is made
    safe by the SQL itself, storage/store.py). StorageUnavailable when it cannot be
    reached."""
    engine = create_engine(
        _driver_url(url),
        pool_size=POSTGRES_POOL_SIZE,
        max_overflow=2 * POSTGRES_POOL_SIZE,
        pool_pre_ping=True,  # a connection the server dropped (restart) is replaced
        pool_recycle=1800,
        hide_parameters=True,  # errors must never carry row values into logs
        connect_args={"connect_timeout": POSTGRES_CONNECT_SECONDS,
                      "application_name": "openkeyvault"},
    )

    @event.listens_for(engine, "handle_error")
    def _on_error(context: Any) -> None:
        fault = postgres_error(context.original_exception)
        if fault is not None:
            raise fault from None

    engines = Engines(read=engine, write=engine)
    try:
        _prepare(engines)
    except BaseException:
        engines.dispose()
        raise
    return engines


def open_database(target: str | Path) -> Engines:
    """A database URL (PostgreSQL) or an SQLite file's path."""
    if isinstance(target, str) and is_database_url(target):
        return open_postgres(target)
    return open_sqlite(Path(target))
