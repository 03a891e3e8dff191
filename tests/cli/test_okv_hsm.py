"""`okv hsm create|list|show|delete|recover|purge`: managed HSM pools from the command line.

Most commands run in this process (tests/support/okvcli.py) on a dev data directory of
their own: JSON output parsed, the table's note on key permissions, the pool's initial
administrators (the dev identity by default, else principals named by object id, client
id or name) holding Managed HSM Administrator at the pool, each change one audit record of
the management API's operation, and every refusal exiting 2 with a clear message and
changing nothing (an unknown pool, a vault's name, a duplicate name, an unknown
administrator, a purge of a live pool or under purge protection, a production deployment
without --administrator). `okv vault` refuses a pool's name in turn. One test makes a pool
with `okv hsm create` on the real dev server and reaches it at its own host with the SDK's
KeyVaultAccessControlClient.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.administration import KeyVaultAccessControlClient, KeyVaultRoleScope
from cryptography.hazmat.primitives import serialization

from openkeyvault.config import Settings
from openkeyvault.deployment import Deployment
from tests.support.okvcli import OkvResult, run
from tests.support.securitydomain import wrapping_keys
from tests.support.server import DevServer

OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
SUB = "7d1f3c2a-4b5e-4f60-8a71-92b3c4d5e6f7"
ADMINISTRATOR_ROLE = "Managed HSM Administrator"
CRYPTO_USER = "Managed HSM Crypto User"


def unique(prefix: str = "h") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


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


def ok(data: Path, *args: str, env: dict[str, str | None] | None = None) -> Any:
    done = okv(data, *args, env=env)
    assert done.returncode == 0, (args, done.stderr)
    return json.loads(done.stdout)


def refused(data: Path, *args: str, code: int = 2,
            env: dict[str, str | None] | None = None) -> str:
    done = okv(data, *args, env=env)
    assert done.returncode == code, (args, done.stdout, done.stderr)
    assert done.stderr.startswith("error: "), done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    return done.stderr


def pools(data: Path, *extra: str) -> dict[str, Any]:
    return {p["name"]: p for p in ok(data, "hsm", "list", "--output", "json", *extra)}


def records(data: Path) -> list[dict[str, Any]]:
    return list(ok(data, "audit", "query", "--output", "json", "--limit", "100000"))


def admin_roles(data: Path, name: str) -> set[str]:
    """The principals holding Managed HSM Administrator at pool `name`'s scope."""
    return {r["principal_id"] for r in ok(data, "role", "list", "-o", "json")
            if r["scope"] == f"/vaults/{name}" and r["role"] == ADMINISTRATOR_ROLE}


def test_lifecycle(data: Path, dev_oid: str) -> None:
    name = unique()
    # The default administrator is the dev identity; the table says how to use keys.
    table = okv(data, "hsm", "create", name)
    assert table.returncode == 0, table.stderr
    assert f"https://{name}.managedhsm.localhost:8443/" in table.stdout
    assert f"{dev_oid} (dev identity)" in table.stdout
    (note,) = [line for line in table.stdout.splitlines() if line.startswith("Note: ")]
    assert "no key permission" in note and CRYPTO_USER in note
    assert note.endswith(
        f'az keyvault role assignment create --hsm-name {name} --role "{CRYPTO_USER}" '
        f"--scope / --assignee-object-id {dev_oid} --assignee-principal-type ServicePrincipal")
    assert admin_roles(data, name) == {dev_oid}
    first = ok(data, "hsm", "show", name, "--output", "json")
    assert first["properties"]["initialAdminObjectIds"] == [dev_oid]

    # Administrators by name, client id and object id (the same one twice counts once).
    app, ops = (ok(data, "principal", "create", unique("p")) for _ in range(2))
    other = unique()
    created = ok(data, "hsm", "create", other, "--administrator", app["display_name"],
                 "--administrator", ops["client_id"], "--administrator", app["object_id"],
                 "--retention-days", "7", "--subscription", SUB, "--resource-group", "Team-H",
                 "--location", "westeurope", "--tag", "env=test", "--output", "json")
    assert created["id"] == (f"/subscriptions/{SUB}/resourceGroups/Team-H/providers/"
                             f"Microsoft.KeyVault/managedHSMs/{other}")
    assert created["type"] == "Microsoft.KeyVault/managedHSMs"
    assert created["sku"] == {"family": "B", "name": "Standard_B1"}
    assert created["location"] == "westeurope" and created["tags"] == {"env": "test"}
    props = created["properties"]
    assert props["initialAdminObjectIds"] == [app["object_id"], ops["object_id"]]
    assert props["hsmUri"] == f"https://{other}.managedhsm.localhost:8443/"
    assert props["softDeleteRetentionInDays"] == 7 and props["enablePurgeProtection"] is False
    assert admin_roles(data, other) == {app["object_id"], ops["object_id"]}

    # list and show see what create made; `okv vault list` shows no pool.
    listed = pools(data)
    assert listed[other] == created and listed[name] == first
    assert set(pools(data, "--subscription", SUB)) == {other}
    assert set(pools(data, "--resource-group", "team-h")) == {other}
    assert ok(data, "hsm", "show", other, "-o", "json") == created
    assert not {name, other} & {v["name"] for v in ok(data, "vault", "list", "-o", "json")}
    table = okv(data, "hsm", "list")
    assert table.returncode == 0 and other in table.stdout and "Team-H" in table.stdout

    # delete is soft, recover brings the pool back as it was, purge frees the name.
    gone = ok(data, "hsm", "delete", other, "--output", "json")
    assert [g["name"] for g in gone] == [other]
    assert gone[0]["type"] == "Microsoft.KeyVault/deletedManagedHSMs"
    assert gone[0]["properties"]["mhsmId"] == created["id"]
    assert other not in pools(data) and other in pools(data, "--deleted")
    assert other in pools(data, "--deleted", "--resource-group", "Team-H")
    table = okv(data, "hsm", "list", "--deleted")
    assert table.returncode == 0 and other in table.stdout and "Team-H" in table.stdout
    assert "is deleted" in refused(data, "hsm", "show", other)
    assert ok(data, "hsm", "recover", other, "--output", "json") == created
    assert other not in pools(data, "--deleted")

    ok(data, "hsm", "delete", other, "-o", "json")
    assert ok(data, "hsm", "purge", other, "--output", "json") == {"purged": other}
    assert other not in pools(data) and other not in pools(data, "--deleted")
    assert "no managed HSM pool" in refused(data, "hsm", "show", other)
    again = ok(data, "hsm", "create", other, "-o", "json")
    assert again["properties"]["initialAdminObjectIds"] == [dev_oid]
    assert admin_roles(data, other) == {dev_oid}  # nothing of the purged pool's


def test_each_change_is_one_record_of_its_operation(data: Path, dev_oid: str) -> None:
    name = unique()
    for args, operation in (
        (("hsm", "create", name, "-o", "json"), "ManagedHsmPut"),
        (("hsm", "delete", name, "-o", "json"), "ManagedHsmDelete"),
        (("hsm", "recover", name, "-o", "json"), "ManagedHsmPut"),
        (("hsm", "delete", name, "-o", "json"), "ManagedHsmDelete"),
        (("hsm", "purge", name, "-o", "json"), "DeletedManagedHsmPurge"),
    ):
        before = len(records(data))
        ok(data, *args)
        new = records(data)[before:]
        assert [r["operationName"] for r in new] == [operation], args
        record = new[0]
        assert record["resultType"] == "Success"
        assert record["properties"]["isRbacAuthorized"] is True
        assert record["identity"]["claim"][OID] == dev_oid
        assert record["resourceId"].endswith(f"/PROVIDERS/MICROSOFT.KEYVAULT/MANAGEDHSMS/"
                                             f"{name.upper()}")
        assert record["properties"]["requestUri"] == f"okv {args[0]} {args[1]} {name}"
    # Reads change nothing and are no record of this kind.
    before = len(records(data))
    ok(data, "hsm", "list", "-o", "json")
    ok(data, "hsm", "list", "--deleted", "-o", "json")
    assert len(records(data)) == before


def test_refusals_change_nothing(data: Path) -> None:
    pool, protected, vault = unique(), unique("p"), unique("v")
    ok(data, "hsm", "create", pool, "--tag", "k=v", "-o", "json")
    ok(data, "hsm", "create", protected, "--purge-protection", "-o", "json")
    ok(data, "vault", "create", vault, "-o", "json")
    before, vaults_before = pools(data), ok(data, "vault", "list", "-o", "json")
    missing = unique()

    # an unknown pool
    for verb in ("show", "delete", "recover", "purge"):
        assert f"no managed HSM pool named '{missing}'" in refused(data, "hsm", verb, missing)
    # a vault's name: not a pool (and taken)
    for verb in ("show", "delete", "recover", "purge"):
        message = refused(data, "hsm", verb, vault)
        assert f"'{vault}' is a vault, not a managed HSM pool" in message, verb
        assert "okv vault" in message
    assert "already in use" in refused(data, "hsm", "create", vault)
    # a duplicate name, whatever its case
    assert "already in use" in refused(data, "hsm", "create", pool)
    assert "already in use" in refused(data, "hsm", "create", pool.upper())
    # a bad administrator
    for who in ("nobody-at-all", str(uuid.uuid4())):
        message = refused(data, "hsm", "create", unique(), "--administrator", who)
        assert f"no principal '{who}'" in message and "--administrator" in message
    # the service's own rules
    for bad in ("ab", "1abc", "a" * 25, "bad_name"):
        assert "invalid" in refused(data, "hsm", "create", bad).lower(), bad
    for days in ("6", "91"):
        assert "softDeleteRetentionInDays" in refused(
            data, "hsm", "create", unique(), "--retention-days", days)
    assert "sku" in refused(data, "hsm", "create", unique(), "--sku", "Gold")
    assert "KEY=VALUE" in refused(data, "hsm", "create", unique(), "--tag", "novalue")
    assert "--output" in refused(data, "hsm", "list", "--output", "yaml")
    # a purge or recovery of a live pool, a second delete
    assert "not deleted" in refused(data, "hsm", "purge", pool)
    assert "not deleted" in refused(data, "hsm", "recover", pool)
    assert pools(data) == before
    assert not set(before) & set(pools(data, "--deleted"))

    # purge protection: refused until the retention ends; the pool stays recoverable
    ok(data, "hsm", "delete", protected, "-o", "json")
    deleted_before = pools(data, "--deleted")[protected]
    assert "already deleted" in refused(data, "hsm", "delete", protected)
    assert "purge protection" in refused(data, "hsm", "purge", protected)
    assert pools(data, "--deleted")[protected] == deleted_before
    ok(data, "hsm", "recover", protected, "-o", "json")
    assert pools(data) == before
    assert ok(data, "vault", "list", "-o", "json") == vaults_before


def test_okv_vault_refuses_a_pools_name(data: Path) -> None:
    pool = unique()
    ok(data, "hsm", "create", pool, "-o", "json")
    shown = ok(data, "hsm", "show", pool, "-o", "json")
    for args in (("show", pool), ("update", pool, "--tag", "a=b"), ("delete", pool),
                 ("recover", pool), ("purge", pool)):
        message = refused(data, "vault", *args)
        assert f"'{pool}' is a managed HSM pool, not a vault" in message, args
        assert "okv hsm" in message
    # The access-settings commands of vaults would write a vault's document over the
    # pool's (its administrators and settings): refused too (their refusals exit 1).
    for args in (("network", "add-rule", pool, "10.0.0.0/8"),
                 ("policy", "set", pool, "--object-id", str(uuid.uuid4()), "--keys", "get")):
        assert "is a managed HSM pool, not a vault" in refused(data, "vault", *args, code=1)
    assert "already in use" in refused(data, "vault", "create", pool)
    assert ok(data, "hsm", "show", pool, "-o", "json") == shown


def test_a_principal_without_a_role_is_refused(data: Path) -> None:
    app = ok(data, "principal", "create", unique("norole"))
    name = unique()
    before = len(records(data))
    message = refused(data, "hsm", "create", name, env={"OKV_AS": app["client_id"]})
    assert app["object_id"] in message and "ManagedHsmPut" in message
    assert "Nothing was changed" in message
    (record,) = records(data)[before:]
    assert record["operationName"] == "ManagedHsmPut"
    assert record["properties"]["httpStatusCode"] == 403
    assert "no managed HSM pool" in refused(data, "hsm", "show", name)


def test_a_production_deployment_names_its_administrators(tmp_path: Path) -> None:
    config = tmp_path / "okv.toml"
    prod = tmp_path / "prod"
    config.write_text(f'[server]\ndata_dir = "{prod}"\n[tls]\ncertificate = "tls.crt"\n'
                      'key = "tls.key"\n[seal]\ntype = "devkey"\nforce = true\n')
    made = run("init", "--config", str(config))
    assert made.returncode == 0, made.stderr
    admin = json.loads(made.stdout)["administrator"]["object_id"]
    message = refused(prod, "hsm", "create", "prod-hsm")
    assert "--administrator" in message and "production" in message
    assert pools(prod) == {}
    created = ok(prod, "hsm", "create", "prod-hsm", "--administrator", "administrator",
                 "-o", "json")
    assert created["properties"]["initialAdminObjectIds"] == [admin]


# ---- the real dev server: the pool answers at its own host ----------------------------
def test_a_pool_made_by_okv_answers_the_sdk(server: DevServer, sdk_env: dict[str, str],
                                           resolve_localhost: None) -> None:
    name = unique()
    done = server.okv("hsm", "create", name, "--retention-days", "7", "-o", "json")
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    url = created["properties"]["hsmUri"]
    assert url == f"https://{name}.managedhsm.localhost:{server.port}/"
    (dev_oid,) = created["properties"]["initialAdminObjectIds"]
    try:
        # The dev identity (the SDK's managed identity here) administers the pool...
        access = KeyVaultAccessControlClient(url, ManagedIdentityCredential())
        roles = {d.id: d.role_name
                 for d in access.list_role_definitions(KeyVaultRoleScope.GLOBAL)}
        held = {(a.properties.principal_id, roles.get(a.properties.role_definition_id))
                for a in access.list_role_assignments(KeyVaultRoleScope.GLOBAL)}
        assert held == {(dev_oid, ADMINISTRATOR_ROLE)}
        # ...and gives itself the use of its keys, as the table's note says.
        user = next(i for i, n in roles.items() if n == CRYPTO_USER)
        access.create_role_assignment(KeyVaultRoleScope.GLOBAL, user, dev_oid)
        held = {(a.properties.principal_id, roles.get(a.properties.role_definition_id))
                for a in access.list_role_assignments(KeyVaultRoleScope.GLOBAL)}
        assert held == {(dev_oid, ADMINISTRATOR_ROLE), (dev_oid, CRYPTO_USER)}
    finally:
        for verb in ("delete", "purge"):
            assert server.okv("hsm", verb, name, "-o", "json").returncode == 0
    # A deleted pool's host stops answering: the SDK is refused.
    with pytest.raises(HttpResponseError) as e:
        list(KeyVaultAccessControlClient(url, ManagedIdentityCredential())
             .list_role_assignments(KeyVaultRoleScope.GLOBAL))
    assert e.value.status_code == 404, e.value


def test_activate(data: Path, tmp_path: Path) -> None:
    """`okv hsm activate` downloads the pool's security domain to a file (mode 0600): the
    pool is then Active; each share opens with its own certificate's private key only."""
    name = unique("ha")
    ok(data, "hsm", "create", name, "--output", "json")
    assert ok(data, "hsm", "show", name, "--output", "json")["properties"][
        "securityDomainProperties"]["activationStatus"] == "NotActivated"
    certs = []
    for i, (_, cert) in enumerate(wrapping_keys()):
        path = tmp_path / f"sd{i}.cer"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM if i % 2 else
                                           serialization.Encoding.DER))
        certs += ["--certificate", str(path)]
    target = tmp_path / "sd.json"
    # Refusals first: each leaves the pool inactive and writes nothing.
    two = certs[:4]
    assert "3 to 10 certificates" in refused(data, "hsm", "activate", name, *two,
                                             "--file", str(target))
    assert "quorum" in refused(data, "hsm", "activate", name, *certs, "--quorum", "4",
                               "--file", str(target))
    junk = tmp_path / "junk.cer"
    junk.write_bytes(b"not a certificate")
    assert "not an X.509 certificate" in refused(
        data, "hsm", "activate", name, *certs[:4], "--certificate", str(junk),
        "--file", str(target))
    assert "no managed HSM pool" in refused(data, "hsm", "activate", unique("none"), *certs,
                                            "--file", str(target))
    assert not target.exists()
    # A principal with no role on the pool.
    nobody = okv(data, "principal", "create", unique("p"))
    assert nobody.returncode == 0, nobody.stderr
    refused(data, "hsm", "activate", name, *certs, "--file", str(target),
            env={"OKV_AS": json.loads(nobody.stdout)["client_id"]})
    assert not target.exists()
    assert ok(data, "hsm", "show", name, "--output", "json")["properties"][
        "securityDomainProperties"]["activationStatus"] == "NotActivated"

    done = okv(data, "hsm", "activate", name, *certs, "--quorum", "2", "--file", str(target))
    assert done.returncode == 0, done.stderr
    assert "activated" in done.stdout
    assert target.stat().st_mode & 0o777 == 0o600
    document = json.loads(target.read_text())
    assert document["SharedKeys"]["required"] == 2
    assert len(document["SharedKeys"]["enc_shares"]) == 3
    assert ok(data, "hsm", "show", name, "--output", "json")["properties"][
        "securityDomainProperties"]["activationStatus"] == "Active"
    # The file is not written over.
    assert "exists" in refused(data, "hsm", "activate", name, *certs, "--file", str(target))
