"""Bring-your-own-key into a Premium vault, through azure-keyvault-keys: a key-exchange
key (RSA-HSM, key_ops exactly ['import']), a .byok transfer blob built here with
`cryptography` alone (RSA-OAEP-SHA1 of a fresh AES-256 key, then AES key wrap with
padding of the PKCS#8 key), imported with `key_hsm` and unwrapped inside the token; the
imported key signs like the original. And every refusal: wrong KEK, a tampered blob, a
KEK with other operations, a key that is no KEK, a blob naming another vault."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import JsonWebKey, KeyClient, KeyVaultKey
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tests.sdk.clients import unique
from tests.sdk.keys_support import (
    digest,
    environment,
    local_verify,
    operate,
    public_key,
    remote_verify,
    uint,
    wire_key,
)
from tests.sdk.premium_support import key_client, premium_vault
from tests.support.server import DevServer
from tests.support.softhsm import token_objects

pytestmark = pytest.mark.usefixtures("module_env", "sdk_env", "resolve_localhost")

UNWRAP_FAILED = ("The key could not be imported: The wrapped key could not be unwrapped "
                 "with the key-exchange key")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@pytest.fixture(scope="module")
def module_env(server: DevServer) -> Iterator[dict[str, str]]:
    yield from environment(server)


@pytest.fixture(scope="module")
def vault(server: DevServer, module_env: dict[str, str]) -> str:
    return premium_vault(server, "byok")


@pytest.fixture
def kc(server: DevServer, vault: str) -> KeyClient:
    return key_client(server, vault)


@pytest.fixture
def kek(kc: KeyClient) -> KeyVaultKey:
    key = kc.create_rsa_key(unique("kek"), size=2048, hardware_protected=True,
                            key_operations=["import"])
    assert (key.key_type, key.key_operations) == ("RSA-HSM", ["import"])
    return key


def byok_file(kek: KeyVaultKey, target: PrivateKey, *, kid: str | None = None,
              enc: str = "CKM_RSA_AES_KEY_WRAP", wrap_to: rsa.RSAPublicKey | None = None,
              tamper: bool = False) -> bytes:
    """A .byok file as vendor tools write it, by `cryptography` alone."""
    aes = os.urandom(32)
    pkcs8 = target.private_bytes(serialization.Encoding.DER,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    kek_public = wrap_to or public_key(kek.key)
    assert isinstance(kek_public, rsa.RSAPublicKey)
    ciphertext = kek_public.encrypt(aes, oaep) + keywrap.aes_key_wrap_with_padding(aes, pkcs8)
    if tamper:
        ciphertext = ciphertext[:-9] + bytes([ciphertext[-9] ^ 1]) + ciphertext[-8:]
    return json.dumps({
        "schema_version": "1.0.0",
        "header": {"kid": kid or kek.id, "alg": "dir", "enc": enc},
        "ciphertext": base64.urlsafe_b64encode(ciphertext).rstrip(b"=").decode(),
        "generator": "tests; cryptography",
    }).encode()


def transfer(kty: str, blob: bytes, ops: list[str], crv: str | None = None) -> JsonWebKey:
    fields = {"kty": kty, "key_ops": ops, "t": blob, **({"crv": crv} if crv else {})}
    return JsonWebKey(**fields)


def refused(call: object) -> tuple[int, str, str]:
    with pytest.raises(HttpResponseError) as e:
        call()  # type: ignore[operator]
    err = e.value.response.json()["error"]
    return e.value.status_code, err["code"], err["message"]


def test_byok_of_rsa_and_ec_keys(kc: KeyClient, kek: KeyVaultKey, server: DevServer) -> None:
    before = {str(o["id"]) for o in token_objects(server.data_dir)}
    target = rsa.generate_private_key(65537, 3072)
    imported = kc.import_key(unique("byok"), transfer("RSA-HSM", byok_file(kek, target),
                                                      ["sign", "verify", "decrypt"]))
    assert imported.key_type == "RSA-HSM"
    assert imported.key.n == uint(target.public_key().public_numbers().n)
    assert imported.key_operations == ["sign", "verify", "decrypt"]
    dg = digest("PS256", b"brought")
    sig = operate(kc, imported, "sign", "PS256", dg).value()
    assert local_verify(target.public_key(), "PS256", dg, sig)
    ct = target.public_key().encrypt(b"for the hsm", padding.OAEP(
        mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    assert operate(kc, imported, "decrypt", "RSA-OAEP-256", ct).value() == b"for the hsm"
    for crv, curve, alg in (("P-256", ec.SECP256R1(), "ES256"),
                            ("P-521", ec.SECP521R1(), "ES512")):
        ec_target = ec.generate_private_key(curve)
        ec_key = kc.import_key(unique("byok"), transfer("EC-HSM", byok_file(kek, ec_target),
                                                        ["sign", "verify"], crv))
        assert (ec_key.key_type, ec_key.key.crv) == ("EC-HSM", crv)
        nums = ec_target.public_key().public_numbers()
        assert (ec_key.key.x, ec_key.key.y) == (uint(nums.x, len(ec_key.key.x)),
                                                uint(nums.y, len(ec_key.key.y)))
        dg = digest(alg, b"brought")
        sig = operate(kc, ec_key, "sign", alg, dg).value()
        assert local_verify(ec_target.public_key(), alg, dg, sig)
        assert remote_verify(kc, ec_key, alg, dg, sig)
    # three keys unwrapped into the token as sensitive, non-extractable objects
    new = [o for o in token_objects(server.data_dir)
           if str(o["id"]) not in before and o["class"] == "PRIVATE_KEY"]
    assert len(new) == 3
    assert all(o["SENSITIVE"] is True and o["EXTRACTABLE"] is False for o in new)


def test_a_kek_only_imports(kc: KeyClient, kek: KeyVaultKey) -> None:
    reply = operate(kc, kek, "sign", "RS256", digest("RS256", b"x"))
    assert (reply.status, reply.body["error"]["code"]) == (403, "Forbidden")
    assert refused(lambda: kc.create_rsa_key(
        unique("kek"), size=2048, hardware_protected=True,
        key_operations=["import", "sign"]))[:2] == (400, "BadParameter")
    status, _, message = refused(lambda: kc.create_rsa_key(
        unique("kek"), size=2048, key_operations=["import"]))
    assert status == 400 and "RSA-HSM" in message
    assert refused(lambda: kc.create_ec_key(
        unique("kek"), curve="P-256", hardware_protected=True,
        key_operations=["import"]))[0] == 400
    assert refused(lambda: kc.update_key_properties(
        kek.name, key_operations=["sign", "verify"]))[0] == 400
    assert kc.get_key(kek.name).key_operations == ["import"]


def test_byok_refusals(kc: KeyClient, kek: KeyVaultKey, server: DevServer,
                       vault: str) -> None:
    target = rsa.generate_private_key(65537, 2048)
    before = {str(o["id"]) for o in token_objects(server.data_dir)}
    other_kek = rsa.generate_private_key(65537, 2048).public_key()
    plain = kc.create_rsa_key(unique("nokek"), size=2048, hardware_protected=True)
    cases = {
        "wrapped to another key": byok_file(kek, target, wrap_to=other_kek),
        "tampered": byok_file(kek, target, tamper=True),
        "an EC key said to be RSA": byok_file(kek, ec.generate_private_key(ec.SECP256R1())),
    }
    for what, blob in cases.items():
        status, code, message = refused(
            lambda blob=blob: kc.import_key(unique("bad"), transfer("RSA-HSM", blob, ["sign"])))
        assert (status, code) == (400, "BadParameter"), what
        assert message.startswith(UNWRAP_FAILED), (what, message)
    named = {
        "a key that is no KEK": (byok_file(kek, target, kid=plain.id), "exactly ['import']"),
        "an unknown key": (byok_file(kek, target, kid=kek.id.rsplit("/", 1)[0] + "/" + "0" * 32),
                           "is not a key of this vault"),
        "another vault's key": (byok_file(kek, target, kid=kek.id.replace(
            f"//{vault}.", "//elsewhere.")), "of the vault the key is imported into"),
        "no version": (byok_file(kek, target, kid=kek.id.rsplit("/", 1)[0]), "with its version"),
        "another wrapping": (byok_file(kek, target, enc="RSA_AES_KEY_WRAP_256"), "header enc"),
        "not a blob": (b"not json", "does not hold a transfer blob"),
    }
    for what, (blob, says) in named.items():
        status, code, message = refused(
            lambda blob=blob: kc.import_key(unique("bad"), transfer("RSA-HSM", blob, ["sign"])))
        assert (status, code) == (400, "BadParameter"), what
        assert says in message, (what, message)
    # a software key type cannot take a transfer blob
    status, _, message = refused(lambda: kc.import_key(
        unique("bad"), transfer("RSA", byok_file(kek, target), ["sign"])))
    assert status == 400 and "RSA-HSM or EC-HSM" in message
    # nothing was left in the token by the refused imports (the plain key's objects only)
    after = {str(o["id"]) for o in token_objects(server.data_dir)}
    assert len(after - before) == 1


def test_okv_byok_makes_a_blob_the_vault_imports(kc: KeyClient, kek: KeyVaultKey,
                                                 tmp_path: Path) -> None:
    """`okv byok` from a PEM key and the KEK's JSON (its kid read from it) or its PEM
    public key (--kek-id); the vault imports both."""
    from tests.support.okvcli import run

    kek_json = tmp_path / "kek.json"
    kek_json.write_text(json.dumps(wire_key(kc, kek.name)))
    kek_pem = tmp_path / "kek.pem"
    kek_pem.write_bytes(public_key(kek.key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    rsa_target = rsa.generate_private_key(65537, 2048)
    ec_target = ec.generate_private_key(ec.SECP384R1())
    for target, kty, crv, args in (
            (rsa_target, "RSA-HSM", None, ["--kek", str(kek_json)]),
            (ec_target, "EC-HSM", "P-384", ["--kek", str(kek_pem), "--kek-id", kek.id])):
        key_file = tmp_path / f"{kty}.pem"
        key_file.write_bytes(target.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))
        out = tmp_path / f"{kty}.byok"
        done = run("byok", "--key", str(key_file), *args, "--output", str(out))
        assert done.returncode == 0, done.stderr
        assert f"--kty {kty}" in done.stdout
        doc = json.loads(out.read_text())
        assert doc["header"] == {"kid": kek.id, "alg": "dir", "enc": "CKM_RSA_AES_KEY_WRAP"}
        imported = kc.import_key(unique("cli"), transfer(kty, out.read_bytes(),
                                                         ["sign", "verify"], crv))
        alg = "RS256" if kty == "RSA-HSM" else "ES384"
        dg = digest(alg, b"from okv byok")
        sig = operate(kc, imported, "sign", alg, dg).value()
        assert local_verify(target.public_key(), alg, dg, sig)
    # refusals: no key id, a file that is no key, a KEK that is no RSA key
    key_file = tmp_path / "RSA-HSM.pem"
    no_kid = run("byok", "--key", str(key_file), "--kek", str(kek_pem), "-o",
                 str(tmp_path / "x.byok"))
    assert no_kid.returncode == 2 and "--kek-id" in no_kid.stderr
    bad_key = run("byok", "--key", str(kek_json), "--kek", str(kek_json), "-o",
                  str(tmp_path / "x.byok"))
    assert bad_key.returncode == 2 and "no private key" in bad_key.stderr
    ec_pub = tmp_path / "ec.pem"
    ec_pub.write_bytes(ec_target.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    bad_kek = run("byok", "--key", str(key_file), "--kek", str(ec_pub), "--kek-id", kek.id,
                  "-o", str(tmp_path / "x.byok"))
    assert bad_kek.returncode == 2 and "RSA public key" in bad_kek.stderr
    assert not (tmp_path / "x.byok").exists()
