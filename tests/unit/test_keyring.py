"""The file keyring: per-owner KEKs sealed by the root key, private, created once, shredded."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from openkeyvault.crypto import aead
from openkeyvault.storage.keyring import FILE_BYTES, MAGIC, FileKeyRing, Kek, KeyRingError

AAD = b"okv/test"


@pytest.fixture
def root() -> bytes:
    return aead.new_key()


@pytest.fixture
def ring_dir(tmp_path: Path) -> Path:
    return tmp_path / "keyring"


@pytest.fixture
def ring(ring_dir: Path, root: bytes) -> FileKeyRing:
    return FileKeyRing(ring_dir, root)


def same_kek(a: Kek, b: Kek) -> bool:
    try:
        return b.unwrap(a.wrap(b"k" * 32, AAD), AAD) == b"k" * 32
    except KeyRingError:
        return False


def test_create_writes_a_private_file_in_a_private_directory(ring: FileKeyRing,
                                                             ring_dir: Path) -> None:
    kek = ring.create("vault:1")
    assert stat.S_IMODE(ring_dir.stat().st_mode) == 0o700
    files = list(ring_dir.iterdir())
    assert [f.name for f in files] == ["vault.1.kek"]  # no temp file left behind
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    blob = files[0].read_bytes()
    assert len(blob) == FILE_BYTES and blob.startswith(MAGIC)
    wrapped = kek.wrap(b"data-key-bytes", AAD)
    assert kek.unwrap(wrapped, AAD) == b"data-key-bytes"


def test_create_is_idempotent_and_get_returns_the_same_kek(ring: FileKeyRing, ring_dir: Path,
                                                           root: bytes) -> None:
    first = ring.create("vault:1")
    before = (ring_dir / "vault.1.kek").read_bytes()
    again = ring.create("vault:1")
    assert (ring_dir / "vault.1.kek").read_bytes() == before
    got = FileKeyRing(ring_dir, root).get("vault:1")  # another process's view
    assert got is not None
    assert same_kek(first, again) and same_kek(first, got)


def test_each_owner_has_its_own_kek(ring: FileKeyRing) -> None:
    one, two = ring.create("vault:1"), ring.create("vault:2")
    assert not same_kek(one, two)
    with pytest.raises(KeyRingError):
        two.unwrap(one.wrap(b"k" * 32, AAD), AAD)


def test_a_wrapped_key_is_bound_to_its_associated_data(ring: FileKeyRing) -> None:
    kek = ring.create("vault:1")
    wrapped = kek.wrap(b"k" * 32, AAD)
    with pytest.raises(KeyRingError):
        kek.unwrap(wrapped, b"okv/other")


def test_get_of_an_owner_without_a_kek_is_none(ring: FileKeyRing) -> None:
    assert ring.get("vault:7") is None


def test_concurrent_creators_all_get_the_winners_kek(ring_dir: Path, root: bytes) -> None:
    """Separate keyring objects (as separate worker processes) create one owner's KEK at once."""
    start = threading.Barrier(8)
    keks: list[Kek] = []
    errors: list[BaseException] = []

    def create() -> None:
        ring = FileKeyRing(ring_dir, root)
        ring.get("vault:0")  # make the directory before the race
        start.wait()
        try:
            keks.append(ring.create("vault:9"))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(keks) == 8
    assert all(same_kek(keks[0], k) for k in keks[1:])
    assert sorted(p.name for p in ring_dir.iterdir()) == ["vault.9.kek"]


def test_destroy_shreds_the_file_in_place_then_removes_it(ring: FileKeyRing, ring_dir: Path,
                                                         root: bytes) -> None:
    kek = ring.create("vault:1")
    wrapped = kek.wrap(b"k" * 32, AAD)
    path = ring_dir / "vault.1.kek"
    before = path.read_bytes()
    witness = ring_dir.parent / "witness"  # a second name for the same bytes on disk
    os.link(path, witness)
    ring.destroy("vault:1")
    assert not path.exists()
    assert ring.get("vault:1") is None
    after = witness.read_bytes()
    assert after != before and MAGIC not in after  # overwritten, not merely unlinked
    # A KEK created later for the same owner is a new one: the old wrapping stays closed.
    fresh = ring.create("vault:1")
    with pytest.raises(KeyRingError):
        fresh.unwrap(wrapped, AAD)
    # Nor does the shredded file open if someone restores it.
    path.unlink()
    path.write_bytes(after)
    path.chmod(0o600)
    with pytest.raises(KeyRingError, match="not a keyring file"):
        FileKeyRing(ring_dir, root).get("vault:1")


def test_destroy_is_idempotent_and_leaves_other_owners(ring: FileKeyRing) -> None:
    other = ring.create("vault:2")
    ring.create("vault:1")
    ring.destroy("vault:1")
    ring.destroy("vault:1")
    ring.destroy("vault:3")  # never had one
    got = ring.get("vault:2")
    assert got is not None and same_kek(other, got)


def test_destroy_also_shreds_a_temp_file_a_crashed_creator_left(ring: FileKeyRing,
                                                                ring_dir: Path) -> None:
    ring.create("vault:1")
    leftover = ring_dir / ".vault.1.kek.123.abcdef.tmp"
    leftover.write_bytes((ring_dir / "vault.1.kek").read_bytes())
    ring.destroy("vault:1")
    assert list(ring_dir.iterdir()) == []


def test_the_files_alone_are_useless_without_the_root_key(ring: FileKeyRing,
                                                          ring_dir: Path) -> None:
    ring.create("vault:1")
    with pytest.raises(KeyRingError, match="root key"):
        FileKeyRing(ring_dir, aead.new_key()).get("vault:1")


def test_a_file_copied_to_another_owners_name_does_not_open(ring: FileKeyRing,
                                                            ring_dir: Path) -> None:
    ring.create("vault:1")
    copy = ring_dir / "vault.2.kek"
    copy.write_bytes((ring_dir / "vault.1.kek").read_bytes())
    copy.chmod(0o600)
    with pytest.raises(KeyRingError, match="root key"):
        ring.get("vault:2")


@pytest.mark.parametrize("damage", ["truncate", "extend", "flip", "magic"])
def test_a_damaged_file_is_refused(ring: FileKeyRing, ring_dir: Path, damage: str) -> None:
    ring.create("vault:1")
    path = ring_dir / "vault.1.kek"
    blob = bytearray(path.read_bytes())
    if damage == "truncate":
        blob = blob[:-1]
    elif damage == "extend":
        blob += b"\0"
    elif damage == "flip":
        blob[-1] ^= 1
    else:
        blob[0] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(KeyRingError):
        ring.get("vault:1")
    with pytest.raises(KeyRingError):
        ring.create("vault:1")  # a damaged KEK is never silently replaced


def test_a_readable_file_or_directory_is_refused(ring: FileKeyRing, ring_dir: Path,
                                                 root: bytes) -> None:
    ring.create("vault:1")
    path = ring_dir / "vault.1.kek"
    path.chmod(0o644)
    with pytest.raises(KeyRingError, match="readable only by its owner"):
        ring.get("vault:1")
    path.chmod(0o600)
    ring_dir.chmod(0o755)
    with pytest.raises(KeyRingError, match="only by its owner"):
        FileKeyRing(ring_dir, root).get("vault:1")
    ring_dir.chmod(0o700)


def test_a_symlink_is_not_followed(ring: FileKeyRing, ring_dir: Path, tmp_path: Path) -> None:
    ring.create("vault:1")
    target = tmp_path / "elsewhere"
    target.write_bytes((ring_dir / "vault.1.kek").read_bytes())
    target.chmod(0o600)
    (ring_dir / "vault.2.kek").symlink_to(target)
    with pytest.raises(KeyRingError):
        ring.get("vault:2")
    with pytest.raises(KeyRingError):
        ring.destroy("vault:2")
    assert target.exists()


@pytest.mark.parametrize("owner", ["", "../x", "vault:1/../2", "vault:../1", "Vault:1",
                                   "vault:1.kek", "vault:" + "1" * 65, "a/b", "vault:1\0"])
def test_owner_names_that_could_name_a_path_are_refused(ring: FileKeyRing, ring_dir: Path,
                                                        owner: str) -> None:
    for call in (ring.create, ring.get, ring.destroy):
        with pytest.raises(KeyRingError, match="owner name"):
            call(owner)
    assert not ring_dir.exists() or list(ring_dir.iterdir()) == []


def test_file_system_failures_are_keyring_errors(tmp_path: Path, root: bytes) -> None:
    ring = FileKeyRing(tmp_path / "no-such-parent" / "keyring", root)
    for call in (ring.create, ring.get, ring.destroy):
        with pytest.raises(KeyRingError, match="could not"):
            call("vault:1")
    assert not (tmp_path / "no-such-parent").exists()
