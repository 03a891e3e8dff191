"""`okv attestation issue` and `okv attestation authority`: the dev attestation
authority's tokens and keys, from the command line (no server)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from openkeyvault.access import attestation_tokens as at
from openkeyvault.access.dev_attestation import DEV_ISSUER, KEY_FILE, DevAttestationAuthority
from openkeyvault.ops.clock import CLOCK_FILE
from tests.support.okvcli import run

TEE = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def runtime_key(tmp_path: Path) -> Path:
    path = tmp_path / "tee.pem"
    path.write_bytes(TEE.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def _claims(token: str) -> dict[str, object]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def test_issue_prints_a_token_the_dev_authority_signed(tmp_path: Path,
                                                       runtime_key: Path) -> None:
    data = tmp_path / "data"
    r = run("attestation", "issue", "--data-dir", str(data),
            "--claim", "sdk-test=true", "--claim", "svn=5", "--claim", 'quoted="5"',
            "--claim", "text=hello world", "--claim", "x=",
            "--claim", "x-ms-isolation-tee.x-ms-attestation-type=sevsnpvm",
            "--claim", "x-ms-isolation-tee.x-ms-compliance-status=azure-compliant-cvm",
            "--claim", 'object={"a": [1, 2]}',
            "--runtime-key", str(runtime_key), "--lifetime", "600")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert r.stdout == token + "\n" and token.count(".") == 2
    verified = at.verify(token, [DevAttestationAuthority(data).authority()], time.time())
    claims = verified.claims
    assert verified.issuer == DEV_ISSUER
    assert claims["sdk-test"] is True and claims["svn"] == 5 and claims["quoted"] == "5"
    assert claims["text"] == "hello world" and claims["x"] == ""
    assert claims["x-ms-isolation-tee"] == {"x-ms-attestation-type": "sevsnpvm",
                                            "x-ms-compliance-status": "azure-compliant-cvm"}
    assert claims["object"] == {"a": [1, 2]}
    assert claims["exp"] - claims["iat"] == 600
    members = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(TEE.public_key()))
    assert verified.runtime_key.jwk["n"] == members["n"]
    assert (data / KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_authority_prints_the_issuer_and_keys_that_verify_its_tokens(
        tmp_path: Path, runtime_key: Path) -> None:
    r = run("attestation", "authority", "--data-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["issuer"] == DEV_ISSUER
    (key,) = shown["jwks"]["keys"]
    assert set(key) == {"kty", "use", "alg", "n", "e", "kid"}  # public members only
    token = run("attestation", "issue", "--data-dir", str(tmp_path),
                "--runtime-key", str(runtime_key)).stdout.strip()
    assert jwt.get_unverified_header(token)["kid"] == key["kid"]
    authority = at.Authority(shown["issuer"], shown["jwks"])
    assert at.verify(token, [authority], time.time()).issuer == DEV_ISSUER
    assert json.loads(run("attestation", "authority", "--data-dir", str(tmp_path)).stdout) \
        == shown  # the same key every time


def test_issue_runs_on_the_dev_servers_clock(tmp_path: Path) -> None:
    (tmp_path / CLOCK_FILE).write_text("86400")  # the dev clock was moved a day ahead
    r = run("attestation", "issue", "--data-dir", str(tmp_path), "--lifetime", "60")
    assert r.returncode == 0, r.stderr
    iat = _claims(r.stdout.strip())["iat"]
    assert isinstance(iat, int) and abs(iat - (time.time() + 86400)) < 60


def test_issue_without_a_runtime_key(tmp_path: Path) -> None:
    r = run("attestation", "issue", "--data-dir", str(tmp_path), "--claim", "a=1")
    assert r.returncode == 0, r.stderr
    claims = _claims(r.stdout.strip())
    assert claims["a"] == 1 and "x-ms-runtime" not in claims
    assert claims["exp"] - claims["iat"] == 8 * 3600  # type: ignore[operator]


@pytest.mark.parametrize(("args", "says"), [
    (("--claim", "no-equals-sign"), "error: --claim takes NAME=VALUE"),
    (("--claim", "=5"), "error: --claim takes NAME=VALUE"),
    (("--claim", "a..b=5"), "has no empty part"),
    (("--claim", "a=1", "--claim", "a.b=2"), "a is already a value, not an object"),
    (("--runtime-key", "/nonexistent/tee.pem"), "error: cannot read /nonexistent/tee.pem"),
])
def test_issue_refusals(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    r = run("attestation", "issue", "--data-dir", str(tmp_path), *args)
    assert r.returncode == 2
    assert says in r.stderr
    assert r.stdout == ""


def test_a_private_key_is_not_a_runtime_key(tmp_path: Path) -> None:
    private = tmp_path / "private.pem"
    private.write_bytes(TEE.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    r = run("attestation", "issue", "--data-dir", str(tmp_path), "--runtime-key", str(private))
    assert r.returncode == 2
    assert r.stderr == "error: The runtime key must be an RSA public key (PEM) or an RSA JWK " \
                       "(JSON).\n"


@pytest.mark.parametrize("lifetime", ["0", "2592001", "soon"])
def test_a_lifetime_out_of_range_is_a_usage_error(tmp_path: Path, lifetime: str) -> None:
    r = run("attestation", "issue", "--data-dir", str(tmp_path), "--lifetime", lifetime)
    assert r.returncode == 2
    assert "--lifetime" in r.stderr
    assert not (tmp_path / KEY_FILE).exists()


def test_a_key_file_open_to_others_is_refused(tmp_path: Path) -> None:
    assert run("attestation", "authority", "--data-dir", str(tmp_path)).returncode == 0
    (tmp_path / KEY_FILE).chmod(0o640)
    for command in ("issue", "authority"):
        r = run("attestation", command, "--data-dir", str(tmp_path))
        assert r.returncode == 2
        assert "is readable by other users (mode 640)" in r.stderr
