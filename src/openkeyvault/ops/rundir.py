"""Where a node keeps files that live only as long as its processes (throttling counters,
metrics of its worker processes): in memory (tmpfs) where the machine has it, so they
neither wear nor fill the data directory's disk."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path


def private_dir(base: Path) -> Path | None:
    """`base`/openkeyvault-UID, made private to this user; None if it cannot be."""
    path = base / f"openkeyvault-{os.getuid()}"
    with contextlib.suppress(FileExistsError, OSError):
        path.mkdir(mode=0o700)
    try:
        info = path.lstat()
    except OSError:
        return None
    private = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() \
        and not stat.S_IMODE(info.st_mode) & 0o077
    return path if private else None


def run_dir() -> Path | None:
    """This user's private directory in /dev/shm, else in the temporary directory; None
    when neither can be had (then the caller falls back to the data directory)."""
    for base in (Path("/dev/shm"), Path(tempfile.gettempdir())):  # noqa: S108
        if base.is_dir() and os.access(base, os.W_OK) and (where := private_dir(base)):
            return where
    return None


def tag(*parts: object) -> str:
    """A short name for one node's files (its data directory, port or supervisor)."""
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=12).hexdigest()
