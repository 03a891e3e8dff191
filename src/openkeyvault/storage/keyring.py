"""Per-owner key-encryption keys (KEKs), kept outside the database.

A vault's data keys are wrapped by the vault's KEK; the KEK lives in the keyring,
not in the database, so destroying it (at purge) makes every value the vault ever
sealed undecryptable — also from a copy of the database taken before the purge.

`KeyRing` is the interface an HSM (PKCS#11) will implement later: the KEK is a
handle (`Kek`) that wraps and unwraps, so its bytes need never leave the token.
`FileKeyRing` is the implementation for one node: one file per owner under
DATA_DIR/keyring/ (directory 0700, files 0600), each holding the KEK sealed by the
root key with the owner as associated data, so keyring files alone are useless
and a file copied to another owner's name does not open.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from openkeyvault.crypto import aead
from openkeyvault.storage.errors import StorageFull, StorageUnavailable

# A keyring file: MAGIC || nonce || sealed KEK || tag.
MAGIC = b"OKVKEK\x00\x01"
FILE_BYTES = len(MAGIC) + aead.NONCE_BYTES + aead.KEY_BYTES + 16
SUFFIX = ".kek"
KEYRING_DIR = "keyring"  # under the data directory
# Owners are `system` or `kind:id` (e.g. `vault:12`); nothing that could name a path.
_OWNER = re.compile(r"[a-z]{1,16}(?::[A-Za-z0-9-]{1,64})?")


class KeyRingError(Exception):
    """A KEK is unusable: a file that is not a keyring file, does not open under the root
    key, or is readable by others (never carries key material). A disk that cannot be
    read or written raises KeyRingUnavailable (a StorageUnavailable) instead."""


class KeyRingUnavailable(KeyRingError, StorageUnavailable):
    """The keyring's disk cannot be read or written now; the KEKs themselves may be fine."""


class KeyRingFull(KeyRingUnavailable, StorageFull):
    """No space left for a keyring file."""


class Kek(Protocol):
    """One owner's key-encryption key, as a handle: it wraps and unwraps data keys."""

    def wrap(self, key: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """The key wrapped by `wrap` with the same `aad`; KeyRingError otherwise."""
        ...


class KeyRing(Protocol):
    def create(self, owner: str) -> Kek:
        """The owner's KEK, created if absent. Idempotent, also across processes: every
        concurrent caller gets the same KEK."""
        ...

    def get(self, owner: str) -> Kek | None:
        """The owner's KEK, or None if it has none (never created, or destroyed)."""
        ...

    def destroy(self, owner: str) -> None:
        """Destroy the owner's KEK irrecoverably. Idempotent."""
        ...


class _SealedKek:
    __slots__ = ("_sealer",)

    def __init__(self, key: bytes) -> None:
        self._sealer = aead.Sealer(key)

    def wrap(self, key: bytes, aad: bytes) -> bytes:
        return self._sealer.seal(key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        try:
            return self._sealer.open(wrapped, aad)
        except aead.SealError:
            raise KeyRingError("wrapped key does not open under the owner's KEK") from None


_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextlib.contextmanager
def _os_errors(what: str) -> Iterator[None]:
    """File system failures as storage faults (the message names no key material)."""
    try:
        yield
    except OSError as e:
        if e.errno in _FULL:
            raise KeyRingFull(f"the keyring could not {what} a key: its disk is full") from None
        raise KeyRingUnavailable(f"the keyring could not {what} a key ({e.strerror})") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _overwrite(fd: int) -> None:
    """Overwrite an open file's bytes in place with random bytes and flush them to disk."""
    size = os.fstat(fd).st_size
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, os.urandom(max(size, FILE_BYTES)))
    os.fsync(fd)


class FileKeyRing:
    """KEK files in one directory, sealed by the root key."""

    def __init__(self, directory: Path, root_key: bytes) -> None:
        self._dir = directory
        self._root = aead.Sealer(root_key)
        self._ready = False

    @staticmethod
    def _aad(owner: str) -> bytes:
        return f"okv/kek/{owner}".encode()

    def _name(self, owner: str) -> str:
        if not _OWNER.fullmatch(owner):
            raise KeyRingError("not a keyring owner name")
        return owner.replace(":", ".") + SUFFIX

    def _directory(self) -> Path:
        if not self._ready:
            with contextlib.suppress(FileExistsError):
                self._dir.mkdir(mode=0o700)
            info = os.lstat(self._dir)
            if not stat.S_ISDIR(info.st_mode):
                raise KeyRingError(f"{self._dir} is not a directory")
            if stat.S_IMODE(info.st_mode) & 0o077:
                raise KeyRingError(
                    f"{self._dir} must be accessible only by its owner "
                    f"(mode is {stat.S_IMODE(info.st_mode):o})")
            self._ready = True
        return self._dir

    def _read(self, owner: str, path: Path) -> _SealedKek | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise  # the disk's fault (see _os_errors)
            raise KeyRingError(f"{path.name} is a symbolic link") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or stat.S_IMODE(info.st_mode) & 0o077:
                raise KeyRingError(f"{path.name} must be a file readable only by its owner")
            blob = os.read(fd, FILE_BYTES + 1)
        finally:
            os.close(fd)
        if len(blob) != FILE_BYTES or not blob.startswith(MAGIC):
            raise KeyRingError(f"{path.name} is not a keyring file")
        try:
            return _SealedKek(self._root.open(blob[len(MAGIC):], self._aad(owner)))
        except aead.SealError:
            raise KeyRingError(f"{path.name} does not open under the root key") from None

    def get(self, owner: str) -> Kek | None:
        with _os_errors("read"):
            return self._read(owner, self._directory() / self._name(owner))

    def create(self, owner: str) -> Kek:
        with _os_errors("create"):
            return self._create(owner)

    def destroy(self, owner: str) -> None:
        with _os_errors("destroy"):
            self._destroy(owner)

    def _create(self, owner: str) -> Kek:
        name = self._name(owner)
        directory = self._directory()
        path = directory / name
        found = self._read(owner, path)
        if found is not None:
            return found
        key = aead.new_key()
        blob = MAGIC + self._root.seal(key, self._aad(owner))
        tmp = directory / f".{name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            try:
                os.write(fd, blob)
                os.fsync(fd)
            finally:
                os.close(fd)
            # link() publishes the complete file atomically and, unlike rename(), never
            # replaces an existing one: of concurrent creators exactly one wins, the others
            # read the winner's KEK (a replaced KEK would orphan data keys wrapped by it).
            try:
                os.link(tmp, path)
                won = True
            except FileExistsError:
                won = False
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(directory)
        if won:
            return _SealedKek(key)
        found = self._read(owner, path)
        if found is None:  # destroyed between our attempt and our read
            raise KeyRingError(f"the KEK of {owner} was destroyed while being created")
        return found

    def _destroy(self, owner: str) -> None:
        name = self._name(owner)
        directory = self._directory()
        # The file and any temp file a crashed creator left behind for this owner.
        victims = [directory / name, *directory.glob(f".{name}.*.tmp")]
        for path in victims:
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
            except FileNotFoundError:
                continue
            except OSError as e:
                if e.errno != errno.ELOOP:
                    raise  # the disk's fault (see _os_errors)
                raise KeyRingError(f"{path.name} is a symbolic link") from None
            try:
                _overwrite(fd)
            finally:
                os.close(fd)
            path.unlink(missing_ok=True)
        _fsync_dir(directory)
