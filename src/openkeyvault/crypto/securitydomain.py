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

The restore blob (`az keyvault security-domain restore-blob`, read back by `POST
/securitydomain/upload`) is made offline from a file and a quorum of its private keys:

    {"EncData": {"kdf": "sp108_kdf", "data": [{"tag": T, "compact_jwe": J}]},
     "WrappedKey": {"x5t_256": X, "enc_key": K}}

- The EncData items are the file's plaintexts again, each under the SP 800-108 key of a
  NEW 32-byte master key (as above).
- `enc_key` is that master key as a compact JWE to the receiving pool's exchange (transfer)
  certificate: `RSA-OAEP-256` + `A256CBC-HS512`; `x5t_256` is that certificate's base64url
  SHA-256 thumbprint.

Pure functions, no state; randomness from `secrets` / `os.urandom`.
"""

from __future__ import annotations

import base64
import datetime as dt
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
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_der_private_key,
)
from cryptography.x509.oid import NameOID

from openkeyvault.crypto.encoding import b64_either_decode, b64url_decode, b64url_encode

__all__ = ["MIN_RSA_BITS", "RestoreBlobError", "WrappingCertificate", "WrappingKeyError",
           "a256cbc_hs512", "document", "open_restore_blob", "sp800_108", "split_257",
           "transfer_jwk", "transfer_key_pair", "wrapping_certificate"]

MIN_RSA_BITS = 2048
MASTER_KEY_BYTES = 32
KDF = "sp108_kdf"
KEY_ALGORITHM = "shamir_share"
_PRIME = 257
TRANSFER_KEY_BITS = 2048
TRANSFER_KEY_DAYS = 30  # an exchange key serves one recovery; its certificate is short-lived


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


# ---- the exchange (transfer) key and the restore blob --------------------------------------

class RestoreBlobError(ValueError):
    """A restore blob that cannot be opened; the message is safe to show a client."""


def transfer_key_pair(name: str) -> tuple[bytes, bytes]:
    """A fresh RSA exchange key: (its private key as PKCS#8 DER, its self-signed
    certificate's DER), the certificate naming `name`."""
    key = rsa.generate_private_key(65537, TRANSFER_KEY_BITS)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=TRANSFER_KEY_DAYS))
            .sign(key, hashes.SHA256()))
    der = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    return der, cert.public_bytes(Encoding.DER)


def _b64url_uint(value: int) -> str:
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def transfer_jwk(certificate: bytes, kid: str) -> dict[str, object]:
    """The exchange key as a JWK (SecurityDomainJsonWebKey) with its certificate in `x5c`."""
    key = x509.load_der_x509_certificate(certificate).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    numbers = key.public_numbers()
    return {"kid": kid, "kty": "RSA", "key_ops": ["encrypt", "wrapKey"],
            "alg": "RSA-OAEP-256", "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e),
            "x5c": [base64.b64encode(certificate).decode()],
            "x5t": b64url_encode(hashlib.sha1(certificate).digest()),  # noqa: S324 (JWK x5t)
            "x5t#S256": b64url_encode(hashlib.sha256(certificate).digest())}


def a256cbc_hs512_open(compact: str, cek: bytes) -> bytes | None:
    """The plaintext of a compact A256CBC-HS512 JWE under the 64-byte `cek`; None when its
    tag does not verify or it does not decrypt."""
    protected, _, iv, ciphertext, tag = compact.split(".")
    try:
        iv_b, ct_b, tag_b = b64url_decode(iv), b64url_decode(ciphertext), b64url_decode(tag)
    except ValueError:
        return None
    aad = protected.encode("ascii")
    mac = hmac.new(cek[:32], aad + iv_b + ct_b + struct.pack(">Q", len(aad) * 8),
                   hashlib.sha512).digest()[:32]
    if len(iv_b) != 16 or not ct_b or len(ct_b) % 16 or not hmac.compare_digest(mac, tag_b):
        return None
    dec = Cipher(algorithms.AES(cek[32:]), modes.CBC(iv_b)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(dec.update(ct_b) + dec.finalize()) + unpadder.finalize()
    except ValueError:
        return None


def _compact(value: object) -> tuple[str, dict[str, object]]:
    """A compact JWE of five parts and its protected header, or RestoreBlobError."""
    if not isinstance(value, str) or value.count(".") != 4:
        raise RestoreBlobError("a compact JWE is malformed")
    try:
        header = json.loads(b64url_decode(value.split(".")[0]))
    except ValueError:
        raise RestoreBlobError("a compact JWE's header is malformed") from None
    if not isinstance(header, dict) or header.get("enc") != "A256CBC-HS512":
        raise RestoreBlobError("a compact JWE is not A256CBC-HS512")
    return value, header


def open_restore_blob(blob: str, private_key_der: bytes, certificate: bytes
                      ) -> dict[str, bytes]:
    """The plaintexts (tag → bytes) of a restore blob made for the exchange key
    (`private_key_der`, `certificate`); RestoreBlobError saying what is wrong: a blob for
    another exchange key, a damaged blob, or data that does not open."""
    try:
        doc = json.loads(blob)
    except ValueError:
        raise RestoreBlobError("The restore blob is not JSON.") from None
    if not isinstance(doc, dict):
        raise RestoreBlobError("The restore blob is not a JSON object.")
    wrapped, enc_data = doc.get("WrappedKey"), doc.get("EncData")
    if not isinstance(wrapped, dict) or not isinstance(enc_data, dict):
        raise RestoreBlobError("The restore blob has no WrappedKey or EncData.")
    thumbprint = b64url_encode(hashlib.sha256(certificate).digest())
    if wrapped.get("x5t_256") != thumbprint:
        raise RestoreBlobError("The restore blob was not made for this managed HSM's "
                               "exchange key (its WrappedKey.x5t_256 is not the exchange "
                               "certificate's thumbprint).")
    if enc_data.get("kdf") != KDF or not isinstance(enc_data.get("data"), list):
        raise RestoreBlobError(f"The restore blob's EncData is not '{KDF}' data.")
    try:
        compact, header = _compact(wrapped.get("enc_key"))
        if header.get("alg") != "RSA-OAEP-256":
            raise RestoreBlobError("a compact JWE is not RSA-OAEP-256")
        key = load_der_private_key(private_key_der, None)
        assert isinstance(key, rsa.RSAPrivateKey)
        oaep = asym.OAEP(mgf=asym.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                         label=None)
        try:
            cek = key.decrypt(b64url_decode(compact.split(".")[1]), oaep)
        except ValueError:
            raise RestoreBlobError("its key does not decrypt") from None
        master = a256cbc_hs512_open(compact, cek) if len(cek) == 64 else None
        if master is None or len(master) != MASTER_KEY_BYTES:
            raise RestoreBlobError("its key does not decrypt")
    except RestoreBlobError as e:
        raise RestoreBlobError(f"The restore blob's WrappedKey is damaged: {e}.") from None
    out: dict[str, bytes] = {}
    for item in enc_data["data"]:
        tag = item.get("tag") if isinstance(item, dict) else None
        if not isinstance(tag, str) or not tag:
            raise RestoreBlobError("The restore blob's EncData has an item without a tag.")
        try:
            compact, _ = _compact(item.get("compact_jwe"))
        except RestoreBlobError as e:
            raise RestoreBlobError(f"The restore blob's EncData item '{tag}' is damaged: "
                                   f"{e}.") from None
        plaintext = a256cbc_hs512_open(compact, sp800_108(master, tag))
        if plaintext is None:
            raise RestoreBlobError(f"The restore blob's EncData item '{tag}' does not open "
                                   "with its key.")
        out[tag] = plaintext
    return out
