"""The ASGI application: the request pipeline of the data plane.

Order: request id → non-data-plane endpoints (health, identity, dev, the
issuing CA's root at /ca.pem) →
the management API (ARM paths on the bare host, api/management.py) →
challenge auth (401 + WWW-Authenticate before any routing or body check) →
vault routing by Host → the vault's network rules → api-version → route →
the route's guard (the operation's authorization, before any of the body is
read) → the gates (`accounting`: throttling, an audit sink that must be
writable; a refusal answers instead) → the body (the route's limit; large ones a
few at a time, api/bodies.py) → handler. Handlers only translate between wire
JSON and domain calls; domain errors map to wire errors in `api/errors.py`.

Every route names its operation (vault/operations.py). The pipeline notes what it
learns of a request in an `Exchange` (api/exchange.py) and, once the response is
decided, hands one `Outcome` to every observer (the request log first), refusals
included.
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
from openkeyvault.api import admitted, dev, firewall, identity, oidc
from openkeyvault.api import issuers as issuers_api
from openkeyvault.api.admitted import Admitted
from openkeyvault.api.bearer import (
    InvalidToken,
    MissingToken,
    WouldBlock,
    authenticate,
    authenticate_blocking,
)
from openkeyvault.api.bodies import RETRY_AFTER_SECONDS, Busy, LargeBodies
from openkeyvault.api.errors import FAULT_LOG, error_body, map_error, map_fault, storage_fault
from openkeyvault.api.exchange import Accounting, Exchange
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
from openkeyvault.api.router import DataGuard, Route, Router
from openkeyvault.api.routes import data_plane_routes
from openkeyvault.api.versions import LATEST, SUPPORTED
from openkeyvault.deployment import Deployment
from openkeyvault.ops import memory, requestscope
from openkeyvault.ops.limits import key_units
from openkeyvault.ops.logs import AccessLog, buffered_stderr
from openkeyvault.ops.outcome import Gate, Observer
from openkeyvault.storage.db import reachable
from openkeyvault.storage.freshness import SharedCheck
from openkeyvault.vault import operations
from openkeyvault.vault.context import Caller, reaffirm
from openkeyvault.vault.errors import BadParameter, DomainError, Forbidden, VaultNotFound
from openkeyvault.vault.operations import IDENTITY, ROLE_SCOPE, Operation
from openkeyvault.vault.properties import properties_of

log = logging.getLogger("openkeyvault.request")

HEALTH_PROBE_SECONDS = 1.0  # /healthz reads the database at most this often per worker
HEALTH_PROBE_TIMEOUT = 5.0  # ... and calls it unreachable when it has no answer by then
_BODY_METHODS = frozenset({"PUT", "POST", "PATCH"})
_COMMON_HEADERS = [(b"x-ms-keyvault-service-version", f"openkeyvault/{__version__}".encode())]

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _scan(headers: list[tuple[bytes, bytes]], ex: Exchange) -> tuple[str, str, bool]:
    """(Host, Authorization, whether the host is named twice), in one pass over the
    headers, which also notes what the request's Outcome reports of them (user agent,
    correlation id). A request that names its host twice is refused: which one a vault
    id would carry, and which one a proxy in front checked, would be anyone's guess."""
    host = auth = None
    repeated = False
    for name, value in headers:
        if name == b"host":
            repeated = host is not None
            host = value
            if repeated:
                break
        elif name == b"authorization":
            if auth is None:
                auth = value
        elif name == b"user-agent":
            ex.user_agent = value
        elif name == b"x-ms-client-request-id":
            ex.correlation = value
    return (host.decode("latin-1") if host is not None else "",
            auth.decode("latin-1") if auth is not None else "", repeated)


def accounting(d: Deployment) -> tuple[list[Gate], list[Observer], Observer]:
    """The gates asked before every operation acts (in order; the first refusal answers),
    the observers told of every answered request, and the audit trail (also told of the
    events the deployment publishes): the one place where throttling, audit, metrics and
    usage join the pipeline (ops/outcome.py)."""
    from openkeyvault.ops.audit import open_audit
    from openkeyvault.ops.metrics import open_metrics
    from openkeyvault.ops.throttle import open_throttle
    from openkeyvault.ops.usage import open_usage

    settings = d.settings
    # The audit trail first: an operation that could not be audited is not throttled
    # either; then the limits.
    trail = open_audit(settings, d.engines, None, key=d.audit_key)
    gates: list[Gate] = [trail, open_throttle(settings, d.engines)]
    observers: list[Observer] = [trail, open_metrics(settings, d.engines),
                                 open_usage(settings, d.engines)]
    access_log = AccessLog()  # the request log: one line per answered request
    if access_log.enabled:
        observers.append(access_log)
    return gates, observers, trail


class _Challenge(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


class KeyVaultApp:
    def __init__(self, deployment: Deployment) -> None:
        self.d = deployment
        self.hosts = HostMap(deployment.settings.domain, deployment.settings.default_vault)
        self.router = Router(data_plane_routes(deployment))
        self.pool_router = pool_router(deployment)  # managed HSM pools (api/pools.py)
        self.freshness = SharedCheck(deployment.engines.read) \
            if deployment.engines.dialect == "postgresql" else None
        self.large_bodies = LargeBodies()
        self.sts = oidc.TokenEndpoints(deployment)
        self.management = Management(deployment)
        self.client_addresses = ClientAddresses(deployment.settings.trusted_proxies)
        self.peers = BusyPeers(deployment.settings.max_connections_per_address,
                               deployment.settings.trusted_proxies)
        self._queries: dict[bytes, dict[str, str]] = {}
        self._arm_paths: dict[str, bool] = {}
        gates, observers, trail = accounting(deployment)
        self.audit = trail  # (also given what a sealed worker refused: api/sealed.py)
        self.accounting = Accounting(gates, observers, self.client_addresses,
                                     deployment.vaults.placement_of)
        deployment.events.notified = self.accounting.notice_recorder(trail)
        # Request ids look like GUIDs: a random per-process prefix and a counter.
        self._rid_prefix = str(uuid.uuid4())[:24]
        self._rid_counter = itertools.count(1)
        self.scheduler = deployment.scheduler()  # runs the jobs while it holds the lease
        self._storage_seen = (-HEALTH_PROBE_SECONDS, "unknown")  # (when probed, state)
        self._probe: asyncio.Future[bool] | None = None  # the storage probe under way
        # path → (handler, its operation)
        op = operations.get
        self.special: dict[str, tuple[Callable[[Request], Awaitable[Response]], Operation]] = {
            "/healthz": (self._health, op("HealthGet")),
            issuers_api.CA_PATH: (self._ca_pem, op("IssuingCaGet")),
        }
        if deployment.settings.dev:  # the dev identity's endpoints and the movable clock
            for p in identity.MSI_PATHS:
                self.special[p] = (self._sync(identity.app_service_token), op("Authentication"))
            for p in identity.IMDS_PATHS:
                self.special[p] = (self._sync(identity.imds_token), op("Authentication"))
            self.special[dev.CLOCK_PATH] = (self._dev_clock, op("DevClockSet"))
        if deployment.settings.metrics_token_file is not None:  # [metrics] token_file
            from openkeyvault.ops.metrics import MetricsEndpoint

            endpoint = MetricsEndpoint(deployment.settings, deployment.engines)
            self.special["/metrics"] = (self._metrics_of(endpoint), op("MetricsGet"))
        self._sts_operations = {"token": op("Authentication"),
                                "openid-configuration": op("OpenIdConfigurationGet"),
                                "keys": op("SigningKeysGet")}

    def _sync(self, fn: Callable[[Request, Deployment], Response]) -> Callable[..., Any]:
        async def call(request: Request) -> Response:
            return fn(request, self.d)
        return call

    @staticmethod
    def _metrics_of(endpoint: Any) -> Callable[[Request], Awaitable[Response]]:
        async def scrape(request: Request) -> Response:  # reads files: in the thread pool
            status, headers, body = await run_in_threadpool(
                endpoint.respond, request.headers.get("authorization"))
            return Response(body, status, headers=headers)
        return scrape

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
        ex = Exchange(time.perf_counter(), self.d.clock.now())
        requestscope.begin()
        request_id = self._request_id()
        peer = self.peers.enter(scope)
        try:
            response = self.peers.refusal() if peer is None \
                else await self._respond(Request(scope, receive), request_id, ex)
            response.raw_headers.append((b"x-ms-request-id", request_id.encode()))
            response.raw_headers.extend(_COMMON_HEADERS)
            # Before the answer goes out: its audit record is written first.
            self.accounting.observe(scope, ex, response.status_code, request_id)
            await response(scope, receive, send)
        finally:
            if peer is not None:
                self.peers.leave(peer)

    async def _respond(self, request: Request, request_id: str, ex: Exchange) -> Response:
        """The response to one request; a fault becomes its status and one log line."""
        try:
            response = await self._dispatch(request, ex)
        except _Challenge as exc:
            self._name_unauthenticated(request, ex)
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
        tasks: list[asyncio.Task[None]] = []
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                tasks = [asyncio.create_task(self.scheduler.run()),
                         asyncio.create_task(buffered_stderr())]
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in tasks:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        """At shutdown (or when a production node is sealed again): the last audit records
        and checkpoint, usage counts and metrics written out, the freshness connection
        closed. The deployment itself is the caller's to close."""
        await run_in_threadpool(self.accounting.close)
        if self.freshness is not None:
            await self.freshness.close()

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

    def _management_path(self, path: str) -> bool:
        """`is_management_path`, memoised: a service sees the same few paths over and over."""
        found = self._arm_paths.get(path)
        if found is None:
            found = is_management_path(path)
            if len(self._arm_paths) >= 1024:
                self._arm_paths.clear()
            self._arm_paths[path] = found
        return found

    def _name_unauthenticated(self, request: Request, ex: Exchange) -> None:
        """Name the operation of a request refused for want of a valid token (its route,
        if the path has one), so that its Outcome says what was asked."""
        if ex.operation is not None:
            return
        kind = self.hosts.kind(request.headers.get("host", ""))
        router = self.router if kind == "vault" else self.pool_router
        found = router.resolve(request.method, request.scope["path"])
        if isinstance(found, tuple):
            ex.operation = found[0].operation

    async def _dispatch(self, request: Request, ex: Exchange) -> Response:
        host, authorization, repeated = _scan(request.scope["headers"], ex)
        if repeated:  # RFC 9112 §3.2: answer 400
            await discard_body(request)
            raise BadParameter("The request has more than one Host header.")
        path: str = request.scope["path"]
        special = self.special.get(path)
        if special is not None:
            handler, ex.operation = special
            if ex.operation.plane == IDENTITY:
                ex.resource_kind = IDENTITY
                refused = self.accounting.admit(request.scope, ex)
                if refused is not None:
                    await discard_body(request)
                    return refused
            return await handler(request)
        sts = oidc.route(path) if "/v2.0/" in path else None  # (every token-service path)
        if sts is not None:
            ex.operation, ex.resource_kind = self._sts_operations[sts[1]], IDENTITY
            refused = self.accounting.admit(request.scope, ex)
            if refused is not None:
                await discard_body(request)
                return refused
            body = await read_body(request, oidc.TOKEN_BODY_LIMIT) \
                if request.method == "POST" else b""
            return await run_in_threadpool(self.sts.handler(sts[1]), request, sts[0], body)

        if not valid_host(host):
            raise BadParameter("The Host header is missing or malformed.")
        if self._management_path(path) and \
                self.management.serves_host(host, self.hosts.domain):
            ex.resource_kind = "management"
            return await self.management.handle(request, ex, self.accounting)
        kind = self.hosts.kind(host)
        ex.resource_kind = kind.lower()
        vault_name = self.hosts.vault_name(host)
        requestscope.addresses(vault_name)  # before the first read: its objects' generation too
        if self.freshness is not None:  # PostgreSQL: one check shared by waiting requests
            requestscope.fresh.set(await self.freshness.generations(vault_name))
        memo = self.d.repo.snapshot(*admitted.DOMAINS)
        memo_key = admitted.key(host, authorization, request.method, path)
        hit = admitted.find(memo, memo_key, ex.arrived)
        if hit is None:
            found = await self._admit(request, ex, host, kind, vault_name, authorization)
            if isinstance(found, Response):
                return found
            hit, query, keep = found
            if keep:
                memo[memo_key] = hit
        else:  # the same as before, on storage that has not changed since (api/admitted.py)
            ex.principal = hit.principal
            ex.resource_name, ex.vault_id = hit.vault.name, hit.vault.id
            query = self._api_version(request, ex)
            ex.operation = hit.route.operation
            ex.object_id = hit.object_id
            if hit.decision is not None:
                reaffirm(hit.caller, *hit.decision)
                ex.authorized(hit.by_roles, True)
        route, params, caller, vault = hit.route, hit.params, hit.caller, hit.vault
        op = route.operation
        if op is not None and op.key_operation and "name" in params:
            # What a key transaction weighs and how it is billed depend on the key's type.
            ex.key = self.d.keys.key_type(vault.id, params["name"], params.get("version"))
            if ex.key is not None:
                ex.units = key_units(op.throttle, *ex.key)
        refused = self.accounting.admit(request.scope, ex)  # before the body is read
        if refused is not None:
            await discard_body(request)
            return refused
        ctx = Ctx(caller=caller, base=f"https://{host}", path=path,
                  api_version=query["api-version"], query=query, params=params)
        if request.method not in _BODY_METHODS:
            return await self._call(route, ctx, ex)
        limit = route.body_limit or DEFAULT_BODY_LIMIT
        if not self.large_bodies.is_large(request, limit):
            ctx.raw_body = await read_body_buffer(request, limit)
            return await self._call(route, ctx, ex)
        try:
            async with self.large_bodies.admitted():
                ctx.raw_body = await read_body_buffer(request, limit)
                return await self._call(route, ctx, ex)
        except Busy:
            await discard_body(request)
            return json_response(
                error_body("ServiceUnavailable", "The server is busy with other large "
                           "requests; retry later."), 503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    def _api_version(self, request: Request, ex: Exchange) -> dict[str, str]:
        """The request's query, once its api-version is known to be one this serves."""
        query = self._query(request.scope["query_string"])
        api_version = ex.api_version = query.get("api-version")
        if api_version is None:
            raise BadParameter("The 'api-version' query parameter is required.")
        if api_version not in SUPPORTED:
            raise BadParameter(
                f"The specified version ({api_version[:32]}) is not recognized. Consider using "
                f"the latest supported version ({LATEST})."
            )
        return query

    async def _admit(self, request: Request, ex: Exchange, host: str, kind: str,
                     vault_name: str | None, authorization: str
                     ) -> tuple[Admitted, dict[str, str], bool] | Response:
        """Authenticate, find the vault, check its firewall, the api-version, the route and
        its guard: what the request was admitted on, its query, and whether that may be
        memoised (api/admitted.py); or the response when the path has no such route."""
        try:
            audiences = self.hosts.audiences(host)
            try:
                verified = authenticate(authorization, self.d.tokens, audiences)
            except WouldBlock:  # an external issuer's keys must be fetched first
                verified = await authenticate_blocking(authorization, self.d.tokens,
                                                       audiences)
        except MissingToken:
            raise _Challenge("AKV10000: Request is missing a Bearer or PoP token.") from None
        except InvalidToken as exc:
            raise _Challenge(f"AKV10032: {exc}") from None
        principal = ex.principal = verified.principal

        vault = self.d.repo.get_vault(vault_name) if vault_name else None
        if vault is None or vault.kind != kind:  # a vault host serves no pool, and back
            noun = "vault" if kind == "vault" else "managed HSM"
            raise VaultNotFound(f"No {noun} answers at host '{host[:255]}'.")
        ex.resource_name, ex.vault_id = vault.name, vault.id
        props = properties_of(vault)
        acls = props.network_acls
        if not acls.open:
            refusal = firewall.refusal(acls, self.client_addresses, request, principal, vault)
            if refusal is not None:
                await discard_body(request)
                raise refusal

        query = self._api_version(request, ex)
        router = self.router if kind == "vault" else self.pool_router
        path: str = request.scope["path"]
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
        op = ex.operation = route.operation
        ex.object_id = f"https://{host}{path}"
        caller = Caller(principal, vault)
        guard, by_roles = route.guard, False
        if guard is not None:  # authorization first: no body is read for a refusal
            # Roles decide role management, a pool's data plane, and a vault set to RBAC.
            by_roles = kind != "vault" or props.enable_rbac_authorization or (
                op is not None and op.scope == ROLE_SCOPE)
            try:
                guard.check(self.d.authorizer, caller, params)
            except Forbidden:
                ex.authorized(by_roles, False)
                await discard_body(request)
                raise
            except Exception:  # a fault on the way to the decision, or not served
                await discard_body(request)
                raise
            ex.authorized(by_roles, True)
        decision = guard.decision(params) if isinstance(guard, DataGuard) else None
        keep = acls.open and (guard is None or decision is not None)
        return Admitted(principal, verified.until, vault, route, params, caller,
                        ex.object_id, decision, by_roles), query, keep

    async def _call(self, route: Route, ctx: Ctx, ex: Exchange) -> Response:
        if route.inline:
            response: Response = route.handler(ctx)
        else:
            response = await run_in_threadpool(route.handler, ctx)
        op = route.operation
        if op is not None and op.key_operation and ex.key is None \
                and 200 <= response.status_code < 300 and "name" in ctx.params:
            # A key made by this request (create, import, rotate): metered by its type.
            ex.key = await run_in_threadpool(
                self.d.keys.key_type, ctx.caller.vault.id, ctx.params["name"], None)
        return response


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
