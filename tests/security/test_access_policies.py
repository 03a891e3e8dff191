"""Vaults in access-policy mode (`enableRbacAuthorization` false), with the real SDKs.

Each test makes its own vault on the server's data directory, reached on its own
host name `NAME.vault.localhost:PORT`, and changes its settings while the server
runs (with `okv vault ...`, or the same domain service in-process where the
command itself is not under test). In access-policy mode a principal may do what its policy's
permissions allow, gated per operation as Azure gates them (secrets `get` reads
values but cannot list; `list` lists but cannot read values); role assignments
do not count. Switching back to RBAC applies from the next request.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient

from openkeyvault.deployment import Deployment
from openkeyvault.vault.controlrequests import NetworkRules, VaultSettings
from openkeyvault.vault.errors import BadParameter, DomainError, NotFound, VaultNotFound
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env", "resolve_localhost")

HELP = "https://go.microsoft.com/fwlink/?linkid=2125287"


def _okv(server: DevServer, *args: str) -> Any:
    done = server.okv(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _vault(d: Deployment) -> str:
    return d.vaults.create(f"ap{uuid.uuid4().hex[:10]}").name


def _principal(d: Deployment) -> dict[str, str]:
    record, secret = d.directory.create(f"ap-{uuid.uuid4().hex[:8]}")
    return {"tenant_id": record.tenant_id, "client_id": record.client_id,
            "object_id": record.object_id, "client_secret": secret.client_secret}


def _credential(server: DevServer, p: dict[str, str]) -> ClientSecretCredential:
    return ClientSecretCredential(p["tenant_id"], p["client_id"], p["client_secret"],
                                  authority=f"https://localhost:{server.port}",
                                  disable_instance_discovery=True)


def _error(call: Callable[[], object]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(HttpResponseError) as e:
        call()
    assert e.value.response is not None
    return e.value.status_code or 0, json.loads(e.value.response.text())["error"]


def _access_denied(server: DevServer, vault: str, p: dict[str, str], missing: str,
                   call: Callable[[], object]) -> None:
    status, error = _error(call)
    assert status == 403
    assert error["code"] == "Forbidden"
    assert error["innererror"] == {"code": "AccessDenied"}
    issuer = f"https://localhost:{server.port}/{p['tenant_id']}/v2.0"
    assert error["message"] == (
        f"The user, group or application 'appid={p['client_id']};oid={p['object_id']};"
        f"iss={issuer}' does not have {missing} permission on key vault "
        f"'{vault};location=local'. For help resolving this issue, please see {HELP}"
    )


def _forbidden_by_rbac(call: Callable[[], object]) -> None:
    status, error = _error(call)
    assert status == 403
    assert error["innererror"] == {"code": "ForbiddenByRbac"}


def _mode(server: DevServer, vault: str, flag: str) -> dict[str, Any]:
    shown: dict[str, Any] = _okv(server, "vault", "update", vault, flag,
                                  "--output", "json")["properties"]
    assert shown["enableRbacAuthorization"] is (flag == "--rbac")
    return shown


def test_secret_get_and_list_permissions(server: DevServer, deployment: Deployment) -> None:
    vault = _vault(deployment)
    url = server.vault_url(vault)
    admin = SecretClient(url, ManagedIdentityCredential())
    admin.set_secret("kept", "value-1")
    admin.set_secret("gone", "value-2")
    admin.begin_delete_secret("gone").wait()

    getter, lister = _principal(deployment), _principal(deployment)
    _okv(server, "vault", "policy", "set", vault, "--object-id", getter["object_id"],
         "--secrets", "get")
    _okv(server, "vault", "policy", "set", vault, "--object-id", lister["object_id"],
         "--secrets", "LIST")  # names are case-insensitive
    shown = _mode(server, vault, "--access-policies")
    assert {(e["objectId"], tuple(e["permissions"]["secrets"]))
            for e in shown["accessPolicies"]} == {(getter["object_id"], ("get",)),
                                                   (lister["object_id"], ("list",))}

    g = SecretClient(url, _credential(server, getter))
    li = SecretClient(url, _credential(server, lister))
    assert g.get_secret("kept").value == "value-1"
    _access_denied(server, vault, getter, "secrets list",
                   lambda: list(g.list_properties_of_secrets()))
    _access_denied(server, vault, getter, "secrets list",
                   lambda: list(g.list_properties_of_secret_versions("kept")))
    _access_denied(server, vault, getter, "secrets list",
                   lambda: list(g.list_deleted_secrets()))
    _access_denied(server, vault, getter, "secrets set", lambda: g.set_secret("kept", "new"))
    _access_denied(server, vault, getter, "secrets set",
                   lambda: g.update_secret_properties("kept", content_type="text/plain"))
    _access_denied(server, vault, getter, "secrets delete",
                   lambda: g.begin_delete_secret("kept"))
    assert g.get_deleted_secret("gone").name == "gone"  # GetDeletedSecret needs `get`

    assert {p.name for p in li.list_properties_of_secrets()} == {"kept"}
    assert len(list(li.list_properties_of_secret_versions("kept"))) == 1
    assert {d.name for d in li.list_deleted_secrets()} == {"gone"}
    _access_denied(server, vault, lister, "secrets get", lambda: li.get_secret("kept"))
    _access_denied(server, vault, lister, "secrets get", lambda: li.get_deleted_secret("gone"))

    # The refusals changed nothing.
    kept = g.get_secret("kept")
    assert kept.value == "value-1" and kept.properties.content_type is None
    assert [p.version for p in li.list_properties_of_secret_versions("kept")] == \
        [kept.properties.version]


def test_key_permissions(server: DevServer, deployment: Deployment) -> None:
    vault = _vault(deployment)
    url = server.vault_url(vault)
    key = KeyClient(url, ManagedIdentityCredential()).create_ec_key("k", curve="P-256")
    signer, reader = _principal(deployment), _principal(deployment)
    props = deployment.vault_properties
    props.set_access_policy(vault, signer["object_id"], permissions={"keys": ["sign"]})
    props.set_access_policy(vault, reader["object_id"],
                            permissions={"keys": ["get"], "secrets": ["get", "list"]})
    props.update(vault, enable_rbac_authorization=False)
    digest = hashlib.sha256(b"data").digest()

    signer_keys = KeyClient(url, _credential(server, signer))
    signer_crypto = CryptographyClient(key.id, _credential(server, signer))
    signature = signer_crypto.sign(SignatureAlgorithm.es256, digest).signature
    _access_denied(server, vault, signer, "keys get", lambda: signer_keys.get_key("k"))
    _access_denied(server, vault, signer, "keys list",
                   lambda: list(signer_keys.list_properties_of_keys()))
    _access_denied(server, vault, signer, "keys verify",
                   lambda: signer_crypto.verify(SignatureAlgorithm.es256, digest, signature))
    _access_denied(server, vault, signer, "keys create",
                   lambda: signer_keys.create_ec_key("k2", curve="P-256"))

    reader_keys = KeyClient(url, _credential(server, reader))
    assert reader_keys.get_key("k").id == key.id
    _access_denied(server, vault, reader, "keys list",
                   lambda: list(reader_keys.list_properties_of_keys()))
    _access_denied(server, vault, reader, "keys list",
                   lambda: list(reader_keys.list_properties_of_key_versions("k")))
    _access_denied(server, vault, reader, "keys sign", lambda: CryptographyClient(
        key.id, _credential(server, reader)).sign(SignatureAlgorithm.es256, digest))
    _access_denied(server, vault, reader, "keys getrotationpolicy",
                   lambda: reader_keys.get_key_rotation_policy("k"))
    # The signature is valid, and the refused create made nothing.
    assert CryptographyClient(reader_keys.get_key("k"), _credential(server, reader)).verify(
        SignatureAlgorithm.es256, digest, signature).is_valid
    props.update(vault, enable_rbac_authorization=True)
    assert [p.name for p in KeyClient(url, ManagedIdentityCredential())
            .list_properties_of_keys()] == ["k"]


def test_role_assignments_do_not_count_in_access_policy_mode(server: DevServer,
                                                              deployment: Deployment) -> None:
    vault = _vault(deployment)
    url = server.vault_url(vault)
    admin = SecretClient(url, ManagedIdentityCredential())
    admin.set_secret("s", "value")
    by_role, by_policy = _principal(deployment), _principal(deployment)
    deployment.rbac.assign(by_role["object_id"], "Key Vault Secrets User", f"/vaults/{vault}")
    deployment.vault_properties.set_access_policy(vault, by_policy["object_id"],
                                                  permissions={"secrets": ["get"]})
    role_client = SecretClient(url, _credential(server, by_role))
    policy_client = SecretClient(url, _credential(server, by_policy))

    # RBAC (the default): the role counts, the policy does not.
    assert role_client.get_secret("s").value == "value"
    _forbidden_by_rbac(lambda: policy_client.get_secret("s"))

    _mode(server, vault, "--access-policies")  # applies from the next request
    assert policy_client.get_secret("s").value == "value"
    _access_denied(server, vault, by_role, "secrets get", lambda: role_client.get_secret("s"))
    status, error = _error(lambda: admin.get_secret("s"))  # Administrator at "/", no policy
    assert status == 403 and error["innererror"] == {"code": "AccessDenied"}
    assert "does not have secrets get permission" in error["message"]

    _okv(server, "vault", "policy", "remove", vault, "--object-id", by_policy["object_id"])
    _access_denied(server, vault, by_policy, "secrets get",
                   lambda: policy_client.get_secret("s"))

    _mode(server, vault, "--rbac")
    assert role_client.get_secret("s").value == "value"
    assert admin.get_secret("s").value == "value"
    _forbidden_by_rbac(lambda: policy_client.get_secret("s"))


def test_other_vaults_keep_their_own_mode(server: DevServer, deployment: Deployment) -> None:
    vault = _vault(deployment)
    deployment.vault_properties.update(vault, enable_rbac_authorization=False)
    admin = SecretClient(server.vault_url("dev"), ManagedIdentityCredential())
    name = f"ap-{uuid.uuid4().hex[:8]}"
    assert admin.set_secret(name, "v").value == "v"  # the default vault is still RBAC


def test_policy_and_mode_refusals_change_nothing(server: DevServer,
                                                 deployment: Deployment) -> None:
    vault = _vault(deployment)
    props = deployment.vault_properties
    before = props.get(vault).to_wire()
    oid = str(uuid.uuid4())
    for args in (["policy", "set", vault, "--object-id", oid, "--secrets", "get,frob"],
                 ["policy", "set", vault, "--object-id", "not-a-guid", "--secrets", "get"],
                 ["update", vault, "--default-action", "Block"],
                 ["network", "remove-rule", vault, "10.0.0.0/8"]):
        done = server.okv("vault", *args)
        # the lifecycle commands (update) refuse with 2, the policy and network ones with 1
        assert done.returncode == (2 if args[0] == "update" else 1), args
        assert done.stderr.startswith("error:"), args

    refusals: list[tuple[type[DomainError], Callable[[], object]]] = [
        (BadParameter, lambda: props.set_access_policy(vault, oid, permissions={"keys": ["set"]})),
        (BadParameter, lambda: props.set_access_policy(vault, oid, "x", {"secrets": ["get"]})),
        (BadParameter, lambda: props.set_access_policy(vault, oid, permissions={"storage": []})),
        (NotFound, lambda: props.remove_access_policy(vault, oid)),
        (BadParameter, lambda: props.update(vault, bypass="Everyone")),
        (BadParameter, lambda: props.add_ip_rule(vault, "10.0.0.1/8")),
        (BadParameter, lambda: props.add_ip_rule(vault, "localhost")),
        (BadParameter, lambda: props.replace(vault, VaultSettings(
            network_acls=NetworkRules(default_action="Block")))),
        (VaultNotFound, lambda: props.get("no-such-vault")),
        (VaultNotFound, lambda: props.update("no-such-vault", enable_rbac_authorization=False)),
    ]
    for error, call in refusals:
        with pytest.raises(error):
            call()
    assert props.get(vault).to_wire() == before
    shown = _okv(server, "vault", "show", vault, "--output", "json")["properties"]
    assert shown["enableRbacAuthorization"] is True
    assert shown["accessPolicies"] == []
    assert shown["networkAcls"]["defaultAction"] == "Allow"
