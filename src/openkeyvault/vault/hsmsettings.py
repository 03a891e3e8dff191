"""A managed HSM pool's settings (settings.json): the pool-wide switches Azure defines,
each with its type and default, listed, read and changed on the pool's data plane.

Azure defines one (its SDKs' live tests list exactly one, false on a new pool):
`AllowKeyManagementOperationsThroughARM`, boolean, default false: whether Azure Resource
Manager (the portal, template deployments) may manage the pool's keys on a user's behalf.
It is kept and reported here as on Azure; this service's management API serves no keys
of a pool, so the value changes nothing else.

- A value travels as a string typed by `type` (SettingTypeEnum: only "boolean"); a
  boolean takes "true" or "false", in lower case (Azure refuses "True": the SDK's own
  tests note it), else 400 BadParameter.
- A name matches whatever its case (Key Vault names are case-insensitive) and is
  answered in Azure's spelling; a name Azure does not define is 404 SettingNotFound.
- A setting never changed has its default. The values changed live in the pool's
  properties document (the JSON its vault row carries, read with the pool at no extra
  cost) under `settings`, written in one transaction that reads and rewrites the
  document (`Repository.update_vault_properties`); the management API's changes of a
  pool keep that member (vault/managedhsms.py).
- Each operation is a row of vault/operations.py (SettingList, SettingGet,
  SettingUpdate) decided by the pool's local RBAC at the pool's `/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from openkeyvault.access.authorize import Authorizer
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.repository import Repository
from openkeyvault.vault.context import Caller, authorize_operation
from openkeyvault.vault.errors import BadParameter, NotFound, VaultNotFound
from openkeyvault.vault.managedhsms import KIND as POOL_KIND
from openkeyvault.vault.properties import MAX_PROPERTIES_CHARS

BOOLEAN = "boolean"  # SettingTypeEnum
MEMBER = "settings"  # the properties document's member holding the values changed
PATH = "/"  # settings belong to the whole pool
NOT_FOUND_CODE = "SettingNotFound"
MAX_NAME_ECHO = 127  # the most of an unknown name a refusal repeats

# The values each type accepts, exactly (case included).
VALUES: dict[str, tuple[str, ...]] = {BOOLEAN: ("true", "false")}


@dataclass(frozen=True)
class SettingDefinition:
    """A setting Azure defines: its name as Azure spells it, its type and its default."""

    name: str
    type: str
    default: str


DEFINITIONS: tuple[SettingDefinition, ...] = (
    SettingDefinition("AllowKeyManagementOperationsThroughARM", BOOLEAN, "false"),
)
_BY_NAME = {d.name.lower(): d for d in DEFINITIONS}


@dataclass(frozen=True)
class Setting:
    """One setting as the wire shows it (Setting: name, value, type)."""

    name: str
    value: str
    type: str


def definition(name: str) -> SettingDefinition:
    """The setting named `name` (any case), or 404 SettingNotFound."""
    found = _BY_NAME.get(name.lower())
    if found is None:
        names = ", ".join(d.name for d in DEFINITIONS)
        raise NotFound(f"Setting '{name[:MAX_NAME_ECHO]}' was not found: this managed HSM's "
                       f"settings are {names}.", NOT_FOUND_CODE)
    return found


def check_value(d: SettingDefinition, value: str) -> str:
    """`value` if the setting's type accepts it, else 400 BadParameter (the value is not
    repeated)."""
    accepted = VALUES[d.type]
    if value not in accepted:
        raise BadParameter(f"The value of setting '{d.name}' must be "
                           f"{' or '.join(repr(v) for v in accepted)} (type {d.type}).")
    return value


def _changed(text: str | None) -> dict[str, str]:
    """The values changed, by name, in a stored properties document."""
    doc = json.loads(text) if text else {}
    stored = doc.get(MEMBER) if isinstance(doc, dict) else None
    return {str(k): str(v) for k, v in stored.items()} if isinstance(stored, dict) else {}


def _setting(d: SettingDefinition, changed: dict[str, str]) -> Setting:
    return Setting(d.name, changed.get(d.name, d.default), d.type)


class HsmSettingsService:
    """The settings of the pool a caller addresses, decided by the pool's `authorizer`."""

    def __init__(self, repo: Repository, authorizer: Authorizer, clock: Clock) -> None:
        self._repo = repo
        self._authz = authorizer
        self._clock = clock

    def _check(self, caller: Caller, operation: str) -> None:
        if caller.vault.kind != POOL_KIND:  # a vault's host serves none (defense in depth)
            raise NotFound("Settings belong to managed HSMs; a vault has none.")
        authorize_operation(self._authz, caller, operation, PATH)

    def list(self, caller: Caller) -> list[Setting]:
        self._check(caller, "SettingList")
        changed = _changed(caller.vault.properties)
        return [_setting(d, changed) for d in DEFINITIONS]

    def get(self, caller: Caller, name: str) -> Setting:
        self._check(caller, "SettingGet")
        return _setting(definition(name), _changed(caller.vault.properties))

    def update(self, caller: Caller, name: str, value: str) -> Setting:
        self._check(caller, "SettingUpdate")
        d = definition(name)
        check_value(d, value)

        def change(current: str | None) -> str:
            doc = json.loads(current) if current else {}
            doc[MEMBER] = {**_changed(current), d.name: value}
            text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
            if len(text) > MAX_PROPERTIES_CHARS:
                raise BadParameter("The managed HSM properties are too large.")
            return text

        if self._repo.update_vault_properties(caller.vault.id, change,
                                              int(self._clock.now())) is None:
            raise VaultNotFound(f"The managed HSM '{caller.vault.name}' was not found.")
        return Setting(d.name, value, d.type)
