"""The inputs of an operation with a symmetric (oct) key, checked against the AES table of
`crypto/algorithms.py` before a backend does it: what does not fit the algorithm is a
`KeyStoreError` with a message safe to show. What cannot be a ciphertext (or a wrapped key)
of the algorithm is the one `DecryptionError` every failed decryption gives, so a
decryption says nothing about why it failed.

An empty iv, aad or tag counts as none given (a wire field "" decodes to b"").
"""

from __future__ import annotations

from openkeyvault.crypto.algorithms import CBCPAD, GCM, AesAlg, DecryptionError
from openkeyvault.keystore.base import KeyStoreError


def check_encrypt(alg: str, spec: AesAlg, plaintext: bytes, iv: bytes | None,
                  aad: bytes | None) -> None:
    """An encryption's inputs: GCM makes its own iv (one given is refused); CBC needs the
    caller's; only GCM takes aad; CBC without padding takes whole blocks."""
    if spec.iv_given:
        _check_iv(alg, spec, iv)
    elif iv:
        raise KeyStoreError(f"{alg} encryption takes no iv: the HSM makes a fresh one for "
                            "each encryption and returns it with the ciphertext.")
    _check_aad(alg, spec, aad)
    if len(plaintext) % spec.multiple:
        raise KeyStoreError(f"The plaintext for {alg} must be a multiple of {spec.multiple} "
                            f"bytes long (it is not padded: {alg}PAD pads it).")


def check_decrypt(alg: str, spec: AesAlg, ciphertext: bytes, iv: bytes | None,
                  aad: bytes | None, tag: bytes | None) -> None:
    """A decryption's inputs: the iv always; the tag for GCM only, and aad for GCM only. A
    CBC ciphertext is whole blocks (with padding at least one)."""
    _check_iv(alg, spec, iv)
    _check_aad(alg, spec, aad)
    if spec.tag_bytes:
        if not tag:
            raise KeyStoreError(f"{alg} decryption needs the authentication tag.")
        if len(tag) != spec.tag_bytes:
            raise KeyStoreError(f"{alg} needs a tag of {spec.tag_bytes} bytes; this one has "
                                f"{len(tag)}.")
    elif tag:
        raise KeyStoreError(f"{alg} takes no tag: authentication tags are for AES-GCM.")
    if spec.mode != GCM and (len(ciphertext) % 16 or (spec.mode == CBCPAD and not ciphertext)):
        raise DecryptionError()


def check_wrap(alg: str, spec: AesAlg, key: bytes) -> None:
    """The key to wrap: a multiple of 8 bytes, at least 16 (RFC 3394)."""
    if len(key) % spec.multiple or len(key) < spec.least:
        raise KeyStoreError(f"The key to wrap with {alg} must be a multiple of "
                            f"{spec.multiple} bytes and at least {spec.least} bytes long.")


def check_unwrap(spec: AesAlg, wrapped: bytes) -> None:
    """A wrapped key: a multiple of 8 bytes, 8 more than the least key (RFC 3394)."""
    if len(wrapped) % spec.multiple or len(wrapped) < spec.least + 8:
        raise DecryptionError()


def _check_iv(alg: str, spec: AesAlg, iv: bytes | None) -> None:
    if not iv or len(iv) != spec.iv_bytes:
        given = f"; this one has {len(iv)}" if iv else ""
        raise KeyStoreError(f"{alg} needs an iv of {spec.iv_bytes} bytes{given}.")


def _check_aad(alg: str, spec: AesAlg, aad: bytes | None) -> None:
    if aad and not spec.aad:
        raise KeyStoreError(f"{alg} takes no aad: additional authenticated data is for "
                            "AES-GCM.")
