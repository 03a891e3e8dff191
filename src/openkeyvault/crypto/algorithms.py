"""The algorithm table: every JSON Web Algorithm the key operations accept, in one place.

Functions here take `cryptography` key objects and bytes, and raise
`AlgorithmError` (a usage problem the caller can fix: wrong algorithm for the
key, wrong digest length, plaintext too long) or `DecryptionError` (one
undistinguishable failure for every bad ciphertext).

The AES algorithms of oct keys (`AES`, `aes_spec`) are a table and its check only: oct
keys are held in an HSM, which does the AES.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from openkeyvault.crypto.jwk import CURVES, PrivateKey, PublicKey, curve_name


class AlgorithmError(ValueError):
    pass


class DecryptionError(ValueError):
    """A ciphertext did not decrypt. Always the same message, whatever went wrong."""

    def __init__(self) -> None:
        super().__init__("The ciphertext could not be decrypted with this key.")


@dataclass(frozen=True)
class SignAlg:
    family: str  # "RSA" or "EC"
    hash: type[hashes.HashAlgorithm]
    pss: bool = False
    curve: str | None = None  # EC algorithms are tied to one curve

    @property
    def digest_size(self) -> int:
        return self.hash().digest_size

    @functools.cached_property
    def prehashed(self) -> utils.Prehashed:
        return utils.Prehashed(self.hash())

    @functools.cached_property
    def rsa_padding(self) -> padding.AsymmetricPadding:
        if self.pss:
            return padding.PSS(mgf=padding.MGF1(self.hash()), salt_length=self.digest_size)
        return padding.PKCS1v15()

    @functools.cached_property
    def ecdsa(self) -> ec.ECDSA:
        return ec.ECDSA(self.prehashed)


SIGN: dict[str, SignAlg] = {
    "RS256": SignAlg("RSA", hashes.SHA256),
    "RS384": SignAlg("RSA", hashes.SHA384),
    "RS512": SignAlg("RSA", hashes.SHA512),
    "PS256": SignAlg("RSA", hashes.SHA256, pss=True),
    "PS384": SignAlg("RSA", hashes.SHA384, pss=True),
    "PS512": SignAlg("RSA", hashes.SHA512, pss=True),
    "ES256": SignAlg("EC", hashes.SHA256, curve="P-256"),
    "ES256K": SignAlg("EC", hashes.SHA256, curve="P-256K"),
    "ES384": SignAlg("EC", hashes.SHA384, curve="P-384"),
    "ES512": SignAlg("EC", hashes.SHA512, curve="P-521"),
}

# RSA encryption algorithms (also used by wrapKey/unwrapKey) and the bytes of
# overhead each padding needs.
ENCRYPT: dict[str, tuple[str, int]] = {
    "RSA1_5": ("pkcs1", 11),
    "RSA-OAEP": ("oaep-sha1", 2 * 20 + 2),
    "RSA-OAEP-256": ("oaep-sha256", 2 * 32 + 2),
}


_FAMILY: dict[type, str] = {}


def family(key: PrivateKey | PublicKey) -> str:
    cls = type(key)
    fam = _FAMILY.get(cls)
    if fam is None:
        fam = _FAMILY[cls] = (
            "RSA" if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) else "EC"
        )
    return fam


def _public(key: PrivateKey | PublicKey) -> PublicKey:
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key.public_key()
    return key


def sign_spec(alg: str, key: PrivateKey | PublicKey, digest: bytes) -> SignAlg:
    """The table entry for a signature algorithm, checked against the key (private or
    public: a backend whose private key stays in a token checks with the public one)
    and the digest length; `AlgorithmError` for what does not fit."""
    spec = SIGN.get(alg)
    if spec is None:
        raise AlgorithmError(f"Unknown signature algorithm '{alg[:32]}'.")
    fam = family(key)
    if spec.family != fam:
        raise AlgorithmError(f"Algorithm {alg} cannot be used with an {fam} key.")
    if spec.curve is not None:
        crv = curve_name(key)  # type: ignore[arg-type]
        if crv != spec.curve:
            raise AlgorithmError(f"Algorithm {alg} needs a {spec.curve} key; this key is {crv}.")
    if len(digest) != spec.digest_size:
        raise AlgorithmError(
            f"Invalid digest length for {alg}: {len(digest)} bytes given, "
            f"{spec.digest_size} expected."
        )
    return spec


def sign(key: PrivateKey, alg: str, digest: bytes) -> bytes:
    """Sign a digest. ECDSA signatures are raw r||s, as JWS defines them."""
    spec = sign_spec(alg, key, digest)
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(digest, spec.rsa_padding, spec.prehashed)
    der = key.sign(digest, spec.ecdsa)
    r, s = utils.decode_dss_signature(der)
    size = CURVES[curve_name(key)][1]
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def verify(key: PrivateKey | PublicKey, alg: str, digest: bytes, signature: bytes) -> bool:
    spec = sign_spec(alg, key, digest)
    pub = _public(key)
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            pub.verify(signature, digest, spec.rsa_padding, spec.prehashed)
            return True
        size = CURVES[curve_name(pub)][1]
        if len(signature) != 2 * size:
            return False
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        pub.verify(utils.encode_dss_signature(r, s), digest, spec.ecdsa)
        return True
    except InvalidSignature:
        return False


def encrypt_spec(alg: str, key_family: str) -> tuple[str, int]:
    """(padding kind, overhead bytes) of an encryption algorithm for a key of
    `key_family`; AlgorithmError for an unknown one or a key that is not RSA."""
    spec = ENCRYPT.get(alg)
    if spec is None:
        raise AlgorithmError(f"Unknown encryption algorithm '{alg[:32]}'.")
    if key_family != "RSA":
        raise AlgorithmError(f"Algorithm {alg} needs an RSA key.")
    return spec


def _padding(alg: str, key: PrivateKey | PublicKey) -> tuple[padding.AsymmetricPadding, int]:
    kind, overhead = encrypt_spec(alg, family(key))
    if kind == "pkcs1":
        return padding.PKCS1v15(), overhead
    h: hashes.HashAlgorithm = hashes.SHA1() if kind == "oaep-sha1" else hashes.SHA256()  # noqa: S303
    return padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None), overhead


def encrypt(key: PrivateKey | PublicKey, alg: str, plaintext: bytes) -> bytes:
    pad, overhead = _padding(alg, key)
    pub = _public(key)
    assert isinstance(pub, rsa.RSAPublicKey)
    limit = pub.key_size // 8 - overhead
    if len(plaintext) > limit:
        raise AlgorithmError(
            f"The plaintext is too long for {alg} with this key: at most {limit} bytes."
        )
    return pub.encrypt(plaintext, pad)


def decrypt(key: PrivateKey, alg: str, ciphertext: bytes) -> bytes:
    """Decrypt. RSA1_5 uses implicit rejection: a ciphertext with bad padding yields a
    pseudo-random plaintext rather than an error, so padding validity never shows."""
    pad, _ = _padding(alg, key)
    assert isinstance(key, rsa.RSAPrivateKey)
    if len(ciphertext) != (key.key_size + 7) // 8:
        raise DecryptionError()
    try:
        return key.decrypt(ciphertext, pad)
    except ValueError:
        raise DecryptionError() from None


# AES algorithms, for oct keys (held in an HSM): key bits of each size, then the table.
AES_SIZES = (128, 192, 256)
GCM, CBC, CBCPAD, KW = "GCM", "CBC", "CBCPAD", "KW"


@dataclass(frozen=True)
class AesAlg:
    """One AES algorithm: its mode, the key size it needs and what its inputs must be."""

    mode: str  # GCM, CBC, CBCPAD (CBC with PKCS#7 padding) or KW (RFC 3394 key wrap)
    key_bits: int
    iv_bytes: int = 0  # the iv's length (none for KW)
    iv_given: bool = False  # the caller gives the iv (CBC); for GCM the service makes it
    tag_bytes: int = 0  # the authentication tag (GCM)
    aad: bool = False  # takes additional authenticated data (GCM)
    multiple: int = 1  # the input's length must be a multiple of this (CBC 16, KW 8)
    least: int = 0  # and at least this long (KW: two 64-bit blocks)

    @property
    def wraps(self) -> bool:
        """A key wrap algorithm (wrapKey and unwrapKey), not an encryption one."""
        return self.mode == KW


def _aes_table() -> dict[str, AesAlg]:
    table: dict[str, AesAlg] = {}
    for bits in AES_SIZES:
        table[f"A{bits}GCM"] = AesAlg(GCM, bits, iv_bytes=12, tag_bytes=16, aad=True)
        table[f"A{bits}CBC"] = AesAlg(CBC, bits, iv_bytes=16, iv_given=True, multiple=16)
        table[f"A{bits}CBCPAD"] = AesAlg(CBCPAD, bits, iv_bytes=16, iv_given=True)
        table[f"A{bits}KW"] = AesAlg(KW, bits, multiple=8, least=16)
    return table


# The AES algorithms of encrypt/decrypt (GCM, CBC, CBCPAD) and wrapKey/unwrapKey (KW).
AES: dict[str, AesAlg] = _aes_table()


def aes_spec(alg: str, key_family: str, key_bits: int, wrap: bool) -> AesAlg:
    """The table entry of an AES algorithm for a key of `key_family` and `key_bits`, to
    encrypt or decrypt data (`wrap` false) or to wrap or unwrap a key (`wrap` true);
    `AlgorithmError` for an unknown algorithm, one of the other use, an RSA algorithm on
    an oct key, or a key that is not oct or not of the algorithm's size."""
    spec = AES.get(alg)
    if spec is None:
        if alg in ENCRYPT:
            raise AlgorithmError(f"Algorithm {alg} needs an RSA key." if key_family != "RSA"
                                 else f"Algorithm {alg} is not an AES algorithm.")
        what = "key wrap" if wrap else "encryption"
        raise AlgorithmError(f"Unknown {what} algorithm '{alg[:32]}'.")
    if spec.wraps != wrap:
        raise AlgorithmError(f"Algorithm {alg} wraps keys: use it to wrap and unwrap keys."
                             if spec.wraps else
                             f"Algorithm {alg} encrypts data: use it to encrypt and decrypt.")
    if key_family != "oct":
        raise AlgorithmError(f"Algorithm {alg} needs an oct key.")
    if key_bits != spec.key_bits:
        raise AlgorithmError(f"Algorithm {alg} needs a {spec.key_bits}-bit key; this key is "
                             f"{key_bits}-bit.")
    return spec
