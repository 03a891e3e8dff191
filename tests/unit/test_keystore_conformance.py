"""The KeyStore conformance suite: every backend (software, PKCS#11 on a SoftHSM2 token)
gives the same results and the same refusals, with signatures and ciphertexts checked by
`cryptography` outside the keystore. Then what only the PKCS#11 backend has: the token's
own view of its keys, destroy in the token, the blob, fork and threads, the paddings it
decodes on the host, checked against OpenSSL's, and its symmetric (oct) AES keys, checked
against `cryptography` with keys of known bytes imported into the token (Wycheproof's AES
vectors are in test_keystore_aes_vectors.py).

A PKCS#11 module is initialized once per process with one SOFTHSM2_CONF, so the whole
module uses one token (and one keystore on it), kept in `_TOKEN` and `_STORES`.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers import algorithms as aes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11.constants import Attribute, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from openkeyvault.api import render
from openkeyvault.crypto import algorithms
from openkeyvault.crypto.algorithms import AlgorithmError, DecryptionError
from openkeyvault.crypto.attestation_check import verify as verify_attestation
from openkeyvault.crypto.jwk import CURVES, b64u, public_from_jwk, public_jwk
from openkeyvault.crypto.rsapadding import (
    implicit_rejection_kdk,
    oaep_sha256_decode,
    pkcs1_v15_decode,
)
from openkeyvault.keystore.base import (
    KeyRef,
    KeySpec,
    KeyStore,
    KeyStoreError,
    KeyStoreUnavailable,
    PlainKey,
    StoredKey,
    WrappedKey,
)
from openkeyvault.keystore.pkcs11 import EC_PARAMS, Pkcs11KeyStore
from openkeyvault.keystore.softhsm import SoftHsmError, SoftToken, ensure_token
from openkeyvault.keystore.software import SoftwareKeyStore
from openkeyvault.vault.attestation import Attestor
from openkeyvault.vault.models import Attributes, KeyBundle

TOKEN_LABEL = "okv-test"
_TOKEN: dict[str, SoftToken] = {}
_STORES: dict[str, Any] = {}
_KEYS: dict[tuple[str, KeySpec], tuple[StoredKey, KeyRef]] = {}
_IDS = itertools.count()
_META: dict[str, str] = {}  # what a deployment's `meta` table keeps (backup key ids)


def meta(key: str, make: Callable[[], str]) -> str:
    if key not in _META:
        _META[key] = make()
    return _META[key]

RSA2048 = KeySpec("RSA", 2048)
RSA2048_E3 = KeySpec("RSA", 2048, public_exponent=3)
RSA3072 = KeySpec("RSA", 3072)
RSA4096 = KeySpec("RSA", 4096)
EC_SPECS = {crv: KeySpec("EC", curve=crv) for crv in CURVES}
P256 = EC_SPECS["P-256"]

HASH = {"256": hashes.SHA256, "56K": hashes.SHA256, "384": hashes.SHA384,
        "512": hashes.SHA512}
ES_CURVE = {"ES256": "P-256", "ES256K": "P-256K", "ES384": "P-384", "ES512": "P-521"}
RSA_SIGN = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
ENCRYPT_ALGS = ["RSA1_5", "RSA-OAEP", "RSA-OAEP-256"]
DECRYPTION_FAILED = "The ciphertext could not be decrypted with this key."


# --- Fixtures and helpers -----------------------------------------------------------------


def shared_token(tmp_path_factory: pytest.TempPathFactory) -> SoftToken:
    """The process's one SoftHSM2 token (other test modules on the keystore use it too)."""
    if "token" not in _TOKEN:
        try:
            _TOKEN["token"] = ensure_token(tmp_path_factory.mktemp("softhsm"), TOKEN_LABEL)
        except SoftHsmError as exc:
            pytest.fail(f"The PKCS#11 keystore tests need SoftHSM2 ({exc}); `make test` "
                        "installs it.")
    return _TOKEN["token"]


def shared_pkcs11(token: SoftToken) -> Pkcs11KeyStore:
    """The process's one keystore on that token, with backup copies (`meta`)."""
    if "pkcs11" not in _STORES:
        _STORES["pkcs11"] = Pkcs11KeyStore(token.module, token.label, token.pin,
                                           environment=_environment(token), meta=meta)
    store = _STORES["pkcs11"]
    assert isinstance(store, Pkcs11KeyStore)
    return store


@pytest.fixture(scope="module")
def soft_token(tmp_path_factory: pytest.TempPathFactory) -> SoftToken:
    return shared_token(tmp_path_factory)


def _environment(token: SoftToken) -> dict[str, str]:
    return {"SOFTHSM2_CONF": str(token.conf)}


@pytest.fixture(scope="module")
def p11(soft_token: SoftToken) -> Pkcs11KeyStore:
    return shared_pkcs11(soft_token)


@pytest.fixture(scope="module", params=["software", "pkcs11"])
def store(request: pytest.FixtureRequest) -> KeyStore:
    if request.param == "pkcs11":
        return request.getfixturevalue("p11")
    return _STORES.setdefault("software", SoftwareKeyStore())


@pytest.fixture
def token_session(p11: Pkcs11KeyStore, soft_token: SoftToken) -> Iterator[Any]:
    """A session of the test's own on the token, to look at what the token holds. It needs
    no PIN: the keystore has logged this process in (login belongs to the process). One per
    test: a test that looks for a destroyed key makes the keystore initialize the library
    again, which ends every session of the process."""
    key_for(p11, P256)
    session = pkcs11.lib(soft_token.module).get_token(token_label=TOKEN_LABEL).open()
    yield session
    with contextlib.suppress(pkcs11.exceptions.PKCS11Error):  # gone with a reload
        session.close()


def new_ref(store: KeyStore, stored: StoredKey, family: str) -> KeyRef:
    return KeyRef(f"{store.name}/{next(_IDS)}", family, lambda: stored.blob)


def key_for(store: KeyStore, spec: KeySpec) -> tuple[StoredKey, KeyRef]:
    """One key per backend and spec for the whole module (RSA 4096 is slow to make)."""
    if (store.name, spec) not in _KEYS:
        stored = store.generate(spec)
        _KEYS[store.name, spec] = (stored, new_ref(store, stored, spec.family))
    return _KEYS[store.name, spec]


def digest_for(alg: str, message: bytes = b"conformance") -> bytes:
    h = hashes.Hash(HASH[alg[-3:]]())
    h.update(message)
    return h.finalize()


def verify_outside(jwk: dict[str, Any], alg: str, digest: bytes, signature: bytes) -> None:
    """Check a signature with `cryptography` alone (raises InvalidSignature)."""
    h = HASH[alg[-3:]]()
    if alg.startswith("ES"):
        pub = public_from_jwk(jwk, "EC")
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        size = CURVES[ES_CURVE[alg]][1]
        assert len(signature) == 2 * size
        der = utils.encode_dss_signature(int.from_bytes(signature[:size], "big"),
                                         int.from_bytes(signature[size:], "big"))
        pub.verify(der, digest, ec.ECDSA(utils.Prehashed(h)))
        return
    rsa_pub = public_from_jwk(jwk, "RSA")
    assert isinstance(rsa_pub, rsa.RSAPublicKey)
    assert len(signature) == rsa_pub.key_size // 8
    pad: padding.AsymmetricPadding = (
        padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size) if alg.startswith("PS")
        else padding.PKCS1v15())
    rsa_pub.verify(signature, digest, pad, utils.Prehashed(h))


def outside_padding(alg: str) -> padding.AsymmetricPadding:
    if alg == "RSA1_5":
        return padding.PKCS1v15()
    h: hashes.HashAlgorithm = hashes.SHA1() if alg == "RSA-OAEP" else hashes.SHA256()
    return padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None)


def rsa_public(stored: StoredKey) -> rsa.RSAPublicKey:
    pub = public_from_jwk(stored.public, "RSA")
    assert isinstance(pub, rsa.RSAPublicKey)
    return pub


def raw_encrypt(pub: rsa.RSAPublicKey, em: bytes) -> bytes:
    """Textbook RSA of an encoded block, to make ciphertexts with whatever padding."""
    nums = pub.public_numbers()
    return pow(int.from_bytes(em, "big"), nums.e, nums.n).to_bytes(len(em), "big")


def private_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    jwk = public_jwk(key)
    if isinstance(key, rsa.RSAPrivateKey):
        nums = key.private_numbers()
        for name, value in (("d", nums.d), ("p", nums.p), ("q", nums.q), ("dp", nums.dmp1),
                            ("dq", nums.dmq1), ("qi", nums.iqmp)):
            jwk[name] = b64u(value.to_bytes((value.bit_length() + 7) // 8, "big"))
        return jwk
    size = CURVES[jwk["crv"]][1]
    jwk["d"] = b64u(key.private_numbers().private_value.to_bytes(size, "big"))
    return jwk


# --- Every backend ------------------------------------------------------------------------


def test_capabilities(store: KeyStore) -> None:
    caps = store.capabilities()
    assert caps.families >= {"RSA", "EC"}
    assert ("oct" in caps.families) is bool(caps.aes_sizes) is bool(caps.symmetric) \
        is caps.hardware
    assert caps.sign == frozenset(algorithms.SIGN)
    assert caps.encrypt == frozenset(algorithms.ENCRYPT)
    assert set(caps.curves) == set(CURVES)
    assert set(caps.rsa_sizes) == {2048, 3072, 4096}


@pytest.mark.parametrize("spec", [RSA2048, RSA2048_E3, RSA3072, RSA4096, *EC_SPECS.values()],
                         ids=lambda s: f"{s.family}-{s.size or s.curve}-{s.public_exponent}")
def test_generate(store: KeyStore, spec: KeySpec) -> None:
    stored, _ = key_for(store, spec)
    pub = public_from_jwk(stored.public, spec.family)
    if isinstance(pub, rsa.RSAPublicKey):
        assert set(stored.public) == {"n", "e"}
        assert pub.key_size == spec.size == stored.size
        assert pub.public_numbers().e == spec.public_exponent
    else:
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        assert stored.public["crv"] == spec.curve
        assert stored.size == pub.curve.key_size


@pytest.mark.parametrize(("spec", "message"), [
    (KeySpec("RSA", 1024), "RSA key size must be one of 2048, 3072, 4096."),
    (KeySpec("RSA", None), "RSA key size must be one of 2048, 3072, 4096."),
    (KeySpec("RSA", 2048, public_exponent=5), "The RSA public exponent must be 3 or 65537."),
    (KeySpec("EC", curve="P-192"), "Unsupported curve; use one of P-256, P-256K, P-384, P-521."),
    (KeySpec("EC"), "Unsupported curve; use one of P-256, P-256K, P-384, P-521."),
], ids=["rsa-1024", "rsa-no-size", "exponent-5", "p-192", "no-curve"])
def test_generate_refusals(store: KeyStore, spec: KeySpec, message: str) -> None:
    with pytest.raises(KeyStoreError) as err:
        store.generate(spec)
    assert str(err.value) == message


SIGN_CASES = ([(alg, RSA2048) for alg in RSA_SIGN]
              + [("RS256", RSA2048_E3), ("PS256", RSA3072), ("RS512", RSA4096),
                 ("PS512", RSA4096)]
              + [(alg, EC_SPECS[crv]) for alg, crv in ES_CURVE.items()])


@pytest.mark.parametrize(("alg", "spec"), SIGN_CASES,
                         ids=[f"{a}-{s.size or s.curve}-{s.public_exponent}"
                              for a, s in SIGN_CASES])
def test_sign_verifies_outside(store: KeyStore, alg: str, spec: KeySpec) -> None:
    stored, ref = key_for(store, spec)
    digest = digest_for(alg)
    signature = store.sign(ref, alg, digest)
    verify_outside(stored.public, alg, digest, signature)
    with pytest.raises(InvalidSignature):
        verify_outside(stored.public, alg, digest_for(alg, b"other"), signature)


@pytest.mark.parametrize(("alg", "spec"), [("RS256", RSA2048), ("PS384", RSA2048),
                                           ("ES256", P256), ("ES512", EC_SPECS["P-521"])])
def test_verify_through_keystore(store: KeyStore, alg: str, spec: KeySpec) -> None:
    _, ref = key_for(store, spec)
    digest = digest_for(alg)
    signature = store.sign(ref, alg, digest)
    assert store.verify(ref, alg, digest, signature) is True
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    assert store.verify(ref, alg, digest, tampered) is False
    assert store.verify(ref, alg, digest_for(alg, b"other"), signature) is False
    assert store.verify(ref, alg, digest, signature[:-1]) is False


DECRYPT_CASES = ([(alg, RSA2048) for alg in ENCRYPT_ALGS]
                 + [("RSA1_5", RSA3072), ("RSA-OAEP-256", RSA4096), ("RSA-OAEP", RSA2048_E3)])


@pytest.mark.parametrize(("alg", "spec"), DECRYPT_CASES,
                         ids=[f"{a}-{s.size}-{s.public_exponent}" for a, s in DECRYPT_CASES])
def test_decrypt_what_cryptography_encrypted(store: KeyStore, alg: str, spec: KeySpec) -> None:
    stored, ref = key_for(store, spec)
    pub = rsa_public(stored)
    limit = pub.key_size // 8 - algorithms.ENCRYPT[alg][1]
    for size in (0, 1, 32, limit):
        plaintext = os.urandom(size)
        ciphertext = pub.encrypt(plaintext, outside_padding(alg))
        assert store.decrypt(ref, alg, ciphertext) == plaintext


@pytest.mark.parametrize("alg", ENCRYPT_ALGS)
def test_wrap_unwrap_round_trip(store: KeyStore, alg: str) -> None:
    _, ref = key_for(store, RSA2048)
    key = os.urandom(32)
    wrapped = store.wrap(ref, alg, key)
    assert len(wrapped) == 256
    assert store.unwrap(ref, alg, wrapped) == key
    assert store.decrypt(ref, alg, store.encrypt(ref, alg, b"secret")) == b"secret"


def _rsa_ref(store: KeyStore) -> KeyRef:
    return key_for(store, RSA2048)[1]


def _ec_ref(store: KeyStore) -> KeyRef:
    return key_for(store, P256)[1]


REFUSALS: list[tuple[str, Callable[[KeyStore], object], type[Exception], str]] = [
    ("digest-length", lambda s: s.sign(_rsa_ref(s), "RS256", b"\0" * 31), AlgorithmError,
     "Invalid digest length for RS256: 31 bytes given, 32 expected."),
    ("digest-length-ec", lambda s: s.sign(_ec_ref(s), "ES256", b"\0" * 48), AlgorithmError,
     "Invalid digest length for ES256: 48 bytes given, 32 expected."),
    ("ec-alg-rsa-key", lambda s: s.sign(_rsa_ref(s), "ES256", b"\0" * 32), AlgorithmError,
     "Algorithm ES256 cannot be used with an RSA key."),
    ("rsa-alg-ec-key", lambda s: s.sign(_ec_ref(s), "PS256", b"\0" * 32), AlgorithmError,
     "Algorithm PS256 cannot be used with an EC key."),
    ("wrong-curve", lambda s: s.sign(_ec_ref(s), "ES384", b"\0" * 48), AlgorithmError,
     "Algorithm ES384 needs a P-384 key; this key is P-256."),
    ("wrong-curve-k", lambda s: s.sign(_ec_ref(s), "ES256K", b"\0" * 32), AlgorithmError,
     "Algorithm ES256K needs a P-256K key; this key is P-256."),
    ("unknown-sign", lambda s: s.sign(_rsa_ref(s), "XS256", b"\0" * 32), AlgorithmError,
     "Unknown signature algorithm 'XS256'."),
    ("unknown-verify", lambda s: s.verify(_ec_ref(s), "HS256", b"\0" * 32, b"\0" * 64),
     AlgorithmError, "Unknown signature algorithm 'HS256'."),
    ("verify-digest-length", lambda s: s.verify(_rsa_ref(s), "PS512", b"\0" * 32, b"\0"),
     AlgorithmError, "Invalid digest length for PS512: 32 bytes given, 64 expected."),
    ("unknown-encrypt", lambda s: s.encrypt(_rsa_ref(s), "A128KW", b"x"), AlgorithmError,
     "Unknown encryption algorithm 'A128KW'."),
    ("unknown-decrypt", lambda s: s.decrypt(_rsa_ref(s), "RSA-OAEP-384", b"\0" * 256),
     AlgorithmError, "Unknown encryption algorithm 'RSA-OAEP-384'."),
    ("encrypt-ec", lambda s: s.encrypt(_ec_ref(s), "RSA-OAEP", b"x"), AlgorithmError,
     "Algorithm RSA-OAEP needs an RSA key."),
    ("decrypt-ec", lambda s: s.decrypt(_ec_ref(s), "RSA1_5", b"\0" * 256), AlgorithmError,
     "Algorithm RSA1_5 needs an RSA key."),
    ("unwrap-ec", lambda s: s.unwrap(_ec_ref(s), "RSA-OAEP-256", b"\0" * 256), AlgorithmError,
     "Algorithm RSA-OAEP-256 needs an RSA key."),
    ("too-long-oaep", lambda s: s.encrypt(_rsa_ref(s), "RSA-OAEP", b"\0" * 215), AlgorithmError,
     "The plaintext is too long for RSA-OAEP with this key: at most 214 bytes."),
    ("too-long-oaep-256", lambda s: s.wrap(_rsa_ref(s), "RSA-OAEP-256", b"\0" * 191),
     AlgorithmError, "The plaintext is too long for RSA-OAEP-256 with this key: at most 190 "
     "bytes."),
    ("too-long-rsa1_5", lambda s: s.encrypt(_rsa_ref(s), "RSA1_5", b"\0" * 246), AlgorithmError,
     "The plaintext is too long for RSA1_5 with this key: at most 245 bytes."),
    *[(f"short-{alg}", (lambda a: lambda s: s.decrypt(_rsa_ref(s), a, b"\1" * 255))(alg),
       DecryptionError, DECRYPTION_FAILED) for alg in ENCRYPT_ALGS],
    *[(f"long-{alg}", (lambda a: lambda s: s.unwrap(_rsa_ref(s), a, b"\1" * 257))(alg),
       DecryptionError, DECRYPTION_FAILED) for alg in ENCRYPT_ALGS],
    *[(f"empty-{alg}", (lambda a: lambda s: s.decrypt(_rsa_ref(s), a, b""))(alg),
       DecryptionError, DECRYPTION_FAILED) for alg in ENCRYPT_ALGS],
    *[(f"above-modulus-{alg}", (lambda a: lambda s: s.decrypt(_rsa_ref(s), a, b"\xff" * 256))(
        alg), DecryptionError, DECRYPTION_FAILED) for alg in ENCRYPT_ALGS],
]


@pytest.mark.parametrize(("call", "error", "message"), [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])
def test_refusals_say_the_same(store: KeyStore, call: Callable[[KeyStore], object],
                               error: type[Exception], message: str) -> None:
    with pytest.raises(error) as err:
        call(store)
    assert type(err.value) is error
    assert str(err.value) == message


def test_rsa1_5_bad_padding_gives_pseudo_random_plaintext(store: KeyStore) -> None:
    stored, ref = key_for(store, RSA2048)
    pub = rsa_public(stored)
    rng = random.Random(1)  # the same ciphertexts every run
    # No 00 separator; block type 01; a separator after only 4 bytes of padding.
    bad = [b"\x00\x02" + bytes(rng.randrange(1, 256) for _ in range(254)),
           b"\x00\x01" + rng.randbytes(254),
           b"\x00\x02" + bytes(rng.randrange(1, 256) for _ in range(4)) + b"\x00"
           + rng.randbytes(249)]
    outputs = []
    for em in bad:
        ciphertext = raw_encrypt(pub, em)
        first = store.decrypt(ref, "RSA1_5", ciphertext)
        assert store.decrypt(ref, "RSA1_5", ciphertext) == first
        assert store.unwrap(ref, "RSA1_5", ciphertext) == first
        assert len(first) <= 256 - 11
        outputs.append(first)
    assert len(set(outputs)) == len(outputs)


@pytest.mark.parametrize("alg", ["RSA-OAEP", "RSA-OAEP-256"])
def test_oaep_tampered_ciphertext_fails_alike(store: KeyStore, alg: str) -> None:
    stored, ref = key_for(store, RSA2048)
    ciphertext = bytearray(rsa_public(stored).encrypt(b"secret", outside_padding(alg)))
    ciphertext[-1] ^= 1
    with pytest.raises(DecryptionError) as err:
        store.decrypt(ref, alg, bytes(ciphertext))
    assert str(err.value) == DECRYPTION_FAILED
    # Well-formed RSA, bad OAEP block: a PKCS#1 v1.5 block.
    v15 = rsa_public(stored).encrypt(b"secret", padding.PKCS1v15())
    with pytest.raises(DecryptionError):
        store.decrypt(ref, alg, v15)


@pytest.mark.parametrize("kind", ["RSA-2048", "RSA-3072-e3", *CURVES])
def test_import_key_then_sign(store: KeyStore, kind: str) -> None:
    if kind.startswith("RSA"):
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = rsa.generate_private_key(
            3 if kind.endswith("e3") else 65537, int(kind[4:8]))
        family, alg = "RSA", "PS256"
    else:
        key = ec.generate_private_key(CURVES[kind][0]())
        family, alg = "EC", next(a for a, c in ES_CURVE.items() if c == kind)
    stored = store.import_key(PlainKey(private_jwk(key), family))
    assert stored.public == public_jwk(key)
    ref = new_ref(store, stored, family)
    digest = digest_for(alg)
    verify_outside(public_jwk(key), alg, digest, store.sign(ref, alg, digest))
    if isinstance(key, rsa.RSAPrivateKey):
        ciphertext = store.encrypt(ref, "RSA-OAEP-256", b"imported")
        assert key.decrypt(ciphertext, outside_padding("RSA-OAEP-256")) == b"imported"
        theirs = key.public_key().encrypt(b"back", outside_padding("RSA-OAEP"))
        assert store.decrypt(ref, "RSA-OAEP", theirs) == b"back"
    store.destroy(ref)


@pytest.mark.parametrize(("jwk", "family", "message"), [
    ({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, "EC",
     "The JWK has no private key material ('d')."),
    ({"kty": "EC", "crv": "P-192", "d": "AQ"}, "EC",
     "Unsupported curve 'P-192'; use one of P-256, P-256K, P-384, P-521."),
    ({"kty": "oct", "k": "AAAA"}, "oct",
     {"software": "Key type family 'oct' cannot be imported.",
      "pkcs11": "An AES key must be 128, 192 or 256 bits (16, 24 or 32 bytes)."}),
], ids=["no-d", "bad-curve", "oct"])
def test_import_key_refusals(store: KeyStore, jwk: dict[str, Any], family: str,
                             message: str | dict[str, str]) -> None:
    with pytest.raises(KeyStoreError) as err:
        store.import_key(PlainKey(jwk, family))
    assert str(err.value) == (message if isinstance(message, str) else message[store.name])


def test_destroy_twice_is_not_an_error(store: KeyStore) -> None:
    stored = store.generate(P256)
    ref = new_ref(store, stored, "EC")
    store.sign(ref, "ES256", digest_for("ES256"))
    store.destroy(ref)
    store.destroy(ref)


# --- PKCS#11 only ------------------------------------------------------------------------


def _objects(session: Any, stored: StoredKey, cls: ObjectClass | None = None) -> list[Any]:
    attrs: dict[Attribute, Any] = {Attribute.ID: bytes.fromhex(json.loads(stored.blob)["id"])}
    if cls is not None:
        attrs[Attribute.CLASS] = cls
    return list(session.get_objects(attrs))


def test_pkcs11_capabilities(p11: Pkcs11KeyStore) -> None:
    caps = p11.capabilities()
    assert caps.hardware is True
    assert caps.families == frozenset({"RSA", "EC", "oct"})
    assert caps.aes_sizes == (128, 192, 256)
    assert caps.symmetric == frozenset(f"A{bits}{mode}" for bits in (128, 192, 256)
                                       for mode in ("GCM", "CBC", "CBCPAD", "KW"))
    assert caps.export is True
    assert caps.backup is True
    assert caps.wrapped_import == frozenset()
    assert set(caps.host_steps) == {"RSA-OAEP-256", "RSA1_5", "export"}


def test_pkcs11_curve_parameters_are_the_named_curves() -> None:
    names = {"P-256": "secp256r1", "P-256K": "secp256k1", "P-384": "secp384r1",
             "P-521": "secp521r1"}
    assert {crv: encode_named_curve_parameters(name) for crv, name in names.items()} == EC_PARAMS


@pytest.mark.parametrize("spec", [RSA2048, P256, EC_SPECS["P-521"]],
                         ids=["rsa", "p-256", "p-521"])
def test_pkcs11_generated_private_key_never_leaves_the_token(
        p11: Pkcs11KeyStore, token_session: Any, spec: KeySpec) -> None:
    stored, _ = key_for(p11, spec)
    [private] = _objects(token_session, stored, ObjectClass.PRIVATE_KEY)
    [public] = _objects(token_session, stored, ObjectClass.PUBLIC_KEY)
    assert private[Attribute.SENSITIVE] is True
    assert private[Attribute.EXTRACTABLE] is False
    assert private[Attribute.ALWAYS_SENSITIVE] is True
    assert private[Attribute.LOCAL] is True
    # Extractable only until its backup copy was wrapped, in the token, by the backup key.
    assert private[Attribute.NEVER_EXTRACTABLE] is False
    assert private[Attribute.TOKEN] is True and private[Attribute.PRIVATE] is True
    assert private[Attribute.SIGN] is True and private[Attribute.DERIVE] is False
    assert private[Attribute.DECRYPT] is (spec.family == "RSA")
    assert private[Attribute.UNWRAP] is (spec.family == "RSA")
    assert public[Attribute.VERIFY] is True and public[Attribute.TOKEN] is True
    assert public[Attribute.ENCRYPT] is (spec.family == "RSA")
    key_id = json.loads(stored.blob)["id"]
    assert private[Attribute.LABEL] == public[Attribute.LABEL] == f"okv-{key_id}"
    secret = Attribute.PRIVATE_EXPONENT if spec.family == "RSA" else Attribute.VALUE
    with pytest.raises(pkcs11.exceptions.AttributeSensitive):
        private[secret]


def test_pkcs11_imported_private_key_is_sensitive(p11: Pkcs11KeyStore,
                                                  token_session: Any) -> None:
    key = rsa.generate_private_key(65537, 2048)
    stored = p11.import_key(PlainKey(private_jwk(key), "RSA"))
    [private] = _objects(token_session, stored, ObjectClass.PRIVATE_KEY)
    assert private[Attribute.SENSITIVE] is True
    assert private[Attribute.EXTRACTABLE] is False
    assert private[Attribute.TOKEN] is True
    with pytest.raises(pkcs11.exceptions.AttributeSensitive):
        private[Attribute.PRIME_1]
    p11.destroy(new_ref(p11, stored, "RSA"))


def test_pkcs11_destroy_removes_the_objects(p11: Pkcs11KeyStore, token_session: Any) -> None:
    stored = p11.generate(RSA2048)
    ref = new_ref(p11, stored, "RSA")
    p11.sign(ref, "RS256", digest_for("RS256"))
    assert len(_objects(token_session, stored)) == 2
    p11.destroy(ref)
    assert _objects(token_session, stored) == []
    with pytest.raises(KeyStoreError) as err:
        p11.sign(ref, "RS256", digest_for("RS256"))
    assert str(err.value) == "The key is not in the PKCS#11 token."
    p11.destroy(ref)


def test_pkcs11_key_destroyed_elsewhere_is_gone(p11: Pkcs11KeyStore,
                                               soft_token: SoftToken) -> None:
    """A key destroyed by another process while its handle is cached here."""
    stored = p11.generate(P256)
    ref = new_ref(p11, stored, "EC")
    digest = digest_for("ES256")
    p11.sign(ref, "ES256", digest)
    token = pkcs11.lib(soft_token.module).get_token(token_label=TOKEN_LABEL)
    with token.open(rw=True) as session:
        for obj in _objects(session, stored):
            obj.destroy()
    for _ in range(2):  # the stale handle, then the lookup in the token
        with pytest.raises(KeyStoreError) as err:
            p11.sign(ref, "ES256", digest)
        assert str(err.value) == "The key is not in the PKCS#11 token."
    p11.destroy(ref)


@pytest.mark.parametrize("spec", [RSA2048, P256], ids=["rsa", "ec"])
def test_pkcs11_blob_names_the_key_and_holds_its_wrapped_copy(
        p11: Pkcs11KeyStore, token_session: Any, spec: KeySpec) -> None:
    stored, _ = key_for(p11, spec)
    doc = json.loads(stored.blob)
    assert stored.blob == json.dumps(doc, separators=(",", ":")).encode()
    assert doc["v"] == 1 and doc["family"] == spec.family
    assert len(bytes.fromhex(doc["id"])) == 16
    if spec.family == "RSA":
        assert set(doc) == {"v", "id", "family", "ir", "bk", "wrapped"}
        assert len(base64.b64decode(doc["ir"], validate=True)) == 32
    else:
        assert set(doc) == {"v", "id", "family", "bk", "wrapped"}
    [backup_key] = token_session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                              Attribute.LABEL: "okv-backup"})
    assert doc["bk"] == backup_key[Attribute.ID].hex()
    wrapped = base64.b64decode(doc["wrapped"], validate=True)
    assert len(wrapped) % 8 == 0 and len(wrapped) > 64  # AES key wrap (padded) of PKCS#8


GOOD_ID = "0a" * 16
GOOD_IR = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(("blob", "family"), [
    (b"", "RSA"), (b"\xff\xfe", "RSA"), (b"[]", "RSA"), (b"{}", "EC"), (b"[" * 5000, "EC"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "EC"}).encode(), "RSA"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "RSA", "ir": GOOD_IR}).encode(), "EC"),
    (json.dumps({"v": 2, "id": GOOD_ID, "family": "EC"}).encode(), "EC"),
    (json.dumps({"v": True, "id": GOOD_ID, "family": "EC"}).encode(), "EC"),
    (json.dumps({"v": 1, "id": GOOD_ID.upper(), "family": "EC"}).encode(), "EC"),
    (json.dumps({"v": 1, "id": "00" * 15, "family": "EC"}).encode(), "EC"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "EC", "d": "AA"}).encode(), "EC"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "RSA"}).encode(), "RSA"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "RSA", "ir": "AAAA"}).encode(), "RSA"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "RSA", "ir": GOOD_IR[:-1] + "!"}).encode(),
     "RSA"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "oct"}).encode(), "oct"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "oct", "bits": 256}).encode(), "oct"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "oct", "bits": 512,
                 "kcv": "abcdef"}).encode(), "oct"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "oct", "bits": True,
                 "kcv": "abcdef"}).encode(), "oct"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "oct", "bits": "256",
                 "kcv": "abcdef"}).encode(), "oct"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "oct", "bits": 256,
                 "kcv": "ABCDEF"}).encode(), "oct"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "oct", "bits": 256,
                 "kcv": "abcd"}).encode(), "oct"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "oct", "bits": 256, "kcv": "abcdef",
                 "ir": GOOD_IR}).encode(), "oct"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "EC", "bits": 256,
                 "kcv": "abcdef"}).encode(), "EC"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "EC", "wrapped": "AAAA"}).encode(), "EC"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "EC", "bk": GOOD_ID}).encode(), "EC"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "EC", "bk": "x", "wrapped": "AAAA"}).encode(),
     "EC"),
    (json.dumps({"v": 1, "id": GOOD_ID, "family": "EC", "bk": GOOD_ID,
                 "wrapped": "!!"}).encode(), "EC"),
], ids=["empty", "not-utf8", "list", "no-fields", "deep", "ec-blob-rsa-key", "rsa-blob-ec-key",
        "version-2", "version-true", "upper-case-id", "short-id", "extra-field", "no-ir",
        "short-ir", "bad-base64-ir", "oct", "oct-no-kcv", "oct-512", "oct-bits-true",
        "oct-bits-str", "oct-upper-kcv", "oct-short-kcv", "oct-ir", "ec-with-oct-fields",
        "wrapped-without-bk", "bk-without-wrapped",
        "bad-bk", "bad-base64-wrapped"])
def test_pkcs11_bad_blob_is_refused(p11: Pkcs11KeyStore, blob: bytes, family: str) -> None:
    ref = KeyRef(f"bad/{next(_IDS)}", family, lambda: blob)
    for call in (lambda: p11.sign(ref, "RS256", b"\0" * 32), lambda: p11.destroy(ref)):
        with pytest.raises(KeyStoreError) as err:
            call()
        assert str(err.value) == "Stored key material has an unexpected type."


def test_pkcs11_wrapped_import_refusals(p11: Pkcs11KeyStore) -> None:
    stored, ref = key_for(p11, RSA2048)
    before = p11.held()
    with pytest.raises(KeyStoreError) as err:
        p11.import_key(WrappedKey(ref, "CKM_RSA_AES_KEY_WRAP", b"\0" * 512, "RSA"))
    assert str(err.value).startswith("The wrapped key could not be unwrapped with the "
                                     "key-exchange key")
    with pytest.raises(KeyStoreError) as err:
        p11.import_key(WrappedKey(ref, "RSA_AES_KEY_WRAP_256", b"\0" * 512, "RSA"))
    assert str(err.value) == ("Unsupported key wrapping 'RSA_AES_KEY_WRAP_256'; use "
                              "CKM_RSA_AES_KEY_WRAP.")
    assert p11.held() == before  # a refused import leaves nothing in the token


# --- Backup copies -------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [RSA2048, P256, EC_SPECS["P-256K"], EC_SPECS["P-521"]],
                         ids=["rsa", "p-256", "p-256k", "p-521"])
def test_backup_blob_restores_a_key_that_signs_alike(store: KeyStore, spec: KeySpec) -> None:
    """Backed up, the key destroyed (a purge), restored: the restored key signs under the
    original public key, in new token objects for an HSM."""
    stored = store.generate(spec)
    ref = new_ref(store, stored, spec.family)
    blob = store.backup_blob(ref)
    store.destroy(ref)
    restored = store.restore_key(spec.family, blob, stored.public)
    assert restored.public == stored.public and restored.size == stored.size
    again = new_ref(store, restored, spec.family)
    alg = "RS256" if spec.family == "RSA" else \
        {v: k for k, v in ES_CURVE.items()}[spec.curve or ""]
    verify_outside(stored.public, alg, digest_for(alg), store.sign(again, alg, digest_for(alg)))
    if store.name == "pkcs11":
        assert restored.handle is not None and restored.handle != stored.handle
        assert restored.handle in store.held() and stored.handle not in store.held()
        # The restored key's blob is a backup copy again, for the next backup.
        assert store.backup_blob(again) == restored.blob
    store.destroy(again)


def test_restore_refuses_another_keys_public_key(store: KeyStore) -> None:
    stored, ref = key_for(store, P256)
    other, _ = key_for(store, EC_SPECS["P-384"])
    p256k, _ = key_for(store, EC_SPECS["P-256K"])
    rsa_key, _ = key_for(store, RSA2048)
    before = store.held()
    for public in (p256k.public, {**stored.public, "x": other.public["x"]}):
        with pytest.raises(KeyStoreError):
            store.restore_key("EC", store.backup_blob(ref), public)
    with pytest.raises(KeyStoreError):
        store.restore_key("RSA", store.backup_blob(ref), rsa_key.public)
    assert store.held() == before  # nothing left behind


def test_pkcs11_restore_of_a_tampered_copy_is_refused(p11: Pkcs11KeyStore) -> None:
    stored, ref = key_for(p11, RSA2048)
    doc = json.loads(p11.backup_blob(ref))
    wrapped = bytearray(base64.b64decode(doc["wrapped"]))
    wrapped[40] ^= 1
    before = p11.held()
    for changed in ({**doc, "wrapped": base64.b64encode(bytes(wrapped)).decode()},
                    {**doc, "bk": "0b" * 16}):
        with pytest.raises(KeyStoreError) as err:
            p11.restore_key("RSA", json.dumps(changed).encode(), stored.public)
        assert str(err.value) in (
            "The backed-up key could not be unwrapped in the HSM with the deployment's backup "
            "key: the backup is damaged or from another token.",
            "The backup was made with an HSM backup key the token does not hold: it can be "
            "restored only in the deployment and token that made it.")
    assert p11.held() == before


def test_pkcs11_backup_key_unwraps_only_into_sensitive_keys(p11: Pkcs11KeyStore,
                                                           token_session: Any) -> None:
    """The backup key: AES-256, made in the token, used only to wrap and unwrap, never
    extractable; and a holder of the PIN cannot unwrap a copy into a key the token would
    reveal (CKA_UNWRAP_TEMPLATE)."""
    stored, ref = key_for(p11, RSA2048)
    doc = json.loads(p11.backup_blob(ref))
    [backup] = token_session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                          Attribute.ID: bytes.fromhex(doc["bk"])})
    assert backup[Attribute.LABEL] == "okv-backup"
    assert backup[Attribute.VALUE_LEN] == 32
    for attribute, value in ((Attribute.SENSITIVE, True), (Attribute.EXTRACTABLE, False),
                             (Attribute.NEVER_EXTRACTABLE, True), (Attribute.LOCAL, True),
                             (Attribute.WRAP, True), (Attribute.UNWRAP, True),
                             (Attribute.ENCRYPT, False), (Attribute.DECRYPT, False),
                             (Attribute.TOKEN, True), (Attribute.PRIVATE, True)):
        assert backup[attribute] is value, attribute
    wrapped = base64.b64decode(doc["wrapped"])
    for template in ({Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
                     {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True},
                     {Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: False}):
        with pytest.raises(pkcs11.exceptions.TemplateInconsistent):
            backup.unwrap_key(ObjectClass.PRIVATE_KEY, pkcs11.KeyType.RSA, wrapped,
                              mechanism=pkcs11.Mechanism.AES_KEY_WRAP_PAD, store=False,
                              template={**template, Attribute.SIGN: True,
                                        Attribute.ENCRYPT: pkcs11.DEFAULT,
                                        Attribute.VERIFY: pkcs11.DEFAULT,
                                        Attribute.WRAP: pkcs11.DEFAULT})
    with pytest.raises(pkcs11.exceptions.KeyUnextractable):  # no second copy, by anyone
        backup.wrap_key(_objects(token_session, stored, ObjectClass.PRIVATE_KEY)[0],
                        mechanism=pkcs11.Mechanism.AES_KEY_WRAP_PAD)


def test_pkcs11_without_a_meta_store_keys_are_never_extractable_and_not_backed_up(
        p11: Pkcs11KeyStore, soft_token: SoftToken, token_session: Any) -> None:
    plain = Pkcs11KeyStore(soft_token.module, soft_token.label, soft_token.pin,
                           environment=_environment(soft_token))
    assert plain.capabilities().backup is False
    stored = plain.generate(P256)
    ref = new_ref(plain, stored, "EC")
    [private] = _objects(token_session, stored, ObjectClass.PRIVATE_KEY)
    assert private[Attribute.NEVER_EXTRACTABLE] is True
    assert set(json.loads(stored.blob)) == {"v", "id", "family"}
    for call in (lambda: plain.backup_blob(ref),
                 lambda: p11.restore_key("EC", stored.blob, stored.public)):
        with pytest.raises(KeyStoreError) as err:
            call()
        assert str(err.value).startswith("This HSM key was made without a backup copy")
    plain.destroy(ref)


def test_pkcs11_a_backup_key_made_in_vain_is_destroyed(soft_token: SoftToken,
                                                       p11: Pkcs11KeyStore,
                                                       token_session: Any) -> None:
    """Two processes made a backup key at once; the one whose id was not stored first
    destroys its own and uses the stored one."""
    key_for(p11, P256)  # the module's backup key exists
    first = _META["hsm_backup_key_okv-test"]

    def late(key: str, make: Callable[[], str]) -> str:
        make()  # made, then another's is found stored
        return first

    store = Pkcs11KeyStore(soft_token.module, soft_token.label, soft_token.pin,
                           environment=_environment(soft_token), meta=late)
    stored = store.generate(P256)
    assert json.loads(stored.blob)["bk"] == first
    backups = token_session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                         Attribute.LABEL: "okv-backup"})
    assert [b[Attribute.ID].hex() for b in backups] == [first]
    store.destroy(new_ref(store, stored, "EC"))


# --- Exportable keys --------------------------------------------------------------------


RUNTIME = rsa.generate_private_key(65537, 2048)  # the key a released key is wrapped to
RUNTIME_JWK = public_jwk(RUNTIME)
OAEP_HASH = {"CKM_RSA_AES_KEY_WRAP": hashes.SHA1, "RSA_AES_KEY_WRAP_256": hashes.SHA256,
             "RSA_AES_KEY_WRAP_384": hashes.SHA384}


def unwrap_outside(exported: bytes, enc: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """An exported key unwrapped with `cryptography` alone, as its target would."""
    size = RUNTIME.key_size // 8
    h = OAEP_HASH[enc]()
    aes = RUNTIME.decrypt(exported[:size], padding.OAEP(mgf=padding.MGF1(h), algorithm=h,
                                                        label=None))
    assert len(aes) == 32
    key = serialization.load_der_private_key(
        der_object(keywrap.aes_key_unwrap_with_padding(aes, exported[size:])), None)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return key


def der_object(data: bytes) -> bytes:
    """The DER object `data` starts with. SoftHSM2 2.6 pads a key with zero bytes to a
    multiple of 8 before it wraps it with CKM_AES_KEY_WRAP_PAD, so what unwraps is the
    PKCS#8 key and then up to 7 zero bytes (OpenSSL's d2i reads past them)."""
    assert data[0] == 0x30
    n = data[1]
    end = 2 + n if n < 0x80 else 2 + (n & 0x7F) + int.from_bytes(data[2:2 + (n & 0x7F)],
                                                                  "big")
    assert data[end:] == bytes(len(data) - end) and len(data) - end < 8
    return data[:end]


@pytest.mark.parametrize("spec", [RSA2048, P256, EC_SPECS["P-521"]],
                         ids=["rsa", "p-256", "p-521"])
def test_pkcs11_exportable_key_exports_to_a_public_key(p11: Pkcs11KeyStore,
                                                       token_session: Any,
                                                       spec: KeySpec) -> None:
    stored = p11.generate(dataclasses.replace(spec, exportable=True))
    ref = new_ref(p11, stored, spec.family)
    [private] = _objects(token_session, stored, ObjectClass.PRIVATE_KEY)
    assert private[Attribute.SENSITIVE] is True and private[Attribute.EXTRACTABLE] is True
    assert json.loads(stored.blob)["exportable"] is True
    for enc in OAEP_HASH:
        released = unwrap_outside(p11.export(ref, RUNTIME_JWK, enc), enc)
        assert public_jwk(released) == stored.public
    alg = "RS256" if spec.family == "RSA" else {v: k for k, v in ES_CURVE.items()}[
        spec.curve or ""]
    digest = digest_for(alg)
    assert p11.verify(ref, alg, digest, algorithms.sign(released, alg, digest))
    # Backed up and restored, it stays exportable (its own backup key, whose unwrap
    # template keeps keys extractable).
    blob = p11.backup_blob(ref)
    p11.destroy(ref)
    again = new_ref(p11, p11.restore_key(spec.family, blob, stored.public), spec.family)
    assert public_jwk(unwrap_outside(p11.export(again, RUNTIME_JWK, "RSA_AES_KEY_WRAP_256"),
                                     "RSA_AES_KEY_WRAP_256")) == stored.public
    [backup] = token_session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                          Attribute.ID: bytes.fromhex(json.loads(blob)["bk"])})
    assert backup[Attribute.LABEL] == "okv-backup-exportable"
    p11.destroy(again)


def test_export_refusals(store: KeyStore) -> None:
    stored, ref = key_for(store, RSA2048)
    with pytest.raises(KeyStoreError) as err:
        store.export(ref, RUNTIME_JWK, "CKM_RSA_AES_KEY_WRAP")
    assert str(err.value) in ("The key is not exportable.",
                              "Keys in this keystore are not exportable.")
    if store.name == "software":
        with pytest.raises(KeyStoreError):
            store.generate(dataclasses.replace(P256, exportable=True))
        return
    exportable = store.generate(dataclasses.replace(P256, exportable=True))
    eref = new_ref(store, exportable, "EC")
    small = public_jwk(rsa.generate_private_key(65537, 1024))
    for wrapping, enc, message in (
            (RUNTIME_JWK, "RSA-OAEP", "Unsupported key wrapping 'RSA-OAEP'"),
            (small, "CKM_RSA_AES_KEY_WRAP", "The wrapping key must be an RSA key of"),
            (key_for(store, P256)[0].public, "CKM_RSA_AES_KEY_WRAP",
             "The wrapping key is not a usable RSA public key"),
            ({"n": "AA"}, "CKM_RSA_AES_KEY_WRAP", "The wrapping key is not a usable")):
        with pytest.raises(KeyStoreError) as err:
            store.export(eref, wrapping, enc)
        assert str(err.value).startswith(message), str(err.value)
    store.destroy(eref)


def test_pkcs11_signs_in_a_forked_child(p11: Pkcs11KeyStore) -> None:
    stored, ref = key_for(p11, P256)
    digest = digest_for("ES256")
    p11.sign(ref, "ES256", digest)  # the parent's session and cache are in use
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the signature, or the error, and leave at once
        code = 1
        try:
            os.close(read)
            signature = p11.sign(ref, "ES256", digest)
            fresh = p11.generate(RSA2048)
            fresh_sig = p11.sign(new_ref(p11, fresh, "RSA"), "PS256", digest)
            p11.destroy(new_ref(p11, fresh, "RSA"))
            out = {"sig": signature.hex(), "jwk": fresh.public, "fresh": fresh_sig.hex()}
            code = 0
        except BaseException as exc:
            out = {"error": repr(exc)}
        finally:
            os.write(write, json.dumps(out).encode())
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        result = json.loads(f.read())
    _, status = os.waitpid(pid, 0)
    assert "error" not in result, result
    assert os.waitstatus_to_exitcode(status) == 0
    verify_outside(stored.public, "ES256", digest, bytes.fromhex(result["sig"]))
    verify_outside(result["jwk"], "PS256", digest, bytes.fromhex(result["fresh"]))
    # The parent's session still works.
    verify_outside(stored.public, "ES256", digest, p11.sign(ref, "ES256", digest))


def test_pkcs11_threads_sign_at_once(p11: Pkcs11KeyStore) -> None:
    cases = [("PS256", RSA2048), ("RS384", RSA2048), ("ES256", P256),
             ("ES384", EC_SPECS["P-384"])]
    keys = {spec: key_for(p11, spec) for _, spec in cases}
    fresh = [new_ref(p11, keys[RSA2048][0], "RSA") for _ in range(4)]  # cold cache entries

    def sign(i: int) -> tuple[str, dict[str, Any], bytes, bytes]:
        alg, spec = cases[i % len(cases)]
        stored, ref = keys[spec]
        if alg == "PS256" and i < 16:
            ref = fresh[i % 4]
        digest = digest_for(alg, str(i).encode())
        return alg, stored.public, digest, p11.sign(ref, alg, digest)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(sign, range(64)))
    for alg, jwk, digest, signature in results:
        verify_outside(jwk, alg, digest, signature)


def test_pkcs11_close_then_use_again(p11: Pkcs11KeyStore) -> None:
    stored, ref = key_for(p11, RSA2048)
    p11.close()
    digest = digest_for("RS256")
    verify_outside(stored.public, "RS256", digest, p11.sign(ref, "RS256", digest))


def test_pkcs11_unavailable_module(tmp_path: Path) -> None:
    store = Pkcs11KeyStore(str(tmp_path / "libnothing.so"), TOKEN_LABEL, lambda: "1234")
    with pytest.raises(KeyStoreUnavailable) as err:
        store.generate(P256)
    assert "could not be loaded" in str(err.value)


def test_pkcs11_module_loaded_with_another_environment(p11: Pkcs11KeyStore,
                                                       soft_token: SoftToken) -> None:
    key_for(p11, P256)
    other = Pkcs11KeyStore(soft_token.module, TOKEN_LABEL, soft_token.pin,
                           environment={"SOFTHSM2_CONF": "/elsewhere/softhsm2.conf"})
    with pytest.raises(KeyStoreUnavailable) as err:
        other.generate(P256)
    assert "another environment" in str(err.value)


def test_pkcs11_unknown_token(p11: Pkcs11KeyStore, soft_token: SoftToken) -> None:
    key_for(p11, P256)
    other = Pkcs11KeyStore(soft_token.module, "no-such-token", soft_token.pin,
                           environment=_environment(soft_token))
    with pytest.raises(KeyStoreUnavailable) as err:
        other.generate(P256)
    assert str(err.value) == "There is no PKCS#11 token labelled 'no-such-token'."


def test_pkcs11_wrong_pin_is_refused(p11: Pkcs11KeyStore, soft_token: SoftToken) -> None:
    key_for(p11, P256)
    wrong = "wrong-" + soft_token.pin()[:4]
    other = Pkcs11KeyStore(soft_token.module, TOKEN_LABEL, lambda: wrong,
                           environment=_environment(soft_token))
    with pytest.raises(KeyStoreUnavailable) as err:
        other.generate(P256)
    assert wrong not in str(err.value) and soft_token.pin() not in str(err.value)

    def unreadable() -> str:
        raise OSError(f"no such file: {soft_token.pin()}")

    broken = Pkcs11KeyStore(soft_token.module, TOKEN_LABEL, unreadable,
                            environment=_environment(soft_token))
    with pytest.raises(KeyStoreUnavailable) as err:
        broken.generate(P256)
    assert str(err.value) == "The PKCS#11 PIN could not be read."

    def unset() -> str:
        raise KeyStoreUnavailable("the environment variable OKV_PIN is not set")

    missing = Pkcs11KeyStore(soft_token.module, TOKEN_LABEL, unset,
                             environment=_environment(soft_token))
    with pytest.raises(KeyStoreUnavailable) as err:
        missing.generate(P256)
    assert str(err.value) == "the environment variable OKV_PIN is not set"


def test_pkcs11_a_second_keystore_on_the_token_shares_the_login(
        p11: Pkcs11KeyStore, soft_token: SoftToken) -> None:
    stored, ref = key_for(p11, P256)
    second = Pkcs11KeyStore(soft_token.module, TOKEN_LABEL, soft_token.pin,
                            environment=_environment(soft_token), label_prefix="other")
    digest = digest_for("ES256")
    verify_outside(stored.public, "ES256", digest, second.sign(ref, "ES256", digest))
    second.close()  # does not log the first keystore out
    verify_outside(stored.public, "ES256", digest, p11.sign(ref, "ES256", digest))


# --- Attestation: the token's facts and the attestation keys ------------------------------


def test_software_keys_are_not_attested() -> None:
    soft = _STORES.setdefault("software", SoftwareKeyStore())
    stored = soft.generate(P256)
    for call in (lambda: soft.attest(new_ref(soft, stored, "EC")),
                 soft.attestation_signer):
        with pytest.raises(KeyStoreError) as err:
            call()
        assert "HSM-protected keys only" in str(err.value)


def test_pkcs11_attest_reads_the_token(p11: Pkcs11KeyStore, token_session: Any) -> None:
    stored, ref = key_for(p11, RSA2048)
    facts = p11.attest(ref)
    token = token_session.token
    assert facts == {
        "keystore": "pkcs11",
        "token": {"label": TOKEN_LABEL, "manufacturer": token.manufacturer_id,
                  "model": token.model, "serial": token.serial.decode().strip()},
        "attributes": {"sensitive": True, "extractable": False, "always_sensitive": True,
                       "never_extractable": False, "local": True},
        "public": stored.public,
    }
    assert facts["token"]["manufacturer"] == "SoftHSM project"


def test_pkcs11_attest_an_imported_key_is_not_local(p11: Pkcs11KeyStore) -> None:
    stored = p11.import_key(PlainKey(private_jwk(ec.generate_private_key(ec.SECP256R1())),
                                     "EC"))
    ref = new_ref(p11, stored, "EC")
    facts = p11.attest(ref)
    assert facts["attributes"]["local"] is False
    assert facts["attributes"]["sensitive"] is True
    assert facts["attributes"]["extractable"] is False
    assert facts["public"] == stored.public
    p11.destroy(ref)
    with pytest.raises(KeyStoreError) as err:
        p11.attest(ref)
    assert str(err.value) == "The key is not in the PKCS#11 token."


def test_pkcs11_attestation_keys_sign_in_the_token(p11: Pkcs11KeyStore,
                                                   token_session: Any) -> None:
    signer = p11.attestation_signer()
    handle = signer.generate("signing")
    public = signer.public("signing", handle)
    assert public.curve.name == "secp384r1"
    digest = hashlib.sha384(b"attestation").digest()
    raw = signer.sign("signing", handle, digest)
    assert len(raw) == 96
    public.verify(utils.encode_dss_signature(int.from_bytes(raw[:48], "big"),
                                             int.from_bytes(raw[48:], "big")),
                  digest, ec.ECDSA(utils.Prehashed(hashes.SHA384())))
    [private] = token_session.get_objects({Attribute.ID: bytes.fromhex(handle),
                                           Attribute.CLASS: ObjectClass.PRIVATE_KEY})
    assert private[Attribute.LABEL] == "okv-attestation"
    for attribute in (Attribute.SENSITIVE, Attribute.NEVER_EXTRACTABLE, Attribute.LOCAL,
                      Attribute.TOKEN, Attribute.PRIVATE):
        assert private[attribute] is True
    assert private[Attribute.EXTRACTABLE] is False
    with pytest.raises(KeyStoreError) as err:  # the handle names no root key
        signer.sign("root", handle, digest)
    assert str(err.value) == "The attestation key is not in the PKCS#11 token."
    for bad in ("", "0A" * 16, "../x"):
        with pytest.raises(KeyStoreError):
            signer.sign("signing", bad, digest)
    with pytest.raises(KeyStoreError):
        signer.generate("other")
    signer.destroy("signing", handle)
    signer.destroy("signing", handle)  # none left is not an error
    with pytest.raises(KeyStoreError):
        signer.sign("signing", handle, digest)


def _public_object(session: Any, label: str) -> str:
    """A public key object with `label` and a random CKA_ID (hex)."""
    key_id = os.urandom(16)
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    session.create_object({
        Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: pkcs11.KeyType.EC,
        Attribute.TOKEN: True, Attribute.ID: key_id, Attribute.LABEL: label,
        Attribute.EC_PARAMS: EC_PARAMS["P-256"],
        Attribute.EC_POINT: bytes([0x04, len(point)]) + point})
    return key_id.hex()


def test_pkcs11_held_lists_key_versions_only(p11: Pkcs11KeyStore,
                                             soft_token: SoftToken) -> None:
    """Only `<prefix>-<32 hex digits>` labels are a key version's: the attestation keys
    and any other label of the prefix are never listed, so the orphan clean-up (which
    destroys what `held()` lists and no version names) cannot take them."""
    stored, _ = key_for(p11, P256)
    signer = p11.attestation_signer()
    root, signing = signer.generate("root"), signer.generate("signing")
    token = pkcs11.lib(soft_token.module).get_token(token_label=TOKEN_LABEL)
    with token.open(rw=True) as session:
        near = [_public_object(session, label) for label in (
            "okv-attestation", "okv-attestation-root-x", "okv-" + "AB" * 16,
            "okv-" + "ab" * 16 + "0", "okv-" + "ab" * 15, "okv--" + "ab" * 16,
            "okv-x-" + "ab" * 16, "okv2-" + "ab" * 16)]
        exact = _public_object(session, "okv-" + "cd" * 16)
        try:
            held = p11.held()
            assert json.loads(stored.blob)["id"] in held and exact in held
            assert not {root, signing, *near} & held
            for handle in (root, signing):  # by handle, not by label: nothing destroyed
                p11.destroy_held(handle)
                assert len(list(session.get_objects(
                    {Attribute.ID: bytes.fromhex(handle)}))) == 2
        finally:
            for handle in (*near, exact):
                for obj in session.get_objects({Attribute.ID: bytes.fromhex(handle)}):
                    obj.destroy()
            signer.destroy("root", root)
            signer.destroy("signing", signing)
        assert list(session.get_objects({Attribute.ID: bytes.fromhex(root)})) == []


def test_pkcs11_attestor_in_the_token(p11: Pkcs11KeyStore, token_session: Any) -> None:
    """The Attestor on the token: a process that loses the race to store the chain
    destroys the keys it made in the token, and the winner's chain attests a key."""
    meta: dict[str, str] = {}

    def now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def first(key: str, make: Callable[[], str]) -> str:
        return meta.setdefault(key, make())

    def late(key: str, make: Callable[[], str]) -> str:
        make()  # made its keys, then found the winner's value stored
        return meta[key]

    def attestation_objects() -> list[Any]:
        return [obj for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY)
                for obj in token_session.get_objects({Attribute.CLASS: cls})
                if str(obj[Attribute.LABEL]).startswith("okv-attestation")]

    winner = Attestor(first, now, "test").chain(p11)
    assert len(attestation_objects()) == 4
    assert Attestor(late, now, "test").chain(p11) == winner
    assert len(attestation_objects()) == 4  # the late one's keys are gone
    stored, ref = key_for(p11, P256)
    kid = "https://v.vault.localhost/keys/k/1"
    bundle = KeyBundle("k", "1", "EC-HSM", ["sign", "verify"], stored.public,
                       Attributes(True, 1, 1, "Recoverable", 90))
    attested = Attestor(first, now, "test").attest(p11, ref, kid, bundle)
    wire = render.key("https://v.vault.localhost", dataclasses.replace(
        bundle, attestation=attested))
    facts = verify_attestation(wire, now())
    assert (facts.kid, facts.generated_in_hsm, facts.extractable) == (kid, True, False)
    assert facts.root == winner.root
    signer = p11.attestation_signer()
    signer.destroy("root", winner.root_id)
    signer.destroy("signing", winner.signing_id)
    assert attestation_objects() == []


# --- The paddings decoded on the host, against OpenSSL ------------------------------------


@pytest.fixture(scope="module")
def host_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def _raw_decrypt(key: rsa.RSAPrivateKey, ciphertext: bytes) -> bytes:
    nums = key.private_numbers()
    n = nums.public_numbers.n
    return pow(int.from_bytes(ciphertext, "big"), nums.d, n).to_bytes(len(ciphertext), "big")


def test_pkcs11_host_pkcs1_v15_decode_is_openssls_implicit_rejection(
        host_key: rsa.RSAPrivateKey) -> None:
    """With OpenSSL's key-derivation secret (SHA-256 of the private exponent), the host
    decoder gives what OpenSSL's implicit rejection gives, good padding or bad."""
    k = 256
    secret = hashlib.sha256(host_key.private_numbers().d.to_bytes(k, "big")).digest()
    pub = host_key.public_key()
    rng = random.Random(7)
    blocks = [
        b"\x00\x02" + bytes(rng.randrange(1, 256) for _ in range(254)),  # no separator
        b"\x00\x02" + bytes(rng.randrange(1, 256) for _ in range(7)) + b"\x00" + bytes(246),
        b"\x00\x02" + bytes(rng.randrange(1, 256) for _ in range(8)) + b"\x00" + bytes(245),
        b"\x00\x02" + bytes(rng.randrange(1, 256) for _ in range(253)) + b"\x00",  # empty
        b"\x01\x02" + bytes(rng.randrange(1, 256) for _ in range(10)) + b"\x00" + bytes(243),
        b"\x00\x01" + b"\xff" * 10 + b"\x00" + bytes(243),
        *(b"\x00" + rng.randbytes(255) for _ in range(40)),
    ]
    ciphertexts = [raw_encrypt(pub, em) for em in blocks]
    ciphertexts += [pub.encrypt(os.urandom(n), padding.PKCS1v15()) for n in (0, 1, 100, 245)]
    for ciphertext in ciphertexts:
        mine = pkcs1_v15_decode(_raw_decrypt(host_key, ciphertext),
                                implicit_rejection_kdk(secret, ciphertext))
        assert mine == host_key.decrypt(ciphertext, padding.PKCS1v15())


def test_pkcs11_host_oaep_sha256_decode(host_key: rsa.RSAPrivateKey) -> None:
    pub = host_key.public_key()
    for n in (0, 1, 64, 190):
        message = os.urandom(n)
        em = _raw_decrypt(host_key, pub.encrypt(message, outside_padding("RSA-OAEP-256")))
        assert oaep_sha256_decode(em) == message
        for i in (0, 1, 40, 255):  # first byte, seed, label hash, message end
            tampered = bytearray(em)
            tampered[i] ^= 0x40
            with pytest.raises(DecryptionError):
                oaep_sha256_decode(bytes(tampered))
    for em in (bytes(256), b"\x00" + bytes(65), bytes(10)):
        with pytest.raises(DecryptionError):
            oaep_sha256_decode(em)


# A process whose view of the token misses a key another process made (SoftHSM2's file
# store: its own change, stored right after, takes the other's generation step), then
# asked for that key: found after the library is initialized again. Run in a child process
# of its own (its library, its sessions), with another child making the key in between.
_MISSED_KEY = r"""
import os, subprocess, sys
from openkeyvault.keystore import pkcs11 as p11mod
from openkeyvault.keystore.base import KeyRef, KeySpec
from openkeyvault.keystore.pkcs11 import Pkcs11KeyStore, _blob
module, label, pin_file, reload = sys.argv[1:5]
if reload == "off":
    p11mod._reload = lambda loaded: False
pin = lambda: open(pin_file).read().strip()
store = Pkcs11KeyStore(module, label, pin, label_prefix="okv-missed",
                       environment={"SOFTHSM2_CONF": os.environ["SOFTHSM2_CONF"]})
store.generate(KeySpec("EC", curve="P-256"))  # this process has read the token
other = '''
import os, sys, pkcs11
from pkcs11 import Attribute, KeyType
from pkcs11.util.ec import encode_named_curve_parameters
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
session = token.open(user_pin=sys.argv[3], rw=True)
key_id = os.urandom(16)
params = session.create_domain_parameters(
    KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True)
params.generate_keypair(store=True, id=key_id, label="okv-missed-" + key_id.hex())
print(key_id.hex())
'''
made = subprocess.run([sys.executable, "-c", other, module, label, pin()], check=True,
                      capture_output=True, text=True).stdout.strip()
store.generate(KeySpec("EC", curve="P-256"))  # its own change, stored after the other's
ref = KeyRef("missed", "EC", lambda: _blob(bytes.fromhex(made), "EC", b""))
try:
    store.sign(ref, "ES256", b"\0" * 32)
    print("signed")
except Exception as exc:
    print(f"refused: {exc}")
"""


@pytest.mark.parametrize(("reload", "outcome"), [("on", "signed"),
                                                 ("off", "refused: The key is not in")])
def test_a_key_another_process_made_is_found(soft_token: SoftToken, reload: str,
                                             outcome: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _MISSED_KEY, soft_token.module, soft_token.label,
         str(soft_token.pin_file), reload],
        env={**os.environ, **_environment(soft_token)}, capture_output=True, text=True,
        timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(outcome), done.stdout


# --- Symmetric (oct) keys: AES in the token (PKCS#11 only) ---------------------------------


AES_BITS = (128, 192, 256)
GCM_ALGS = [f"A{bits}GCM" for bits in AES_BITS]
CBC_ALGS = [f"A{bits}CBC" for bits in AES_BITS]
CBCPAD_ALGS = [f"A{bits}CBCPAD" for bits in AES_BITS]
KW_ALGS = [f"A{bits}KW" for bits in AES_BITS]
AES_SIZE = "An AES key must be 128, 192 or 256 bits (16, 24 or 32 bytes)."
NO_OCT = "Symmetric (oct) keys are available in an HSM only."
_OCT: dict[int, tuple[bytes, StoredKey, KeyRef]] = {}


def alg_bits(alg: str) -> int:
    return int(alg[1:4])


def oct_jwk(key: bytes) -> dict[str, Any]:
    return {"kty": "oct-HSM", "k": b64u(key)}


def known_oct(p11: Pkcs11KeyStore, bits: int) -> tuple[bytes, StoredKey, KeyRef]:
    """An AES key of known bytes imported into the token, one per size for the module: what
    the token computes with it is checked against `cryptography` with the same bytes."""
    if bits not in _OCT:
        key = os.urandom(bits // 8)
        stored = p11.import_key(PlainKey(oct_jwk(key), "oct"))
        _OCT[bits] = (key, stored, new_ref(p11, stored, "oct"))
    return _OCT[bits]


def generated_oct(p11: Pkcs11KeyStore, bits: int) -> tuple[StoredKey, KeyRef]:
    return key_for(p11, KeySpec("oct", bits))


def kcv_outside(key: bytes) -> bytes:
    """The key check value by `cryptography`: AES-ECB of a zero block, its first 3 bytes."""
    encryptor = Cipher(aes.AES(key), modes.ECB()).encryptor()  # noqa: S305 - a check value
    return (encryptor.update(bytes(16)) + encryptor.finalize())[:3]


def cbc_outside(key: bytes, iv: bytes, data: bytes, pad: bool, encrypt: bool) -> bytes:
    """AES-CBC by `cryptography`, with PKCS#7 padding or none."""
    cipher = Cipher(aes.AES(key), modes.CBC(iv))
    if encrypt:
        if pad:
            padder = sym_padding.PKCS7(128).padder()
            data = padder.update(data) + padder.finalize()
        encryptor = cipher.encryptor()
        return encryptor.update(data) + encryptor.finalize()
    decryptor = cipher.decryptor()
    out = decryptor.update(data) + decryptor.finalize()
    if pad:
        unpadder = sym_padding.PKCS7(128).unpadder()
        out = unpadder.update(out) + unpadder.finalize()
    return out


def flip(data: bytes, at: int = -1) -> bytes:
    changed = bytearray(data)
    changed[at] ^= 0x01
    return bytes(changed)


def test_aes_table() -> None:
    """Every AES algorithm of the REST API, with the key size in its name and its rules."""
    assert set(algorithms.AES) == {f"A{bits}{mode}" for bits in AES_BITS
                                   for mode in ("GCM", "CBC", "CBCPAD", "KW")}
    assert algorithms.AES_SIZES == AES_BITS
    for name, spec in algorithms.AES.items():
        assert spec.key_bits == alg_bits(name) and name.endswith(spec.mode)
        assert spec.wraps is (spec.mode == "KW")
        assert (spec.iv_bytes, spec.iv_given, spec.tag_bytes, spec.aad, spec.multiple,
                spec.least) == {"GCM": (12, False, 16, True, 1, 0),
                                "CBC": (16, True, 0, False, 16, 0),
                                "CBCPAD": (16, True, 0, False, 1, 0),
                                "KW": (0, False, 0, False, 8, 16)}[spec.mode]
    assert not set(algorithms.AES) & set(algorithms.ENCRYPT)


def test_software_refuses_oct_keys() -> None:
    soft = _STORES.setdefault("software", SoftwareKeyStore())
    assert "oct" not in soft.capabilities().families
    assert soft.capabilities().aes_sizes == ()
    for bits in AES_BITS:
        with pytest.raises(KeyStoreError) as err:
            soft.generate(KeySpec("oct", bits))
        assert str(err.value) == NO_OCT
    with pytest.raises(KeyStoreError) as err:
        soft.import_key(PlainKey(oct_jwk(bytes(32)), "oct"))
    assert str(err.value) == "Key type family 'oct' cannot be imported."
    ref = KeyRef("software/oct", "oct", lambda: b"")
    for call in (lambda: soft.encrypt_symmetric(ref, "A256GCM", b"x"),
                 lambda: soft.decrypt_symmetric(ref, "A256GCM", b"x", bytes(12), None,
                                                bytes(16))):
        with pytest.raises(KeyStoreError) as err:
            call()
        assert str(err.value) == NO_OCT


@pytest.mark.parametrize("bits", AES_BITS)
def test_pkcs11_generated_aes_key_is_a_sensitive_token_object(
        p11: Pkcs11KeyStore, token_session: Any, bits: int) -> None:
    stored, _ = generated_oct(p11, bits)
    assert stored.public == {} and stored.size == bits
    doc = json.loads(stored.blob)
    assert set(doc) == {"v", "id", "family", "bits", "kcv", "bk", "wrapped"}
    assert doc["family"] == "oct" and doc["bits"] == bits
    assert stored.handle == doc["id"] and stored.handle in p11.held()
    [secret] = _objects(token_session, stored)
    assert secret[Attribute.CLASS] == ObjectClass.SECRET_KEY
    assert secret[Attribute.KEY_TYPE] == pkcs11.KeyType.AES
    assert secret[Attribute.VALUE_LEN] == bits // 8
    assert secret[Attribute.LABEL] == f"okv-{doc['id']}"
    for attribute, value in ((Attribute.SENSITIVE, True), (Attribute.EXTRACTABLE, False),
                             (Attribute.ALWAYS_SENSITIVE, True), (Attribute.LOCAL, True),
                             # extractable only until its copy was wrapped by the backup key
                             (Attribute.NEVER_EXTRACTABLE, False),
                             (Attribute.TOKEN, True), (Attribute.PRIVATE, True),
                             (Attribute.ENCRYPT, True), (Attribute.DECRYPT, True),
                             (Attribute.WRAP, True), (Attribute.UNWRAP, True),
                             (Attribute.SIGN, False), (Attribute.VERIFY, False),
                             (Attribute.DERIVE, False)):
        assert secret[attribute] is value, attribute
    with pytest.raises(pkcs11.exceptions.AttributeSensitive):
        secret[Attribute.VALUE]
    # The blob's check value is the token's own (CKA_CHECK_VALUE of a generated key).
    assert bytes.fromhex(doc["kcv"]) == bytes(secret[Attribute.CHECK_VALUE])
    [backup_key] = token_session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                              Attribute.LABEL: "okv-backup"})
    assert doc["bk"] == backup_key[Attribute.ID].hex()
    assert len(base64.b64decode(doc["wrapped"], validate=True)) == bits // 8 + 8


@pytest.mark.parametrize("size", [None, 64, 160, 512])
def test_pkcs11_aes_key_sizes_are_refused(p11: Pkcs11KeyStore, size: int | None) -> None:
    before = p11.held()
    with pytest.raises(KeyStoreError) as err:
        p11.generate(KeySpec("oct", size))
    assert str(err.value) == AES_SIZE
    assert p11.held() == before


@pytest.mark.parametrize("bits", AES_BITS)
def test_pkcs11_imported_aes_key(p11: Pkcs11KeyStore, token_session: Any, bits: int) -> None:
    key, stored, ref = known_oct(p11, bits)
    assert stored.public == {} and stored.size == bits
    [secret] = _objects(token_session, stored)
    assert secret[Attribute.LOCAL] is False
    assert secret[Attribute.SENSITIVE] is True and secret[Attribute.EXTRACTABLE] is False
    kcv = bytes.fromhex(json.loads(stored.blob)["kcv"])
    assert kcv == kcv_outside(key) == bytes(secret[Attribute.CHECK_VALUE])
    facts = p11.attest(ref)
    assert facts["public"] == {}
    # Its bytes were on the host once: never ALWAYS_SENSITIVE, never LOCAL.
    assert facts["attributes"] == {"sensitive": True, "extractable": False,
                                   "always_sensitive": False, "never_extractable": False,
                                   "local": False}


@pytest.mark.parametrize(("jwk", "message"), [
    ({"kty": "oct-HSM"}, "The JWK has no key material ('k')."),
    ({"kty": "oct-HSM", "k": ""}, "JWK field 'k' must be a non-empty base64url string."),
    ({"kty": "oct-HSM", "k": "!!!!"}, "JWK field 'k' is not valid base64url."),
    ({"kty": "oct-HSM", "k": b64u(bytes(8))}, AES_SIZE),
    ({"kty": "oct-HSM", "k": b64u(bytes(20))}, AES_SIZE),
    ({"kty": "oct-HSM", "k": b64u(bytes(64))}, AES_SIZE),
], ids=["no-k", "empty-k", "bad-k", "64-bit", "160-bit", "512-bit"])
def test_pkcs11_aes_import_refusals(p11: Pkcs11KeyStore, jwk: dict[str, Any],
                                    message: str) -> None:
    before = p11.held()
    with pytest.raises(KeyStoreError) as err:
        p11.import_key(PlainKey(jwk, "oct"))
    assert str(err.value) == message
    assert p11.held() == before


@pytest.mark.parametrize("alg", GCM_ALGS)
def test_pkcs11_gcm_against_cryptography(p11: Pkcs11KeyStore, alg: str) -> None:
    key, _, ref = known_oct(p11, alg_bits(alg))
    gcm = AESGCM(key)
    ivs = set()
    for size, aad in ((0, None), (1, b"aad"), (16, None), (33, os.urandom(40)),
                      (1000, b"x")):
        plaintext = os.urandom(size)
        result = p11.encrypt_symmetric(ref, alg, plaintext, None, aad)
        assert result.iv is not None and len(result.iv) == 12
        assert result.tag is not None and len(result.tag) == 16
        assert len(result.ciphertext) == size
        ivs.add(result.iv)
        assert gcm.decrypt(result.iv, result.ciphertext + result.tag, aad) == plaintext
        iv = os.urandom(12)
        theirs = gcm.encrypt(iv, plaintext, aad)
        assert p11.decrypt_symmetric(ref, alg, theirs[:-16], iv, aad, theirs[-16:]) == \
            plaintext
    assert len(ivs) == 5  # a fresh iv every time


@pytest.mark.parametrize("alg", CBC_ALGS + CBCPAD_ALGS)
def test_pkcs11_cbc_against_cryptography(p11: Pkcs11KeyStore, alg: str) -> None:
    key, _, ref = known_oct(p11, alg_bits(alg))
    pad = alg.endswith("PAD")
    for size in ((0, 1, 15, 16, 17, 100) if pad else (16, 32, 160)):
        plaintext, iv = os.urandom(size), os.urandom(16)
        result = p11.encrypt_symmetric(ref, alg, plaintext, iv)
        assert (result.iv, result.tag) == (iv, None)
        assert result.ciphertext == cbc_outside(key, iv, plaintext, pad, encrypt=True)
        assert p11.decrypt_symmetric(ref, alg, result.ciphertext, iv) == plaintext
        other_iv = os.urandom(16)
        theirs = cbc_outside(key, other_iv, plaintext, pad, encrypt=True)
        assert p11.decrypt_symmetric(ref, alg, theirs, other_iv) == plaintext


@pytest.mark.parametrize("alg", KW_ALGS)
def test_pkcs11_key_wrap_against_cryptography(p11: Pkcs11KeyStore, alg: str) -> None:
    key, _, ref = known_oct(p11, alg_bits(alg))
    for size in (16, 24, 32, 40, 64, 512):
        material = os.urandom(size)
        wrapped = p11.wrap(ref, alg, material)
        assert wrapped == keywrap.aes_key_wrap(key, material)
        assert p11.unwrap(ref, alg, wrapped) == material
        assert keywrap.aes_key_unwrap(key, wrapped) == material


@pytest.mark.parametrize("bits", AES_BITS)
def test_pkcs11_generated_aes_key_round_trips(p11: Pkcs11KeyStore, bits: int) -> None:
    _, ref = generated_oct(p11, bits)
    plaintext, iv = os.urandom(50), os.urandom(16)
    result = p11.encrypt_symmetric(ref, f"A{bits}GCM", plaintext, None, b"context")
    assert p11.decrypt_symmetric(ref, f"A{bits}GCM", result.ciphertext, result.iv,
                                 b"context", result.tag) == plaintext
    for alg, data in ((f"A{bits}CBC", plaintext[:48]), (f"A{bits}CBCPAD", plaintext)):
        ciphertext = p11.encrypt_symmetric(ref, alg, data, iv).ciphertext
        assert p11.decrypt_symmetric(ref, alg, ciphertext, iv) == data
    material = os.urandom(32)
    assert p11.unwrap(ref, f"A{bits}KW", p11.wrap(ref, f"A{bits}KW", material)) == material


def _decryption_fails(call: Callable[[], object]) -> None:
    with pytest.raises(DecryptionError) as err:
        call()
    assert type(err.value) is DecryptionError and str(err.value) == DECRYPTION_FAILED


@pytest.mark.parametrize("bits", AES_BITS)
def test_pkcs11_tampered_gcm_fails_alike(p11: Pkcs11KeyStore, bits: int) -> None:
    alg = f"A{bits}GCM"
    _, ref = generated_oct(p11, bits)
    aad = b"bound to this"
    r = p11.encrypt_symmetric(ref, alg, b"attack at dawn", None, aad)
    assert r.iv is not None and r.tag is not None
    for ciphertext, iv, given_aad, tag in (
            (flip(r.ciphertext), r.iv, aad, r.tag), (r.ciphertext, flip(r.iv), aad, r.tag),
            (r.ciphertext, r.iv, flip(aad), r.tag), (r.ciphertext, r.iv, None, r.tag),
            (r.ciphertext, r.iv, aad, flip(r.tag)), (r.ciphertext, r.iv, aad, flip(r.tag, 0)),
            (r.ciphertext[:-1], r.iv, aad, r.tag), (r.ciphertext + b"\0", r.iv, aad, r.tag)):
        _decryption_fails(lambda c=ciphertext, i=iv, a=given_aad, t=tag:
                          p11.decrypt_symmetric(ref, alg, c, i, a, t))
    # Another key of the same size: the same failure.
    _, _, other = known_oct(p11, bits)
    _decryption_fails(lambda: p11.decrypt_symmetric(other, alg, r.ciphertext, r.iv, aad,
                                                    r.tag))


@pytest.mark.parametrize("bits", AES_BITS)
def test_pkcs11_bad_cbc_padding_fails_alike(p11: Pkcs11KeyStore, bits: int) -> None:
    """A bad PKCS#7 padding gives the same error as every other failed decryption: no
    padding oracle by message."""
    alg = f"A{bits}CBCPAD"
    key, _, ref = known_oct(p11, bits)
    iv = os.urandom(16)
    for last_block in (bytes(16), b"\x11" * 16, bytes(15) + b"\x02", b"\x01" * 14 + b"\x02\x03"):
        ciphertext = cbc_outside(key, iv, os.urandom(16) + last_block, False, encrypt=True)
        _decryption_fails(lambda c=ciphertext: p11.decrypt_symmetric(ref, alg, c, iv))
    for ciphertext in (b"", os.urandom(15), os.urandom(33)):
        _decryption_fails(lambda c=ciphertext: p11.decrypt_symmetric(ref, alg, c, iv))
        if ciphertext:
            _decryption_fails(lambda c=ciphertext: p11.decrypt_symmetric(
                ref, f"A{bits}CBC", c, iv))


@pytest.mark.parametrize("bits", AES_BITS)
def test_pkcs11_tampered_key_wrap_fails_alike(p11: Pkcs11KeyStore, bits: int) -> None:
    alg = f"A{bits}KW"
    _, ref = generated_oct(p11, bits)
    wrapped = p11.wrap(ref, alg, os.urandom(32))
    for bad in (flip(wrapped), flip(wrapped, 0), wrapped[:-8], wrapped + bytes(8),
                wrapped[:16], wrapped[:-1], b""):
        _decryption_fails(lambda w=bad: p11.unwrap(ref, alg, w))


def _oct(p11: Pkcs11KeyStore, bits: int = 256) -> KeyRef:
    return generated_oct(p11, bits)[1]


OCT_REFUSALS: list[tuple[str, Callable[[Pkcs11KeyStore], object], type[Exception], str]] = [
    ("gcm-key-size", lambda s: s.encrypt_symmetric(_oct(s), "A128GCM", b"x"), AlgorithmError,
     "Algorithm A128GCM needs a 128-bit key; this key is 256-bit."),
    ("cbc-key-size", lambda s: s.decrypt_symmetric(_oct(s, 128), "A192CBC", bytes(16),
                                                   bytes(16)), AlgorithmError,
     "Algorithm A192CBC needs a 192-bit key; this key is 128-bit."),
    ("kw-key-size", lambda s: s.wrap(_oct(s, 192), "A256KW", bytes(16)), AlgorithmError,
     "Algorithm A256KW needs a 256-bit key; this key is 192-bit."),
    ("unknown", lambda s: s.encrypt_symmetric(_oct(s), "A256CTR", b"x"), AlgorithmError,
     "Unknown encryption algorithm 'A256CTR'."),
    ("unknown-wrap", lambda s: s.wrap(_oct(s), "A256KWP", bytes(16)), AlgorithmError,
     "Unknown key wrap algorithm 'A256KWP'."),
    ("kw-to-encrypt", lambda s: s.encrypt_symmetric(_oct(s), "A256KW", bytes(16)),
     AlgorithmError, "Algorithm A256KW wraps keys: use it to wrap and unwrap keys."),
    ("gcm-to-wrap", lambda s: s.wrap(_oct(s), "A256GCM", bytes(16)), AlgorithmError,
     "Algorithm A256GCM encrypts data: use it to encrypt and decrypt."),
    ("rsa-alg-oct-key", lambda s: s.encrypt_symmetric(_oct(s), "RSA-OAEP", b"x"),
     AlgorithmError, "Algorithm RSA-OAEP needs an RSA key."),
    ("rsa-wrap-oct-key", lambda s: s.wrap(_oct(s), "RSA-OAEP-256", bytes(16)),
     AlgorithmError, "Algorithm RSA-OAEP-256 needs an RSA key."),
    ("rsa-encrypt-oct-key", lambda s: s.encrypt(_oct(s), "RSA1_5", b"x"), AlgorithmError,
     "Algorithm RSA1_5 needs an RSA key."),
    ("rsa-decrypt-oct-key", lambda s: s.decrypt(_oct(s), "RSA-OAEP", bytes(256)),
     AlgorithmError, "Algorithm RSA-OAEP needs an RSA key."),
    ("gcm-through-encrypt", lambda s: s.encrypt(_oct(s), "A256GCM", b"x"), AlgorithmError,
     "Algorithm A256GCM takes an iv and gives a tag: it is used by the symmetric encrypt "
     "and decrypt operations."),
    ("kw-through-decrypt", lambda s: s.decrypt(_oct(s), "A256KW", bytes(24)), AlgorithmError,
     "Algorithm A256KW wraps keys: use it to wrap and unwrap keys."),
    ("sign-oct-key", lambda s: s.sign(_oct(s), "RS256", bytes(32)), AlgorithmError,
     "Algorithm 'RS256' cannot be used with an oct key."),
    ("verify-oct-key", lambda s: s.verify(_oct(s), "ES256", bytes(32), bytes(64)),
     AlgorithmError, "Algorithm 'ES256' cannot be used with an oct key."),
    ("aes-on-rsa-key", lambda s: s.encrypt_symmetric(_rsa_ref(s), "A256GCM", b"x"),
     AlgorithmError, "Algorithm A256GCM needs an oct key."),
    ("rsa-alg-symmetric", lambda s: s.encrypt_symmetric(_rsa_ref(s), "RSA-OAEP", b"x"),
     AlgorithmError, "Algorithm RSA-OAEP is not an AES algorithm."),
    ("aes-on-ec-key", lambda s: s.decrypt_symmetric(_ec_ref(s), "A128CBC", bytes(16),
                                                    bytes(16)), AlgorithmError,
     "Algorithm A128CBC needs an oct key."),
    ("gcm-given-iv", lambda s: s.encrypt_symmetric(_oct(s), "A256GCM", b"x", bytes(12)),
     KeyStoreError, "A256GCM encryption takes no iv: the HSM makes a fresh one for each "
     "encryption and returns it with the ciphertext."),
    ("cbc-no-iv", lambda s: s.encrypt_symmetric(_oct(s), "A256CBC", bytes(16)),
     KeyStoreError, "A256CBC needs an iv of 16 bytes."),
    ("cbcpad-no-iv", lambda s: s.decrypt_symmetric(_oct(s), "A256CBCPAD", bytes(16)),
     KeyStoreError, "A256CBCPAD needs an iv of 16 bytes."),
    ("cbc-short-iv", lambda s: s.encrypt_symmetric(_oct(s), "A256CBCPAD", b"x", bytes(12)),
     KeyStoreError, "A256CBCPAD needs an iv of 16 bytes; this one has 12."),
    ("cbc-long-iv", lambda s: s.decrypt_symmetric(_oct(s), "A256CBC", bytes(16), bytes(17)),
     KeyStoreError, "A256CBC needs an iv of 16 bytes; this one has 17."),
    ("cbc-partial-block", lambda s: s.encrypt_symmetric(_oct(s), "A256CBC", bytes(17),
                                                        bytes(16)), KeyStoreError,
     "The plaintext for A256CBC must be a multiple of 16 bytes long (it is not padded: "
     "A256CBCPAD pads it)."),
    ("cbc-aad", lambda s: s.encrypt_symmetric(_oct(s), "A256CBCPAD", b"x", bytes(16), b"a"),
     KeyStoreError, "A256CBCPAD takes no aad: additional authenticated data is for AES-GCM."),
    ("cbc-tag", lambda s: s.decrypt_symmetric(_oct(s), "A256CBC", bytes(16), bytes(16), None,
                                              bytes(16)), KeyStoreError,
     "A256CBC takes no tag: authentication tags are for AES-GCM."),
    ("gcm-no-iv", lambda s: s.decrypt_symmetric(_oct(s), "A256GCM", b"x", None, None,
                                                bytes(16)), KeyStoreError,
     "A256GCM needs an iv of 12 bytes."),
    ("gcm-iv-16", lambda s: s.decrypt_symmetric(_oct(s), "A256GCM", b"x", bytes(16), None,
                                                bytes(16)), KeyStoreError,
     "A256GCM needs an iv of 12 bytes; this one has 16."),
    ("gcm-no-tag", lambda s: s.decrypt_symmetric(_oct(s), "A256GCM", b"x", bytes(12)),
     KeyStoreError, "A256GCM decryption needs the authentication tag."),
    ("gcm-short-tag", lambda s: s.decrypt_symmetric(_oct(s), "A256GCM", b"x", bytes(12),
                                                    None, bytes(12)), KeyStoreError,
     "A256GCM needs a tag of 16 bytes; this one has 12."),
    *[(f"kw-wrap-{n}", (lambda m: lambda s: s.wrap(_oct(s), "A256KW", bytes(m)))(n),
       KeyStoreError, "The key to wrap with A256KW must be a multiple of 8 bytes and at least "
       "16 bytes long.") for n in (0, 8, 15, 20, 33)],
]


@pytest.mark.parametrize(("call", "error", "message"), [r[1:] for r in OCT_REFUSALS],
                         ids=[r[0] for r in OCT_REFUSALS])
def test_pkcs11_aes_refusals(p11: Pkcs11KeyStore, call: Callable[[Pkcs11KeyStore], object],
                             error: type[Exception], message: str) -> None:
    with pytest.raises(error) as err:
        call(p11)
    assert type(err.value) is error
    assert str(err.value) == message


@pytest.mark.parametrize("bits", AES_BITS)
def test_pkcs11_aes_backup_restores_a_key_that_decrypts(p11: Pkcs11KeyStore,
                                                        token_session: Any, bits: int) -> None:
    """Backed up, destroyed (a purge), restored into a new token object: the restored key
    decrypts what the original encrypted, and its blob is a backup copy again."""
    stored = p11.generate(KeySpec("oct", bits))
    ref = new_ref(p11, stored, "oct")
    sealed = p11.encrypt_symmetric(ref, f"A{bits}GCM", b"kept across a restore", None, b"a")
    wrapped = p11.wrap(ref, f"A{bits}KW", bytes(range(32)))
    blob = p11.backup_blob(ref)
    p11.destroy(ref)
    assert _objects(token_session, stored) == [] and stored.handle not in p11.held()
    restored = p11.restore_key("oct", blob, {})
    assert (restored.public, restored.size) == ({}, bits)
    assert restored.handle is not None and restored.handle != stored.handle
    assert restored.handle in p11.held()
    doc = json.loads(restored.blob)
    assert {k: v for k, v in doc.items() if k != "id"} == \
        {k: v for k, v in json.loads(stored.blob).items() if k != "id"}
    again = new_ref(p11, restored, "oct")
    assert p11.decrypt_symmetric(again, f"A{bits}GCM", sealed.ciphertext, sealed.iv, b"a",
                                 sealed.tag) == b"kept across a restore"
    assert p11.unwrap(again, f"A{bits}KW", wrapped) == bytes(range(32))
    assert p11.backup_blob(again) == restored.blob
    [secret] = _objects(token_session, restored)
    assert secret[Attribute.SENSITIVE] is True and secret[Attribute.EXTRACTABLE] is False
    p11.destroy(again)


def test_pkcs11_aes_restore_refusals(p11: Pkcs11KeyStore) -> None:
    stored, ref = generated_oct(p11, 256)
    doc = json.loads(p11.backup_blob(ref))
    wrapped = bytearray(base64.b64decode(doc["wrapped"]))
    wrapped[10] ^= 1
    other = json.loads(generated_oct(p11, 128)[0].blob)
    before = p11.held()
    for changed, public in (
            ({**doc, "kcv": "000000" if doc["kcv"] != "000000" else "000001"}, {}),
            ({**doc, "wrapped": base64.b64encode(bytes(wrapped)).decode()}, {}),
            ({**doc, "wrapped": other["wrapped"]}, {}),  # another key's copy
            ({**doc, "bits": 128}, {})):
        with pytest.raises(KeyStoreError) as err:
            p11.restore_key("oct", json.dumps(changed).encode(), public)
        assert str(err.value) == ("The backed-up key could not be unwrapped in the HSM with "
                                  "the deployment's backup key: the backup is damaged or from "
                                  "another token.")
    for family, public in (("oct", {"n": "AQAB"}), ("RSA", {})):
        with pytest.raises(KeyStoreError) as err:
            p11.restore_key(family, stored.blob, public)
        assert str(err.value) == "Stored key material has an unexpected type."
    assert p11.held() == before


def test_pkcs11_aes_key_without_a_meta_store_has_no_backup_copy(
        p11: Pkcs11KeyStore, soft_token: SoftToken, token_session: Any) -> None:
    plain = Pkcs11KeyStore(soft_token.module, soft_token.label, soft_token.pin,
                           environment=_environment(soft_token))
    stored = plain.generate(KeySpec("oct", 128))
    ref = new_ref(plain, stored, "oct")
    assert set(json.loads(stored.blob)) == {"v", "id", "family", "bits", "kcv"}
    [secret] = _objects(token_session, stored)
    assert secret[Attribute.NEVER_EXTRACTABLE] is True
    with pytest.raises(KeyStoreError) as err:
        plain.backup_blob(ref)
    assert str(err.value).startswith("This HSM key was made without a backup copy")
    result = plain.encrypt_symmetric(ref, "A128GCM", b"still works")
    assert plain.decrypt_symmetric(ref, "A128GCM", result.ciphertext, result.iv, None,
                                   result.tag) == b"still works"
    plain.destroy(ref)
    plain.destroy(ref)
    assert _objects(token_session, stored) == []


@pytest.mark.parametrize("bits", AES_BITS)
def test_pkcs11_exportable_aes_key_exports_to_a_public_key(p11: Pkcs11KeyStore,
                                                           token_session: Any,
                                                           bits: int) -> None:
    stored = p11.generate(KeySpec("oct", bits, exportable=True))
    ref = new_ref(p11, stored, "oct")
    [secret] = _objects(token_session, stored)
    assert secret[Attribute.SENSITIVE] is True and secret[Attribute.EXTRACTABLE] is True
    assert json.loads(stored.blob)["exportable"] is True
    sealed = p11.encrypt_symmetric(ref, f"A{bits}GCM", b"released", None, None)
    for enc in OAEP_HASH:
        exported = p11.export(ref, RUNTIME_JWK, enc)
        size = RUNTIME.key_size // 8
        h = OAEP_HASH[enc]()
        transfer_key = RUNTIME.decrypt(exported[:size], padding.OAEP(
            mgf=padding.MGF1(h), algorithm=h, label=None))
        key = keywrap.aes_key_unwrap_with_padding(transfer_key, exported[size:])
        assert len(key) == bits // 8 and kcv_outside(key).hex() == json.loads(stored.blob)["kcv"]
        assert sealed.iv is not None and sealed.tag is not None
        assert AESGCM(key).decrypt(sealed.iv, sealed.ciphertext + sealed.tag, None) == \
            b"released"
    p11.destroy(ref)


def test_pkcs11_imported_exportable_aes_key_exports_its_bytes(p11: Pkcs11KeyStore) -> None:
    key = os.urandom(24)
    stored = p11.import_key(PlainKey(oct_jwk(key), "oct", exportable=True))
    ref = new_ref(p11, stored, "oct")
    exported = p11.export(ref, RUNTIME_JWK, "RSA_AES_KEY_WRAP_256")
    h = hashes.SHA256()
    transfer_key = RUNTIME.decrypt(exported[:256], padding.OAEP(mgf=padding.MGF1(h),
                                                                algorithm=h, label=None))
    assert keywrap.aes_key_unwrap_with_padding(transfer_key, exported[256:]) == key
    _, _, not_exportable = known_oct(p11, 192)
    with pytest.raises(KeyStoreError) as err:
        p11.export(not_exportable, RUNTIME_JWK, "CKM_RSA_AES_KEY_WRAP")
    assert str(err.value) == "The key is not exportable."
    p11.destroy(ref)


def byok_blob(kek: rsa.RSAPublicKey, key: bytes) -> bytes:
    """CKM_RSA_AES_KEY_WRAP made with `cryptography` alone, as a customer's tool would:
    RSA-OAEP (SHA-1) of a fresh AES-256 key, then AES key wrap with padding of the key."""
    transfer_key = os.urandom(32)
    h = hashes.SHA1()  # noqa: S303 - what CKM_RSA_AES_KEY_WRAP specifies
    return (kek.encrypt(transfer_key, padding.OAEP(mgf=padding.MGF1(h), algorithm=h,
                                                  label=None))
            + keywrap.aes_key_wrap_with_padding(transfer_key, key))


@pytest.mark.parametrize("bits", AES_BITS)
def test_pkcs11_byok_aes_key(p11: Pkcs11KeyStore, token_session: Any, bits: int) -> None:
    kek_stored, kek = key_for(p11, RSA2048)
    key = os.urandom(bits // 8)
    stored = p11.import_key(WrappedKey(kek, "CKM_RSA_AES_KEY_WRAP",
                                       byok_blob(rsa_public(kek_stored), key), "oct"))
    assert (stored.public, stored.size) == ({}, bits)
    assert json.loads(stored.blob)["kcv"] == kcv_outside(key).hex()
    ref = new_ref(p11, stored, "oct")
    [secret] = _objects(token_session, stored)
    assert secret[Attribute.SENSITIVE] is True and secret[Attribute.EXTRACTABLE] is False
    assert secret[Attribute.LOCAL] is False
    iv = os.urandom(12)
    theirs = AESGCM(key).encrypt(iv, b"brought my own key", b"aad")
    assert p11.decrypt_symmetric(ref, f"A{bits}GCM", theirs[:-16], iv, b"aad",
                                 theirs[-16:]) == b"brought my own key"
    assert p11.wrap(ref, f"A{bits}KW", bytes(16)) == keywrap.aes_key_wrap(key, bytes(16))
    # Its backup copy restores it.
    blob = p11.backup_blob(ref)
    p11.destroy(ref)
    again = new_ref(p11, p11.restore_key("oct", blob, {}), "oct")
    assert p11.wrap(again, f"A{bits}KW", bytes(16)) == keywrap.aes_key_wrap(key, bytes(16))
    p11.destroy(again)


@pytest.mark.parametrize("size", [8, 15, 20, 31, 40, 64])
def test_pkcs11_byok_of_no_aes_key_size_is_refused(p11: Pkcs11KeyStore, size: int) -> None:
    kek_stored, kek = key_for(p11, RSA2048)
    before = p11.held()
    with pytest.raises(KeyStoreError) as err:
        p11.import_key(WrappedKey(kek, "CKM_RSA_AES_KEY_WRAP",
                                  byok_blob(rsa_public(kek_stored), os.urandom(size)), "oct"))
    assert str(err.value).startswith("The wrapped key could not be unwrapped with the "
                                     "key-exchange key")
    assert p11.held() == before  # a refused import leaves nothing in the token


def test_pkcs11_aes_key_is_destroyed_and_gone(p11: Pkcs11KeyStore, token_session: Any) -> None:
    held = p11.generate(KeySpec("oct", 128))
    assert held.handle is not None and held.handle in p11.held()
    p11.destroy_held(held.handle)
    assert _objects(token_session, held) == [] and held.handle not in p11.held()
    stored = p11.generate(KeySpec("oct", 256))
    ref = new_ref(p11, stored, "oct")
    p11.encrypt_symmetric(ref, "A256GCM", b"x")
    assert len(_objects(token_session, stored)) == 1
    p11.destroy(ref)
    assert _objects(token_session, stored) == []
    # Looked for again (the library initialized again: the test's session ends).
    with pytest.raises(KeyStoreError) as err:
        p11.encrypt_symmetric(ref, "A256GCM", b"x")
    assert str(err.value) == "The key is not in the PKCS#11 token."
    p11.destroy(ref)


def test_pkcs11_what_softhsm2_does_with_aes_keys(p11: Pkcs11KeyStore,
                                                 token_session: Any) -> None:
    """Why the keystore does what it does (a token that changes here shows it): SoftHSM2
    takes no CKM_AES_KEY_WRAP in C_Encrypt, and gives an unwrapped AES key neither
    CKA_VALUE_LEN nor CKA_CHECK_VALUE."""
    key = os.urandom(32)
    session_key = token_session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: pkcs11.KeyType.AES,
        Attribute.TOKEN: False, Attribute.VALUE: key, Attribute.ENCRYPT: True,
        Attribute.UNWRAP: True, Attribute.SENSITIVE: False})
    with pytest.raises(pkcs11.exceptions.MechanismInvalid):
        session_key.encrypt(bytes(16), mechanism=pkcs11.Mechanism.AES_KEY_WRAP)
    assert bytes(session_key[Attribute.CHECK_VALUE]) == kcv_outside(key)
    unwrapped = session_key.unwrap_key(
        ObjectClass.SECRET_KEY, pkcs11.KeyType.AES,
        keywrap.aes_key_wrap_with_padding(key, bytes(16)),
        mechanism=pkcs11.Mechanism.AES_KEY_WRAP_PAD, store=False,
        capabilities=pkcs11.MechanismFlag.ENCRYPT, template={Attribute.SENSITIVE: False})
    assert unwrapped[Attribute.VALUE_LEN] == 0
    assert bytes(unwrapped[Attribute.CHECK_VALUE]) == b""
    assert bytes(unwrapped.encrypt(bytes(16), mechanism=pkcs11.Mechanism.AES_ECB))[:3] == \
        kcv_outside(bytes(16))
    for obj in (unwrapped, session_key):
        obj.destroy()
