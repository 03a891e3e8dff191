"""crypto/ecrecover.py: the public key of an EC key recovered from two of its ECDSA
signatures, on every Key Vault curve, checked against the key pyca/cryptography made;
and what it refuses."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from openkeyvault.crypto.ecrecover import CURVES, HASHES, RecoveryError, candidates, recover


def signed(key: ec.EllipticCurvePrivateKey, crv: str, text: bytes) -> tuple[bytes, bytes]:
    h = hashes.Hash(HASHES[crv]())
    h.update(text)
    digest = h.finalize()
    size = (CURVES[crv].n.bit_length() + 7) // 8
    r, s = utils.decode_dss_signature(key.sign(digest, ec.ECDSA(utils.Prehashed(
        HASHES[crv]()))))
    return digest, r.to_bytes(size, "big") + s.to_bytes(size, "big")


@pytest.mark.parametrize("crv", list(CURVES))
def test_recovered_from_two_signatures(crv: str) -> None:
    key = ec.generate_private_key(CURVES[crv].cls())
    one, two = signed(key, crv, b"one"), signed(key, crv, b"two")
    assert recover(crv, [one, two]).public_numbers() == key.public_key().public_numbers()
    # one signature alone leaves more than one point, the key's among them
    nums = key.public_key().public_numbers()
    assert (nums.x, nums.y) in candidates(crv, *one)
    assert len(candidates(crv, *one)) >= 2
    with pytest.raises(RecoveryError):
        recover(crv, [one])


def test_signatures_of_two_keys_name_no_key() -> None:
    a, b = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    with pytest.raises(RecoveryError):
        recover("P-256", [signed(a, "P-256", b"x"), signed(b, "P-256", b"y")])
    digest, sig = signed(a, "P-256", b"x")
    with pytest.raises(RecoveryError):
        recover("P-256", [(digest, sig), (digest, bytes(len(sig)))])  # r = s = 0
    with pytest.raises(RecoveryError):
        recover("P-192", [(digest, sig), (digest, sig)])
