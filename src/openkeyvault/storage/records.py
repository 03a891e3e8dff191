"""Plain records that storage hands to the domain layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class VaultRecord:
    id: int
    name: str
    kind: str
    sku: str
    retention_days: int
    purge_protection: bool
    created: int
    # The access-governing ARM properties as stored (JSON text); None: the defaults.
    properties: str | None = None


@dataclass
class VersionRecord:
    name: str
    version: str
    created: int
    updated: int
    enabled: bool
    nbf: int | None = None
    exp: int | None = None
    content_type: str | None = None
    tags: dict[str, str] | None = None
    props: dict[str, Any] = field(default_factory=dict)
    sealed: bytes | None = None
    key_version: int | None = None
    seq: int = 0
    deleted_date: int | None = None
    scheduled_purge_date: int | None = None


class NameConflict(Exception):
    """The name is taken: live (`deleted` False) or soft-deleted (`deleted` True)."""

    def __init__(self, deleted: bool) -> None:
        super().__init__("deleted" if deleted else "exists")
        self.deleted = deleted



@dataclass(frozen=True)
class EventRecord:
    vault_id: int
    type: str
    object_name: str
    version: str
    time: int


@dataclass(frozen=True)
class PolicyRow:
    """An object carrying a policy, with its vault and latest version."""

    vault: VaultRecord
    policy: dict[str, Any] | None
    latest: VersionRecord


@dataclass(frozen=True)
class PrincipalRecord:
    object_id: str
    client_id: str
    tenant_id: str
    display_name: str
    kind: str
    created: int


@dataclass(frozen=True)
class CredentialRecord:
    id: str
    object_id: str
    kind: str
    hint: str
    expires: int
    created: int
    sealed: bytes
    key_version: int


@dataclass(frozen=True)
class RoleAssignmentRecord:
    id: str
    scope: str
    role_definition_id: str
    principal_id: str
    created: int


@dataclass(frozen=True)
class RoleDefinitionRecord:
    """A custom role definition; `permissions` and `assignable_scopes` in the wire shape."""

    id: str
    role_name: str
    description: str
    permissions: tuple[dict[str, list[str]], ...]
    assignable_scopes: tuple[str, ...]
    created: int


@dataclass(frozen=True)
class SigningKeyRecord:
    """A token signing key's public part; the sealed private key is read only to sign."""

    kid: str
    created: int
    retired: int | None
    public_jwk: str


@dataclass(frozen=True)
class TrustedIssuerRecord:
    name: str
    issuer: str
    jwks_url: str | None
    jwks_file: str | None
    audience: str | None
    created: int


@dataclass(frozen=True)
class IssuerRecord:
    """A vault's certificate issuer; the password only sealed (`sealed`, `key_version`)."""

    name: str
    provider: str
    enabled: bool
    created: int
    updated: int
    account_id: str | None = None
    sealed: bytes | None = None
    key_version: int | None = None
    org_details: dict[str, Any] | None = None
