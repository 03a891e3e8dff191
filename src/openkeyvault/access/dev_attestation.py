"""The dev attestation authority: a stand-in for Microsoft Azure Attestation on a laptop or
in tests, so secure key release can be tried without a confidential VM.

It signs MAA-like attestation tokens (RS256, `kid` in the header) with an RSA key kept in
the data directory (`dev-attestation.key`, mode 0600, made on first use; the first of
several processes making it at once wins). Its issuer is DEV_ISSUER; a dev server trusts
it without configuration (access/attestation_trust.py), a production deployment never
does. Whoever can read the key file can mint tokens that pass any policy naming this
issuer: it is a development tool, not an attestation service.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import jwt

from openkeyvault.access.attestation_tokens import MIN_RSA_BITS, Authority
from openkeyvault.crypto.jwk import public_jwk
from openkeyvault.crypto.signing import generate_rsa_pem, jwk_thumbprint, rsa_public_jwk
from openkeyvault.crypto.transfer import TransferError, load_kek
from openkeyvault.ops.clock import Clock, SystemClock

# `{service}.localhost`, as the dev hosts are (vault.localhost, managedhsm.localhost), for
# Azure's `*.attest.azure.net`. Nothing needs to answer there: the server trusts its keys
# from the data directory.
DEV_ISSUER = "https://attest.localhost"
KEY_FILE = "dev-attestation.key"
DEFAULT_LIFETIME = 8 * 3600  # as Azure Attestation's tokens
MAX_LIFETIME = 30 * 24 * 3600
MAX_KEY_FILE_BYTES = 64 * 1024
# Claims the authority sets itself: given ones are replaced.
RESERVED_CLAIMS = ("iss", "iat", "nbf", "exp", "jti")


class DevAttestationError(ValueError):
    """The dev authority cannot do what was asked (message safe to show)."""


class DevAttestationAuthority:
    def __init__(self, data_dir: Path, clock: Clock | None = None) -> None:
        self._path = data_dir / KEY_FILE
        self._clock: Clock = clock or SystemClock()
        self._pem: bytes | None = None

    issuer = DEV_ISSUER

    @property
    def key_file(self) -> Path:
        return self._path

    def jwks(self) -> dict[str, Any]:
        """The authority's public signing key as a JWKS document."""
        return {"keys": [self._public_jwk()]}

    def authority(self) -> Authority:
        """The authority as attestation_tokens.verify trusts it."""
        return Authority(DEV_ISSUER, self.jwks())

    def issue(self, claims: dict[str, Any], runtime_public_key_pem: bytes | None,
              lifetime: int = DEFAULT_LIFETIME) -> str:
        """A signed attestation token holding `claims` (RESERVED_CLAIMS are the
        authority's own) and, given a runtime key (an RSA public key as PEM, or a JWK as
        JSON), that key in `x-ms-runtime.keys` with its `kid` and key_ops ["encrypt"].
        Valid from now for `lifetime` seconds."""
        if isinstance(lifetime, bool) or not isinstance(lifetime, int) \
                or not 0 < lifetime <= MAX_LIFETIME:
            raise DevAttestationError(f"The lifetime must be 1 to {MAX_LIFETIME} seconds.")
        body = {k: v for k, v in claims.items() if k not in RESERVED_CLAIMS}
        if runtime_public_key_pem is not None:
            runtime = body.get("x-ms-runtime")
            runtime = dict(runtime) if isinstance(runtime, dict) else {}
            runtime["keys"] = [runtime_jwk(runtime_public_key_pem)]
            body["x-ms-runtime"] = runtime
        now = int(self._clock.now())
        body.setdefault("x-ms-ver", "1.0")
        body.update({"iss": DEV_ISSUER, "iat": now, "nbf": now, "exp": now + lifetime,
                     "jti": secrets.token_hex(32)})
        pem, kid = self._key_pem(), self._public_jwk()["kid"]
        try:
            return jwt.encode(body, pem, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})
        except (TypeError, ValueError):
            raise DevAttestationError("The claims must be JSON values.") from None

    # ---- the key file ------------------------------------------------------------------
    def _public_jwk(self) -> dict[str, str]:
        return rsa_public_jwk(self._key_pem())

    def _key_pem(self) -> bytes:
        if self._pem is None:
            if not self._path.exists():
                self._create()
            self._pem = self._read()
        return self._pem

    def _create(self) -> None:
        directory = self._path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = directory / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            try:
                os.write(fd, generate_rsa_pem())
                os.fsync(fd)
            finally:
                os.close(fd)
            # link() publishes the whole file and never replaces one: of processes making
            # the key at once, one wins and the others read its key.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self._path)
        finally:
            tmp.unlink(missing_ok=True)

    def _read(self) -> bytes:
        path = self._path
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode):
                raise DevAttestationError(f"{path} is not a regular file.")
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise DevAttestationError(
                    f"{path} is readable by other users (mode {mode:o}): anyone who read "
                    f"it can mint attestation tokens. Restrict it (chmod 600 {path}) or "
                    "delete it to make a new key.")
            with open(path, "rb") as f:
                pem = f.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            raise DevAttestationError(f"{path} cannot be read ({exc.strerror}).") from None
        try:
            if len(pem) > MAX_KEY_FILE_BYTES:
                raise ValueError("too large")
            rsa_public_jwk(pem)
        except (ValueError, TypeError, AssertionError):
            raise DevAttestationError(
                f"{path} does not hold an RSA private key: delete it to make a new one "
                "(tokens it signed stop verifying).") from None
        return pem


def runtime_jwk(data: bytes) -> dict[str, Any]:
    """The runtime-key JWK of an RSA public key given as PEM (or as a JWK in JSON, whose
    `kid` is kept): `kid` (the key's RFC 7638 thumbprint when none is given), key_ops
    ["encrypt"], `n`, `e`."""
    try:
        key, kid = load_kek(data)
    except TransferError:
        raise DevAttestationError("The runtime key must be an RSA public key (PEM) or an "
                                  "RSA JWK (JSON).") from None
    if key.key_size < MIN_RSA_BITS:
        raise DevAttestationError(f"The runtime key must have {MIN_RSA_BITS} bits or more.")
    members = public_jwk(key)
    jwk = {"kty": "RSA", "n": members["n"], "e": members["e"]}
    return {"kty": "RSA", "kid": kid or jwk_thumbprint(jwk), "key_ops": ["encrypt"],
            "n": members["n"], "e": members["e"]}

