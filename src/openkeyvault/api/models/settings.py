"""Managed HSM settings request bodies (settings.json)."""

from __future__ import annotations

from openkeyvault.api.models.wire import Model


class UpdateSettingRequest(Model, frozen=True):
    """PATCH /settings/{setting-name}: the new value, a string whatever the setting's
    type (a boolean's is "true" or "false"); required."""

    value: str
