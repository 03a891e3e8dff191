"""Client assertions at the token endpoint (`client_assertion_type` jwt-bearer).

Two kinds, told apart by the assertion's `iss`:

- a certificate credential: `iss` = `sub` = the client id, signed with the key of a
  certificate registered on the principal (found by the `x5t` or `x5t#S256` header),
  `aud` the token endpoint (or the issuer) as the client addressed it, a `jti` that is
  accepted once while the assertion is valid;
- a federated credential (workload identity): a token of a trusted external issuer
  whose `iss`, `sub` and `aud` match a federated credential of the client id's principal.

The signature is checked before anything about the principal's credentials is revealed.
Refusals carry Entra's error codes; their messages never echo the assertion.
"""

from __future__ import annotations

import hmac
from typing import Any

import jwt

from openkeyvault.access.directory import CertificateCredential, Directory
from openkeyvault.access.principals import Principal
from openkeyvault.access.tokens import SKEW_SECONDS, InvalidToken, TokenService, check_times
from openkeyvault.crypto.encoding import b64url_decode
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.identities import IdentityStore
from openkeyvault.storage.records import PrincipalRecord

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_CHARS = 32_768
MAX_JTI_CHARS = 256
# A certificate assertion may not be valid for longer than this (its jti is kept as long).
MAX_ASSERTION_LIFETIME = 24 * 3600
_ECHO = 200


class AssertionRefused(Exception):
    """An assertion that does not authenticate the client; the description is safe to show."""

    def __init__(self, description: str, error: str = "invalid_client",
                 status: int = 401) -> None:
        super().__init__(description)
        self.description = description
        self.error = error
        self.status = status


def _malformed(what: str = "") -> AssertionRefused:
    return AssertionRefused(f"AADSTS50027: JWT token is invalid or malformed.{what}",
                            "invalid_request", 400)


def _audiences(aud: Any) -> set[str]:
    items = [aud] if isinstance(aud, str) else aud[:16] if isinstance(aud, list) else []
    return {a.lower().rstrip("/") for a in items if isinstance(a, str)}


def _thumbprint(header: dict[str, Any], name: str) -> bytes | None:
    value = header.get(name)
    if not isinstance(value, str) or len(value) > 128:
        return None
    try:
        return b64url_decode(value.rstrip("="))
    except ValueError:
        return None


class ClientAssertions:
    def __init__(self, directory: Directory, tokens: TokenService, store: IdentityStore,
                 clock: Clock) -> None:
        self._directory = directory
        self._tokens = tokens
        self._store = store
        self._clock = clock

    def authenticate(self, client_id: str, assertion: str,
                     endpoint_audiences: frozenset[str]) -> Principal:
        """The principal `assertion` authenticates as `client_id`; `endpoint_audiences` are
        the `aud` values a certificate assertion may carry (lower case, no trailing /)."""
        if len(assertion) > MAX_ASSERTION_CHARS:
            raise _malformed(" The client assertion is too long.")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _malformed() from None
        iss = unverified.get("iss")
        if not isinstance(iss, str) or not iss:
            raise _malformed(" The client assertion has no issuer.")
        now = int(self._clock.now())
        if hmac.compare_digest(iss.encode(), client_id.encode()):
            return self._certificate(client_id, assertion, header, endpoint_audiences, now)
        if "x5t" in header or "x5t#S256" in header:
            # Signed with a certificate, but not as this client.
            raise AssertionRefused("AADSTS700021: Client assertion application identifier "
                                   "doesn't match 'client_id' parameter.")
        return self._federated(client_id, assertion, header, iss, now)

    # ---- certificate credentials -----------------------------------------------------
    def _registered(self, client_id: str, header: dict[str, Any],
                    now: int) -> tuple[PrincipalRecord, CertificateCredential] | None:
        sha1, sha256 = _thumbprint(header, "x5t"), _thumbprint(header, "x5t#S256")
        record = self._directory.lookup(client_id=client_id)
        if record is None or record.kind != "servicePrincipal" or (sha1 is None and
                                                                   sha256 is None):
            return None
        for cert in self._directory.certificates(record.object_id):
            if cert.expires <= now or now + SKEW_SECONDS < cert.not_before:
                continue
            if (sha256 is not None and hmac.compare_digest(sha256, bytes.fromhex(cert.sha256))) \
                    or (sha1 is not None and hmac.compare_digest(sha1, bytes.fromhex(cert.sha1))):
                return record, cert
        return None

    def _certificate(self, client_id: str, assertion: str, header: dict[str, Any],
                     endpoint_audiences: frozenset[str], now: int) -> Principal:
        found = self._registered(client_id, header, now)
        if found is None:
            raise AssertionRefused(
                "AADSTS700027: The certificate with identifier used to sign the client "
                "assertion is not registered on application.")
        record, cert = found
        alg = header.get("alg")
        if alg not in cert.algorithms:
            raise AssertionRefused("AADSTS700027: Client assertion failed signature "
                                   "validation (the algorithm does not fit the certificate).")
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion, cert.public_pem, algorithms=[str(alg)],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "verify_aud": False, "verify_iss": False,
                         "require": ["iss", "sub", "aud", "exp", "jti"]})
        except jwt.MissingRequiredClaimError as exc:
            raise _malformed(f" The client assertion has no '{exc.claim}' claim.") from None
        except jwt.PyJWTError:
            raise AssertionRefused("AADSTS700027: Client assertion failed signature "
                                   "validation.") from None
        if claims["iss"] != client_id or claims["sub"] != client_id:
            raise AssertionRefused("AADSTS700021: Client assertion application identifier "
                                   "doesn't match 'client_id' parameter.")
        if not _audiences(claims["aud"]) & endpoint_audiences:
            raise AssertionRefused("AADSTS700023: Client assertion audience claim does not "
                                   "match Realm issuer.")
        exp = self._times(claims, now)
        if exp - now > MAX_ASSERTION_LIFETIME:
            raise AssertionRefused("AADSTS700024: Client assertion is not within its valid "
                                   "time range (its lifetime is too long).")
        jti = claims["jti"]
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
            raise _malformed(" The client assertion's 'jti' is malformed.")
        if not self._store.use_assertion(client_id, jti, exp + SKEW_SECONDS, now):
            raise AssertionRefused("AADSTS50027: The client assertion was already used "
                                   "(its 'jti' was seen before).")
        return Principal(record.object_id, record.tenant_id, record.client_id)

    @staticmethod
    def _times(claims: dict[str, Any], now: int) -> int:
        try:
            return check_times(claims, now, nbf_required=False, what="The client assertion")
        except InvalidToken as exc:
            raise AssertionRefused(f"AADSTS700024: Client assertion is not within its valid "
                                   f"time range. {exc}") from None

    # ---- federated credentials ---------------------------------------------------------
    def _federated(self, client_id: str, assertion: str, header: dict[str, Any], iss: str,
                   now: int) -> Principal:
        no_issuer = AssertionRefused(
            f"AADSTS700211: No matching federated identity record found for presented "
            f"assertion issuer '{iss[:_ECHO]}'.")
        issuer = self._tokens.issuers.by_issuer(iss)
        if issuer is None:
            raise no_issuer
        try:
            claims = self._tokens.verify_external_signature(
                assertion, header, issuer, may_block=True, what="The client assertion")
        except InvalidToken as exc:
            raise AssertionRefused(f"AADSTS50013: Assertion failed signature validation. "
                                   f"{exc}") from None
        self._times(claims, now)
        record = self._directory.lookup(client_id=client_id)
        if record is None or record.kind not in ("servicePrincipal", "managedIdentity"):
            raise no_issuer
        candidates = [f for f in self._directory.federated(record.object_id)
                      if f.issuer == iss]
        if not candidates:
            raise no_issuer
        subject = claims["sub"]
        if not isinstance(subject, str):
            raise _malformed(" The assertion's 'sub' is not a string.")
        candidates = [f for f in candidates
                      if hmac.compare_digest(f.subject.encode(), subject.encode())]
        if not candidates:
            raise AssertionRefused(
                f"AADSTS700213: No matching federated identity record found for presented "
                f"assertion subject '{subject[:_ECHO]}'. Please note that the matching is "
                f"done using a case-sensitive comparison.")
        presented = _audiences(claims["aud"])
        if not any(f.audience.lower().rstrip("/") in presented for f in candidates):
            shown = ", ".join(sorted(presented))[:_ECHO]
            raise AssertionRefused(
                f"AADSTS700212: No matching federated identity record found for presented "
                f"assertion audience '{shown}'.")
        return Principal(record.object_id, record.tenant_id, record.client_id)
