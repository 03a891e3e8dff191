"""Shamir's secret sharing over GF(2^8) (crypto/shamir.py).

The field arithmetic is checked against a reference written differently (shift-and-add
multiplication, inverses by exponentiation, polynomials evaluated term by term, Lagrange
interpolation written out), against products published in FIPS-197 and in HashiCorp
Vault's field tests, and against small splits worked by hand.
"""

from __future__ import annotations

import itertools
import random
import secrets

import pytest

from openkeyvault.crypto import shamir
from openkeyvault.crypto.shamir import combine, split


# ---- an independent reference --------------------------------------------------------------
def ref_mul(a: int, b: int) -> int:
    """Shift-and-add multiplication modulo x^8 + x^4 + x^3 + x + 1."""
    out = 0
    while b:
        if b & 1:
            out ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11B
        b >>= 1
    return out


def ref_pow(a: int, n: int) -> int:
    out = 1
    for _ in range(n):
        out = ref_mul(out, a)
    return out


def ref_inv(a: int) -> int:
    """a^254 = a^-1 in GF(2^8) (the multiplicative group has order 255)."""
    return ref_pow(a, 254)


def ref_eval(coefficients: list[int], x: int) -> int:
    """sum of c_k * x^k, term by term."""
    out = 0
    for k, c in enumerate(coefficients):
        out ^= ref_mul(c, ref_pow(x, k))
    return out


def ref_interpolate_at_zero(points: list[tuple[int, int]]) -> int:
    out = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if j != i:
                num = ref_mul(num, xj)
                den = ref_mul(den, xi ^ xj)
        out ^= ref_mul(yi, ref_mul(num, ref_inv(den)))
    return out


def ref_combine(parts: list[bytes]) -> bytes:
    return bytes(ref_interpolate_at_zero([(p[-1], p[k]) for p in parts])
                 for k in range(len(parts[0]) - 1))


# ---- the field --------------------------------------------------------------------------
def test_product_table_matches_the_reference_for_every_pair() -> None:
    for a in range(256):
        for b in range(256):
            assert shamir._MUL[a << 8 | b] == ref_mul(a, b), (a, b)


def test_inverse_table() -> None:
    assert shamir._INV[0] == 0
    for a in range(1, 256):
        assert shamir._INV[a] == ref_inv(a)
        assert ref_mul(a, shamir._INV[a]) == 1


@pytest.mark.parametrize(("a", "b", "product"), [
    (0x57, 0x83, 0xC1),  # FIPS-197 section 4.2
    (0x57, 0x13, 0xFE),  # FIPS-197 section 4.2.1
    (0x57, 0x02, 0xAE), (0x57, 0x04, 0x47), (0x57, 0x08, 0x8E), (0x57, 0x10, 0x07),
    (3, 7, 9),  # HashiCorp Vault shamir_test.go TestField_Mult
    (3, 0, 0), (0, 3, 0), (1, 0xFF, 0xFF),
])
def test_published_products(a: int, b: int, product: int) -> None:
    assert shamir._MUL[a << 8 | b] == product
    assert ref_mul(a, b) == product


# ---- known answers ---------------------------------------------------------------------------
def test_split_worked_by_hand() -> None:
    # f(x) = 0x42 + 0x03 x: f(1) = 0x42 ^ 0x03 = 0x41, f(2) = 0x42 ^ 0x06 = 0x44,
    # f(3) = 0x42 ^ 0x05 = 0x47 (3 * 3 = x^2 + 1 = 5).
    parts = shamir._split_with(b"\x42", [1, 2, 3], b"\x03", 2)
    assert parts == [b"\x41\x01", b"\x44\x02", b"\x47\x03"]
    assert combine([b"\x41\x01", b"\x44\x02"]) == b"\x42"
    assert combine([b"\x47\x03", b"\x41\x01"]) == b"\x42"
    assert combine([b"\x44\x02", b"\x47\x03"]) == b"\x42"


def test_split_reduces_by_the_aes_polynomial() -> None:
    # f(x) = 0x00 + 0x57 x at x = 0x83 is 0x57 * 0x83 = 0xC1 (FIPS-197).
    assert shamir._split_with(b"\x00", [0x83], b"\x57", 2) == [b"\xc1\x83"]
    # degree 2: f(x) = 0x10 + 0x57 x + 0x01 x^2 at x = 0x13: 0x10 ^ 0xFE ^ 0x13*0x13.
    # 0x13 * 0x13 = (x^4 + x + 1)^2 = x^8 + x^2 + 1 = (x^4 + x^3 + x + 1) + x^2 + 1 = 0x1E.
    assert ref_mul(0x13, 0x13) == 0x1E
    assert shamir._split_with(b"\x10", [0x13], b"\x57\x01", 3) == [bytes([0x10 ^ 0xFE ^ 0x1E,
                                                                          0x13])]


def test_combine_of_a_degree_two_split_worked_by_hand() -> None:
    # f(x) = 0x2A + x + x^2 at 1, 2, 3: 0x2A^1^1 = 0x2A; 0x2A^2^4 = 0x2C; 0x2A^3^5 = 0x2C.
    parts = [b"\x2a\x01", b"\x2c\x02", b"\x2c\x03"]
    assert shamir._split_with(b"\x2a", [1, 2, 3], b"\x01\x01", 3) == parts
    assert combine(parts) == b"\x2a"


def test_split_matches_the_reference_evaluation() -> None:
    rng = random.Random(20261205)
    for threshold in (2, 3, 5, 17):
        secret = rng.randbytes(32)
        randomness = rng.randbytes(32 * (threshold - 1))
        xs = rng.sample(range(1, 256), 20)
        parts = shamir._split_with(secret, xs, randomness, threshold)
        d = threshold - 1
        for part, x in zip(parts, xs, strict=True):
            assert part[-1] == x
            for k, constant in enumerate(secret):
                coefficients = [constant, *randomness[k * d:(k + 1) * d]]
                assert part[k] == ref_eval(coefficients, x)


def test_combine_matches_the_reference_interpolation() -> None:
    for threshold, shares in ((2, 2), (3, 5), (7, 9)):
        parts = split(secrets.token_bytes(32), shares, threshold)
        for chosen in (parts[:threshold], parts[-threshold:], parts[:threshold - 1]):
            if len(chosen) >= 2:
                assert combine(chosen) == ref_combine(chosen)


# ---- round trips -------------------------------------------------------------------------
@pytest.mark.parametrize(("threshold", "shares"), [
    (2, 2), (2, 3), (3, 3), (2, 5), (3, 5), (5, 5), (4, 7), (10, 20), (2, 255), (255, 255),
])
def test_round_trip(threshold: int, shares: int) -> None:
    secret = secrets.token_bytes(32)
    parts = split(secret, shares, threshold)
    assert len(parts) == shares
    assert all(len(p) == len(secret) + 1 for p in parts)  # Vault's layout: y bytes || x
    assert sorted(p[-1] for p in parts) == list(range(1, shares + 1))
    rng = random.Random(threshold * 1000 + shares)
    for _ in range(5):
        assert combine(rng.sample(parts, threshold)) == secret
    assert combine(parts) == secret  # more than the threshold is fine too


def test_any_three_of_five_recover_and_no_two_do() -> None:
    secret = secrets.token_bytes(32)
    parts = split(secret, 5, 3)
    for chosen in itertools.permutations(parts, 3):
        assert combine(list(chosen)) == secret
    for chosen in itertools.combinations(parts, 2):
        assert combine(list(chosen)) != secret


def test_fewer_than_threshold_give_another_value() -> None:
    for threshold, shares in ((3, 5), (5, 9), (10, 12)):
        secret = secrets.token_bytes(32)
        parts = split(secret, shares, threshold)
        short = combine(parts[:threshold - 1])
        assert len(short) == len(secret) and short != secret


def test_secrets_of_any_length() -> None:
    for size in (1, 2, 16, 33, 64):
        secret = secrets.token_bytes(size)
        assert combine(split(secret, 4, 3)[1:]) == secret


def test_splits_are_randomised() -> None:
    secret = bytes(32)
    assert split(secret, 3, 2) != split(secret, 3, 2)


def test_one_share_of_two_is_equally_likely_under_every_secret() -> None:
    """For threshold 2, each coefficient gives one share value and each share value comes
    from exactly one coefficient, whatever the secret: a single share says nothing."""
    for x in (1, 2, 0x83, 255):
        for secret in range(256):
            ys = {shamir._split_with(bytes([secret]), [x], bytes([c]), 2)[0][0]
                  for c in range(256)}
            assert len(ys) == 256


def test_two_shares_of_three_are_equally_likely_under_every_secret() -> None:
    xs = [3, 200]
    for secret in (0x00, 0x5A, 0xFF):
        seen = {tuple(p[0] for p in shamir._split_with(bytes([secret]), xs, bytes([a, b]), 3))
                for a in range(256) for b in range(256)}
        assert len(seen) == 65536


# ---- refusals ----------------------------------------------------------------------------
@pytest.mark.parametrize(("shares", "threshold"), [
    (0, 0), (3, 1), (1, 1), (2, 3), (256, 3), (300, 256), (5, 0), (5, -1),
])
def test_split_refuses_bad_counts(shares: int, threshold: int) -> None:
    with pytest.raises(ValueError, match="threshold"):
        split(b"secret", shares, threshold)


def test_split_refuses_an_empty_secret() -> None:
    with pytest.raises(ValueError, match="empty"):
        split(b"", 3, 2)


def test_combine_refuses_duplicates() -> None:
    parts = split(secrets.token_bytes(32), 5, 3)
    with pytest.raises(ValueError, match="duplicate"):
        combine([parts[0], parts[1], parts[0]])
    # the same x with another y is as much a duplicate
    other = parts[1][:-1] + parts[0][-1:]
    with pytest.raises(ValueError, match="duplicate"):
        combine([parts[0], other, parts[2]])


def test_combine_refuses_malformed_parts() -> None:
    parts = split(secrets.token_bytes(32), 3, 2)
    with pytest.raises(ValueError, match="two parts"):
        combine([])
    with pytest.raises(ValueError, match="two parts"):
        combine(parts[:1])
    with pytest.raises(ValueError, match="same length"):
        combine([parts[0], parts[1][1:]])
    with pytest.raises(ValueError, match="two bytes"):
        combine([b"\x01", b"\x02"])
    with pytest.raises(ValueError, match="x coordinate 0"):
        combine([parts[0], parts[1][:-1] + b"\x00"])
