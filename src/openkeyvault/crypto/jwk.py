"""JSON Web Keys ⇄ `cryptography` key objects (RSA and EC; base64url without padding)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openkeyvault.crypto.encoding import b64url_decode, b64url_encode

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# Key Vault curve names → curve classes and coordinate sizes in bytes.
CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "P-256": (ec.SECP256R1, 32),
    "P-256K": (ec.SECP256K1, 32),
    "P-384": (ec.SECP384R1, 48),
    "P-521": (ec.SECP521R1, 66),
}
_CURVE_NAMES = {cls().name: crv for crv, (cls, _) in CURVES.items()}

RSA_SIZES = (2048, 3072, 4096)


class JwkError(ValueError):
    """The JWK is malformed or inconsistent. The message never holds key material."""


b64u = b64url_encode


def b64u_decode(value: Any, field: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise JwkError(f"JWK field '{field}' must be a non-empty base64url string.")
    try:
        return b64url_decode(value)
    except ValueError:
        raise JwkError(f"JWK field '{field}' is not valid base64url.") from None


def _int(jwk: dict[str, Any], field: str) -> int:
    return int.from_bytes(b64u_decode(jwk.get(field), field), "big")


def _uint(n: int, size: int | None = None) -> bytes:
    return n.to_bytes(size or max(1, (n.bit_length() + 7) // 8), "big")


def curve_name(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    return _CURVE_NAMES[key.curve.name]


def public_jwk(key: PrivateKey | PublicKey) -> dict[str, Any]:
    """The public members of a key: RSA {n, e}, EC {crv, x, y}."""
    pub = key.public_key() if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) \
        else key
    if isinstance(pub, rsa.RSAPublicKey):
        nums = pub.public_numbers()
        return {"n": b64u(_uint(nums.n)), "e": b64u(_uint(nums.e))}
    crv = curve_name(pub)
    size = CURVES[crv][1]
    pn = pub.public_numbers()
    return {"crv": crv, "x": b64u(_uint(pn.x, size)), "y": b64u(_uint(pn.y, size))}


def private_from_jwk(jwk: dict[str, Any], family: str) -> PrivateKey:
    """Build a private key from a JWK of `family` ("RSA" or "EC"), checking consistency."""
    if family == "RSA":
        return _rsa_private(jwk)
    if family == "EC":
        return _ec_private(jwk)
    raise JwkError(f"Key type family '{family}' cannot be imported.")


def _rsa_private(jwk: dict[str, Any]) -> rsa.RSAPrivateKey:
    if "d" not in jwk:
        raise JwkError("The JWK has no private key material ('d').")
    n, e, d = _int(jwk, "n"), _int(jwk, "e"), _int(jwk, "d")
    if n.bit_length() not in RSA_SIZES:
        raise JwkError(
            f"RSA keys must be {', '.join(map(str, RSA_SIZES))} bits; this one has "
            f"{n.bit_length()}."
        )
    if e < 3 or e % 2 == 0:
        raise JwkError("The RSA public exponent must be an odd number of at least 3.")
    try:
        if "p" in jwk and "q" in jwk:
            p, q = _int(jwk, "p"), _int(jwk, "q")
        else:
            p, q = rsa.rsa_recover_prime_factors(n, e, d)
        dmp1 = _int(jwk, "dp") if "dp" in jwk else rsa.rsa_crt_dmp1(d, p)
        dmq1 = _int(jwk, "dq") if "dq" in jwk else rsa.rsa_crt_dmq1(d, q)
        iqmp = _int(jwk, "qi") if "qi" in jwk else rsa.rsa_crt_iqmp(p, q)
        numbers = rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, rsa.RSAPublicNumbers(e, n))
        return numbers.private_key()
    except (ValueError, TypeError):
        raise JwkError("The RSA key parameters are inconsistent.") from None


def _ec_private(jwk: dict[str, Any]) -> ec.EllipticCurvePrivateKey:
    crv = jwk.get("crv")
    if crv == "SECP256K1":
        crv = "P-256K"
    if crv not in CURVES:
        raise JwkError(f"Unsupported curve '{str(crv)[:16]}'; use one of {', '.join(CURVES)}.")
    if "d" not in jwk:
        raise JwkError("The JWK has no private key material ('d').")
    curve_cls, size = CURVES[crv]
    d = _int(jwk, "d")
    try:
        key = ec.derive_private_key(d, curve_cls())
    except (ValueError, TypeError):
        raise JwkError("The EC private key is out of range for its curve.") from None
    if "x" in jwk or "y" in jwk:
        pn = key.public_key().public_numbers()
        if (_int(jwk, "x"), _int(jwk, "y")) != (pn.x, pn.y):
            raise JwkError("The EC public point does not match the private key.")
    return key


def public_from_jwk(jwk: dict[str, Any], family: str) -> PublicKey:
    """Build a public key from a JWK (used where only public material is at hand)."""
    try:
        if family == "RSA":
            return rsa.RSAPublicNumbers(_int(jwk, "e"), _int(jwk, "n")).public_key()
        crv = jwk.get("crv")
        if crv not in CURVES:
            raise JwkError(f"Unsupported curve '{str(crv)[:16]}'.")
        curve_cls, _ = CURVES[crv]
        return ec.EllipticCurvePublicNumbers(_int(jwk, "x"), _int(jwk, "y"),
                                             curve_cls()).public_key()
    except (ValueError, TypeError) as exc:
        if isinstance(exc, JwkError):
            raise
        raise JwkError("The public key parameters are invalid.") from None
