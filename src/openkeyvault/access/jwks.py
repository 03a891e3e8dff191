"""Signing keys of trusted external issuers, from a JWKS URL or a local JWKS file.

A URL is fetched over HTTPS only (no redirects, a timeout, a size cap) and kept in
memory; it is fetched again when it is older than `MAX_AGE_SECONDS`, or when a token
names a key id it does not hold — at most once per `MIN_REFRESH_SECONDS` per issuer, so
tokens with made-up key ids cannot make the server hammer the issuer. A file is read
again whenever it changes. Only RSA (2048 bits or more) and EC P-256 signature keys are
kept; their algorithms are RS256 and ES256.

A fetch is blocking I/O: on the event loop, `key` raises `WouldBlock` instead, and the
caller asks again from a worker thread with `may_block=True`.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  (host names are encoded in worker threads: load it now)
import http.client
import json
import logging
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jwt import PyJWK, PyJWTError

from openkeyvault import __version__
from openkeyvault.crypto.signing import jwk_thumbprint
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.records import TrustedIssuerRecord

log = logging.getLogger("openkeyvault.jwks")

MAX_JWKS_BYTES = 256 * 1024
MAX_KEYS = 100
FETCH_TIMEOUT_SECONDS = 5.0
MAX_AGE_SECONDS = 3600
MIN_REFRESH_SECONDS = 60
ALGORITHMS = ("RS256", "ES256")
MIN_RSA_BITS = 2048


class WouldBlock(Exception):
    """Answering needs blocking I/O: ask again off the event loop with may_block=True."""


class JwksError(ValueError):
    """A JWKS document or source is unusable (message safe to show)."""


def parse_jwks(raw: bytes) -> dict[str, PyJWK]:
    """Usable signature keys of a JWKS document by key id (a key without `kid` goes by its
    thumbprint). JwksError if the document is malformed or holds no usable key."""
    if len(raw) > MAX_JWKS_BYTES:
        raise JwksError(f"The JWKS document is larger than {MAX_JWKS_BYTES} bytes.")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise JwksError("The JWKS document is not JSON.") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise JwksError("The JWKS document has no 'keys' array.")
    out: dict[str, PyJWK] = {}
    for entry in keys[:MAX_KEYS]:
        found = _usable(entry)
        if found is not None:
            out[found[0]] = found[1]
    if not out:
        raise JwksError("The JWKS document holds no RSA (2048+ bits) or EC P-256 signing key.")
    return out


def _usable(entry: Any) -> tuple[str, PyJWK] | None:
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
        return None
    if entry.get("kty") not in ("RSA", "EC") or "d" in entry:
        return None
    if entry.get("alg") is not None and entry.get("alg") not in ALGORITHMS:
        return None
    try:
        jwk = PyJWK(entry)
        kid = entry.get("kid")
        kid = kid if isinstance(kid, str) and kid else jwk_thumbprint(entry)
    except (PyJWTError, KeyError, TypeError, ValueError):
        return None
    if jwk.algorithm_name not in ALGORITHMS:
        return None
    if entry["kty"] == "RSA" and getattr(jwk.key, "key_size", 0) < MIN_RSA_BITS:
        return None
    return kid[:256], jwk


def check_jwks_url(url: str) -> str:
    parts = urlsplit(url)
    if len(url) > 1000 or parts.scheme != "https" or not parts.netloc or parts.username:
        raise JwksError("A JWKS URL must be an https URL of at most 1000 characters.")
    return url


def read_jwks_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JWKS_BYTES + 1)
    except OSError:
        raise JwksError(f"The JWKS file '{str(path)[:200]}' cannot be read.") from None
    if len(raw) > MAX_JWKS_BYTES:
        raise JwksError(f"The JWKS file is larger than {MAX_JWKS_BYTES} bytes.")
    return raw


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch_jwks(url: str, context: ssl.SSLContext) -> bytes:
    """GET a JWKS URL: HTTPS, no redirects, a timeout and a size cap."""
    check_jwks_url(url)
    opener = urllib.request.build_opener(_NoRedirect(),
                                         urllib.request.HTTPSHandler(context=context))
    request = urllib.request.Request(url, headers={  # noqa: S310 (https only, checked above)
        "Accept": "application/json", "User-Agent": f"openkeyvault/{__version__}"})
    try:
        with opener.open(request, timeout=FETCH_TIMEOUT_SECONDS) as response:
            if response.status != 200:
                raise JwksError(f"The JWKS URL answered {response.status}.")
            raw: bytes = response.read(MAX_JWKS_BYTES + 1)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError,
            LookupError) as exc:
        raise JwksError(f"The JWKS URL could not be fetched ({type(exc).__name__}).") from None
    if len(raw) > MAX_JWKS_BYTES:
        raise JwksError(f"The JWKS document is larger than {MAX_JWKS_BYTES} bytes.")
    return raw


@dataclass
class _Entry:
    source: str
    keys: dict[str, PyJWK] = field(default_factory=dict)
    fetched: float | None = None  # clock time of the last successful load
    attempted: float | None = None  # clock time of the last attempt
    file_stamp: tuple[int, int] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class JwksCache:
    """Per process: each trusted issuer's keys."""

    def __init__(self, clock: Clock, ca_file: Path | None = None) -> None:
        self._clock = clock
        self._ca_file = ca_file
        self._context: ssl.SSLContext | None = None
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def _ssl(self) -> ssl.SSLContext:
        if self._context is None:
            cafile = str(self._ca_file) if self._ca_file and self._ca_file.exists() else None
            self._context = ssl.create_default_context(cafile=cafile)
        return self._context

    def _entry(self, issuer: TrustedIssuerRecord) -> _Entry:
        source = issuer.jwks_url or f"file:{issuer.jwks_file}"
        entry = self._entries.get(issuer.name)
        if entry is None or entry.source != source:
            with self._lock:
                entry = self._entries.get(issuer.name)
                if entry is None or entry.source != source:
                    entry = self._entries[issuer.name] = _Entry(source)
        return entry

    def key(self, issuer: TrustedIssuerRecord, kid: str | None, *,
            may_block: bool = False) -> PyJWK | None:
        """The issuer's key `kid` (None: its only key), loading the keys if needed."""
        entry = self._entry(issuer)
        if issuer.jwks_file is not None:
            self._load_file(entry, Path(issuer.jwks_file))
        elif self._url_due(entry, kid):
            if not may_block:
                raise WouldBlock()
            with entry.lock:
                if self._url_due(entry, kid):
                    self._load_url(entry, issuer.jwks_url or "")
        return self._pick(entry.keys, kid)

    @staticmethod
    def _pick(keys: dict[str, PyJWK], kid: str | None) -> PyJWK | None:
        if kid is None:
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    def _url_due(self, entry: _Entry, kid: str | None) -> bool:
        now = self._clock.now()
        if entry.attempted is not None and now - entry.attempted < MIN_REFRESH_SECONDS:
            return False
        if entry.fetched is None or now - entry.fetched >= MAX_AGE_SECONDS:
            return True
        return self._pick(entry.keys, kid) is None

    def _load_url(self, entry: _Entry, url: str) -> None:
        entry.attempted = self._clock.now()
        try:
            entry.keys = parse_jwks(fetch_jwks(url, self._ssl()))
            entry.fetched = entry.attempted
        except JwksError as exc:
            log.warning("jwks fetch failed: %s", exc)

    def _load_file(self, entry: _Entry, path: Path) -> None:
        try:
            st = path.stat()
        except OSError:
            entry.keys, entry.file_stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == entry.file_stamp:
            return
        with entry.lock:
            try:
                entry.keys = parse_jwks(read_jwks_file(path))
            except JwksError as exc:
                log.warning("jwks file unusable: %s", exc)
                entry.keys = {}
            entry.file_stamp = stamp
            entry.fetched = self._clock.now()
