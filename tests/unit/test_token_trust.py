"""The token service's building blocks: JWK thumbprints, JWKS parsing and caching, client
certificate details, and signing-key rotation with a manual clock."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openkeyvault.access.jwks import MAX_JWKS_BYTES, JwksCache, JwksError, parse_jwks
from openkeyvault.access.tokens import RETAIN_SECONDS
from openkeyvault.config import Settings
from openkeyvault.crypto.certinfo import CertificateError, certificate_info
from openkeyvault.crypto.signing import jwk_thumbprint
from openkeyvault.deployment import Deployment
from openkeyvault.ops.clock import ManualClock
from openkeyvault.storage.records import TrustedIssuerRecord
from tests.security.trust_support import make_cert

# RFC 7638, section 3.1.
RFC7638_JWK = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
         "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
         "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhA"
         "I4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}


def test_jwk_thumbprint_matches_rfc_7638() -> None:
    assert jwk_thumbprint(RFC7638_JWK) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def _jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, **extra: str) -> dict[str, str]:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) \
        else jwt.algorithms.ECAlgorithm
    return {**json.loads(algorithm.to_jwk(key.public_key())), **extra}


def test_parse_jwks_keeps_only_usable_signature_keys() -> None:
    good_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    good_ec = ec.generate_private_key(ec.SECP256R1())
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p384 = ec.generate_private_key(ec.SECP384R1())
    private = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(good_rsa))
    doc = {"keys": [
        _jwk(good_rsa, kid="rsa"),
        _jwk(good_ec, kid="ec"),
        _jwk(good_rsa),  # no kid: goes by its thumbprint
        _jwk(small, kid="small"),
        _jwk(p384, kid="p384"),
        _jwk(good_rsa, kid="enc", use="enc"),
        _jwk(good_rsa, kid="ps", alg="PS256"),
        {**private, "kid": "private"},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        "not an object",
    ]}
    keys = parse_jwks(json.dumps(doc).encode())
    thumb = jwk_thumbprint(_jwk(good_rsa))
    assert sorted(keys) == sorted(["rsa", "ec", thumb])
    assert keys["rsa"].algorithm_name == "RS256"
    assert keys["ec"].algorithm_name == "ES256"


@pytest.mark.parametrize("raw,reason", [
    (b"not json", "not JSON"),
    (b"[]", "no 'keys'"),
    (b'{"keys": {}}', "no 'keys'"),
    (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "no RSA"),
    (b" " * (MAX_JWKS_BYTES + 1), "larger"),
])
def test_parse_jwks_refusals(raw: bytes, reason: str) -> None:
    with pytest.raises(JwksError, match=reason):
        parse_jwks(raw)


def test_a_jwks_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "jwks.json"
    first = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    second = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_text(json.dumps({"keys": [_jwk(first, kid="a")]}))
    issuer = TrustedIssuerRecord("i", "https://i.example", None, str(path), None, 0)
    cache = JwksCache(clock)
    assert cache.key(issuer, "a") is not None
    assert cache.key(issuer, None) is not None  # the only key
    assert cache.key(issuer, "b") is None
    path.write_text(json.dumps({"keys": [_jwk(first, kid="a"), _jwk(second, kid="b")]}))
    os.utime(path, ns=(1, 1))  # a change the stat stamp notices even within one tick
    assert cache.key(issuer, "b") is not None
    assert cache.key(issuer, None) is None  # two keys: a token must name one
    path.unlink()
    assert cache.key(issuer, "a") is None


def test_certificate_info_reads_the_certificate_and_ignores_the_key() -> None:
    cert = make_cert()
    info = certificate_info(cert.key_pem + cert.cert_pem)
    assert info.sha1 == cert.cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303
    assert info.sha256 == cert.sha256.hex()
    assert info.not_after == int(cert.cert.not_valid_after_utc.timestamp())
    assert info.algorithms == ("RS256", "PS256")
    assert "PRIVATE" not in info.pem and "PRIVATE" not in info.public_pem
    assert info.public_pem.encode() == cert.cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert certificate_info(make_cert("ec").cert_pem).algorithms == ("ES256",)
    with pytest.raises(CertificateError):
        certificate_info(cert.key_pem)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[Deployment, ManualClock]]:
    clock = ManualClock(1_700_000_000)
    d = Deployment.open(Settings(data_dir=tmp_path / "data"), clock=clock)
    yield d, clock
    d.close()


def test_rotation_and_retention(deployment: tuple[Deployment, ManualClock]) -> None:
    d, clock = deployment
    keys = d.tokens.keys
    first = keys.current_jwk["kid"]
    token = d.tokens.issue(d.dev_principal, "https://vault.localhost:8443")
    assert jwt.get_unverified_header(token.access_token)["kid"] == first

    clock.advance(60)
    second = keys.rotate()
    assert keys.current_jwk["kid"] == second != first
    assert [k["kid"] for k in keys.jwks()] == [second, first]
    assert keys.verifier(first) is not None
    audiences = frozenset({"https://vault.localhost:8443"})
    assert d.tokens.verify(token.access_token, audiences).object_id == \
        d.dev_principal.object_id

    clock.advance(RETAIN_SECONDS - 1)
    assert keys.verifier(first) is not None and keys.drop_expired() == 0
    clock.advance(1)
    assert keys.verifier(first) is None
    assert [k["kid"] for k in keys.jwks()] == [second]
    assert keys.drop_expired() == 1
    assert [r.kid for r in d.identities.signing_keys()] == [second]


def test_scheduled_rotation_rotates_once(deployment: tuple[Deployment, ManualClock]) -> None:
    d, clock = deployment
    keys = d.tokens.keys
    first = keys.current_jwk["kid"]
    assert keys.rotate_if_due(86_400) == 0
    clock.advance(86_400)
    assert keys.rotate_if_due(86_400) == 1
    assert keys.rotate_if_due(86_400) == 0  # another worker running the same job
    assert keys.rotate_if_due(0) == 0  # 0: never
    assert keys.current_jwk["kid"] != first
    assert len(d.identities.signing_keys()) == 2


def test_a_signing_key_of_an_earlier_version_is_kept(tmp_path: Path) -> None:
    """A data directory whose signing key an earlier version kept in `meta` (sealed, no key
    table) keeps signing with that key."""
    import base64
    import struct

    from openkeyvault.crypto.signing import generate_rsa_pem, rsa_public_jwk
    from openkeyvault.storage.barrier import SYSTEM
    from openkeyvault.storage.schema import token_signing_keys

    settings = Settings(data_dir=tmp_path / "data")
    d = Deployment.open(settings)
    pem = generate_rsa_pem()
    version, sealed = d.barrier.seal(SYSTEM, b"token_signing_key", pem)
    d.repo.set_meta_if_absent("token_signing_key",
                              base64.b64encode(struct.pack(">I", version) + sealed).decode())
    with d.engines.write.begin() as c:
        c.execute(token_signing_keys.delete())
    d.close()
    again = Deployment.open(settings)
    try:
        assert again.tokens.keys.current_jwk["kid"] == rsa_public_jwk(pem)["kid"]
    finally:
        again.close()
