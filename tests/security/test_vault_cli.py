"""`okv vault create|list|show|update|delete|recover|purge` while the server runs: JSON
output parsed, the data plane following each change, every refusal exiting 2 with a clear
message and changing nothing; `okv role assign|list` with ARM scopes."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.security.conftest import Rest
from tests.support.okvcli import run_process
from tests.support.server import DevServer

Q = "api-version=7.5"
SUB = "5a0c1e7e-2b7f-4d7e-9a53-3c0f6a1d9b21"


def unique(prefix: str = "c") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def okv(server: DevServer, *args: str) -> Any:
    done = server.okv(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def refused(server: DevServer, *args: str) -> str:
    done = server.okv(*args)
    assert done.returncode == 2, (args, done.stdout, done.stderr)
    assert done.stderr.startswith("error: "), done.stderr
    assert done.stdout == ""
    return done.stderr


def host(server: DevServer, vault: str) -> dict[str, str]:
    return {"Host": f"{vault}.vault.localhost:{server.port}"}


def listed(server: DevServer, *extra: str) -> dict[str, Any]:
    return {v["name"]: v for v in okv(server, "vault", "list", "--output", "json", *extra)}


def test_lifecycle(server: DevServer, rest: Rest) -> None:
    name = unique()
    created = okv(server, "vault", "create", name, "--sku", "premium", "--retention-days", "7",
                  "--subscription", SUB, "--resource-group", "Team-A", "--location", "westus",
                  "--tag", "env=test", "--tag", "owner=ops", "--output", "json")
    assert created["id"] == (f"/subscriptions/{SUB}/resourceGroups/Team-A/providers/"
                             f"Microsoft.KeyVault/vaults/{name}")
    assert created["location"] == "westus"
    assert created["tags"] == {"env": "test", "owner": "ops"}
    props = created["properties"]
    assert props["sku"] == {"family": "A", "name": "premium"}
    assert props["softDeleteRetentionInDays"] == 7 and props["enableSoftDelete"] is True
    assert props["enableRbacAuthorization"] is True
    assert not props.get("enablePurgeProtection")
    # the CLI renders the URI with the deployment's configured port (the server's own
    # answers use the port it listens on)
    assert props["vaultUri"].startswith(f"https://{name}.vault.localhost:")

    # the server answers for it at once, and list and show see what create made
    secret = rest.call("PUT", "/secrets/s1", query=Q, json={"value": "kept"},
                       headers=host(server, name))
    assert secret.status_code == 200, secret.text
    assert listed(server)[name] == created
    assert listed(server, "--subscription", SUB, "--resource-group", "team-a")[name] == created
    assert name not in listed(server, "--resource-group", "default")
    assert okv(server, "vault", "show", name, "--output", "json") == created
    table = server.okv("vault", "list")
    assert table.returncode == 0 and name in table.stdout and "Team-A" in table.stdout

    updated = okv(server, "vault", "update", name, "--purge-protection", "--access-policies",
                  "--default-action", "Deny", "--tag", "owner=sec", "--output", "json")
    assert updated["properties"]["enablePurgeProtection"] is True
    assert updated["properties"]["enableRbacAuthorization"] is False
    assert updated["properties"]["networkAcls"]["defaultAction"] == "Deny"
    assert updated["tags"] == {"env": "test", "owner": "sec"}
    assert updated["properties"]["softDeleteRetentionInDays"] == 7
    okv(server, "vault", "update", name, "--rbac", "--default-action", "Allow", "-o", "json")

    # delete is soft: the host stops answering, the vault is listed as deleted
    gone = okv(server, "vault", "delete", name, "--output", "json")
    assert [g["name"] for g in gone] == [name]
    assert gone[0]["properties"]["purgeProtectionEnabled"] is True
    assert gone[0]["properties"]["vaultId"] == created["id"]
    r = rest.call("GET", "/secrets/s1", query=Q, headers=host(server, name))
    assert r.status_code == 404, r.text
    assert name not in listed(server)
    assert name in listed(server, "--deleted")
    assert name in listed(server, "--deleted", "--subscription", SUB)

    # recover brings the vault and its objects back
    back = okv(server, "vault", "recover", name, "--output", "json")
    assert back["id"] == created["id"] and back["tags"] == {"env": "test", "owner": "sec"}
    r = rest.call("GET", "/secrets/s1", query=Q, headers=host(server, name))
    assert r.status_code == 200 and r.json()["value"] == "kept"
    assert name not in listed(server, "--deleted")


def test_purge(server: DevServer, rest: Rest) -> None:
    name = unique()
    okv(server, "vault", "create", name, "--output", "json")
    assert rest.call("PUT", "/secrets/s1", query=Q, json={"value": "v"},
                     headers=host(server, name)).status_code == 200
    okv(server, "vault", "delete", name, "--output", "json")
    assert okv(server, "vault", "purge", name, "--output", "json") == {"purged": name}
    assert name not in listed(server, "--deleted") and name not in listed(server)
    assert "no vault" in refused(server, "vault", "show", name)
    assert "no vault" in refused(server, "vault", "recover", name)
    # the name is free again: a new vault by that name starts empty
    okv(server, "vault", "create", name, "--output", "json")
    r = rest.call("GET", "/secrets/s1", query=Q, headers=host(server, name))
    assert r.status_code == 404


def test_refusals_change_nothing(server: DevServer) -> None:
    name = unique()
    protected = unique("p")
    okv(server, "vault", "create", name, "--tag", "k=v", "--output", "json")
    okv(server, "vault", "create", protected, "--purge-protection", "--output", "json")
    before = listed(server)

    assert "already in use" in refused(server, "vault", "create", name)
    assert "already in use" in refused(server, "vault", "create", name.upper())
    for bad in ("ab", "1abc", "a--b", "a" * 25, "bad_name"):
        assert "invalid" in refused(server, "vault", "create", bad).lower(), bad
    assert "sku" in refused(server, "vault", "create", unique(), "--sku", "gold")
    for days in ("6", "91"):
        assert "softDeleteRetentionInDays" in refused(
            server, "vault", "create", unique(), "--retention-days", days)
    assert "subscription" in refused(server, "vault", "create", unique(), "--subscription",
                                     "not-a-guid").lower()
    assert "resource group" in refused(server, "vault", "create", unique(),
                                       "--resource-group", "bad group").lower()
    assert "KEY=VALUE" in refused(server, "vault", "create", unique(), "--tag", "novalue")
    assert "--output" in refused(server, "vault", "list", "--output", "yaml")

    assert "no vault" in refused(server, "vault", "show", unique())
    assert "no vault" in refused(server, "vault", "update", unique(), "--rbac")
    assert "no vault" in refused(server, "vault", "delete", unique())
    assert "defaultAction" in refused(server, "vault", "update", name, "--default-action",
                                      "Block")
    assert "not deleted" in refused(server, "vault", "recover", name)
    assert "not deleted" in refused(server, "vault", "purge", name)
    assert listed(server) == before
    assert name not in listed(server, "--deleted")

    # purge protection: refused until the retention ends; the vault stays recoverable
    okv(server, "vault", "delete", protected, "--output", "json")
    deleted_before = listed(server, "--deleted")[protected]
    assert "already deleted" in refused(server, "vault", "delete", protected)
    assert "is deleted" in refused(server, "vault", "show", protected)
    assert "purge protection" in refused(server, "vault", "purge", protected)
    assert listed(server, "--deleted")[protected] == deleted_before
    okv(server, "vault", "recover", protected, "--output", "json")
    assert listed(server)[protected] == before[protected]


def test_role_assign_with_arm_scopes(server: DevServer) -> None:
    name = unique()
    okv(server, "vault", "create", name, "--subscription", SUB, "--resource-group", "Team-B",
        "--output", "json")
    principal = okv(server, "principal", "create", unique("p"))
    vault_id = f"/subscriptions/{SUB}/resourceGroups/Team-B/providers/Microsoft.KeyVault/" \
               f"vaults/{name}"
    for arm, internal in (
        (f"{vault_id}/secrets/db", f"/vaults/{name}/secrets/db"),
        (vault_id.lower(), f"/vaults/{name}"),
        (f"/subscriptions/{SUB.upper()}/resourceGroups/Team-B",
         f"/subscriptions/{SUB}/resourceGroups/team-b"),
        (f"/subscriptions/{SUB}", f"/subscriptions/{SUB}"),
    ):
        a = okv(server, "role", "assign", "--principal", principal["object_id"], "--role",
                "Key Vault Secrets User", "--scope", arm)
        assert a["scope"] == internal
        rows = {r["id"]: r for r in okv(server, "role", "list", "--output", "json")}
        assert rows[a["id"]]["scope"] == internal
        assert rows[a["id"]]["arm_scope"].lower() in (arm.lower(), internal.lower())
    rows = okv(server, "role", "list", "--output", "json")
    mine = {r["scope"]: r for r in rows if r["principal_id"] == principal["object_id"]}
    assert mine[f"/vaults/{name}/secrets/db"]["arm_scope"] == f"{vault_id}/secrets/db"

    before = okv(server, "role", "list", "--output", "json")
    for bad in ("/subscriptions/not-a-guid/resourceGroups/rg",
                f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/"
                "storageAccounts/x",
                f"/subscriptions/{SUB}/resourceGroups/bad.",
                f"{vault_id}/blobs/x"):
        done = server.okv("role", "assign", "--principal", principal["object_id"], "--role",
                          "Key Vault Secrets User", "--scope", bad)
        assert done.returncode == 1 and done.stderr.startswith("error: Invalid scope"), bad
    assert okv(server, "role", "list", "--output", "json") == before


# ---- real `okv` processes (smoke): exit codes of the installed entry point --------------
# The tests above run `okv` in this process (tests/support/okvcli.py); this one runs the
# installed `okv` script and checks that it answers exactly what the in-process run does.

def test_process_exit_codes_match_in_process(server: DevServer) -> None:
    missing = unique()
    for args, code in (
        (("vault", "show", "dev", "--output", "json"), 0),
        (("vault", "list"), 0),  # a Rich table 200 columns wide
        (("role", "definition", "list"), 0),  # a Rich table as wide as the terminal
        (("vault", "show", missing), 2),  # a refusal: `error: ...`
        (("vault", "list", "--output", "yaml"), 2),
        (("role", "remove", missing), 1),
        (("vault", "bogus"), 2),  # a usage error, from click
    ):
        real = run_process(*args, "--data-dir", str(server.data_dir))
        assert real.returncode == code, (args, real.stderr)
        here = server.okv(*args)
        assert (here.returncode, here.stdout, here.stderr) == \
            (real.returncode, real.stdout, real.stderr), args
        if code:
            assert real.stdout == "" and real.stderr, args
            assert "Traceback" not in real.stderr, args
