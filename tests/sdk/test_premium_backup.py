"""Backup and restore of HSM keys in Premium vaults, through azure-keyvault-keys: the
backup holds each version's copy wrapped by the deployment's backup key in the HSM; a
restore unwraps it into new token objects (sensitive, not extractable) that sign under
the same public key, after the originals were purged, or into another vault beside them.
Refusals (a Standard vault, a name in use, a damaged blob) leave nothing in the token.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.keyvault.keys import KeyClient, KeyVaultKey
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.sdk.clients import unique
from tests.sdk.keys_support import (
    b64u,
    digest,
    environment,
    local_verify,
    operate,
    public_key,
    sdk_jwk,
    uint,
)
from tests.sdk.premium_support import key_client, premium_vault
from tests.support.server import DevServer
from tests.support.softhsm import token_objects

pytestmark = pytest.mark.usefixtures("module_env", "sdk_env", "resolve_localhost")


@pytest.fixture(scope="module")
def module_env(server: DevServer) -> Iterator[dict[str, str]]:
    yield from environment(server)


@pytest.fixture(scope="module")
def premium(server: DevServer, module_env: dict[str, str]) -> str:
    return premium_vault(server, "bkp")


@pytest.fixture
def kc(server: DevServer, premium: str) -> KeyClient:
    return key_client(server, premium)


def private_objects(server: DevServer) -> dict[str, dict[str, object]]:
    return {str(o["id"]): o for o in token_objects(server.data_dir)
            if o["class"] == "PRIVATE_KEY"}


def signs_as(kc: KeyClient, key: KeyVaultKey, public: KeyVaultKey) -> bool:
    """`key` signs, in the HSM, what `public`'s public key verifies (outside the service)."""
    alg = "RS256" if key.key_type == "RSA-HSM" else "ES384"
    dg = digest(alg, b"restored")
    reply = operate(kc, key, "sign", alg, dg)
    assert reply.status == 200, reply.body
    return local_verify(public_key(public.key), alg, dg, reply.value())


def gone(kc: KeyClient, name: str) -> None:
    kc.begin_delete_key(name).wait()
    kc.purge_deleted_key(name)


def test_backup_purge_restore_every_version(kc: KeyClient, server: DevServer) -> None:
    before = set(private_objects(server))
    rsa_name, ec_name = unique("br"), unique("be")
    first = kc.create_rsa_key(rsa_name, size=3072, hardware_protected=True)
    second = kc.rotate_key(rsa_name)
    ec_key = kc.create_ec_key(ec_name, curve="P-384", hardware_protected=True)
    made = set(private_objects(server)) - before
    assert len(made) == 3
    blobs = {rsa_name: kc.backup_key(rsa_name), ec_name: kc.backup_key(ec_name)}
    for name in blobs:
        gone(kc, name)
    assert not made & set(private_objects(server))  # the purge destroyed them

    restored = kc.restore_key_backup(blobs[rsa_name])
    assert restored.id == second.id and restored.key.n == second.key.n
    assert restored.key_type == "RSA-HSM"
    versions = {p.version for p in kc.list_properties_of_key_versions(rsa_name)}
    assert versions == {first.properties.version, second.properties.version}
    old = kc.get_key(rsa_name, first.properties.version)
    assert old.key.n == first.key.n
    assert signs_as(kc, restored, second) and signs_as(kc, old, first)
    restored_ec = kc.restore_key_backup(blobs[ec_name])
    assert (restored_ec.key.x, restored_ec.key.y) == (ec_key.key.x, ec_key.key.y)
    assert signs_as(kc, restored_ec, ec_key)

    now = private_objects(server)
    new = {i: o for i, o in now.items() if i not in before}
    assert len(new) == 3 and not made & set(new)  # new objects, not the purged ones
    for obj in new.values():
        assert (obj["SENSITIVE"], obj["EXTRACTABLE"], obj["TOKEN"]) == (True, False, True)
    for name in blobs:
        gone(kc, name)
    assert not set(new) & set(private_objects(server))


def test_restore_into_another_vault_beside_the_original(kc: KeyClient,
                                                         server: DevServer) -> None:
    name = unique("bo")
    key = kc.create_ec_key(name, curve="P-384", hardware_protected=True)
    blob = kc.backup_key(name)
    other = key_client(server, premium_vault(server, "bko"))
    copy = other.restore_key_backup(blob)
    assert copy.key.x == key.key.x and copy.properties.vault_url != key.properties.vault_url
    gone(kc, name)  # the original's objects go; the copy's stay
    assert signs_as(other, copy, key)
    gone(other, name)


def test_an_imported_key_backs_up_without_its_private_numbers(kc: KeyClient,
                                                              server: DevServer) -> None:
    private = rsa.generate_private_key(65537, 2048)
    name = unique("bi")
    imported = kc.import_key(name, sdk_jwk(private), hardware_protected=True)
    blob = kc.backup_key(name)
    nums = private.private_numbers()
    for secret in (uint(nums.d), uint(nums.p), uint(nums.q)):
        for form in (secret, b64u(secret).encode()):
            assert form not in blob
    gone(kc, name)
    restored = kc.restore_key_backup(blob)
    assert restored.key.n == imported.key.n
    dg = digest("PS256", b"imported")
    reply = operate(kc, restored, "sign", "PS256", dg)
    assert local_verify(private.public_key(), "PS256", dg, reply.value())
    gone(kc, name)


def test_refused_restores_leave_nothing_in_the_token(kc: KeyClient,
                                                      server: DevServer) -> None:
    name = unique("bn")
    kc.create_rsa_key(name, size=2048, hardware_protected=True)
    blob = kc.backup_key(name)
    before = set(private_objects(server))
    # The name is in use in this vault.
    with pytest.raises(ResourceExistsError) as e:
        kc.restore_key_backup(blob)
    assert e.value.status_code == 409
    # A Standard vault holds no HSM keys.
    standard = unique("bstd")[:20]
    assert server.okv("vault", "create", standard).returncode == 0
    with pytest.raises(HttpResponseError) as e:
        key_client(server, standard).restore_key_backup(blob)
    assert e.value.status_code == 403
    assert e.value.response.json()["error"]["message"] == \
        "Hardware key operation not allowed on standard vault."
    # A damaged blob.
    damaged = bytearray(blob)
    damaged[len(damaged) // 2] ^= 1
    with pytest.raises(HttpResponseError) as e:
        kc.restore_key_backup(bytes(damaged))
    assert e.value.status_code == 400
    assert "integrity" in e.value.response.json()["error"]["message"]
    assert set(private_objects(server)) == before
    gone(kc, name)
