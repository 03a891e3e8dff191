"""What the pipeline learns about one request on its way through, and the accounting
it owes for it: the gates asked before the operation acts, and the observers told of
the answer (ops/outcome.py).

An `Exchange` is filled in by the stages as they learn things (the operation once the
route is known, the caller once the token is verified, how it was authorized) and turned
into one `Outcome` once the response is decided, refusals included. Values come from the
pipeline (the table's operation names, the verified principal, the socket's or a trusted
proxy's client address); the two taken from headers (the client's correlation id and its
user agent) are cut to a bounded length, and every log writer escapes what it writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping
from dataclasses import fields
from typing import Any

from starlette.responses import Response

from openkeyvault.access.network import ClientAddresses
from openkeyvault.access.principals import Principal
from openkeyvault.api.http import json_response
from openkeyvault.ops.events import Notice
from openkeyvault.ops.logs import Intervals
from openkeyvault.ops.outcome import Attempt, CallerClaims, Gate, Observer, Outcome, Refusal
from openkeyvault.ops.usage import key_meter
from openkeyvault.vault.operations import OPERATIONS as OPERATIONS_METER
from openkeyvault.vault.operations import Operation

CORRELATION_MAX = 128  # characters of x-ms-client-request-id kept
USER_AGENT_MAX = 512  # characters of User-Agent kept
_CACHE_LIMIT = 4096
Scope = MutableMapping[str, Any]  # the ASGI scope
_FAULTS = Intervals()
log = logging.getLogger("openkeyvault.request")


_FIELDS = tuple(f.name for f in fields(Outcome))


class RequestOutcome(Outcome):
    """An Outcome with the request line's method and path (no query), which the request
    log writes and the shared Outcome does not carry.

    Built once per request on the hot path: its fields are set through the slots'
    descriptors directly, which costs a third less than the frozen dataclass's own
    `__init__` (one `object.__setattr__` lookup per field). It stays frozen."""

    __slots__ = ("method", "path")

    def __init__(self, operation: str, resource_kind: str, resource_name: str | None,
                 resource_id: str | None, object_id: str | None, api_version: str | None,
                 status: int, time: float, duration_ms: float, client_ip: str,
                 correlation_id: str | None, request_id: str, request_uri: str,
                 user_agent: str | None, caller: CallerClaims | None,
                 rbac_authorized: bool | None, access_policy_match: bool | None,
                 throttle_class: str | None, meter: str | None, units: float = 1.0,
                 method: str = "", path: str = "") -> None:
        (a, b, c, d, e, f, g, h, i, j, k, m, n, o, p, q, r, s, t, u), v, w = _SETTERS
        a(self, operation)
        b(self, resource_kind)
        c(self, resource_name)
        d(self, resource_id)
        e(self, object_id)
        f(self, api_version)
        g(self, status)
        h(self, time)
        i(self, duration_ms)
        j(self, client_ip)
        k(self, correlation_id)
        m(self, request_id)
        n(self, request_uri)
        o(self, user_agent)
        p(self, caller)
        q(self, rbac_authorized)
        r(self, access_policy_match)
        s(self, throttle_class)
        t(self, meter)
        u(self, units)
        v(self, method)
        w(self, path)


_SETTERS: tuple[Any, ...] = (tuple(Outcome.__dict__[name].__set__ for name in _FIELDS),
                             RequestOutcome.__dict__["method"].__set__,
                             RequestOutcome.__dict__["path"].__set__)
assert _FIELDS == ("operation", "resource_kind", "resource_name", "resource_id", "object_id",
                   "api_version", "status", "time", "duration_ms", "client_ip",
                   "correlation_id", "request_id", "request_uri", "user_agent", "caller",
                   "rbac_authorized", "access_policy_match", "throttle_class", "meter",
                   "units"), "RequestOutcome.__init__ follows Outcome's fields"


class Exchange:
    """One request as far as the pipeline has understood it (module docstring)."""

    __slots__ = ("access_policy", "api_version", "arrived", "client_ip", "correlation", "key",
                 "object_id", "operation", "principal", "rbac", "resource_id",
                 "resource_kind", "resource_name", "started", "units", "user_agent",
                 "vault_id")

    def __init__(self, started: float, arrived: float) -> None:
        self.started = started  # perf_counter
        self.arrived = arrived  # the deployment clock
        self.operation: Operation | None = None
        self.resource_kind = "service"
        self.resource_name: str | None = None
        self.vault_id: int | None = None  # the vault's storage id, for its ARM id
        self.resource_id: str | None = None
        self.object_id: str | None = None
        self.api_version: str | None = None
        self.principal: Principal | None = None
        self.rbac: bool | None = None
        self.access_policy: bool | None = None
        self.client_ip: str | None = None
        self.user_agent: bytes | None = None  # as sent (cut and decoded for the Outcome)
        self.correlation: bytes | None = None  # x-ms-client-request-id, as sent
        self.key: tuple[str, int | None] | None = None  # (kty, size) of the key operated on
        self.units = 1.0  # what the operation weighs against its throttling class

    def authorized(self, by_roles: bool, allowed: bool) -> None:
        """Record which model decided (roles, or the vault's access policies) and how."""
        if by_roles:
            self.rbac = allowed
        else:
            self.access_policy = allowed


def arm_id(subscription: str, resource_group: str, kind: str, name: str) -> str:
    """The ARM id of a vault or pool, upper case as Azure's logs write it."""
    provider = "MANAGEDHSMS" if kind.lower() in ("managedhsm", "managedhsms") else "VAULTS"
    return (f"/SUBSCRIPTIONS/{subscription}/RESOURCEGROUPS/{resource_group}/PROVIDERS/"
            f"MICROSOFT.KEYVAULT/{provider}/{name}").upper()


def client_address(addresses: ClientAddresses, scope: Scope) -> str:
    """The client's address: the socket peer, or behind one of the trusted proxies the
    address it forwarded for (access/network.py); "" when there is none."""
    client = scope.get("client")
    peer = client[0] if client and isinstance(client[0], str) else None
    if not addresses.trusted:
        return peer or ""
    forwarded = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
    found = addresses.resolve(peer, forwarded)
    return str(found) if found is not None else ""


def refusal_response(refusal: Refusal) -> Response:
    """A gate's refusal as the client sees it: a Key Vault error body, its status and,
    when the gate says when to come back, Retry-After."""
    headers = {"Retry-After": str(refusal.retry_after)} \
        if refusal.retry_after is not None else None
    return json_response({"error": {"code": refusal.code, "message": refusal.message}},
                         refusal.status, headers)


class Accounting:
    """The gates and observers of the pipeline, and what it takes to feed them cheaply:
    caller claims and ARM ids are built once per principal and per vault."""

    def __init__(self, gates: list[Gate], observers: list[Observer],
                 addresses: ClientAddresses,
                 placement: Callable[[str], tuple[str, str] | None]) -> None:
        self.gates = gates
        self.observers = observers
        self._addresses = addresses
        self._placement = placement
        self._claims: dict[str, tuple[Principal, CallerClaims]] = {}
        self._ids: dict[tuple[int, str], str | None] = {}

    # ---- the pieces ---------------------------------------------------------------------
    def claims(self, principal: Principal | None) -> CallerClaims | None:
        """The audit record's identity claims of `principal` (never its token)."""
        if principal is None:
            return None
        # Keyed by object id (a str hashes once); the principal is the verified token's,
        # the same object for as long as the token is cached.
        hit = self._claims.get(principal.object_id)
        if hit is not None and hit[0] is principal:
            return hit[1]
        claims = CallerClaims(principal.object_id, principal.tenant_id, principal.app_id)
        if len(self._claims) >= _CACHE_LIMIT:
            self._claims.clear()
        self._claims[principal.object_id] = (principal, claims)
        return claims

    def client_ip(self, scope: Scope, ex: Exchange) -> str:
        """The client's address: the socket peer, or behind a trusted proxy the address it
        forwarded for (access/network.py); worked out once per request."""
        if ex.client_ip is None:
            ex.client_ip = client_address(self._addresses, scope)
        return ex.client_ip

    def resource_id(self, ex: Exchange) -> str | None:
        """The ARM id of the vault or pool the request addressed (its placement is read
        once per vault and kept: a vault does not move)."""
        if ex.resource_id is not None or ex.vault_id is None or ex.resource_name is None:
            return ex.resource_id
        return self._arm_id(ex.vault_id, ex.resource_name, ex.resource_kind)

    def _arm_id(self, vault_id: int, name: str, kind: str) -> str | None:
        key = (vault_id, name)
        if key in self._ids:
            return self._ids[key]
        placed = self._placement(name)
        found = None if placed is None else arm_id(placed[0], placed[1], kind, name)
        if len(self._ids) >= _CACHE_LIMIT:
            self._ids.clear()
        self._ids[key] = found
        return found

    # ---- the calls ----------------------------------------------------------------------
    def admit(self, scope: Scope, ex: Exchange) -> Response | None:
        """None when every gate admits the operation; else the response to send instead."""
        op = ex.operation
        if op is None or not self.gates:
            return None
        attempt = Attempt(op.name, ex.resource_kind, ex.resource_name, op.throttle, ex.units,
                          self.claims(ex.principal), self.client_ip(scope, ex))
        for gate in self.gates:
            refusal = gate.admit(attempt)
            if refusal is not None:
                return refusal_response(refusal)
        return None

    def notice_recorder(self, audit: Observer) -> Callable[[Notice], None]:
        """What records a notice the deployment published (ops/events.py) in `audit`: an
        operation of the service's own, with no caller, answered 200."""
        def record(notice: Notice) -> None:
            audit.observe(notice.outcome(self._arm_id(notice.vault_id, notice.vault, "vault")))
        return record

    def close(self) -> None:
        """At shutdown: each gate and observer that keeps something writes it out."""
        for part in {id(p): p for p in (*self.gates, *self.observers)}.values():
            close = getattr(part, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - the others still close
                    log.exception("closing %s failed", type(part).__name__)

    def observe(self, scope: Scope, ex: Exchange, status: int,
                request_id: str) -> None:
        """Tell every observer of the answered request; an observer that fails is not
        the client's problem (observers must not raise; this makes sure, and says so in
        the log now and then)."""
        if not self.observers:
            return
        op = ex.operation
        correlation, agent = ex.correlation, ex.user_agent
        path: str = scope["path"]
        query: bytes = scope["query_string"]
        if op is None:
            name = throttle = meter = None
        else:
            name, throttle, meter = op.name, op.throttle, op.meter
            if op.key_operation and ex.key is not None and meter == OPERATIONS_METER:
                meter = key_meter(*ex.key)  # a transaction on a key: by the key's type
        outcome = RequestOutcome(
            name or "", ex.resource_kind, ex.resource_name, self.resource_id(ex),
            ex.object_id, ex.api_version, status, ex.arrived,
            (time.perf_counter() - ex.started) * 1000, self.client_ip(scope, ex),
            correlation[:CORRELATION_MAX].decode("latin-1") if correlation else None,
            request_id, f"{path}?{query.decode('latin-1')}" if query else path,
            agent[:USER_AGENT_MAX].decode("latin-1") if agent else None,
            self.claims(ex.principal), ex.rbac, ex.access_policy, throttle, meter, ex.units,
            scope["method"], path)
        for observer in self.observers:
            try:
                observer.observe(outcome)
            except Exception:  # one observer's fault stays its own
                name = type(observer).__name__
                if _FAULTS.due(name, 60.0):
                    log.exception("observer %s failed", name)
