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
import queue
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
    fast: FastReader | PostgresFastReader | None = field(default=None, compare=False)
    # Memoised reads, fresh by domain generations (storage/readcache.py).
    cache: ReadCache = field(default=None, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.cache is None:
            object.__setattr__(self, "cache", SqliteReadCache(self.fast)
                               if isinstance(self.fast, FastReader)
                               else SqlReadCache(self.read, self.fast))

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
            cursor: sqlite3.Cursor | None = getattr(self._local, "version_cursor", None)
            if cursor is None:  # one per thread, kept: no cursor made per request
                cursor = self._local.version_cursor = self._conn().cursor()
            return int(cursor.execute("PRAGMA data_version").fetchone()[0])
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
# libpq options of every connection. TCP keepalives: a server whose host died or was cut
# off is noticed in about a minute (30 s idle, then 3 probes 10 s apart) instead of the
# system's two hours, so a request waiting on it ends as a 503. (Unix sockets ignore them.)
POSTGRES_CONNECT_ARGS = {"connect_timeout": POSTGRES_CONNECT_SECONDS,
                         "application_name": "openkeyvault",
                         "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                         "keepalives_count": 3}


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
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        # Connected to a standby (a failover the address has not followed yet).
        return StorageUnavailable("the database accepts no writes (read-only: a standby?)")
    if isinstance(exc, psycopg.errors.TransactionRollback):
        return StorageUnavailable("the database rolled a transaction back (deadlock or "
                                  "serialization failure)")
    if isinstance(exc, psycopg.OperationalError):  # gone, shutting down, starting up, ...
        return StorageUnavailable("the database is unreachable")
    return None


class PostgresFastReader:
    """Hot-path reads on PostgreSQL: plain psycopg connections in autocommit, statements
    compiled once.

    Through SQLAlchemy each read costs four round trips (the pool's ping, BEGIN, the query,
    the ROLLBACK on return) and the Python around them; here it is one, and psycopg
    prepares a statement on a connection once it has run a few times. Only single-statement
    reads come here (no transaction to keep), so autocommit changes nothing they see.
    """

    def __init__(self, engine: Engine, size: int = POSTGRES_POOL_SIZE) -> None:
        self._engine = engine
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()  # a cursor per idle connection
        self._slots = threading.BoundedSemaphore(size)  # connections open or being opened
        self._compiled: dict[int, tuple[str, dict[str, Any], Any]] = {}
        self._closed = False

    def _connect(self) -> Any:
        import psycopg

        cargs, cparams = self._engine.dialect.create_connect_args(self._engine.url)
        return psycopg.connect(*cargs, **{**cparams, **POSTGRES_CONNECT_ARGS,
                                          "autocommit": True})

    def _prepare(self, statement: Any) -> tuple[str, dict[str, Any], Any]:
        entry = self._compiled.get(id(statement))
        if entry is None:
            compiled = statement.compile(dialect=self._engine.dialect)
            row_type = _row_type(tuple(c.key for c in statement.selected_columns))
            entry = (str(compiled), dict(compiled.params), row_type)
            self._compiled[id(statement)] = entry
        return entry

    def _fetch(self, statement: Any, params: dict[str, Any], one: bool) -> Any:
        import psycopg

        sql, defaults, row_type = self._prepare(statement)
        values = {n: params.get(n, v) for n, v in defaults.items()}
        for attempt in (1, 2):  # a connection the server dropped is replaced once
            try:
                cur = self._idle.get_nowait()  # reused: a new cursor per read costs more
            except queue.Empty:
                cur = None
            if cur is None:
                if not self._slots.acquire(timeout=POSTGRES_CONNECT_SECONDS):
                    raise StorageUnavailable("the database is unreachable (no connection)")
                try:
                    cur = self._connect().cursor()
                except psycopg.Error:
                    self._slots.release()
                    raise StorageUnavailable("the database is unreachable") from None
            conn = cur.connection
            try:
                cur.execute(sql, values)
                rows = [cur.fetchone()] if one else cur.fetchall()
            except psycopg.Error as e:
                broken = conn.closed or conn.broken
                with contextlib.suppress(psycopg.Error):
                    conn.close()
                self._slots.release()
                fault = postgres_error(e)
                if fault is None:
                    raise
                if broken:
                    # The idle ones were opened before the same server went away (a
                    # restart): drop them all, or each would fail one request in turn.
                    self._drop_idle()
                    if attempt == 1:
                        continue
                raise fault from None
            if self._closed:
                conn.close()
                self._slots.release()
            else:
                self._idle.put(cur)
            if one:
                return row_type(*rows[0]) if rows[0] is not None else None
            return tuple(row_type(*r) for r in rows)
        raise AssertionError("unreachable")

    def first(self, statement: Any, params: dict[str, Any]) -> Any:
        """The first row of `statement` (a Core select with bindparams), as a named tuple."""
        return self._fetch(statement, params, True)

    def all(self, statement: Any, params: dict[str, Any]) -> tuple[Any, ...]:
        return self._fetch(statement, params, False)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close the idle connections (one in use is closed when it comes back)."""
        self._closed = True
        self._drop_idle()

    def _drop_idle(self) -> None:
        while True:
            try:
                cur = self._idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                cur.connection.close()
            self._slots.release()


# One round trip: only `off` is raised (local, remote_write, remote_apply are kept).
_DURABLE_COMMITS = ("SELECT set_config('synchronous_commit', 'on', false) "
                    "WHERE current_setting('synchronous_commit') = 'off'")


def durable_commits(dbapi_conn: Any) -> None:
    """Turn `synchronous_commit = off` (of the server, database or role) up to `on` for
    this session: with it off, PostgreSQL acknowledges a COMMIT before its WAL is written,
    and a crash of the database server loses writes the clients were told had succeeded
    (a key that was created, then never existed)."""
    with dbapi_conn.cursor() as cur:
        cur.execute(_DURABLE_COMMITS)
    dbapi_conn.commit()


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
        connect_args=POSTGRES_CONNECT_ARGS,
    )

    @event.listens_for(engine, "handle_error")
    def _on_error(context: Any) -> None:
        if context.is_pre_ping:
            # The pool's ping on checkout found a dead connection: left alone, the pool
            # replaces it (a fault raised here would fail the request instead); when the
            # new connection cannot be made either, that error comes through here.
            return
        fault = postgres_error(context.original_exception)
        if fault is not None:
            raise fault from None

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        durable_commits(dbapi_conn)

    engines = Engines(read=engine, write=engine, fast=PostgresFastReader(engine))
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


def reachable(engines: Engines) -> bool:
    """Whether the database answers a one-row read now (/healthz says so). Never raises:
    the health check must answer while the database is away."""
    try:
        with engines.read.connect() as c:
            c.execute(select(generations.c.domain).limit(1)).all()
    except Exception:  # noqa: BLE001 - any failure to read is "unreachable"
        return False
    return True
