"""Keys request bodies (keys.json)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import msgspec

from openkeyvault.api.models.common import Attributes, RestoreParameters, attributes
from openkeyvault.api.models.wire import (
    UNSET,
    Int32,
    Model,
    Tags,
    UnsetType,
    base64url,
    present,
)
from openkeyvault.vault import requests as r


class KeyAttributes(Attributes, frozen=True):
    exportable: bool | None = None

    def to_request(self) -> r.ObjectAttributes:
        return replace(super().to_request(), exportable=self.exportable)


class KeyReleasePolicy(Model, frozen=True, rename="camel"):
    content_type: str | None = None
    immutable: bool | None = None
    data: str | None = None  # base64url

    def to_request(self) -> r.KeyReleasePolicy:
        return r.KeyReleasePolicy(self.content_type, self.immutable, self.data)


def _release(p: KeyReleasePolicy | None) -> r.KeyReleasePolicy | None:
    return p.to_request() if p is not None else None


KeyOps = list[str]


class KeyCreateParameters(Model, frozen=True):
    kty: str
    key_size: Int32 | None = None
    public_exponent: Int32 | None = None
    key_ops: KeyOps | None = None
    attributes: KeyAttributes | None = None
    tags: Tags | None = None
    crv: str | None = None
    release_policy: KeyReleasePolicy | None = None

    def to_request(self) -> r.KeyCreate:
        return r.KeyCreate(self.kty, self.key_size, self.public_exponent, self.crv,
                           self.key_ops, attributes(self.attributes), self.tags,
                           _release(self.release_policy))


class JsonWebKey(Model, frozen=True):
    kid: str | None = None
    kty: str | None = None
    key_ops: KeyOps | None = None
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

    def to_request(self) -> r.JsonWebKey:
        return r.JsonWebKey(**{m: getattr(self, m) for m in r.JWK_MEMBERS})


class KeyImportParameters(Model, frozen=True):
    key: JsonWebKey
    hsm: bool | None = msgspec.field(default=None, name="Hsm")
    attributes: KeyAttributes | None = None
    tags: Tags | None = None
    release_policy: KeyReleasePolicy | None = None

    def to_request(self) -> r.KeyImport:
        return r.KeyImport(self.key.to_request(), self.hsm, attributes(self.attributes),
                           self.tags, _release(self.release_policy))


class KeyReleaseParameters(Model, frozen=True):
    target: str
    nonce: str | None = None
    enc: str | None = None

    def to_request(self) -> r.KeyRelease:
        return r.KeyRelease(self.target, self.nonce, self.enc)


class KeyUpdateParameters(Model, frozen=True):
    key_ops: KeyOps | None = None
    attributes: KeyAttributes | None = None
    tags: Tags | None | UnsetType = UNSET
    release_policy: KeyReleasePolicy | None = None

    def to_request(self) -> r.KeyUpdate:
        return r.KeyUpdate(self.key_ops, attributes(self.attributes), present(self.tags),
                           _release(self.release_policy))


class KeyOperationsParameters(Model, frozen=True):
    """encrypt, decrypt, wrapkey, unwrapkey. iv, aad and tag are for AES (oct) keys; an
    RSA key's operation ignores them."""

    alg: str
    value: str
    iv: str | None = None
    aad: str | None = None
    tag: str | None = None

    def to_request(self) -> r.KeyOperation:
        return r.KeyOperation(
            self.alg, base64url(self.value, "value"),
            iv=None if self.iv is None else base64url(self.iv, "iv"),
            aad=None if self.aad is None else base64url(self.aad, "aad"),
            tag=None if self.tag is None else base64url(self.tag, "tag"))


class KeySignParameters(Model, frozen=True):
    alg: str
    value: str

    def to_request(self) -> r.KeyOperation:
        return r.KeyOperation(self.alg, base64url(self.value, "value"))


class KeyVerifyParameters(Model, frozen=True):
    alg: str
    digest: str
    value: str

    def to_request(self) -> r.KeyOperation:
        return r.KeyOperation(self.alg, base64url(self.value, "value"),
                              base64url(self.digest, "digest"))


class KeyRestoreParameters(RestoreParameters, frozen=True):
    pass


class GetRandomBytesRequest(Model, frozen=True):
    count: Annotated[int, msgspec.Meta(ge=1, le=128)]


class LifetimeActionsTrigger(Model, frozen=True, rename="camel"):
    time_after_create: str | None = None
    time_before_expiry: str | None = None


class LifetimeActionsType(Model, frozen=True):
    type: str | None = None


class LifetimeActions(Model, frozen=True):
    trigger: LifetimeActionsTrigger | None = None
    action: LifetimeActionsType | None = None

    def to_request(self) -> r.LifetimeAction:
        t = self.trigger
        return r.LifetimeAction(
            r.LifetimeTrigger(t.time_after_create, t.time_before_expiry) if t else None,
            self.action.type if self.action else None, self.action is not None)


class KeyRotationPolicyAttributes(Model, frozen=True, rename="camel"):
    expiry_time: str | None = None


class KeyRotationPolicy(Model, frozen=True, rename="camel"):
    """As set by a client (id, created and updated are read-only and ignored)."""

    lifetime_actions: list[LifetimeActions] | None = None
    attributes: KeyRotationPolicyAttributes | None = None

    def to_request(self) -> r.KeyRotationPolicy:
        return r.KeyRotationPolicy(
            [a.to_request() for a in self.lifetime_actions or []],
            self.attributes.expiry_time if self.attributes else None)
