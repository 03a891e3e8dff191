"""The dev attestation authority: its key file in the data directory, the MAA-like tokens
it signs (verified as any authority's are), and a dev server trusting it by itself."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openkeyvault.access import attestation_tokens as at
from openkeyvault.access.attestation_trust import trusted_authorities
from openkeyvault.access.dev_attestation import (
    DEFAULT_LIFETIME,
    DEV_ISSUER,
    KEY_FILE,
    MAX_LIFETIME,
    DevAttestationAuthority,
    DevAttestationError,
    runtime_jwk,
)
from openkeyvault.config import Settings
from openkeyvault.crypto.encoding import b64url_encode
from openkeyvault.crypto.signing import jwk_thumbprint
from openkeyvault.ops.clock import ManualClock
from openkeyvault.vault import release_policy as rp

START = 1_800_000_000.0
TEE = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _members(key: rsa.RSAPrivateKey) -> dict[str, str]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {"n": jwk["n"], "e": jwk["e"]}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def dev(tmp_path: Path, clock: ManualClock) -> DevAttestationAuthority:
    return DevAttestationAuthority(tmp_path / "data", clock)


def test_a_token_it_issues_verifies(dev: DevAttestationAuthority) -> None:
    token = dev.issue({"x-ms-attestation-type": "sevsnpvm", "sdk-test": True,
                       "x-ms-isolation-tee": {"x-ms-compliance-status": "azure-compliant-cvm"}},
                      _pem(TEE))
    verified = at.verify(token, [dev.authority()], START)
    assert verified.issuer == DEV_ISSUER == "https://attest.localhost"
    claims = verified.claims
    assert claims["x-ms-attestation-type"] == "sevsnpvm" and claims["sdk-test"] is True
    assert claims["x-ms-isolation-tee"] == {"x-ms-compliance-status": "azure-compliant-cvm"}
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (
        START, START, START + DEFAULT_LIFETIME)
    assert claims["x-ms-ver"] == "1.0" and len(claims["jti"]) == 64
    kid = jwk_thumbprint({"kty": "RSA", **_members(TEE)})
    assert claims["x-ms-runtime"] == {"keys": [{"kty": "RSA", "kid": kid,
                                                "key_ops": ["encrypt"], **_members(TEE)}]}
    assert verified.runtime_key == at.RuntimeKey(kid, {"kty": "RSA", "kid": kid,
                                                       **_members(TEE)})
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "RS256", "kid": dev.jwks()["keys"][0]["kid"], "typ": "JWT"}


def test_the_lifetime_and_the_clock(dev: DevAttestationAuthority, clock: ManualClock) -> None:
    token = dev.issue({}, _pem(TEE), lifetime=600)
    claims = at.verify(token, [dev.authority()], START).claims
    assert claims["exp"] - claims["iat"] == 600
    with pytest.raises(at.AttestationTokenError, match="has expired"):
        at.verify(token, [dev.authority()], START + 600 + 301)
    clock.advance(10_000)
    later = at.verify(dev.issue({}, _pem(TEE)), [dev.authority()], START + 10_000).claims
    assert later["iat"] == START + 10_000
    with pytest.raises(at.AttestationTokenError, match="not yet valid"):
        at.verify(dev.issue({}, _pem(TEE)), [dev.authority()], START)
    for lifetime in (0, -1, MAX_LIFETIME + 1, True):
        with pytest.raises(DevAttestationError, match="lifetime must be 1 to"):
            dev.issue({}, None, lifetime=lifetime)


def test_reserved_claims_are_the_authoritys(dev: DevAttestationAuthority) -> None:
    token = dev.issue({"iss": "https://evil.example", "exp": 1, "iat": 2, "nbf": 3,
                       "jti": "mine", "x-ms-ver": "2.0"}, _pem(TEE))
    claims = at.verify(token, [dev.authority()], START).claims
    assert claims["iss"] == DEV_ISSUER and claims["exp"] == START + DEFAULT_LIFETIME
    assert claims["jti"] != "mine"
    assert claims["x-ms-ver"] == "2.0"  # not reserved: given ones are kept


def test_without_a_runtime_key_the_token_is_refused_for_release(
        dev: DevAttestationAuthority) -> None:
    token = dev.issue({"x-ms-runtime": {"client-payload": {"nonce": "abc"}}}, None)
    with pytest.raises(at.AttestationTokenError, match="holds no key to release to"):
        at.verify(token, [dev.authority()], START)
    # Given claims under x-ms-runtime stay beside the key.
    token = dev.issue({"x-ms-runtime": {"client-payload": {"nonce": "abc"}}}, _pem(TEE))
    runtime = at.verify(token, [dev.authority()], START).claims["x-ms-runtime"]
    assert runtime["client-payload"] == {"nonce": "abc"} and len(runtime["keys"]) == 1


def test_runtime_keys() -> None:
    as_jwk = json.dumps({"kty": "RSA", "kid": "my-tee-key", **_members(TEE)}).encode()
    assert runtime_jwk(as_jwk) == {"kty": "RSA", "kid": "my-tee-key", "key_ops": ["encrypt"],
                                   **_members(TEE)}
    pkcs1 = TEE.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.PKCS1)
    assert runtime_jwk(pkcs1) == runtime_jwk(_pem(TEE))
    private = TEE.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    for refused in (private, _pem(ec.generate_private_key(ec.SECP256R1())), b"", b"garbage"):
        with pytest.raises(DevAttestationError, match="must be an RSA public key"):
            runtime_jwk(refused)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(DevAttestationError, match="2048 bits or more"):
        runtime_jwk(_pem(small))


def test_claims_must_be_json(dev: DevAttestationAuthority) -> None:
    with pytest.raises(DevAttestationError, match="JSON values"):
        dev.issue({"when": object()}, None)


# ---- the key file ------------------------------------------------------------------------
def test_the_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = DevAttestationAuthority(data)
    jwks = first.jwks()
    path = data / KEY_FILE
    assert first.key_file == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert [p.name for p in data.iterdir()] == [KEY_FILE]  # no temporary file left
    (key,) = jwks["keys"]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig"
    again = DevAttestationAuthority(data)
    assert again.jwks() == jwks
    token = again.issue({}, _pem(TEE))  # signed by the key the first one made
    iat = jwt.decode(token, options={"verify_signature": False})["iat"]
    assert at.verify(token, [first.authority()], iat).issuer == DEV_ISSUER


def test_processes_making_the_key_at_once_agree(tmp_path: Path) -> None:
    data = tmp_path / "data"
    found: list[dict[str, object]] = []
    lock = threading.Lock()

    def make() -> None:
        jwks = DevAttestationAuthority(data).jwks()
        with lock:
            found.append(jwks)

    threads = [threading.Thread(target=make) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 6 and all(j == found[0] for j in found)
    assert sorted(p.name for p in data.iterdir()) == [KEY_FILE]


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    DevAttestationAuthority(tmp_path).jwks()
    os.chmod(tmp_path / KEY_FILE, 0o644)
    with pytest.raises(DevAttestationError, match=r"readable by other users \(mode 644\)"):
        DevAttestationAuthority(tmp_path).jwks()


def test_a_damaged_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"-----BEGIN PRIVATE KEY-----\nnot a key\n")
    os.close(fd)
    with pytest.raises(DevAttestationError, match="does not hold an RSA private key"):
        DevAttestationAuthority(tmp_path).issue({}, None)
    os.unlink(path)
    os.symlink(tmp_path / "elsewhere", path)
    with pytest.raises(DevAttestationError, match="not a regular file"):
        DevAttestationAuthority(tmp_path).issue({}, None)


# ---- trusted by a dev server, and a policy naming it ------------------------------------
def test_a_dev_server_trusts_it_production_does_not(tmp_path: Path) -> None:
    dev = DevAttestationAuthority(tmp_path)
    trusted = trusted_authorities(Settings(data_dir=tmp_path, dev=True))
    assert [a.issuer for a in trusted] == [DEV_ISSUER]
    assert trusted[0].jwks == dev.jwks()
    token = dev.issue({}, _pem(TEE))
    assert at.verify(token, trusted, jwt.decode(token, options={"verify_signature": False})
                     ["iat"]).issuer == DEV_ISSUER
    assert trusted_authorities(Settings(data_dir=tmp_path, dev=False)) == []


def test_a_dev_server_trusting_it_makes_the_key(tmp_path: Path) -> None:
    (trusted,) = trusted_authorities(Settings(data_dir=tmp_path, dev=True))
    assert (tmp_path / KEY_FILE).exists()
    assert trusted.jwks == DevAttestationAuthority(tmp_path).jwks()


def test_a_release_policy_naming_it(dev: DevAttestationAuthority) -> None:
    policy = rp.parse({"data": b64url_encode(json.dumps({"anyOf": [{
        "authority": DEV_ISSUER + "/", "allOf": [
            {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
            {"claim": "sdk-test", "equals": "true"}]}]}).encode())})
    good = at.verify(dev.issue({"sdk-test": True, "x-ms-isolation-tee": {
        "x-ms-attestation-type": "sevsnpvm"}}, _pem(TEE)), [dev.authority()], START)
    assert rp.evaluate(policy, good.issuer, good.claims) is True
    other = at.verify(dev.issue({"sdk-test": True, "x-ms-isolation-tee": {
        "x-ms-attestation-type": "tdxvm"}}, _pem(TEE)), [dev.authority()], START)
    assert rp.evaluate(policy, other.issuer, other.claims) is False
