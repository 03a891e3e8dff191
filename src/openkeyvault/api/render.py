"""Domain objects → wire JSON, with identifiers built from the Host the client used."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from openkeyvault.vault.models import Attributes, KeyBundle, Page, RotationPolicy, SecretBundle


def attributes(a: Attributes) -> dict[str, Any]:
    out: dict[str, Any] = {"enabled": a.enabled}
    if a.nbf is not None:
        out["nbf"] = a.nbf
    if a.exp is not None:
        out["exp"] = a.exp
    out.update(created=a.created, updated=a.updated, recoveryLevel=a.recovery_level,
               recoverableDays=a.recoverable_days)
    return out


def secret(base: str, b: SecretBundle, *, versioned: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if b.value is not None:
        out["value"] = b.value
    out["id"] = f"{base}/secrets/{b.name}/{b.version}" if versioned else f"{base}/secrets/{b.name}"
    if b.content_type is not None:
        out["contentType"] = b.content_type
    out["attributes"] = attributes(b.attributes)
    if b.tags is not None:
        out["tags"] = b.tags
    if b.managed:
        out["kid"] = f"{base}/keys/{b.name}/{b.version}"
        out["managed"] = True
    if b.deleted is not None:
        out = {
            "recoveryId": f"{base}/deletedsecrets/{b.name}",
            "deletedDate": b.deleted.deleted_date,
            "scheduledPurgeDate": b.deleted.scheduled_purge_date,
            **out,
        }
    return out


def page(base: str, path: str, api_version: str, maxresults: str | None, p: Page,
         items: list[dict[str, Any]], keep: dict[str, str] | None = None) -> dict[str, Any]:
    """A page of a list; the next link carries the query options that shape the list
    (`maxresults`, and those in `keep`, e.g. includePending)."""
    next_link = None
    if p.next_token:
        next_link = f"{base}{path}?api-version={quote(api_version)}&$skiptoken={p.next_token}"
        if maxresults:
            next_link += f"&maxresults={quote(maxresults)}"
        for name, value in (keep or {}).items():
            next_link += f"&{quote(name)}={quote(value)}"
    return {"value": items, "nextLink": next_link}


def key_id(base: str, name: str, version: str | None = None) -> str:
    """A key's identifier (kid), with its version when one is given."""
    return f"{base}/keys/{name}/{version}" if version else f"{base}/keys/{name}"


def key(base: str, b: KeyBundle, *, versioned: bool = True) -> dict[str, Any]:
    kid = key_id(base, b.name, b.version if versioned else None)
    out: dict[str, Any] = {}
    if b.deleted is not None:
        out.update(recoveryId=f"{base}/deletedkeys/{b.name}",
                   deletedDate=b.deleted.deleted_date,
                   scheduledPurgeDate=b.deleted.scheduled_purge_date)
    out["key"] = {"kid": kid, "kty": b.kty, "key_ops": b.key_ops, **b.public}
    out["attributes"] = attributes(b.attributes)
    if b.exportable:
        out["attributes"]["exportable"] = True
    if b.attestation is not None:
        out["attributes"]["attestation"] = {
            "certificatePemFile": b.attestation.certificate_pem_file,
            "privateKeyAttestation": b.attestation.private_key_attestation,
            "publicKeyAttestation": b.attestation.public_key_attestation,
            "version": b.attestation.version,
        }
    if b.tags is not None:
        out["tags"] = b.tags
    if b.managed:
        out["managed"] = True
    if b.release_policy is not None:
        out["release_policy"] = b.release_policy
    return out


def key_item(base: str, b: KeyBundle, *, versioned: bool) -> dict[str, Any]:
    """KeyItem / DeletedKeyItem: list entries carry `kid`, not the JWK."""
    full = key(base, b, versioned=versioned)
    full["kid"] = full.pop("key")["kid"]
    full.pop("release_policy", None)
    return full


def rotation_policy(base: str, p: RotationPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {}
    attrs: dict[str, Any] = {}
    if p.created is not None:
        out["id"] = f"{base}/keys/{p.name}/rotationpolicy"
        if p.expiry_time is not None:
            attrs["expiryTime"] = p.expiry_time
        attrs.update(created=p.created, updated=p.updated)
    out["lifetimeActions"] = p.lifetime_actions
    out["attributes"] = attrs
    return out
