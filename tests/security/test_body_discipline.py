"""Authorization before the body, bounded bodies, and memory that comes back.

1. The route table walk: every data-plane route carries a guard the app checks before it
   reads the body. For each route, a principal with no role is refused by the guard with
   exactly the refusal the domain service gives when called without it (same action, same
   scope, same access-policy permission), in role mode and in access-policy mode; a
   principal holding just the guard's action at the guard's scope passes it; and over
   HTTP the refusal comes without the body being needed (a body that is not JSON at all
   gets the 403, not a 400).
2. A burst of large restore bodies from a principal with no role leaves the workers'
   memory where it was; an allowed burst raises it by a bounded amount, and it comes
   back. Memory is read from /proc (VmRSS of the server's worker processes); bounds are
   fractions of the bytes declared, never times.
3. The large-body path still works: a backup over 1 MiB restores whole, a large base64url
   value decodes as a whole one would, and bodies past the per-worker permits are refused
   busy rather than buffered.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from openkeyvault.access import actions
from openkeyvault.access.definitions import RbacError
from openkeyvault.access.principals import Principal
from openkeyvault.api import bodies, http
from openkeyvault.api.http import DRAIN_LIMIT, Ctx
from openkeyvault.api.router import (
    CERTIFICATE_RESTORE_BODY_LIMIT,
    KEY_RESTORE_BODY_LIMIT,
    SECRET_RESTORE_BODY_LIMIT,
    DataGuard,
    RoleGuard,
    Route,
)
from openkeyvault.api.routes import data_plane_routes
from openkeyvault.deployment import Deployment
from openkeyvault.vault.context import Caller
from openkeyvault.vault.errors import BadParameter, DomainError, Forbidden
from tests.security.conftest import open_deployment, resource
from tests.support.procfs import PeakRss, worker_rss
from tests.support.server import DevServer, running
from tests.support.tls import post_large as send_large

MIB = 1024 * 1024
API = "api-version=7.5"
OBJECT = "bd-obj"
GUID = "6f1c1c3e-52c1-4b8e-9a57-3c1f4d0e2a11"
READER = "21090545-7ca7-4776-b22c-e363652d74d2"
ES = {"alg": "ES256", "value": "AAAA"}
# Bodies that get a request past its handler's decoding to the domain call (whose first
# step is the authorization); routes not named here take `{}`.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PUT", "secrets/{name}"): {"value": "v"},
    ("POST", "secrets/restore"): {"value": "AAAA"},
    ("POST", "keys/{name}/create"): {"kty": "EC", "crv": "P-256"},
    ("PUT", "keys/{name}"): {"key": {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}},
    ("POST", "keys/restore"): {"value": "AAAA"},
    ("POST", "rng"): {"count": 8},
    ("POST", "keys/{name}/{version?}/verify"): {**ES, "digest": "AAAA"},
    ("POST", "keys/{name}/{version?}/release"): {"target": "a.b.c"},
    ("POST", "certificates/{name}/import"): {"value": "AAAA"},
    ("POST", "certificates/{name}/pending/merge"): {"x5c": ["AAAA"]},
    ("PATCH", "certificates/{name}/pending"): {"cancellation_requested": True},
    ("POST", "certificates/restore"): {"value": "AAAA"},
    ("PUT", "certificates/issuers/{name}"): {"provider": "Test"},
    ("PATCH", "certificates/issuers/{name}"): {"provider": "Test"},
    ("PUT", "certificates/contacts"): {"contacts": [{"email": "a@example.com"}]},
}
for _op in ("encrypt", "decrypt", "wrapkey", "unwrapkey", "sign"):
    BODIES[("POST", f"keys/{{name}}/{{version?}}/{_op}")] = ES


def body_for(route: Route) -> dict[str, Any]:
    key = "/".join(route.pattern)
    if key.endswith("roleassignments/{name}"):
        return {"properties": {"roleDefinitionId": READER, "principalId": str(uuid.uuid4())}}
    if key.endswith("roledefinitions/{name}"):
        return {"properties": {"roleName": "bd", "permissions": [{"dataActions": []}]}}
    return BODIES.get((route.method, key), {})


def fill(route: Route) -> tuple[str, dict[str, str]]:
    """A concrete path for the route, and the parameters the router gives for it."""
    segs, params = [], {}
    for seg in route.pattern:
        if not seg.startswith("{"):
            segs.append(seg)
            continue
        key = seg.strip("{}?")
        value = "" if seg.endswith("?}") else GUID if key == "name" and "role" in "/".join(
            route.pattern) else OBJECT
        params[key] = value
        segs.append(value)
    return "/" + "/".join(segs), params


def route_id(route: Route) -> str:
    return f"{route.method} /{'/'.join(route.pattern)}"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with running(tmp_path_factory.mktemp("bodies") / "data", workers=1) as s:
        yield s


@pytest.fixture(scope="module")
def dep(srv: DevServer) -> Iterator[Deployment]:
    d = open_deployment(srv)
    yield d
    d.close()


@pytest.fixture(scope="module")
def routes(dep: Deployment) -> list[Route]:
    return data_plane_routes(dep)


def new_principal(d: Deployment, label: str) -> Principal:
    record, _ = d.directory.create(f"bd-{label}-{uuid.uuid4().hex[:8]}")
    return Principal(record.object_id, record.tenant_id, record.client_id)


def refusal(call: Any) -> DomainError:
    try:
        call()
    except DomainError as exc:
        return exc
    raise AssertionError("no refusal")


def domain_answer(route: Route, caller: Caller, path: str,
                  params: dict[str, str]) -> DomainError:
    """What the route's handler and domain service say without the guard in front."""
    raw = json.dumps(body_for(route)).encode() if route.method in ("PUT", "POST", "PATCH") \
        else b""
    ctx = Ctx(caller=caller, base="https://localhost", path=path, api_version="7.5",
              query={"api-version": "7.5"}, params=params, raw_body=raw)
    return refusal(lambda: route.handler(ctx))


def assert_same_refusal(route: Route, guard_says: DomainError, domain_says: DomainError) -> None:
    if isinstance(domain_says, BadParameter) and "at scope '/' only" in domain_says.message:
        # Custom role definitions are written at `/` only: the domain refuses any other
        # scope as a bad request before it asks who is calling; the guard asks first.
        assert isinstance(guard_says, Forbidden)
        return
    assert isinstance(domain_says, Forbidden), f"{route_id(route)}: {domain_says!r}"
    assert isinstance(guard_says, Forbidden), route_id(route)
    assert (guard_says.message, guard_says.inner) == (domain_says.message, domain_says.inner), \
        route_id(route)


# ---- 1. the route table walk --------------------------------------------------------------
def test_every_data_plane_route_has_a_guard(routes: list[Route]) -> None:
    assert len(routes) > 100
    assert [route_id(r) for r in routes if r.guard is None] == []


def test_guard_refuses_as_the_domain_does_in_role_mode(dep: Deployment,
                                                       routes: list[Route]) -> None:
    vault = dep.repo.get_vault("dev")
    assert vault is not None
    caller = Caller(new_principal(dep, "norole"), vault)
    for route in routes:
        path, params = fill(route)
        assert route.guard is not None
        guard_says = refusal(lambda: route.guard.check(dep.authorizer, caller, params))  # noqa: B023
        assert guard_says.inner == "ForbiddenByRbac", route_id(route)
        assert_same_refusal(route, guard_says, domain_answer(route, caller, path, params))


def test_guard_refuses_as_the_domain_does_in_access_policy_mode(dep: Deployment,
                                                                routes: list[Route]) -> None:
    """The refusal names the access-policy permission the operation needs, so equal
    refusals mean equal operation hints (keys get vs list, contacts, issuers...)."""
    vault = dep.repo.get_vault("dev")
    assert vault is not None
    policy_vault = dataclasses.replace(vault, properties=json.dumps(
        {"enableRbacAuthorization": False, "accessPolicies": []}))
    caller = Caller(new_principal(dep, "nopolicy"), policy_vault)
    for route in routes:
        path, params = fill(route)
        assert route.guard is not None
        guard_says = refusal(lambda: route.guard.check(dep.authorizer, caller, params))  # noqa: B023
        # Role management is decided by roles whatever the vault's model.
        expected = "ForbiddenByRbac" if isinstance(route.guard, RoleGuard) else "AccessDenied"
        assert guard_says.inner == expected, route_id(route)
        assert_same_refusal(route, guard_says, domain_answer(route, caller, path, params))


def assign_nearest(dep: Deployment, principal: Principal, role_id: str, scope: str) -> Any:
    """Assign at `scope`, or where none can be made (issuers, contacts: below
    `/certificates`, which is the narrowest assignable scope), at its nearest ancestor."""
    while True:
        try:
            return dep.rbac.assign(principal.object_id, role_id, scope)
        except RbacError:
            assert scope.count("/") > 3, scope
            scope = scope.rsplit("/", 1)[0]


def test_the_guards_own_grant_passes_it(dep: Deployment, routes: list[Route]) -> None:
    """A custom role with only the guard's action, assigned at only the guard's scope."""
    vault = dep.repo.get_vault("dev")
    assert vault is not None
    by_grant: dict[tuple[str, str], list[tuple[Route, dict[str, str]]]] = {}
    for route in routes:
        _, params = fill(route)
        guard = route.guard
        if isinstance(guard, DataGuard):
            fill_path = "/".join(params.get(s.strip("{}?"), "") if s.startswith("{") else s
                                 for s in guard.scope.split("/"))
            scope = f"/vaults/{vault.name}" + ("" if fill_path == "/" else fill_path)
            action = guard.action
        else:
            assert isinstance(guard, RoleGuard)
            scope = guard.resource(Caller(new_principal(dep, "x"), vault), params)
            found = guard.action(vault.kind)
            assert found is not None
            action = found
        by_grant.setdefault((action, scope), []).append((route, params))
    for (action, scope), members in by_grant.items():
        role_id = str(uuid.uuid4())
        field = "actions" if action in actions.CONTROL else "dataActions"
        dep.rbac.definitions.set(role_id, {"roleName": f"bd-{role_id[:8]}",
                                           "permissions": [{field: [action]}]})
        principal = new_principal(dep, "granted")
        assignment = assign_nearest(dep, principal, role_id, scope)
        try:
            caller = Caller(principal, vault)
            for route, params in members:
                assert route.guard is not None
                route.guard.check(dep.authorizer, caller, params)  # does not raise
        finally:
            dep.rbac.remove(assignment.id)
            dep.rbac.definitions.delete(role_id)


def test_refused_over_http_without_the_body(srv: DevServer, dep: Deployment,
                                            routes: list[Route]) -> None:
    """A body that is not JSON: a check after reading it would answer 400."""
    principal = new_principal(dep, "http")
    token = dep.tokens.issue(principal, resource(srv)).access_token
    session = requests.Session()
    session.trust_env = False
    session.verify = srv.ca
    for route in routes:
        path, _ = fill(route)
        data = b"\x00 this is not JSON " * 100 if route.method in ("PUT", "POST", "PATCH") \
            else None
        r = session.request(route.method, f"{srv.url}{path}?{API}", data=data,
                            headers={"Authorization": f"Bearer {token}",
                                     "Content-Type": "application/json"})
        assert r.status_code == 403, (route_id(route), r.status_code, r.text[:200])
        assert r.json()["error"]["innererror"]["code"] == "ForbiddenByRbac", route_id(route)


def test_restore_limits_are_per_kind(routes: list[Route]) -> None:
    limits = {"/".join(r.pattern): r.body_limit for r in routes if r.pattern[-1] == "restore"}
    assert limits == {"keys/restore": KEY_RESTORE_BODY_LIMIT,
                      "secrets/restore": SECRET_RESTORE_BODY_LIMIT,
                      "certificates/restore": CERTIFICATE_RESTORE_BODY_LIMIT}


# ---- 2. memory under bursts -------------------------------------------------------------------
def post_large(srv: DevServer, path: str, token: str, size: int) -> tuple[int | None, int]:
    """POST a `size`-byte body to `path`, stopping once the answer begins; (status or None
    if the connection was closed first, bytes of body sent)."""
    done = send_large(srv.port, srv.ca, f"{path}?{API}", token, size)
    return done.status, done.sent


def burst(srv: DevServer, token: str, sizes: list[int]) -> list[tuple[int | None, int, int]]:
    paths = [f"/{('keys', 'secrets', 'certificates')[i % 3]}/restore" for i in range(len(sizes))]
    with ThreadPoolExecutor(len(sizes)) as pool:
        found = list(pool.map(lambda p, n: post_large(srv, p, token, n), paths, sizes))
    return [(status, sent, size) for (status, sent), size in zip(found, sizes, strict=True)]


def settle(srv: DevServer, token: str) -> int:
    """Warm the path (token, route, decision) and return the baseline RSS."""
    for _ in range(3):
        post_large(srv, "/secrets/restore", token, 64)
    time.sleep(1.0)
    return worker_rss(srv)


def test_no_role_burst_of_large_restores_leaves_memory_alone(srv: DevServer,
                                                             dep: Deployment) -> None:
    token = dep.tokens.issue(new_principal(dep, "burst"), resource(srv)).access_token
    base = settle(srv, token)
    # 40 MiB: over every restore limit; 8 MiB: within all of them (only authorization
    # stops it); 3 MiB: small enough that the refusal drains it.
    sizes = [(40 * MIB, 8 * MIB, 3 * MIB)[i % 3] for i in range(16)]
    with PeakRss(srv) as rss:
        outcomes = burst(srv, token, sizes)
    time.sleep(1.0)
    after = worker_rss(srv)
    declared = sum(sizes)
    for status, sent, size in outcomes:
        # The answer, or (for a body too large to drain) a connection the server closed
        # before the body was sent.
        assert status in (403, 413) or (status is None and size > DRAIN_LIMIT
                                         and sent < size), (status, sent, size)
    assert any(status == 403 for status, _, _ in outcomes)
    assert rss.peak - base < declared // 8, (rss.peak - base, declared)
    assert after - base < declared // 32, (after - base, declared)


def test_allowed_burst_is_bounded_and_memory_comes_back(srv: DevServer) -> None:
    """The dev identity may restore: each body is read and decoded, then refused as no
    backup blob. Large bodies are admitted a few at a time per worker, and what they
    used is handed back."""
    r = requests.get(f"{srv.url}/msi/token", verify=srv.ca,
                     params={"api-version": "2019-08-01", "resource": resource(srv)},
                     headers={"X-IDENTITY-HEADER": srv.env["IDENTITY_HEADER"]})
    token = r.json()["access_token"]
    base = settle(srv, token)
    sizes = [8 * MIB] * 16
    with PeakRss(srv) as rss:
        outcomes = burst(srv, token, sizes)
    time.sleep(1.0)
    after = worker_rss(srv)
    assert [status for status, _, _ in outcomes] == [400] * 16
    # At most PERMITS bodies in flight, each with its decoded copies (a few times its
    # size): far below all sixteen at once.
    declared = sum(sizes)
    assert rss.peak - base < bodies.PERMITS * 5 * sizes[0], (rss.peak - base, declared)
    assert after - base < declared // 8, (after - base, declared)


# ---- 3. the large-body path still does its job ---------------------------------------------
def test_a_large_backup_restores_through_the_large_body_path(srv: DevServer) -> None:
    """A secret whose backup body is over 1 MiB: read into one buffer, decoded a slice at a
    time, under a permit; it comes back whole."""
    token = requests.get(f"{srv.url}/msi/token", verify=srv.ca,
                         params={"api-version": "2019-08-01", "resource": resource(srv)},
                         headers={"X-IDENTITY-HEADER": srv.env["IDENTITY_HEADER"]}
                         ).json()["access_token"]
    s = requests.Session()
    s.trust_env = False
    s.verify = srv.ca
    s.headers["Authorization"] = f"Bearer {token}"
    name = f"bd-large-{uuid.uuid4().hex[:8]}"
    values = [f"{i:04d}" + "v" * (25 * 1024 - 4) for i in range(48)]
    for v in values:
        assert s.put(f"{srv.url}/secrets/{name}?{API}", json={"value": v}).status_code == 200
    blob = s.post(f"{srv.url}/secrets/{name}/backup?{API}").json()["value"]
    assert len(blob) > bodies.LARGE_BYTES
    assert s.delete(f"{srv.url}/secrets/{name}?{API}").status_code == 200
    assert s.delete(f"{srv.url}/deletedsecrets/{name}?{API}").status_code == 204
    r = s.post(f"{srv.url}/secrets/restore?{API}", json={"value": blob})
    assert r.status_code == 200, r.text[:300]
    assert s.get(f"{srv.url}/secrets/{name}?{API}").json()["value"] == values[-1]
    listed = s.get(f"{srv.url}/secrets/{name}/versions?{API}&maxresults=25").json()
    assert len(listed["value"]) == 25 and listed["nextLink"]


def test_large_base64url_values_decode_as_whole_ones() -> None:
    for n in (3 * 1024 * 1024 - 1, 3 * 1024 * 1024, 3 * 1024 * 1024 + 1, 3 * 1024 * 1024 + 2):
        data = bytes(range(256)) * (n // 256) + bytes(n % 256)
        text = base64.urlsafe_b64encode(data).decode()
        assert http.b64url_decode(text.rstrip("="), "value") == data
        assert http.b64url_decode(text, "value") == data
    slice_ = 1024 * 1024
    for bad in ("A" * (slice_ - 2) + "==" + "AAAA" * 4,  # padding inside, at a slice's end
                "A" * (4 * slice_ + 1),  # one character too many
                "A" * (2 * slice_) + "+" + "AAA"):  # outside the url-safe alphabet
        with pytest.raises(BadParameter):
            http.b64url_decode(bad, "value")


def test_large_bodies_wait_for_a_permit_then_are_refused_busy() -> None:
    async def scenario() -> list[str]:
        gate = bodies.LargeBodies(permits=2, wait=0.05)
        seen: list[str] = []
        async with gate.admitted(), gate.admitted():
            try:
                async with gate.admitted():
                    seen.append("admitted")
            except bodies.Busy:
                seen.append("busy")
        async with gate.admitted():  # permits come back
            seen.append("admitted")
        return seen

    assert asyncio.run(scenario()) == ["busy", "admitted"]
