"""The data-plane RBAC API over raw HTTP: routing, wire shapes, paging, filters, every
refusal (status, code, and that nothing changed) and who may manage roles.

Who may do what (written from Azure's role table, azure-behavior.md §3.1):
- reading assignments and definitions needs `Microsoft.Authorization/*/read` among the
  role's `actions` (Administrator, officers, Reader, Data Access Administrator; not the
  "User" roles, which have no `actions`);
- writing and deleting assignments: Key Vault Administrator, and Key Vault Data Access
  Administrator for its eight roles only;
- custom role definitions are written at the deployment scope only.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from openkeyvault.access.principals import Principal
from openkeyvault.deployment import Deployment
from tests.security.conftest import Rest, resource
from tests.support.server import DevServer

Q = "api-version=2025-07-01"
RA = "/providers/Microsoft.Authorization/roleAssignments"
RD = "/providers/Microsoft.Authorization/roleDefinitions"
DEF = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"
V = "Microsoft.KeyVault/vaults"

ADMINISTRATOR = "00482a5a-887f-4fb3-b363-3b7fe8e74483"
DATA_ACCESS_ADMINISTRATOR = "8b54135c-b56d-4d72-a534-26097cfdc8d8"
READER = "21090545-7ca7-4776-b22c-e363652d74d2"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
RELEASE_USER = "08bbd89e-9f13-488c-ac41-acfcb10c90ab"  # not among Data Access Admin's eight


def ra(scope: str, name: str | None = None) -> str:
    return ("" if scope == "/" else scope) + RA + (f"/{name}" if name else "")


def rd(scope: str = "/", name: str | None = None) -> str:
    return ("" if scope == "/" else scope) + RD + (f"/{name}" if name else "")


def body(role: str, principal: str) -> dict[str, Any]:
    return {"properties": {"roleDefinitionId": role, "principalId": principal}}


def assert_error(r: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["code"] == code, err
    return err


def assert_forbidden(r: requests.Response) -> None:
    err = assert_error(r, 403, "Forbidden")
    assert err["innererror"]["code"] == "ForbiddenByRbac"


class Who:
    """A fresh principal of the directory with a genuine token."""

    def __init__(self, server: DevServer, deployment: Deployment) -> None:
        record, _ = deployment.directory.create(f"rbac-api-{uuid.uuid4().hex[:8]}")
        self.object_id = record.object_id
        principal = Principal(record.object_id, record.tenant_id, record.client_id)
        self.token = deployment.tokens.issue(principal, resource(server)).access_token


@pytest.fixture
def who(server: DevServer, deployment: Deployment) -> Any:
    return lambda: Who(server, deployment)


def collect(rest: Rest, path: str, query: str = Q, token: str = "dev") -> list[dict[str, Any]]:
    """Every item of a list, following nextLink."""
    r = rest.call("GET", path, query=query, token=token)
    assert r.status_code == 200, r.text
    page = r.json()
    items = list(page["value"])
    while page.get("nextLink"):
        auth = rest.token if token == "dev" else token
        r = rest.session.get(page["nextLink"], headers={"Authorization": f"Bearer {auth}"})
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["value"]
    return items


def assignments_of(rest: Rest, principal: str) -> list[dict[str, Any]]:
    return collect(rest, ra("/"), f"{Q}&$filter=principalId eq '{principal}'")


def custom_roles(rest: Rest) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in collect(rest, rd())
            if d["properties"]["type"] == "CustomRole"}


def make_role(rest: Rest, **props: Any) -> str:
    guid = str(uuid.uuid4())
    props.setdefault("roleName", f"custom {guid[:8]}")
    props.setdefault("permissions", [{"dataActions": [f"{V}/secrets/getSecret/action"]}])
    r = rest.call("PUT", rd("/", guid), query=Q, json={"properties": props})
    assert r.status_code == 201, r.text
    return guid


# ---- wire shapes and routing ------------------------------------------------------------

def test_assignment_wire_shape_and_idempotent_put(rest: Rest, who: Any) -> None:
    p = who()
    name = str(uuid.uuid4())
    r = rest.call("PUT", ra("/keys", name), query=Q, json=body(DEF + READER, p.object_id))
    assert r.status_code == 201, r.text
    expected = {
        "id": f"/keys{RA}/{name}", "name": name, "type": "Microsoft.Authorization/roleAssignments",
        "properties": {"scope": "/keys", "roleDefinitionId": DEF + READER,
                       "principalId": p.object_id},
    }
    assert r.json() == expected
    assert rest.call("GET", ra("/keys", name), query=Q).json() == expected
    # The bare GUID names the role as well; the same content under the same name is 201 again.
    again = rest.call("PUT", ra("/keys", name), query=Q, json=body(READER, p.object_id))
    assert (again.status_code, again.json()) == (201, expected)
    deleted = rest.call("DELETE", ra("/keys", name), query=Q)
    assert (deleted.status_code, deleted.json()) == (200, expected)
    assert assignments_of(rest, p.object_id) == []


def test_definition_wire_shape(rest: Rest) -> None:
    r = rest.call("GET", rd("/", SECRETS_USER), query=Q)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "id": DEF + SECRETS_USER, "name": SECRETS_USER,
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {
            "roleName": "Key Vault Secrets User", "description": r.json()["properties"]
            ["description"], "type": "AKVBuiltInRole",
            "permissions": [{"actions": [], "notActions": [],
                             "dataActions": [f"{V}/secrets/getSecret/action",
                                             f"{V}/secrets/readMetadata/action"],
                             "notDataActions": []}],
            "assignableScopes": ["/"],
        },
    }


def test_a_key_named_providers_is_still_a_key(rest: Rest) -> None:
    r = rest.call("GET", "/keys/providers", query=Q)
    assert_error(r, 404, "KeyNotFound")
    created = rest.call("POST", "/keys/providers/create", query=Q, json={"kty": "EC"})
    assert created.status_code == 200, created.text
    got = rest.call("GET", "/keys/providers", query=Q)
    assert got.status_code == 200 and got.json()["key"]["kid"].split("/")[-2] == "providers"
    # ... and its own role-assignment scope is /keys/providers.
    listed = rest.call("GET", f"/keys/providers{RA}", query=Q)
    assert listed.status_code == 200, listed.text
    assert rest.call("GET", f"/keys{RA}", query=Q).status_code == 200


def test_doubled_slashes_before_providers_mean_the_vault_scope(rest: Rest) -> None:
    single = rest.call("GET", RA, query=Q)
    double = rest.call("GET", "/" + RA, query=Q)
    assert single.status_code == double.status_code == 200
    assert {a["name"] for a in double.json()["value"]} == \
        {a["name"] for a in single.json()["value"]}
    assert rest.call("GET", "//keys" + RD, query=Q).status_code == 200


def test_other_methods_are_not_allowed(rest: Rest) -> None:
    r = rest.call("POST", RA, query=Q, json={})
    assert_error(r, 405, "MethodNotAllowed")
    assert rest.call("PATCH", rd("/", SECRETS_USER), query=Q, json={}).status_code == 405


# ---- lists: filters and paging ----------------------------------------------------------

def test_list_filters(rest: Rest, who: Any) -> None:
    p = who()
    names = {}
    for scope in ("/", "/secrets", "/secrets/filtered"):
        name = str(uuid.uuid4())
        r = rest.call("PUT", ra(scope, name), query=Q, json=body(SECRETS_USER, p.object_id))
        assert r.status_code == 201, r.text
        names[scope] = name
    mine = {a["name"] for a in assignments_of(rest, p.object_id)}
    assert mine == set(names.values())
    # atScope(): at or above the scope, not below it
    at = {a["name"] for a in collect(rest, ra("/secrets"), f"{Q}&$filter=atScope()")}
    assert names["/"] in at and names["/secrets"] in at and names["/secrets/filtered"] not in at
    # no filter: at, above and below; nothing beside
    every = {a["name"] for a in collect(rest, ra("/secrets"))}
    assert set(names.values()) <= every
    assert not set(names.values()) & {a["name"] for a in collect(rest, ra("/keys/other"))
                                      if a["properties"]["scope"] != "/"}
    r = rest.call("GET", ra("/"), query=f"{Q}&$filter=roleName eq 'x'")
    assert_error(r, 400, "BadParameter")
    r = rest.call("GET", rd("/"), query=f"{Q}&$filter=principalId eq 'x'")
    assert_error(r, 400, "BadParameter")
    by_name = collect(rest, rd("/"), f"{Q}&$filter=roleName eq 'Key Vault Reader'")
    assert [d["name"] for d in by_name] == [READER]
    for scope, name in names.items():
        assert rest.call("DELETE", ra(scope, name), query=Q).status_code == 200


def test_lists_page_with_next_links(rest: Rest, who: Any) -> None:
    definitions = collect(rest, rd("/"), f"{Q}&maxresults=3")
    assert len(definitions) == len({d["name"] for d in definitions}) >= 11
    assert {d["name"] for d in definitions} == {d["name"] for d in collect(rest, rd("/"))}
    p = who()
    for scope in ("/", "/keys", "/secrets"):
        assert rest.call("PUT", ra(scope, str(uuid.uuid4())), query=Q,
                         json=body(READER, p.object_id)).status_code == 201
    first = rest.call("GET", ra("/"), query=f"{Q}&maxresults=1&$filter=principalId eq "
                                            f"'{p.object_id}'").json()
    assert len(first["value"]) == 1 and "%24filter" not in first["nextLink"]
    assert "$filter=principalId" in first["nextLink"].replace("%20", " ")
    paged = collect(rest, ra("/"), f"{Q}&maxresults=1&$filter=principalId eq '{p.object_id}'")
    assert len(paged) == 3 and {a["properties"]["principalId"] for a in paged} == {p.object_id}
    assert_error(rest.call("GET", ra("/"), query=f"{Q}&maxresults=26"), 400, "BadParameter")
    assert_error(rest.call("GET", ra("/"), query=f"{Q}&$skiptoken=bogus"), 400, "BadParameter")
    for a in paged:
        assert rest.call("DELETE", ra(a["properties"]["scope"], a["name"]),
                         query=Q).status_code == 200


# ---- refusals: assignments -------------------------------------------------------------

def test_assignment_refusals_change_nothing(rest: Rest, who: Any) -> None:
    p = who()
    name = str(uuid.uuid4())
    cases = [
        (ra("/", name), body(DEF + str(uuid.uuid4()), p.object_id), 400, "BadParameter"),
        (ra("/", name), body("Key Vault Reader", p.object_id), 400, "BadParameter"),
        (ra("/", name), body(READER, str(uuid.uuid4())), 400, "BadParameter"),
        (ra("/", name), body(READER, "not-a-principal"), 400, "BadParameter"),
        (ra("/", "not-a-guid"), body(READER, p.object_id), 400, "BadParameter"),
        (ra("/keys/bad_name", name), body(READER, p.object_id), 400, "BadParameter"),
        (ra("/keys/a.b", name), body(READER, p.object_id), 400, "BadParameter"),
        (ra("/keys/" + "k" * 128, name), body(READER, p.object_id), 400, "BadParameter"),
        (ra("/", name), {"roleDefinitionId": READER, "principalId": p.object_id}, 400,
         "BadParameter"),
        (ra("/", name), {"properties": {"roleDefinitionId": READER}}, 400, "BadParameter"),
        (ra("/", name), {"properties": "x"}, 400, "BadParameter"),
        (f"/things{RA}/{name}", body(READER, p.object_id), 404, "NotFound"),
    ]
    for path, payload, status, code in cases:
        assert_error(rest.call("PUT", path, query=Q, json=payload), status, code)
    assert_error(rest.call("PUT", ra("/", name), query=Q, data=b"{no json"), 400, "BadParameter")
    assert assignments_of(rest, p.object_id) == []
    assert_error(rest.call("GET", ra("/", name), query=Q), 404, "RoleAssignmentNotFound")


def test_an_existing_name_or_content_is_a_conflict(rest: Rest, who: Any) -> None:
    p = who()
    name = str(uuid.uuid4())
    assert rest.call("PUT", ra("/secrets", name), query=Q,
                     json=body(SECRETS_USER, p.object_id)).status_code == 201
    original = rest.call("GET", ra("/secrets", name), query=Q).json()
    # the same name with another role, or at another scope
    assert_error(rest.call("PUT", ra("/secrets", name), query=Q,
                           json=body(READER, p.object_id)), 409, "RoleAssignmentExists")
    assert_error(rest.call("PUT", ra("/keys", name), query=Q,
                           json=body(SECRETS_USER, p.object_id)), 409, "RoleAssignmentExists")
    # the same content under another name
    assert_error(rest.call("PUT", ra("/secrets", str(uuid.uuid4())), query=Q,
                           json=body(SECRETS_USER, p.object_id)), 409, "RoleAssignmentExists")
    assert assignments_of(rest, p.object_id) == [original]
    # get and delete answer at the assignment's own scope, or at `/` (names are unique in
    # the vault; the Azure CLI sends `/` when no scope is given), never at another scope
    assert_error(rest.call("GET", ra("/keys", name), query=Q), 404, "RoleAssignmentNotFound")
    assert_error(rest.call("DELETE", ra("/keys", name), query=Q), 404, "RoleAssignmentNotFound")
    assert assignments_of(rest, p.object_id) == [original]
    assert rest.call("GET", ra("/", name), query=Q).json() == original
    assert rest.call("DELETE", ra("/", name), query=Q).status_code == 200
    assert assignments_of(rest, p.object_id) == []
    assert_error(rest.call("DELETE", ra("/secrets", name), query=Q), 404,
                 "RoleAssignmentNotFound")


def test_another_vaults_assignments_are_invisible(server: DevServer, rest: Rest,
                                                  deployment: Deployment, who: Any) -> None:
    other = f"rbac{uuid.uuid4().hex[:8]}"
    deployment.vaults.create(other)
    host = {"Host": f"{other}.vault.localhost:{server.port}"}
    p = who()
    name = str(uuid.uuid4())
    r = rest.call("PUT", ra("/", name), query=Q, json=body(READER, p.object_id), headers=host)
    assert r.status_code == 201, r.text
    assert assignments_of(rest, p.object_id) == []  # from the dev vault
    assert_error(rest.call("GET", ra("/", name), query=Q), 404, "RoleAssignmentNotFound")
    assert_error(rest.call("DELETE", ra("/", name), query=Q), 404, "RoleAssignmentNotFound")
    assert rest.call("GET", ra("/", name), query=Q, headers=host).status_code == 200
    # the assignment gives its role in that vault only
    assert rest.call("GET", "/secrets", query=Q, token=p.token, headers=host).status_code == 200
    assert_forbidden(rest.call("GET", "/secrets", query=Q, token=p.token))


# ---- refusals: definitions -------------------------------------------------------------

def test_built_in_roles_cannot_be_changed_or_deleted(rest: Rest) -> None:
    before = rest.call("GET", rd("/", SECRETS_USER), query=Q).json()
    assert_error(rest.call("DELETE", rd("/", SECRETS_USER), query=Q), 400, "BadParameter")
    assert_error(rest.call("PUT", rd("/", SECRETS_USER), query=Q,
                           json={"properties": {"roleName": "mine", "permissions": []}}),
                 400, "BadParameter")
    assert rest.call("GET", rd("/", SECRETS_USER), query=Q).json() == before


@pytest.mark.parametrize(("props", "why"), [
    ({"permissions": [{"dataActions": [f"{V}/secrets/fly/action"]}]}, "unknown data action"),
    ({"permissions": [{"dataActions": [f"{V}/nothing/*"]}]}, "wildcard matching nothing"),
    ({"permissions": [{"dataActions": ["Microsoft.Authorization/roleAssignments/write"]}]},
     "an action given as a data action"),
    ({"permissions": [{"actions": [f"{V}/secrets/getSecret/action"]}]},
     "a data action given as an action"),
    ({"permissions": [{"dataActions": [f"{V}/secrets/getSecret/action"] * 51}]},
     "more than 50 actions"),
    ({"permissions": [{"dataActions": ["x" * 513]}]}, "action name too long"),
    ({"permissions": [{"dataActions": "not a list"}]}, "not a list"),
    ({"permissions": {"dataActions": []}}, "permissions not a list"),
    ({"roleName": "r" * 513}, "role name too long"),
    ({"roleName": 7}, "role name not a string"),
    ({"type": "AKVBuiltInRole"}, "built-in type"),
    ({"assignableScopes": ["/subscriptions/x"]}, "assignable scope"),
])
def test_invalid_definitions_are_refused(rest: Rest, props: dict[str, Any], why: str) -> None:
    guid = str(uuid.uuid4())
    payload = {"roleName": f"invalid {guid[:8]}",
               "permissions": [{"dataActions": [f"{V}/secrets/getSecret/action"]}], **props}
    assert_error(rest.call("PUT", rd("/", guid), query=Q, json={"properties": payload}),
                 400, "BadParameter")
    assert_error(rest.call("GET", rd("/", guid), query=Q), 404, "RoleDefinitionNotFound")


def test_definition_refusals(rest: Rest, who: Any) -> None:
    guid = str(uuid.uuid4())
    valid = {"properties": {"roleName": f"valid {guid[:8]}", "permissions": []}}
    assert_error(rest.call("PUT", rd("/", "not-a-guid"), query=Q, json=valid), 400,
                 "BadParameter")
    assert_error(rest.call("PUT", rd("/keys", guid), query=Q, json=valid), 400, "BadParameter")
    assert_error(rest.call("PUT", rd("/", guid), query=Q, json={"properties": []}), 400,
                 "BadParameter")
    assert_error(rest.call("PUT", rd("/", guid), query=Q,
                           json={"properties": {"roleName": "Key Vault Reader"}}),
                 409, "RoleDefinitionWithSameNameExists")
    assert guid not in custom_roles(rest)
    assert_error(rest.call("GET", rd("/", str(uuid.uuid4())), query=Q), 404,
                 "RoleDefinitionNotFound")
    assert_error(rest.call("DELETE", rd("/", str(uuid.uuid4())), query=Q), 404,
                 "RoleDefinitionNotFound")
    assert_error(rest.call("GET", rd("/", "not-a-guid"), query=Q), 400, "BadParameter")
    # Managed HSM's built-in roles do not answer on a vault
    assert_error(rest.call("GET", rd("/", "a290e904-7015-4bba-90c8-60543313cdb4"), query=Q),
                 404, "RoleDefinitionNotFound")

    # a second custom role may not take a custom role's name
    first = make_role(rest)
    name = custom_roles(rest)[first]["properties"]["roleName"]
    assert_error(rest.call("PUT", rd("/", guid), query=Q,
                           json={"properties": {"roleName": name.upper()}}),
                 409, "RoleDefinitionWithSameNameExists")
    assert guid not in custom_roles(rest)

    # a custom role still assigned cannot be deleted
    p = who()
    a = str(uuid.uuid4())
    assert rest.call("PUT", ra("/", a), query=Q,
                     json=body(DEF + first, p.object_id)).status_code == 201
    before = custom_roles(rest)[first]
    assert_error(rest.call("DELETE", rd("/", first), query=Q), 400, "BadParameter")
    assert custom_roles(rest)[first] == before
    assert rest.call("DELETE", ra("/", a), query=Q).status_code == 200
    deleted = rest.call("DELETE", rd("/", first), query=Q)
    assert (deleted.status_code, deleted.json()) == (200, before)
    assert first not in custom_roles(rest)


def test_custom_role_assignable_scopes_are_enforced(rest: Rest, who: Any) -> None:
    role = make_role(rest, assignableScopes=["/keys"],
                     permissions=[{"dataActions": [f"{V}/keys/read"]}])
    p = who()
    assert_error(rest.call("PUT", ra("/secrets", str(uuid.uuid4())), query=Q,
                           json=body(role, p.object_id)), 400, "BadParameter")
    assert_error(rest.call("PUT", ra("/", str(uuid.uuid4())), query=Q,
                           json=body(role, p.object_id)), 400, "BadParameter")
    name = str(uuid.uuid4())
    assert rest.call("PUT", ra("/keys/k1", name), query=Q,
                     json=body(role, p.object_id)).status_code == 201
    assert rest.call("DELETE", ra("/keys/k1", name), query=Q).status_code == 200
    assert rest.call("DELETE", rd("/", role), query=Q).status_code == 200


def test_a_wildcard_custom_role_with_an_exclusion(rest: Rest, who: Any) -> None:
    role = make_role(rest, permissions=[{"dataActions": [f"{V}/secrets/*"],
                                         "notDataActions": [f"{V}/secrets/getSecret/action"]}])
    p = who()
    secret = f"wild-{uuid.uuid4().hex[:8]}"
    assert rest.call("PUT", f"/secrets/{secret}", query=Q, json={"value": "v"}).status_code == 200
    a = str(uuid.uuid4())
    assert rest.call("PUT", ra("/secrets", a), query=Q,
                     json=body(role, p.object_id)).status_code == 201
    assert rest.call("GET", "/secrets", query=Q, token=p.token).status_code == 200
    assert_forbidden(rest.call("GET", f"/secrets/{secret}", query=Q, token=p.token))
    assert rest.call("DELETE", ra("/secrets", a), query=Q).status_code == 200
    assert rest.call("DELETE", rd("/", role), query=Q).status_code == 200


# ---- who may manage roles --------------------------------------------------------------

def grant(rest: Rest, role: str, principal: str, scope: str = "/") -> str:
    name = str(uuid.uuid4())
    r = rest.call("PUT", ra(scope, name), query=Q, json=body(role, principal))
    assert r.status_code == 201, r.text
    return name


def test_a_principal_without_roles_may_do_nothing(rest: Rest, who: Any) -> None:
    stranger, p = who(), who()
    for method, path, payload in [
        ("GET", ra("/"), None), ("GET", ra("/keys"), None), ("GET", rd("/"), None),
        ("GET", rd("/", READER), None), ("GET", ra("/", str(uuid.uuid4())), None),
        ("PUT", ra("/", str(uuid.uuid4())), body(ADMINISTRATOR, stranger.object_id)),
        ("DELETE", ra("/", str(uuid.uuid4())), None),
        ("PUT", rd("/", str(uuid.uuid4())), {"properties": {"roleName": "x"}}),
        ("DELETE", rd("/", str(uuid.uuid4())), None),
    ]:
        assert_forbidden(rest.call(method, path, query=Q, token=stranger.token, json=payload))
    # a role without `actions` does not let one read role assignments either
    grant(rest, SECRETS_USER, p.object_id)
    assert_forbidden(rest.call("GET", ra("/"), query=Q, token=p.token))
    assert assignments_of(rest, stranger.object_id) == []


def test_reader_reads_but_does_not_write(rest: Rest, who: Any) -> None:
    reader, p = who(), who()
    grant(rest, READER, reader.object_id)
    target = grant(rest, SECRETS_USER, p.object_id, "/secrets")
    assert rest.call("GET", ra("/"), query=Q, token=reader.token).status_code == 200
    assert rest.call("GET", rd("/", READER), query=Q, token=reader.token).status_code == 200
    assert_forbidden(rest.call("PUT", ra("/", str(uuid.uuid4())), query=Q, token=reader.token,
                               json=body(READER, p.object_id)))
    assert_forbidden(rest.call("DELETE", ra("/secrets", target), query=Q, token=reader.token))
    assert len(assignments_of(rest, p.object_id)) == 1


def test_data_access_administrator_manages_its_eight_roles_only(rest: Rest, who: Any) -> None:
    daa, p = who(), who()
    grant(rest, DATA_ACCESS_ADMINISTRATOR, daa.object_id)
    # it holds no data action
    assert_forbidden(rest.call("GET", "/secrets", query=Q, token=daa.token))
    made = rest.call("PUT", ra("/secrets", str(uuid.uuid4())), query=Q, token=daa.token,
                     json=body(DEF + SECRETS_USER, p.object_id))
    assert made.status_code == 201, made.text
    for role in (RELEASE_USER, DATA_ACCESS_ADMINISTRATOR):
        assert_forbidden(rest.call("PUT", ra("/", str(uuid.uuid4())), query=Q, token=daa.token,
                                   json=body(role, p.object_id)))
    release = grant(rest, RELEASE_USER, p.object_id, "/keys")
    assert_forbidden(rest.call("DELETE", ra("/keys", release), query=Q, token=daa.token))
    assert {a["name"] for a in assignments_of(rest, p.object_id)} == {made.json()["name"],
                                                                      release}
    assert_forbidden(rest.call("PUT", rd("/", str(uuid.uuid4())), query=Q, token=daa.token,
                               json={"properties": {"roleName": "x"}}))
    assert rest.call("DELETE", ra("/secrets", made.json()["name"]), query=Q,
                     token=daa.token).status_code == 200
    assert {a["name"] for a in assignments_of(rest, p.object_id)} == {release}


def test_scoped_administrators_manage_within_their_scope(rest: Rest, who: Any) -> None:
    keys_admin, vault_admin, p = who(), who(), who()
    grant(rest, ADMINISTRATOR, keys_admin.object_id, "/keys")
    grant(rest, ADMINISTRATOR, vault_admin.object_id, "/")
    # the keys administrator assigns under /keys, not at the vault or on secrets
    ok = rest.call("PUT", ra("/keys/k1", str(uuid.uuid4())), query=Q, token=keys_admin.token,
                   json=body(READER, p.object_id))
    assert ok.status_code == 201, ok.text
    for scope in ("/", "/secrets"):
        assert_forbidden(rest.call("PUT", ra(scope, str(uuid.uuid4())), query=Q,
                                   token=keys_admin.token, json=body(READER, p.object_id)))
    # a vault administrator cannot touch the deployment: custom roles are shared by every
    # vault, and the dev identity's deployment-wide assignment shows at / but is not theirs
    assert_forbidden(rest.call("PUT", rd("/", str(uuid.uuid4())), query=Q,
                               token=vault_admin.token, json={"properties": {"roleName": "x"}}))
    deployment_wide = [a for a in collect(rest, ra("/"), token=vault_admin.token)
                       if a["properties"]["roleDefinitionId"] == DEF + ADMINISTRATOR
                       and a["properties"]["principalId"] not in
                       (keys_admin.object_id, vault_admin.object_id)]
    assert deployment_wide
    for a in deployment_wide:
        assert_forbidden(rest.call("DELETE", ra("/", a["name"]), query=Q,
                                   token=vault_admin.token))
    assert rest.call("GET", "/secrets", query=Q).status_code == 200  # the dev identity still is
    assert rest.call("DELETE", ra("/keys/k1", ok.json()["name"]), query=Q,
                     token=vault_admin.token).status_code == 200
