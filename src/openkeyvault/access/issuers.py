"""Trusted external OpenID Connect issuers.

A trusted issuer is a name, its `iss` value (matched exactly, as OpenID Connect
requires), where its signing keys come from (an HTTPS JWKS URL or a local JWKS file) and,
optionally, an audience. Its tokens are accepted as client assertions of the federated
credentials that name it (workload identity), and — only if it has an audience — as
access tokens on the data plane, for the principals its subjects are mapped to.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from openkeyvault.access.jwks import (
    JwksCache,
    JwksError,
    check_jwks_url,
    parse_jwks,
    read_jwks_file,
)
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.identities import IdentityStore, IssuerConflict
from openkeyvault.storage.records import TrustedIssuerRecord

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_URL_CHARS = 600


class IssuerError(ValueError):
    """A refused change to the trusted issuers (message safe to show)."""


def check_issuer_url(issuer: str) -> str:
    parts = urlsplit(issuer)
    if len(issuer) > MAX_URL_CHARS or parts.scheme != "https" or not parts.netloc \
            or parts.username or parts.query or parts.fragment:
        raise IssuerError(f"An issuer must be an https URL of at most {MAX_URL_CHARS} "
                          "characters, without query or fragment.")
    return issuer


def check_audience(audience: str) -> str:
    if not audience or len(audience) > MAX_URL_CHARS or not audience.isprintable():
        raise IssuerError(f"An audience must be 1-{MAX_URL_CHARS} printable characters.")
    return audience


class TrustedIssuers:
    def __init__(self, store: IdentityStore, clock: Clock, jwks: JwksCache) -> None:
        self._store = store
        self._clock = clock
        self.jwks = jwks
        # (rows, by issuer, by name), replaced as a whole when the stored rows change
        self._view: tuple[tuple[TrustedIssuerRecord, ...] | None,
                          dict[str, TrustedIssuerRecord], dict[str, TrustedIssuerRecord]] = (
            None, {}, {})

    def add(self, name: str, issuer: str, *, jwks_url: str | None = None,
            jwks_file: Path | None = None, audience: str | None = None) -> TrustedIssuerRecord:
        if not NAME.fullmatch(name):
            raise IssuerError("An issuer's name must be 1-64 letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit.")
        check_issuer_url(issuer)
        if (jwks_url is None) == (jwks_file is None):
            raise IssuerError("Give exactly one of a JWKS URL and a JWKS file.")
        file_text: str | None = None
        try:
            if jwks_url is not None:
                check_jwks_url(jwks_url)
            else:
                assert jwks_file is not None
                path = jwks_file.expanduser().resolve()
                parse_jwks(read_jwks_file(path))
                file_text = str(path)
                if len(file_text) > 4096:
                    raise IssuerError("The JWKS file's path is too long.")
        except JwksError as exc:
            raise IssuerError(str(exc)) from None
        if audience is not None:
            check_audience(audience)
        record = TrustedIssuerRecord(name, issuer, jwks_url, file_text, audience,
                                     int(self._clock.now()))
        try:
            self._store.add_trusted_issuer(record)
        except IssuerConflict:
            raise IssuerError(f"An issuer named '{name}' or with issuer '{issuer}' is already "
                              "trusted.") from None
        return record

    def remove(self, name: str) -> bool:
        return self._store.delete_trusted_issuer(name)

    def all(self) -> tuple[TrustedIssuerRecord, ...]:
        return self._store.trusted_issuers()

    def _current(self) -> tuple[dict[str, TrustedIssuerRecord], dict[str, TrustedIssuerRecord]]:
        rows = self._store.trusted_issuers()
        view = self._view
        if rows is not view[0] and rows != view[0]:
            view = self._view = (rows, {r.issuer: r for r in rows}, {r.name: r for r in rows})
        return view[1], view[2]

    def by_issuer(self, iss: str) -> TrustedIssuerRecord | None:
        """The trusted issuer whose `iss` this is (memoised while storage is unchanged)."""
        return self._current()[0].get(iss)

    def by_name(self, name: str) -> TrustedIssuerRecord | None:
        return self._current()[1].get(name)
