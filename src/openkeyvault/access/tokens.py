"""Access tokens: JWTs the deployment signs, and the verification of every bearer token.

Two kinds of token are accepted on the data plane:

- the deployment's own RS256 tokens: signed by one of its signing keys (picked by `kid`),
  `iss` its issuer, `tid` its tenant, `aud` the resource of the host that was called;
- tokens of a trusted external issuer that has an audience: picked by `iss`, RS256 or
  ES256 with a key from the issuer's JWKS, `aud` the issuer's configured audience, and
  their `oid` (else `sub`) mapped to a principal of this deployment.

Both check `exp` and `nbf` against the injectable clock with five minutes of skew, and
the principal must still exist. Verified tokens are cached by their SHA-256 until they
expire; a cache hit re-checks, through storage's memoised reads, that the principal
still exists and that the signing key (or the issuer) is still trusted, so a deletion or
a revocation applies from the next request, in every worker.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from openkeyvault.access.issuers import TrustedIssuers
from openkeyvault.access.jwks import WouldBlock
from openkeyvault.access.principals import Principal
from openkeyvault.access.signing_keys import SigningKeys
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.identities import IdentityStore
from openkeyvault.storage.readcache import IDENTITIES
from openkeyvault.storage.records import PrincipalRecord, TrustedIssuerRecord

ALGORITHMS = ["RS256"]
EXTERNAL_ALGORITHMS = ["RS256", "ES256"]
LIFETIME_SECONDS = 24 * 3600
SKEW_SECONDS = 300
# A retired signing key verifies for as long as a token it signed can be accepted.
RETAIN_SECONDS = LIFETIME_SECONDS + SKEW_SECONDS
MAX_TOKEN_CHARS = 16_384
MAX_SUBJECT_CHARS = 600
_CACHE_LIMIT = 50_000

__all__ = ["InvalidToken", "IssuedToken", "TokenService", "Verified", "WouldBlock"]


class InvalidToken(Exception):
    """The token is not acceptable. The message is safe to show (it never echoes the token)."""


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_on: int
    expires_in: int
    resource: str


@dataclass(frozen=True)
class Verified:
    """A token found valid: its principal, and what it was accepted on."""

    principal: Principal
    exp: int
    aud: str
    kid: str | None  # the deployment's own token: its signing key
    issuer: str | None  # an external token: the trusted issuer's name

    @property
    def until(self) -> int:
        """The first second (of the deployment clock) at which it is no longer accepted."""
        return self.exp + SKEW_SECONDS


def check_times(claims: dict[str, Any], now: int, *, nbf_required: bool,
                what: str = "The access token") -> int:
    """`exp` (returned) and `nbf` against `now` with the skew; InvalidToken if outside."""
    exp, nbf = claims.get("exp"), claims.get("nbf", None if nbf_required else 0)
    # NumericDate: JSON numbers, which some clients (MSAL) send with a fraction.
    if not isinstance(exp, int | float) or not isinstance(nbf, int | float) or \
            isinstance(exp, bool) or isinstance(nbf, bool) or \
            not (0 <= exp < 2**53 and 0 <= nbf < 2**53):
        raise InvalidToken(f"{what} times are malformed.")
    exp, nbf = int(exp), int(nbf)
    if now >= exp + SKEW_SECONDS:
        raise InvalidToken(f"{what} has expired.")
    if now + SKEW_SECONDS < nbf:
        raise InvalidToken(f"{what} is not yet valid.")
    return exp


def _audience_matches(aud: Any, wanted: str) -> bool:
    if isinstance(aud, str):
        return aud.rstrip("/") == wanted.rstrip("/")
    return isinstance(aud, list) and any(
        isinstance(a, str) and a.rstrip("/") == wanted.rstrip("/") for a in aud[:16])


class TokenService:
    def __init__(self, keys: SigningKeys, issuer: str, tenant_id: str, clock: Clock,
                 store: IdentityStore, issuers: TrustedIssuers,
                 lookup: Callable[[str], PrincipalRecord | None] | None = None) -> None:
        """`lookup(object_id)` gives a principal's record (for external tokens)."""
        self.keys = keys
        self.issuer = issuer
        self.tenant_id = tenant_id
        self._clock = clock
        self._store = store
        self.issuers = issuers
        self._lookup = lookup
        self._cache: dict[bytes, Verified] = {}
        self._lock = threading.Lock()
        # Per thread: (storage snapshot, digests of cached tokens re-checked under it).
        self._checked = threading.local()

    @property
    def jwk(self) -> dict[str, str]:
        """The public JWK of the key that signs now."""
        return self.keys.current_jwk

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
        kid, key = self.keys.signer()
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})
        return IssuedToken(token, exp, LIFETIME_SECONDS, resource)

    # ---- verification ----------------------------------------------------------------
    def verify(self, token: str, audiences: frozenset[str], *,
               may_block: bool = False) -> Principal:
        """The token's principal if it is valid for one of `audiences` (the resources of the
        host called). WouldBlock if an issuer's keys must be fetched and not `may_block`."""
        return self.verified(token, audiences, may_block=may_block).principal

    def verified(self, token: str, audiences: frozenset[str], *,
                 may_block: bool = False) -> Verified:
        """`verify`, with what the token was accepted on (its expiry among it)."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("The access token is too long.")
        now = int(self._clock.now())
        digest = hashlib.sha256(token.encode()).digest()
        # Taken before any read: if storage changes after it, the next request re-checks.
        snapshot = self._store.snapshot(IDENTITIES)
        hit = self._cache.get(digest)
        if hit is not None:
            if now >= hit.exp + SKEW_SECONDS:
                raise InvalidToken("The access token has expired.")
            if hit.kid is not None and hit.aud not in audiences:
                raise InvalidToken("The access token audience is invalid.")
            # While storage is unchanged, what was re-checked holds: one dict lookup.
            checked = self._checked
            if getattr(checked, "snapshot", None) is snapshot and digest in checked.digests:
                return hit
            self._still_trusted(hit)
        else:
            hit = self._verify_new(token, now, audiences, may_block)
            with self._lock:
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[digest] = hit
        if not self._store.principal_exists(hit.principal.object_id):
            raise InvalidToken("The access token's principal no longer exists.")
        checked = self._checked
        if getattr(checked, "snapshot", None) is not snapshot or len(checked.digests) > 4096:
            checked.snapshot, checked.digests = snapshot, set()
        checked.digests.add(digest)
        return hit

    def _still_trusted(self, hit: Verified) -> None:
        """The signing key (or the issuer) of a cached token is still trusted."""
        if hit.kid is not None:
            if self.keys.verifier(hit.kid) is None:
                raise InvalidToken("The access token's signing key is unknown.")
            return
        issuer = self.issuers.by_name(hit.issuer or "")
        if issuer is None or issuer.audience is None or issuer.audience.rstrip("/") != hit.aud:
            raise InvalidToken("The access token issuer is not trusted.")

    def _verify_new(self, token: str, now: int, audiences: frozenset[str],
                    may_block: bool) -> Verified:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise InvalidToken("The access token is malformed.") from None
        iss = unverified.get("iss")
        if iss == self.issuer:
            return self._verify_own(token, header, now, audiences)
        issuer = self.issuers.by_issuer(iss) if isinstance(iss, str) else None
        if issuer is None or issuer.audience is None:
            raise InvalidToken("The access token issuer is not trusted.")
        return self._verify_external(token, header, issuer, now, may_block)

    def _verify_own(self, token: str, header: dict[str, Any], now: int,
                    audiences: frozenset[str]) -> Verified:
        if header.get("alg") not in ALGORITHMS:
            raise InvalidToken("The access token is signed with an algorithm that is not allowed.")
        kid = header.get("kid")
        key = self.keys.verifier(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("The access token's signing key is unknown.")
        try:
            claims = jwt.decode(
                token, key, algorithms=ALGORITHMS,
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "verify_aud": False, "verify_iss": False,
                         "require": ["exp", "nbf", "iss", "aud", "oid", "tid"]},
            )
        except jwt.PyJWTError:
            raise InvalidToken("The access token signature is invalid.") from None
        if claims["iss"] != self.issuer:
            raise InvalidToken("The access token issuer is not trusted.")
        if claims["tid"] != self.tenant_id:
            raise InvalidToken("The access token was issued for another tenant.")
        aud = str(claims["aud"]).rstrip("/")
        if aud not in audiences:
            raise InvalidToken("The access token audience is invalid.")
        exp = check_times(claims, now, nbf_required=True)
        principal = Principal(str(claims["oid"]), self.tenant_id, claims.get("appid"),
                              self.issuer)
        return Verified(principal, exp, aud, kid, None)

    def verify_external_signature(self, token: str, header: dict[str, Any],
                                  issuer: TrustedIssuerRecord, *, may_block: bool,
                                  what: str = "The access token") -> dict[str, Any]:
        """Claims of a token signed by a trusted issuer's key (RS256/ES256), with `iss` that
        issuer's; times, audience and subject are the caller's to check."""
        alg = header.get("alg")
        if alg not in EXTERNAL_ALGORITHMS:
            raise InvalidToken(f"{what} is signed with an algorithm that is not allowed.")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken(f"{what} is malformed.")
        jwk = self.issuers.jwks.key(issuer, kid, may_block=may_block)
        if jwk is None:
            raise InvalidToken(f"{what}'s signing key is unknown.")
        if jwk.algorithm_name != alg:
            raise InvalidToken(f"{what} signature is invalid.")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, jwk.key, algorithms=[alg],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "verify_aud": False, "verify_iss": False,
                         "require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"{what} has no '{exc.claim}' claim.") from None
        except jwt.PyJWTError:
            raise InvalidToken(f"{what} signature is invalid.") from None
        if claims["iss"] != issuer.issuer:
            raise InvalidToken(f"{what} issuer is not trusted.")
        return claims

    def _verify_external(self, token: str, header: dict[str, Any], issuer: TrustedIssuerRecord,
                         now: int, may_block: bool) -> Verified:
        claims = self.verify_external_signature(token, header, issuer, may_block=may_block)
        audience = (issuer.audience or "").rstrip("/")
        if not _audience_matches(claims["aud"], audience):
            raise InvalidToken("The access token audience is invalid.")
        exp = check_times(claims, now, nbf_required=False)
        subject = claims.get("oid", claims["sub"])
        if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_CHARS:
            raise InvalidToken("The access token subject is malformed.")
        object_id = self._store.external_identity(issuer.name, subject)
        record: PrincipalRecord | None = self._lookup(object_id) \
            if object_id is not None and self._lookup is not None else None
        if record is None:
            raise InvalidToken("The access token's subject is not a principal of this "
                               "deployment.")
        principal = Principal(record.object_id, record.tenant_id, record.client_id,
                              issuer.issuer)
        return Verified(principal, exp, audience, None, issuer.name)
