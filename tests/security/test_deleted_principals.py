"""A token outlives neither its principal nor the credential that obtained it.

A deleted principal's token — valid signature, unexpired, already verified and cached —
is refused from the next request with a 401 challenge, before any handler runs. A removed
client secret gets no new token.
"""

from __future__ import annotations

import uuid

import pytest
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from openkeyvault.access.principals import Principal
from openkeyvault.deployment import Deployment
from tests.security.conftest import Rest, resource
from tests.security.test_tokens import assert_challenge
from tests.security.trust_support import (
    assert_oauth_refusal,
    okv,
    scope,
    token_call,
    unique,
)
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env")


def _refused_before_any_handler(rest: Rest, server: DevServer, token: str) -> None:
    name = unique("gone")
    r = rest.call("PUT", f"/secrets/{name}", token=token, json={"value": "must not exist"})
    assert "no longer exists" in assert_challenge(r, server, token)
    assert rest.call("GET", f"/secrets/{name}").status_code == 404


def test_a_deleted_service_principals_token_is_refused(server: DevServer, rest: Rest) -> None:
    p = okv(server, "principal", "create", unique("doomed"))
    okv(server, "role", "assign", "--principal", p["client_id"], "--role",
        "Key Vault Secrets Officer", "--scope", "/vaults/dev")
    credential = ClientSecretCredential(p["tenant_id"], p["client_id"], p["client_secret"],
                                        authority=f"https://localhost:{server.port}",
                                        disable_instance_discovery=True)
    token = credential.get_token(scope(server)).token
    client = SecretClient(server.url, credential, verify_challenge_resource=False)
    client.set_secret(unique("before"), "allowed")  # the token is verified and cached
    assert rest.call("GET", "/secrets", token=token).status_code == 200

    okv(server, "principal", "delete", p["client_id"])
    _refused_before_any_handler(rest, server, token)
    assert rest.call("GET", "/secrets", token=token).status_code == 401


def test_a_deleted_managed_identitys_token_is_refused(server: DevServer, rest: Rest) -> None:
    mi = okv(server, "principal", "create", unique("doomed-mi"), "--managed-identity")
    token = ManagedIdentityCredential(client_id=mi["client_id"]).get_token(scope(server)).token
    r = rest.call("GET", "/secrets", token=token)
    assert r.status_code == 403  # authenticated; holds no role
    okv(server, "principal", "delete", mi["object_id"])
    _refused_before_any_handler(rest, server, token)


def test_a_removed_client_secret_gets_no_token(server: DevServer) -> None:
    p = okv(server, "principal", "create", unique("revoked"))
    form = {"grant_type": "client_credentials", "client_id": p["client_id"],
            "client_secret": p["client_secret"], "scope": scope(server)}
    assert token_call(server, p["tenant_id"], form).status_code == 200
    okv(server, "principal", "secret", "remove", p["client_id"], p["secret_id"])
    assert_oauth_refusal(token_call(server, p["tenant_id"], form), 401, "invalid_client",
                         "7000215", p["client_secret"])
    # Removing it again, or a credential of another kind by that id, finds nothing.
    done = server.okv("principal", "secret", "remove", p["client_id"], p["secret_id"])
    assert done.returncode == 1


def test_a_token_of_a_principal_that_never_existed_is_refused(
        server: DevServer, rest: Rest, deployment: Deployment) -> None:
    ghost = Principal(str(uuid.uuid4()), deployment.tenant_id, str(uuid.uuid4()))
    token = deployment.tokens.issue(ghost, resource(server)).access_token
    _refused_before_any_handler(rest, server, token)
