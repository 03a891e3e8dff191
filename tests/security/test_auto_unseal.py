"""Auto-unseal (storage/seals.py KeyVaultSeal) against a second, real OpenKeyVault server:
the root key is wrapped by an RSA key created in it through the official SDK, and is
refused clearly when that key is disabled, deleted, replaced by another vault's key, or
out of reach.

The seal's credential is what a deployment would configure: a service principal's client
secret (ClientSecretCredential) holding only the Key Vault Crypto Service Encryption User
role on the one key; the keys themselves are made with the dev managed identity.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import TokenCredential
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.keys import KeyClient, KeyVaultKey

from openkeyvault.storage.seals import AutoUnsealError, KeyVaultSeal, describe
from tests.support.dns import localhost_subdomains
from tests.support.server import DevServer, free_port, running

CREDENTIAL_ENV = (
    "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
    "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS", "IDENTITY_ENDPOINT", "IDENTITY_HEADER",
)
SEAL_ROLE = "Key Vault Crypto Service Encryption User"
FAST = {"retry_total": 0}


@dataclass
class Remote:
    server: DevServer
    keys: KeyClient  # the dev managed identity, on the default vault

    def principal(self) -> tuple[dict[str, Any], ClientSecretCredential]:
        made = self.server.okv("principal", "create", f"seal-{uuid.uuid4().hex[:8]}")
        assert made.returncode == 0, made.stderr
        p = json.loads(made.stdout)
        return p, ClientSecretCredential(p["tenant_id"], p["client_id"], p["client_secret"],
                                         authority=f"https://localhost:{self.server.port}",
                                         disable_instance_discovery=True)

    def seal_credential(self, key: KeyVaultKey, vault: str = "dev") -> ClientSecretCredential:
        """A principal allowed to get, wrap and unwrap with `key` and nothing else."""
        p, credential = self.principal()
        assigned = self.server.okv("role", "assign", "--principal", p["object_id"], "--role",
                                   SEAL_ROLE, "--scope", f"/vaults/{vault}/keys/{key.name}")
        assert assigned.returncode == 0, assigned.stderr
        return credential

    def rsa_key(self, client: KeyClient | None = None) -> KeyVaultKey:
        return (client or self.keys).create_rsa_key(f"seal-{uuid.uuid4().hex[:10]}", size=2048)


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    with running(tmp_path_factory.mktemp("remote") / "data") as server:
        mp = pytest.MonkeyPatch()
        for k in CREDENTIAL_ENV:
            mp.delenv(k, raising=False)
        for k, v in server.env.items():
            mp.setenv(k, v)
        try:
            with localhost_subdomains():
                yield Remote(server, KeyClient(server.vault_url(), ManagedIdentityCredential()))
        finally:
            mp.undo()


@pytest.fixture
def root_key() -> bytes:
    return secrets.token_bytes(32)


def refused(stored: dict[str, Any], credential: TokenCredential, root_key: bytes,
            **options: Any) -> AutoUnsealError:
    with pytest.raises(AutoUnsealError) as caught:
        KeyVaultSeal.unseal(stored, credential, **options)
    error = caught.value
    message = str(error)
    assert error.key_id in message
    for secret in (root_key.hex(), stored.get("wrapped_key", "")[:16], stored["verifier"]):
        assert secret not in message
    return error


def test_unseal_gives_the_same_root_key(remote: Remote, root_key: bytes) -> None:
    key = remote.rsa_key()
    credential = remote.seal_credential(key)
    stored = KeyVaultSeal.init(root_key, key.id, credential)
    assert set(stored) == {"type", "key_id", "algorithm", "wrapped_key", "thumbprint",
                           "verifier"}
    assert stored["type"] == "azurekeyvault" and stored["algorithm"] == "RSA-OAEP-256"
    assert stored["key_id"] == key.id and key.properties.version in stored["key_id"]
    assert describe(stored) == {"type": "azurekeyvault"}
    text = json.dumps(stored)
    assert root_key.hex() not in text
    assert KeyVaultSeal.unseal(json.loads(text), credential) == root_key
    # again, with a credential the application builds another way
    assert KeyVaultSeal.unseal(stored, ManagedIdentityCredential()) == root_key


def test_a_key_id_without_version_is_recorded_with_it(remote: Remote, root_key: bytes) -> None:
    key = remote.rsa_key()
    credential = remote.seal_credential(key)
    stored = KeyVaultSeal.init(root_key, f"{remote.server.vault_url()}/keys/{key.name}",
                               credential)
    assert stored["key_id"] == key.id
    # a new version of the key does not take over the seal
    remote.keys.create_rsa_key(key.name, size=2048)
    assert KeyVaultSeal.unseal(stored, credential) == root_key


def test_thumbprint_is_the_rfc7638_thumbprint(remote: Remote, root_key: bytes) -> None:
    import base64
    import hashlib

    key = remote.rsa_key()
    stored = KeyVaultSeal.init(root_key, key.id, remote.seal_credential(key))

    def b64u(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    n = key.key.n.lstrip(b"\x00")  # type: ignore[attr-defined]
    e = key.key.e.lstrip(b"\x00")  # type: ignore[attr-defined]
    canonical = f'{{"e":"{b64u(e)}","kty":"RSA","n":"{b64u(n)}"}}'.encode()
    assert stored["thumbprint"] == b64u(hashlib.sha256(canonical).digest())


def test_a_disabled_key_is_refused_until_enabled(remote: Remote, root_key: bytes) -> None:
    key = remote.rsa_key()
    credential = remote.seal_credential(key)
    stored = KeyVaultSeal.init(root_key, key.id, credential)
    remote.keys.update_key_properties(key.name, enabled=False)
    error = refused(stored, credential, root_key)
    assert "disabled" in error.reason and not error.retryable
    assert error.key_id == key.id
    remote.keys.update_key_properties(key.name, enabled=True)
    assert KeyVaultSeal.unseal(stored, credential) == root_key


def test_init_with_a_disabled_key_is_refused(remote: Remote, root_key: bytes) -> None:
    key = remote.rsa_key()
    remote.keys.update_key_properties(key.name, enabled=False)
    with pytest.raises(AutoUnsealError, match="disabled"):
        KeyVaultSeal.init(root_key, key.id, remote.seal_credential(key))


def test_a_deleted_key_is_refused(remote: Remote, root_key: bytes) -> None:
    key = remote.rsa_key()
    credential = remote.seal_credential(key)
    stored = KeyVaultSeal.init(root_key, key.id, credential)
    remote.keys.begin_delete_key(key.name).wait()
    error = refused(stored, credential, root_key)
    assert "does not exist" in error.reason and not error.retryable


def test_a_key_from_another_vault_is_refused(remote: Remote, root_key: bytes) -> None:
    key = remote.rsa_key()
    stored = KeyVaultSeal.init(root_key, key.id, remote.seal_credential(key))
    vault = f"other{uuid.uuid4().hex[:8]}"
    made = remote.server.okv("vault", "create", vault)
    assert made.returncode == 0, made.stderr
    other_keys = KeyClient(remote.server.vault_url(vault), ManagedIdentityCredential())
    other = remote.rsa_key(other_keys)
    credential = remote.seal_credential(other, vault)
    # the description names the other vault's key: its public key is not the seal's
    moved = {**stored, "key_id": other.id}
    error = refused(moved, credential, root_key)
    assert "not the one this seal was made with" in error.reason and not error.retryable
    assert other.id in str(error)
    # and with its thumbprint written in too, the key cannot unwrap the root key
    other_stored = KeyVaultSeal.init(secrets.token_bytes(32), other.id, credential)
    forged = {**stored, "key_id": other.id, "thumbprint": other_stored["thumbprint"]}
    error = refused(forged, credential, root_key)
    assert "not the key this seal was made with" in error.reason


def test_another_wrapped_value_is_refused(remote: Remote, root_key: bytes) -> None:
    key = remote.rsa_key()
    credential = remote.seal_credential(key)
    stored = KeyVaultSeal.init(root_key, key.id, credential)
    other = KeyVaultSeal.init(secrets.token_bytes(32), key.id, credential)
    # the same key unwraps another deployment's root key: the verifier tells
    error = refused({**stored, "wrapped_key": other["wrapped_key"]}, credential, root_key)
    assert "not this deployment's root key" in error.reason


def test_a_credential_without_access_is_refused(remote: Remote, root_key: bytes) -> None:
    key = remote.rsa_key()
    stored = KeyVaultSeal.init(root_key, key.id, remote.seal_credential(key))
    _, stranger = remote.principal()
    error = refused(stored, stranger, root_key)
    assert "not permitted" in error.reason and not error.retryable


def test_a_wrong_client_secret_is_refused(remote: Remote, root_key: bytes) -> None:
    key = remote.rsa_key()
    stored = KeyVaultSeal.init(root_key, key.id, remote.seal_credential(key))
    p, _ = remote.principal()
    wrong_secret = secrets.token_urlsafe(30)
    wrong = ClientSecretCredential(p["tenant_id"], p["client_id"], wrong_secret,
                                   authority=f"https://localhost:{remote.server.port}",
                                   disable_instance_discovery=True)
    error = refused(stored, wrong, root_key)
    assert "credential was not accepted" in error.reason
    assert wrong_secret not in str(error) and p["client_secret"] not in str(error)


def test_an_unreachable_vault_is_retryable(remote: Remote, root_key: bytes) -> None:
    key = remote.rsa_key()
    credential = remote.seal_credential(key)
    stored = KeyVaultSeal.init(root_key, key.id, credential)
    gone = key.id.replace(f":{remote.server.port}/", f":{free_port()}/")
    error = refused({**stored, "key_id": gone}, credential, root_key, **FAST)
    assert "could not be reached" in error.reason and error.retryable
    assert error.key_id == gone


def test_an_ec_key_or_a_malformed_id_is_refused(remote: Remote, root_key: bytes) -> None:
    ec = remote.keys.create_ec_key(f"seal-ec-{uuid.uuid4().hex[:8]}")
    with pytest.raises(AutoUnsealError, match=r"not an RSA key \(it is EC\)"):
        KeyVaultSeal.init(root_key, ec.id, ManagedIdentityCredential())
    for wrong in (f"{remote.server.vault_url()}/secrets/x", f"{remote.server.vault_url()}/keys",
                  f"http://localhost:{remote.server.port}/keys/{ec.name}", "seal-key"):
        with pytest.raises(AutoUnsealError, match="not a Key Vault key id"):
            KeyVaultSeal.init(root_key, wrong, ManagedIdentityCredential())


def test_tmp_files_hold_no_root_key(remote: Remote, root_key: bytes, tmp_path: Path) -> None:
    """The stored description is all a deployment keeps: written out, it holds no form of
    the root key."""
    import base64

    key = remote.rsa_key()
    stored = KeyVaultSeal.init(root_key, key.id, remote.seal_credential(key))
    path = tmp_path / "seal.json"
    path.write_text(json.dumps(stored))
    data = path.read_bytes()
    for form in (root_key, root_key.hex().encode(), base64.b64encode(root_key),
                 base64.urlsafe_b64encode(root_key).rstrip(b"=")):
        assert form not in data


def test_a_key_that_may_not_wrap_is_refused(remote: Remote, root_key: bytes) -> None:
    key = remote.keys.create_rsa_key(f"seal-sign-{uuid.uuid4().hex[:8]}", size=2048,
                                     key_operations=["sign", "verify"])
    with pytest.raises(AutoUnsealError, match=r"key_ops\) do not include wrapKey"):
        KeyVaultSeal.init(root_key, key.id, ManagedIdentityCredential())


def test_a_key_restricted_after_init_is_refused(remote: Remote, root_key: bytes) -> None:
    key = remote.rsa_key()
    credential = remote.seal_credential(key)
    stored = KeyVaultSeal.init(root_key, key.id, credential)
    remote.keys.update_key_properties(key.name, key_operations=["wrapKey"])
    error = refused(stored, credential, root_key)
    assert "do not include wrapKey and unwrapKey" in error.reason and not error.retryable


def test_an_expired_key_still_unseals(remote: Remote, root_key: bytes) -> None:
    """As in Azure, an expired key still unwraps (only wrapping is refused): a seal does
    not shut because the key's expiry passed."""
    key = remote.rsa_key()
    credential = remote.seal_credential(key)
    stored = KeyVaultSeal.init(root_key, key.id, credential)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    remote.keys.update_key_properties(key.name, expires_on=past)
    assert KeyVaultSeal.unseal(stored, credential) == root_key
    with pytest.raises(AutoUnsealError, match="the key has expired"):
        KeyVaultSeal.init(root_key, key.id, credential)
