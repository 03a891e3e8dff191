"""Shamir's secret sharing over GF(2^8), so that M of N key holders together recover the
root key and fewer than M learn nothing about it.

The field is the AES one (reduction polynomial x^8 + x^4 + x^3 + x + 1, 0x11B), as in
HashiCorp Vault's `shamir` package, and a part has Vault's layout: one y byte per secret
byte, then the x coordinate (`y_1 .. y_n || x`). Each secret byte is the constant term of
its own polynomial of degree threshold − 1 whose other coefficients are uniformly random
(from `secrets`; a zero leading coefficient is allowed on purpose: forcing it non-zero,
as some implementations do, tells a holder of one share of a 2-of-N split that the byte
is not equal to their y).

Multiplication is a lookup in a 64 KiB product table, so splitting and combining take
no branch on a secret value (Python gives no constant-time guarantee beyond that).
"""

from __future__ import annotations

import secrets

__all__ = ["MAX_SHARES", "combine", "split"]

MAX_SHARES = 255
_POLYNOMIAL = 0x11B
_GENERATOR = 0x03  # generates the multiplicative group of this field


def _tables() -> tuple[bytes, bytes]:
    """(product table indexed by a << 8 | b, inverse table; inverse of 0 stored as 0)."""
    exp = [0] * 510
    log = [0] * 256
    v = 1
    for i in range(255):
        exp[i] = exp[i + 255] = v
        log[v] = i
        # v *= 3: v * 2 reduced by the polynomial, plus v
        doubled = v << 1
        if doubled & 0x100:
            doubled ^= _POLYNOMIAL
        v = doubled ^ v
    product = bytearray(65536)
    for a in range(1, 256):
        row = a << 8
        la = log[a]
        for b in range(1, 256):
            product[row | b] = exp[la + log[b]]
    inverse = bytearray(256)
    for a in range(1, 256):
        inverse[a] = exp[255 - log[a]]
    return bytes(product), bytes(inverse)


_MUL, _INV = _tables()


def _check_counts(shares: int, threshold: int) -> None:
    if not 2 <= threshold <= shares <= MAX_SHARES:
        raise ValueError(f"need 2 <= threshold <= shares <= {MAX_SHARES} "
                         f"(got threshold {threshold}, shares {shares})")


def split(secret: bytes, shares: int, threshold: int) -> list[bytes]:
    """`shares` parts of `secret`, any `threshold` of which recover it (`combine`). Part i
    has x coordinate i + 1."""
    _check_counts(shares, threshold)
    if not secret:
        raise ValueError("cannot split an empty secret")
    return _split_with(secret, list(range(1, shares + 1)),
                       secrets.token_bytes(len(secret) * (threshold - 1)), threshold)


def _split_with(secret: bytes, xs: list[int], randomness: bytes, threshold: int) -> list[bytes]:
    """The parts at `xs`, with the coefficients of degree 1 .. threshold − 1 of byte i's
    polynomial taken from `randomness[i * (threshold − 1):]` (separate so that tests can
    fix them)."""
    degree = threshold - 1
    parts = [bytearray(len(secret) + 1) for _ in xs]
    for part, x in zip(parts, xs, strict=True):
        part[-1] = x
    for i, constant in enumerate(secret):
        coefficients = randomness[i * degree:(i + 1) * degree]
        for part, x in zip(parts, xs, strict=True):
            y = 0
            for c in reversed(coefficients):  # Horner, from the highest degree down
                y = _MUL[(y ^ c) << 8 | x]
            part[i] = y ^ constant
    return [bytes(p) for p in parts]


def combine(parts: list[bytes]) -> bytes:
    """The secret whose parts these are. With fewer parts than the split's threshold (or
    parts of different splits) the result is simply another value: callers that must
    know check it against a verifier."""
    if len(parts) < 2:
        raise ValueError("at least two parts are needed")
    size = len(parts[0])
    if size < 2:
        raise ValueError("a part is at least two bytes")
    if any(len(p) != size for p in parts):
        raise ValueError("all parts must be the same length")
    xs = [p[-1] for p in parts]
    if 0 in xs:
        raise ValueError("a part has x coordinate 0")
    if len(set(xs)) != len(xs):
        raise ValueError("duplicate part: two parts have the same x coordinate")
    # Lagrange basis at 0: L_i(0) = prod_{j != i} x_j / (x_j - x_i); minus is xor here.
    basis = []
    for i, xi in enumerate(xs):
        b = 1
        for j, xj in enumerate(xs):
            if j != i:
                b = _MUL[b << 8 | _MUL[xj << 8 | _INV[xj ^ xi]]]
        basis.append(b)
    secret = bytearray(size - 1)
    for k in range(size - 1):
        acc = 0
        for part, b in zip(parts, basis, strict=True):
            acc ^= _MUL[part[k] << 8 | b]
        secret[k] = acc
    return bytes(secret)
