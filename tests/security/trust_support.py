"""Helpers for the token-service tests: client certificates, a test OpenID Connect issuer,
the `okv` command and raw calls to the token endpoint."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.support.server import DevServer

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FEDERATED_AUDIENCE = "api://AzureADTokenExchange"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def okv(server: DevServer, *args: str) -> Any:
    """Run an `okv` command against the server's data directory; its JSON output."""
    done = server.okv(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def scope(server: DevServer) -> str:
    return f"https://vault.localhost:{server.port}/.default"


def token_endpoint(server: DevServer, tenant: str) -> str:
    return f"https://localhost:{server.port}/{tenant}/oauth2/v2.0/token"


def token_call(server: DevServer, tenant: str, form: dict[str, str]) -> requests.Response:
    return requests.post(token_endpoint(server, tenant), data=form, verify=server.ca,
                         timeout=30)


def assertion_form(server: DevServer, client_id: str, assertion: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client_id,
            "client_assertion_type": JWT_BEARER, "client_assertion": assertion,
            "scope": scope(server)}


def assert_oauth_refusal(r: requests.Response, status: int, error: str, code: str,
                         *secrets: str) -> dict[str, Any]:
    """An Entra-shaped refusal with no token in it, echoing none of `secrets`."""
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["error"] == error, body
    assert body["error_description"].startswith(f"AADSTS{code}:"), body
    assert body["error_codes"] == [int(code)], body
    assert "access_token" not in body
    for s in secrets:
        assert s not in r.text
    return body


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    def enc(obj: dict[str, Any]) -> str:
        return b64url(json.dumps(obj, separators=(",", ":")).encode())

    unsigned = f"{enc(header)}.{enc(claims)}"
    return f"{unsigned}.{b64url(hmac.new(secret, unsigned.encode(), hashlib.sha256).digest())}"


# ---- client certificates ------------------------------------------------------------
@dataclass
class ClientCert:
    key: Any
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def sha1(self) -> bytes:
        return self.cert.fingerprint(hashes.SHA1())  # noqa: S303 (a thumbprint, as x5t is)

    @property
    def sha256(self) -> bytes:
        return self.cert.fingerprint(hashes.SHA256())

    def write(self, directory: Path, with_key: bool = True) -> Path:
        path = directory / f"{uuid.uuid4().hex[:8]}.pem"
        path.write_bytes((self.key_pem if with_key else b"") + self.cert_pem)
        return path

    def assertion(self, client_id: str, aud: str, *, alg: str | None = None,
                  signer: Any = None, header: dict[str, Any] | None = None,
                  **claims: Any) -> str:
        """A client assertion as MSAL makes it (claims overridable; None removes one)."""
        now = int(time.time())
        body: dict[str, Any] = {"aud": aud, "iss": client_id, "sub": client_id,
                                "jti": str(uuid.uuid4()), "iat": now, "nbf": now,
                                "exp": now + 600}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        alg = alg or ("RS256" if isinstance(self.key, rsa.RSAPrivateKey) else "ES256")
        headers = {"x5t": b64url(self.sha1)} if header is None else header
        if alg == "HS256":  # PyJWT refuses to make these: a forgery by hand
            return hs256({**headers, "alg": "HS256", "typ": "JWT"}, body, signer)
        return jwt.encode(body, signer or self.key, algorithm=alg, headers=headers)


def make_cert(kind: str = "rsa", days: int = 30, name: str = "okv test client") -> ClientCert:
    key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048) \
        if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .sign(key, hashes.SHA256()))
    return ClientCert(key, cert)


# ---- a test OpenID Connect issuer ----------------------------------------------------
@dataclass
class TestIssuer:
    """An issuer of signed JWTs, like a Kubernetes cluster's service-account token issuer."""

    __test__ = False  # not a test class

    url: str = field(default_factory=lambda: f"https://issuer.example/{uuid.uuid4().hex[:8]}")
    keys: dict[str, Any] = field(default_factory=dict)
    current: str = ""

    def __post_init__(self) -> None:
        if not self.keys:
            self.add_key()

    def add_key(self, kind: str = "rsa") -> str:
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048) \
            if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
        kid = uuid.uuid4().hex
        self.keys[kid] = key
        self.current = kid
        return kid

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())
                             if isinstance(key, rsa.RSAPrivateKey)
                             else jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
            out.append({**jwk, "kid": kid, "use": "sig",
                        "alg": "RS256" if jwk["kty"] == "RSA" else "ES256"})
        return {"keys": out}

    def write_jwks(self, path: Path) -> Path:
        path.write_text(json.dumps(self.jwks()))
        return path

    def token(self, subject: str, audience: Any = FEDERATED_AUDIENCE, *, kid: str | None = None,
              signer: Any = None, header: dict[str, Any] | None = None,
              **claims: Any) -> str:
        now = int(time.time())
        body: dict[str, Any] = {"iss": self.url, "sub": subject, "aud": audience,
                                "iat": now, "nbf": now, "exp": now + 3600}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        kid = kid or self.current
        key = signer or self.keys.get(kid) or self.keys[self.current]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(body, key, algorithm=alg,
                          headers={"kid": kid, "typ": "JWT"} if header is None else header)
