"""A lighter way in for commands that only read (`okv vault list|show`, `okv hsm list|show`,
`okv role list`): the storage and the one or two services they use, without composing the
whole deployment.

Deployment.open imports and builds every service (tokens, certificates, keys, ...): about
two fifths of such a command's time went to importing modules it never used. The storage
is opened the same way (open_storage: the same permission and key-material checks, the
same refusals).

Used only where a server of this very version has started (its `server.json` record
says so, cli/settings.py) and the deployment has its tenant: that start did the one-time work a
full open does (the default vault, placing vaults stored without a placement, the dev
identity's roles). Elsewhere `open_readonly` answers None and callers open the
deployment.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from openkeyvault.cli.settings import recorded_by_this_version
from openkeyvault.config import Settings

if TYPE_CHECKING:
    from openkeyvault.access.rbac import RoleAssignments
    from openkeyvault.ops.clock import Clock
    from openkeyvault.storage.barrier import Barrier
    from openkeyvault.storage.db import Engines
    from openkeyvault.storage.repository import Repository
    from openkeyvault.vault.managedhsms import ManagedHsmService
    from openkeyvault.vault.vaults import VaultService


@dataclass
class ReadOnly:
    """The parts of the deployment that read-only commands use (same attribute names as
    Deployment's, so that code written for one takes the other)."""

    settings: Settings
    engines: Engines
    repo: Repository
    barrier: Barrier
    clock: Clock
    tenant_id: str

    @cached_property
    def vaults(self) -> VaultService:
        from openkeyvault.storage.placement import PlacementStore
        from openkeyvault.vault.vaults import VaultService

        return VaultService(self.repo, self.barrier, self.clock, PlacementStore(self.engines),
                            self.tenant_id, self.settings.resource_uri)

    @cached_property
    def managed_hsms(self) -> ManagedHsmService:
        from openkeyvault.storage.placement import PlacementStore
        from openkeyvault.vault.managedhsms import ManagedHsmService

        def read_only(object_id: str, scope: str) -> object:
            raise RuntimeError("a read-only view assigns no role")

        return ManagedHsmService(self.repo, self.barrier, self.clock,
                                 PlacementStore(self.engines), self.tenant_id,
                                 lambda name: self.settings.resource_uri(name, "managedhsm"),
                                 read_only)

    @cached_property
    def rbac(self) -> RoleAssignments:
        from openkeyvault.access.definitions import RoleDefinitions
        from openkeyvault.access.rbac import RoleAssignments

        return RoleAssignments(self.repo, self.clock, RoleDefinitions(self.repo, self.clock))

    def close(self) -> None:
        self.engines.dispose()


def open_readonly(settings: Settings) -> ReadOnly | None:
    """The lighter view of the deployment, or None where a full open must come first."""
    if not recorded_by_this_version(settings.data_dir):
        return None
    from openkeyvault.ops.clock import deployment_clock
    from openkeyvault.storage.datadir import open_storage

    engines, repo, barrier = open_storage(settings.data_dir, settings.db_path,
                                          settings.database_url)
    tenant_id = repo.get_meta("tenant_id")
    if tenant_id is None:
        engines.dispose()
        return None
    clock = deployment_clock(settings.data_dir, settings.dev)
    return ReadOnly(settings, engines, repo, barrier, clock, tenant_id)


@contextmanager
def reading(settings: Settings) -> Iterator[Any]:
    """The lighter view where it can be used, else the full deployment; closed after."""
    view: Any = open_readonly(settings)
    if view is None:
        from openkeyvault.deployment import Deployment

        view = Deployment.open(settings)
    try:
        yield view
    finally:
        view.close()
