"""Crypto-shredding: a purged vault's values stay undecryptable even from a copy of the
database taken before the purge, with the root key file and the remaining keyring —
while every other vault in that copy still opens."""

from __future__ import annotations

import base64
import sqlite3
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault.models import Sku, VaultCreateOrUpdateParameters, VaultProperties
from sqlalchemy import select

from openkeyvault.config import Settings
from openkeyvault.crypto import aead
from openkeyvault.deployment import Deployment
from openkeyvault.ops.clock import ManualClock
from openkeyvault.storage.barrier import Barrier, BarrierError, kek_wrapped, vault_owner
from openkeyvault.storage.db import open_sqlite
from openkeyvault.storage.keyring import KEYRING_DIR, MAGIC, FileKeyRing
from openkeyvault.storage.repository import Repository
from openkeyvault.storage.schema import data_keys, objects, versions
from openkeyvault.storage.seal import dev_seal_root_key
from openkeyvault.vault import keys as keys_module
from openkeyvault.vault import secrets as secrets_module
from openkeyvault.vault.context import Caller
from openkeyvault.vault.errors import Forbidden, NotFound
from openkeyvault.vault.requests import KeyCreate
from tests.sdk.clients import vault_client
from tests.security.conftest import open_deployment
from tests.support.server import DevServer

NOW = 1_700_000_000
ARM_SCOPES = ["https://management.azure.com/.default"]
CONTEXT = {"secrets": secrets_module._context, "keys": keys_module._context}


@dataclass(frozen=True)
class SealedRow:
    vault_id: int
    collection: str
    name_lc: str
    version: str
    key_version: int
    sealed: bytes


def copy_database(db: Path, to: Path) -> Path:
    """A consistent copy of a live SQLite database (WAL included), as a backup tool takes."""
    src = sqlite3.connect(db)
    dst = sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return to


def sealed_rows(db: Path, vault_id: int) -> list[SealedRow]:
    engines = open_sqlite(db)
    try:
        with engines.read.connect() as c:
            rows = c.execute(
                select(objects.c.vault_id, objects.c.collection, objects.c.name_lc,
                       versions.c.version, versions.c.key_version, versions.c.sealed)
                .select_from(versions.join(objects, versions.c.object_id == objects.c.id))
                .where(objects.c.vault_id == vault_id, versions.c.sealed.is_not(None),
                       objects.c.collection.in_(tuple(CONTEXT))))
            return [SealedRow(*r) for r in rows]
    finally:
        engines.dispose()


def open_from_copy(copy: Path, data_dir: Path, rows: list[SealedRow]) -> list[bytes | None]:
    """Try every sealed value of `rows` in the copy with the root key file and the keyring
    as they are now: the plaintext, or None where the barrier refused."""
    root = dev_seal_root_key(data_dir / "root.key")
    engines = open_sqlite(copy)
    try:
        barrier = Barrier(root, Repository(engines), FileKeyRing(data_dir / KEYRING_DIR, root))
        out: list[bytes | None] = []
        for r in rows:
            try:
                out.append(barrier.open(vault_owner(r.vault_id), r.key_version,
                                        CONTEXT[r.collection](r.vault_id, r.name_lc, r.version),
                                        r.sealed))
            except BarrierError:
                out.append(None)
        return out
    finally:
        engines.dispose()


def data_key_rows(db: Path, owner: str) -> list[bytes]:
    engines = open_sqlite(db)
    try:
        with engines.read.connect() as c:
            return list(c.execute(select(data_keys.c.wrapped)
                                  .where(data_keys.c.owner == owner)).scalars())
    finally:
        engines.dispose()


def fill(d: Deployment, caller: Caller, mark: str) -> None:
    for i in range(3):
        d.secrets.set(caller, f"secret-{i}", f"VALUE-{mark}-{i}")
    d.secrets.set(caller, "secret-0", f"VALUE-{mark}-0-v2")  # a second version
    d.keys.create(caller, "key-ec", KeyCreate(kty="EC", crv="P-256"))
    d.keys.create(caller, "key-rsa", KeyCreate(kty="RSA", key_size=2048))


def purge(d: Deployment, name: str) -> None:
    """Delete then purge through the vault service, as the management API does."""
    subscription = d.vaults.default_subscription()
    d.vaults.delete(subscription, "default", name)
    d.vaults.purge_deleted("local", name, subscription)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment.open(Settings(data_dir=tmp_path / "data"), clock=ManualClock(NOW))
    yield d
    d.close()


@pytest.fixture
def two_vaults(deployment: Deployment) -> tuple[Caller, Caller]:
    d = deployment
    doomed = Caller(d.dev_principal, d.vaults.create("shred-doomed"))
    kept = Caller(d.dev_principal, d.vaults.create("shred-kept"))
    fill(d, doomed, "DOOMED")
    fill(d, kept, "KEPT")
    return doomed, kept


def check_copy(copy: Path, data_dir: Path, doomed_id: int, kept_id: int) -> None:
    doomed_rows, kept_rows = sealed_rows(copy, doomed_id), sealed_rows(copy, kept_id)
    assert len(doomed_rows) == 6 and len(kept_rows) == 6  # 4 secret versions + 2 keys each
    # The copy still holds the purged vault's wrapped data key; it no longer opens.
    assert [kek_wrapped(w) for w in data_key_rows(copy, vault_owner(doomed_id))] == [True]
    assert open_from_copy(copy, data_dir, doomed_rows) == [None] * len(doomed_rows)
    kept_values = open_from_copy(copy, data_dir, kept_rows)
    assert None not in kept_values
    assert b"VALUE-KEPT-1" in kept_values


def test_a_database_copy_from_before_the_purge_does_not_open_the_purged_vault(
        deployment: Deployment, two_vaults: tuple[Caller, Caller], tmp_path: Path) -> None:
    d = deployment
    doomed, kept = two_vaults
    data_dir = d.settings.data_dir
    copy = copy_database(d.settings.db_path, tmp_path / "before-purge.db")
    # Before the purge the copy opens both vaults: the test below is not vacuous.
    assert None not in open_from_copy(copy, data_dir, sealed_rows(copy, doomed.vault.id))

    purge(d, "shred-doomed")

    assert not (data_dir / KEYRING_DIR / f"vault.{doomed.vault.id}.kek").exists()
    assert (data_dir / KEYRING_DIR / f"vault.{kept.vault.id}.kek").exists()
    assert data_key_rows(d.settings.db_path, vault_owner(doomed.vault.id)) == []
    check_copy(copy, data_dir, doomed.vault.id, kept.vault.id)
    # The live deployment still serves the kept vault, and no longer knows the purged one.
    assert d.secrets.get(kept, "secret-1", None).value == "VALUE-KEPT-1"
    assert d.vaults.get("shred-doomed") is None


def test_destroy_owner_alone_shreds_the_vault_in_the_copy(
        deployment: Deployment, two_vaults: tuple[Caller, Caller], tmp_path: Path) -> None:
    """The barrier's part of a purge, without the rows' removal."""
    d = deployment
    doomed, kept = two_vaults
    copy = copy_database(d.settings.db_path, tmp_path / "before-purge.db")
    d.barrier.destroy_owner(vault_owner(doomed.vault.id))
    check_copy(copy, d.settings.db_path.parent, doomed.vault.id, kept.vault.id)
    # The live rows of the vault are sealed for good, too.
    live = sealed_rows(d.settings.db_path, doomed.vault.id)
    assert len(live) == 6
    assert open_from_copy(d.settings.db_path, d.settings.data_dir, live) == [None] * 6


def test_a_deleted_vault_keeps_its_key_material_and_recovers(
        deployment: Deployment, two_vaults: tuple[Caller, Caller]) -> None:
    """Soft delete shreds nothing: recover brings every value back."""
    d = deployment
    doomed, _ = two_vaults
    subscription = d.vaults.default_subscription()
    d.vaults.delete(subscription, "default", "shred-doomed")
    assert (d.settings.data_dir / KEYRING_DIR / f"vault.{doomed.vault.id}.kek").exists()
    d.vaults.recover(subscription, "default", "shred-doomed")
    back = Caller(d.dev_principal, d.vaults.ensure("shred-doomed"))
    assert d.secrets.get(back, "secret-2", None).value == "VALUE-DOOMED-2"


def test_purge_under_purge_protection_is_refused_and_shreds_nothing(
        deployment: Deployment, tmp_path: Path) -> None:
    d = deployment
    protected = Caller(d.dev_principal, d.vaults.create("shred-protected",
                                                        purge_protection=True))
    d.secrets.set(protected, "s", "PROTECTED-VALUE")
    subscription = d.vaults.default_subscription()
    d.vaults.delete(subscription, "default", "shred-protected")
    kek = d.settings.data_dir / KEYRING_DIR / f"vault.{protected.vault.id}.kek"
    before = kek.read_bytes()
    with pytest.raises(Forbidden) as refused:
        d.vaults.purge_deleted("local", "shred-protected", subscription)
    assert refused.value.inner == "MethodNotAllowedWithPurgeProtection"
    assert kek.read_bytes() == before
    assert d.vaults.get_deleted("local", "shred-protected", subscription)["name"] == \
        "shred-protected"
    rows = sealed_rows(d.settings.db_path, protected.vault.id)
    assert open_from_copy(d.settings.db_path, d.settings.data_dir, rows) == [b"PROTECTED-VALUE"]


# ---- through the real server ---------------------------------------------------------------

def test_purged_through_the_running_server_the_copy_stays_closed(
        server: DevServer, use_server_env: Callable[[DevServer], None],
        resolve_localhost: None, tmp_path: Path) -> None:
    use_server_env(server)
    name = f"shred{uuid.uuid4().hex[:10]}"
    created = server.okv("vault", "create", name)
    assert created.returncode == 0, created.stderr
    client = vault_client(server, name)
    mark = uuid.uuid4().hex
    for i in range(3):
        client.set_secret(f"s{i}", f"SERVER-{mark}-{i}")
    dev = vault_client(server)
    dev.set_secret(f"shred-witness-{mark[:8]}", f"WITNESS-{mark}")
    assert client.get_secret("s1").value == f"SERVER-{mark}-1"  # cached by the server now

    copy = copy_database(server.data_dir / "okv.db", tmp_path / "server-copy.db")
    d = open_deployment(server)
    try:
        vault = d.vaults.get(name)
        dev_vault = d.vaults.get("dev")
        assert vault is not None and dev_vault is not None
        purge(d, name)
        with pytest.raises(NotFound):
            d.vaults.get_deleted("local", name, d.vaults.default_subscription())
    finally:
        d.close()

    # The data plane no longer answers for the purged vault.
    with pytest.raises(HttpResponseError) as gone:
        client.get_secret("s1")
    assert gone.value.status_code == 404
    # Its values in the copy stay closed; the dev vault's still open.
    purged_rows = sealed_rows(copy, vault.id)
    assert len(purged_rows) == 3
    assert open_from_copy(copy, server.data_dir, purged_rows) == [None] * 3
    witness = [r for r in sealed_rows(copy, dev_vault.id)
               if r.name_lc == f"shred-witness-{mark[:8]}"]
    assert open_from_copy(copy, server.data_dir, witness) == [f"WITNESS-{mark}".encode()]
    assert dev.get_secret(f"shred-witness-{mark[:8]}").value == f"WITNESS-{mark}"


def test_the_servers_keyring_is_private_and_its_keks_are_nowhere_else(
        server: DevServer) -> None:
    name = f"shredkr{uuid.uuid4().hex[:8]}"
    created = server.okv("vault", "create", name)
    assert created.returncode == 0, created.stderr
    d = open_deployment(server)
    try:
        vault = d.vaults.get(name)
        assert vault is not None
    finally:
        d.close()
    ring = server.data_dir / KEYRING_DIR
    assert stat.S_IMODE(ring.stat().st_mode) == 0o700
    path = ring / f"vault.{vault.id}.kek"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    root = dev_seal_root_key(server.data_dir / "root.key")
    kek = aead.open_sealed(root, path.read_bytes()[len(MAGIC):],
                           f"okv/kek/{vault_owner(vault.id)}".encode())
    assert len(kek) == 32
    haystacks = {p.name: p.read_bytes() for p in server.data_dir.glob("okv.db*")}
    if server.log_path is not None:
        haystacks["log"] = server.log_path.read_bytes()
    for where, data in haystacks.items():
        for needle in (kek, kek.hex().encode(), base64.b64encode(kek)):
            assert needle not in data, where


def test_purged_through_the_management_api_the_copy_stays_closed(
        server: DevServer, sdk_env: dict[str, str], resolve_localhost: None,
        tmp_path: Path) -> None:
    d = open_deployment(server)
    tenant_id = d.tenant_id
    d.close()
    client = KeyVaultManagementClient(ManagedIdentityCredential(), str(uuid.uuid4()),
                                      base_url=server.url, credential_scopes=ARM_SCOPES,
                                      polling_interval=0)
    name = f"shredarm{uuid.uuid4().hex[:8]}"

    def create() -> str:
        vault = client.vaults.begin_create_or_update("rg1", name, VaultCreateOrUpdateParameters(
            location="westeurope", properties=VaultProperties(
                tenant_id=tenant_id, sku=Sku(family="A", name="standard")))).result()
        return str(vault.properties.vault_uri)

    uri = create()
    secrets = SecretClient(uri, ManagedIdentityCredential())
    keys = KeyClient(uri, ManagedIdentityCredential())
    mark = uuid.uuid4().hex
    secrets.set_secret("s", f"ARM-{mark}")
    keys.create_ec_key("k", curve="P-256")
    assert secrets.get_secret("s").value == f"ARM-{mark}"
    d = open_deployment(server)
    try:
        found = d.vaults.get(name)
        assert found is not None
        vault_id = found.id
    finally:
        d.close()
    copy = copy_database(server.data_dir / "okv.db", tmp_path / "arm-copy.db")

    client.vaults.delete("rg1", name)
    client.vaults.begin_purge_deleted(name, "westeurope").result()

    rows = sealed_rows(copy, vault_id)
    assert sorted(r.collection for r in rows) == ["keys", "secrets"]
    assert open_from_copy(copy, server.data_dir, rows) == [None, None]
    # A new vault under the same name (perhaps the same internal id) starts empty, with keys
    # of its own: the server kept nothing of the purged one.
    create()
    with pytest.raises(ResourceNotFoundError):
        secrets.get_secret("s")
    secrets.set_secret("s", "new-vault")
    assert secrets.get_secret("s").value == "new-vault"
    assert open_from_copy(copy, server.data_dir, rows) == [None, None]
