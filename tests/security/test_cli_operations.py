"""The `okv` command's changes are operations: each one authorized as the acting principal
(`OKV_AS`, else the deployment's administrator, else the dev identity) and written to the
audit trail as one record with its operation's name, caller and result, refusals
included; a trail that cannot be written in a deployment that fails closed stops the
change. Commands run in this process on a dev data directory of their own."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openkeyvault.config import Settings
from openkeyvault.deployment import Deployment
from tests.support.okvcli import OkvResult, run

OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
VAULT = "cli-ops-vault"
OTHER = "cli-ops-other"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data = tmp_path_factory.mktemp("okv") / "data"
    Deployment.open(Settings(data_dir=data, dev=True)).close()
    yield data


@pytest.fixture(scope="module")
def dev_oid(data: Path) -> str:
    d = Deployment.open(Settings(data_dir=data, dev=True))
    try:
        return d.dev_principal.object_id
    finally:
        d.close()


def okv(data: Path, *args: str, env: dict[str, str | None] | None = None) -> OkvResult:
    return run(*args, "--data-dir", str(data), env=env)


def records(data: Path) -> list[dict[str, Any]]:
    done = okv(data, "audit", "query", "--output", "json", "--limit", "100000")
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def one_record(data: Path, before: int) -> dict[str, Any]:
    new = records(data)[before:]
    assert len(new) == 1, [r["operationName"] for r in new]
    return new[0]


def ok(done: OkvResult) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.lstrip().startswith(("{", "[")) else None


def test_each_change_is_one_record_of_its_operation(data: Path, dev_oid: str,
                                                     tmp_path: Path) -> None:
    role_file = tmp_path / "role.json"
    role_name = str(uuid.uuid4())
    role_file.write_text(json.dumps({"name": role_name, "properties": {
        "roleName": "cli ops reader", "description": "", "assignableScopes": ["/"],
        "permissions": [{"dataActions": [
            "Microsoft.KeyVault/vaults/secrets/getSecret/action"]}]}}))
    made: dict[str, Any] = {}

    def principal_create() -> OkvResult:
        done = okv(data, "principal", "create", "cli-ops-app")
        made.update(ok(done))
        return done

    steps: list[tuple[str, Any, str]] = [
        ("VaultPut", lambda: okv(data, "vault", "create", VAULT, "-o", "json"),
         "okv vault create"),
        ("VaultPatch", lambda: okv(data, "vault", "update", VAULT, "--tag", "a=b"),
         "okv vault update"),
        ("VaultPatch", lambda: okv(data, "vault", "network", "add-rule", VAULT, "10.0.0.0/8"),
         "okv vault network add-rule"),
        ("ServicePrincipalCreate", principal_create, "okv principal create"),
        ("VaultAccessPolicyUpdate", lambda: okv(
            data, "vault", "policy", "set", VAULT, "--object-id", made["object_id"],
            "--secrets", "get"), "okv vault policy set"),
        ("ServicePrincipalCredentialAdd", lambda: okv(
            data, "principal", "secret", "add", made["object_id"]),
         "okv principal secret add"),
        ("RoleDefinitionSet", lambda: okv(data, "role", "definition", "create",
                                          str(role_file)), "okv role definition create"),
        ("RoleAssignmentCreate", lambda: okv(
            data, "role", "assign", "--principal", made["object_id"], "--role", role_name,
            "--scope", f"/vaults/{VAULT}"), "okv role assign"),
        ("VaultThrottleSet", lambda: okv(data, "vault", "throttle", VAULT, "--scale", "2"),
         "okv vault throttle"),
        ("SigningKeyRotate", lambda: okv(data, "token", "rotate-key"),
         "okv token rotate-key"),
        ("VaultDelete", lambda: okv(data, "vault", "delete", VAULT), "okv vault delete"),
        ("VaultPut", lambda: okv(data, "vault", "recover", VAULT), "okv vault recover"),
    ]
    for operation, command, path in steps:
        before = len(records(data))
        done = command()
        assert done.returncode == 0, (operation, done.stderr)
        if operation == "VaultAccessPolicyUpdate":  # it publishes an event: a record too
            event, record = sorted(records(data)[before:],
                                   key=lambda r: r["operationName"] == operation)
            assert event["operationName"] == "VaultAccessPolicyChangedEventGridNotification"
            assert (event["identity"], event["resultType"]) == ({"claim": {}}, "Success")
            assert event["resourceId"].endswith(f"/VAULTS/{VAULT.upper()}")
        else:
            record = one_record(data, before)
        assert record["operationName"] == operation
        assert record["resultType"] == "Success"
        assert record["properties"]["httpStatusCode"] == 200
        assert record["properties"]["isRbacAuthorized"] is True
        assert record["identity"]["claim"][OID] == dev_oid
        assert record["callerIpAddress"] == "local"
        assert record["properties"]["requestUri"].startswith(path + " ")
        assert record["properties"]["clientInfo"].startswith("okv/")
        # never a value given to the command, nor a secret the command printed
        assert "client_secret" not in json.dumps(record)
    vault_record = records(data)[-1]
    assert vault_record["resourceId"].endswith(f"/VAULTS/{VAULT.upper()}")
    # A read changes nothing and is no record of this kind.
    before = len(records(data))
    ok(okv(data, "vault", "show", VAULT, "-o", "json"))
    assert len(records(data)) == before
    ok(okv(data, "audit", "verify"))


def test_a_principal_without_a_role_is_refused_changes_nothing_and_is_audited(
        data: Path) -> None:
    app = ok(okv(data, "principal", "create", f"cli-noroles-{uuid.uuid4().hex[:6]}"))
    as_app = {"OKV_AS": app["client_id"]}
    name = f"cli-ops-{uuid.uuid4().hex[:8]}"
    refusals = [
        (("vault", "create", name), "VaultPut"),
        (("principal", "create", "by-app"), "ServicePrincipalCreate"),
        (("role", "assign", "--principal", app["object_id"], "--role", "Owner"),
         "RoleAssignmentCreate"),
        (("token", "rotate-key"), "SigningKeyRotate"),
    ]
    for args, operation in refusals:
        before = len(records(data))
        done = okv(data, *args, env=as_app)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ") and app["object_id"] in done.stderr
        assert "Nothing was changed" in done.stderr
        record = one_record(data, before)
        assert record["operationName"] == operation
        assert record["properties"]["httpStatusCode"] == 403
        assert record["resultSignature"] == "Forbidden"
        assert record["properties"]["isRbacAuthorized"] is False
        assert record["identity"]["claim"][OID] == app["object_id"]
    shown = okv(data, "vault", "show", name)
    assert shown.returncode == 2  # never made
    listed = ok(okv(data, "principal", "list", "-o", "json"))
    assert "by-app" not in {p["display_name"] for p in listed}
    roles = ok(okv(data, "role", "list", "-o", "json"))
    assert app["object_id"] not in {r["principal_id"] for r in roles}


def test_a_role_at_one_vault_allows_changes_there_only(data: Path) -> None:
    app = ok(okv(data, "principal", "create", f"cli-contrib-{uuid.uuid4().hex[:6]}"))
    mine, theirs = (f"cli-ops-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for name in (mine, theirs):
        ok(okv(data, "vault", "create", name, "-o", "json"))
    ok(okv(data, "role", "assign", "--principal", app["object_id"], "--role",
           "Key Vault Contributor", "--scope", f"/vaults/{mine}"))
    as_app = {"OKV_AS": app["display_name"]}
    ok(okv(data, "vault", "update", mine, "--tag", "team=a", "-o", "json", env=as_app))
    done = okv(data, "vault", "update", theirs, "--tag", "team=a", env=as_app)
    assert done.returncode == 2 and "VaultPatch" in done.stderr
    shown = ok(okv(data, "vault", "show", theirs, "-o", "json"))
    assert "team" not in (shown.get("tags") or {})


def test_an_unknown_acting_principal_is_refused(data: Path) -> None:
    before = len(records(data))
    done = okv(data, "vault", "create", "cli-ops-nobody", env={"OKV_AS": "nobody-at-all"})
    assert done.returncode == 2 and "OKV_AS" in done.stderr
    assert len(records(data)) == before
    assert okv(data, "vault", "show", "cli-ops-nobody").returncode == 2


def test_an_unwritable_trail_stops_the_change_when_failing_closed(data: Path,
                                                                  tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    env: dict[str, str | None] = {"OKV_AUDIT_DIR": str(blocked / "audit"),
                                  "OKV_AUDIT_FAIL_CLOSED": "1"}
    done = okv(data, "vault", "create", "cli-ops-unaudited", env=env)
    assert done.returncode == 2, done.stderr
    assert "Nothing was changed" in done.stderr
    assert okv(data, "vault", "show", "cli-ops-unaudited").returncode == 2
    # Failing open (the dev default), the change is made, unaudited, and said so.
    env["OKV_AUDIT_FAIL_CLOSED"] = "0"
    done = okv(data, "vault", "create", "cli-ops-unaudited", "-o", "json", env=env)
    assert done.returncode == 0, done.stderr
    assert "UNAUDITED" in done.stderr
