"""`okv role definition list|create|delete` and `okv role assign` with custom roles, run
while the server is up: the same rules as the REST API, effective on the next request."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from openkeyvault.access.principals import Principal
from openkeyvault.deployment import Deployment
from tests.security.conftest import Rest, resource
from tests.support.server import DevServer

Q = "api-version=2025-07-01"
V = "Microsoft.KeyVault/vaults"


def okv(server: DevServer, *args: str) -> Any:
    done = server.okv(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def refused(server: DevServer, *args: str) -> str:
    done = server.okv(*args)
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("error:")
    return done.stderr


def test_definition_commands(server: DevServer, rest: Rest, deployment: Deployment,
                             tmp_path: Path) -> None:
    listed = okv(server, "role", "definition", "list", "--output", "json")
    by_name = {d["properties"]["roleName"]: d for d in listed}
    assert by_name["Key Vault Secrets User"]["name"] == "4633458b-17de-408a-b874-0445c86b69e6"
    assert by_name["Key Vault Secrets User"]["properties"]["type"] == "AKVBuiltInRole"

    guid = str(uuid.uuid4())
    role_name = f"cli reader {guid[:8]}"
    spec = tmp_path / "role.json"
    spec.write_text(json.dumps({"name": guid, "properties": {
        "roleName": role_name, "description": "from a file",
        "permissions": [{"dataActions": [f"{V}/secrets/getSecret/action"]}]}}))
    created = okv(server, "role", "definition", "create", str(spec))
    assert created["name"] == guid and created["properties"]["type"] == "CustomRole"
    # the server sees it on the next request
    got = rest.call("GET", f"/providers/Microsoft.Authorization/roleDefinitions/{guid}", query=Q)
    assert got.status_code == 200 and got.json() == created

    # assign it by name; a principal then holds exactly that action
    record, _ = deployment.directory.create(f"cli-custom-{guid[:8]}")
    token = deployment.tokens.issue(Principal(record.object_id, record.tenant_id,
                                              record.client_id), resource(server)).access_token
    secret = f"cli-custom-{guid[:8]}"
    assert rest.call("PUT", f"/secrets/{secret}", query=Q, json={"value": "v"}).status_code == 200
    assert rest.call("GET", f"/secrets/{secret}", query=Q, token=token).status_code == 403
    assignment = okv(server, "role", "assign", "--principal", record.object_id,
                     "--role", role_name, "--scope", f"/vaults/dev/secrets/{secret}")
    assert assignment["role"] == role_name and assignment["role_definition_id"] == guid
    assert rest.call("GET", f"/secrets/{secret}", query=Q, token=token).status_code == 200

    # the rules are the REST API's: an assigned role cannot be deleted, a built-in never
    assert "still assigned" in refused(server, "role", "definition", "delete", guid)
    assert "built-in" in refused(server, "role", "definition", "delete",
                                 "4633458b-17de-408a-b874-0445c86b69e6")
    okv(server, "role", "remove", assignment["id"])
    assert rest.call("GET", f"/secrets/{secret}", query=Q, token=token).status_code == 403
    assert okv(server, "role", "definition", "delete", guid) == {"deleted": guid}
    assert rest.call("GET", f"/providers/Microsoft.Authorization/roleDefinitions/{guid}",
                     query=Q).status_code == 404
    refused(server, "role", "definition", "delete", guid)


def test_definition_create_refusals(server: DevServer, tmp_path: Path) -> None:
    before = okv(server, "role", "definition", "list", "--output", "json")
    spec = tmp_path / "bad.json"
    for content in (
        "{not json",
        json.dumps([1]),
        json.dumps({"name": "not-a-guid", "properties": {"roleName": "x"}}),
        json.dumps({"properties": {"permissions": [{"dataActions": [f"{V}/made/up"]}]}}),
        json.dumps({"name": "4633458b-17de-408a-b874-0445c86b69e6",
                    "properties": {"roleName": "x"}}),
    ):
        spec.write_text(content)
        refused(server, "role", "definition", "create", str(spec))
    assert okv(server, "role", "definition", "list", "--output", "json") == before


def test_assign_refuses_what_the_api_refuses(server: DevServer, tmp_path: Path) -> None:
    p = okv(server, "principal", "create", f"cli-scope-{uuid.uuid4().hex[:8]}")
    spec = tmp_path / "keys-only.json"
    guid = str(uuid.uuid4())
    spec.write_text(json.dumps({"name": guid, "properties": {
        "roleName": f"keys only {guid[:8]}", "assignableScopes": ["/keys"],
        "permissions": [{"dataActions": [f"{V}/keys/read"]}]}}))
    okv(server, "role", "definition", "create", str(spec))
    assert "not assignable" in refused(server, "role", "assign", "--principal",
                                       p["object_id"], "--role", guid,
                                       "--scope", "/vaults/dev/secrets")
    okv(server, "role", "assign", "--principal", p["object_id"], "--role", guid,
        "--scope", "/vaults/dev/keys/k")
    roles = okv(server, "role", "list", "--output", "json")
    mine = [r for r in roles if r["principal_id"] == p["object_id"]]
    assert [(r["scope"], r["role"]) for r in mine] == [("/vaults/dev/keys/k",
                                                        f"keys only {guid[:8]}")]
