"""Attestation tokens: the JWTs an attestation authority (Microsoft Azure Attestation, or
this deployment's dev authority) signs about a trusted execution environment, verified
before a key is released to that environment (secure key release).

A token is accepted when
- it is a signed JWS (never `alg: none`) with one of ALGORITHMS;
- its `iss` is a trusted authority's issuer (compared by `same_issuer`);
- its header's `kid` names a key of that authority's JWKS (no `kid`: the authority's only
  key), the key fits the algorithm, and the signature verifies;
- `exp` (required) and `nbf` (when present) hold at `now`, with the skew bearer tokens
  have (`access.tokens.check_times`).
Keys a token names itself (`jku`, `x5u`, `jwk`, `x5c` headers) are never used: which keys
are trusted is configuration only.

The key a released key is wrapped to is the token's first suitable RSA key in
`x-ms-runtime.keys` (a JWKS), or else in `x-ms-isolation-tee.x-ms-runtime.keys` (where
Azure confidential VMs' tokens carry the TEE's own keys): it needs a `kid`, `use` "enc"
or `key_ops` holding "encrypt", and 2048 bits or more. Its JWK is given as plain members
(`n`, `e`) or as an `x5c` certificate chain (the first certificate's key).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt
from jwt import PyJWK, PyJWS

from openkeyvault.access.jwks import MAX_KEYS, JwksError
from openkeyvault.access.tokens import InvalidToken, check_times
from openkeyvault.crypto.certinfo import CertificateError, certificate_info
from openkeyvault.crypto.jwk import JwkError, public_from_jwk, public_jwk
from openkeyvault.crypto.signing import jwk_thumbprint
from openkeyvault.crypto.transfer import TransferError, load_kek

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
ALGORITHMS = RSA_ALGORITHMS | frozenset(EC_ALGORITHMS.values())
MIN_RSA_BITS = 2048
MAX_TOKEN_CHARS = 64 * 1024  # confidential VM tokens carry certificates and many claims
MAX_KID_CHARS = 256
RUNTIME_KEY_PATHS = (("x-ms-runtime", "keys"), ("x-ms-isolation-tee", "x-ms-runtime", "keys"))
_WHAT = "The attestation token"


class AttestationTokenError(ValueError):
    """The attestation token is refused. The message is safe to show: it says why, and
    never echoes the token or its claims."""


# ---- issuers -------------------------------------------------------------------------
def normalise_issuer(issuer: str) -> str:
    """An issuer URL in the form compared: scheme and host lower-case, no default port, no
    trailing slash; a bare host name is taken as https."""
    text = issuer.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
        host = parts.netloc.lower()
    if port is not None and (scheme, port) not in (("https", 443), ("http", 80)):
        host = f"{host}:{port}"
    out = f"{scheme}://{host}{parts.path.rstrip('/')}"
    return f"{out}?{parts.query}" if parts.query else out


def same_issuer(a: str, b: str) -> bool:
    """Whether two issuer URLs name the same issuer (see normalise_issuer)."""
    return normalise_issuer(a) == normalise_issuer(b)


# ---- trusted authorities -------------------------------------------------------------
@dataclass(frozen=True)
class _Key:
    algorithms: frozenset[str]
    key: Any  # what PyJWS verifies with: a public key object or PEM


@dataclass(frozen=True)
class Authority:
    """A trusted attestation authority: its issuer and its signing keys (a JWKS document).
    JwksError if the document holds no usable signing key."""

    issuer: str
    jwks: dict[str, Any] = field(repr=False)
    _keys: dict[str, _Key] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.issuer, str) or not self.issuer.strip():
            raise JwksError("An attestation authority needs its issuer URL.")
        object.__setattr__(self, "_keys", signing_keys(self.jwks))

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def key(self, kid: str | None) -> _Key | None:
        """The signing key `kid`; without a kid, the only key (None if there are several)."""
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)


def signing_keys(jwks: Any) -> dict[str, _Key]:
    """The usable signature keys of a JWKS document by key id: RSA (2048 bits or more) and
    EC P-256/P-384/P-521, as plain members or as an `x5c` certificate (whose key counts;
    the chain is not checked: trusting the JWKS is what trusts the keys)."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list):
        raise JwksError("The JWKS document has no 'keys' array.")
    out: dict[str, _Key] = {}
    for entry in keys[:MAX_KEYS]:
        found = _signing_key(entry)
        if found is not None and found[0] not in out:
            out[found[0]] = found[1]
    if not out:
        raise JwksError("The JWKS document holds no usable signing key (RSA of 2048 bits or "
                        "more, or EC P-256, P-384 or P-521).")
    return out


def _signing_key(entry: Any) -> tuple[str, _Key] | None:
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or "d" in entry:
        return None
    kty, kid = entry.get("kty"), entry.get("kid")
    if kty not in ("RSA", "EC") or (kid is not None and not isinstance(kid, str)):
        return None
    try:
        if ("n" if kty == "RSA" else "x") in entry:
            jwk = PyJWK(entry)
            key: Any = jwk.key
            if kty == "RSA":
                algorithms = RSA_ALGORITHMS if key.key_size >= MIN_RSA_BITS else frozenset()
            else:
                algorithms = frozenset({EC_ALGORITHMS.get(entry.get("crv", ""), "")})
            kid = kid or jwk_thumbprint(entry)
        else:
            key, algorithms = _certificate_key(entry.get("x5c"), kty)
    except (jwt.PyJWTError, CertificateError, KeyError, TypeError, ValueError):
        return None
    if isinstance(entry.get("alg"), str):
        algorithms = algorithms & {entry["alg"]}
    algorithms = algorithms & ALGORITHMS
    if not kid or not algorithms:
        return None
    return kid[:MAX_KID_CHARS], _Key(algorithms, key)


def _certificate_key(x5c: Any, kty: str) -> tuple[str, frozenset[str]]:
    """The public key (PEM) of an `x5c` chain's first certificate, and its algorithms."""
    if not isinstance(x5c, list) or not x5c or not isinstance(x5c[0], str):
        raise ValueError("no key")
    der = base64.b64decode(x5c[0], validate=True)
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + \
        b"-----END CERTIFICATE-----\n"
    info = certificate_info(pem)
    is_rsa = info.algorithms[0][:2] in ("RS", "PS")
    if is_rsa != (kty == "RSA"):
        raise ValueError("kty does not match the certificate")
    return info.public_pem, RSA_ALGORITHMS if is_rsa else frozenset(info.algorithms)


# ---- verification --------------------------------------------------------------------
@dataclass(frozen=True)
class RuntimeKey:
    """The target environment's RSA key a released key is wrapped to."""

    kid: str
    jwk: dict[str, str]  # {"kty": "RSA", "kid", "n", "e"}


@dataclass(frozen=True)
class VerifiedToken:
    issuer: str  # the token's `iss`, as it wrote it
    claims: dict[str, Any]
    runtime_key: RuntimeKey


def verify(token: str, authorities: Sequence[Authority], now: float) -> VerifiedToken:
    """The claims and runtime key of an attestation token signed by one of `authorities`,
    valid at `now` (seconds since the epoch, from the deployment's clock);
    AttestationTokenError with the reason otherwise."""
    if not isinstance(token, str) or not token:
        raise AttestationTokenError(f"{_WHAT} is missing.")
    if len(token) > MAX_TOKEN_CHARS:
        raise AttestationTokenError(f"{_WHAT} is longer than {MAX_TOKEN_CHARS} characters.")
    header, unverified = _unverified(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise AttestationTokenError(f"{_WHAT} is not signed.")
    if alg not in ALGORITHMS:
        raise AttestationTokenError(f"{_WHAT} is signed with an algorithm that is not "
                                    f"allowed (allowed: {', '.join(sorted(ALGORITHMS))}).")
    iss = unverified.get("iss")
    if not isinstance(iss, str) or not iss:
        raise AttestationTokenError(f"{_WHAT} has no 'iss' claim.")
    authority = _authority_of(iss, authorities)
    if authority is None:
        raise AttestationTokenError(f"{_WHAT}'s issuer is not a trusted attestation "
                                    "authority.")
    kid = header.get("kid")
    key = authority.key(kid if isinstance(kid, str) else None)
    if key is None:
        raise AttestationTokenError(f"{_WHAT}'s signing key (kid) is not one of its "
                                    "authority's keys.")
    if alg not in key.algorithms:
        raise AttestationTokenError(f"{_WHAT}'s algorithm does not fit its signing key.")
    try:
        PyJWS().decode_complete(token, key.key, algorithms=[alg])
    except jwt.PyJWTError:
        raise AttestationTokenError(f"{_WHAT}'s signature is invalid.") from None
    if "exp" not in unverified:
        raise AttestationTokenError(f"{_WHAT} has no 'exp' claim.")
    try:
        check_times(unverified, int(now), nbf_required=False, what=_WHAT)
    except InvalidToken as exc:
        raise AttestationTokenError(str(exc)) from None
    return VerifiedToken(iss, unverified, runtime_key(unverified))


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims, read before anything is trusted."""
    try:
        header = jwt.get_unverified_header(token)
        payload = PyJWS().decode_complete(token, options={"verify_signature": False})
        claims = json.loads(payload["payload"])
    except (jwt.PyJWTError, ValueError, RecursionError):
        raise AttestationTokenError(f"{_WHAT} is malformed.") from None
    if not isinstance(header, dict) or not isinstance(claims, dict) or \
            ("kid" in header and not isinstance(header["kid"], str)):
        raise AttestationTokenError(f"{_WHAT} is malformed.")
    return header, claims


def _authority_of(iss: str, authorities: Sequence[Authority]) -> Authority | None:
    wanted = normalise_issuer(iss)
    return next((a for a in authorities if normalise_issuer(a.issuer) == wanted), None)


def runtime_key(claims: Mapping[str, Any]) -> RuntimeKey:
    """The first suitable RSA key of the token's runtime keys (see the module's doc)."""
    for path in RUNTIME_KEY_PATHS:
        keys: Any = claims
        for name in path:
            keys = keys.get(name) if isinstance(keys, Mapping) else None
        if isinstance(keys, list):
            for entry in keys[:MAX_KEYS]:
                found = _runtime_key(entry)
                if found is not None:
                    return found
    raise AttestationTokenError(
        f"{_WHAT} holds no key to release to: its 'x-ms-runtime' claim needs a 'keys' "
        "array with an RSA key (2048 bits or more) that has a 'kid' and is for "
        "encryption ('use' \"enc\" or 'key_ops' with \"encrypt\").")


def _runtime_key(entry: Any) -> RuntimeKey | None:
    if not isinstance(entry, dict) or entry.get("kty") != "RSA" or "d" in entry:
        return None
    kid, ops = entry.get("kid"), entry.get("key_ops")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS:
        return None
    if entry.get("use") != "enc" and not (isinstance(ops, list) and "encrypt" in ops):
        return None
    try:
        if "n" in entry:
            members = {"n": entry["n"], "e": entry["e"]}
            bits = public_from_jwk(members, "RSA").key_size
        else:
            pem, _ = _certificate_key(entry.get("x5c"), "RSA")
            key, _ = load_kek(pem.encode())
            members, bits = public_jwk(key), key.key_size
    except (JwkError, CertificateError, TransferError, KeyError, TypeError, ValueError):
        return None
    if bits < MIN_RSA_BITS:
        return None
    return RuntimeKey(kid, {"kty": "RSA", "kid": kid, "n": members["n"], "e": members["e"]})
