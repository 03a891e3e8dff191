"""Wycheproof's AES vectors run through the PKCS#11 keystore, with each vector's key imported
into the SoftHSM2 token as an oct key (the token shared with test_keystore_conformance: one
module initialization per process).

- aes_gcm_test.json: the 12-byte iv, 16-byte tag cases, decrypted (an encryption makes its
  own iv, so a vector's ciphertext can only be decrypted): valid ones give the message,
  invalid ones the one DecryptionError.
- aes_cbc_pkcs5_test.json: A*CBCPAD with the vector's iv, both ways for valid vectors; the
  invalid ones (bad padding, bad length) fail to decrypt alike.
- aes_wrap_test.json: A*KW wrap and unwrap of valid vectors; invalid wrapped keys fail to
  unwrap, and keys KW cannot wrap are refused. The "acceptable" 8-byte key (RFC 3394 wraps
  it as one AES block; NIST SP 800-38F does not define it) is refused both ways.
"""

from __future__ import annotations

from typing import Any

import pytest

from openkeyvault.crypto.algorithms import DecryptionError
from openkeyvault.keystore.base import KeyRef, KeyStoreError, PlainKey
from openkeyvault.keystore.pkcs11 import Pkcs11KeyStore
from tests.unit.test_keystore_conformance import (
    DECRYPTION_FAILED,
    new_ref,
    oct_jwk,
    shared_pkcs11,
    shared_token,
)
from tests.vectors.loader import Vector, groups

GCM_FILE, CBC_FILE, KW_FILE = "aes_gcm_test.json", "aes_cbc_pkcs5_test.json", "aes_wrap_test.json"
_KEYS: dict[bytes, KeyRef] = {}


def _vectors(name: str, **group_wants: int) -> list[tuple[int, Vector]]:
    """(key bits, vector) of the file's groups whose parameters are `group_wants`."""
    return [(group["keySize"], vector) for group, vectors in groups(name)
            if all(group.get(k) == v for k, v in group_wants.items()) for vector in vectors]


GCM = _vectors(GCM_FILE, ivSize=96, tagSize=128)
CBC = _vectors(CBC_FILE, ivSize=128)
KW = _vectors(KW_FILE)


@pytest.fixture(scope="module")
def p11(tmp_path_factory: pytest.TempPathFactory) -> Pkcs11KeyStore:
    return shared_pkcs11(shared_token(tmp_path_factory))


def imported(p11: Pkcs11KeyStore, vector: Vector) -> KeyRef:
    """The vector's key in the token (imported once for the module)."""
    key = vector.bytes("key")
    if key not in _KEYS:
        _KEYS[key] = new_ref(p11, p11.import_key(PlainKey(oct_jwk(key), "oct")), "oct")
    return _KEYS[key]


def _fails(call: Any) -> None:
    with pytest.raises(DecryptionError) as err:
        call()
    assert str(err.value) == DECRYPTION_FAILED


def test_the_files_hold_what_is_run() -> None:
    assert (len(GCM), len(CBC), len(KW)) == (197, 216, 165)
    assert {bits for bits, _ in GCM + CBC + KW} == {128, 192, 256}


@pytest.mark.parametrize(("bits", "vector"), GCM, ids=[v.id for _, v in GCM])
def test_gcm_decrypt(p11: Pkcs11KeyStore, bits: int, vector: Vector) -> None:
    ref = imported(p11, vector)

    def decrypt() -> bytes:
        return p11.decrypt_symmetric(ref, f"A{bits}GCM", vector.bytes("ct"), vector.bytes("iv"),
                                     vector.bytes("aad"), vector.bytes("tag"))

    if vector.result == "valid":
        assert decrypt() == vector.bytes("msg"), vector.describe()
    else:
        _fails(decrypt)


@pytest.mark.parametrize(("bits", "vector"), CBC, ids=[v.id for _, v in CBC])
def test_cbc_pad_both_ways(p11: Pkcs11KeyStore, bits: int, vector: Vector) -> None:
    ref, alg, iv = imported(p11, vector), f"A{bits}CBCPAD", vector.bytes("iv")
    if vector.result == "valid":
        result = p11.encrypt_symmetric(ref, alg, vector.bytes("msg"), iv)
        assert result.ciphertext == vector.bytes("ct"), vector.describe()
        assert p11.decrypt_symmetric(ref, alg, vector.bytes("ct"), iv) == vector.bytes("msg")
    else:
        _fails(lambda: p11.decrypt_symmetric(ref, alg, vector.bytes("ct"), iv))


@pytest.mark.parametrize(("bits", "vector"), KW, ids=[v.id for _, v in KW])
def test_key_wrap_both_ways(p11: Pkcs11KeyStore, bits: int, vector: Vector) -> None:
    ref, alg = imported(p11, vector), f"A{bits}KW"
    msg, ct = vector.bytes("msg"), vector.bytes("ct")
    if vector.result == "valid":
        assert p11.wrap(ref, alg, msg) == ct, vector.describe()
        assert p11.unwrap(ref, alg, ct) == msg
        return
    _fails(lambda: p11.unwrap(ref, alg, ct))
    if len(msg) % 8 or len(msg) < 16:  # a key KW cannot wrap
        with pytest.raises(KeyStoreError):
            p11.wrap(ref, alg, msg)
