"""Seals protect the root key. The dev seal is a key file readable only by its owner.

A root key is made once, for a database that holds nothing sealed yet. It is never
made again beside sealed data: a new random key would not open that data, and leaving
it behind would hide which key was lost.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from openkeyvault.crypto.aead import KEY_BYTES, new_key
from openkeyvault.storage.errors import StartupRefused


class SealError(StartupRefused):
    """The root key cannot be loaded; the message says what was found and what to do."""


def dev_seal_root_key(path: Path, create: bool = False) -> bytes:
    """Load the root key from `path`. Only with `create` (the database holds nothing sealed)
    is a missing key made, mode 0600."""
    if not path.exists():
        if not create:
            raise SealError(
                f"{path} is missing, and the data beside it (okv.db, keyring/) was sealed "
                f"by it: a new root key would not open that data. Restore {path.name} from "
                "your backup (nothing was created)")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(new_key())
            f.flush()
            os.fsync(f.fileno())
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SealError(
            f"{path} is readable by other users (mode {mode:o}); refusing to use it. If no one "
            f"else can have read it, restrict it with: chmod 600 {path}")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise SealError(f"{path} does not hold a {KEY_BYTES}-byte root key (it holds "
                        f"{len(key)} bytes): restore it from your backup")
    return key
