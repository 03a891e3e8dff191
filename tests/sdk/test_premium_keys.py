"""HSM-protected keys in a Premium vault, through azure-keyvault-keys: RSA-HSM and EC-HSM
keys made in the dev server's SoftHSM2 token and used there, every key size and curve,
every algorithm of every operation checked with `cryptography` outside the service;
import into the HSM, rotation, purge (checked in the token itself) and the refusals.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient, KeyVaultKey
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.sdk.clients import unique
from tests.sdk.keys_support import (
    CURVES,
    RSA_ENCRYPT,
    RSA_SIGN,
    b64u,
    digest,
    environment,
    local_encrypt,
    local_sign,
    local_verify,
    max_plaintext,
    operate,
    private_jwk,
    public_key,
    remote_verify,
    sdk_jwk,
    uint,
)
from tests.sdk.premium_support import key_client, premium_vault
from tests.support.server import DevServer
from tests.support.softhsm import token_objects

pytestmark = pytest.mark.usefixtures("module_env", "sdk_env", "resolve_localhost")

EC_SIGN = {crv: alg for crv, (_, _, alg) in CURVES.items()}


@pytest.fixture(scope="module")
def module_env(server: DevServer) -> Iterator[dict[str, str]]:
    yield from environment(server)


@pytest.fixture(scope="module")
def premium(server: DevServer, module_env: dict[str, str]) -> str:
    return premium_vault(server, "prem")


@pytest.fixture
def kc(server: DevServer, premium: str) -> KeyClient:
    return key_client(server, premium)


def refused(exc: pytest.ExceptionInfo[HttpResponseError]) -> tuple[int, str, str]:
    err = exc.value.response.json()["error"]
    return exc.value.status_code, err["code"], err["message"]


def private_ids(server: DevServer) -> dict[str, dict[str, object]]:
    return {str(o["id"]): o for o in token_objects(server.data_dir)
            if o["class"] == "PRIVATE_KEY"}


def check_signatures(kc: KeyClient, key: KeyVaultKey, algs: tuple[str, ...]) -> None:
    """Each algorithm signed in the HSM, verified outside with the public JWK and by the
    service; a tampered signature fails both."""
    pub = public_key(key.key)
    for alg in algs:
        dg = digest(alg, f"premium {alg}".encode())
        reply = operate(kc, key, "sign", alg, dg)
        assert reply.status == 200, (alg, reply.body)
        sig = reply.value()
        assert local_verify(pub, alg, dg, sig), alg
        assert remote_verify(kc, key, alg, dg, sig) is True, alg
        bad = bytes([sig[0] ^ 1]) + sig[1:]
        assert not local_verify(pub, alg, dg, bad)
        assert remote_verify(kc, key, alg, dg, bad) is False, alg


def check_rsa_encryption(kc: KeyClient, key: KeyVaultKey) -> None:
    """Encrypted outside, decrypted in the HSM; wrapped and unwrapped by the service."""
    pub = public_key(key.key)
    for alg in RSA_ENCRYPT:
        plain = os.urandom(max_plaintext(pub, alg))
        reply = operate(kc, key, "decrypt", alg, local_encrypt(pub, alg, plain))
        assert reply.status == 200, (alg, reply.body)
        assert reply.value() == plain, alg
        cek = os.urandom(32)
        wrapped = operate(kc, key, "wrapkey", alg, cek)
        assert wrapped.status == 200, wrapped.body
        assert operate(kc, key, "unwrapkey", alg, wrapped.value()).value() == cek, alg
        sealed = operate(kc, key, "encrypt", alg, b"round trip")
        assert operate(kc, key, "decrypt", alg, sealed.value()).value() == b"round trip"
    # a ciphertext that does not decrypt: the one undistinguishable refusal
    junk = operate(kc, key, "decrypt", "RSA-OAEP-256", os.urandom(len(key.key.n)))
    assert (junk.status, junk.body["error"]["code"]) == (400, "BadParameter")
    assert junk.body["error"]["message"] == \
        "The ciphertext could not be decrypted with this key."


@pytest.mark.parametrize("size", [2048, 3072, 4096])
def test_rsa_hsm_keys_every_size_and_algorithm(kc: KeyClient, size: int) -> None:
    key = kc.create_rsa_key(unique("rh"), size=size, hardware_protected=True)
    assert key.key_type == "RSA-HSM"
    assert len(key.key.n) * 8 == size and int.from_bytes(key.key.e, "big") == 65537
    assert key.key.d is None and key.key.p is None
    check_signatures(kc, key, RSA_SIGN)
    check_rsa_encryption(kc, key)


@pytest.mark.parametrize("curve", list(EC_SIGN))
def test_ec_hsm_keys_every_curve(kc: KeyClient, curve: str) -> None:
    key = kc.create_ec_key(unique("eh"), curve=curve, hardware_protected=True)
    assert (key.key_type, key.key.crv) == ("EC-HSM", curve)
    assert len(key.key.x) == CURVES[curve][1] and key.key.d is None
    check_signatures(kc, key, (EC_SIGN[curve],))
    # an algorithm of another curve is refused with the software keys' message
    other = "ES384" if curve != "P-384" else "ES256"
    reply = operate(kc, key, "sign", other, digest(other, b"x"))
    assert reply.status == 400 and "needs a" in reply.body["error"]["message"]


def test_kty_names_and_software_keys_beside_them(kc: KeyClient) -> None:
    rsa_key = kc.create_key(unique("kt"), "RSA-HSM")
    ec_key = kc.create_key(unique("kt"), "EC-HSM", curve="P-384")
    plain = kc.create_rsa_key(unique("kt"), size=2048)
    assert (rsa_key.key_type, ec_key.key_type, plain.key_type) == ("RSA-HSM", "EC-HSM", "RSA")
    assert len(rsa_key.key.n) == 256  # the default size
    check_signatures(kc, rsa_key, ("PS256",))
    check_signatures(kc, ec_key, ("ES384",))
    check_signatures(kc, plain, ("RS256",))


def test_import_into_the_hsm(kc: KeyClient, server: DevServer) -> None:
    """A key imported with hardware_protected=True lives in the token: it signs like the
    original, and its private value is nowhere in the database or the server's log."""
    before = set(private_ids(server))
    rsa_private = rsa.generate_private_key(65537, 2048)
    ec_private = ec.generate_private_key(ec.SECP256K1())
    rsa_key = kc.import_key(unique("ih"), sdk_jwk(rsa_private), hardware_protected=True)
    ec_key = kc.import_key(unique("ih"), sdk_jwk(ec_private), hardware_protected=True)
    assert (rsa_key.key_type, ec_key.key_type) == ("RSA-HSM", "EC-HSM")
    assert rsa_key.key.n == uint(rsa_private.public_key().public_numbers().n)
    check_signatures(kc, rsa_key, ("RS384", "PS512"))
    check_signatures(kc, ec_key, ("ES256K",))
    # the service's signature verifies with the original key, and the original's with the
    # service
    dg = digest("RS256", b"imported")
    sig = operate(kc, rsa_key, "sign", "RS256", dg).value()
    assert local_verify(rsa_private.public_key(), "RS256", dg, sig)
    assert remote_verify(kc, ec_key, "ES256K", dg, local_sign(ec_private, "ES256K", dg))
    # two new token objects, sensitive and not extractable
    new = {k: v for k, v in private_ids(server).items() if k not in before}
    assert len(new) == 2
    assert all(o["SENSITIVE"] is True and o["EXTRACTABLE"] is False for o in new.values())
    # the private values are in no file of the data directory's database nor the log
    secrets = [uint(rsa_private.private_numbers().d), uint(rsa_private.private_numbers().p),
               uint(ec_private.private_numbers().private_value, 32)]
    forms = [f for s in secrets for f in (s, b64u(s).encode())]
    forms += [private_jwk(rsa_private)["d"].encode()]
    places = {p.name: p.read_bytes() for p in server.data_dir.glob("okv.db*")}
    places["the server's log"] = server.log().encode()
    for where, data in places.items():
        assert not any(form in data for form in forms), where


def test_token_objects_rotation_and_purge(kc: KeyClient, server: DevServer) -> None:
    """A generated key's private object is sensitive and not extractable; a rotation
    makes another; a purge destroys every version's objects in the token."""
    before = set(private_ids(server))
    name = unique("pg")
    first = kc.create_rsa_key(name, size=2048, hardware_protected=True)
    after_create = private_ids(server)
    made = set(after_create) - before
    assert len(made) == 1
    obj = after_create[made.pop()]
    # Made in the token (LOCAL), always sensitive; extractable only until its backup copy
    # was wrapped, in the token, by the deployment's backup key.
    assert (obj["SENSITIVE"], obj["EXTRACTABLE"], obj["ALWAYS_SENSITIVE"], obj["LOCAL"],
            obj["NEVER_EXTRACTABLE"], obj["TOKEN"], obj["PRIVATE"]) == (
                True, False, True, True, False, True, True)
    rotated = kc.rotate_key(name)
    assert rotated.key_type == "RSA-HSM" and rotated.key.n != first.key.n
    assert rotated.properties.version != first.properties.version
    check_signatures(kc, rotated, ("RS256",))
    check_signatures(kc, kc.get_key(name, first.properties.version), ("RS256",))
    ours = set(private_ids(server)) - before
    assert len(ours) == 2
    # deleted (soft): still in the token, the key can be recovered
    kc.begin_delete_key(name).wait()
    assert ours <= set(private_ids(server))
    kc.begin_recover_deleted_key(name).wait()
    check_signatures(kc, kc.get_key(name), ("RS256",))
    kc.begin_delete_key(name).wait()
    kc.purge_deleted_key(name)
    assert not ours & set(private_ids(server))


def test_refusals(kc: KeyClient) -> None:
    name = unique("rf")
    with pytest.raises(HttpResponseError) as e:
        kc.create_rsa_key(name, size=1024, hardware_protected=True)
    status, code, message = refused(e)
    assert (status, code) == (400, "BadParameter") and "2048" in message
    with pytest.raises(HttpResponseError) as e:
        kc.create_key(name, "EC-HSM", curve="P-192")
    assert refused(e)[:2] == (400, "BadParameter")
    with pytest.raises(HttpResponseError) as e:
        kc.create_oct_key(name, size=256, hardware_protected=True)
    assert refused(e)[:2] == (400, "BadParameter")
    key = kc.create_ec_key(name, curve="P-256", hardware_protected=True)
    reply = operate(kc, key, "sign", "ES256", b"short")
    assert reply.status == 400
    assert reply.body["error"]["message"] == \
        "Invalid digest length for ES256: 5 bytes given, 32 expected."
