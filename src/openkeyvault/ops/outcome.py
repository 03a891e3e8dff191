"""What one request did, told to whoever keeps account of it (audit, metrics, usage).

The API pipeline names the operation of every request (a row of the operations table),
asks each `Gate` before the operation acts, and hands one `Outcome` per request to each
`Observer` once the response is decided, refusals included (401, 403, 429, 503). Neither
ever sees a request or response body, so no secret value, key material or token reaches
them; `request_uri` is the path and query, which carry none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CallerClaims:
    """Who called, as the audit record's identity claims name them (no token)."""

    object_id: str  # oid
    tenant_id: str  # tid
    app_id: str | None = None  # appid / azp of an application
    upn: str | None = None  # a user's principal name


@dataclass(frozen=True, slots=True)
class Attempt:
    """An operation about to act, as a gate sees it."""

    operation: str  # Azure's operationName, e.g. "SecretGet"
    resource_kind: str  # "vault" | "managedhsm" | "management" | "identity"
    resource_name: str | None  # the vault's or pool's name, lower case
    throttle_class: str | None  # a row of the throttling limits (ops/throttle.py)
    units: float  # what it weighs against its class's limit
    caller: CallerClaims | None
    client_ip: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """A gate's answer when the operation must not act: the response to send instead."""

    status: int  # 429 or 503
    code: str  # Key Vault error code, e.g. "Throttled"
    message: str
    retry_after: int | None = None  # seconds


@dataclass(frozen=True, slots=True)
class Outcome:
    """One answered request."""

    operation: str  # Azure's operationName; "" when no operation matched (a 404 path)
    resource_kind: str
    resource_name: str | None
    resource_id: str | None  # the ARM id of the vault or pool, upper case as Azure logs it
    object_id: str | None  # the URI of the vault, object or version addressed
    api_version: str | None
    status: int
    time: float  # when the request arrived, seconds since the epoch (deployment clock)
    duration_ms: float  # server time only
    client_ip: str
    correlation_id: str | None  # x-ms-client-request-id, when the client sent one
    request_id: str  # x-ms-request-id of the response
    request_uri: str
    user_agent: str | None
    caller: CallerClaims | None  # None: not authenticated
    rbac_authorized: bool | None  # None: not decided by RBAC (access policies, or refused earlier)
    access_policy_match: bool | None  # None: not decided by access policies
    throttle_class: str | None
    meter: str | None  # the billing meter it counts toward (ops/usage.py), None: not billed
    units: float = 1.0


class Gate(Protocol):
    """Asked before an operation acts (throttling, an audit sink that cannot be written)."""

    def admit(self, attempt: Attempt) -> Refusal | None: ...


class Observer(Protocol):
    """Told of every answered request. Must not raise and must not block for long: it runs
    on the request's path after the response is decided."""

    def observe(self, outcome: Outcome) -> None: ...
