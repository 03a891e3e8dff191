"""Typed requests the domain accepts, named after the REST spec's parameter models.

`api/` decodes the wire JSON into these (right JSON types, required fields present,
numbers in range, unknown fields dropped); the services then check what the values
mean (key type against curve, sizes, tag limits...). No raw wire dict reaches `vault/`.
The Certificates API's requests (policies, issuers, contacts) are in `certrequests.py`.

`UNSET` marks a field the client did not send, where that differs from sending null:
a PATCH changes only what it names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from openkeyvault.vault import names

T = TypeVar("T")


class Unset(enum.Enum):
    UNSET = "UNSET"


UNSET: Literal[Unset.UNSET] = Unset.UNSET


@dataclass(frozen=True)
class ObjectAttributes:
    """The writable part of SecretAttributes / KeyAttributes."""

    enabled: bool | None | Unset = UNSET
    nbf: int | None | Unset = UNSET
    exp: int | None | Unset = UNSET
    exportable: bool | None = None  # keys only

    def initial(self) -> tuple[bool, int | None, int | None]:
        """(enabled, nbf, exp) for a new version: enabled unless the client said false."""
        enabled = self.enabled if isinstance(self.enabled, bool) else True
        return (enabled, names.check_time(_value(self.nbf), "nbf"),
                names.check_time(_value(self.exp), "exp"))

    def changes(self) -> dict[str, Any]:
        """Column changes for an update: each attribute sent; `enabled: null` changes nothing,
        `nbf`/`exp: null` clear the limit."""
        out: dict[str, Any] = {}
        if isinstance(self.enabled, bool):
            out["enabled"] = self.enabled
        for f in ("nbf", "exp"):
            v = getattr(self, f)
            if v is not UNSET:
                out[f] = names.check_time(v, f)
        return out


def _value(v: T | None | Unset) -> T | None:
    return None if v is UNSET else v


NO_ATTRIBUTES = ObjectAttributes()


# ---- secrets ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SecretUpdate:
    """SecretUpdateParameters: only the fields sent change (null clears)."""

    content_type: str | None | Unset = UNSET
    tags: dict[str, str] | None | Unset = UNSET
    attributes: ObjectAttributes = NO_ATTRIBUTES


# ---- keys ------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyReleasePolicy:
    content_type: str | None = None
    immutable: bool | None = None
    data: str | None = None  # base64url of the policy document


@dataclass(frozen=True)
class KeyCreate:
    """KeyCreateParameters."""

    kty: str
    key_size: int | None = None
    public_exponent: int | None = None
    crv: str | None = None
    key_ops: list[str] | None = None
    attributes: ObjectAttributes = NO_ATTRIBUTES
    tags: dict[str, str] | None = None
    release_policy: KeyReleasePolicy | None = None


JWK_MEMBERS = ("kid", "kty", "key_ops", "n", "e", "d", "dp", "dq", "qi", "p", "q", "k",
               "key_hsm", "crv", "x", "y")


@dataclass(frozen=True)
class JsonWebKey:
    """A JSON web key to import; members are base64url strings as on the wire (the
    keystore decodes and checks them)."""

    kty: str | None = None
    key_ops: list[str] | None = None
    kid: str | None = None
    n: str | None = None
    e: str | None = None
    d: str | None = None
    dp: str | None = None
    dq: str | None = None
    qi: str | None = None
    p: str | None = None
    q: str | None = None
    k: str | None = None
    key_hsm: str | None = None
    crv: str | None = None
    x: str | None = None
    y: str | None = None

    def members(self) -> dict[str, Any]:
        """The members present, as the keystore's JWK import reads them."""
        return {m: v for m in JWK_MEMBERS if (v := getattr(self, m)) is not None}


@dataclass(frozen=True)
class KeyImport:
    """KeyImportParameters."""

    key: JsonWebKey
    hsm: bool | None = None
    attributes: ObjectAttributes = NO_ATTRIBUTES
    tags: dict[str, str] | None = None
    release_policy: KeyReleasePolicy | None = None


@dataclass(frozen=True)
class KeyRelease:
    """KeyReleaseParameters: the target's attestation token, a nonce, the key wrapping."""

    target: str
    nonce: str | None = None
    enc: str | None = None


@dataclass(frozen=True)
class KeyUpdate:
    """KeyUpdateParameters: key_ops null or absent keeps the operations; tags null clears."""

    key_ops: list[str] | None = None
    attributes: ObjectAttributes = NO_ATTRIBUTES
    tags: dict[str, str] | None | Unset = UNSET
    release_policy: KeyReleasePolicy | None = None


@dataclass(frozen=True)
class KeyOperation:
    """KeyOperationsParameters, KeySignParameters or KeyVerifyParameters, decoded."""

    alg: str
    value: bytes
    digest: bytes | None = None  # verify only
    # AES (oct keys) encrypt / decrypt: the CBC iv; the GCM iv, aad and tag (decrypt)
    iv: bytes | None = None
    aad: bytes | None = None
    tag: bytes | None = None


@dataclass(frozen=True)
class LifetimeTrigger:
    time_after_create: str | None = None
    time_before_expiry: str | None = None


@dataclass(frozen=True)
class LifetimeAction:
    """One of a rotation policy's lifetimeActions; None where the client left a part out."""

    trigger: LifetimeTrigger | None = None
    action: str | None = None  # "Rotate" or "Notify" (any case)
    has_action: bool = False


@dataclass(frozen=True)
class KeyRotationPolicy:
    """KeyRotationPolicy as a client sets it."""

    lifetime_actions: list[LifetimeAction] = field(default_factory=list)
    expiry_time: str | None = None
