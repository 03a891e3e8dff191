"""The request pipeline names the operation of every request and accounts for it once.

Through the real server: each kind of request and refusal (data plane, management API,
token service, 401, 403, 404) writes exactly one request-log line that names the
operation (Azure's operationName), the vault, the caller's object id and the client
address, none of them taken unchecked from a header.

In-process (the application the server runs, called through ASGI with a gate and an
observer added the way api/app.py's `accounting` adds them): a gate's refusal is the
client's answer (a Key Vault error body, its status, Retry-After) before the body is
read, and each request yields one Outcome with the fields audit, metrics and usage read.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

import pytest

from openkeyvault.access.principals import Principal
from openkeyvault.api.app import KeyVaultApp
from openkeyvault.deployment import Deployment
from openkeyvault.ops.outcome import Attempt, Outcome, Refusal
from tests.security.conftest import API, Rest, resource
from tests.support.server import DevServer

MANAGEMENT = "https://management.azure.com"
MGMT_API = "api-version=2026-05-15"
FORGED_ADDRESS = "203.0.113.77"
SECRET_VALUE = "outcome-secret-value-d41d8cd9"


def log_line(server: DevServer, request_id: str) -> str:
    """The one request-log line of `request_id` (written just after the response)."""
    marker = f" rid={request_id} "
    deadline = time.monotonic() + 20
    while True:
        lines = [ln for ln in server.log().split("\n") if marker in ln]
        if lines or time.monotonic() > deadline:
            assert len(lines) == 1, lines
            return lines[0]
        time.sleep(0.05)


def fields(line: str) -> dict[str, str]:
    """The line's op, vault, oid and ip (the last four fields), and its status."""
    parts = line.split(" ")
    assert len(parts) == 13, line
    out = dict(p.split("=", 1) for p in parts[9:])
    out["status"] = parts[7]
    return out


@pytest.fixture(scope="module")
def stranger(server: DevServer, deployment: Deployment) -> tuple[str, str]:
    """(object id, vault token) of a real principal that holds no role."""
    record, _ = deployment.directory.create(f"outcome-{uuid.uuid4().hex[:8]}")
    p = Principal(record.object_id, record.tenant_id, record.client_id)
    return record.object_id, deployment.tokens.issue(p, resource(server)).access_token


def test_data_plane_requests_log_their_operation_and_caller(
        server: DevServer, rest: Rest, deployment: Deployment) -> None:
    name = f"outcome-{uuid.uuid4().hex[:8]}"
    dev = deployment.dev_principal.object_id
    spoof = {"X-Forwarded-For": FORGED_ADDRESS, "User-Agent": "agent with spaces"}
    put = rest.call("PUT", f"/secrets/{name}", json={"value": SECRET_VALUE}, headers=spoof)
    assert put.status_code == 200, put.text
    get = rest.call("GET", f"/secrets/{name}", headers=spoof)
    assert get.status_code == 200
    for r, op in ((put, "SecretSet"), (get, "SecretGet")):
        line = log_line(server, r.headers["x-ms-request-id"])
        assert fields(line) == {"op": op, "vault": "dev", "oid": dev, "ip": "127.0.0.1",
                                "status": "200"}
        assert FORGED_ADDRESS not in line and SECRET_VALUE not in line
        assert rest.token not in line and "api-version" not in line


def test_refusals_log_their_operation(server: DevServer, rest: Rest,
                                      stranger: tuple[str, str]) -> None:
    oid, token = stranger
    cases = [
        (rest.call("GET", "/secrets/anything", token=None), "SecretGet", "-", "401"),
        (rest.call("GET", "/keys/a/b/c/d", token=None), "-", "-", "401"),
        (rest.call("POST", "/keys/anything//sign", token=token,
                   json={"alg": "RS256", "value": "AAAA"}), "KeySign", oid, "403"),
        (rest.call("GET", "/secrets", token=token), "SecretList", oid, "403"),
        (rest.call("GET", "/no/such/path"), "-", None, "404"),
    ]
    for r, op, caller, status in cases:
        assert str(r.status_code) == status, r.text
        f = fields(log_line(server, r.headers["x-ms-request-id"]))
        assert (f["op"], f["status"]) == (op, status)
        if caller is not None:
            assert f["oid"] == caller
        assert f["ip"] == "127.0.0.1"


def test_management_and_token_service_requests_log_their_operation(
        server: DevServer, rest: Rest, deployment: Deployment) -> None:
    sub, rg = deployment.vaults.placement_of("dev") or ("", "")
    path = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/dev"
    token = rest.msi_token(MANAGEMENT)["access_token"]
    msi = rest.session.get(
        f"{server.url}/msi/token",
        params={"api-version": "2019-08-01", "resource": MANAGEMENT},
        headers={"X-IDENTITY-HEADER": server.env["IDENTITY_HEADER"]})
    bad_secret = rest.session.post(
        f"{server.url}/{deployment.tenant_id}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": str(uuid.uuid4()),
              "client_secret": "not-the-secret", "scope": f"{MANAGEMENT}/.default"})
    dev = deployment.dev_principal.object_id
    cases = [
        (rest.call("GET", path, token=token, query=MGMT_API), "VaultGet", "dev", dev, 200),
        (rest.call("GET", path, token=None, query=MGMT_API), "VaultGet", "-", "-", 401),
        (rest.call("GET", f"/subscriptions/{sub}/providers/Microsoft.KeyVault/vaults",
                   token=token, query=MGMT_API), "VaultList", "-", dev, 200),
        (rest.call("GET", "/subscriptions", token=token, query="api-version=2022-12-01"),
         "SubscriptionList", "-", dev, 200),
        (msi, "Authentication", "-", "-", 200),
        (bad_secret, "Authentication", "-", "-", 401),
        (rest.session.get(f"{server.url}/healthz"), "HealthGet", "-", "-", 200),
    ]
    for r, op, vault, caller, status in cases:
        assert r.status_code == status, (op, r.text)
        line = log_line(server, r.headers["x-ms-request-id"])
        assert fields(line) == {"op": op, "vault": vault, "oid": caller, "ip": "127.0.0.1",
                                "status": str(status)}, line
        assert "not-the-secret" not in line and token not in line


# ---- in-process: gates and outcomes ------------------------------------------------------

class Limit:
    """A gate that refuses one operation with the given status."""

    def __init__(self, operation: str, status: int = 429) -> None:
        self.operation, self.status = operation, status
        self.attempts: list[Attempt] = []

    def admit(self, attempt: Attempt) -> Refusal | None:
        self.attempts.append(attempt)
        if attempt.operation != self.operation:
            return None
        return Refusal(self.status, "Throttled", "Request was not processed because too many "
                       "requests were received. Reason: VaultRequestTypeLimitReached", 7)


class Kept:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def observe(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def call(app: KeyVaultApp, server: DevServer, method: str, path: str, *,
         token: str | None, query: str = API, body: bytes = b"",
         headers: dict[str, str] | None = None) -> Reply:
    """One request through the application's ASGI interface, as the server hands it over."""
    raw = [(b"host", f"localhost:{server.port}".encode())]
    if token is not None:
        raw.append((b"authorization", f"Bearer {token}".encode()))
    if body:
        raw += [(b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "https", "path": path, "raw_path": path.encode(),
             "query_string": query.encode(), "root_path": "", "headers": raw,
             "client": ("127.0.0.1", 50123), "server": ("127.0.0.1", server.port)}
    read = {"body": False}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not read["body"]:
            read["body"] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return Reply(start["status"],
                 {k.decode(): v.decode() for k, v in start["headers"]},
                 b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


@pytest.fixture(scope="module")
def accounted(deployment: Deployment) -> tuple[KeyVaultApp, Limit, Kept]:
    app = KeyVaultApp(deployment)
    gate, kept = Limit("SecretSet"), Kept()
    app.accounting.gates.append(gate)
    app.accounting.observers.append(kept)
    return app, gate, kept


def test_a_gate_refuses_before_the_operation_acts(
        server: DevServer, rest: Rest, deployment: Deployment,
        accounted: tuple[KeyVaultApp, Limit, Kept]) -> None:
    app, gate, kept = accounted
    name = f"gated-{uuid.uuid4().hex[:8]}"
    seen = len(kept.outcomes)
    r = call(app, server, "PUT", f"/secrets/{name}", token=rest.token,
             body=json.dumps({"value": SECRET_VALUE}).encode(),
             headers={"x-ms-client-request-id": "c0ffee00-0000-4000-8000-000000000001",
                      "user-agent": "azsdk-python-keyvault-secrets/4.9"})
    assert r.status == 429
    assert r.headers["retry-after"] == "7"
    assert r.json()["error"]["code"] == "Throttled"
    assert "VaultRequestTypeLimitReached" in r.json()["error"]["message"]
    # nothing acted: the secret does not exist
    assert call(app, server, "GET", f"/secrets/{name}", token=rest.token).status == 404

    attempt = gate.attempts[-2]  # the PUT's (the GET's came after)
    assert (attempt.operation, attempt.resource_kind, attempt.resource_name) == \
        ("SecretSet", "vault", "dev")
    assert attempt.throttle_class == "secret_create" and attempt.client_ip == "127.0.0.1"
    assert attempt.caller is not None
    assert attempt.caller.object_id == deployment.dev_principal.object_id

    assert len(kept.outcomes) == seen + 2  # one per request
    o = kept.outcomes[seen]
    assert (o.operation, o.status, o.resource_kind, o.resource_name) == \
        ("SecretSet", 429, "vault", "dev")
    sub, rg = deployment.vaults.placement_of("dev") or ("", "")
    assert o.resource_id == (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
                             "Microsoft.KeyVault/vaults/dev").upper()
    assert o.object_id == f"https://localhost:{server.port}/secrets/{name}"
    assert o.api_version == "7.5" and o.request_uri == f"/secrets/{name}?{API}"
    assert o.request_id == r.headers["x-ms-request-id"]
    assert o.correlation_id == "c0ffee00-0000-4000-8000-000000000001"
    assert o.user_agent == "azsdk-python-keyvault-secrets/4.9"
    assert o.client_ip == "127.0.0.1"
    assert o.caller is not None and o.caller.object_id == deployment.dev_principal.object_id
    assert o.caller.tenant_id == deployment.dev_principal.tenant_id
    assert (o.rbac_authorized, o.access_policy_match) == (True, None)
    assert (o.throttle_class, o.meter) == ("secret_create", "operations")
    assert o.duration_ms >= 0 and abs(o.time - deployment.clock.now()) < 600
    assert SECRET_VALUE not in repr(o) and rest.token not in repr(o)
    assert kept.outcomes[seen + 1].operation == "SecretGet"
    assert kept.outcomes[seen + 1].status == 404


def test_every_refusal_yields_one_outcome(
        server: DevServer, rest: Rest, stranger: tuple[str, str],
        accounted: tuple[KeyVaultApp, Limit, Kept]) -> None:
    app, _, kept = accounted
    oid, token = stranger
    cases = [
        (call(app, server, "GET", "/keys/k1", token=None), 401, "KeyGet", None, None),
        (call(app, server, "GET", "/keys/k1", token="not.a.token"), 401, "KeyGet", None, None),
        (call(app, server, "DELETE", "/keys/k1", token=token), 403, "KeyDelete", oid, False),
        (call(app, server, "GET", "/elsewhere", token=rest.token), 404, "", None, None),
    ]
    assert len(kept.outcomes) >= len(cases)
    for (r, status, op, caller, rbac), o in zip(cases, kept.outcomes[-len(cases):],
                                                strict=True):
        assert (r.status, o.status, o.operation) == (status, status, op)
        assert o.request_id == r.headers["x-ms-request-id"]
        if caller is not None:
            assert o.caller is not None and o.caller.object_id == caller
        elif status == 401:
            assert o.caller is None
        assert o.rbac_authorized is rbac


def test_gates_see_the_token_service(server: DevServer, deployment: Deployment) -> None:
    app = KeyVaultApp(deployment)
    gate, kept = Limit("Authentication", 503), Kept()
    app.accounting.gates.append(gate)
    app.accounting.observers.append(kept)
    r = call(app, server, "POST", f"/{deployment.tenant_id}/oauth2/v2.0/token", token=None,
             query="", body=b"grant_type=client_credentials")
    assert r.status == 503 and r.headers["retry-after"] == "7"
    assert kept.outcomes[-1].operation == "Authentication"
    assert kept.outcomes[-1].resource_kind == "identity"
    assert re.fullmatch(r"[0-9a-f-]+", kept.outcomes[-1].request_id)
