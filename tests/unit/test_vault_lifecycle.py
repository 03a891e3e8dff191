"""The vault lifecycle in the domain service, on a manual clock: soft delete freezes a
vault, the scheduled job purges it when its retention ends (not before, and not under
purge protection before then), and a purged vault's values do not open again, even from
a copy of the database taken before the purge."""

from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openkeyvault.api.models import decode
from openkeyvault.api.models.management import VaultCreateOrUpdateParameters
from openkeyvault.config import Settings
from openkeyvault.deployment import Deployment
from openkeyvault.ops.clock import ManualClock
from openkeyvault.storage.barrier import BarrierError, vault_owner
from openkeyvault.vault.context import Caller
from openkeyvault.vault.controlrequests import VaultCreateOrUpdate
from openkeyvault.vault.errors import Conflict, Forbidden, NotFound
from openkeyvault.vault.lifecycle import DAY
from openkeyvault.vault.secrets import _context

NOW = 1_800_000_000.0
SUB = str(uuid.uuid4())


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def deployment(tmp_path: Path, clock: ManualClock) -> Iterator[Deployment]:
    d = Deployment.open(Settings(data_dir=tmp_path / "data", dev=True), clock=clock)
    yield d
    d.close()


def body(d: Deployment, **props: Any) -> VaultCreateOrUpdate:
    """A vault PUT body as the management API decodes it."""
    wire = {"location": "local", "properties": {
        "tenantId": d.tenant_id, "sku": {"family": "A", "name": "standard"}, **props}}
    return decode(json.dumps(wire).encode(), VaultCreateOrUpdateParameters).to_request()


def make(d: Deployment, name: str, **props: Any) -> Caller:
    _, created = d.vaults.create_or_update(SUB, "rg", name, body(d, **props))
    assert created
    vault = d.vaults.get(name)
    assert vault is not None
    caller = Caller(d.dev_principal, vault)
    d.secrets.set(caller, "s", "the-value")
    return caller


def test_deleted_vault_is_frozen_then_purged_when_retention_ends(
        deployment: Deployment, clock: ManualClock) -> None:
    d = deployment
    caller = make(d, "frozen1", softDeleteRetentionInDays=7)
    d.secrets.delete(caller, "s")  # an object in its own retention (7 days)
    d.vaults.delete(SUB, "rg", "frozen1")
    assert d.vaults.get("frozen1") is None
    assert d.repo.list_vaults() == [v for v in d.repo.list_vaults() if v.name != "frozen1"]
    clock.advance(7 * DAY - 1)
    jobs = d.scheduled_jobs()
    assert jobs["deleted-vaults"]() == 0
    assert jobs["purge-expired"]() == 0
    assert d.vaults.get_deleted("local", "frozen1", SUB)["name"] == "frozen1"
    # The deleted object's own retention passed, but the vault is deleted: it is frozen.
    clock.advance(1)
    assert jobs["purge-expired"]() == 0
    assert jobs["deleted-vaults"]() == 1
    with pytest.raises(NotFound) as e:
        d.vaults.get_deleted("local", "frozen1", SUB)
    assert e.value.code == "DeletedVaultNotFound"
    assert d.repo.data_key(vault_owner(caller.vault.id)) is None
    assert d.vaults.check_name_availability("frozen1")["nameAvailable"] is True


def test_purge_protection_holds_until_the_scheduled_date(
        deployment: Deployment, clock: ManualClock) -> None:
    d = deployment
    make(d, "guarded1", softDeleteRetentionInDays=7, enablePurgeProtection=True)
    d.vaults.delete(SUB, "rg", "guarded1")
    with pytest.raises(Forbidden) as e:
        d.vaults.purge_deleted("local", "guarded1", SUB)
    assert e.value.inner == "MethodNotAllowedWithPurgeProtection"
    assert d.vaults.get_deleted("local", "guarded1", SUB)["name"] == "guarded1"
    clock.advance(7 * DAY)
    assert d.scheduled_jobs()["deleted-vaults"]() == 1
    assert d.vaults.list_deleted(SUB) == []


def test_recover_restores_values_and_refuses_a_live_vault(deployment: Deployment) -> None:
    d = deployment
    make(d, "back1")
    with pytest.raises(Conflict):
        d.vaults.recover(SUB, "rg", "back1")
    d.vaults.delete(SUB, "rg", "back1")
    with pytest.raises(Conflict) as e:
        d.vaults.create_or_update(SUB, "rg", "back1", body(d))
    assert e.value.inner == "ConflictError"
    d.vaults.recover(SUB, "rg", "back1")
    vault = d.vaults.get("back1")
    assert vault is not None
    assert d.secrets.get(Caller(d.dev_principal, vault), "s", None).value == "the-value"


def test_purged_values_do_not_open_from_an_older_database_copy(
        deployment: Deployment, tmp_path: Path) -> None:
    d = deployment
    caller = make(d, "shred1")
    rec = d.repo.get_version(caller.vault.id, "secrets", "s", None)
    assert rec is not None and rec.sealed is not None and rec.key_version is not None
    copy = tmp_path / "before-purge.db"
    with sqlite3.connect(d.settings.db_path) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    d.vaults.delete(SUB, "rg", "shred1")
    d.vaults.purge_deleted("local", "shred1", SUB)
    assert d.repo.get_version(caller.vault.id, "secrets", "s", None) is None
    # The old copy still holds the rows: beside today's keys (the same data directory),
    # it does not open.
    data2 = tmp_path / "restored"
    shutil.copytree(d.settings.data_dir, data2)
    restored_db = data2 / d.settings.db_path.name
    for suffix in ("-wal", "-shm"):
        Path(f"{restored_db}{suffix}").unlink(missing_ok=True)
    shutil.copy(copy, restored_db)
    again = Deployment.open(Settings(data_dir=data2, dev=True), clock=ManualClock(NOW))
    try:
        old = again.repo.get_version(caller.vault.id, "secrets", "s", None)
        assert old is not None and old.sealed == rec.sealed
        with pytest.raises(BarrierError):
            again.barrier.open(vault_owner(caller.vault.id), rec.key_version,
                               _context(caller.vault.id, "s", rec.version), rec.sealed)
    finally:
        again.close()
