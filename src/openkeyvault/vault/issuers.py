"""Certificate issuers: a vault's named issuers (provider, credentials, organisation).

An issuer whose provider is `BUILTIN_PROVIDER` ("OpenKeyVault") is the deployment's own
issuing CA: certificates whose policy names it are signed at once. Any other provider is
kept as given and treated as an outside CA: certificate creation stops at the CSR and the
certificate is completed by merging the signed certificate. The issuer names "Self" and
"Unknown" are reserved (self-signed; CSR and merge without an issuer).

The credentials' password is stored sealed under the vault's data key and is never
returned (as in Azure, where `pwd` is write-only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from openkeyvault.access.authorize import Authorizer
from openkeyvault.crypto.authority import BUILTIN_PROVIDER
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.barrier import Barrier, vault_owner
from openkeyvault.storage.certificate_issuers import CertificateIssuerStore
from openkeyvault.storage.records import IssuerRecord, VaultRecord
from openkeyvault.vault import names, paging
from openkeyvault.vault.certrequests import (
    CertificateIssuer,
    IssuerCredentials,
    OrganizationDetails,
)
from openkeyvault.vault.context import Caller, authorize_operation
from openkeyvault.vault.errors import BadParameter, NotFound
from openkeyvault.vault.models import Page

__all__ = ["BUILTIN_PROVIDER", "IssuerBundle", "IssuerService", "ResolvedIssuer"]

RESERVED = frozenset({"self", "unknown"})
MAX_ISSUERS = 100  # per vault
MAX_PROVIDER_CHARS = 128
MAX_ACCOUNT_ID_CHARS = 256
MAX_PASSWORD_CHARS = 1024
MAX_ORG_ID_CHARS = 256
MAX_ADMINS = 20
MAX_NAME_CHARS = 256
MAX_EMAIL_CHARS = 254
MAX_PHONE_CHARS = 64
NOT_FOUND_CODE = "CertificateIssuerNotFound"
NO_CREDENTIALS = IssuerCredentials()

EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")
_ADMIN_FIELDS = (("first_name", MAX_NAME_CHARS), ("last_name", MAX_NAME_CHARS),
                 ("email", MAX_EMAIL_CHARS), ("phone", MAX_PHONE_CHARS))


@dataclass(frozen=True)
class IssuerBundle:
    """IssuerBundle as the spec names it, without the password."""

    name: str
    provider: str
    enabled: bool
    created: int
    updated: int
    account_id: str | None = None
    org_details: dict[str, Any] | None = None


@dataclass(frozen=True)
class ResolvedIssuer:
    """What a policy's issuer name means: kind "self", "unknown", "builtin" (the
    deployment's CA) or "external" (an outside CA: CSR, then merge)."""

    kind: str
    name: str
    provider: str | None


def _context(vault_id: int, name_lc: str) -> bytes:
    return f"okv/certificate-issuer/{vault_id}/{name_lc}".encode()


def text(value: str | None, field: str, limit: int, *, required: bool = False) -> str | None:
    """A printable string of at most `limit` characters (None when absent and optional)."""
    if value is None and not required:
        return None
    if not value or len(value) > limit or not _PRINTABLE.fullmatch(value):
        raise BadParameter(f"'{field}' must be a non-empty string of at most {limit} "
                           "printable characters.")
    return value


def check_email(value: str | None, field: str) -> str | None:
    email = text(value, field, MAX_EMAIL_CHARS)
    if email is not None and not EMAIL.fullmatch(email):
        raise BadParameter(f"'{field}' is not a valid email address.")
    return email


def _org_details(org: OrganizationDetails | None) -> dict[str, Any] | None:
    """The stored org_details: the fields given, each checked."""
    if org is None:
        return None
    out: dict[str, Any] = {}
    org_id = text(org.id, "org_details.id", MAX_ORG_ID_CHARS)
    if org_id is not None:
        out["id"] = org_id
    admins = org.admin_details
    if admins is not None:
        if len(admins) > MAX_ADMINS:
            raise BadParameter(f"'org_details.admin_details' must be a list of at most "
                               f"{MAX_ADMINS} administrators.")
        checked = []
        for a in admins:
            entry: dict[str, str] = {}
            for key, limit in _ADMIN_FIELDS:
                field = f"org_details.admin_details[].{key}"
                v = check_email(getattr(a, key), field) if key == "email" \
                    else text(getattr(a, key), field, limit)
                if v is not None:
                    entry[key] = v
            checked.append(entry)
        out["admin_details"] = checked
    return out


def _bundle(rec: IssuerRecord) -> IssuerBundle:
    return IssuerBundle(name=rec.name, provider=rec.provider, enabled=rec.enabled,
                        created=rec.created, updated=rec.updated, account_id=rec.account_id,
                        org_details=rec.org_details)


def not_found(name: str) -> NotFound:
    return NotFound(f"Issuer not found: {name[:127]}", code=NOT_FOUND_CODE)


class IssuerService:
    """Per-vault issuers. Data actions: certificatecas/read (get, list), write (set,
    update), delete; access policies: getissuers, listissuers, setissuers, deleteissuers
    (manageissuers covers all four)."""

    def __init__(self, store: CertificateIssuerStore, barrier: Barrier, authorizer: Authorizer,
                 clock: Clock) -> None:
        self._store = store
        self._barrier = barrier
        self._authz = authorizer
        self._clock = clock

    def _check(self, caller: Caller, operation: str, name: str | None = None) -> None:
        path = f"/certificates/issuers/{name}" if name else "/certificates/issuers"
        authorize_operation(self._authz, caller, operation, path)

    def _seal(self, vault_id: int, name_lc: str, password: str) -> tuple[int, bytes]:
        return self._barrier.seal(vault_owner(vault_id), _context(vault_id, name_lc),
                                  password.encode("utf-8"))

    # ---- operations -----------------------------------------------------------------
    def list(self, caller: Caller, maxresults: str | None, skiptoken: str | None) -> Page:
        self._check(caller, "CertificateIssuersList")
        size = paging.page_size(maxresults)
        after = paging.position(skiptoken, "issuer", str)
        recs = self._store.list_issuers(caller.vault.id, after, size + 1)
        more = len(recs) > size
        recs = recs[:size]
        token = paging.encode_token({"issuer": recs[-1].name.lower()}) if more else None
        return Page([_bundle(r) for r in recs], token)

    def get(self, caller: Caller, name: str) -> IssuerBundle:
        self._check(caller, "CertificateIssuerGet", name)
        rec = self._store.get(caller.vault.id, name.lower()) \
            if names.OBJECT_NAME.fullmatch(name) else None
        if rec is None:
            raise not_found(name)
        return _bundle(rec)

    def set(self, caller: Caller, name: str, request: CertificateIssuer) -> IssuerBundle:
        """SetCertificateIssuer: create the issuer, or replace every field of an existing one."""
        self._check(caller, "CertificateIssuerSet", name)
        self._check_name(name)
        provider = text(request.provider, "provider", MAX_PROVIDER_CHARS, required=True)
        assert provider is not None
        creds = request.credentials or NO_CREDENTIALS
        account_id = text(creds.account_id, "credentials.account_id", MAX_ACCOUNT_ID_CHARS)
        password = text(creds.pwd, "credentials.pwd", MAX_PASSWORD_CHARS)
        org = _org_details(request.org_details)
        enabled = request.enabled
        vid, now = caller.vault.id, int(self._clock.now())
        sealed = self._seal(vid, name.lower(), password) if password is not None else None
        rec = IssuerRecord(
            name=name, provider=provider, enabled=True if enabled is None else enabled,
            created=now, updated=now, account_id=account_id,
            key_version=sealed[0] if sealed else None, sealed=sealed[1] if sealed else None,
            org_details=org,
        )
        _, stored = self._store.put(vid, rec, MAX_ISSUERS)
        if stored is None:
            raise BadParameter(f"A vault holds at most {MAX_ISSUERS} certificate issuers; "
                               "delete one first.")
        return _bundle(stored)

    def update(self, caller: Caller, name: str, request: CertificateIssuer) -> IssuerBundle:
        """UpdateCertificateIssuer: change only the fields sent (within `credentials` and
        `org_details` too: an absent `pwd` keeps the stored password)."""
        self._check(caller, "CertificateIssuerUpdate", name)
        changes: dict[str, Any] = {}
        if request.provider is not None:
            changes["provider"] = text(request.provider, "provider", MAX_PROVIDER_CHARS)
        creds = request.credentials or NO_CREDENTIALS
        if creds.account_id is not None:
            changes["account_id"] = text(creds.account_id, "credentials.account_id",
                                         MAX_ACCOUNT_ID_CHARS)
        password = text(creds.pwd, "credentials.pwd", MAX_PASSWORD_CHARS)
        org = _org_details(request.org_details)
        enabled = request.enabled
        if enabled is not None:
            changes["enabled"] = enabled
        if not names.OBJECT_NAME.fullmatch(name):
            raise not_found(name)
        vid = caller.vault.id
        if password is not None:
            changes["key_version"], changes["sealed"] = self._seal(vid, name.lower(), password)
        changes["updated"] = int(self._clock.now())

        def apply(current: IssuerRecord) -> IssuerRecord:
            merged = dict(current.__dict__, **changes)
            if org is not None:
                merged["org_details"] = {**(current.org_details or {}), **org}
            return IssuerRecord(**merged)

        rec = self._store.change(vid, name.lower(), apply)
        if rec is None:
            raise not_found(name)
        return _bundle(rec)

    def delete(self, caller: Caller, name: str) -> IssuerBundle:
        self._check(caller, "CertificateIssuerDelete", name)
        rec = self._store.delete(caller.vault.id, name.lower()) \
            if names.OBJECT_NAME.fullmatch(name) else None
        if rec is None:
            raise not_found(name)
        return _bundle(rec)

    # ---- for the certificate service -------------------------------------------------
    def resolve(self, vault: VaultRecord, issuer_name: str) -> ResolvedIssuer:
        """What a certificate policy's issuer name means in `vault` (no authorization: the
        caller's certificate operation was authorized). BadParameter for an issuer that is
        not configured or is disabled."""
        lowered = issuer_name.lower() if isinstance(issuer_name, str) else ""
        if lowered == "self":
            return ResolvedIssuer("self", "Self", None)
        if lowered == "unknown":
            return ResolvedIssuer("unknown", "Unknown", None)
        rec = self._store.get(vault.id, lowered) \
            if names.OBJECT_NAME.fullmatch(lowered) else None
        if rec is None:
            raise BadParameter(f"The certificate issuer '{str(issuer_name)[:127]}' was not "
                               "found in this vault.")
        if not rec.enabled:
            raise BadParameter(f"The certificate issuer '{rec.name}' is disabled.")
        kind = "builtin" if rec.provider.lower() == BUILTIN_PROVIDER.lower() else "external"
        return ResolvedIssuer(kind, rec.name, rec.provider)

    @staticmethod
    def _check_name(name: str) -> None:
        names.check_object_name(name)
        if name.lower() in RESERVED:
            raise BadParameter(f"The issuer name '{name}' is reserved: 'Self' and 'Unknown' "
                               "name the self-signed and the manual (CSR and merge) flows.")
