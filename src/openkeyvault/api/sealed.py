"""A production worker: 503 while its node is sealed, the full API once unsealed.

The worker asks its node's control socket (ops/nodectl.py) for the root key once a
second. With it, the worker opens the deployment and serves (the scheduler starts
then); without it — before the unseal, or after `okv operator seal` — every request
but `/healthz` is answered `503 ServiceUnavailable` with `Retry-After`, and
`/healthz` answers 503 with the seal's state, so a load balancer takes the node out.
Nothing is lost while sealed: the database is only read again once unsealed. What the
worker refused while sealed is kept in a spool (ops/sealedspool.py) and recorded in the
audit trail as soon as the node is unsealed. Sealed
again, a worker closes what it opened unsealed: the scheduler, the accounting (its audit
streams end at their last record, usage counts and metrics are written out), the
deployment; unsealed once more, it starts new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool

from openkeyvault import __version__
from openkeyvault.access.network import ClientAddresses
from openkeyvault.api.errors import error_body
from openkeyvault.api.exchange import CORRELATION_MAX, USER_AGENT_MAX, client_address
from openkeyvault.api.hosts import HostMap, valid_host
from openkeyvault.api.http import json_response
from openkeyvault.config import Settings
from openkeyvault.ops.audit import audit_dir, new_stream_id, stream_host
from openkeyvault.ops.logs import buffered_stderr
from openkeyvault.ops.outcome import Outcome
from openkeyvault.ops.sealedspool import SealedSpool, take

log = logging.getLogger("openkeyvault.seal")

POLL_SECONDS = 1.0
RETRY_AFTER_SECONDS = 5


class SealGate:
    def __init__(self, settings: Settings, fetch: Callable[[], bytes | None],
                 open_app: Callable[[bytes], Any], status: Callable[[], dict[str, Any]]
                 ) -> None:
        self.settings = settings
        self._fetch = fetch
        self._open_app = open_app
        self._status = status  # the node's seal state, for /healthz
        self.inner: Any = None
        self._scheduler: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stderr: asyncio.Task[None] | None = None
        self._hosts = HostMap(settings.domain, settings.default_vault)
        self._addresses = ClientAddresses(settings.trusted_proxies)
        self._spool = SealedSpool(audit_dir(settings), new_stream_id())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        inner = self.inner
        if inner is not None:
            await inner(scope, receive, send)
            return
        if scope["path"] == "/healthz":  # (a load balancer's probe: not recorded)
            state = await run_in_threadpool(self._status)
            response = json_response({"status": "sealed", "version": __version__, **state},
                                     503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        else:
            started, request_id = time.perf_counter(), str(uuid.uuid4())
            response = json_response(
                error_body("ServiceUnavailable", "The server is sealed: an operator must "
                           "unseal it (okv operator unseal) before it serves requests."),
                503, headers={"Retry-After": str(RETRY_AFTER_SECONDS),
                              "x-ms-request-id": request_id})
            self._spool.add(self._refusal(scope, request_id, started))
        await response(scope, receive, send)

    def _refusal(self, scope: dict[str, Any], request_id: str, started: float) -> Outcome:
        """What the audit trail will record of a request refused while sealed: no route
        is looked up and no token read (the keys are sealed too)."""
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        vault = self._hosts.vault_name(host) if valid_host(host) else None
        path: str = scope["path"]
        query: bytes = scope["query_string"]
        correlation = headers.get(b"x-ms-client-request-id")
        agent = headers.get(b"user-agent")
        api_version = dict(parse_qsl(query.decode("latin-1"))).get("api-version")
        return Outcome(
            "", self._hosts.kind(host).lower() if vault else "service", vault, None,
            f"https://{host}{path}" if vault else None, api_version, 503, time.time(),
            (time.perf_counter() - started) * 1000, client_address(self._addresses, scope),
            correlation[:CORRELATION_MAX].decode("latin-1") if correlation else None,
            request_id, f"{path}?{query.decode('latin-1')}" if query else path,
            agent[:USER_AGENT_MAX].decode("latin-1") if agent else None,
            None, None, None, None, None)

    def _record_spooled(self, inner: Any) -> None:
        """Once unsealed: what this worker (and this host's workers that died sealed)
        refused meanwhile, into the audit trail; a fresh spool for the next seal."""
        spool, self._spool = self._spool, SealedSpool(self._spool.directory, new_stream_id())
        spool.close()
        recorded = 0
        for outcome in take(spool.directory, stream_host()):
            inner.audit.observe(outcome)
            recorded += 1
        if recorded or spool.dropped:
            log.warning("audit: %d requests refused while sealed recorded%s", recorded,
                        f"; {spool.dropped} more were not kept (the spool was full)"
                        if spool.dropped else "")

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._watch = asyncio.create_task(self._watch_seal())
                self._stderr = asyncio.create_task(buffered_stderr())  # as api/app.py's
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stop(self._watch)  # first: it would open the app again
                await self._close()  # the scheduler, the accounting, then the deployment
                self._spool.close()  # (a next start's unseal records what it holds)
                await self._stop(self._stderr)  # last: what was logged is written
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _stop(task: asyncio.Task[None] | None) -> None:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch_seal(self) -> None:
        while True:
            try:
                key = await run_in_threadpool(self._fetch)
                if key is not None and self.inner is None:
                    self.inner = await run_in_threadpool(self._open_app, key)
                    await run_in_threadpool(self._record_spooled, self.inner)
                    self._scheduler = asyncio.create_task(self.inner.scheduler.run())
                    log.warning("okv: worker serving (node unsealed)")
                elif key is None and self.inner is not None:
                    log.warning("okv: worker stopped serving (node sealed)")
                    await self._close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a fault opening storage: retried
                log.warning("okv: cannot open the deployment yet: %s", exc)
            await asyncio.sleep(POLL_SECONDS)

    async def _close(self) -> None:
        inner, self.inner = self.inner, None
        await self._stop(self._scheduler)
        self._scheduler = None
        if inner is not None:
            await inner.aclose()  # the last audit records and usage counts
            await run_in_threadpool(inner.d.close)
