"""The vector files themselves: every file the README lists is present, matches
SHA256SUMS and is walked by exactly one test table. The AES files run against a managed
HSM pool's oct-HSM keys (test_aes_api.py): a vault holds no symmetric keys, and refuses
them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from tests.vectors import (
    test_aes_api,
    test_rsa_decrypt_api,
    test_rsa_sign_api,
    test_verify_public,
)
from tests.vectors.api import KeyApi
from tests.vectors.loader import b64u, load, sha256sums, vectors_dir


def test_every_file_is_covered_and_matches_sha256sums() -> None:
    """Each JSON file in the folder is walked by exactly one test table (none forgotten),
    and is the byte-for-byte copy SHA256SUMS names."""
    tables: list[Mapping[str, object]] = [
        test_aes_api.GCM, test_aes_api.CBC, test_aes_api.KW, test_aes_api.KWP,
        test_rsa_decrypt_api.OAEP, test_rsa_decrypt_api.PKCS1, test_rsa_sign_api.SIG_GEN,
        test_verify_public.ECDSA, test_verify_public.ECDSA_NO_JOSE,
        test_verify_public.RSA_SIGNATURE, test_verify_public.PSS,
    ]
    covered = [name for table in tables for name in table]
    assert len(covered) == len(set(covered)) == 36
    sums = sha256sums()
    files = sorted(p.name for p in vectors_dir().glob("*.json"))
    assert files == sorted(covered)
    assert set(files) <= set(sums)
    for name in files:
        assert hashlib.sha256((vectors_dir() / name).read_bytes()).hexdigest() == sums[name], name
        data = load(name)
        assert data["numberOfTests"] == sum(len(g["tests"]) for g in data["testGroups"])


def test_a_vault_refuses_oct_keys(key_api: KeyApi, hsm_key_api: KeyApi) -> None:
    """Symmetric keys are a managed HSM's: a vault, Standard or Premium, refuses them."""
    for api in (key_api, hsm_key_api):
        r = api.call("PUT", "/keys/wycheproof-oct", {"key": {"kty": "oct-HSM",
                                                             "k": b64u(bytes(32))}})
        assert 400 <= r.status_code < 500, r.text
        assert r.json()["error"]["code"] in ("BadParameter", "Forbidden"), r.text
