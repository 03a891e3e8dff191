"""Give freed memory back to the system after large requests (glibc only).

glibc's malloc serves a large block with mmap and unmaps it when freed, but its
threshold is dynamic: after one large block is freed, blocks up to that size come
from the heap instead, and the heap keeps what is freed unless it sits at the top.
A worker that once decoded a few large bodies at the same time would then stay at
that peak for good. Fixing the thresholds (which turns the dynamic adjustment off)
keeps large blocks on mmap, and `trim()` after a large body hands back what the
heap and the threads' arenas still hold.

Elsewhere (musl, macOS, Windows) both are no-ops. OKV_MALLOC_TUNING=off leaves
malloc as it is (e.g. to compare, or when GLIBC_TUNABLES says otherwise).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks of this size and more are mapped and unmapped on their own; smaller ones (every
# ordinary request's) come from the heap as before. glibc's own starting point is 128 KiB.
MMAP_THRESHOLD = 256 * 1024
# Free space above this at the top of the heap is returned at once.
TRIM_THRESHOLD = 1024 * 1024
ENV_VAR = "OKV_MALLOC_TUNING"

_libc: ctypes.CDLL | None = None


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or os.environ.get(ENV_VAR, "").lower() == "off":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def tune() -> bool:
    """Fix malloc's thresholds for this process (a worker, at start); True if done."""
    global _libc
    _libc = _glibc()
    if _libc is None:
        return False
    return bool(_libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(_libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def trim() -> None:
    """Return free heap pages to the system (after a large body); a no-op unless tuned."""
    if _libc is not None:
        _libc.malloc_trim(0)
