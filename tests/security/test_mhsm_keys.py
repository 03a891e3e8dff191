"""A managed HSM pool's keys through azure-keyvault-keys at the pool's own host
(`NAME.managedhsm.localhost:PORT`, challenge-resource verification on): RSA-HSM and
EC-HSM keys made in the HSM, their operations checked with `cryptography`, random bytes,
backup and restore, delete, recover and purge; decided by the pool's local RBAC alone:
Managed HSM Crypto User may use keys but not purge them, Crypto Officer purges, the
pool's administrator and a deployment-wide Key Vault Administrator hold no key
permission, and a principal with no role is refused, each refusal changing nothing.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.identity import ManagedIdentityCredential
from azure.keyvault.keys import JsonWebKey, KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from cryptography.hazmat.primitives import hashes, keywrap, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openkeyvault.deployment import Deployment
from tests.sdk.keys_support import b64u, b64u_decode, digest, local_verify, public_key
from tests.security.test_mhsm_rbac import client, make_pool, new_principal, refused
from tests.support.securitydomain import activate
from tests.support.server import DevServer
from tests.support.softhsm import token_objects

pytestmark = pytest.mark.usefixtures("sdk_env", "resolve_localhost")

CRYPTO_USER = "21dbd100-6940-42c2-9190-5d6cb909625b"
CRYPTO_OFFICER = "515eb02d-2335-4d2d-92f2-b1cbdf9c3778"
DEFINITION = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"


@pytest.fixture
def pool(server: DevServer, deployment: Deployment, sdk_env: dict[str, str]) -> str:
    """A new pool whose initial administrator is the dev identity, which is also given
    Managed HSM Crypto User at the pool's `/`; activated (its security domain
    downloaded)."""
    url = make_pool(server, deployment, deployment.dev_principal.object_id)
    client(url).create_role_assignment("/", DEFINITION + CRYPTO_USER,
                                       deployment.dev_principal.object_id)
    activate(url)  # a new pool refuses key operations until activated
    return url


def keys(url: str, credential: Any = None) -> KeyClient:
    return KeyClient(url, credential or ManagedIdentityCredential())


def names(kc: KeyClient) -> set[str]:
    return {p.name for p in kc.list_properties_of_keys()}


def test_keys_are_made_and_used_in_the_hsm(server: DevServer, pool: str) -> None:
    kc = keys(pool)
    host = pool.rstrip("/")
    made = {}
    for name, make in ((f"r{uuid.uuid4().hex[:8]}",
                        lambda n: kc.create_rsa_key(n, size=3072, hardware_protected=True)),
                       (f"e{uuid.uuid4().hex[:8]}",
                        lambda n: kc.create_ec_key(n, curve="P-384", hardware_protected=True))):
        key = make(name)
        assert key.id.startswith(f"{host}/keys/{name}/")
        made[name] = key
    ids = {str(o["id"]) for o in token_objects(server.data_dir)
           if o["class"] == "PRIVATE_KEY"}
    for name, key in made.items():
        assert key.key_type in ("RSA-HSM", "EC-HSM")
        handle = kc.get_key(name).id
        assert handle == key.id
        alg = SignatureAlgorithm.rs256 if key.key_type == "RSA-HSM" else SignatureAlgorithm.es384
        dg = digest(str(alg.value), b"pool")
        signed = CryptographyClient(key, ManagedIdentityCredential()).sign(alg, dg)
        assert local_verify(public_key(key.key), str(alg.value), dg, signed.signature)
    assert set(made) <= names(kc)
    assert len(ids) >= 2
    assert len(kc.get_random_bytes(32)) == 32


def test_pool_key_types(pool: str) -> None:
    kc = keys(pool)
    for call in (lambda: kc.create_rsa_key(f"s{uuid.uuid4().hex[:8]}", size=2048),
                 lambda: kc.create_ec_key(f"s{uuid.uuid4().hex[:8]}", curve="P-256")):
        e = refused(call, 400, "BadParameter")
        assert "not supported by a managedhsm vault" in str(e.message)


def test_backup_restore_delete_recover_purge(server: DevServer, deployment: Deployment,
                                             pool: str) -> None:
    kc = keys(pool)
    name = f"b{uuid.uuid4().hex[:8]}"
    key = kc.create_ec_key(name, curve="P-256", hardware_protected=True)
    blob = kc.backup_key(name)
    kc.begin_delete_key(name).wait()
    assert name not in names(kc)
    # Crypto User may not read deleted keys nor purge them: Crypto Officer's.
    refused(lambda: kc.get_deleted_key(name), 403, "Forbidden")
    refused(lambda: kc.purge_deleted_key(name), 403, "Forbidden")
    client(pool).create_role_assignment("/keys", DEFINITION + CRYPTO_OFFICER,
                                        deployment.dev_principal.object_id)
    assert kc.get_deleted_key(name).id == key.id
    kc.begin_recover_deleted_key(name).wait()
    assert kc.get_key(name).key.x == key.key.x
    kc.begin_delete_key(name).wait()
    kc.purge_deleted_key(name)
    with pytest.raises(ResourceNotFoundError):
        kc.get_key(name)
    restored = kc.restore_key_backup(blob)
    assert restored.id == key.id and restored.key.x == key.key.x


def test_who_may_use_a_pools_keys(server: DevServer, deployment: Deployment,
                                  pool: str) -> None:
    kc = keys(pool)
    name = f"w{uuid.uuid4().hex[:8]}"
    kc.create_rsa_key(name, size=2048, hardware_protected=True)
    before = names(kc)
    nobody, credential = new_principal(server)
    other = keys(pool, credential)
    for call in (lambda: other.get_key(name), lambda: other.list_properties_of_keys().next(),
                 lambda: other.create_rsa_key(f"x{uuid.uuid4().hex[:6]}", size=2048,
                                              hardware_protected=True),
                 lambda: other.get_random_bytes(8)):
        e = refused(call, 403, "Forbidden")
        assert e.response is not None
    # The pool's administrator role alone holds no key permission (as on Azure).
    admin, admin_credential = new_principal(server)
    client(pool).create_role_assignment("/", DEFINITION + "a290e904-7015-4bba-90c8-"
                                        "60543313cdb4", admin)
    refused(lambda: keys(pool, admin_credential).get_key(name), 403, "Forbidden")
    # A deployment-wide Key Vault Administrator does not reach a pool.
    done = server.okv("role", "assign", "--principal", nobody, "--role",
                      "Key Vault Administrator", "--scope", "/")
    assert done.returncode == 0, done.stderr
    refused(lambda: other.get_key(name), 403, "Forbidden")
    # Crypto User on this one key: it, and nothing else; revoked, refused again at once.
    given = client(pool).create_role_assignment(f"/keys/{name}", DEFINITION + CRYPTO_USER,
                                                nobody)
    assert other.get_key(name).name == name
    refused(lambda: other.create_rsa_key(f"y{uuid.uuid4().hex[:6]}", size=2048,
                                         hardware_protected=True), 403, "Forbidden")
    client(pool).delete_role_assignment(f"/keys/{name}", given.name)
    refused(lambda: other.get_key(name), 403, "Forbidden")
    assert names(kc) == before


def op_all(kc: KeyClient, kid: str, operation: str, body: dict[str, Any]) -> dict[str, Any]:
    """A key operation through the client's own pipeline; the answer."""
    path = "/" + kid.split("/", 3)[3]
    response = kc.send_request(HttpRequest("POST", f"{path}/{operation}", json=body))
    assert response.status_code == 200, response.text()
    answer: dict[str, Any] = response.json()
    return answer


def op(kc: KeyClient, kid: str, operation: str, body: dict[str, Any]) -> str:
    """A key operation's value."""
    return str(op_all(kc, kid, operation, body)["value"])


def test_a_vault_host_does_not_serve_a_pools_keys(server: DevServer, pool: str) -> None:
    name = pool.split("//")[1].split(".")[0]
    with pytest.raises(HttpResponseError) as e:
        keys(f"https://{name}.vault.localhost:{server.port}").get_key("anything")
    assert e.value.status_code in (401, 404)


def test_oct_hsm_keys(server: DevServer, pool: str) -> None:
    """AES keys made in the HSM, every algorithm through the REST API (the SDK's
    CryptographyClient does AES locally, with a key of its own making, when the key has
    no `k`, as a Managed HSM never gives one), and an imported key of known bytes
    cross-checked with `cryptography`."""
    kc = keys(pool)
    for size in (128, 192, 256):
        key = kc.create_oct_key(f"o{size}{uuid.uuid4().hex[:6]}", size=size,
                                hardware_protected=True)
        assert key.key_type == "oct-HSM" and key.key.k is None
        assert kc.get_key(key.name).properties.version == key.properties.version
        gcm = op_all(kc, key.id, "encrypt", {"alg": f"A{size}GCM", "value": b64u(b"hsm"),
                                             "aad": b64u(b"aad")})
        assert len(b64u_decode(gcm["iv"])) == 12 and len(b64u_decode(gcm["tag"])) == 16
        assert gcm["aad"] == b64u(b"aad")
        assert op(kc, key.id, "decrypt", {"alg": f"A{size}GCM", "value": gcm["value"],
                                          "iv": gcm["iv"], "tag": gcm["tag"],
                                          "aad": gcm["aad"]}) == b64u(b"hsm")
        iv = b64u(bytes(range(16)))
        cbc = op(kc, key.id, "encrypt", {"alg": f"A{size}CBCPAD", "value": b64u(b"x" * 21),
                                         "iv": iv})
        assert op(kc, key.id, "decrypt", {"alg": f"A{size}CBCPAD", "value": cbc,
                                          "iv": iv}) == b64u(b"x" * 21)
        wrapped = op(kc, key.id, "wrapkey", {"alg": f"A{size}KW", "value": b64u(bytes(32))})
        assert op(kc, key.id, "unwrapkey", {"alg": f"A{size}KW", "value": wrapped}) == \
            b64u(bytes(32))
    # A known key imported into the HSM: its results are those of `cryptography`.
    k = bytes(range(32))
    imported = kc.import_key(f"oi{uuid.uuid4().hex[:6]}", JsonWebKey(
        kty="oct-HSM", k=k, key_ops=["encrypt", "decrypt", "wrapKey", "unwrapKey"]))
    assert imported.key.k is None
    gcm = op_all(kc, imported.id, "encrypt", {"alg": "A256GCM", "value": b64u(b"known"),
                                              "aad": b64u(b"a")})
    assert AESGCM(k).decrypt(b64u_decode(gcm["iv"]), b64u_decode(gcm["value"])
                             + b64u_decode(gcm["tag"]), b"a") == b"known"
    iv = bytes(16)
    padder = padding.PKCS7(128).padder()
    plain = padder.update(b"known") + padder.finalize()
    encryptor = Cipher(algorithms.AES(k), modes.CBC(iv)).encryptor()
    assert op(kc, imported.id, "encrypt", {"alg": "A256CBCPAD", "value": b64u(b"known"),
                                           "iv": b64u(iv)}) == \
        b64u(encryptor.update(plain) + encryptor.finalize())
    assert op(kc, imported.id, "wrapkey", {"alg": "A256KW", "value": b64u(bytes(16))}) == \
        b64u(keywrap.aes_key_wrap(k, bytes(16)))
    # A tampered tag: the one decryption error. A GCM iv is the HSM's to make.
    for body, message in (
            ({"alg": "A256GCM", "value": gcm["value"], "iv": gcm["iv"],
              "tag": b64u(bytes(16)), "aad": b64u(b"a")}, "could not be decrypted"),
            ({"alg": "A256GCM", "value": b64u(b"x"), "iv": b64u(bytes(12))}, "takes no iv")):
        operation = "decrypt" if "tag" in body else "encrypt"
        path = "/" + imported.id.split("/", 3)[3]
        response = kc.send_request(HttpRequest("POST", f"{path}/{operation}", json=body))
        assert response.status_code == 400, response.text()
        assert message in response.json()["error"]["message"]


def test_byok_of_an_aes_key(pool: str) -> None:
    """An AES key brought in a .byok transfer blob made with `cryptography` alone (RSA-OAEP
    SHA-1 of an ephemeral AES key, then AES key wrap with padding of the key's bytes),
    unwrapped inside the HSM; it encrypts as the key it was made from."""
    kc = keys(pool)
    kek = kc.create_rsa_key(f"kek{uuid.uuid4().hex[:6]}", size=2048, hardware_protected=True,
                            key_operations=["import"])
    target = os.urandom(32)
    ephemeral = os.urandom(32)
    kek_public = public_key(kek.key)
    assert isinstance(kek_public, rsa.RSAPublicKey)
    sha1 = hashes.SHA1()  # noqa: S303 - the wrapping CKM_RSA_AES_KEY_WRAP specifies
    ciphertext = kek_public.encrypt(ephemeral, asym_padding.OAEP(
        mgf=asym_padding.MGF1(sha1), algorithm=sha1, label=None)) + \
        keywrap.aes_key_wrap_with_padding(ephemeral, target)
    blob = json.dumps({"schema_version": "1.0.0",
                       "header": {"kid": kek.id, "alg": "dir", "enc": "CKM_RSA_AES_KEY_WRAP"},
                       "ciphertext": b64u(ciphertext), "generator": "tests"}).encode()
    name = f"ob{uuid.uuid4().hex[:6]}"
    brought = kc.import_key(name, JsonWebKey(kty="oct-HSM", t=blob,
                                             key_ops=["encrypt", "decrypt"]))
    assert brought.key_type == "oct-HSM" and brought.key.k is None
    gcm = op_all(kc, brought.id, "encrypt", {"alg": "A256GCM", "value": b64u(b"byok")})
    assert AESGCM(target).decrypt(b64u_decode(gcm["iv"]), b64u_decode(gcm["value"])
                                  + b64u_decode(gcm["tag"]), None) == b"byok"
    # Tampered: refused, nothing made.
    bad = ciphertext[:-9] + bytes([ciphertext[-9] ^ 1]) + ciphertext[-8:]
    tampered = blob.replace(b64u(ciphertext).encode(), b64u(bad).encode())
    with pytest.raises(HttpResponseError) as e:
        kc.import_key(f"ox{uuid.uuid4().hex[:6]}", JsonWebKey(kty="oct-HSM", t=tampered))
    assert e.value.status_code == 400
