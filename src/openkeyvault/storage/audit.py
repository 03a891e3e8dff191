"""The audit trail's tables: records in batches, and each stream's signed high-water mark.

The stream files (ops/auditsink.py) are the log; these rows are its copy where the nodes
share only the database (`audit_events`, written on PostgreSQL), and the checkpoints that
make a cut tail visible (`audit_streams`, on every backend). One transaction per flush,
never one per request. On PostgreSQL the rows go in with one COPY, which costs the server a
fraction of as many INSERTs; a flush retried after a lost COMMIT answer, whose rows may be
there already, falls back to the INSERTs that keep a row already there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

from openkeyvault.storage.db import Engines
from openkeyvault.storage.schema import audit_events, audit_streams
from openkeyvault.storage.store import Store


@dataclass(frozen=True)
class AuditRow:
    """One record as the table holds it (the JSON line and what is filtered on)."""

    stream: str
    seq: int
    time_ms: int
    vault: str | None
    operation: str
    status: int
    caller: str | None
    upn: str | None  # lower case
    record: str


@dataclass(frozen=True)
class Checkpoint:
    stream: str
    path: str
    seq: int
    chain: str
    mac: str
    updated_ms: int


@dataclass(frozen=True)
class AuditFilter:
    vault: str | None = None
    caller: str | None = None  # object id or user principal name
    operation: str | None = None
    statuses: tuple[int, int] | None = None  # inclusive range of HTTP statuses
    since_ms: int | None = None
    until_ms: int | None = None


class AuditStore(Store):
    def __init__(self, engines: Engines) -> None:
        super().__init__(engines)
        self._dialect = postgresql if engines.dialect == "postgresql" else sqlite_dialect

    def append(self, rows: Sequence[AuditRow], checkpoints: Sequence[Checkpoint]) -> None:
        """Insert `rows` (a row already there is kept: a flush retried after a lost
        COMMIT answer) and move the streams' checkpoints forward, in one transaction."""
        with self._write() as c:
            if rows and not (self._dialect is postgresql and _copied(c, rows)):
                c.execute(self._dialect.insert(audit_events).on_conflict_do_nothing(),
                          [vars(r) for r in rows])
            for checkpoint in checkpoints:
                values = vars(checkpoint)
                insert = self._dialect.insert(audit_streams).values(**values)
                c.execute(insert.on_conflict_do_update(
                    index_elements=[audit_streams.c.stream],
                    set_={k: insert.excluded[k] for k in values if k != "stream"},
                    where=audit_streams.c.seq <= insert.excluded.seq))

    def checkpoints(self) -> dict[str, Checkpoint]:
        with self._r.connect() as c:
            rows = c.execute(select(audit_streams)).all()
        return {r.stream: Checkpoint(**r._mapping) for r in rows}

    def query(self, f: AuditFilter, limit: int) -> list[AuditRow]:
        """Records matching `f`, oldest first, at most `limit`."""
        where: list[Any] = []
        if f.vault is not None:
            where.append(audit_events.c.vault == f.vault.lower())
        if f.caller is not None:
            where.append(or_(audit_events.c.caller == f.caller,
                             audit_events.c.upn == f.caller.lower()))
        if f.operation is not None:
            where.append(func.lower(audit_events.c.operation) == f.operation.lower())
        if f.statuses is not None:
            where.append(audit_events.c.status.between(*f.statuses))
        if f.since_ms is not None:
            where.append(audit_events.c.time_ms >= f.since_ms)
        if f.until_ms is not None:
            where.append(audit_events.c.time_ms < f.until_ms)
        statement = (select(audit_events).where(and_(True, *where))
                     .order_by(audit_events.c.time_ms, audit_events.c.stream,
                               audit_events.c.seq).limit(limit))
        with self._r.connect() as c:
            return [AuditRow(**r._mapping) for r in c.execute(statement).all()]


_COPY = f"COPY audit_events ({', '.join(AuditRow.__dataclass_fields__)}) FROM STDIN"


def _copied(c: Connection, rows: Sequence[AuditRow]) -> bool:
    """COPY `rows` in, under a savepoint; False (and nothing written) when one of them is
    there already, for the caller to insert them one by one."""
    import psycopg

    raw: Any = c.connection.driver_connection
    try:
        with c.begin_nested(), raw.cursor() as cur, cur.copy(_COPY) as copy:
            for r in rows:
                copy.write_row(tuple(vars(r).values()))  # in the columns' order, as _COPY
    except psycopg.errors.UniqueViolation:
        return False
    return True
