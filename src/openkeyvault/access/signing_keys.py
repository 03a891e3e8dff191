"""The deployment's token signing keys: one current key signs; retired keys still verify.

A key's `kid` is its RFC 7638 thumbprint. Rotation makes a new key current and retires
the previous one, which keeps verifying (and stays in the JWKS) for `retain_seconds` —
the longest a token it signed can live — and is then dropped. Every worker process reads
the keys through storage's memoised reads, so a rotation made anywhere (the CLI, another
worker's schedule) applies from the next request without a restart.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jwt import PyJWK
from jwt.algorithms import RSAAlgorithm

from openkeyvault.crypto.signing import generate_rsa_pem, rsa_public_jwk
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.barrier import SYSTEM, Barrier
from openkeyvault.storage.identities import IdentityStore
from openkeyvault.storage.records import SigningKeyRecord


def _context(kid: str) -> bytes:
    return f"okv/token-signing-key/{kid}".encode()


@dataclass(frozen=True)
class _View:
    rows: tuple[SigningKeyRecord, ...]
    current: SigningKeyRecord
    # kid → (public key, verifies until: None while current)
    verifying: dict[str, tuple[Any, int | None]]
    jwks: dict[str, dict[str, str]]


class SigningKeys:
    def __init__(self, store: IdentityStore, barrier: Barrier, clock: Clock,
                 retain_seconds: int) -> None:
        self._store = store
        self._barrier = barrier
        self._clock = clock
        self.retain_seconds = retain_seconds
        self._view: _View | None = None
        self._private: dict[str, Any] = {}
        self._lock = threading.Lock()

    # ---- changes ------------------------------------------------------------------
    def ensure(self, existing: Callable[[], bytes | None] = lambda: None) -> None:
        """Create the first key unless one exists: `existing()` (a key kept by an earlier
        version of the deployment) or a new one."""
        if self._store.signing_keys():
            return
        self._add(existing() or generate_rsa_pem(), if_none=True)

    def _add(self, pem: bytes, **conditions: Any) -> str | None:
        jwk = rsa_public_jwk(pem)
        version, sealed = self._barrier.seal(SYSTEM, _context(jwk["kid"]), pem)
        record = SigningKeyRecord(jwk["kid"], int(self._clock.now()), None, json.dumps(jwk))
        return jwk["kid"] if self._store.add_signing_key(record, version, sealed,
                                                         **conditions) else None

    def rotate(self, drop_previous: bool = False) -> str:
        """Make a new key current; the previous one verifies until its tokens have expired
        (or stops at once with `drop_previous`, which invalidates every token it signed)."""
        kid = self._add(generate_rsa_pem(), drop_retired=drop_previous)
        assert kid is not None
        return kid

    def rotate_if_due(self, every_seconds: int) -> int:
        """Rotate if the current key is `every_seconds` old (1 if rotated, else 0)."""
        now = int(self._clock.now())
        if every_seconds <= 0 or self._state().current.created + every_seconds > now:
            return 0
        kid = self._add(generate_rsa_pem(), if_current_created_before=now - every_seconds + 1)
        return 1 if kid else 0

    def drop_expired(self) -> int:
        """Delete retired keys whose every token has expired."""
        return self._store.delete_signing_keys_retired_before(
            int(self._clock.now()) - self.retain_seconds + 1)

    # ---- reads ----------------------------------------------------------------------
    def _state(self) -> _View:
        rows = self._store.signing_keys()
        view = self._view
        if view is not None and (view.rows is rows or view.rows == rows):
            return view
        if not rows:
            raise RuntimeError("the deployment has no token signing key")
        current = max((r for r in rows if r.retired is None), default=rows[-1],
                      key=lambda r: r.created)
        verifying: dict[str, tuple[Any, int | None]] = {}
        jwks: dict[str, dict[str, str]] = {}
        for r in rows:
            jwk = json.loads(r.public_jwk)
            until = None if r is current else (r.retired or r.created) + self.retain_seconds
            verifying[r.kid] = (PyJWK(jwk, "RS256").key, until)
            jwks[r.kid] = jwk
        view = self._view = _View(rows, current, verifying, jwks)
        return view

    def verifier(self, kid: str) -> Any | None:
        """The public key that verifies tokens signed as `kid`, if it still does."""
        found = self._state().verifying.get(kid)
        if found is None:
            return None
        key, until = found
        if until is not None and self._clock.now() >= until:
            return None
        return key

    def jwks(self) -> list[dict[str, str]]:
        """Public JWKs of every key that still verifies, the current one first."""
        view = self._state()
        now = self._clock.now()
        return [view.jwks[kid] for kid in sorted(
            view.verifying, key=lambda k: k != view.current.kid)
            if view.verifying[kid][1] is None or now < (view.verifying[kid][1] or 0)]

    @property
    def current_jwk(self) -> dict[str, str]:
        view = self._state()
        return view.jwks[view.current.kid]

    def signer(self) -> tuple[str, Any]:
        """(kid, private key) of the current key."""
        kid = self._state().current.kid
        key = self._private.get(kid)
        if key is None:
            found = self._store.signing_key_sealed(kid)
            if found is None:
                raise RuntimeError("the current token signing key is missing")
            pem = self._barrier.open(SYSTEM, found[0], _context(kid), found[1])
            key = RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(pem)
            with self._lock:
                self._private[kid] = key
        return kid, key
