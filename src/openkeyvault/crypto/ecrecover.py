"""An EC public key recovered from ECDSA signatures (SEC 1 §4.1.6), for a key whose
public point the holder does not give out: a PKCS#11 token that unwrapped an EC private
key (bring-your-own-key) has no CKA_EC_POINT for it, and will not show the private value.

Each signature (r, s) over a digest z allows the points Q = r⁻¹(s·R − z·G) for the two
points R with x = r; two signatures over different digests leave one common point,
which is then checked to verify both with pyca/cryptography. Only public values enter
here (signatures, digests, curve constants); nothing is secret, so plain Python integer
arithmetic is fine.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from openkeyvault.crypto.algorithms import SIGN

Point = tuple[int, int] | None  # None: the point at infinity


@dataclass(frozen=True)
class Curve:
    cls: type[ec.EllipticCurve]
    p: int
    a: int
    b: int
    n: int

    @property
    def generator(self) -> tuple[int, int]:
        nums = ec.derive_private_key(1, self.cls()).public_key().public_numbers()
        return nums.x, nums.y


# Key Vault curve names → SEC 2 / FIPS 186-4 domain parameters (the generators come from
# pyca/cryptography: the public key of the private value 1).
CURVES: dict[str, Curve] = {
    "P-256": Curve(
        ec.SECP256R1,
        0xffffffff00000001000000000000000000000000ffffffffffffffffffffffff,
        0xffffffff00000001000000000000000000000000fffffffffffffffffffffffc,
        0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b,
        0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551),
    "P-256K": Curve(
        ec.SECP256K1,
        0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f,
        0, 7,
        0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141),
    "P-384": Curve(
        ec.SECP384R1,
        0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff,  # noqa: E501
        0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000fffffffc,  # noqa: E501
        0xb3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef,  # noqa: E501
        0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973),  # noqa: E501
    "P-521": Curve(
        ec.SECP521R1,
        (1 << 521) - 1,
        (1 << 521) - 4,
        0x51953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00,  # noqa: E501
        0x1fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409),  # noqa: E501
}
# The digest each curve is signed with here: its JOSE algorithm's hash.
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    spec.curve: spec.hash for spec in SIGN.values() if spec.curve is not None}


class RecoveryError(ValueError):
    """The signatures name no single public key of the curve."""


def _add(c: Curve, p1: Point, p2: Point) -> Point:
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2 and (y1 + y2) % c.p == 0:
        return None
    if p1 == p2:
        slope = (3 * x1 * x1 + c.a) * pow(2 * y1, -1, c.p) % c.p
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, c.p) % c.p
    x3 = (slope * slope - x1 - x2) % c.p
    return x3, (slope * (x1 - x3) - y1) % c.p


def _mul(c: Curve, k: int, point: Point) -> Point:
    out: Point = None
    while k:
        if k & 1:
            out = _add(c, out, point)
        point = _add(c, point, point)
        k >>= 1
    return out


def _z(c: Curve, digest: bytes) -> int:
    """The digest as ECDSA reads it: its leftmost bits, as many as the order has."""
    z = int.from_bytes(digest, "big")
    excess = len(digest) * 8 - c.n.bit_length()
    return z >> excess if excess > 0 else z


def candidates(crv: str, digest: bytes, signature: bytes) -> set[tuple[int, int]]:
    """The public points for which the raw r||s `signature` over `digest` verifies."""
    c = CURVES[crv]
    half = len(signature) // 2
    r = int.from_bytes(signature[:half], "big")
    s = int.from_bytes(signature[half:], "big")
    if not (0 < r < c.n and 0 < s < c.n):
        return set()
    r_inv = pow(r, -1, c.n)
    u1, u2 = (-_z(c, digest) * r_inv) % c.n, (s * r_inv) % c.n
    g = _mul(c, u1, c.generator)
    found = set()
    for x in (r, r + c.n):
        if x >= c.p:
            continue
        alpha = (x * x * x + c.a * x + c.b) % c.p
        y = pow(alpha, (c.p + 1) // 4, c.p)  # every curve here has p ≡ 3 (mod 4)
        if y * y % c.p != alpha:
            continue
        for ry in (y, c.p - y):
            q = _add(c, g, _mul(c, u2, (x, ry)))
            if q is not None:
                found.add(q)
    return found


def recover(crv: str, signed: list[tuple[bytes, bytes]]) -> ec.EllipticCurvePublicKey:
    """The one public key of curve `crv` under which every (digest, r||s) verifies."""
    if crv not in CURVES or len(signed) < 2:
        raise RecoveryError("Two signatures on a known curve are needed.")
    common: set[tuple[int, int]] | None = None
    for digest, signature in signed:
        found = candidates(crv, digest, signature)
        common = found if common is None else common & found
    if not common or len(common) != 1:
        raise RecoveryError("The signatures do not name one public key.")
    ((x, y),) = common
    key = ec.EllipticCurvePublicNumbers(x, y, CURVES[crv].cls()).public_key()
    algorithm = ec.ECDSA(utils.Prehashed(HASHES[crv]()))
    for digest, signature in signed:
        half = len(signature) // 2
        der = utils.encode_dss_signature(int.from_bytes(signature[:half], "big"),
                                         int.from_bytes(signature[half:], "big"))
        try:
            key.verify(der, digest, algorithm)
        except InvalidSignature:
            raise RecoveryError("The recovered key does not verify the signatures.") from None
    return key
