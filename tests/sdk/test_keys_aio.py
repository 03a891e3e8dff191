"""The Keys API through the official async SDK (`azure.keyvault.keys.aio`): a representative
subset of test_keys.py, one coroutine per test run with `asyncio.run`.

The aiohttp transport trusts the server's CA through `SSL_CERT_FILE` from dev.env.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.core.rest import HttpRequest
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential
from azure.keyvault.keys import KeyRotationLifetimeAction, KeyRotationPolicy, KeyVaultKey
from azure.keyvault.keys.aio import KeyClient
from azure.keyvault.keys.crypto import EncryptionAlgorithm, KeyWrapAlgorithm, SignatureAlgorithm
from azure.keyvault.keys.crypto.aio import CryptographyClient
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.sdk.clients import unique
from tests.sdk.keys_support import (
    CURVES,
    POLL,
    PRIVATE_MEMBERS,
    RSA_ENCRYPT,
    RSA_OPS,
    RSA_SIGN,
    Reply,
    b64u,
    b64u_decode,
    digest,
    local_encrypt,
    local_sign,
    local_verify,
    public_key,
    sdk_jwk,
    uint,
)
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env")

Body = Callable[[KeyClient, Any], Awaitable[None]]


def run_localhost(server: DevServer, body: Body) -> None:
    """The default vault on bare localhost, managed identity, challenge verification off."""

    async def main() -> None:
        async with ManagedIdentityCredential() as credential, KeyClient(
            server.url, credential, verify_challenge_resource=False
        ) as client:
            await body(client, credential)

    asyncio.run(main())


def crypto(key: KeyVaultKey, credential: Any) -> CryptographyClient:
    return CryptographyClient(key, credential, verify_challenge_resource=False)


async def rest(client: KeyClient, method: str, path: str, body: Any = None) -> Reply:
    request = HttpRequest(method, path, json=body) if body is not None else \
        HttpRequest(method, path)
    response = await client.send_request(request)
    await response.read()
    return Reply(response.status_code, response.json() if response.content else None)


async def operate(client: KeyClient, key: KeyVaultKey, op: str, alg: str, value: bytes,
                  **extra: bytes) -> Reply:
    body = {"alg": alg, "value": b64u(value), **{k: b64u(v) for k, v in extra.items()}}
    return await rest(client, "POST", f"/keys/{key.name}/{key.properties.version}/{op}", body)


def test_aio_key_lifecycle(server: DevServer) -> None:
    async def body(client: KeyClient, credential: Any) -> None:
        name = unique("aio")
        first = await client.create_rsa_key(name, size=2048, tags={"v": "1"})
        second = await client.create_rsa_key(name, size=3072, key_operations=["sign", "verify"])
        assert first.id == f"{server.url}/keys/{name}/{first.properties.version}"
        assert first.key_operations == RSA_OPS and len(first.key.n) == 256
        assert first.key.e == b"\x01\x00\x01"
        raw = await rest(client, "GET", f"/keys/{name}/{second.properties.version}")
        assert set(raw.body["key"]) == {"kid", "kty", "key_ops", "n", "e"}
        assert raw.body["key"]["key_ops"] == ["sign", "verify"]
        assert len(b64u_decode(raw.body["key"]["n"])) == 384

        latest = await client.get_key(name)
        assert latest.properties.version == second.properties.version
        old = await client.get_key(name, first.properties.version)
        assert old.key.n == first.key.n and old.properties.tags == {"v": "1"}
        versions = [p.version async for p in client.list_properties_of_key_versions(name)]
        assert versions == [first.properties.version, second.properties.version]
        listed = {p.name: p async for p in client.list_properties_of_keys()}
        assert listed[name].id == f"{server.url}/keys/{name}" and listed[name].version is None

        updated = await client.update_key_properties(
            name, first.properties.version, enabled=False, tags={"k": "v"},
            key_operations=["encrypt", "decrypt"],
        )
        assert updated.properties.enabled is False and updated.properties.tags == {"k": "v"}
        assert updated.key_operations == ["encrypt", "decrypt"]
        reply = await operate(client, first, "encrypt", "RSA-OAEP", b"x")
        assert (reply.status, reply.inner) == (403, "KeyDisabled")

        blob = await client.backup_key(name)
        deleted = await client.delete_key(name, **POLL)
        assert deleted.recovery_id == f"{server.url}/deletedkeys/{name}"
        assert (deleted.scheduled_purge_date - deleted.deleted_date).days == 90
        assert all(getattr(deleted.key, m, None) is None for m in PRIVATE_MEMBERS - {"key_hsm"})
        with pytest.raises(ResourceNotFoundError):
            await client.get_key(name)
        assert (await client.get_deleted_key(name)).name == name
        assert name in {d.name async for d in client.list_deleted_keys()}
        with pytest.raises(ResourceExistsError) as conflict:
            await client.create_ec_key(name)
        assert "ObjectIsDeletedButRecoverable" in str(conflict.value)

        recovered = await client.recover_deleted_key(name, **POLL)
        assert recovered.properties.version == second.properties.version
        assert (await client.get_key(name)).key.n == second.key.n

        await client.delete_key(name, **POLL)
        assert await client.purge_deleted_key(name) is None
        with pytest.raises(ResourceNotFoundError):
            await client.get_deleted_key(name)
        restored = await client.restore_key_backup(blob)
        assert restored.properties.version == second.properties.version
        again = await client.get_key(name, first.properties.version)
        assert again.properties.enabled is False and again.key.n == first.key.n
        with pytest.raises(ResourceExistsError):
            await client.restore_key_backup(blob)

    run_localhost(server, body)


def test_aio_rsa_crypto_every_algorithm(server: DevServer) -> None:
    async def body(client: KeyClient, credential: Any) -> None:
        key = await client.create_rsa_key(unique("aio"), size=2048)
        pub = public_key(key.key)
        async with crypto(key, credential) as cc:
            for alg in RSA_ENCRYPT:
                # local encrypt (SDK), remote decrypt; remote encrypt, remote decrypt
                ct = (await cc.encrypt(EncryptionAlgorithm(alg), b"aio plaintext")).ciphertext
                assert (await cc.decrypt(EncryptionAlgorithm(alg), ct)).plaintext == \
                    b"aio plaintext"
                ct = (await operate(client, key, "encrypt", alg, b"remote")).value()
                assert (await cc.decrypt(EncryptionAlgorithm(alg), ct)).plaintext == b"remote"
                ct = local_encrypt(pub, alg, b"from cryptography")
                assert (await cc.decrypt(EncryptionAlgorithm(alg), ct)).plaintext == \
                    b"from cryptography"
                cek = os.urandom(32)
                wrapped = (await cc.wrap_key(KeyWrapAlgorithm(alg), cek)).encrypted_key
                assert (await cc.unwrap_key(KeyWrapAlgorithm(alg), wrapped)).key == cek
                wrapped = (await operate(client, key, "wrapkey", alg, cek)).value()
                assert (await cc.unwrap_key(KeyWrapAlgorithm(alg), wrapped)).key == cek
            for alg in RSA_SIGN:
                dg = digest(alg, b"aio signed")
                sig = (await cc.sign(SignatureAlgorithm(alg), dg)).signature
                assert local_verify(pub, alg, dg, sig)
                assert (await cc.verify(SignatureAlgorithm(alg), dg, sig)).is_valid
                reply = await operate(client, key, "verify", alg, sig, digest=dg)
                assert reply.body == {"value": True}
                bad = bytes([sig[0] ^ 1]) + sig[1:]
                reply = await operate(client, key, "verify", alg, bad, digest=dg)
                assert reply.body == {"value": False}

    run_localhost(server, body)


def test_aio_ec_and_imported_keys(server: DevServer) -> None:
    async def body(client: KeyClient, credential: Any) -> None:
        for crv, (curve, size, alg) in CURVES.items():
            key = await client.create_ec_key(unique("aio"), curve=crv)
            assert key.key.crv == crv and len(key.key.x) == size == len(key.key.y)
            async with crypto(key, credential) as cc:
                dg = digest(alg, crv.encode())
                sig = (await cc.sign(SignatureAlgorithm(alg), dg)).signature
                assert len(sig) == 2 * size
                assert local_verify(public_key(key.key), alg, dg, sig)
                assert (await cc.verify(SignatureAlgorithm(alg), dg, sig)).is_valid

            private = ec.generate_private_key(curve())
            imported = await client.import_key(unique("aio"), sdk_jwk(private))
            assert imported.key.d is None
            dg = digest(alg, b"local signature")
            mine = local_sign(private, alg, dg)
            reply = await operate(client, imported, "verify", alg, mine, digest=dg)
            assert reply.body == {"value": True}
        private_rsa = rsa.generate_private_key(65537, 2048)
        imported = await client.import_key(unique("aio"), sdk_jwk(private_rsa, crt=False))
        assert imported.key.n == uint(private_rsa.public_key().public_numbers().n)
        async with crypto(imported, credential) as cc:
            dg = digest("RS512", b"deterministic")
            assert (await cc.sign(SignatureAlgorithm("RS512"), dg)).signature == \
                local_sign(private_rsa, "RS512", dg)

    run_localhost(server, body)


def test_aio_refusals(server: DevServer) -> None:
    async def body(client: KeyClient, credential: Any) -> None:
        signer = await client.create_ec_key(unique("aio"), curve="P-256",
                                            key_operations=["verify"])
        async with crypto(signer, credential) as cc:
            with pytest.raises(HttpResponseError) as e:
                await cc.sign(SignatureAlgorithm.es256, b"\x00" * 32)
            err = e.value.response.json()["error"]
            assert (e.value.status_code, err["code"], err["innererror"]["code"]) == (
                403, "Forbidden", "KeyOperationForbidden")
        p256 = await client.create_ec_key(unique("aio"), curve="P-256")
        async with crypto(p256, credential) as cc:
            with pytest.raises(HttpResponseError) as e:
                await cc.sign(SignatureAlgorithm.es384, b"\x00" * 48)
            assert e.value.status_code == 400 and e.value.error.code == "BadParameter"
        reply = await operate(client, signer, "encrypt", "RSA-OAEP", b"x")
        assert (reply.status, reply.code) == (400, "BadParameter")
        with pytest.raises(HttpResponseError) as e:
            await client.create_rsa_key(unique("aio"), size=2048, hardware_protected=True)
        assert e.value.status_code == 403
        with pytest.raises(HttpResponseError) as e:
            await client.create_rsa_key(unique("aio"), size=1024)
        assert e.value.status_code == 400
        with pytest.raises(HttpResponseError) as e:
            await client.get_random_bytes(129)
        assert e.value.status_code == 400
        assert len(await client.get_random_bytes(128)) == 128
        assert (await rest(client, "POST", "/rng", {"count": 0})).status == 400
        assert (await client.get_key(signer.name)).properties.version == \
            signer.properties.version

    run_localhost(server, body)


def test_aio_rotation(server: DevServer) -> None:
    async def body(client: KeyClient, credential: Any) -> None:
        name = unique("aio")
        first = await client.create_ec_key(name, curve="P-384", key_operations=["sign", "verify"])
        default = await client.get_key_rotation_policy(name)
        assert default.id is None
        assert [(a.action, a.time_before_expiry) for a in default.lifetime_actions] == [
            ("Notify", "P30D")]
        policy = await client.update_key_rotation_policy(name, KeyRotationPolicy(
            lifetime_actions=[KeyRotationLifetimeAction("Rotate", time_after_create="P60D")],
            expires_in="P1Y"))
        assert policy.id == f"{server.url}/keys/{name}/rotationpolicy"
        assert {(a.action, a.time_after_create, a.time_before_expiry)
                for a in policy.lifetime_actions} == {("Rotate", "P60D", None),
                                                      ("Notify", None, "P30D")}
        rotated = await client.rotate_key(name)
        assert rotated.properties.version != first.properties.version
        assert rotated.key.crv == "P-384" and rotated.key_operations == ["sign", "verify"]
        assert (rotated.properties.expires_on - rotated.properties.created_on).days == 365
        async with crypto(first, credential) as cc:  # the old version still works
            dg = digest("ES384", b"old version")
            sig = (await cc.sign(SignatureAlgorithm.es384, dg)).signature
            assert local_verify(public_key(first.key), "ES384", dg, sig)

    run_localhost(server, body)


def test_aio_default_credential_on_the_vault_host(server: DevServer,
                                                  resolve_localhost: None) -> None:
    async def main() -> None:
        url = server.vault_url()
        async with DefaultAzureCredential() as credential, KeyClient(url, credential) as client:
            key = await client.create_rsa_key(unique("aio"), size=2048)
            assert key.id.startswith(f"{url}/keys/")
            async with CryptographyClient(key.id, credential) as cc:  # GETs the key first
                ct = (await cc.encrypt(EncryptionAlgorithm.rsa_oaep_256, b"dac")).ciphertext
                assert (await cc.decrypt(EncryptionAlgorithm.rsa_oaep_256, ct)).plaintext == \
                    b"dac"
                dg = digest("PS512", b"dac")
                sig = (await cc.sign(SignatureAlgorithm.ps512, dg)).signature
                assert local_verify(public_key(key.key), "PS512", dg, sig)

    asyncio.run(main())
