"""Managed HSM security domain request bodies (securitydomain.json)."""

from __future__ import annotations

from openkeyvault.api.models.wire import UNSET, Model, UnsetType


class SecurityDomainJsonWebKey(Model, frozen=True):
    """A wrapping key: the spec lists kid, kty, key_ops, alg, x5c, x5t#S256, n and e as
    required, but the Azure CLI sends no `kid`; what a share needs is the certificate of
    `x5c[0]` (an RSA key), checked by the domain."""

    kty: str | UnsetType = UNSET
    x5c: list[str] | UnsetType = UNSET
    n: str | UnsetType = UNSET
    e: str | UnsetType = UNSET


class CertificateInfoObject(Model, frozen=True):
    """POST /securitydomain/download: 3 to 10 wrapping keys and the quorum (default 2)."""

    certificates: list[SecurityDomainJsonWebKey]
    required: int = 2


class SecurityDomainObject(Model, frozen=True):
    """POST /securitydomain/upload: the restore blob (`az keyvault security-domain
    restore-blob`'s output) as a string."""

    value: str
