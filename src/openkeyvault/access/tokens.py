"""Access tokens: JWTs the deployment signs and verifies.

The signing key lives behind the barrier. Verification checks the signature
(RS256 only), `iss`, `aud`, `exp` and `nbf` against the injectable clock with
a small skew. Verified tokens are cached by their SHA-256 until they expire,
so the hot path does one hash and a dict lookup.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from openkeyvault.access.principals import Principal
from openkeyvault.crypto.signing import public_pem, rsa_public_jwk
from openkeyvault.ops.clock import Clock

ALGORITHMS = ["RS256"]
LIFETIME_SECONDS = 24 * 3600
SKEW_SECONDS = 300
MAX_TOKEN_CHARS = 16_384
_CACHE_LIMIT = 50_000


class InvalidToken(Exception):
    """The token is not acceptable. The message is safe to show (it never echoes the token)."""


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_on: int
    expires_in: int
    resource: str


class TokenService:
    def __init__(self, private_pem: bytes, issuer: str, tenant_id: str, clock: Clock) -> None:
        self._private = private_pem
        self._public = public_pem(private_pem)
        self.jwk = rsa_public_jwk(private_pem)
        self.issuer = issuer
        self.tenant_id = tenant_id
        self._clock = clock
        self._cache: dict[bytes, tuple[Principal, int, str]] = {}
        self._lock = threading.Lock()

    def issue(self, principal: Principal, resource: str) -> IssuedToken:
        now = int(self._clock.now())
        exp = now + LIFETIME_SECONDS
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": resource,
            "iat": now,
            "nbf": now,
            "exp": exp,
            "oid": principal.object_id,
            "sub": principal.object_id,
            "tid": principal.tenant_id,
            "uti": uuid.uuid4().hex,
            "ver": "2.0",
        }
        if principal.app_id:
            claims["appid"] = principal.app_id
        token = jwt.encode(claims, self._private, algorithm="RS256",
                           headers={"kid": self.jwk["kid"], "typ": "JWT"})
        return IssuedToken(token, exp, LIFETIME_SECONDS, resource)

    def verify(self, token: str, audiences: frozenset[str]) -> Principal:
        """Return the token's principal if it is valid for one of `audiences`."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("The access token is too long.")
        now = int(self._clock.now())
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(digest)
        if hit is not None:
            principal, exp, aud = hit
            if now >= exp + SKEW_SECONDS:
                raise InvalidToken("The access token has expired.")
            if aud not in audiences:
                raise InvalidToken("The access token audience is invalid.")
            return principal
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("The access token is malformed.") from None
        if header.get("alg") not in ALGORITHMS:
            raise InvalidToken("The access token is signed with an algorithm that is not allowed.")
        try:
            claims = jwt.decode(
                token, self._public, algorithms=ALGORITHMS, issuer=self.issuer,
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "verify_aud": False, "require": ["exp", "nbf", "iss", "aud", "oid"]},
            )
        except jwt.InvalidIssuerError:
            raise InvalidToken("The access token issuer is not trusted.") from None
        except jwt.PyJWTError:
            raise InvalidToken("The access token signature is invalid.") from None
        aud = str(claims["aud"]).rstrip("/")
        if aud not in audiences:
            raise InvalidToken("The access token audience is invalid.")
        exp, nbf = claims["exp"], claims["nbf"]
        if not isinstance(exp, int) or not isinstance(nbf, int):
            raise InvalidToken("The access token times are malformed.")
        if now >= exp + SKEW_SECONDS:
            raise InvalidToken("The access token has expired.")
        if now + SKEW_SECONDS < nbf:
            raise InvalidToken("The access token is not yet valid.")
        principal = Principal(str(claims["oid"]), str(claims.get("tid", "")),
                              claims.get("appid"))
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = (principal, exp, aud)
        return principal
