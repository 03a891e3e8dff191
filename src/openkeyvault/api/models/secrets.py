"""Secrets request bodies (secrets.json)."""

from __future__ import annotations

from openkeyvault.api.models.common import Attributes, RestoreParameters, attributes
from openkeyvault.api.models.wire import UNSET, Model, Tags, UnsetType, present
from openkeyvault.vault.requests import SecretUpdate


class SecretAttributes(Attributes, frozen=True):
    pass


class SecretSetParameters(Model, frozen=True, rename="camel"):
    value: str
    tags: Tags | None = None
    content_type: str | None = None
    attributes: SecretAttributes | None = None


class SecretUpdateParameters(Model, frozen=True, rename="camel"):
    content_type: str | None | UnsetType = UNSET
    attributes: SecretAttributes | None | UnsetType = UNSET
    tags: Tags | None | UnsetType = UNSET

    def to_request(self) -> SecretUpdate:
        return SecretUpdate(present(self.content_type), present(self.tags),
                            attributes(self.attributes))


class SecretRestoreParameters(RestoreParameters, frozen=True):
    pass

