"""The barrier over a real SQLite repository: round trip, bound contexts, tampering, roots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import ColumnElement, select, update

from openkeyvault.config import Settings
from openkeyvault.crypto import aead
from openkeyvault.deployment import Deployment
from openkeyvault.ops.clock import ManualClock
from openkeyvault.storage.barrier import SYSTEM, Barrier, BarrierError, vault_owner
from openkeyvault.storage.db import open_sqlite
from openkeyvault.storage.repository import Repository
from openkeyvault.storage.schema import data_keys, objects, versions
from openkeyvault.vault.context import Caller
from openkeyvault.vault.errors import BadParameter
from openkeyvault.vault.secrets import _context

NOW = 1_700_000_000
V1, V2 = vault_owner(1), vault_owner(2)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    engines = open_sqlite(tmp_path / "okv.db")
    yield Repository(engines)
    engines.dispose()


@pytest.fixture
def root() -> bytes:
    return aead.new_key()


@pytest.fixture
def barrier(repo: Repository, root: bytes) -> Barrier:
    b = Barrier(root, repo)
    for owner in (SYSTEM, V1, V2):
        b.ensure_owner(owner, NOW)
    return b


def test_round_trip(barrier: Barrier) -> None:
    ctx = _context(1, "db-password", "a" * 32)
    for plaintext in (b"", b"hunter2", "päss ✓".encode(), bytes(range(256)) * 100):
        version, sealed = barrier.seal(V1, ctx, plaintext)
        assert version == 1
        assert plaintext not in sealed or plaintext == b""
        assert barrier.open(V1, version, ctx, sealed) == plaintext


def test_sealing_twice_gives_different_ciphertexts(barrier: Barrier) -> None:
    ctx = _context(1, "n", "v")
    _, one = barrier.seal(V1, ctx, b"same")
    _, two = barrier.seal(V1, ctx, b"same")
    assert one != two  # fresh nonce each time


def test_round_trip_survives_a_new_barrier_on_the_same_storage(repo: Repository, root: bytes,
                                                               barrier: Barrier) -> None:
    ctx = _context(1, "n", "v")
    version, sealed = barrier.seal(V1, ctx, b"persisted")
    assert Barrier(root, repo).open(V1, version, ctx, sealed) == b"persisted"


def test_ensure_owner_is_idempotent(repo: Repository, barrier: Barrier) -> None:
    before = repo.data_key(V1)
    barrier.ensure_owner(V1, NOW + 10)
    assert repo.data_key(V1) == before


@pytest.mark.parametrize("other", [
    ("vault", 2, "db-password", "a" * 32),     # another vault id in the context
    ("name", 1, "other-secret", "a" * 32),     # another name
    ("version", 1, "db-password", "b" * 32),   # another version
    ("case", 1, "DB-PASSWORD", "a" * 32),      # contexts are exact bytes
])
def test_a_value_does_not_open_in_another_context(barrier: Barrier,
                                                  other: tuple[str, int, str, str]) -> None:
    _, vault_id, name, version = other
    version_, sealed = barrier.seal(V1, _context(1, "db-password", "a" * 32), b"s3cret")
    with pytest.raises(BarrierError):
        barrier.open(V1, version_, _context(vault_id, name, version), sealed)


def test_a_value_does_not_open_under_another_owner(barrier: Barrier) -> None:
    ctx = _context(1, "n", "v")
    version, sealed = barrier.seal(V1, ctx, b"s3cret")
    with pytest.raises(BarrierError):
        barrier.open(V2, version, ctx, sealed)  # vault 2's data key
    with pytest.raises(BarrierError):
        barrier.open(SYSTEM, version, ctx, sealed)


def test_unknown_owner_or_key_version(barrier: Barrier) -> None:
    ctx = _context(1, "n", "v")
    version, sealed = barrier.seal(V1, ctx, b"s3cret")
    with pytest.raises(BarrierError):
        barrier.open(vault_owner(99), version, ctx, sealed)
    with pytest.raises(BarrierError):
        barrier.open(V1, version + 1, ctx, sealed)
    with pytest.raises(BarrierError):
        barrier.seal(vault_owner(99), ctx, b"x")


def test_every_tampered_byte_is_detected(barrier: Barrier) -> None:
    ctx = _context(1, "n", "v")
    version, sealed = barrier.seal(V1, ctx, b"sixteen byte val")
    for i in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        with pytest.raises(BarrierError):
            barrier.open(V1, version, ctx, bytes(tampered))


def test_truncated_or_extended_values_are_refused(barrier: Barrier) -> None:
    ctx = _context(1, "n", "v")
    version, sealed = barrier.seal(V1, ctx, b"value")
    for bad in (b"", b"short", sealed[:12], sealed[:-1], sealed + b"\0", sealed[1:]):
        with pytest.raises(BarrierError):
            barrier.open(V1, version, ctx, bad)


def test_another_root_key_cannot_open_the_data_keys(repo: Repository, barrier: Barrier) -> None:
    ctx = _context(1, "n", "v")
    version, sealed = barrier.seal(V1, ctx, b"s3cret")
    intruder = Barrier(aead.new_key(), repo)
    with pytest.raises(BarrierError, match="root key"):
        intruder.open(V1, version, ctx, sealed)
    with pytest.raises(BarrierError):
        intruder.seal(V1, ctx, b"planted")
    # ensure_owner does not replace an existing data key with one the intruder holds.
    intruder.ensure_owner(V1, NOW)
    with pytest.raises(BarrierError):
        intruder.open(V1, version, ctx, sealed)
    assert barrier.open(V1, version, ctx, sealed) == b"s3cret"


def test_a_data_key_swapped_between_owners_does_not_open(tmp_path: Path, root: bytes) -> None:
    """Wrapped data keys are bound to (owner, version): copying one row over another fails."""
    engines = open_sqlite(tmp_path / "swap.db")
    try:
        repo = Repository(engines)
        b = Barrier(root, repo)
        b.ensure_owner(V1, NOW)
        b.ensure_owner(V2, NOW)
        ctx = _context(1, "n", "v")
        version, sealed = b.seal(V1, ctx, b"s3cret")
        with engines.write.begin() as c:
            v2_key = c.execute(select(data_keys.c.wrapped)
                               .where(data_keys.c.owner == V2)).scalar_one()
            c.execute(update(data_keys).where(data_keys.c.owner == V1).values(wrapped=v2_key))
        with pytest.raises(BarrierError):
            Barrier(root, repo).open(V1, version, ctx, sealed)
    finally:
        engines.dispose()


# ---- through the secret service: rows swapped in storage ---------------------------------

@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment.open(Settings(data_dir=tmp_path / "data"), clock=ManualClock(NOW))
    yield d
    d.close()


def _swap_sealed(d: Deployment, a: tuple[str, str], b: tuple[str, str]) -> None:
    """Exchange the sealed bytes of two (name, version) rows, as a storage attacker could."""
    def where(name: str, version: str) -> ColumnElement[bool]:
        return versions.c.object_id.in_(
            select(objects.c.id).where(objects.c.name_lc == name.lower())
        ) & (versions.c.version == version)

    with d.engines.write.begin() as c:
        sa = c.execute(select(versions.c.sealed).where(where(*a))).scalar_one()
        sb = c.execute(select(versions.c.sealed).where(where(*b))).scalar_one()
        c.execute(update(versions).where(where(*a)).values(sealed=sb))
        c.execute(update(versions).where(where(*b)).values(sealed=sa))


def test_values_swapped_between_names_do_not_unseal(deployment: Deployment) -> None:
    d = deployment
    caller = Caller(d.dev_principal, d.vaults.ensure("dev"))
    one = d.secrets.set(caller, "first", "first-value")
    two = d.secrets.set(caller, "second", "second-value")
    _swap_sealed(d, ("first", one.version), ("second", two.version))
    for name, version in (("first", one.version), ("second", two.version)):
        with pytest.raises(BadParameter, match="could not be unsealed"):
            d.secrets.get(caller, name, version)


def test_values_swapped_between_versions_do_not_unseal(deployment: Deployment) -> None:
    d = deployment
    caller = Caller(d.dev_principal, d.vaults.ensure("dev"))
    old = d.secrets.set(caller, "s", "old-value")
    new = d.secrets.set(caller, "s", "new-value")
    untouched = d.secrets.set(caller, "t", "t-value")
    _swap_sealed(d, ("s", old.version), ("s", new.version))
    for version in (old.version, new.version, None):
        with pytest.raises(BadParameter, match="could not be unsealed"):
            d.secrets.get(caller, "s", version)
    assert d.secrets.get(caller, "t", untouched.version).value == "t-value"


def test_a_row_copied_to_another_vault_does_not_unseal(deployment: Deployment) -> None:
    d = deployment
    dev = Caller(d.dev_principal, d.vaults.ensure("dev"))
    other = Caller(d.dev_principal, d.vaults.create("other"))
    src = d.secrets.set(dev, "shared-name", "dev-value")
    dst = d.secrets.set(other, "shared-name", "other-value")
    with d.engines.write.begin() as c:
        sealed = c.execute(select(versions.c.sealed)
                           .where(versions.c.version == src.version)).scalar_one()
        c.execute(update(versions).where(versions.c.version == dst.version)
                  .values(sealed=sealed))
    with pytest.raises(BadParameter, match="could not be unsealed"):
        d.secrets.get(other, "shared-name", None)
    assert d.secrets.get(dev, "shared-name", None).value == "dev-value"


def test_unseal_errors_do_not_leak_the_value(deployment: Deployment) -> None:
    d = deployment
    caller = Caller(d.dev_principal, d.vaults.ensure("dev"))
    one = d.secrets.set(caller, "leak-a", "LEAK-CANARY-A")
    two = d.secrets.set(caller, "leak-b", "LEAK-CANARY-B")
    _swap_sealed(d, ("leak-a", one.version), ("leak-b", two.version))
    with pytest.raises(BadParameter) as info:
        d.secrets.get(caller, "leak-a", None)
    assert "LEAK-CANARY" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_deployment_with_another_root_key_cannot_open_this_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = Deployment.open(Settings(data_dir=data), clock=ManualClock(NOW))
    caller = Caller(d.dev_principal, d.vaults.ensure("dev"))
    d.secrets.set(caller, "n", "v")
    d.close()
    root = data / "root.key"
    root.write_bytes(aead.new_key())
    with pytest.raises(BarrierError):
        Deployment.open(Settings(data_dir=data), clock=ManualClock(NOW))

