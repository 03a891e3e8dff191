"""RSA PKCS#1 v1.5 signing vectors through the real key API, and sign/verify round trips.

`rsa_pkcs1_*_sig_gen_test.json` carry private keys: each group's `privateKeyJwk` is
imported with PUT /keys/{name}, then POST .../sign with `digest = SHA(msg)` must
return the vector's `sig` byte for byte (PKCS#1 v1.5 signing is deterministic), and
POST .../verify must accept it.

Pinned choices:
* `acceptable` SmallPublicKey (e=3 keys, tcIds 154/155/158 and 156/157): we import
  e=3 keys and sign them exactly like the vector ("accepted").
* SHA-1 and SHA-224 groups (2048 file) are skipped: no JWK, no JOSE algorithm.

The round trips sign with every RS*/PS* algorithm through the API, verify through the
API and, independently, with pyca/cryptography on the vector's public key; EC keys
(the ECDSA files hold public keys only) are generated locally and imported.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from tests.vectors import tally
from tests.vectors.api import KeyApi
from tests.vectors.loader import RS_ALG, b64u, b64u_decode, digest, groups

SIGN_OPS = ["sign", "verify"]
NO_JOSE = "SHA-1/SHA-224 group: no JWK in the file and no JOSE algorithm"

# file → (run, skipped)
SIG_GEN = {
    "rsa_pkcs1_2048_sig_gen_test.json": (27, 16),
    "rsa_pkcs1_3072_sig_gen_test.json": (26, 0),
    "rsa_pkcs1_4096_sig_gen_test.json": (24, 0),
}
# acceptable flag → what we do with it (a change of behaviour must show up here)
PINNED = {"SmallPublicKey": "accepted: e=3 key imports and signs exactly like the vector"}

HASH: dict[str, hashes.HashAlgorithm] = {"256": hashes.SHA256(), "384": hashes.SHA384(),
                                         "512": hashes.SHA512()}
ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")


@pytest.mark.parametrize("name", SIG_GEN)
def test_pkcs1_sign_matches_vector_bytes(any_key_api: KeyApi, name: str) -> None:
    t = tally.start(name, f"sign RS256/384/512 (API{any_key_api.label})")
    for group, vectors in groups(name):
        alg = RS_ALG.get(group["sha"])
        if alg is None or "privateKeyJwk" not in group:
            for v in vectors:
                t.skip(v, NO_JOSE)
            continue
        key = any_key_api.import_key(group["privateKeyJwk"], SIGN_OPS)
        for v in vectors:
            d = digest(group["sha"], v.bytes("msg"))
            expected = v.bytes("sig")
            sig = any_key_api.value(key, "sign", {"alg": alg, "value": b64u(d)})
            accepted = any_key_api.verify(key, {"alg": alg, "digest": b64u(d),
                                            "value": b64u(expected)})
            if v.result == "acceptable":
                (flag,) = v.flags
                assert flag in PINNED, f"{v.describe()}: no pinned choice for {flag}"
                t.pin(v, PINNED[flag])
                t.check(v, sig == expected and accepted,
                        f"pinned '{PINNED[flag]}' but sign/verify behaved otherwise")
            else:
                assert v.result == "valid"
                t.check(v, sig == expected and accepted,
                        "signature differs" if sig != expected else "the API's verify said false")
    t.finish(run=SIG_GEN[name][0], skipped=SIG_GEN[name][1])


def _local_verify(pub: rsa.RSAPublicKey, alg: str, d: bytes, sig: bytes) -> bool:
    h = HASH[alg[2:]]
    pad = (padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size) if alg[0] == "P"
           else padding.PKCS1v15())
    try:
        pub.verify(sig, d, pad, utils.Prehashed(h))
        return True
    except InvalidSignature:
        return False


def _public(jwk: dict[str, str]) -> rsa.RSAPublicKey:
    """The vector key's public half, built by pyca alone (not by our crypto/)."""
    e, n = (int.from_bytes(b64u_decode(jwk[k]), "big") for k in ("e", "n"))
    return rsa.RSAPublicNumbers(e, n).public_key()


@pytest.mark.parametrize("name", SIG_GEN)
def test_sign_verify_round_trips(any_key_api: KeyApi, name: str) -> None:
    """Every RS*/PS* signature the API makes verifies through the API and with pyca;
    a flipped bit or another digest does not. RS* repeats exactly, PS* never does."""
    keys = 0
    for group, _ in groups(name):
        if "privateKeyJwk" not in group:
            continue
        keys += 1
        key = any_key_api.import_key(group["privateKeyJwk"], SIGN_OPS)
        pub = _public(group["privateKeyJwk"])
        for alg in ALGS:
            d = hashlib.new(f"sha{alg[2:]}", f"{name} {alg}".encode()).digest()
            body = {"alg": alg, "value": b64u(d)}
            sig = any_key_api.value(key, "sign", body)
            assert len(sig) == pub.key_size // 8
            assert _local_verify(pub, alg, d, sig), (name, alg)
            assert any_key_api.verify(key, {"alg": alg, "digest": b64u(d), "value": b64u(sig)})
            again = any_key_api.value(key, "sign", body)
            assert (again == sig) is alg.startswith("RS"), (name, alg)
            flipped = bytes([sig[0] ^ 1]) + sig[1:]
            assert not any_key_api.verify(key, {"alg": alg, "digest": b64u(d),
                                             "value": b64u(flipped)})
            other = hashlib.new(f"sha{alg[2:]}", b"another message").digest()
            assert not any_key_api.verify(key, {"alg": alg, "digest": b64u(other),
                                             "value": b64u(sig)})
    assert keys >= 3


EC_CASES = [("P-256", ec.SECP256R1, "ES256", 32), ("P-256K", ec.SECP256K1, "ES256K", 32),
            ("P-384", ec.SECP384R1, "ES384", 48), ("P-521", ec.SECP521R1, "ES512", 66)]


@pytest.mark.parametrize(("crv", "curve", "alg", "size"), EC_CASES,
                         ids=[c[0] for c in EC_CASES])
def test_ec_sign_verify_round_trip(any_key_api: KeyApi, crv: str, curve: type[ec.EllipticCurve],
                                   alg: str, size: int) -> None:
    """ES* through the API: raw r||s of 2×size bytes that pyca verifies, and the API's verify
    (the same crypto.algorithms.verify the public-only ECDSA vectors exercise) agrees."""
    private = ec.generate_private_key(curve())
    nums = private.private_numbers()
    jwk = {"kty": "EC", "crv": crv, "d": b64u(nums.private_value.to_bytes(size, "big")),
           "x": b64u(nums.public_numbers.x.to_bytes(size, "big")),
           "y": b64u(nums.public_numbers.y.to_bytes(size, "big"))}
    key = any_key_api.import_key(jwk, SIGN_OPS)
    h = HASH[{32: "256", 48: "384", 66: "512"}[size]]
    d = hashlib.new(h.name, alg.encode()).digest()
    sig = any_key_api.value(key, "sign", {"alg": alg, "value": b64u(d)})
    assert len(sig) == 2 * size
    der = utils.encode_dss_signature(int.from_bytes(sig[:size], "big"),
                                      int.from_bytes(sig[size:], "big"))
    private.public_key().verify(der, d, ec.ECDSA(utils.Prehashed(h)))
    assert any_key_api.verify(key, {"alg": alg, "digest": b64u(d), "value": b64u(sig)})
    assert not any_key_api.verify(key, {"alg": alg, "digest": b64u(d),
                                     "value": b64u(sig[:-1] + bytes([sig[-1] ^ 1]))})
    assert not any_key_api.verify(key, {"alg": alg, "digest": b64u(d), "value": b64u(sig[:-1])})
