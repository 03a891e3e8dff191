"""Engines. SQLite in WAL mode is the embedded default.

Two engines share one file: reads run in SQLite's autocommit mode (no lock
held between statements, readers never wait for writers in WAL), writes run
in `BEGIN IMMEDIATE` transactions so concurrent writers from several worker
processes queue on the busy timeout instead of failing on lock upgrade.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event

from openkeyvault.storage.schema import metadata

BUSY_TIMEOUT_MS = 15_000


@dataclass(frozen=True)
class Engines:
    read: Engine
    write: Engine

    def dispose(self) -> None:
        self.read.dispose()
        self.write.dispose()


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
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    if immediate:

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def open_sqlite(path: Path) -> Engines:
    if not path.exists():
        path.touch(mode=0o600)
    engines = Engines(read=_sqlite_engine(path, False), write=_sqlite_engine(path, True))
    metadata.create_all(engines.write)
    return engines
