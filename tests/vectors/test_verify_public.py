"""Public-key-only verify vectors (ECDSA P1363, RSA PKCS#1 v1.5, RSA-PSS) at the crypto layer.

These files hold public keys only, and our import (like Azure's) requires private key
material: a public-only JWK is refused, so these vectors cannot go through the REST
API. They run through the same functions the API's verify uses:
`crypto.jwk.public_from_jwk` to build the key and `crypto.algorithms.verify` with the
JOSE alg and `digest = SHA(msg)`. (The API path to that function is covered by the
round trips in test_rsa_sign_api.py.)

valid → True. invalid → False or AlgorithmError, never True, and never another
exception (through the API that would be a 500). Pinned choices:
* `acceptable` MissingNull (tcId 8 of each rsa_signature file): rejected (False).
* e=3 keys (SmallPublicKey, rated valid): public_from_jwk accepts them and they verify.
* ecdsa_secp256r1_sha512, ecdsa_secp384r1_sha512, ecdsa_secp256k1_sha512: skipped;
  no JOSE alg pairs those curves with SHA-512, and our verify checks the digest length
  per alg (asserted below: a SHA-512 digest with ES256/ES384/ES256K is AlgorithmError).
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from openkeyvault.crypto import algorithms
from openkeyvault.crypto.jwk import PublicKey, public_from_jwk
from tests.vectors import tally
from tests.vectors.loader import (
    ES_ALG,
    PS_ALG,
    RS_ALG,
    b64u_decode,
    digest,
    ec_public_jwk,
    groups,
    prepare_jwk,
    unhex,
)

# file → (run, skipped)
ECDSA = {
    "ecdsa_secp256r1_sha256_p1363_test.json": (262, 0),
    "ecdsa_secp384r1_sha384_p1363_test.json": (280, 0),
    "ecdsa_secp521r1_sha512_p1363_test.json": (318, 0),
    "ecdsa_secp256k1_sha256_p1363_test.json": (252, 0),
}
# file → the alg of its curve, which takes a shorter digest than SHA-512
ECDSA_NO_JOSE = {
    "ecdsa_secp256r1_sha512_p1363_test.json": "ES256",
    "ecdsa_secp384r1_sha512_p1363_test.json": "ES384",
    "ecdsa_secp256k1_sha512_p1363_test.json": "ES256K",
}
RSA_SIGNATURE = {
    f"rsa_signature_{bits}_{sha}_test.json": (n, 0)
    for (bits, sha), n in {
        (2048, "sha256"): 259, (2048, "sha384"): 258, (2048, "sha512"): 259,
        (3072, "sha256"): 259, (3072, "sha384"): 259, (3072, "sha512"): 260,
        (4096, "sha256"): 258, (4096, "sha384"): 259, (4096, "sha512"): 259,
    }.items()
}
PSS = {
    "rsa_pss_2048_sha256_mgf1_32_test.json": (108, 0),
    "rsa_pss_2048_sha384_mgf1_48_test.json": (141, 0),
    "rsa_pss_3072_sha256_mgf1_32_test.json": (108, 0),
    "rsa_pss_4096_sha256_mgf1_32_test.json": (108, 0),
    "rsa_pss_4096_sha384_mgf1_48_test.json": (141, 0),
    "rsa_pss_4096_sha512_mgf1_64_test.json": (179, 0),
}
# e=3 groups per file (rated valid); pinned: accepted.
E3_TESTS = {"rsa_signature_2048_sha256_test.json": 2, "rsa_signature_2048_sha512_test.json": 1,
            "rsa_signature_3072_sha256_test.json": 1, "rsa_signature_3072_sha512_test.json": 1}
PINNED = {"MissingNull": "rejected"}
E3 = "e=3 key: public_from_jwk accepts it"


def _verify(key: PublicKey, alg: str, d: bytes, sig: bytes) -> bool | str:
    try:
        return bool(algorithms.verify(key, alg, d, sig))
    except algorithms.AlgorithmError:
        return "AlgorithmError"


def _run(t: tally.FileTally, key: PublicKey, alg: str, sha: str, vectors: list[Any]) -> None:
    for v in vectors:
        try:
            got = _verify(key, alg, digest(sha, v.bytes("msg")), v.bytes("sig"))
        except Exception as exc:  # through the API this would be a 500
            t.fail(v, f"unexpected {type(exc).__name__}: {exc}")
            continue
        if v.result == "valid":
            t.check(v, got is True, f"valid signature gave {got}")
        elif v.result == "invalid":
            t.check(v, got is not True, "invalid signature verified")
        else:
            (flag,) = v.flags
            outcome = "accepted" if got is True else "rejected"
            t.pin(v, f"{flag}: {outcome}")
            t.check(v, outcome == PINNED.get(flag), f"pinned {PINNED.get(flag)}, got {outcome}")


@pytest.mark.parametrize("name", ECDSA)
def test_ecdsa_p1363_verify(name: str) -> None:
    t = tally.start(name, "verify ES* (crypto layer)")
    for group, vectors in groups(name):
        alg = ES_ALG[(group["publicKey"]["curve"], group["sha"])]
        key = public_from_jwk(ec_public_jwk(group), "EC")
        # The JWK we built (or the file's) is the file's uncompressed point.
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.public_numbers() == ec.EllipticCurvePublicKey.from_encoded_point(
            key.curve, unhex(group["publicKey"]["uncompressed"])).public_numbers()
        _run(t, key, alg, group["sha"], vectors)
    t.finish(run=ECDSA[name][0], skipped=ECDSA[name][1])


@pytest.mark.parametrize("name", ECDSA_NO_JOSE)
def test_ecdsa_sha512_on_small_curves_has_no_jose_alg(name: str) -> None:
    alg = ECDSA_NO_JOSE[name]
    reason = f"no JOSE alg for this curve with SHA-512; {alg} takes a shorter digest"
    t = tally.skip_file(name, "verify (no JOSE alg)", reason)
    group, vectors = next(groups(name))
    key = public_from_jwk(ec_public_jwk(group), "EC")
    v = next(v for v in vectors if v.result == "valid")
    with pytest.raises(algorithms.AlgorithmError, match="Invalid digest length"):
        algorithms.verify(key, alg, digest("SHA-512", v.bytes("msg")), v.bytes("sig"))
    t.finish(run=0, skipped=sum(len(vs) for _, vs in groups(name)))


@pytest.mark.parametrize("name", RSA_SIGNATURE)
def test_rsa_pkcs1_verify(name: str) -> None:
    t = tally.start(name, "verify RS* (crypto layer)")
    e3 = 0
    for group, vectors in groups(name):
        key = public_from_jwk(prepare_jwk(group["keyJwk"], ["verify"]), "RSA")
        if int.from_bytes(b64u_decode(group["keyJwk"]["e"]), "big") == 3:
            e3 += len(vectors)
            for v in vectors:
                t.pin(v, E3)
        _run(t, key, RS_ALG[group["sha"]], group["sha"], vectors)
    t.finish(run=RSA_SIGNATURE[name][0], skipped=RSA_SIGNATURE[name][1])
    assert e3 == E3_TESTS.get(name, 0)


@pytest.mark.parametrize("name", PSS)
def test_rsa_pss_verify(name: str) -> None:
    t = tally.start(name, "verify PS* (crypto layer)")
    for group, vectors in groups(name):
        sha = group["sha"]
        # PS* (RFC 7518) is MGF1 with the same hash and a salt as long as the digest.
        assert (group["mgf"], group["mgfSha"], group["sLen"]) == \
            ("MGF1", sha, len(digest(sha, b"")))
        key = public_from_jwk(prepare_jwk(group["publicKeyJwk"], ["verify"]), "RSA")
        _run(t, key, PS_ALG[sha], sha, vectors)
    t.finish(run=PSS[name][0], skipped=PSS[name][1])
