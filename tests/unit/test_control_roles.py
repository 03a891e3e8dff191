"""Azure's control-plane roles and the control-plane decision (`allowed_control`), and the
mapping of ARM scopes onto internal scopes.

GUIDs, actions and notActions are written out from Azure's published role definitions
(built-in roles, general and security categories), not read from the implementation.
"""

from __future__ import annotations

import uuid

import pytest

from openkeyvault.access.authorize import Authorizer, RoleAssignment, Scope
from openkeyvault.access.control import CONTROL_ROLES, ControlAuthorizer, arm_to_internal
from openkeyvault.access.principals import Principal
from openkeyvault.access.roles import find, permits

KV = "Microsoft.KeyVault"
VAULTS_READ = f"{KV}/vaults/read"
VAULTS_WRITE = f"{KV}/vaults/write"
VAULTS_DELETE = f"{KV}/vaults/delete"
POLICIES_WRITE = f"{KV}/vaults/accessPolicies/write"
DELETED_READ = f"{KV}/deletedVaults/read"
PURGE = f"{KV}/locations/deletedVaults/purge/action"
CHECK_NAME = f"{KV}/checkNameAvailability/read"
MANAGE = (VAULTS_READ, VAULTS_WRITE, VAULTS_DELETE, POLICIES_WRITE, DELETED_READ, CHECK_NAME)
ASSIGN = "Microsoft.Authorization/roleAssignments/write"
UNASSIGN = "Microsoft.Authorization/roleAssignments/delete"
READ_ASSIGNMENTS = "Microsoft.Authorization/roleAssignments/read"
GET_SECRET = f"{KV}/vaults/secrets/getSecret/action"
SET_SECRET = f"{KV}/vaults/secrets/setSecret/action"
SIGN = f"{KV}/vaults/keys/sign/action"

OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
KV_CONTRIBUTOR = "f25e0fa2-a7c8-4377-a976-54943a77a395"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
KV_ADMINISTRATOR = "00482a5a-887f-4fb3-b363-3b7fe8e74483"

S1 = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
S2 = "7d3a3c2e-4b57-4c54-9d1b-0a3f3b6e2f11"


def role(guid: str):  # noqa: ANN201 - a RoleDefinition
    found = find(guid)
    assert found is not None, guid
    return found


def test_control_roles_are_azures() -> None:
    assert {(r.id, r.name) for r in CONTROL_ROLES} == {
        (OWNER, "Owner"), (CONTRIBUTOR, "Contributor"), (READER, "Reader"),
        (KV_CONTRIBUTOR, "Key Vault Contributor")}
    assert role(OWNER).actions == ("*",) and role(OWNER).not_actions == ()
    assert role(CONTRIBUTOR).actions == ("*",)
    assert {"Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action"} <= set(role(CONTRIBUTOR).not_actions)
    assert role(READER).actions == ("*/read",) and role(READER).not_actions == ()
    assert set(role(KV_CONTRIBUTOR).actions) == {
        "Microsoft.Authorization/*/read", "Microsoft.Insights/alertRules/*", "Microsoft.KeyVault/*",
        "Microsoft.Resources/deployments/*",
        "Microsoft.Resources/subscriptions/resourceGroups/read", "Microsoft.Support/*"}
    assert set(role(KV_CONTRIBUTOR).not_actions) == {
        PURGE, "Microsoft.KeyVault/hsmPools/*", "Microsoft.KeyVault/managedHsms/*"}
    # control-plane roles grant no data access at all
    for r in CONTROL_ROLES:
        assert r.data_actions == () and r.not_data_actions == ()
    for name in ("owner", "Reader", "key vault contributor"):
        assert find(name) is not None


# role → (control actions granted, control actions refused)
EXPECTED = {
    OWNER: ((*MANAGE, PURGE, ASSIGN, UNASSIGN, READ_ASSIGNMENTS), ()),
    CONTRIBUTOR: ((*MANAGE, PURGE, READ_ASSIGNMENTS), (ASSIGN, UNASSIGN)),
    READER: ((VAULTS_READ, DELETED_READ, CHECK_NAME, READ_ASSIGNMENTS),
             (VAULTS_WRITE, VAULTS_DELETE, POLICIES_WRITE, PURGE, ASSIGN)),
    KV_CONTRIBUTOR: ((*MANAGE, READ_ASSIGNMENTS), (PURGE, ASSIGN, UNASSIGN)),
    # data roles: the Secrets User has no control-plane actions; the Administrator reads
    # deleted vaults and checks names (Azure's common actions) but cannot create vaults
    SECRETS_USER: ((), (*MANAGE, PURGE, ASSIGN)),
    KV_ADMINISTRATOR: ((DELETED_READ, CHECK_NAME, ASSIGN),
                       (VAULTS_READ, VAULTS_WRITE, VAULTS_DELETE, POLICIES_WRITE, PURGE)),
}


@pytest.mark.parametrize("guid", list(EXPECTED))
def test_role_grants_exactly_its_control_actions(guid: str) -> None:
    granted, refused = EXPECTED[guid]
    for action in granted:
        assert permits(role(guid), action), (guid, action)
    for action in refused:
        assert not permits(role(guid), action), (guid, action)


@pytest.mark.parametrize("guid", [OWNER, CONTRIBUTOR, READER, KV_CONTRIBUTOR])
def test_control_roles_grant_no_data_action(guid: str) -> None:
    authorizer = Authorizer.static([RoleAssignment("p", role(guid), "/")])
    principal = Principal("p", "t", "c")
    for action in (GET_SECRET, SET_SECRET, SIGN):
        assert not authorizer.allowed(principal, action, Scope("v1"))
        assert not permits(role(guid), action)


def test_arm_scopes_map_to_internal_scopes() -> None:
    rg = f"/subscriptions/{S1}/resourceGroups/Prod-RG"
    vault = f"{rg}/providers/Microsoft.KeyVault/vaults/Payments"
    assert arm_to_internal("/") == "/"
    assert arm_to_internal(f"/subscriptions/{S1.upper()}") == f"/subscriptions/{S1}"
    assert arm_to_internal(rg) == f"/subscriptions/{S1}/resourceGroups/prod-rg"
    assert arm_to_internal(vault) == "/vaults/payments"
    assert arm_to_internal(vault + "/") == "/vaults/payments"
    assert arm_to_internal(f"{vault}/secrets") == "/vaults/payments/secrets"
    assert arm_to_internal(f"{vault}/keys/signing-key") == "/vaults/payments/keys/signing-key"
    assert arm_to_internal(f"{vault}/certificates/web") == "/vaults/payments/certificates/web"
    # provider segments are case-insensitive
    assert arm_to_internal(vault.lower().replace("resourcegroups", "RESOURCEGROUPS")) == \
        "/vaults/payments"
    # resource-group names: letters, digits, _ - . ( ); not ending in '.'
    assert arm_to_internal(f"/subscriptions/{S1}/resourceGroups/rg_(1).x") is not None


@pytest.mark.parametrize("scope", [
    "", "vaults/x", "/subscriptions", "/subscriptions/not-a-guid",
    f"/subscriptions/{S1}x",
    f"/subscriptions/{S1}/resourceGroups",
    f"/subscriptions/{S1}/resourceGroups/ends-with-dot.",
    f"/subscriptions/{S1}/resourceGroups/has space",
    f"/subscriptions/{S1}/resourceGroups/{'r' * 91}",
    f"/subscriptions/{S1}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/x",
    f"/subscriptions/{S1}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/ab",
    f"/subscriptions/{S1}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v1/blobs",
    f"/subscriptions/{S1}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v1/secrets/a/b",
    f"/subscriptions/{S1}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v_1",
    "/subscriptions/" + S1 + "/" * 2000,
])
def test_invalid_arm_scopes_map_to_nothing(scope: str) -> None:
    assert arm_to_internal(scope) is None


def decide(assignments: list[tuple[str, str]], action: str, sub: str | None, rg: str | None,
           vault: str | None, placement: dict[str, tuple[str, str]] | None = None) -> bool:
    oid = str(uuid.uuid4())
    found = [RoleAssignment(oid, role(guid), scope) for guid, scope in assignments]
    control = ControlAuthorizer(lambda o: found if o == oid else [],
                                (placement or {}).get)
    return control.allowed_control(Principal(oid, "t", "c"), action, sub, rg, vault)


def test_deny_by_default_and_unknown_actions() -> None:
    assert not decide([], VAULTS_READ, S1, "rg", "v1")
    assert not decide([(OWNER, "/")], "Microsoft.KeyVault/vaults/frobnicate", S1, "rg", "v1")
    # a data action is not a control-plane action, even for the Owner
    assert not decide([(OWNER, "/")], GET_SECRET, S1, "rg", "v1")


def test_scopes_cover_what_is_below_them() -> None:
    sub_scope = f"/subscriptions/{S1}"
    rg_scope = f"/subscriptions/{S1}/resourceGroups/team"
    placement = {"v1": (S1, "Team"), "v2": (S1, "other"), "v3": (S2, "team")}
    for scope, covered in (("/", {"v1", "v2", "v3"}), (sub_scope, {"v1", "v2"}),
                           (rg_scope, {"v1"}), ("/vaults/v1", {"v1"})):
        for vault in ("v1", "v2", "v3"):
            where = placement[vault]
            assert decide([(KV_CONTRIBUTOR, scope)], VAULTS_WRITE, *where, vault, placement) \
                == (vault in covered), (scope, vault)
    # creating a vault (not placed yet): the request's subscription and resource group
    assert decide([(KV_CONTRIBUTOR, rg_scope)], VAULTS_WRITE, S1, "TEAM", "new1", placement)
    assert not decide([(KV_CONTRIBUTOR, rg_scope)], VAULTS_WRITE, S1, "other", "new1",
                      placement)
    # listing a resource group's or a subscription's vaults
    assert decide([(READER, rg_scope)], VAULTS_READ, S1, "team", None)
    assert not decide([(READER, rg_scope)], VAULTS_READ, S1, None, None)
    assert decide([(READER, sub_scope)], VAULTS_READ, S1, "any", None)
    assert not decide([(READER, "/vaults/v1")], VAULTS_READ, S1, "team", None)


def test_an_existing_vault_is_judged_where_it_is_placed() -> None:
    # a principal that owns its own resource group gains nothing by naming it in a request
    # for a vault placed elsewhere
    mine = f"/subscriptions/{S1}/resourceGroups/mine"
    placement = {"theirs1": (S1, "theirs")}
    assert not decide([(OWNER, mine)], VAULTS_DELETE, S1, "mine", "theirs1", placement)
    assert decide([(OWNER, f"/subscriptions/{S1}/resourceGroups/theirs")], VAULTS_DELETE,
                  S1, "mine", "theirs1", placement)


def test_not_actions_take_back() -> None:
    assert decide([(KV_CONTRIBUTOR, "/")], VAULTS_DELETE, S1, "rg", "v1")
    assert not decide([(KV_CONTRIBUTOR, "/")], PURGE, S1, "rg", "v1")
    assert decide([(KV_CONTRIBUTOR, "/"), (OWNER, "/vaults/v1")], PURGE, S1, "rg", "v1")
    assert not decide([(CONTRIBUTOR, "/")], ASSIGN, S1, "rg", "v1")
    assert decide([(CONTRIBUTOR, "/")], PURGE, S1, "rg", "v1")


def test_data_roles_at_a_resource_group_cover_its_vaults_data() -> None:
    rg_scope = f"/subscriptions/{S1}/resourceGroups/team"
    found = [RoleAssignment("p", role(SECRETS_USER), rg_scope)]
    placement = {"v1": (S1, "team"), "v2": (S1, "other")}
    authorizer = Authorizer(lambda o: found if o == "p" else [], None, placement.get)
    p = Principal("p", "t", "c")
    assert authorizer.allowed(p, GET_SECRET, Scope("v1", "/secrets/s"))
    assert not authorizer.allowed(p, GET_SECRET, Scope("v2", "/secrets/s"))
    assert not authorizer.allowed(p, SET_SECRET, Scope("v1", "/secrets/s"))
    assert not authorizer.allowed(p, GET_SECRET, Scope("v3", "/secrets/s"))
