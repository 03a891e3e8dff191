"""Throttling by Azure's service limits (ops/limits.py): a `Gate` that answers 429
`Throttled` once a vault has had its class's limit of transactions in the last 10 s.

How the limit is shared, and why:

- Across nodes, each node admits an equal share, limit / N, where N is the number of live
  nodes. Every worker renews a heartbeat lease for its node (storage/throttles.py) and
  counts the live ones every REFRESH_SECONDS (reading the vaults' own scales, `okv vault
  throttle`, at the same time), so the database sees one write and two reads per worker
  per REFRESH_SECONDS, never one per request. Counters shared in the database
  would cost a write per request on the hot path; the price of shares is that a vault
  whose clients all reach one node gets 1/N of the limit (they are told to retry, as
  by Azure, never served more than the limit). A node that stops is dropped from N when
  its lease lapses (LEASE_SECONDS); a new one is counted within REFRESH_SECONDS.
- Within a node, the worker processes share the node's share through one small file
  mapped into each (`SharedWindows`, on tmpfs where there is one), updated under an
  exclusive `flock`: one lock, one look-up and a read-modify-write of a few bytes.
  A per-process share (limit / workers) would be cheaper still but wrong for the common
  case of one client on one keep-alive connection, which one worker serves: it would get
  only 1/workers of the limit.
- A process that takes the lock counts a `Lease` of requests like the one at hand ahead
  (at most LEASE_REQUESTS, at most 1/LEASE_SHARE of the room left, none near the limit)
  and counts the next ones in that second from it, without the lock. What it did not spend
  goes back the next time it takes the lock and when it closes; until then the other
  processes count it, so they may refuse a little early, never admit beyond the limit.

The window slides in whole seconds: each (vault, class) keeps the units admitted in each
of the last 10 seconds, and a request is admitted while their sum plus its own units stays
within the limit, "max per 10 s" as Azure words it. Retry-After is the number of whole
seconds until enough of the oldest seconds fall out of the window for the request to fit.
A refused request is not counted (as by Azure, a 429 does not count toward the limit).
A single request always fits an empty window, so a scaled-down limit below one request's
weight slows its class down rather than shutting it. The seconds are the machine's
monotonic clock, the same in every process of a node: limits are about real time, so
the dev server's movable clock does not move them. A table with no room for another live
counter (about CAPACITY vaults and classes busy at once on one node) admits rather than
refuses, and says so once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import stat
import struct
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from openkeyvault.ops import rundir
from openkeyvault.ops.limits import (
    CLASSES,
    LIMITS,
    MANAGED_HSM_CLASS_OF,
    WINDOW_SECONDS,
)
from openkeyvault.ops.outcome import Attempt, Gate, Refusal

log = logging.getLogger("openkeyvault.throttle")

THROTTLED = "Throttled"
MESSAGE = ("Request was not processed because too many requests were received. "
           "Reason: VaultRequestTypeLimitReached")
REFUSALS = {s: Refusal(429, THROTTLED, MESSAGE, s) for s in range(1, WINDOW_SECONDS + 1)}

REFRESH_SECONDS = 10.0  # heartbeat, live nodes and vault scales are re-read this often
LEASE_SECONDS = 3 * REFRESH_SECONDS  # a node missing from three refreshes is gone
CAPACITY = 4096  # (vault, class) counters one node keeps live at once
MAX_PROBE = 64  # slots looked at for a counter before giving up (admitting)

_MAGIC = b"okvthr01"
_HEADER = struct.Struct("<8sqq")  # magic, pid of the node's supervising process, capacity
_KEY = 16  # bytes of a counter's key (a digest of vault and class)
_BODY = struct.Struct(f"<qd{WINDOW_SECONDS}d")  # last second, total, units per second
_HEAD = struct.Struct("<qd")  # last second, total
_UNITS = struct.Struct("<d")
_LAST = struct.Struct("<q")
_ENTRY = _KEY + _BODY.size
_EMPTY = bytes(_KEY)
_NOTHING = 1e-9  # a total this small is an empty window (sums of fractional units)
# A lease: at most LEASE_REQUESTS requests ahead, and at most 1/LEASE_SHARE of the room
# left in the window, so that leases shrink to none as the limit nears.
LEASE_REQUESTS = 32
LEASE_SHARE = 8


def counter_key(vault: str, throttle_class: str) -> bytes:
    """The key of a vault's counter of a class: the same in every process of a node."""
    return hashlib.blake2b(f"{vault}\0{throttle_class}".encode(), digest_size=_KEY).digest()


class Lease:
    """Units a process counted ahead in one second of a counter, for requests it has not
    had yet: while they last, a request in that second is counted without the file lock."""

    __slots__ = ("left", "second")

    def __init__(self, second: int, left: float) -> None:
        self.second = second
        self.left = left


class SharedWindows:
    """Sliding 10-second windows, one per (vault, class), in a file the worker processes of
    one node all map: an open-addressed table of CAPACITY counters, each its key, the last
    second it was used in, its total and its units in each of the last 10 seconds. Every
    read-modify-write holds an exclusive flock on the file (and a thread lock, as flock
    does not exclude threads sharing the descriptor)."""

    def __init__(self, path: Path, capacity: int = CAPACITY, owner: int | None = None) -> None:
        self.path = path
        self.capacity = capacity
        size = _HEADER.size + capacity * _ENTRY
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(path, flags, 0o600)
        try:
            info = os.fstat(self._fd)
            if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
                raise PermissionError(f"{path} is not a private file of this user")
            with self._locked_file():
                if info.st_size != size or self._header_wrong():
                    os.ftruncate(self._fd, 0)
                    os.ftruncate(self._fd, size)
                    os.pwrite(self._fd, _HEADER.pack(_MAGIC, owner or os.getpid(), capacity), 0)
            self._mm = mmap.mmap(self._fd, size)
        except BaseException:
            os.close(self._fd)
            raise
        self._lock = threading.Lock()
        self._slots: dict[bytes, int] = {}  # key → offset, checked against the file each time
        self._leases: dict[bytes, Lease] = {}  # key → this process's lease on its counter
        self._full_said = False

    def _header_wrong(self) -> bool:
        magic, _, capacity = _HEADER.unpack(os.pread(self._fd, _HEADER.size, 0))
        return bool(magic != _MAGIC or capacity != self.capacity)

    @contextlib.contextmanager
    def _locked_file(self) -> Any:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def take(self, key: bytes, second: int, units: float, limit: float) -> int:
        """Count `units` against the counter `key` at `second` if they fit within `limit`
        over the last 10 seconds, or the window is empty (a `limit` of 0 admits nothing):
        0; else, counting nothing, the whole seconds until they would fit.

        Most requests are counted from this process's lease (`Lease`): no file lock."""
        with self._lock:
            lease = self._leases.get(key)
            if lease is not None and lease.second == second and lease.left >= units:
                lease.left -= units
                return 0
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                mm = self._mm
                off = self._slots.get(key, -1)
                if off < 0 or mm[off:off + _KEY] != key:
                    off = self._find(key, second)
                    if off < 0:
                        return 0
                body = off + _KEY
                if lease is not None:  # what is left of it goes back first
                    del self._leases[key]
                    self._give_back(body, lease)
                return self._take(key, body, second, units, limit)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _give_back(self, body: int, lease: Lease) -> None:
        """Uncount the units of `lease` that were not spent (while its second is still in
        the window: after that they have left it anyway)."""
        if lease.left <= _NOTHING:
            return
        last, total, *spent = _BODY.unpack_from(self._mm, body)
        if last - lease.second >= WINDOW_SECONDS:
            return
        i = lease.second % WINDOW_SECONDS
        back = min(lease.left, spent[i])
        spent[i] -= back
        _BODY.pack_into(self._mm, body, last, max(total - back, 0.0), *spent)

    def _take(self, key: bytes, body: int, second: int, units: float, limit: float
              ) -> int:
        mm = self._mm
        last, total, *spent = _BODY.unpack_from(mm, body)
        if second <= last:
            # Another process counted in a later second (it read the clock after this
            # one did, and took the lock first): count in that second.
            second = last
        elif second - last >= WINDOW_SECONDS:
            spent = [0.0] * WINDOW_SECONDS
            total = 0.0
        else:  # the seconds that passed leave the window
            for s in range(last + 1, second + 1):
                i = s % WINDOW_SECONDS
                total -= spent[i]
                spent[i] = 0.0
            total = max(total, 0.0)
        if total + units > limit and (total > _NOTHING or limit <= 0):
            if second != last:  # written back even so: the next look starts from here
                _BODY.pack_into(mm, body, second, total, *spent)
            # Units beyond the limit (a scaled-down limit below one HSM key's create) wait
            # for an empty window: one request always fits in one, so no class is shut.
            if limit <= 0:
                return WINDOW_SECONDS
            must_free = total if units > limit else total + units - limit
            freed = 0.0
            for wait in range(1, WINDOW_SECONDS + 1):
                freed += spent[(second + wait) % WINDOW_SECONDS]
                if freed >= must_free - _NOTHING:
                    return wait
            return WINDOW_SECONDS
        # Admitted, with a lease of whole requests like this one ahead, if there is room.
        ahead = units * min(LEASE_REQUESTS,
                            int((limit - total - units) / (units * LEASE_SHARE))) \
            if units > 0 else 0.0
        if ahead > 0:
            if len(self._leases) >= 4 * self.capacity:
                self._return_leases()
            self._leases[key] = Lease(second, ahead)
        else:
            ahead = 0.0
        spent[second % WINDOW_SECONDS] += units + ahead
        _BODY.pack_into(mm, body, second, total + units + ahead, *spent)
        return 0

    def _find(self, key: bytes, second: int) -> int:
        """The offset of `key`'s counter, claiming a free or expired slot for a new one;
        -1 if none is found within MAX_PROBE slots."""
        mm, reuse = self._mm, -1
        start = int.from_bytes(key[:8], "little")
        for probe in range(min(MAX_PROBE, self.capacity)):
            off = _HEADER.size + (start + probe) % self.capacity * _ENTRY
            held = mm[off:off + _KEY]
            if held == key:
                self._slots[key] = off
                return off
            if held == _EMPTY:
                reuse = off if reuse < 0 else reuse
                break
            if reuse < 0 and _LAST.unpack_from(mm, off + _KEY)[0] <= second - WINDOW_SECONDS:
                reuse = off  # every second it counted has left the window
        if reuse < 0:
            if not self._full_said:
                self._full_said = True
                log.warning("throttling: more than %d vault counters are busy on this node; "
                            "requests beyond them are admitted uncounted", self.capacity)
            return -1
        mm[reuse:reuse + _KEY] = key
        _BODY.pack_into(mm, reuse + _KEY, second, 0.0, *([0.0] * WINDOW_SECONDS))
        if len(self._slots) >= 4 * self.capacity:
            self._slots.clear()
        self._slots[key] = reuse
        return reuse

    def _return_leases(self) -> None:
        """Give back every lease's unspent units (the caller holds the file lock)."""
        leases, self._leases = self._leases, {}
        for key, lease in leases.items():
            off = self._slots.get(key, -1)
            if off >= 0 and self._mm[off:off + _KEY] == key:
                self._give_back(off + _KEY, lease)

    def close(self) -> None:
        """Give back the leases, then unmap and close (a process that stops leaves no
        units counted that it never admitted)."""
        with self._lock:
            if self._leases:
                with contextlib.suppress(OSError, ValueError), self._locked_file():
                    self._return_leases()
            with contextlib.suppress(BufferError, ValueError):
                self._mm.close()
            with contextlib.suppress(OSError):
                os.close(self._fd)


class NodeView(Protocol):
    """What the throttle needs of storage (storage/throttles.py)."""

    def heartbeat(self, node: str, ttl: float) -> None: ...

    def live_nodes(self) -> int: ...

    def vault_scales(self) -> dict[str, float | None]: ...


class Throttle:
    """The gate: each vault's transactions of a class, over the last 10 seconds, within
    its limit × the vault's scale / the live nodes."""

    def __init__(self, windows: SharedWindows, limits: Mapping[str, Mapping[str, float]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.windows = windows
        self.limits = limits
        self.nodes = 1
        self.vault_scales: dict[str, float | None] = {}  # None: that vault is not throttled
        self._clock = clock
        self._keys: dict[tuple[str, str], bytes] = {}
        self.refresher: Refresher | None = None  # open_throttle's, stopped by close()

    def admit(self, attempt: Attempt) -> Refusal | None:
        by_class = self.limits.get(attempt.resource_kind)
        name = attempt.resource_name
        if by_class is None or name is None:
            return None
        throttle_class = attempt.throttle_class
        if attempt.resource_kind == "managedhsm":
            throttle_class = MANAGED_HSM_CLASS_OF.get(attempt.operation)
        if throttle_class is None or (limit := by_class.get(throttle_class)) is None:
            return None
        scale = self.vault_scales.get(name, 1.0)
        if scale is None:
            return None
        key = self._keys.get((name, throttle_class))
        if key is None:
            if len(self._keys) >= 4 * CAPACITY:
                self._keys.clear()
            key = self._keys[name, throttle_class] = counter_key(name, throttle_class)
        wait = self.windows.take(key, int(self._clock()), attempt.units,
                                 limit * scale / self.nodes)
        return REFUSALS[wait] if wait else None

    # ---- what the deployment tells it, every REFRESH_SECONDS ---------------------------
    def refresh(self, view: NodeView, node: str) -> None:
        """Renew this node's heartbeat; take the number of live nodes and the vaults'
        scales. A storage fault keeps what was known (and is logged by the caller)."""
        view.heartbeat(node, LEASE_SECONDS)
        self.nodes = max(1, view.live_nodes())
        self.vault_scales = view.vault_scales()

    def close(self) -> None:
        if self.refresher is not None:
            self.refresher.stop()
        self.windows.close()


class Refresher:
    """A daemon thread that refreshes a throttle every REFRESH_SECONDS."""

    def __init__(self, throttle: Throttle, view: NodeView, node: str,
                 interval: float = REFRESH_SECONDS) -> None:
        self._throttle, self._view, self._node = throttle, view, node
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="okv-throttle", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def refresh(self) -> None:
        from openkeyvault.storage.errors import StorageError

        try:
            self._throttle.refresh(self._view, self._node)
        except StorageError as exc:
            if not self._failing:
                log.warning("throttling: the live nodes and vault settings could not be "
                            "read (the last known are used): %s", exc)
            self._failing = True
        except Exception:  # the thread must outlive any fault; said once per run of them
            if not self._failing:
                log.exception("throttling: the live nodes and vault settings could not be "
                              "read (the last known are used)")
            self._failing = True
        else:
            if self._failing:
                log.info("throttling: the live nodes and vault settings are read again")
            self._failing = False

    def _run(self) -> None:
        while True:
            self.refresh()
            if self._stop.wait(self._interval):
                return

    def stop(self) -> None:
        self._stop.set()


# ---- where a node's counters live ------------------------------------------------------
def node_id() -> str:
    """This node as its worker processes all name it: the host and the pid of the process
    that supervises them (their parent)."""
    import socket

    return f"{socket.gethostname()[:120]}/{os.getppid()}"


def counters_path(data_dir: Path, supervisor: int) -> Path:
    """The node's counters file: in memory (tmpfs) where this machine has one, else the
    temporary directory, else the data directory; named after the data directory and the
    supervising process, so that two nodes on one machine keep their own. Files of nodes
    whose supervisor is gone are removed."""
    name = f"throttle-{rundir.tag(data_dir.resolve(), supervisor)}"
    where = rundir.run_dir()
    if where is None:
        return data_dir / name
    _remove_orphans(where)
    return where / name


def _remove_orphans(where: Path) -> None:
    for path in where.glob("throttle-*"):
        try:
            with path.open("rb") as f:
                magic, pid, _ = _HEADER.unpack(f.read(_HEADER.size))
        except (OSError, struct.error):
            continue
        if magic != _MAGIC or pid <= 0:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                path.unlink()
        except PermissionError:
            pass


# ---- the composition root's factory ----------------------------------------------------
def scaled_limits(scale: float, overrides: Mapping[str, float] | None = None
                  ) -> dict[str, dict[str, float]]:
    """Azure's limits × `scale`, with `overrides` (class → limit per 10 s) replacing
    single classes wherever they apply."""
    overrides = overrides or {}
    if unknown := sorted(set(overrides) - CLASSES):
        raise ValueError(f"unknown throttling class(es) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(CLASSES))}")
    return {kind: {c: float(overrides.get(c, limit * scale)) for c, limit in by.items()}
            for kind, by in LIMITS.items()}


class NoThrottle:
    """The gate of a deployment with throttling off."""

    def admit(self, attempt: Attempt) -> Refusal | None:
        return None

    def close(self) -> None:
        pass


def open_throttle(settings: Any, engines: Any = None) -> Gate:
    """The throttling gate of this worker process, from `settings` ([throttling]): its
    node's shared counters, refreshed from storage (`engines`; None: one node, no vault
    scales) on a daemon thread."""
    if not settings.throttling:
        return NoThrottle()
    limits = scaled_limits(settings.throttling_scale, settings.throttling_limits)
    supervisor = os.getppid()
    windows = SharedWindows(counters_path(settings.data_dir, supervisor), owner=supervisor)
    throttle = Throttle(windows, limits)
    if engines is not None:
        from openkeyvault.storage.throttles import ThrottleStore

        throttle.refresher = Refresher(throttle, ThrottleStore(engines), node_id())
        throttle.refresher.start()
    return throttle
