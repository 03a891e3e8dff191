"""AES-GCM, AES-CBC (PKCS#7 padding) and AES key wrap vectors through the real key API of
a managed HSM pool, whose oct-HSM keys live in the dev server's PKCS#11 token.

Each vector's key is imported (PUT /keys/{name}, kty oct-HSM, once per session):

- AES-GCM, decrypt (an encryption's iv is the HSM's to make, so encrypt cannot meet a
  vector): a 12-byte iv and a 16-byte tag, as the API takes them; valid → the vector's
  `msg`, invalid → 400, every failure the same body. Other iv and tag sizes are skipped
  (the API refuses them; checked once).
- AES-CBC with PKCS#7 padding (A*CBCPAD): encrypt with the vector's iv → its `ct`;
  decrypt → its `msg`; an invalid ciphertext (a bad padding) → 400, every failure the
  same body (no padding oracle).
- AES key wrap (A*KW, RFC 3394): wrapkey → the vector's `ct`, unwrapkey → its `msg`; an
  invalid wrapped key → 400. Keys to wrap shorter than 16 bytes are refused by the API
  (Wycheproof calls the 8-byte one acceptable; pinned as refused).
- AES-KWP has no API operation of its own (it is the inner layer of a BYOK transfer
  blob): skipped with that reason.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.support.securitydomain import download_body
from tests.support.server import DevServer
from tests.vectors import tally
from tests.vectors.api import KeyApi, error, new_pool
from tests.vectors.loader import b64u, b64u_decode, groups, load

OPS = ["encrypt", "decrypt", "wrapKey", "unwrapKey"]
DECRYPT_FAILED = {"error": {"code": "BadParameter",
                            "message": "The ciphertext could not be decrypted with this key."}}
CRYPTO_USER = ("Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"
               "21dbd100-6940-42c2-9190-5d6cb909625b")
SIZES = {128, 192, 256}
# file → (run, skipped)
GCM = {"aes_gcm_test.json": (197, 119)}
CBC = {"aes_cbc_pkcs5_test.json": (216, 0)}
KW = {"aes_wrap_test.json": (165, 0)}
KWP = {"aes_kwp_test.json": "AES-KWP: the inner layer of a BYOK transfer blob, no API "
                            "operation of its own"}


@pytest.fixture(scope="session")
def pool_key_api(server: DevServer) -> Iterator[KeyApi]:
    """A managed HSM pool made through the management API, the dev identity its
    administrator and Managed HSM Crypto User at its `/`, activated; one keep-alive session
    to it."""
    name, oid = new_pool(server, "wyc")
    with requests.Session() as session:
        api = KeyApi(server, session, pool=name)
        r = api.call("PUT", f"/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
                     {"properties": {"scope": "/", "roleDefinitionId": CRYPTO_USER,
                                     "principalId": oid}})
        assert r.status_code in (200, 201), r.text
        # A new pool refuses key operations until its security domain is downloaded.
        r = api.call("POST", "/securitydomain/download", download_body())
        assert r.status_code == 202, r.text
        yield api
        tally.NOTES.append(f"API, managed HSM: {api.imports} oct keys imported into the "
                           f"token, {api.requests} requests")


def aes_key(api: KeyApi, key: bytes) -> str:
    return api.import_key({"kty": "oct-HSM", "k": b64u(key)}, OPS)


@pytest.mark.parametrize("name", GCM)
def test_aes_gcm_decrypt(pool_key_api: KeyApi, name: str) -> None:
    api = pool_key_api
    t = tally.start(name, "decrypt A*GCM (API, managed HSM)")
    failures: set[tuple[int, bytes]] = set()
    refused_sizes: set[int] = set()
    for group, vectors in groups(name):
        fits = group["keySize"] in SIZES and group["ivSize"] == 96 and group["tagSize"] == 128
        for v in vectors:
            if not fits:
                t.skip(v, "iv other than 12 bytes, tag other than 16, or key of another size: "
                          "the API takes none of them")
                continue
            key = aes_key(api, v.bytes("key"))
            body = {"alg": f"A{group['keySize']}GCM", "value": b64u(v.bytes("ct")),
                    "iv": b64u(v.bytes("iv")), "tag": b64u(v.bytes("tag")),
                    "aad": b64u(v.bytes("aad"))}
            r = api.op(key, "decrypt", body)
            if v.result == "valid":
                t.check(v, r.status_code == 200 and b64u_decode(r.json()["value"])
                        == v.bytes("msg"), f"{r.status_code} {r.text[:80]}")
                continue
            if r.status_code == 200:
                t.fail(v, "an invalid ciphertext decrypted")
                continue
            t.ran(v)
            failures.add(error(r))
        if not fits and group["keySize"] in SIZES and group["tests"]:
            v = vectors[0]
            key = aes_key(api, v.bytes("key"))
            r = api.op(key, "decrypt", {"alg": f"A{group['keySize']}GCM",
                                        "value": b64u(v.bytes("ct")), "iv": b64u(v.bytes("iv")),
                                        "tag": b64u(v.bytes("tag"))})
            if r.status_code == 400:
                refused_sizes.add(group["ivSize"] * 1000 + group["tagSize"])
            else:
                assert v.result != "valid" or r.status_code != 200, "an odd size was used"
    run, skipped = GCM[name]
    t.finish(run=run, skipped=skipped)
    assert len(failures) == 1, f"GCM decrypt failures are distinguishable: {failures}"
    ((status, content),) = failures
    assert status == 400 and json.loads(content) == DECRYPT_FAILED
    assert refused_sizes, "no iv or tag of another size was tried"


@pytest.mark.parametrize("name", CBC)
def test_aes_cbc_pad(pool_key_api: KeyApi, name: str) -> None:
    api = pool_key_api
    t = tally.start(name, "encrypt+decrypt A*CBCPAD (API, managed HSM)")
    failures: set[tuple[int, bytes]] = set()
    for group, vectors in groups(name):
        alg = f"A{group['keySize']}CBCPAD"
        for v in vectors:
            key = aes_key(api, v.bytes("key"))
            iv = b64u(v.bytes("iv"))
            dec = api.op(key, "decrypt", {"alg": alg, "value": b64u(v.bytes("ct")), "iv": iv})
            if v.result == "valid":
                enc = api.op(key, "encrypt", {"alg": alg, "value": b64u(v.bytes("msg")),
                                              "iv": iv})
                t.check(v, enc.status_code == 200 and dec.status_code == 200
                        and b64u_decode(enc.json()["value"]) == v.bytes("ct")
                        and b64u_decode(dec.json()["value"]) == v.bytes("msg"),
                        f"encrypt {enc.status_code}, decrypt {dec.status_code}")
                continue
            if dec.status_code == 200:
                t.fail(v, "an invalid ciphertext decrypted")
                continue
            t.ran(v)
            failures.add(error(dec))
    run, skipped = CBC[name]
    t.finish(run=run, skipped=skipped)
    assert len(failures) == 1, f"CBC decrypt failures are distinguishable: {failures}"


@pytest.mark.parametrize("name", KW)
def test_aes_key_wrap(pool_key_api: KeyApi, name: str) -> None:
    api = pool_key_api
    t = tally.start(name, "wrapKey+unwrapKey A*KW (API, managed HSM)")
    for group, vectors in groups(name):
        alg = f"A{group['keySize']}KW"
        for v in vectors:
            key = aes_key(api, v.bytes("key"))
            unwrap = api.op(key, "unwrapkey", {"alg": alg, "value": b64u(v.bytes("ct"))})
            msg = v.bytes("msg")
            if v.result == "valid":
                wrap = api.op(key, "wrapkey", {"alg": alg, "value": b64u(msg)})
                t.check(v, wrap.status_code == 200 and unwrap.status_code == 200
                        and b64u_decode(wrap.json()["value"]) == v.bytes("ct")
                        and b64u_decode(unwrap.json()["value"]) == msg,
                        f"wrapkey {wrap.status_code}, unwrapkey {unwrap.status_code}")
                continue
            if v.result == "acceptable":
                # An 8-byte key: refused both ways by the API.
                wrap = api.op(key, "wrapkey", {"alg": alg, "value": b64u(msg)})
                t.check(v, wrap.status_code == 400 and unwrap.status_code == 400,
                        f"wrapkey {wrap.status_code}, unwrapkey {unwrap.status_code}")
                t.pin(v, "refused (keys to wrap are 16 bytes or more)")
                continue
            t.check(v, unwrap.status_code == 400, f"unwrapkey {unwrap.status_code}")
    run, skipped = KW[name]
    t.finish(run=run, skipped=skipped)


@pytest.mark.parametrize("name", KWP)
def test_aes_kwp_has_no_operation(name: str) -> None:
    tally.skip_file(name, "AES-KWP", KWP[name])
    assert load(name)["algorithm"] == "AES-KWP"
    pytest.skip(f"{name}: {KWP[name]}")
