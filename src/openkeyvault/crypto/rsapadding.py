"""RSA decryption paddings decoded on the host, after the raw RSA operation (RFC 8017
RSADP) was done where the private key is: RSA-OAEP with SHA-256 (RFC 8017 §7.1.2), and
RSAES-PKCS1-v1_5 with implicit rejection (draft-irtf-cfrg-rsa-guidance, as OpenSSL 3.2).

The PKCS#11 keystore needs them where a token lacks the mechanism or answers a bad padding
with an error (keystore/pkcs11.py, docs/hsm.md). Every failure is one `DecryptionError`
or, for PKCS#1 v1.5, a synthetic message; the checks run without early exits, but this
is Python, not constant-time code.
"""

from __future__ import annotations

import hashlib
import hmac

from openkeyvault.crypto.algorithms import DecryptionError


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def mgf1_sha256(seed: bytes, length: int) -> bytes:
    """MGF1 with SHA-256 (RFC 8017 §B.2.1)."""
    out = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest()
                   for i in range((length + 31) // 32))
    return out[:length]


_EMPTY_LABEL_SHA256 = hashlib.sha256(b"").digest()


def oaep_sha256_decode(em: bytes) -> bytes:
    """The message of an RSA-OAEP-256 encoded block (RFC 8017 §7.1.2 step 3: SHA-256,
    MGF1-SHA-256, empty label), given the raw RSA decryption `em` (modulus length).

    Runs on the host because SoftHSM2 refuses CKM_RSA_PKCS_OAEP with SHA-256
    (CKR_ARGUMENTS_BAD): the token does the private-key step (CKM_RSA_X_509) and only the
    padding is checked here. Every check feeds one flag, with no early exit, and every
    failure is the same `DecryptionError`: Manger's attack needs to tell a bad first byte
    from the other failures.
    """
    h_len = 32
    if len(em) < 2 * h_len + 2:
        raise DecryptionError()
    masked_seed, masked_db = em[1:1 + h_len], em[1 + h_len:]
    seed = _xor(masked_seed, mgf1_sha256(masked_db, h_len))
    db = _xor(masked_db, mgf1_sha256(seed, len(masked_db)))
    bad = em[0] | int(not hmac.compare_digest(db[:h_len], _EMPTY_LABEL_SHA256))
    found = index = 0  # the 0x01 that ends the zero padding, and where it is
    for i in range(h_len, len(db)):
        before = found ^ 1
        bad |= int(db[i] > 1) & before  # a byte other than 00 before the separator
        first = int(db[i] == 1) & before
        index += i * first
        found |= first
    if bad | (found ^ 1):
        raise DecryptionError()
    return db[index + 1:]


def implicit_rejection_kdk(secret: bytes, ciphertext: bytes) -> bytes:
    """The key-derivation key of implicit rejection for one ciphertext: HMAC-SHA256 keyed
    with the key's secret (OpenSSL keys it with SHA-256 of the private exponent; a token
    will not give that out, so each key has its own random secret in its blob)."""
    return hmac.new(secret, ciphertext, hashlib.sha256).digest()


def _prf(kdk: bytes, label: bytes, length: int) -> bytes:
    """The implicit-rejection PRF: HMAC-SHA256(kdk, i || label || bit length) for
    i = 0, 1, ... (two bytes each, big-endian), cut to `length` bytes."""
    bits = (length * 8).to_bytes(2, "big")
    out = b"".join(hmac.new(kdk, i.to_bytes(2, "big") + label + bits, hashlib.sha256).digest()
                   for i in range((length + 31) // 32))
    return out[:length]


_LENGTH_TRIES = 128  # candidate lengths drawn for the synthetic message


def _synthetic(kdk: bytes, k: int) -> bytes:
    """The message returned for a bad padding: its length is the last of 128 PRF-drawn
    candidates (masked to the bit length of the maximum) below the maximum of k - 10."""
    message = _prf(kdk, b"message", k)
    candidates = _prf(kdk, b"length", 2 * _LENGTH_TRIES)
    max_length = k - 2 - 8
    mask = (1 << max_length.bit_length()) - 1
    length = 0
    for i in range(0, len(candidates), 2):
        candidate = int.from_bytes(candidates[i:i + 2], "big") & mask
        length = candidate if candidate < max_length else length
    return message[k - length:]


def pkcs1_v15_decode(em: bytes, kdk: bytes) -> bytes:
    """The message of an RSAES-PKCS1-v1_5 encoded block `em` (the raw RSA decryption), or,
    when the padding is bad, a synthetic message derived from `kdk`: implicit rejection as
    in draft-irtf-cfrg-rsa-guidance and OpenSSL 3.2, so the caller cannot tell.

    Runs on the host because a token's CKM_RSA_PKCS decryption fails on a bad padding, and
    that visible failure is the oracle of Bleichenbacher's attack; the token does only the
    private-key step (CKM_RSA_X_509). The synthetic message is computed for every
    ciphertext, good or bad.
    """
    k = len(em)
    synthetic = _synthetic(kdk, k)
    good = int(em[0] == 0) & int(em[1] == 2)
    found = zero = 0  # the first 00 after the padding string, and where it is
    for i in range(2, k):
        first = int(em[i] == 0) & (found ^ 1)
        zero += i * first
        found |= first
    good &= found & int(zero >= 2 + 8)  # at least 8 bytes of padding
    return em[zero + 1:] if good else synthetic
