"""Managed identities beyond the dev identity: the caller names one, and gets its token."""

from __future__ import annotations

import json
import uuid

import jwt
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from tests.sdk.clients import localhost_client
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env")


def _okv(server: DevServer, *args: str) -> dict:
    done = server.okv(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _scope(server: DevServer) -> str:
    return f"https://vault.localhost:{server.port}/.default"


def test_a_named_managed_identity_gets_its_own_token_and_roles(server: DevServer) -> None:
    name = f"worker-{uuid.uuid4().hex[:6]}"
    mi = _okv(server, "principal", "create", name, "--managed-identity")
    assert mi["kind"] == "managedIdentity" and "client_secret" not in mi

    for selector in ({"client_id": mi["client_id"]},
                     {"identity_config": {"object_id": mi["object_id"]}},
                     {"identity_config": {"resource_id": f"/subscriptions/s/resourceGroups/g/"
                                          "providers/Microsoft.ManagedIdentity/"
                                          f"userAssignedIdentities/{name}"}}):
        token = ManagedIdentityCredential(**selector).get_token(_scope(server)).token
        assert jwt.decode(token, options={"verify_signature": False})["oid"] == mi["object_id"]

    secret = f"mi-{uuid.uuid4().hex[:6]}"
    localhost_client(server).set_secret(secret, "for the worker")
    worker = SecretClient(server.url, ManagedIdentityCredential(client_id=mi["client_id"]),
                          verify_challenge_resource=False)
    with pytest.raises(HttpResponseError) as e:
        worker.get_secret(secret)
    assert e.value.status_code == 403
    _okv(server, "role", "assign", "--principal", name, "--role", "Key Vault Secrets User",
         "--scope", f"/vaults/dev/secrets/{secret}")
    assert worker.get_secret(secret).value == "for the worker"


def test_unknown_or_secret_based_identities_are_refused(server: DevServer) -> None:
    sp = _okv(server, "principal", "create", f"sp-{uuid.uuid4().hex[:6]}")
    for client_id in (str(uuid.uuid4()), sp["client_id"]):
        with pytest.raises(ClientAuthenticationError):
            ManagedIdentityCredential(client_id=client_id).get_token(_scope(server))
    # naming two identities at once is refused
    r = requests.get(f"https://localhost:{server.port}/msi/token",
                     params={"api-version": "2019-08-01", "resource": _scope(server)[:-9],
                             "client_id": sp["client_id"], "object_id": sp["object_id"]},
                     headers={"X-IDENTITY-HEADER": server.env["IDENTITY_HEADER"]},
                     verify=server.ca, timeout=10)
    assert r.status_code == 400
    # a managed identity has no client secret to add
    done = server.okv("principal", "secret", "add", sp["client_id"])
    assert done.returncode == 0
    mi = _okv(server, "principal", "create", f"mi-{uuid.uuid4().hex[:6]}", "--managed-identity")
    done = server.okv("principal", "secret", "add", mi["client_id"])
    assert done.returncode == 1 and "service principals" in done.stderr
