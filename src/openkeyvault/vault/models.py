"""Domain objects, named after the REST spec's bundles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Attributes:
    enabled: bool
    created: int
    updated: int
    recovery_level: str
    recoverable_days: int
    nbf: int | None = None
    exp: int | None = None


@dataclass(frozen=True)
class DeletedInfo:
    deleted_date: int
    scheduled_purge_date: int


@dataclass(frozen=True)
class SecretBundle:
    name: str
    version: str
    attributes: Attributes
    value: str | None = None
    content_type: str | None = None
    tags: dict[str, str] | None = None
    deleted: DeletedInfo | None = None
    managed: bool = False  # the secret of a certificate (its kid names the certificate's key)


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_token: str | None = None



@dataclass(frozen=True)
class KeyBundle:
    name: str
    version: str
    kty: str
    key_ops: list[str]
    public: dict[str, Any]
    attributes: Attributes
    tags: dict[str, str] | None = None
    deleted: DeletedInfo | None = None
    managed: bool = False  # the key of a certificate
    attestation: KeyAttestation | None = None  # GetKeyAttestation only
    exportable: bool = False
    release_policy: dict[str, Any] | None = None  # {"contentType", "data", "immutable"}


@dataclass(frozen=True)
class KeyAttestation:
    """KeyAttestation: each member base64url (docs/hsm.md, "Key attestation")."""

    certificate_pem_file: str
    private_key_attestation: str
    public_key_attestation: str
    version: str


@dataclass(frozen=True)
class KeyOperationResult:
    name: str
    version: str
    value: bytes
    # AES (oct keys) encrypt: the iv (GCM: the one made for it), the GCM tag and aad
    iv: bytes | None = None
    tag: bytes | None = None
    aad: bytes | None = None


@dataclass(frozen=True)
class RotationPolicy:
    name: str
    lifetime_actions: list[dict[str, Any]]
    expiry_time: str | None
    created: int | None
    updated: int | None
