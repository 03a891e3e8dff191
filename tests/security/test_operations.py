"""The operations table (vault/operations.py) and the routes that read it: every route
names its operation, a guard is the operation's action at its scope, and two routes of
different meaning never share an operation."""

from __future__ import annotations

import inspect
from collections import defaultdict
from typing import Any

import pytest

from openkeyvault.access import actions, policies
from openkeyvault.api.management import Management
from openkeyvault.api.pools import Activated, pool_router
from openkeyvault.api.rbac import LocalGuard
from openkeyvault.api.router import DataGuard, RoleGuard, Route, data_guard
from openkeyvault.api.routes import data_plane_routes
from openkeyvault.deployment import Deployment
from openkeyvault.vault import operations as ops
from openkeyvault.vault.operations import BY_NAME, TABLE, Operation


@pytest.fixture(scope="module")
def data_routes(deployment: Deployment) -> list[tuple[str, Route]]:
    """Every data-plane route: a vault's and a managed HSM pool's."""
    pool = pool_router(deployment)
    return [("vault", r) for r in data_plane_routes(deployment)] + \
        [("pool", r) for r in pool._routes]


@pytest.fixture(scope="module")
def management_routes(deployment: Deployment) -> list[tuple[str, str, Operation | None]]:
    """(method, handler, operation) of every management route (vaults, pools, ARM)."""
    m = Management(deployment)
    out: list[tuple[str, str, Operation | None]] = []
    for _, methods in m.routes:
        out += [(method, f"{o.kind}:{o.handler.__qualname__}", o.operation)
                for method, o in methods.items()]
    for _, route in m.arm.routes:
        out += [(method, route.handler.__qualname__, op)
                for method, op in route.operations.items()]
    return out


def test_names_are_unique_and_rows_well_formed() -> None:
    assert len({op.name for op in TABLE}) == len(TABLE)
    for op in TABLE:
        assert op.name[:1].isupper() and op.name.isalnum(), op.name
        assert op.throttle in ops.THROTTLE_CLASSES, op.name
        assert op.meter is None or op.meter in ops.METERS, op.name
        assert op.action is None or op.action in actions.ALL, op.name
        if op.plane == ops.MANAGEMENT_PLANE:
            assert (op.throttle, op.meter) == (ops.MANAGEMENT, None), op.name
        if op.plane in (ops.IDENTITY, ops.SERVICE, ops.NOTIFICATION):
            assert (op.action, op.throttle, op.meter) == (None, ops.NONE, None), op.name
        if op.key_operation:
            assert op.action is not None and "/keys/" in op.action, op.name


def test_azure_names_are_used_where_azure_has_them() -> None:
    for name in ("SecretGet", "SecretSet", "SecretList", "KeySign", "KeyCreate", "KeyRotate",
                 "KeyRotateIfDue", "CertificateCreate", "CertificateIssuerSet",
                 "CertificateRenew", "VaultGet", "VaultPut", "VaultPatch", "VaultDelete",
                 "Authentication", "SecretNearExpiryEventGridNotification",
                 "KeyExpiredEventGridNotification",
                 "CertificateNearExpiryEventGridNotification",
                 "VaultAccessPolicyChangedEventGridNotification"):
        assert name in BY_NAME, name


def test_throttling_classes_follow_azure_limits() -> None:
    shared = {op.name for op in TABLE if op.throttle == ops.SECRET_CREATE}
    assert shared == {"SecretSet", "CertificateImport", "KeyImport"}
    assert ops.get("KeyCreate").throttle == ops.KEY_CREATE
    assert ops.get("KeySign").throttle == ops.KEY_OTHER
    assert ops.get("SecretGet").throttle == ops.VAULT_OTHER
    assert ops.get("VaultPut").throttle == ops.MANAGEMENT


def test_data_plane_rows_resolve_to_access_policy_permissions() -> None:
    """Every vault operation decided by a data action is allowed by some access-policy
    permission (access/policies.py): the table names a hint policies knows, or none
    where the action alone decides. (A pool's own rows are decided by its local RBAC: a
    pool has no access policies.)"""
    for op in TABLE:
        if op.plane != ops.DATA or op.scope == ops.ROLE_SCOPE or op.action == actions.RNG \
                or op.name in ops.POOL_ONLY:
            continue
        assert op.permissions, op.name
        assert op.permissions == policies.granting(op.action or "", op.permission)


def test_every_data_plane_route_names_its_operation(
        data_routes: list[tuple[str, Route]]) -> None:
    for where, r in data_routes:
        assert r.operation is not None, (where, r.method, r.pattern)
        row = BY_NAME[r.operation.name]
        # A pool's keys routes carry the row as a pool decides it (Managed HSM's action).
        expected = ops.POOL_OPERATIONS[row.name] if where == "pool" and \
            row.scope != ops.ROLE_SCOPE else row
        assert expected is r.operation, r.operation.name
        assert r.operation.plane == ops.DATA


def test_a_guard_is_derived_from_its_operation(data_routes: list[tuple[str, Route]]) -> None:
    for _, r in data_routes:
        op = r.operation
        assert op is not None
        guard: Any = r.guard
        if isinstance(guard, Activated):  # a pool's keys routes: activation after the role
            guard = guard.inner
        if isinstance(guard, LocalGuard):
            guard = guard.inner
        if op.scope == ops.ROLE_SCOPE:
            assert isinstance(guard, RoleGuard), op.name
            assert guard.action("vault") == op.action, op.name
        else:
            assert isinstance(guard, DataGuard), op.name
            assert guard == data_guard(op), op.name
            assert (guard.action, guard.scope, guard.operation) == \
                (op.action, op.scope, op.permission)


def _meaning(r: Route) -> tuple[str, str]:
    """What a route does: its method and the handler it runs (through its bindings)."""
    handler = inspect.unwrap(r.handler)
    return r.method, getattr(handler, "__qualname__", repr(handler))


def test_routes_of_different_meaning_never_share_an_operation(
        data_routes: list[tuple[str, Route]],
        management_routes: list[tuple[str, str, Operation | None]]) -> None:
    by_op: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for _, r in data_routes:
        assert r.operation is not None
        by_op[r.operation.name].add(_meaning(r))
    for method, handler, op in management_routes:
        assert op is not None, (method, handler)
        by_op[op.name].add((method, handler))
    shared = {name: meanings for name, meanings in by_op.items() if len(meanings) > 1}
    assert not shared


def test_every_management_route_names_a_management_operation(
        management_routes: list[tuple[str, str, Operation | None]]) -> None:
    for method, handler, op in management_routes:
        assert op is not None, (method, handler)
        assert op.plane == ops.MANAGEMENT_PLANE and BY_NAME[op.name] is op


def test_every_row_asked_by_a_request_is_served(
        data_routes: list[tuple[str, Route]],
        management_routes: list[tuple[str, str, Operation | None]]) -> None:
    """No row is dead: each data-plane and management operation has a route."""
    served = {r.operation.name for _, r in data_routes if r.operation is not None}
    served |= {op.name for _, _, op in management_routes if op is not None}
    served.add("CloudMetadataGet")  # answered before authentication (api/management.py)
    rows = {op.name for op in TABLE if op.plane in (ops.DATA, ops.MANAGEMENT_PLANE)}
    assert rows - served == set()


@pytest.mark.parametrize(("name", "call"), [
    ("SecretList", lambda d, caller: d.secrets.list(caller, None, None)),
    ("KeyList", lambda d, caller: d.keys.list(caller, None, None)),
    ("CertificateList", lambda d, caller: d.certificates.list_certificates(
        caller, None, None, None)),
    ("CertificateIssuersList", lambda d, caller: d.issuers.list(caller, None, None)),
])
def test_services_check_the_action_their_row_names(
        deployment: Deployment, monkeypatch: pytest.MonkeyPatch, name: str, call: Any) -> None:
    """The table is the one place that says what an operation needs: the service asks
    for its row's action, so a row changed to an action the caller lacks refuses it."""
    import dataclasses

    from openkeyvault.vault.context import Caller
    from openkeyvault.vault.errors import Forbidden

    vault = deployment.repo.get_vault("dev")
    assert vault is not None
    caller = Caller(deployment.dev_principal, vault)  # Key Vault Administrator
    call(deployment, caller)  # allowed by its row as it is
    elsewhere = "Microsoft.KeyVault/managedHsm/keys/read/action"  # no vault role has it
    monkeypatch.setitem(BY_NAME, name, dataclasses.replace(BY_NAME[name], action=elsewhere))
    with pytest.raises(Forbidden):
        call(deployment, caller)
