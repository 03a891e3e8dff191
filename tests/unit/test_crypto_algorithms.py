"""crypto/jwk.py and crypto/algorithms.py: JWK conversion and the algorithm table, directly.

The Wycheproof vectors (tests/vectors/) check results against an outside reference;
these tests pin the rules around them: which JWKs are refused and with what message,
key sizes and curves, digest lengths per alg, alg/key family mismatches, plaintext
limits per padding, and the single undistinguishable decryption failure.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from openkeyvault.crypto import algorithms
from openkeyvault.crypto.algorithms import AlgorithmError, DecryptionError
from openkeyvault.crypto.jwk import (
    CURVES,
    JwkError,
    PrivateKey,
    private_from_jwk,
    public_from_jwk,
    public_jwk,
)
from openkeyvault.vault.keytypes import FAMILY_OPS

DECRYPT_MESSAGE = "The ciphertext could not be decrypted with this key."
RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGS = {"ES256": "P-256", "ES256K": "P-256K", "ES384": "P-384", "ES512": "P-521"}
DIGEST = {"256": 32, "384": 48, "512": 64}
OVERHEAD = {"RSA1_5": 11, "RSA-OAEP": 42, "RSA-OAEP-256": 66}


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(n: int, size: int | None = None) -> str:
    return b64u(n.to_bytes(size or (n.bit_length() + 7) // 8, "big"))


def rsa_jwk(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    pn = key.private_numbers()
    return {"kty": "RSA", "n": uint(pn.public_numbers.n), "e": uint(pn.public_numbers.e),
            "d": uint(pn.d), "p": uint(pn.p), "q": uint(pn.q), "dp": uint(pn.dmp1),
            "dq": uint(pn.dmq1), "qi": uint(pn.iqmp)}


def ec_jwk(key: ec.EllipticCurvePrivateKey, crv: str) -> dict[str, Any]:
    size = CURVES[crv][1]
    pn = key.private_numbers()
    return {"kty": "EC", "crv": crv, "d": uint(pn.private_value, size),
            "x": uint(pn.public_numbers.x, size), "y": uint(pn.public_numbers.y, size)}


@pytest.fixture(scope="module")
def rsa_keys() -> dict[int, rsa.RSAPrivateKey]:
    return {bits: rsa.generate_private_key(65537, bits) for bits in (2048, 3072, 4096)}


@pytest.fixture(scope="module")
def rsa_key(rsa_keys: dict[int, rsa.RSAPrivateKey]) -> rsa.RSAPrivateKey:
    return rsa_keys[2048]


@pytest.fixture(scope="module")
def ec_keys() -> dict[str, ec.EllipticCurvePrivateKey]:
    return {crv: ec.generate_private_key(cls()) for crv, (cls, _) in CURVES.items()}


def digest_for(alg: str) -> bytes:
    return bytes(range(DIGEST[alg[-3:] if alg != "ES256K" else "256"]))


def assert_no_material(exc: pytest.ExceptionInfo[Exception], jwk: dict[str, Any]) -> None:
    for field in ("n", "d", "p", "q", "dp", "dq", "qi", "x", "y"):
        if isinstance(jwk.get(field), str) and len(jwk[field]) > 4:
            assert jwk[field] not in str(exc.value)


# ---- JWK round trips -------------------------------------------------------------------


@pytest.mark.parametrize("members", ["full", "n-e-d"])
@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_rsa_private_jwk_round_trip(rsa_keys: dict[int, rsa.RSAPrivateKey], bits: int,
                                    members: str) -> None:
    key = rsa_keys[bits]
    jwk = rsa_jwk(key)
    if members == "n-e-d":  # the CRT members are recovered from n, e and d
        jwk = {k: jwk[k] for k in ("kty", "n", "e", "d")}
    imported = private_from_jwk(jwk, "RSA")
    assert isinstance(imported, rsa.RSAPrivateKey)
    assert imported.private_numbers() == key.private_numbers()
    assert public_jwk(imported) == {"n": jwk["n"], "e": "AQAB"}
    assert public_jwk(imported.public_key()) == public_jwk(imported)
    again = public_from_jwk(public_jwk(imported), "RSA")
    assert again.public_numbers() == key.public_key().public_numbers()


@pytest.mark.parametrize("with_point", [True, False])
@pytest.mark.parametrize("crv", list(CURVES))
def test_ec_private_jwk_round_trip(ec_keys: dict[str, ec.EllipticCurvePrivateKey], crv: str,
                                   with_point: bool) -> None:
    key = ec_keys[crv]
    jwk = ec_jwk(key, crv)
    if not with_point:
        del jwk["x"], jwk["y"]
    imported = private_from_jwk(jwk, "EC")
    assert isinstance(imported, ec.EllipticCurvePrivateKey)
    assert imported.private_numbers() == key.private_numbers()
    pub = public_jwk(imported)
    assert pub == {"crv": crv, **{k: v for k, v in ec_jwk(key, crv).items() if k in "xy"}}
    size = CURVES[crv][1]
    for coord in ("x", "y"):  # always the full coordinate size, left-padded
        assert len(base64.urlsafe_b64decode(pub[coord] + "==")) == size
    again = public_from_jwk(pub, "EC")
    assert again.public_numbers() == key.public_key().public_numbers()


def test_short_coordinates_are_left_padded_in_public_jwk() -> None:
    # A P-256 point with an x below 2^248 needs a leading zero byte in the JWK.
    for d in range(1, 2000):
        key = ec.derive_private_key(d, ec.SECP256R1())
        if key.public_key().public_numbers().x < 2 ** 248:
            break
    else:
        pytest.fail("no short x found")
    x = public_jwk(key)["x"]
    assert base64.urlsafe_b64decode(x + "==")[0] == 0
    assert len(base64.urlsafe_b64decode(x + "==")) == 32


def test_secp256k1_legacy_curve_name_imports_as_p256k(
        ec_keys: dict[str, ec.EllipticCurvePrivateKey]) -> None:
    jwk = {**ec_jwk(ec_keys["P-256K"], "P-256K"), "crv": "SECP256K1"}
    key = private_from_jwk(jwk, "EC")
    assert public_jwk(key)["crv"] == "P-256K"


# ---- JWKs refused ------------------------------------------------------------------------


@pytest.mark.parametrize("change", [
    "d+2", "other p", "other q", "dp+2", "dq+2", "qi+1", "other n", "e=65539", "n-e-d with d+2",
])
def test_inconsistent_rsa_parameters_are_refused(rsa_keys: dict[int, rsa.RSAPrivateKey],
                                                 change: str) -> None:
    key = rsa_keys[2048]
    jwk = rsa_jwk(key)
    pn = key.private_numbers()
    other = rsa.generate_private_key(65537, 2048).private_numbers()
    edits = {
        "d+2": {"d": uint(pn.d + 2)},
        "other p": {"p": uint(other.p)},
        "other q": {"q": uint(other.q)},
        "dp+2": {"dp": uint(pn.dmp1 + 2)},
        "dq+2": {"dq": uint(pn.dmq1 + 2)},
        "qi+1": {"qi": uint(pn.iqmp + 1)},
        "other n": {"n": uint(other.public_numbers.n)},
        "e=65539": {"e": uint(65539)},
        "n-e-d with d+2": {"d": uint(pn.d + 2)},
    }
    jwk.update(edits[change])
    if change.startswith("n-e-d"):
        jwk = {k: jwk[k] for k in ("kty", "n", "e", "d")}
    with pytest.raises(JwkError, match="^The RSA key parameters are inconsistent.$") as exc:
        private_from_jwk(jwk, "RSA")
    assert_no_material(exc, jwk)


def test_rsa_key_sizes_outside_2048_3072_4096_are_refused() -> None:
    jwk = rsa_jwk(rsa.generate_private_key(65537, 1024))
    with pytest.raises(JwkError, match="must be 2048, 3072, 4096 bits; this one has 1024"):
        private_from_jwk(jwk, "RSA")


@pytest.mark.parametrize("e", [1, 2, 65536])
def test_rsa_exponent_must_be_odd_and_at_least_3(rsa_key: rsa.RSAPrivateKey, e: int) -> None:
    jwk = {**rsa_jwk(rsa_key), "e": uint(e)}
    with pytest.raises(JwkError, match="odd number of at least 3"):
        private_from_jwk(jwk, "RSA")


@pytest.mark.parametrize("family", ["RSA", "EC"])
def test_public_only_jwk_is_refused_for_import(
        rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, ec.EllipticCurvePrivateKey],
        family: str) -> None:
    full = rsa_jwk(rsa_key) if family == "RSA" else ec_jwk(ec_keys["P-256"], "P-256")
    public = {k: v for k, v in full.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
    with pytest.raises(JwkError, match=r"no private key material \('d'\)"):
        private_from_jwk(public, family)


@pytest.mark.parametrize(("value", "message"), [
    (None, "must be a non-empty base64url string"),
    ("", "must be a non-empty base64url string"),
    (12345, "must be a non-empty base64url string"),
    ("A", "is not valid base64url"),
])
def test_malformed_members_are_refused(rsa_key: rsa.RSAPrivateKey, value: Any,
                                       message: str) -> None:
    jwk = {**rsa_jwk(rsa_key), "n": value}
    with pytest.raises(JwkError, match=f"JWK field 'n' {message}"):
        private_from_jwk(jwk, "RSA")


def test_ec_point_not_matching_private_key_is_refused(
        ec_keys: dict[str, ec.EllipticCurvePrivateKey]) -> None:
    jwk = ec_jwk(ec_keys["P-256"], "P-256")
    other = ec_jwk(ec.generate_private_key(ec.SECP256R1()), "P-256")
    for edit in ({"x": other["x"]}, {"y": other["y"]}, {"x": other["x"], "y": other["y"]}):
        with pytest.raises(JwkError, match="does not match the private key") as exc:
            private_from_jwk({**jwk, **edit}, "EC")
        assert_no_material(exc, jwk)
    only_x = {k: v for k, v in jwk.items() if k != "y"}
    with pytest.raises(JwkError, match="'y' must be a non-empty"):
        private_from_jwk(only_x, "EC")


@pytest.mark.parametrize("crv", ["P-256", "P-521", "P-256K"])
def test_ec_private_scalar_out_of_range_is_refused(crv: str) -> None:
    order = {"P-256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
             "P-256K": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
             "P-521": int("01" + "FF" * 32 + "FA51868783BF2F966B7FCC0148F709A5D03BB5C9B88"
                          "99C47AEBB6FB71E91386409", 16)}
    ec.derive_private_key(order[crv] - 1, CURVES[crv][0]())  # the largest valid scalar
    size = CURVES[crv][1]
    for d in (order[crv], order[crv] + 1, (1 << (8 * size)) - 1):
        with pytest.raises(JwkError, match="out of range for its curve"):
            private_from_jwk({"kty": "EC", "crv": crv, "d": uint(d, size)}, "EC")
    with pytest.raises(JwkError):
        private_from_jwk({"kty": "EC", "crv": crv, "d": uint(0, size)}, "EC")


@pytest.mark.parametrize("crv", ["P-224", "secp256k1", "p-256", "Ed25519", None, 7])
def test_unsupported_curves_are_refused(crv: Any) -> None:
    jwk = {"kty": "EC", "crv": crv, "d": "AQ", "x": "AQ", "y": "AQ"}
    with pytest.raises(JwkError, match="Unsupported curve"):
        private_from_jwk(jwk, "EC")
    with pytest.raises(JwkError, match="Unsupported curve"):
        public_from_jwk(jwk, "EC")


def test_unknown_family_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(JwkError, match="'oct' cannot be imported"):
        private_from_jwk(rsa_jwk(rsa_key), "oct")


def test_public_from_jwk_refuses_points_off_the_curve(
        ec_keys: dict[str, ec.EllipticCurvePrivateKey]) -> None:
    pub = public_jwk(ec_keys["P-384"])
    y = int.from_bytes(base64.urlsafe_b64decode(pub["y"] + "=="), "big")
    with pytest.raises(JwkError, match="^The public key parameters are invalid.$"):
        public_from_jwk({**pub, "y": uint(y ^ 1, 48)}, "EC")


def test_public_from_jwk_rsa_exponents(rsa_key: rsa.RSAPrivateKey) -> None:
    n = public_jwk(rsa_key)["n"]
    # Pinned: e=3 public keys are accepted (Wycheproof rates e=3 signatures valid).
    assert public_from_jwk({"n": n, "e": uint(3)}, "RSA").public_numbers().e == 3
    with pytest.raises(JwkError, match="^The public key parameters are invalid.$"):
        public_from_jwk({"n": n, "e": uint(2)}, "RSA")
    with pytest.raises(JwkError, match="'e' must be a non-empty"):
        public_from_jwk({"n": n}, "RSA")


# ---- sign / verify ----------------------------------------------------------------------


@pytest.mark.parametrize("alg", RSA_ALGS)
def test_rsa_sign_verify(rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    d = digest_for(alg)
    sig = algorithms.sign(rsa_key, alg, d)
    assert len(sig) == 256
    assert algorithms.verify(rsa_key, alg, d, sig)
    assert algorithms.verify(rsa_key.public_key(), alg, d, sig)
    assert (algorithms.sign(rsa_key, alg, d) == sig) is alg.startswith("RS")
    assert not algorithms.verify(rsa_key, alg, bytes(len(d)), sig)
    assert not algorithms.verify(rsa_key, alg, d, sig[:-1] + bytes([sig[-1] ^ 1]))
    # Signatures of the wrong length or out of range are just False, never an exception.
    for bad in (b"", sig[:-1], sig + b"\x00", b"\x00" + sig, b"\xff" * 256, bytes(256)):
        assert algorithms.verify(rsa_key, alg, d, bad) is False


@pytest.mark.parametrize("salt", [0, 20, padding.PSS.MAX_LENGTH])
@pytest.mark.parametrize("alg", ["PS256", "PS512"])
def test_pss_salt_must_equal_digest_length(rsa_key: rsa.RSAPrivateKey, alg: str,
                                           salt: int) -> None:
    """RFC 7518: PS* use a salt as long as the hash; other salt lengths do not verify."""
    h: hashes.HashAlgorithm = hashes.SHA256() if alg == "PS256" else hashes.SHA512()
    d = digest_for(alg)
    sig = rsa_key.sign(d, padding.PSS(mgf=padding.MGF1(h), salt_length=salt),
                       utils.Prehashed(h))
    assert algorithms.verify(rsa_key, alg, d, sig) is False
    good = rsa_key.sign(d, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size),
                        utils.Prehashed(h))
    assert algorithms.verify(rsa_key, alg, d, good) is True


@pytest.mark.parametrize("alg", list(EC_ALGS))
def test_ec_sign_verify_raw_r_s(ec_keys: dict[str, ec.EllipticCurvePrivateKey],
                                alg: str) -> None:
    key = ec_keys[EC_ALGS[alg]]
    size = CURVES[EC_ALGS[alg]][1]
    d = digest_for(alg)
    sig = algorithms.sign(key, alg, d)
    assert len(sig) == 2 * size
    assert algorithms.sign(key, alg, d) != sig  # randomized k
    assert algorithms.verify(key.public_key(), alg, d, sig)
    r, s = int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big")
    h = {32: hashes.SHA256(), 48: hashes.SHA384(), 64: hashes.SHA512()}[len(d)]
    key.public_key().verify(utils.encode_dss_signature(r, s), d, ec.ECDSA(utils.Prehashed(h)))
    for bad in (sig[:-1], sig + b"\x00", b"", bytes(2 * size), b"\xff" * (2 * size),
                sig[size:] + sig[:size]):
        assert algorithms.verify(key, alg, d, bad) is False


@pytest.mark.parametrize("alg", RSA_ALGS + tuple(EC_ALGS))
def test_digest_length_is_checked_per_alg(
        rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, ec.EllipticCurvePrivateKey],
        alg: str) -> None:
    key: PrivateKey = ec_keys[EC_ALGS[alg]] if alg in EC_ALGS else rsa_key
    n = len(digest_for(alg))
    for wrong in (n - 1, n + 1, 0, 20, 64 if n != 64 else 32):
        msg = f"^Invalid digest length for {alg}: {wrong} bytes given, {n} expected.$"
        with pytest.raises(AlgorithmError, match=msg):
            algorithms.sign(key, alg, bytes(wrong))
        with pytest.raises(AlgorithmError, match=msg):
            algorithms.verify(key, alg, bytes(wrong), b"\x00" * 64)


def test_alg_must_match_key_family_and_curve(
        rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, ec.EllipticCurvePrivateKey]) -> None:
    p256, p384 = ec_keys["P-256"], ec_keys["P-384"]
    with pytest.raises(AlgorithmError, match="^Algorithm RS256 cannot be used with an EC key."):
        algorithms.sign(p256, "RS256", bytes(32))
    with pytest.raises(AlgorithmError, match="^Algorithm ES256 cannot be used with an RSA key"):
        algorithms.verify(rsa_key.public_key(), "ES256", bytes(32), bytes(64))
    with pytest.raises(AlgorithmError, match="needs a P-256 key; this key is P-384"):
        algorithms.sign(p384, "ES256", bytes(32))
    with pytest.raises(AlgorithmError, match="needs a P-256K key; this key is P-256"):
        algorithms.verify(p256.public_key(), "ES256K", bytes(32), bytes(64))
    with pytest.raises(AlgorithmError, match="needs a P-521 key; this key is P-384"):
        algorithms.sign(p384, "ES512", bytes(64))


@pytest.mark.parametrize("alg", ["HS256", "none", "", "rs256", "RSA-OAEP", "EdDSA", "X" * 100])
def test_unknown_signature_algs(rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    with pytest.raises(AlgorithmError, match="^Unknown signature algorithm") as exc:
        algorithms.sign(rsa_key, alg, bytes(32))
    assert len(str(exc.value)) < 80  # the alg is cut short in the message
    with pytest.raises(AlgorithmError, match="^Unknown signature algorithm"):
        algorithms.verify(rsa_key, alg, bytes(32), bytes(256))


# ---- encrypt / decrypt -------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
@pytest.mark.parametrize("alg", list(OVERHEAD))
def test_plaintext_limit_per_padding(rsa_keys: dict[int, rsa.RSAPrivateKey], alg: str,
                                     bits: int) -> None:
    key = rsa_keys[bits]
    limit = bits // 8 - OVERHEAD[alg]
    for size in (0, 1, limit):
        pt = bytes([7]) * size
        ct = algorithms.encrypt(key.public_key(), alg, pt)
        assert len(ct) == bits // 8
        assert algorithms.decrypt(key, alg, ct) == pt
    with pytest.raises(AlgorithmError, match=f"^The plaintext is too long for {alg} with this "
                                             f"key: at most {limit} bytes.$"):
        algorithms.encrypt(key, alg, bytes(limit + 1))


def test_encrypt_is_randomized_and_algs_do_not_cross(rsa_key: rsa.RSAPrivateKey) -> None:
    pt = b"a key to wrap, 32 bytes long....."
    for alg in OVERHEAD:
        assert algorithms.encrypt(rsa_key, alg, pt) != algorithms.encrypt(rsa_key, alg, pt)
    oaep = algorithms.encrypt(rsa_key, "RSA-OAEP", pt)
    with pytest.raises(DecryptionError):
        algorithms.decrypt(rsa_key, "RSA-OAEP-256", oaep)
    oaep256 = algorithms.encrypt(rsa_key, "RSA-OAEP-256", pt)
    with pytest.raises(DecryptionError):
        algorithms.decrypt(rsa_key, "RSA-OAEP", oaep256)


def test_encryption_needs_an_rsa_key_and_a_known_alg(
        rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, ec.EllipticCurvePrivateKey]) -> None:
    with pytest.raises(AlgorithmError, match="^Algorithm RSA-OAEP needs an RSA key.$"):
        algorithms.encrypt(ec_keys["P-256"], "RSA-OAEP", b"x")
    with pytest.raises(AlgorithmError, match="^Algorithm RSA1_5 needs an RSA key.$"):
        algorithms.decrypt(ec_keys["P-256"], "RSA1_5", bytes(64))
    for alg in ("A256GCM", "RSA-OAEP-384", "RS256", "rsa-oaep", ""):
        with pytest.raises(AlgorithmError, match="^Unknown encryption algorithm"):
            algorithms.encrypt(rsa_key, alg, b"x")
        with pytest.raises(AlgorithmError, match="^Unknown encryption algorithm"):
            algorithms.decrypt(rsa_key, alg, bytes(256))


@pytest.mark.parametrize("alg", list(OVERHEAD))
def test_bad_ciphertexts_give_one_decryption_error(rsa_key: rsa.RSAPrivateKey,
                                                   alg: str) -> None:
    ct = algorithms.encrypt(rsa_key, alg, b"secret")
    n = rsa_key.public_key().public_numbers().n
    bad = [b"", b"\x00", ct[:-1], ct + b"\x00", b"\x00" + ct, ct * 2,
           n.to_bytes(256, "big"), b"\xff" * 256]
    if alg != "RSA1_5":  # a ciphertext of the right length with bad OAEP padding
        bad += [bytes(256), b"\x01" * 256, ct[:-1] + bytes([ct[-1] ^ 1])]
    messages = set()
    for c in bad:
        with pytest.raises(DecryptionError) as exc:
            algorithms.decrypt(rsa_key, alg, c)
        assert isinstance(exc.value, ValueError)
        messages.add(str(exc.value))
    assert messages == {DECRYPT_MESSAGE}


def test_rsa1_5_bad_padding_uses_implicit_rejection(rsa_key: rsa.RSAPrivateKey) -> None:
    """Pinned: a right-length RSA1_5 ciphertext with bad padding decrypts to a deterministic
    pseudo-random plaintext instead of failing, so padding validity never shows."""
    public = rsa_key.public_key()
    bad = [public.encrypt(b"m", padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(),
                                             None)),
           bytes(255) + b"\x01", b"\x00\x01" + b"\xff" * 254]
    outs = [algorithms.decrypt(rsa_key, "RSA1_5", c) for c in bad]
    assert outs == [algorithms.decrypt(rsa_key, "RSA1_5", c) for c in bad]
    assert len(set(outs)) == len(outs)
    assert b"m" not in outs


def test_allowed_ops_and_family(rsa_key: rsa.RSAPrivateKey,
                                ec_keys: dict[str, ec.EllipticCurvePrivateKey]) -> None:
    assert FAMILY_OPS["RSA"] == ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")
    assert FAMILY_OPS["EC"] == ("sign", "verify")
    assert algorithms.family(rsa_key) == algorithms.family(rsa_key.public_key()) == "RSA"
    assert algorithms.family(ec_keys["P-521"].public_key()) == "EC"
    assert set(algorithms.SIGN) == set(RSA_ALGS) | set(EC_ALGS)
    assert set(algorithms.ENCRYPT) == set(OVERHEAD)
    assert DecryptionError().args == (DECRYPT_MESSAGE,)
