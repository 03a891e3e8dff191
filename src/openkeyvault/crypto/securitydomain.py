"""A managed HSM security domain file, in the format the Azure CLI's `az keyvault
security-domain restore-blob` / `upload` read (azure-cli, command_modules/keyvault/
security_domain/ and custom.py: the only description of the format there is).

The file is one JSON document:

    {"EncData": {"kdf": "sp108_kdf", "data": [{"tag": T, "compact_jwe": J}]},
     "SharedKeys": {"key_algorithm": "shamir_share", "required": M,
                    "enc_shares": [{"x5t_256": X, "enc_key": S}, ...]}}

- A fresh 32-byte master key per file is split with Shamir's scheme over GF(257), M of N.
  Each share is, per master-key byte, one little-endian uint16 `x << 9 | y` (x the share's
  number 1..N, y = f(x) in 0..256: nine bits), the layout the CLI's `Share.from_uint16`
  reads. (GF(257), not crypto/shamir.py's GF(2^8): the CLI interpolates modulo 257.)
- Share i is a compact JWE to certificate i: `RSA-OAEP-256` (SHA-256, MGF1-SHA-256) wraps a
  64-byte content key, content encrypted with `A256CBC-HS512` (RFC 7518 §5.2.5); `x5t_256`
  is the base64url SHA-256 of the certificate's DER, as the CLI matches a key file to it.
- Each EncData item is a compact JWE with `alg: dir`, `enc: A256CBC-HS512`, `kid: tag`,
  whose key is SP 800-108 counter-mode KDF (HMAC-SHA512, label = tag, empty context,
  512 bits) of the master key.

Pure functions, no state; randomness from `secrets` / `os.urandom`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import struct
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding

from openkeyvault.crypto.encoding import b64_either_decode, b64url_decode, b64url_encode

__all__ = ["MIN_RSA_BITS", "WrappingCertificate", "WrappingKeyError", "a256cbc_hs512",
           "document", "sp800_108", "split_257", "wrapping_certificate"]

MIN_RSA_BITS = 2048
MASTER_KEY_BYTES = 32
KDF = "sp108_kdf"
KEY_ALGORITHM = "shamir_share"
_PRIME = 257


class WrappingKeyError(ValueError):
    """A wrapping key that cannot take a share; the message is safe to show a client."""


def certificate_der(data: bytes) -> bytes:
    """The DER of an X.509 certificate given as PEM or DER (a `.cer` file)."""
    for load in (x509.load_pem_x509_certificate, x509.load_der_x509_certificate):
        try:
            return load(data).public_bytes(Encoding.DER)
        except ValueError:
            continue
    raise WrappingKeyError("not an X.509 certificate (PEM or DER)")


@dataclass(frozen=True)
class WrappingCertificate:
    """A certificate a share is encrypted to: its DER and its RSA public key."""

    der: bytes
    public_key: rsa.RSAPublicKey

    @property
    def x5t_s256(self) -> str:
        return b64url_encode(hashlib.sha256(self.der).digest())


def wrapping_certificate(x5c0: str, n: str | None = None, e: str | None = None
                         ) -> WrappingCertificate:
    """The first certificate of a JWK's `x5c` (base64 DER), which must hold an RSA key of
    at least 2048 bits, and match `n`/`e` when they are given."""
    try:
        der = b64_either_decode(x5c0)
        cert = x509.load_der_x509_certificate(der)
        key = cert.public_key()
    except ValueError:
        raise WrappingKeyError("its x5c[0] is not a base64 DER X.509 certificate") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise WrappingKeyError("its certificate's key is not an RSA key")
    if key.key_size < MIN_RSA_BITS:
        raise WrappingKeyError(f"its certificate's RSA key has {key.key_size} bits; at least "
                               f"{MIN_RSA_BITS} are required")
    numbers = key.public_numbers()
    for value, expected, name in ((n, numbers.n, "n"), (e, numbers.e, "e")):
        if value is not None and _b64url_int(value) != expected:
            raise WrappingKeyError(f"its '{name}' is not its certificate's")
    return WrappingCertificate(cert.public_bytes(Encoding.DER), key)


def _b64url_int(value: str) -> int | None:
    try:
        return int.from_bytes(b64url_decode(value), "big")
    except ValueError:
        return None


# ---- Shamir over GF(257) -----------------------------------------------------------------

def split_257(secret: bytes, required: int, count: int) -> list[bytes]:
    """`count` shares of `secret`, any `required` of which recover it: per secret byte a
    polynomial of degree required − 1 with uniformly random coefficients in GF(257), the
    byte its constant term; share x holds, per byte, `x << 9 | f(x)` as a little-endian
    uint16."""
    if not 2 <= required <= count <= 126:
        raise ValueError("2 <= required <= count <= 126")
    shares = [bytearray() for _ in range(count)]
    for byte in secret:
        coefficients = [byte] + [secrets.randbelow(_PRIME) for _ in range(required - 1)]
        for x in range(1, count + 1):
            y = 0
            for c in reversed(coefficients):  # Horner
                y = (y * x + c) % _PRIME
            shares[x - 1] += struct.pack("<H", x << 9 | y)
    return [bytes(s) for s in shares]


# ---- JWE pieces ---------------------------------------------------------------------------

def sp800_108(key: bytes, label: str, context: str = "", bits: int = 512) -> bytes:
    """NIST SP 800-108 KDF in counter mode with HMAC-SHA512: K(i) = HMAC(key, [i]32 ||
    label || 0x00 || context || [bits]32), concatenated and cut to `bits`."""
    suffix = label.encode() + b"\x00" + context.encode() + struct.pack(">I", bits)
    out = b""
    i = 1
    while len(out) * 8 < bits:
        out += hmac.new(key, struct.pack(">I", i) + suffix, hashlib.sha512).digest()
        i += 1
    return out[:bits // 8]


def _header(fields: dict[str, str]) -> str:
    return b64url_encode(json.dumps(fields, separators=(",", ":")).encode())


def a256cbc_hs512(cek: bytes, header: dict[str, str], plaintext: bytes,
                  encrypted_key: bytes = b"") -> str:
    """A compact JWE of `plaintext` under the 64-byte `cek` with A256CBC-HS512 (RFC 7518
    §5.2.5: MAC key the first half, AES key the second, tag the first 32 bytes of
    HMAC-SHA512 over AAD || IV || ciphertext || AL)."""
    protected = _header({**header, "enc": "A256CBC-HS512"})
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(cek[32:]), modes.CBC(iv)).encryptor()
    ciphertext = enc.update(padded) + enc.finalize()
    aad = protected.encode("ascii")
    tag = hmac.new(cek[:32], aad + iv + ciphertext + struct.pack(">Q", len(aad) * 8),
                   hashlib.sha512).digest()[:32]
    return ".".join((protected, b64url_encode(encrypted_key), b64url_encode(iv),
                     b64url_encode(ciphertext), b64url_encode(tag)))


def _to_certificate(cert: WrappingCertificate, plaintext: bytes) -> str:
    cek = os.urandom(64)
    oaep = asym.OAEP(mgf=asym.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    return a256cbc_hs512(cek, {"alg": "RSA-OAEP-256", "kid": cert.x5t_s256}, plaintext,
                         cert.public_key.encrypt(cek, oaep))


def document(items: dict[str, bytes], certificates: list[WrappingCertificate],
             required: int) -> str:
    """The security domain file (module docstring) holding `items` (tag → plaintext),
    its fresh master key shared `required` of len(certificates)."""
    master = secrets.token_bytes(MASTER_KEY_BYTES)
    shares = split_257(master, required, len(certificates))
    data = [{"compact_jwe": a256cbc_hs512(sp800_108(master, tag), {"alg": "dir", "kid": tag},
                                          plaintext), "tag": tag}
            for tag, plaintext in items.items()]
    enc_shares = [{"enc_key": _to_certificate(cert, share), "x5t_256": cert.x5t_s256}
                  for cert, share in zip(certificates, shares, strict=True)]
    return json.dumps({"EncData": {"data": data, "kdf": KDF},
                       "SharedKeys": {"enc_shares": enc_shares, "key_algorithm": KEY_ALGORITHM,
                                      "required": required}})
