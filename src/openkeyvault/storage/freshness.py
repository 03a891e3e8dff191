"""PostgreSQL: one freshness check shared by the requests of a worker that wait for it.

Every request must see every write acknowledged before it was sent, on any node, so it
reads the generations (storage/readcache.py) after it arrived. Requests that arrive while
a check is in flight cannot use that one (it may have read before they were sent); they
wait for the next, which is sent as soon as the current one is answered, and share it.
Each request therefore still gets a read made after its arrival, while a busy worker
makes one round trip per batch instead of one per request. The query runs on the
worker's event loop on an asyncio connection of its own, so waiting for it holds no
thread and no interpreter lock.

`requestscope.fresh` carries a request's result to the read cache, which then reads
nothing more for that request (until the request writes: its own next read checks again).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sqlalchemy import Engine, bindparam, func

from openkeyvault.storage.db import POSTGRES_CONNECT_ARGS, postgres_error
from openkeyvault.storage.errors import StorageUnavailable
from openkeyvault.storage.readcache import with_vault_objects
from openkeyvault.storage.schema import vaults


class SharedCheck:
    """The generations, read at most once per batch of waiting requests (module doc)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # The request's vaults as an array: one statement whatever the batch holds.
        statement = with_vault_objects(vaults.c.name == func.any(bindparam("vaults")))
        compiled = statement.compile(dialect=engine.dialect)
        self._sql = str(compiled)
        self._defaults = dict(compiled.params)
        self._conn: Any = None
        self._next: asyncio.Future[dict[str, int]] | None = None
        self._names: set[str] = set()
        self._running = False

    async def generations(self, vault: str | None) -> dict[str, int]:
        """The generations as storage has them now (read after this call began), with
        those of `vault`'s objects. Shared with the other requests waiting meanwhile: the
        caller must not change the dict."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._names = set()
        waiting = self._next
        if vault is not None:
            self._names.add(vault)
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._run())
        return await waiting

    async def _run(self) -> None:
        try:
            while self._next is not None:
                waiting, names = self._next, self._names
                self._next, self._names = None, set()  # later arrivals: the next batch
                try:
                    found = await self._read(sorted(names))
                except BaseException as e:  # every waiter gets the fault (a 503)
                    if not waiting.done():
                        waiting.set_exception(e if isinstance(e, Exception)
                                              else StorageUnavailable("cancelled"))
                    if not isinstance(e, Exception):
                        raise
                else:
                    if not waiting.done():
                        waiting.set_result(found)
        finally:
            self._running = False

    async def _read(self, names: list[str]) -> dict[str, int]:
        import psycopg

        params = {**self._defaults, "vaults": names}
        for attempt in (1, 2):  # a connection the server dropped is replaced once
            try:
                if self._conn is None or self._conn.closed:
                    cargs, cparams = self._engine.dialect.create_connect_args(self._engine.url)
                    self._conn = await psycopg.AsyncConnection.connect(
                        *cargs, **{**cparams, **POSTGRES_CONNECT_ARGS, "autocommit": True})
                cur = await self._conn.execute(self._sql, params, prepare=True)
                return {domain: value for domain, value in await cur.fetchall()}
            except psycopg.Error as e:
                broken = self._conn is None or self._conn.closed or self._conn.broken
                await self.close()
                fault = postgres_error(e)
                if fault is None:
                    raise
                if broken and attempt == 1:
                    continue
                raise fault from None
        raise AssertionError("unreachable")

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
