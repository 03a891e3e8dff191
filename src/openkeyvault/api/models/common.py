"""Models more than one collection shares: object attributes and the restore body."""

from __future__ import annotations

from openkeyvault.api.models.wire import UNSET, Model, UnixTime, UnsetType, present, unix_time
from openkeyvault.vault.requests import NO_ATTRIBUTES, ObjectAttributes


class Attributes(Model, frozen=True):
    """The writable attributes of SecretAttributes, KeyAttributes and CertificateAttributes
    (created, updated, recoveryLevel... are read-only and ignored when sent)."""

    enabled: bool | None | UnsetType = UNSET
    nbf: UnixTime | None | UnsetType = UNSET
    exp: UnixTime | None | UnsetType = UNSET

    def to_request(self) -> ObjectAttributes:
        return ObjectAttributes(present(self.enabled), unix_time(self.nbf), unix_time(self.exp))


def attributes(a: Attributes | None | UnsetType) -> ObjectAttributes:
    """No attributes (absent or null) sends none of them."""
    return a.to_request() if isinstance(a, Attributes) else NO_ATTRIBUTES


class RestoreParameters(Model, frozen=True):
    """SecretRestoreParameters, KeyRestoreParameters and CertificateRestoreParameters share
    this shape: the backup blob, base64url."""

    value: str
