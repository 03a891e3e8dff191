"""RSA-OAEP, RSA-OAEP-256 and RSA1_5 decryption vectors through the real key API.

Each group's `privateKeyJwk` is imported with PUT /keys/{name} (once per session)
and every `ct` is sent to POST .../decrypt (and, for OAEP, .../unwrapkey too).

OAEP: valid → the vector's `msg`; invalid → 400. Every failure, whatever the flag,
has the same status and body bytes (a distinguishable InvalidOaepPadding error is
Manger's attack). Vectors with a `label` are skipped: the Key Vault decrypt API has
no label parameter.

RSA1_5, pinned: we use implicit rejection (OpenSSL ≥ 3.2 through pyca). A ciphertext
of the right length with bad padding (InvalidPkcs1Padding) decrypts to a deterministic
pseudo-random plaintext: 200, never the vector's `msg`, the same bytes when repeated.
A ciphertext of the wrong length, or c ≥ n (InvalidCiphertextFormat), is a 400 whose
body is the same for all of them. From outside, every InvalidPkcs1Padding case looks
like every other: 200 with a `{kid, value}` body.

Encrypt is randomized, so it is checked by round trip: encrypt through the API, then
decrypt through the API and with pyca on the vector's private key.
"""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.vectors import tally
from tests.vectors.api import KeyApi, error
from tests.vectors.loader import b64u, b64u_decode, groups, load

DECRYPT_OPS = ["encrypt", "decrypt", "wrapKey", "unwrapKey"]
DECRYPT_FAILED = {"error": {"code": "BadParameter",
                            "message": "The ciphertext could not be decrypted with this key."}}
LABEL = "OAEP label: the Key Vault decrypt API has no label parameter"

# file → (alg, run, skipped)
OAEP = {
    "rsa_oaep_2048_sha1_mgf1sha1_test.json": ("RSA-OAEP", 29, 7),
    "rsa_oaep_2048_sha256_mgf1sha256_test.json": ("RSA-OAEP-256", 29, 8),
    "rsa_oaep_3072_sha256_mgf1sha256_test.json": ("RSA-OAEP-256", 29, 8),
    "rsa_oaep_4096_sha256_mgf1sha256_test.json": ("RSA-OAEP-256", 29, 8),
}
# file → run (nothing skipped)
PKCS1 = {
    "rsa_pkcs1_2048_test.json": 67,
    "rsa_pkcs1_3072_test.json": 67,
    "rsa_pkcs1_4096_test.json": 67,
}
IMPLICIT = "InvalidPkcs1Padding → 200, pseudo-random plaintext != msg, repeatable"


@pytest.mark.parametrize("name", OAEP)
def test_oaep_decrypt(any_key_api: KeyApi, name: str) -> None:
    alg, run, skipped = OAEP[name]
    t = tally.start(name, f"decrypt+unwrapKey {alg} (API{any_key_api.label})")
    failures: dict[tuple[int, bytes], list[str]] = {}
    padding_failures: set[tuple[int, bytes]] = set()
    for group, vectors in groups(name):
        key = any_key_api.import_key(group["privateKeyJwk"], DECRYPT_OPS)
        for v in vectors:
            if v.raw["label"]:
                t.skip(v, LABEL)
                continue
            body = {"alg": alg, "value": b64u(v.bytes("ct"))}
            dec = any_key_api.op(key, "decrypt", body)
            unwrap = any_key_api.op(key, "unwrapkey", body)
            if v.result == "valid":
                ok = all(r.status_code == 200 and b64u_decode(r.json()["value"]) == v.bytes("msg")
                         for r in (dec, unwrap))
                t.check(v, ok, f"decrypt {dec.status_code}, unwrapkey {unwrap.status_code}")
                continue
            assert v.result == "invalid"
            if dec.status_code == 200 or unwrap.status_code == 200:
                t.fail(v, "an invalid ciphertext decrypted")
                continue
            if error(dec) != error(unwrap):
                t.fail(v, "decrypt and unwrapkey fail differently")
                continue
            t.ran(v)
            failures.setdefault(error(dec), []).append(f"{v.tc_id}{list(v.flags)}")
            if "InvalidOaepPadding" in v.flags:
                padding_failures.add(error(dec))
    t.finish(run=run, skipped=skipped)
    assert len(padding_failures) == 1, f"InvalidOaepPadding cases are distinguishable: {failures}"
    # Pinned: not only the padding failures; every decrypt failure looks the same.
    assert len(failures) == 1, f"decrypt failures are distinguishable: {failures}"
    ((status, content),) = failures
    assert status == 400
    assert content == any_key_api.op(key, "decrypt", {"alg": alg, "value": ""}).content
    assert json.loads(content) == DECRYPT_FAILED


@pytest.mark.parametrize("name", PKCS1)
def test_rsa1_5_decrypt(any_key_api: KeyApi, name: str) -> None:
    t = tally.start(name, f"decrypt RSA1_5 (API{any_key_api.label})")
    padding_bodies: set[tuple[int, frozenset[str]]] = set()
    format_errors: set[tuple[int, bytes]] = set()
    for group, vectors in groups(name):
        key = any_key_api.import_key(group["privateKeyJwk"], DECRYPT_OPS)
        for v in vectors:
            body = {"alg": "RSA1_5", "value": b64u(v.bytes("ct"))}
            r = any_key_api.op(key, "decrypt", body)
            msg = v.bytes("msg")
            if v.result == "valid":
                t.check(v, r.status_code == 200 and b64u_decode(r.json()["value"]) == msg,
                        f"{r.status_code} {r.text[:80]}")
                continue
            assert v.result == "invalid"
            if r.status_code == 200 and b64u_decode(r.json()["value"]) == msg:
                t.fail(v, "an invalid ciphertext decrypted to the vector's msg")
                continue
            if "InvalidPkcs1Padding" in v.flags:
                # Pinned: implicit rejection, so nothing to tell one bad padding from another.
                padding_bodies.add((r.status_code, frozenset(r.json())))
                again = any_key_api.op(key, "decrypt", body)
                if r.status_code != 200 or again.content != r.content:
                    t.fail(v, f"not implicit rejection: {r.status_code} {r.text[:80]}")
                    continue
                t.pin(v, IMPLICIT)
            elif "InvalidCiphertextFormat" in v.flags:
                if r.status_code != 400:
                    t.fail(v, f"expected 400, got {r.status_code}")
                    continue
                format_errors.add(error(r))
            t.ran(v)
    t.finish(run=PKCS1[name])
    assert padding_bodies == {(200, frozenset({"kid", "value"}))}, padding_bodies
    assert len(format_errors) == 1, format_errors
    ((status, content),) = format_errors
    assert (status, json.loads(content)) == (400, DECRYPT_FAILED)


def _private(jwk: dict[str, str]) -> rsa.RSAPrivateKey:
    """The vector's private key built by pyca alone (an outside reference, not our crypto/)."""
    n, e, d, p, q, dp, dq, qi = (int.from_bytes(b64u_decode(jwk[k]), "big")
                                 for k in ("n", "e", "d", "p", "q", "dp", "dq", "qi"))
    numbers = rsa.RSAPrivateNumbers(p, q, d, dp, dq, qi, rsa.RSAPublicNumbers(e, n))
    return numbers.private_key(unsafe_skip_rsa_key_validation=True)


ROUND_TRIP = [(f, a) for f, (a, _, _) in OAEP.items()] + [(f, "RSA1_5") for f in PKCS1]
OVERHEAD = {"RSA1_5": 11, "RSA-OAEP": 42, "RSA-OAEP-256": 66}


@pytest.mark.parametrize(("name", "alg"), ROUND_TRIP, ids=[f for f, _ in ROUND_TRIP])
def test_encrypt_round_trip(any_key_api: KeyApi, name: str, alg: str) -> None:
    """encrypt and wrapkey through the API: randomized, decryptable by the API and by pyca,
    and refused (400) one byte over the padding's plaintext limit."""
    group = load(name)["testGroups"][0]
    key = any_key_api.import_key(group["privateKeyJwk"], DECRYPT_OPS)
    private = _private(group["privateKeyJwk"])
    h = hashes.SHA1() if alg == "RSA-OAEP" else hashes.SHA256()
    pad = (padding.PKCS1v15() if alg == "RSA1_5"
           else padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None))
    limit = private.key_size // 8 - OVERHEAD[alg]
    for size in (0, 1, 32, limit):
        plaintext = (bytes(range(256)) * 2)[:size]
        body = {"alg": alg, "value": b64u(plaintext)}
        ct1 = any_key_api.value(key, "encrypt", body)
        ct2 = any_key_api.value(key, "wrapkey", body)
        assert ct1 != ct2 and len(ct1) == len(ct2) == private.key_size // 8
        assert private.decrypt(ct1, pad) == plaintext
        assert any_key_api.value(key, "decrypt", {"alg": alg, "value": b64u(ct2)}) == plaintext
        assert any_key_api.value(key, "unwrapkey", {"alg": alg, "value": b64u(ct1)}) == plaintext
    too_long = any_key_api.op(key, "encrypt", {"alg": alg, "value": b64u(b"x" * (limit + 1))})
    assert too_long.status_code == 400
    assert f"at most {limit} bytes" in too_long.json()["error"]["message"]
