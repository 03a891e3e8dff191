"""Typed requests of the Certificates API (certificates, policies, issuers, contacts), named
after the REST spec's models (certificates.json).

`api/models/certificates.py` decodes the wire JSON into these: every field has its JSON
type, required fields are present, unknown fields are dropped. The services check what the
values mean (key type against curve, sizes, EKUs, the subject's syntax, lifetime action
rules, issuer limits...).

A policy is merged over the stored one field by field, so its parts keep `UNSET` for a
field the client did not send, apart from one sent as null (null resets a field to its
default; absent keeps the stored value). `sent()` gives the fields sent, under the names
the stored policy uses (the wire names).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from openkeyvault.vault.requests import NO_ATTRIBUTES, UNSET, ObjectAttributes, Unset

# ---- the certificate policy -----------------------------------------------------------------


@dataclass(frozen=True)
class KeyProperties:
    exportable: bool | None | Unset = UNSET
    kty: str | None | Unset = UNSET
    key_size: int | None | Unset = UNSET
    reuse_key: bool | None | Unset = UNSET
    crv: str | None | Unset = UNSET


@dataclass(frozen=True)
class SecretProperties:
    content_type: str | None | Unset = field(default=UNSET, metadata={"wire": "contentType"})


@dataclass(frozen=True)
class SubjectAlternativeNames:
    emails: list[str] | None | Unset = UNSET
    dns_names: list[str] | None | Unset = UNSET
    upns: list[str] | None | Unset = UNSET
    ip_addresses: list[str] | None | Unset = field(default=UNSET,
                                                   metadata={"wire": "ipAddresses"})
    uris: list[str] | None | Unset = UNSET


@dataclass(frozen=True)
class X509CertificateProperties:
    subject: str | None | Unset = UNSET
    ekus: list[str] | None | Unset = UNSET
    sans: SubjectAlternativeNames | None | Unset = UNSET
    key_usage: list[str] | None | Unset = UNSET
    validity_months: int | None | Unset = UNSET


@dataclass(frozen=True)
class IssuerParameters:
    name: str | None | Unset = UNSET
    cty: str | None | Unset = UNSET
    cert_transparency: bool | None | Unset = UNSET


@dataclass(frozen=True)
class Trigger:
    lifetime_percentage: int | None | Unset = UNSET
    days_before_expiry: int | None | Unset = UNSET


@dataclass(frozen=True)
class Action:
    action_type: str | None | Unset = UNSET


@dataclass(frozen=True)
class LifetimeAction:
    trigger: Trigger | None | Unset = UNSET
    action: Action | None | Unset = UNSET


@dataclass(frozen=True)
class PolicyAttributes:
    """The part of a policy's CertificateAttributes that the policy keeps."""

    enabled: bool | None | Unset = UNSET


@dataclass(frozen=True)
class PlatformManaged:
    """The platform manages the certificate for the user (api-version 2026-04-01);
    `metadata` is free-form JSON."""

    certificate_usage: str | None | Unset = field(default=UNSET,
                                                  metadata={"wire": "certificateUsage"})
    metadata: dict[str, Any] | None | Unset = UNSET


@dataclass(frozen=True)
class CertificatePolicy:
    """CertificatePolicy as a client sends it (id is read-only and dropped)."""

    key_props: KeyProperties | None | Unset = UNSET
    secret_props: SecretProperties | None | Unset = UNSET
    x509_props: X509CertificateProperties | None | Unset = UNSET
    lifetime_actions: list[LifetimeAction] | None | Unset = UNSET
    issuer: IssuerParameters | None | Unset = UNSET
    attributes: PolicyAttributes | None | Unset = UNSET
    platform_managed: PlatformManaged | None | Unset = field(
        default=UNSET, metadata={"wire": "platformManaged"})


def sent(part: Any) -> dict[str, Any]:
    """The fields of a policy part the client sent (null included), nested parts as dicts,
    under the stored policy's names: what a merge over the stored policy lays on top."""
    if part is None or part is UNSET:
        return {}
    out: dict[str, Any] = {}
    for attr, name in _names(type(part)):
        v = getattr(part, attr)
        if v is UNSET:
            continue
        if isinstance(v, list):  # of strings, or of lifetime actions
            v = [x if isinstance(x, str) else sent(x) for x in v]
        elif v is not None and not isinstance(v, _SCALARS):  # a nested part
            v = sent(v)
        out[name] = v
    return out


_SCALARS = (str, int, float, dict)  # bool is an int; a dict is free-form JSON
_NAMES: dict[type, tuple[tuple[str, str], ...]] = {}


def _names(cls: type) -> tuple[tuple[str, str], ...]:
    """(attribute, stored name) of each field of a policy part, worked out once."""
    got = _NAMES.get(cls)
    if got is None:
        got = _NAMES[cls] = tuple((f.name, f.metadata.get("wire", f.name))
                                  for f in fields(cls))
    return got


# ---- certificates --------------------------------------------------------------------------
@dataclass(frozen=True)
class CertificateCreate:
    """CertificateCreateParameters (of the attributes only `enabled` counts: the validity
    comes from the certificate)."""

    policy: CertificatePolicy | None = None
    attributes: ObjectAttributes = NO_ATTRIBUTES
    tags: dict[str, str] | None = None
    preserve_order: bool | None = None


@dataclass(frozen=True)
class CertificateImport:
    """CertificateImportParameters: `value` is PEM text, base64 PEM or base64 PFX."""

    value: str
    pwd: str | None = None
    policy: CertificatePolicy | None = None
    attributes: ObjectAttributes = NO_ATTRIBUTES
    tags: dict[str, str] | None = None
    preserve_order: bool | None = None


@dataclass(frozen=True)
class CertificateUpdate:
    """CertificateUpdateParameters: tags null clears them, absent keeps them."""

    policy: CertificatePolicy | None = None
    attributes: ObjectAttributes = NO_ATTRIBUTES
    tags: dict[str, str] | None | Unset = UNSET


@dataclass(frozen=True)
class CertificateMerge:
    """CertificateMergeParameters; attributes and tags None where not sent (the operation's
    own then apply)."""

    x5c: list[str]
    attributes: ObjectAttributes | None = None
    tags: dict[str, str] | None = None


# ---- issuers and contacts -------------------------------------------------------------------
@dataclass(frozen=True)
class IssuerCredentials:
    account_id: str | None = None
    pwd: str | None = None


@dataclass(frozen=True)
class AdministratorDetails:
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class OrganizationDetails:
    id: str | None = None
    admin_details: list[AdministratorDetails] | None = None


@dataclass(frozen=True)
class CertificateIssuer:
    """CertificateIssuerSetParameters or CertificateIssuerUpdateParameters (null and absent
    mean the same for an issuer: not given)."""

    provider: str | None = None
    credentials: IssuerCredentials | None = None
    org_details: OrganizationDetails | None = None
    enabled: bool | None = None


@dataclass(frozen=True)
class CertificateContact:
    """One Contact as sent; the service requires the email."""

    email: str | None = None
    name: str | None = None
    phone: str | None = None
