"""Every field of the role management (rbac.json) and management API (Microsoft.KeyVault)
request bodies, sent with each JSON type it must not have, over raw HTTPS to the real
server; and the management API's authorization before the body.

A wrong type is a 400 in the API's own error shape (Key Vault's BadParameter on the data
plane; ARM's BadRequest, InvalidTag for a tag, InvalidRequestContent for a body that is
no JSON object), naming the field, never a 500, and nothing changes: a refused create
leaves the name free, a refused change leaves the resource as it was. A caller without
the control action is refused 403 before its body is read, whatever the body holds.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from openkeyvault.deployment import Deployment
from tests.security.conftest import Rest
from tests.security.test_request_types import (
    ARRAY_NULL,
    BOOL_NULL,
    INT_NULL,
    OBJ,
    OBJ_NULL,
    SAMPLES,
    STR,
    STR_NULL,
    named,
    put_path,
    wrong_types,
)
from tests.support.server import DevServer

MGMT = "api-version=2026-05-15"
RBAC = "api-version=2025-07-01"
MANAGEMENT = "https://management.azure.com"
KV = "/providers/Microsoft.KeyVault"
RA = "/providers/Microsoft.Authorization/roleAssignments"
RD = "/providers/Microsoft.Authorization/roleDefinitions"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
GET_SECRET = "Microsoft.KeyVault/vaults/secrets/getSecret/action"
READ_ASSIGNMENTS = "Microsoft.Authorization/roleAssignments/read"
NOT_JSON = b"{not json at all"


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def vault_path(sub: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/rg1{KV}/vaults/{name}"


def hsm_path(sub: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/rg1{KV}/managedHSMs/{name}"


class Arm:
    """Raw HTTPS to the management API with one bearer token."""

    def __init__(self, rest: Rest, token: str) -> None:
        self.rest, self.token = rest, token

    def call(self, method: str, path: str, body: Any = None,
             raw: bytes | None = None) -> requests.Response:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        return self.rest.call(method, path, token=self.token, query=MGMT, data=data,
                              headers={"Content-Type": "application/json"}, timeout=30)

    def get(self, path: str) -> Any:
        r = self.call("GET", path)
        assert r.status_code == 200, r.text
        return r.json()

    def absent(self, path: str) -> None:
        r = self.call("GET", path)
        assert r.status_code == 404, r.text


def arm_refused(r: requests.Response, code: str, field: str | None = None) -> None:
    """400 in ARM's error shape {"error": {"code", "message"}} with `code`."""
    assert r.status_code == 400, (r.status_code, r.text)
    body = r.json()
    assert list(body) == ["error"] and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if field is not None:
        assert field in body["error"]["message"], body


def type_refused(r: requests.Response, path: str) -> None:
    arm_refused(r, "InvalidTag" if path.startswith("tags") else "BadRequest", named(path))


@pytest.fixture(scope="module")
def arm(rest: Rest) -> Arm:
    return Arm(rest, str(rest.msi_token(MANAGEMENT)["access_token"]))


@pytest.fixture(scope="module")
def sub() -> str:
    return str(uuid.uuid4())


# ---- field tables ----------------------------------------------------------------------
def permissions_fields(prefix: str) -> dict[str, frozenset[str]]:
    out = {f"{prefix}permissions": OBJ_NULL}
    for kind in ("keys", "secrets", "certificates", "storage"):
        out |= {f"{prefix}permissions.{kind}": ARRAY_NULL,
                f"{prefix}permissions.{kind}.0": STR}
    return out


def policy_fields(prefix: str) -> dict[str, frozenset[str]]:
    return {f"{prefix}": OBJ, f"{prefix}.tenantId": STR_NULL, f"{prefix}.objectId": STR_NULL,
            f"{prefix}.applicationId": STR_NULL, **permissions_fields(f"{prefix}.")}


def acl_fields(prefix: str) -> dict[str, frozenset[str]]:
    return {prefix: OBJ_NULL, f"{prefix}.bypass": STR_NULL,
            f"{prefix}.defaultAction": STR_NULL, f"{prefix}.ipRules": ARRAY_NULL,
            f"{prefix}.ipRules.0": OBJ, f"{prefix}.ipRules.0.value": STR_NULL,
            f"{prefix}.virtualNetworkRules": ARRAY_NULL}


VNET_FIELDS = {"virtualNetworkRules.0": OBJ, "virtualNetworkRules.0.id": STR_NULL,
               "virtualNetworkRules.0.ignoreMissingVnetServiceEndpoint": BOOL_NULL}
TAGS = {"tags": OBJ_NULL, "tags.t": STR}
P = "properties"
VAULT_FIELDS = {
    "location": STR_NULL, **TAGS, P: OBJ_NULL, f"{P}.tenantId": STR_NULL,
    f"{P}.sku": OBJ_NULL, f"{P}.sku.family": STR_NULL, f"{P}.sku.name": STR_NULL,
    f"{P}.accessPolicies": ARRAY_NULL, **policy_fields(f"{P}.accessPolicies.0"),
    f"{P}.enabledForDeployment": BOOL_NULL, f"{P}.enabledForDiskEncryption": BOOL_NULL,
    f"{P}.enabledForTemplateDeployment": BOOL_NULL, f"{P}.enableSoftDelete": BOOL_NULL,
    f"{P}.softDeleteRetentionInDays": INT_NULL, f"{P}.enableRbacAuthorization": BOOL_NULL,
    f"{P}.enablePurgeProtection": BOOL_NULL, **acl_fields(f"{P}.networkAcls"),
    f"{P}.createMode": STR_NULL, f"{P}.publicNetworkAccess": STR_NULL,
}
HSM_FIELDS = {
    "location": STR_NULL, **TAGS, "sku": OBJ_NULL, "sku.family": STR_NULL,
    "sku.name": STR_NULL, P: OBJ_NULL, f"{P}.tenantId": STR_NULL,
    f"{P}.initialAdminObjectIds": ARRAY_NULL, f"{P}.initialAdminObjectIds.0": STR,
    f"{P}.enableSoftDelete": BOOL_NULL, f"{P}.softDeleteRetentionInDays": INT_NULL,
    f"{P}.enablePurgeProtection": BOOL_NULL, **acl_fields(f"{P}.networkAcls"),
    f"{P}.createMode": STR_NULL, f"{P}.publicNetworkAccess": STR_NULL,
}
ACCESS_POLICY_FIELDS = {P: OBJ_NULL, f"{P}.accessPolicies": ARRAY_NULL,
                        **policy_fields(f"{P}.accessPolicies.0")}
CHECK_NAME_FIELDS = {"name": STR, "type": STR_NULL}
NOT_OBJECTS = [[], "x", 5, None, True]


def policy(deployment: Deployment) -> dict[str, Any]:
    return {"tenantId": deployment.tenant_id, "objectId": str(uuid.uuid4()),
            "applicationId": None,
            "permissions": {"keys": ["get"], "secrets": ["get"], "certificates": ["get"],
                            "storage": ["get"]}}


ACLS = {"bypass": "AzureServices", "defaultAction": "Allow",
        "ipRules": [{"value": "10.0.0.0/8"}], "virtualNetworkRules": []}


def vault_body(deployment: Deployment) -> dict[str, Any]:
    """A valid vault PUT with every field of VaultCreateOrUpdateParameters."""
    return {"location": "local", "tags": {"t": "v"}, P: {
        "tenantId": deployment.tenant_id, "sku": {"family": "A", "name": "standard"},
        "accessPolicies": [policy(deployment)], "enabledForDeployment": False,
        "enabledForDiskEncryption": False, "enabledForTemplateDeployment": False,
        "enableSoftDelete": True, "softDeleteRetentionInDays": 30,
        "enableRbacAuthorization": True, "enablePurgeProtection": None,
        "networkAcls": copy.deepcopy(ACLS), "createMode": "default",
        "publicNetworkAccess": "Enabled"}}


def hsm_body(deployment: Deployment) -> dict[str, Any]:
    """A valid managed HSM PUT with every field this service reads."""
    return {"location": "local", "tags": {"t": "v"},
            "sku": {"family": "B", "name": "Standard_B1"}, P: {
                "tenantId": deployment.tenant_id,
                "initialAdminObjectIds": [deployment.dev_principal.object_id],
                "enableSoftDelete": True, "softDeleteRetentionInDays": 30,
                "enablePurgeProtection": None, "networkAcls": copy.deepcopy(ACLS),
                "createMode": "default", "publicNetworkAccess": "Enabled"}}


def with_vnet(body: dict[str, Any], acls: str) -> dict[str, Any]:
    out = copy.deepcopy(body)
    node = out
    for part in acls.split("."):
        node = node[part]
    node["virtualNetworkRules"] = [{"id": "/subscriptions/x/vnet", "ignoreMissingVnet"
                                                                   "ServiceEndpoint": False}]
    return out


@pytest.fixture(scope="module")
def vault(arm: Arm, sub: str, deployment: Deployment) -> Iterator[str]:
    """A vault the PATCH and access-policy cases try to change; it must not change."""
    name = unique("v")
    r = arm.call("PUT", vault_path(sub, name), vault_body(deployment))
    assert r.status_code == 201, r.text
    before = arm.get(vault_path(sub, name))
    yield name
    assert arm.get(vault_path(sub, name)) == before


@pytest.fixture(scope="module")
def hsm(arm: Arm, sub: str, deployment: Deployment) -> Iterator[str]:
    name = unique("h")
    r = arm.call("PUT", hsm_path(sub, name), hsm_body(deployment))
    assert r.status_code in (200, 201), r.text
    before = arm.get(hsm_path(sub, name))
    yield name
    assert arm.get(hsm_path(sub, name)) == before


# ---- vaults ----------------------------------------------------------------------------
def test_valid_bodies_with_every_field_are_accepted(arm: Arm, sub: str,
                                                    deployment: Deployment) -> None:
    name = unique("v")
    r = arm.call("PUT", vault_path(sub, name), vault_body(deployment))
    assert r.status_code == 201, r.text
    got = r.json()
    assert got["tags"] == {"t": "v"}
    assert got[P]["networkAcls"]["ipRules"] == [{"value": "10.0.0.0/8"}]
    assert got[P]["softDeleteRetentionInDays"] == 30 and len(got[P]["accessPolicies"]) == 1
    r = arm.call("PATCH", vault_path(sub, name), {"tags": {"u": "1"}, "unknown": [1],
                                                   P: {"future": {"a": None}}})
    assert r.status_code == 200 and r.json()["tags"] == {"u": "1"}, r.text
    assert r.json()[P]["networkAcls"]["ipRules"] == [{"value": "10.0.0.0/8"}]


@pytest.mark.parametrize(("path", "kind"), wrong_types(VAULT_FIELDS))
def test_vault_put_wrong_type(arm: Arm, sub: str, deployment: Deployment, path: str,
                              kind: str) -> None:
    name = unique("v")
    type_refused(arm.call("PUT", vault_path(sub, name),
                          put_path(vault_body(deployment), path, SAMPLES[kind])), path)
    arm.absent(vault_path(sub, name))


@pytest.mark.parametrize(("path", "kind"), wrong_types(VNET_FIELDS))
def test_vault_virtual_network_rule_wrong_type(arm: Arm, sub: str, deployment: Deployment,
                                               path: str, kind: str) -> None:
    name = unique("v")
    body = with_vnet(vault_body(deployment), f"{P}.networkAcls")
    type_refused(arm.call("PUT", vault_path(sub, name),
                          put_path(body, f"{P}.networkAcls.{path}", SAMPLES[kind])), path)
    arm.absent(vault_path(sub, name))


@pytest.mark.parametrize(("path", "kind"),
                         wrong_types({k: v for k, v in VAULT_FIELDS.items()
                                      if k != "location"}))
def test_vault_patch_wrong_type(arm: Arm, sub: str, vault: str, deployment: Deployment,
                                path: str, kind: str) -> None:
    body = {k: v for k, v in vault_body(deployment).items() if k != "location"}
    del body[P]["createMode"]
    if path == f"{P}.createMode":
        body[P]["createMode"] = "default"
    type_refused(arm.call("PATCH", vault_path(sub, vault),
                          put_path(body, path, SAMPLES[kind])), path)


@pytest.mark.parametrize("op", ["add", "replace", "remove"])
@pytest.mark.parametrize(("path", "kind"), wrong_types(ACCESS_POLICY_FIELDS))
def test_access_policy_wrong_type(arm: Arm, sub: str, vault: str, deployment: Deployment,
                                  op: str, path: str, kind: str) -> None:
    body = {P: {"accessPolicies": [policy(deployment)]}}
    type_refused(arm.call("PUT", f"{vault_path(sub, vault)}/accessPolicies/{op}",
                          put_path(body, path, SAMPLES[kind])), path)


@pytest.mark.parametrize(("check", "fields"), [
    ("checkNameAvailability", CHECK_NAME_FIELDS),
    ("checkMhsmNameAvailability", CHECK_NAME_FIELDS),
])
def test_check_name_wrong_type(arm: Arm, sub: str, check: str,
                               fields: dict[str, frozenset[str]]) -> None:
    base = {"name": unique("n"), "type": "Microsoft.KeyVault/vaults"
            if check == "checkNameAvailability" else "Microsoft.KeyVault/managedHSMs"}
    for path, kind in wrong_types(fields):
        type_refused(arm.call("POST", f"/subscriptions/{sub}{KV}/{check}",
                              put_path(base, path, SAMPLES[kind])), path)
    arm_refused(arm.call("POST", f"/subscriptions/{sub}{KV}/{check}", {"type": base["type"]}),
                "BadRequest", "name")


def test_bodies_that_are_no_object(arm: Arm, sub: str, vault: str, hsm: str) -> None:
    for body in NOT_OBJECTS:
        name = unique("v")
        for method, path in (("PUT", vault_path(sub, name)), ("PUT", hsm_path(sub, name))):
            arm_refused(arm.call(method, path, raw=json.dumps(body).encode()),
                        "InvalidRequestContent")
            arm.absent(path)
        for method, path in (("PATCH", vault_path(sub, vault)), ("PATCH", hsm_path(sub, hsm)),
                             ("PUT", f"{vault_path(sub, vault)}/accessPolicies/add"),
                             ("POST", f"/subscriptions/{sub}{KV}/checkNameAvailability")):
            arm_refused(arm.call(method, path, raw=json.dumps(body).encode()),
                        "InvalidRequestContent")


# ---- managed HSM pools -----------------------------------------------------------------
@pytest.mark.parametrize(("path", "kind"), wrong_types(HSM_FIELDS))
def test_hsm_put_wrong_type(arm: Arm, sub: str, deployment: Deployment, path: str,
                            kind: str) -> None:
    name = unique("h")
    type_refused(arm.call("PUT", hsm_path(sub, name),
                          put_path(hsm_body(deployment), path, SAMPLES[kind])), path)
    arm.absent(hsm_path(sub, name))


@pytest.mark.parametrize(("path", "kind"),
                         wrong_types({k: v for k, v in HSM_FIELDS.items()
                                      if k != "location"}))
def test_hsm_patch_wrong_type(arm: Arm, sub: str, hsm: str, deployment: Deployment,
                              path: str, kind: str) -> None:
    body = {k: v for k, v in hsm_body(deployment).items() if k != "location"}
    del body[P]["createMode"]
    if path == f"{P}.createMode":
        body[P]["createMode"] = "default"
    type_refused(arm.call("PATCH", hsm_path(sub, hsm), put_path(body, path, SAMPLES[kind])),
                 path)


# ---- authorization before the body -----------------------------------------------------
@pytest.fixture(scope="module")
def stranger(rest: Rest, server: DevServer) -> Arm:
    """A principal with no role anywhere, with a management token."""
    done = server.okv("principal", "create", unique("no-role-"))
    assert done.returncode == 0, done.stderr
    p = json.loads(done.stdout)
    r = rest.session.post(
        f"{server.url}/{p['tenant_id']}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": p["client_id"],
              "client_secret": p["client_secret"], "scope": f"{MANAGEMENT}/.default"})
    assert r.status_code == 200, r.text
    return Arm(rest, str(r.json()["access_token"]))


def write_routes(sub: str, vault: str, hsm: str) -> list[tuple[str, str]]:
    """Every management route that writes, on existing and new resources."""
    new = unique("n")
    deleted = f"/subscriptions/{sub}{KV}/locations/local"
    return [
        ("PUT", vault_path(sub, new)), ("PUT", vault_path(sub, vault)),
        ("PATCH", vault_path(sub, vault)), ("DELETE", vault_path(sub, vault)),
        *[("PUT", f"{vault_path(sub, vault)}/accessPolicies/{op}")
          for op in ("add", "replace", "remove", "unknown")],
        ("POST", f"/subscriptions/{sub}{KV}/checkNameAvailability"),
        ("POST", f"{deleted}/deletedVaults/{vault}/purge"),
        ("PUT", hsm_path(sub, new)), ("PUT", hsm_path(sub, hsm)),
        ("PATCH", hsm_path(sub, hsm)), ("DELETE", hsm_path(sub, hsm)),
        ("POST", f"/subscriptions/{sub}{KV}/checkMhsmNameAvailability"),
        ("POST", f"{deleted}/deletedManagedHSMs/{hsm}/purge"),
    ]


@pytest.mark.parametrize("body", [NOT_JSON, b"", b"[]", b"{" * 2000,
                                  b"\xff\xfe not utf-8", NOT_JSON * 20000])
def test_no_role_is_refused_before_the_body(arm: Arm, stranger: Arm, sub: str, vault: str,
                                            hsm: str, body: bytes) -> None:
    before = (arm.get(vault_path(sub, vault)), arm.get(hsm_path(sub, hsm)))
    for method, path in write_routes(sub, vault, hsm):
        if method == "DELETE" and len(body) > 64 * 1024:
            continue  # a DELETE's body is never read: a large one costs the connection
        r = stranger.call(method, path, raw=body)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        err = r.json()["error"]
        assert set(err) == {"code", "message"} and err["code"] == "AuthorizationFailed", err
    assert (arm.get(vault_path(sub, vault)), arm.get(hsm_path(sub, hsm))) == before


def test_an_authorized_caller_gets_the_400(arm: Arm, sub: str, vault: str, hsm: str) -> None:
    """The same bodies from a caller who may write are read, and refused as what they are
    (so the 403s above come from the order, not from the body)."""
    for method, path in write_routes(sub, vault, hsm):
        if method in ("PUT", "PATCH") or path.endswith("Availability"):
            if path.endswith("/unknown"):
                continue
            arm_refused(arm.call(method, path, raw=NOT_JSON), "InvalidRequestContent")


# ---- role management (data plane) ------------------------------------------------------
ASSIGNMENT_FIELDS = {P: OBJ_NULL, f"{P}.roleDefinitionId": STR_NULL,
                     f"{P}.principalId": STR_NULL}
DEFINITION_FIELDS = {
    P: OBJ_NULL, f"{P}.roleName": STR_NULL, f"{P}.description": STR_NULL,
    f"{P}.type": STR_NULL, f"{P}.permissions": ARRAY_NULL, f"{P}.permissions.0": OBJ,
    **{f"{P}.permissions.0.{f}{i}": t
       for f in ("actions", "notActions", "dataActions", "notDataActions")
       for i, t in (("", ARRAY_NULL), (".0", STR))},
    f"{P}.assignableScopes": ARRAY_NULL, f"{P}.assignableScopes.0": STR,
}


def kv_refused(r: requests.Response, field: str | None = None) -> None:
    """400 BadParameter in Key Vault's error shape."""
    assert r.status_code == 400, (r.status_code, r.text)
    body = r.json()
    assert list(body) == ["error"], body
    err = body["error"]
    assert set(err) <= {"code", "message", "innererror"} and err["code"] == "BadParameter"
    if field is not None:
        assert field in err["message"], err


def definition_body(guid: str) -> dict[str, Any]:
    return {P: {"roleName": f"types {guid[:8]}", "description": "d", "type": "CustomRole",
                "permissions": [{"actions": [READ_ASSIGNMENTS], "notActions": [READ_ASSIGNMENTS],
                                 "dataActions": [GET_SECRET],
                                 "notDataActions": [GET_SECRET]}],
                "assignableScopes": ["/"]}}


def test_valid_role_bodies_with_every_field(rest: Rest, deployment: Deployment) -> None:
    guid = str(uuid.uuid4())
    r = rest.call("PUT", f"{RD}/{guid}", query=RBAC, json=definition_body(guid))
    assert r.status_code == 201, r.text
    assert r.json()[P]["permissions"][0]["notDataActions"] == [GET_SECRET]
    assert rest.call("DELETE", f"{RD}/{guid}", query=RBAC).status_code == 200
    name = str(uuid.uuid4())
    r = rest.call("PUT", f"{RA}/{name}", query=RBAC, json={P: {
        "roleDefinitionId": SECRETS_USER, "principalId": deployment.dev_principal.object_id,
        "unknown": [1]}})
    assert r.status_code == 201, r.text
    assert rest.call("DELETE", f"{RA}/{name}", query=RBAC).status_code == 200


@pytest.mark.parametrize(("path", "kind"), wrong_types(ASSIGNMENT_FIELDS))
def test_role_assignment_wrong_type(rest: Rest, deployment: Deployment, path: str,
                                    kind: str) -> None:
    name = str(uuid.uuid4())
    body = {P: {"roleDefinitionId": SECRETS_USER,
                "principalId": deployment.dev_principal.object_id}}
    kv_refused(rest.call("PUT", f"{RA}/{name}", query=RBAC,
                         json=put_path(body, path, SAMPLES[kind])), named(path))
    assert rest.call("GET", f"{RA}/{name}", query=RBAC).status_code == 404


@pytest.mark.parametrize(("path", "kind"), wrong_types(DEFINITION_FIELDS))
def test_role_definition_wrong_type(rest: Rest, path: str, kind: str) -> None:
    guid = str(uuid.uuid4())
    kv_refused(rest.call("PUT", f"{RD}/{guid}", query=RBAC,
                         json=put_path(definition_body(guid), path, SAMPLES[kind])),
               named(path))
    assert rest.call("GET", f"{RD}/{guid}", query=RBAC).status_code == 404


def test_role_bodies_that_are_no_object(rest: Rest) -> None:
    for body in NOT_OBJECTS:
        for collection in (RA, RD):
            name = str(uuid.uuid4())
            kv_refused(rest.call("PUT", f"{collection}/{name}", query=RBAC,
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}))
            assert rest.call("GET", f"{collection}/{name}", query=RBAC).status_code == 404
