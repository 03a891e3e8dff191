"""The ASGI application: the request pipeline of the data plane.

Order: request id → non-data-plane endpoints (health, identity, dev, the
issuing CA's root at /ca.pem) →
the management API (ARM paths on the bare host, api/management.py) →
challenge auth (401 + WWW-Authenticate before any routing or body check) →
vault routing by Host → the vault's network rules → api-version → route →
the route's guard (the operation's authorization, before any of the body is
read) → the body (the route's limit; large ones a few at a time, api/bodies.py)
→ handler. Handlers only translate between wire JSON and domain calls; domain
errors map to wire errors in `api/errors.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from openkeyvault import __version__
from openkeyvault.access.network import ClientAddresses
from openkeyvault.access.tokens import InvalidToken, WouldBlock
from openkeyvault.api import dev, firewall, identity, oidc
from openkeyvault.api import issuers as issuers_api
from openkeyvault.api.bodies import RETRY_AFTER_SECONDS, Busy, LargeBodies
from openkeyvault.api.errors import FAULT_LOG, error_body, map_error, map_fault, storage_fault
from openkeyvault.api.hosts import HostMap, valid_host
from openkeyvault.api.http import (
    DEFAULT_BODY_LIMIT,
    Ctx,
    discard_body,
    json_response,
    read_body,
    read_body_buffer,
)
from openkeyvault.api.management import Management, is_management_path
from openkeyvault.api.peers import BusyPeers
from openkeyvault.api.pools import pool_router
from openkeyvault.api.router import Route, Router
from openkeyvault.api.routes import data_plane_routes
from openkeyvault.api.versions import LATEST, SUPPORTED
from openkeyvault.deployment import Deployment
from openkeyvault.ops import memory, requestscope
from openkeyvault.ops.logs import AccessLog
from openkeyvault.storage.db import reachable
from openkeyvault.vault.context import Caller
from openkeyvault.vault.errors import BadParameter, DomainError, VaultNotFound
from openkeyvault.vault.properties import properties_of

log = logging.getLogger("openkeyvault.request")

HEALTH_PROBE_SECONDS = 1.0  # /healthz reads the database at most this often per worker
HEALTH_PROBE_TIMEOUT = 5.0  # ... and calls it unreachable when it has no answer by then
_BODY_METHODS = frozenset({"PUT", "POST", "PATCH"})
_COMMON_HEADERS = [(b"x-ms-keyvault-service-version", f"openkeyvault/{__version__}".encode())]

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _repeated_host(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request names its host twice: which one a vault id would carry, and which
    one a proxy in front checked, would be anyone's guess."""
    seen = False
    for name, _ in headers:
        if name == b"host":
            if seen:
                return True
            seen = True
    return False


class _Challenge(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


class KeyVaultApp:
    def __init__(self, deployment: Deployment) -> None:
        self.d = deployment
        self.hosts = HostMap(deployment.settings.domain, deployment.settings.default_vault)
        self.router = Router(data_plane_routes(deployment))
        self.pool_router = pool_router(deployment)  # managed HSM pools (api/pools.py)
        self.large_bodies = LargeBodies()
        self.sts = oidc.TokenEndpoints(deployment)
        self.management = Management(deployment)
        self.client_addresses = ClientAddresses(deployment.settings.trusted_proxies)
        self.peers = BusyPeers(deployment.settings.max_connections_per_address,
                               deployment.settings.trusted_proxies)
        self._queries: dict[bytes, dict[str, str]] = {}
        self.access_log = AccessLog()
        # Request ids look like GUIDs: a random per-process prefix and a counter.
        self._rid_prefix = str(uuid.uuid4())[:24]
        self._rid_counter = itertools.count(1)
        self.scheduler = deployment.scheduler()  # runs the jobs while it holds the lease
        self._storage_seen = (-HEALTH_PROBE_SECONDS, "unknown")  # (when probed, state)
        self._probe: asyncio.Future[bool] | None = None  # the storage probe under way
        self.special: dict[str, Callable[[Request], Awaitable[Response]]] = {
            "/healthz": self._health,
            issuers_api.CA_PATH: self._ca_pem,
        }
        if deployment.settings.dev:  # the dev identity's endpoints and the movable clock
            for p in identity.MSI_PATHS:
                self.special[p] = self._sync(identity.app_service_token)
            for p in identity.IMDS_PATHS:
                self.special[p] = self._sync(identity.imds_token)
            self.special[dev.CLOCK_PATH] = self._dev_clock

    def _sync(self, fn: Callable[[Request, Deployment], Response]) -> Callable[..., Any]:
        async def call(request: Request) -> Response:
            return fn(request, self.d)
        return call

    async def _health(self, request: Request) -> Response:
        """200 while the node can serve; 503 while its database does not answer, so that a
        load balancer sends requests to nodes that can (the body says which it is)."""
        storage = await self._storage_state()
        if storage == "unreachable":
            return json_response({"status": "unavailable", "version": __version__,
                                  "storage": storage}, 503)
        return json_response({"status": "ready", "version": __version__, "storage": storage})

    async def _storage_state(self) -> str:
        """Storage "reachable" or "unreachable", probed at most once per
        HEALTH_PROBE_SECONDS and one probe at a time, which every health check waiting
        shares (a flood of health checks is not a flood of queries). A probe that has no
        answer within HEALTH_PROBE_TIMEOUT (a database that hangs) counts as unreachable."""
        checked, state = self._storage_seen
        if time.monotonic() - checked < HEALTH_PROBE_SECONDS:
            return state
        if self._probe is None:
            self._probe = asyncio.ensure_future(run_in_threadpool(reachable, self.d.engines))
            self._probe.add_done_callback(self._probed)
        try:
            await asyncio.wait_for(asyncio.shield(self._probe), HEALTH_PROBE_TIMEOUT)
        except TimeoutError:
            return "unreachable"
        return self._storage_seen[1]

    def _probed(self, probe: asyncio.Future[bool]) -> None:
        ok = not probe.cancelled() and probe.exception() is None and probe.result()
        self._storage_seen = (time.monotonic(), "reachable" if ok else "unreachable")
        self._probe = None

    async def _ca_pem(self, request: Request) -> Response:
        """The built-in issuing CA's root certificate, for clients to trust (public)."""
        if request.method not in ("GET", "HEAD"):
            return json_response(error_body("MethodNotAllowed", "Use GET."), 405,
                                 headers={"Allow": "GET, HEAD"})
        return await run_in_threadpool(issuers_api.ca_pem, self.d.ca)

    async def _dev_clock(self, request: Request) -> Response:
        raw = await read_body(request, 4096)
        return await run_in_threadpool(dev.clock, request, raw, self.d)

    # ---- ASGI ---------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        requestscope.begin()
        request_id = self._request_id()
        peer = self.peers.enter(scope)
        try:
            response = self.peers.refusal() if peer is None \
                else await self._respond(Request(scope, receive), request_id)
            response.raw_headers.append((b"x-ms-request-id", request_id.encode()))
            response.raw_headers.extend(_COMMON_HEADERS)
            await response(scope, receive, send)
        finally:
            if peer is not None:
                self.peers.leave(peer)
        self.access_log.write(request_id, scope["method"], scope["path"], response.status_code,
                              (time.perf_counter() - started) * 1000)

    async def _respond(self, request: Request, request_id: str) -> Response:
        """The response to one request; a fault becomes its status and one log line."""
        try:
            response = await self._dispatch(request)
        except _Challenge as exc:
            response = self._challenge(request, exc.message)
        except Exception as exc:
            # A fault of the deployment (also behind a domain error): its status, one log line.
            fault = storage_fault(exc)
            if fault is not None:
                host = request.headers.get("host", "")
                FAULT_LOG.report(fault, self.hosts.vault_name(host) if valid_host(host) else None)
                status, body, headers = map_fault(fault)
                response = json_response(body, status, headers)
            elif isinstance(exc, DomainError):
                status, body = map_error(exc)
                response = json_response(body, status)
            else:
                log.exception("rid=%s unhandled error", request_id)
                response = json_response(
                    error_body("InternalServerError", "The server hit an unexpected error."), 500
                )
        return response

    async def _lifespan(self, receive: Any, send: Any) -> None:
        task: asyncio.Task[None] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                task = asyncio.create_task(self.scheduler.run())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _request_id(self) -> str:
        return f"{self._rid_prefix}{next(self._rid_counter) & 0xFFFFFFFFFFFF:012x}"

    # ---- pipeline -----------------------------------------------------------
    def _query(self, raw: bytes) -> dict[str, str]:
        """Percent-decoded query parameters; memoised, as clients repeat the same few."""
        hit = self._queries.get(raw)
        if hit is None:
            hit = dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))
            if len(raw) <= 256:
                if len(self._queries) >= 1024:
                    self._queries.clear()
                self._queries[raw] = hit
        return dict(hit)

    def _challenge(self, request: Request, message: str) -> Response:
        """Azure's challenge names the token service and the tenant on it (the SDKs take the
        tenant from the path), so a client configured for another tenant still asks this one."""
        host = request.headers.get("host", "localhost")
        resource = self.hosts.resource(host)
        authority = self.d.tokens.issuer.removesuffix("/v2.0")
        return json_response(
            error_body("Unauthorized", message), 401,
            headers={"WWW-Authenticate":
                     f'Bearer authorization="{authority}", resource="{resource}"'},
        )

    async def _dispatch(self, request: Request) -> Response:
        if _repeated_host(request.scope["headers"]):  # RFC 9112 §3.2: answer 400
            await discard_body(request)
            raise BadParameter("The request has more than one Host header.")
        path: str = request.scope["path"]
        special = self.special.get(path)
        if special is not None:
            return await special(request)
        sts = oidc.route(path)
        if sts is not None:
            body = await read_body(request, oidc.TOKEN_BODY_LIMIT) \
                if request.method == "POST" else b""
            return await run_in_threadpool(self.sts.handler(sts[1]), request, sts[0], body)

        host = request.headers.get("host", "")
        if not valid_host(host):
            raise BadParameter("The Host header is missing or malformed.")
        if is_management_path(path) and self.management.serves_host(host, self.hosts.domain):
            return await self.management.handle(request)
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Challenge("AKV10000: Request is missing a Bearer or PoP token.")
        token, audiences = token.strip(), self.hosts.audiences(host)
        try:
            try:
                principal = self.d.tokens.verify(token, audiences)
            except WouldBlock:  # an external issuer's keys must be fetched first
                principal = await run_in_threadpool(
                    lambda: self.d.tokens.verify(token, audiences, may_block=True))
        except InvalidToken as exc:
            raise _Challenge(f"AKV10032: {exc}") from None

        vault_name, kind = self.hosts.vault_name(host), self.hosts.kind(host)
        vault = self.d.repo.get_vault(vault_name) if vault_name else None
        if vault is None or vault.kind != kind:  # a vault host serves no pool, and back
            noun = "vault" if kind == "vault" else "managed HSM"
            raise VaultNotFound(f"No {noun} answers at host '{host[:255]}'.")
        acls = properties_of(vault).network_acls
        if not acls.open:
            refusal = firewall.refusal(acls, self.client_addresses, request, principal, vault)
            if refusal is not None:
                await discard_body(request)
                raise refusal

        query = self._query(request.scope["query_string"])
        api_version = query.get("api-version")
        if api_version is None:
            raise BadParameter("The 'api-version' query parameter is required.")
        if api_version not in SUPPORTED:
            raise BadParameter(
                f"The specified version ({api_version[:32]}) is not recognized. Consider using "
                f"the latest supported version ({LATEST})."
            )

        router = self.router if kind == "vault" else self.pool_router
        resolved = router.resolve(request.method, path)
        if resolved is None:
            return json_response(error_body("NotFound", "The requested path was not found."), 404)
        if resolved is False:
            return json_response(
                error_body("MethodNotAllowed",
                           f"The method {request.method} is not allowed on this path."), 405,
                headers={"Allow": ", ".join(router.methods(path))})
        assert isinstance(resolved, tuple)
        route, params = resolved
        caller = Caller(principal, vault)
        if route.guard is not None:  # authorization first: no body is read for a refusal
            try:
                route.guard.check(self.d.authorizer, caller, params)
            except Exception:  # a refusal, or a fault on the way to the decision
                await discard_body(request)
                raise
        ctx = Ctx(caller=caller, base=f"https://{host}", path=path,
                  api_version=api_version, query=query, params=params)
        if request.method not in _BODY_METHODS:
            return await self._call(route, ctx)
        limit = route.body_limit or DEFAULT_BODY_LIMIT
        if not self.large_bodies.is_large(request, limit):
            ctx.raw_body = await read_body_buffer(request, limit)
            return await self._call(route, ctx)
        try:
            async with self.large_bodies.admitted():
                ctx.raw_body = await read_body_buffer(request, limit)
                return await self._call(route, ctx)
        except Busy:
            await discard_body(request)
            return json_response(
                error_body("ServiceUnavailable", "The server is busy with other large "
                           "requests; retry later."), 503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    async def _call(self, route: Route, ctx: Ctx) -> Response:
        if route.inline:
            return route.handler(ctx)
        return await run_in_threadpool(route.handler, ctx)


def create_app() -> Any:
    """Factory for worker processes: settings come from the environment."""
    from openkeyvault.config import Settings
    from openkeyvault.ops.logs import configure_logging

    configure_logging()
    memory.tune()  # large blocks go back to the system when freed (glibc; ops/memory.py)
    settings = Settings.from_env()
    if settings.seal is not None and settings.seal.get("type") != "devkey":
        return _sealed_app(settings)
    app = KeyVaultApp(Deployment.open(settings))
    gc.collect()
    gc.freeze()  # start-up objects live for the whole process: keep them out of GC passes
    return app


def _sealed_app(settings: Any) -> Any:
    """A worker of a node whose root key comes from a seal (api/sealed.py)."""
    from openkeyvault.api.sealed import SealGate
    from openkeyvault.ops.nodectl import public_status, root_key_from, socket_path

    path = socket_path(settings)
    return SealGate(settings, lambda: root_key_from(path),
                    lambda key: KeyVaultApp(Deployment.open(settings, root_key=key)),
                    lambda: public_status(path))
