"""Attestation tokens: what is verified before a key is released (signature by a trusted
authority's key, times, the runtime key), every refusal with its own message, and the
trusted authorities a deployment's configuration names."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from openkeyvault.access import attestation_tokens as at
from openkeyvault.access.attestation_trust import trusted_authorities
from openkeyvault.access.jwks import JwksError
from openkeyvault.config import ENV_VAR, ConfigError, Settings, load_config
from openkeyvault.crypto.encoding import b64url_decode, b64url_encode

ISSUER = "https://sharedeus2.eus2.attest.azure.net"
NOW = time.time()


def _rsa(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


SIGNER = _rsa()
TEE = _rsa()


def _jwk(key: Any, **extra: Any) -> dict[str, Any]:
    public = key.public_key()
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) \
        else jwt.algorithms.ECAlgorithm
    return {**json.loads(algorithm.to_jwk(public)), **extra}


AUTHORITY = at.Authority(ISSUER, {"keys": [_jwk(SIGNER, kid="maa-1")]})
RUNTIME = {"keys": [_jwk(TEE, kid="TpmEphemeralEncryptionKey", key_ops=["encrypt"])]}


def _claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"iss": ISSUER, "iat": int(NOW), "nbf": int(NOW),
                              "exp": int(NOW) + 3600, "x-ms-attestation-type": "sevsnpvm",
                              "x-ms-runtime": RUNTIME}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _token(claims: dict[str, Any] | None = None, key: Any = SIGNER, kid: str | None = "maa-1",
           alg: str = "RS256") -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(_claims() if claims is None else claims, key, algorithm=alg,
                      headers=headers)


def _refusal(token: str, authorities: list[at.Authority] | None = None,
             now: float = NOW) -> str:
    with pytest.raises(at.AttestationTokenError) as caught:
        at.verify(token, [AUTHORITY] if authorities is None else authorities, now)
    return str(caught.value)


# ---- accepted --------------------------------------------------------------------------
def test_a_valid_token() -> None:
    verified = at.verify(_token(), [AUTHORITY], NOW)
    assert verified.issuer == ISSUER
    assert verified.claims == _claims()
    tee = _jwk(TEE)
    assert verified.runtime_key == at.RuntimeKey("TpmEphemeralEncryptionKey", {
        "kty": "RSA", "kid": "TpmEphemeralEncryptionKey", "n": tee["n"], "e": tee["e"]})


@pytest.mark.parametrize(("alg", "key"), [("RS384", SIGNER), ("RS512", SIGNER),
                                          ("PS256", SIGNER), ("PS384", SIGNER)])
def test_other_rsa_algorithms(alg: str, key: Any) -> None:
    assert at.verify(_token(alg=alg), [AUTHORITY], NOW).issuer == ISSUER


@pytest.mark.parametrize(("curve", "alg"), [(ec.SECP256R1(), "ES256"),
                                            (ec.SECP384R1(), "ES384"),
                                            (ec.SECP521R1(), "ES512")])
def test_ec_authorities(curve: ec.EllipticCurve, alg: str) -> None:
    key = ec.generate_private_key(curve)
    authority = at.Authority(ISSUER, {"keys": [_jwk(key, kid="ec")]})
    assert at.verify(_token(key=key, kid="ec", alg=alg), [authority], NOW).issuer == ISSUER
    assert "algorithm does not fit" in _refusal(_token(alg="RS256", kid="ec"), [authority])


def test_the_issuer_matches_however_written() -> None:
    for iss in (ISSUER + "/", "HTTPS://SharedEUS2.eus2.attest.azure.net:443"):
        verified = at.verify(_token(_claims(iss=iss)), [AUTHORITY], NOW)
        assert verified.issuer == iss  # as the token wrote it
    assert at.same_issuer("https://a.example/", "https://A.EXAMPLE")
    assert at.same_issuer("a.example", "https://a.example:443/")
    assert not at.same_issuer("https://a.example", "http://a.example")
    assert not at.same_issuer("https://a.example", "https://a.example:8443")
    assert not at.same_issuer("https://a.example/x", "https://a.example")


def test_the_authority_is_picked_by_issuer() -> None:
    other_key = _rsa()
    other = at.Authority("https://other.attest.azure.net", {"keys": [_jwk(other_key,
                                                                          kid="maa-1")]})
    token = _token(_claims(iss="https://other.attest.azure.net"), key=other_key)
    assert at.verify(token, [AUTHORITY, other], NOW).issuer == "https://other.attest.azure.net"
    # Same kid, the other authority's key: not accepted for this issuer.
    assert "signature is invalid" in _refusal(_token(key=other_key), [AUTHORITY, other])


def test_without_kid_the_only_key_is_used() -> None:
    assert at.verify(_token(kid=None), [AUTHORITY], NOW).issuer == ISSUER
    two = at.Authority(ISSUER, {"keys": [_jwk(SIGNER, kid="a"), _jwk(_rsa(), kid="b")]})
    assert "signing key (kid) is not one of its authority's keys" in _refusal(
        _token(kid=None), [two])
    assert at.verify(_token(kid="a"), [two], NOW).issuer == ISSUER


def test_times_within_the_skew_are_accepted() -> None:
    assert at.verify(_token(_claims(exp=int(NOW) - 60)), [AUTHORITY], NOW)
    assert at.verify(_token(_claims(nbf=int(NOW) + 60)), [AUTHORITY], NOW)
    assert at.verify(_token(_claims(nbf=None)), [AUTHORITY], NOW)  # nbf is optional


def test_x5c_only_keys_as_azure_attestation_publishes_them() -> None:
    cert = _certificate(SIGNER)
    authority = at.Authority(ISSUER, {"keys": [{"kid": "maa-1", "kty": "RSA", "x5c": [cert]}]})
    assert authority.kids == ("maa-1",)
    assert at.verify(_token(), [authority], NOW).issuer == ISSUER
    assert "signature is invalid" in _refusal(_token(key=_rsa()), [authority])


def _certificate(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attestation signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


# ---- refused ---------------------------------------------------------------------------
def test_expired() -> None:
    assert _refusal(_token(_claims(exp=int(NOW) - 400))) == \
        "The attestation token has expired."
    assert _refusal(_token(), now=NOW + 3600 + 301) == "The attestation token has expired."


def test_not_yet_valid() -> None:
    assert _refusal(_token(_claims(nbf=int(NOW) + 400))) == \
        "The attestation token is not yet valid."


def test_no_exp_or_malformed_times() -> None:
    assert _refusal(_token(_claims(exp=None))) == "The attestation token has no 'exp' claim."
    assert _refusal(_token(_claims(exp="tomorrow"))) == \
        "The attestation token times are malformed."


def test_wrong_issuer() -> None:
    message = "The attestation token's issuer is not a trusted attestation authority."
    assert _refusal(_token(_claims(iss="https://evil.example"))) == message
    assert _refusal(_token(), []) == message
    assert _refusal(_token(_claims(iss=None))) == "The attestation token has no 'iss' claim."
    numeric = jwt.PyJWS().encode(json.dumps(_claims(iss=5)).encode(), SIGNER,
                                 algorithm="RS256", headers={"kid": "maa-1"})
    assert _refusal(numeric) == "The attestation token has no 'iss' claim."


def test_unknown_kid() -> None:
    assert _refusal(_token(kid="rotated-away")) == \
        "The attestation token's signing key (kid) is not one of its authority's keys."


def test_tampered_signature() -> None:
    header, payload, signature = _token().split(".")
    claims = json.loads(b64url_decode(payload))
    claims["x-ms-attestation-type"] = "sgx"
    forged = f"{header}.{b64url_encode(json.dumps(claims).encode())}.{signature}"
    assert _refusal(forged) == "The attestation token's signature is invalid."
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert _refusal(f"{header}.{payload}.{flipped}") == \
        "The attestation token's signature is invalid."
    assert _refusal(_token(key=_rsa())) == "The attestation token's signature is invalid."


def test_unsigned() -> None:
    unsigned = jwt.encode(_claims(), None, algorithm="none", headers={"kid": "maa-1"})
    assert unsigned.endswith(".")
    assert _refusal(unsigned) == "The attestation token is not signed."
    header = b64url_encode(json.dumps({"alg": "NONE", "kid": "maa-1"}).encode())
    payload = unsigned.split(".")[1]
    assert _refusal(f"{header}.{payload}.") == "The attestation token is not signed."


def test_algorithms_not_allowed() -> None:
    hs = jwt.encode(_claims(), "a shared secret of thirty-two bytes!", algorithm="HS256",
                    headers={"kid": "maa-1"})
    assert _refusal(hs).startswith("The attestation token is signed with an algorithm that "
                                   "is not allowed")
    assert "algorithm does not fit" in _refusal(_token(alg="ES256", key=ec.generate_private_key(
        ec.SECP256R1())))


@pytest.mark.parametrize("token", [
    "abc", "a.b.c", "a.b",
    "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln",  # the payload is no JSON
    "eyJhbGciOiJSUzI1NiJ9.WzEsMl0.c2ln",  # the payload is an array
    "WzFd.e30.c2ln",  # the header is an array
])
def test_malformed(token: str) -> None:
    assert _refusal(token) == "The attestation token is malformed."


def test_missing() -> None:
    assert _refusal("") == "The attestation token is missing."


def test_a_kid_that_is_no_string_is_malformed() -> None:
    header = b64url_encode(json.dumps({"alg": "RS256", "kid": 5}).encode())
    _, payload, signature = _token().split(".")
    assert _refusal(f"{header}.{payload}.{signature}") == "The attestation token is malformed."


def test_too_long() -> None:
    assert _refusal(_token(_claims(padding="x" * at.MAX_TOKEN_CHARS))) == \
        f"The attestation token is longer than {at.MAX_TOKEN_CHARS} characters."


# ---- the runtime key -------------------------------------------------------------------
NO_KEY = "The attestation token holds no key to release to"


def test_no_runtime_key() -> None:
    assert _refusal(_token(_claims(**{"x-ms-runtime": None}))).startswith(NO_KEY)
    assert _refusal(_token(_claims(**{"x-ms-runtime": {"keys": []}}))).startswith(NO_KEY)
    assert _refusal(_token(_claims(**{"x-ms-runtime": {"keys": "none"}}))).startswith(NO_KEY)
    assert _refusal(_token(_claims(**{"x-ms-runtime": "keys"}))).startswith(NO_KEY)


def _runtime(*keys: dict[str, Any]) -> at.RuntimeKey:
    token = _token(_claims(**{"x-ms-runtime": {"keys": list(keys)}}))
    return at.verify(token, [AUTHORITY], NOW).runtime_key


@pytest.mark.parametrize("entry", [
    _jwk(TEE, key_ops=["encrypt"]),  # no kid
    _jwk(TEE, kid="", key_ops=["encrypt"]),
    _jwk(TEE, kid="sig", key_ops=["sign"]),
    _jwk(TEE, kid="sig", use="sig"),
    _jwk(TEE, kid="none"),  # neither use nor key_ops
    _jwk(_rsa(1024), kid="small", key_ops=["encrypt"]),
    _jwk(ec.generate_private_key(ec.SECP256R1()), kid="ec", use="enc"),
    {"kty": "RSA", "kid": "broken", "use": "enc", "n": "!!", "e": "AQAB"},
    {"kty": "RSA", "kid": "no-n", "use": "enc"},
    json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(TEE)) | {"kid": "private", "use": "enc"},
])
def test_unsuitable_runtime_keys_are_passed_over(entry: dict[str, Any]) -> None:
    good = _jwk(TEE, kid="good", use="enc")
    assert _runtime(entry, good).kid == "good"
    token = _token(_claims(**{"x-ms-runtime": {"keys": [entry]}}))
    assert _refusal(token).startswith(NO_KEY)


def test_the_first_suitable_key_is_chosen() -> None:
    second = _rsa()
    chosen = _runtime(_jwk(TEE, kid="sig", use="sig"), _jwk(second, kid="first", use="enc"),
                      _jwk(TEE, kid="later", key_ops=["encrypt"]))
    assert chosen.kid == "first"
    assert chosen.jwk["n"] == _jwk(second)["n"]


def test_isolation_tee_runtime_keys_are_looked_at_too() -> None:
    tee_keys = {"x-ms-runtime": {"keys": [_jwk(TEE, kid="HCLEkPub", key_ops=["encrypt"])]}}
    token = _token(_claims(**{"x-ms-runtime": {"client-payload": {"nonce": "MTIz"}},
                              "x-ms-isolation-tee": tee_keys}))
    assert at.verify(token, [AUTHORITY], NOW).runtime_key.kid == "HCLEkPub"
    # The top-level keys come first.
    token = _token(_claims(**{"x-ms-isolation-tee": tee_keys}))
    assert at.verify(token, [AUTHORITY], NOW).runtime_key.kid == "TpmEphemeralEncryptionKey"


def test_a_runtime_key_given_as_a_certificate() -> None:
    key = _runtime({"kty": "RSA", "kid": "cert", "use": "enc", "x5c": [_certificate(TEE)]})
    assert key.jwk == {"kty": "RSA", "kid": "cert", "n": _jwk(TEE)["n"], "e": _jwk(TEE)["e"]}


# ---- authorities -----------------------------------------------------------------------
def test_an_authority_needs_a_usable_signing_key() -> None:
    with pytest.raises(JwksError, match="no 'keys' array"):
        at.Authority(ISSUER, {"key": []})
    private = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(SIGNER)) | {"kid": "p"}
    for unusable in ([], [private], [_jwk(_rsa(1024), kid="small")],
                     [_jwk(SIGNER, kid="enc", use="enc")],
                     [_jwk(ec.generate_private_key(ec.SECP256K1()), kid="k1")],
                     [{"kty": "RSA", "kid": "c", "x5c": ["not base64!"]}],
                     [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]):
        with pytest.raises(JwksError, match="holds no usable signing key"):
            at.Authority(ISSUER, {"keys": unusable})
    with pytest.raises(JwksError, match="issuer"):
        at.Authority("", {"keys": [_jwk(SIGNER)]})
    mixed = at.Authority(ISSUER, {"keys": [private, _jwk(SIGNER, kid="ok")]})
    assert mixed.kids == ("ok",)


def test_a_keys_alg_limits_it() -> None:
    authority = at.Authority(ISSUER, {"keys": [_jwk(SIGNER, kid="maa-1", alg="PS256")]})
    assert at.verify(_token(alg="PS256"), [authority], NOW)
    assert "algorithm does not fit" in _refusal(_token(alg="RS256"), [authority])


def test_a_key_without_kid_goes_by_its_thumbprint() -> None:
    from openkeyvault.crypto.signing import jwk_thumbprint

    authority = at.Authority(ISSUER, {"keys": [_jwk(SIGNER)]})
    thumbprint = jwk_thumbprint(_jwk(SIGNER))
    assert authority.kids == (thumbprint,)
    assert at.verify(_token(kid=thumbprint), [authority], NOW)


# ---- configuration ---------------------------------------------------------------------
BASE = """[server]\ndata_dir = "data"\n[tls]\ncertificate = "tls.crt"\nkey = "tls.key"
[seal]\ntype = "shamir"\nshares = 3\nthreshold = 2\n"""
OTHER = "https://other.attest.azure.net"


def _config(tmp_path: Path, attestation: str) -> Path:
    path = tmp_path / "okv.toml"
    path.write_text(BASE + attestation)
    return path


def test_configured_authorities(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other_key = _rsa()
    (tmp_path / "maa.json").write_text(json.dumps({"keys": [_jwk(SIGNER, kid="maa-1")]}))
    inline = json.dumps({"keys": [_jwk(other_key, kid="o")]})
    path = _config(tmp_path, f"""[attestation]
authorities = [{{issuer = "{ISSUER}", jwks_file = "maa.json"}},
               {{issuer = "{OTHER}", jwks = '{inline}'}}]
""")
    settings = load_config(path)
    assert settings.attestation_authorities == (
        {"issuer": ISSUER, "jwks_file": str(tmp_path / "maa.json")},
        {"issuer": OTHER, "jwks": json.loads(inline)})
    monkeypatch.setenv(ENV_VAR, settings.to_env())
    assert Settings.from_env() == settings  # what each worker gets
    trusted = trusted_authorities(settings)
    assert [a.issuer for a in trusted] == [ISSUER, OTHER]  # production: no dev authority
    assert at.verify(_token(), trusted, NOW).issuer == ISSUER
    token = _token(_claims(iss=OTHER), key=other_key, kid="o")
    assert at.verify(token, trusted, NOW).issuer == OTHER
    # The file is read again: rotating keys is rewriting it.
    (tmp_path / "maa.json").write_text(json.dumps({"keys": [_jwk(other_key, kid="maa-2")]}))
    assert "signing key (kid)" in _refusal(_token(), trusted_authorities(settings))


def test_an_inline_jwks_table(tmp_path: Path) -> None:
    jwk = _jwk(SIGNER, kid="maa-1")
    members = ", ".join(f'{k} = "{v}"' for k, v in jwk.items())
    path = _config(tmp_path, f"""[[attestation.authorities]]
issuer = "{ISSUER}"
jwks = {{keys = [{{{members}}}]}}
""")
    (authority,) = trusted_authorities(load_config(path))
    assert at.verify(_token(), [authority], NOW).issuer == ISSUER
    assert load_config(_config(tmp_path, "")).attestation_authorities == ()


def test_an_unreadable_jwks_file_leaves_its_authority_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _config(tmp_path, f"""[attestation]
authorities = [{{issuer = "{ISSUER}", jwks_file = "missing.json"}},
               {{issuer = "{OTHER}", jwks_file = "bad.json"}}]
""")
    (tmp_path / "bad.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="openkeyvault.attestation"):
        assert trusted_authorities(load_config(path)) == []
    assert f"attestation authority {ISSUER} left out" in caplog.text
    assert f"attestation authority {OTHER} left out: The JWKS file is not JSON." in caplog.text


@pytest.mark.parametrize(("table", "says"), [
    ('authorities = "maa"', "authorities must be an array of tables"),
    ("authorities = [1]", "authorities must be an array of tables"),
    ("issuers = []", "unknown key(s) issuers"),
    ('authorities = [{jwks_file = "f"}]', "authorities[0]: issuer is required"),
    ('authorities = [{issuer = "http://maa.example", jwks_file = "f"}]',
     "authorities[0]: An issuer must be an https URL"),
    (f'authorities = [{{issuer = "{ISSUER}"}}]', "exactly one of jwks_file"),
    (f'authorities = [{{issuer = "{ISSUER}", jwks_file = "f", jwks = "{{}}"}}]',
     "exactly one of jwks_file"),
    (f'authorities = [{{issuer = "{ISSUER}", jwks = "not json"}}]', "jwks is text that is not"),
    (f'authorities = [{{issuer = "{ISSUER}", jwks = {{keys = []}}}}]',
     "holds no usable signing key"),
    (f'authorities = [{{issuer = "{ISSUER}", jwks_file = "f", audience = "x"}}]',
     "unknown key(s) audience"),
    (f'authorities = [{{issuer = "{ISSUER}", jwks_file = "f"}}, '
     f'{{issuer = "{ISSUER}/", jwks_file = "g"}}]', "authorities[1]: the issuer"),
])
def test_bad_attestation_tables_are_refused(tmp_path: Path, table: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, "[attestation]\n" + table + "\n"))
    assert says in str(caught.value)
    assert str(caught.value).startswith(f"{tmp_path / 'okv.toml'}: [attestation]")
