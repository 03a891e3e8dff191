"""Role assignments decide what a principal may do, at vault, collection or object scope.

A service principal authenticates with ClientSecretCredential; `okv role assign`
and `okv role remove` (run while the server is up) take effect on the next request.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient

from tests.sdk.clients import localhost_client
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env")


def _okv(server: DevServer, *args: str) -> dict:
    done = server.okv(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _forbidden(call) -> None:
    with pytest.raises(HttpResponseError) as e:
        call()
    assert e.value.status_code == 403, e.value
    assert "ForbiddenByRbac" in str(e.value)


@pytest.fixture
def app_principal(server: DevServer) -> dict:
    return _okv(server, "principal", "create", f"app-{uuid.uuid4().hex[:8]}")


def _credential(server: DevServer, p: dict) -> ClientSecretCredential:
    return ClientSecretCredential(p["tenant_id"], p["client_id"], p["client_secret"],
                                  authority=f"https://localhost:{server.port}",
                                  disable_instance_discovery=True)


def test_secret_roles_by_scope(server: DevServer, app_principal: dict) -> None:
    admin = localhost_client(server)
    a, b = f"rbac-a-{uuid.uuid4().hex[:6]}", f"rbac-b-{uuid.uuid4().hex[:6]}"
    admin.set_secret(a, "value-a")
    admin.set_secret(b, "value-b")
    app = SecretClient(server.url, _credential(server, app_principal),
                       verify_challenge_resource=False)
    _forbidden(lambda: app.get_secret(a))

    one = _okv(server, "role", "assign", "--principal", app_principal["client_id"],
               "--role", "Key Vault Secrets User", "--scope", f"/vaults/dev/secrets/{a}")
    assert one["role"] == "Key Vault Secrets User"
    assert app.get_secret(a).value == "value-a"  # the next request, no restart
    _forbidden(lambda: app.get_secret(b))  # another object
    _forbidden(lambda: app.set_secret(a, "changed"))  # not in the role
    _forbidden(lambda: list(app.list_properties_of_secrets()))  # listing needs the collection
    assert admin.get_secret(a).value == "value-a"  # the refused set changed nothing

    collection = _okv(server, "role", "assign", "--principal", app_principal["object_id"],
                      "--role", "4633458b-17de-408a-b874-0445c86b69e6",
                      "--scope", "/vaults/dev/secrets")
    assert app.get_secret(b).value == "value-b"
    assert {a, b} <= {p.name for p in app.list_properties_of_secrets()}
    _forbidden(lambda: app.begin_delete_secret(b))

    for assignment in (one, collection):
        _okv(server, "role", "remove", assignment["id"])
    _forbidden(lambda: app.get_secret(a))


def test_key_roles(server: DevServer, app_principal: dict) -> None:
    admin_keys = KeyClient(server.url, ManagedIdentityCredential(),
                           verify_challenge_resource=False)
    name = f"rbac-key-{uuid.uuid4().hex[:6]}"
    key = admin_keys.create_ec_key(name, curve="P-256")
    cred = _credential(server, app_principal)
    keys = KeyClient(server.url, cred, verify_challenge_resource=False)
    crypto = CryptographyClient(key.id, cred, verify_challenge_resource=False)
    digest = hashlib.sha256(b"data").digest()

    _okv(server, "role", "assign", "--principal", app_principal["client_id"],
         "--role", "Key Vault Reader", "--scope", "/vaults/dev")
    assert keys.get_key(name).id == key.id
    _forbidden(lambda: crypto.sign(SignatureAlgorithm.es256, digest))
    _forbidden(lambda: keys.create_rsa_key(f"{name}-new"))

    _okv(server, "role", "assign", "--principal", app_principal["client_id"],
         "--role", "Key Vault Crypto User", "--scope", f"/vaults/dev/keys/{name}")
    signed = crypto.sign(SignatureAlgorithm.es256, digest)
    assert crypto.verify(SignatureAlgorithm.es256, digest, signed.signature).is_valid
    _forbidden(lambda: keys.create_rsa_key(f"{name}-new"))  # Crypto User cannot create


def test_assignment_refusals(server: DevServer, app_principal: dict) -> None:
    for args in (["--role", "Supreme Overlord", "--scope", "/"],
                 ["--role", "Key Vault Reader", "--scope", "/subscriptions/x"],
                 ["--role", "Key Vault Reader", "--scope", "/vaults/dev/things"]):
        done = server.okv("role", "assign", "--principal", app_principal["client_id"], *args)
        assert done.returncode == 1 and done.stderr.startswith("error:"), args
    done = server.okv("role", "assign", "--principal", "nobody", "--role", "Key Vault Reader")
    assert done.returncode == 1
    assert server.okv("role", "remove", str(uuid.uuid4())).returncode == 1


def test_dev_identity_is_an_administrator_principal(server: DevServer) -> None:
    principals = json.loads(server.okv("principal", "list", "--output", "json").stdout)
    dev = [p for p in principals if p["display_name"] == "dev identity"]
    assert len(dev) == 1
    roles = json.loads(server.okv("role", "list", "--output", "json").stdout)
    assert {"principal_id": dev[0]["object_id"], "role": "Key Vault Administrator",
            "scope": "/"} in [{k: r[k] for k in ("principal_id", "role", "scope")}
                              for r in roles]
