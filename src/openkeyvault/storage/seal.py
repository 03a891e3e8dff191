"""Seals protect the root key. The dev seal is a key file readable only by its owner."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from openkeyvault.crypto.aead import KEY_BYTES, new_key


class SealError(Exception):
    pass


def dev_seal_root_key(path: Path) -> bytes:
    """Load the root key from `path`, creating it (mode 0600) on first use."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(new_key())
            f.flush()
            os.fsync(f.fileno())
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SealError(f"{path} must be readable only by its owner (mode is {mode:o})")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise SealError(f"{path} does not hold a {KEY_BYTES}-byte root key")
    return key
