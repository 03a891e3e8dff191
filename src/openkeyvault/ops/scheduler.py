"""Background work of a deployment, run on an interval by one process of it.

Every worker process of every node runs the loop, but only the one holding the
scheduler's lease (storage/leases.py) runs the jobs: key rotation and certificate
renewal then happen once in the whole deployment, not once per process. The holder
renews the lease on every tick, and again before a job once a third of it has gone by;
the lease lasts LEASE_TICKS intervals, so when its holder dies (or loses the database)
another process takes over within about that long. The others only try to take it,
one cheap statement per tick.

The jobs stay idempotent (a rotation adds a version only if the one it saw is still
the latest), so a lease that lapses in the middle of a long job costs repeated work,
never a double rotation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool

from openkeyvault.config import DEFAULT_SCHEDULER_INTERVAL
from openkeyvault.ops.logs import Intervals
from openkeyvault.storage.errors import StorageError

log = logging.getLogger("openkeyvault.scheduler")
INTERVAL_SECONDS = DEFAULT_SCHEDULER_INTERVAL  # Settings.scheduler_interval
# The lease outlives this many ticks: a holder that misses a renewal or two keeps it, a
# dead one is replaced after about this many intervals.
LEASE_TICKS = 3
LEASE_NAME = "scheduler"
# A storage fault (full or read-only disk) fails every job on every tick: say so once in
# this many seconds per job, in one line, rather than a traceback each time.
FAULT_LOG_SECONDS = 600.0

Job = Callable[[], int]


class Lease(Protocol):
    """What the scheduler needs of a lease store (storage/leases.py)."""

    def acquire(self, name: str, holder: str, ttl: float) -> bool: ...

    def release(self, name: str, holder: str) -> bool: ...


def holder_id() -> str:
    """This process's name as a lease holder: node and pid for people reading the
    `leases` table or the log, and a random part, as pids repeat across nodes (each
    container's first process) and over time."""
    return f"{socket.gethostname()[:120]}/{os.getpid()}/{secrets.token_hex(8)}"


class Scheduler:
    """Runs `jobs` every `interval` seconds, while this process holds the deployment's
    scheduler lease (`lease`); without one (a single process, tests), on every tick."""

    def __init__(self, jobs: dict[str, Job], interval: float = INTERVAL_SECONDS,
                 lease: Lease | None = None, holder: str | None = None,
                 every_process: tuple[Callable[[], Coroutine[Any, Any, None]], ...] = ()) -> None:
        self.jobs = jobs
        # Loops every serving process runs beside the ticks, lease or not (event delivery).
        self.every_process = every_process
        self.interval = interval
        self.ttl = interval * LEASE_TICKS
        self.lease = lease
        self.holder = holder or holder_id()
        self.leading = False
        self._renewed = 0.0  # time.monotonic() when the lease was last taken or renewed
        self._stopping = False
        self._fault_due = Intervals()

    # ---- the lease --------------------------------------------------------------
    def _hold(self) -> bool:
        """Take or renew the lease; whether this process leads now. A change is one line."""
        if self.lease is None:
            return True
        started = time.monotonic()
        try:
            held = self.lease.acquire(LEASE_NAME, self.holder, self.ttl)
        except StorageError as exc:
            if self._fault_due.due(LEASE_NAME, FAULT_LOG_SECONDS):
                log.warning("scheduled jobs paused here: the scheduler lease could not be "
                            "taken or renewed: %s", exc)
            held = False
        if held:
            self._renewed = started
        if held and not self.leading:
            log.info("this process (%s) now runs the deployment's scheduled jobs: it took "
                     "the scheduler lease", self.holder)
        elif self.leading and not held:
            log.warning("this process (%s) lost the scheduler lease: its scheduled jobs "
                        "stop here", self.holder)
        self.leading = held
        return held

    def _still_holds(self) -> bool:
        """Before a job: renew once a third of the lease has gone by, so a job never
        starts on a lease about to lapse."""
        if self._stopping:
            return False
        if self.lease is None or time.monotonic() - self._renewed < self.ttl / LEASE_TICKS:
            return True
        return self._hold()

    def release(self) -> None:
        """Give the lease up (a stopping process), so another takes over at its next tick
        rather than when the lease expires."""
        self._stopping = True
        if self.lease is None or not self.leading:
            return
        self.leading = False
        try:
            if self.lease.release(LEASE_NAME, self.holder):
                log.info("this process (%s) released the scheduler lease", self.holder)
        except StorageError as exc:
            log.warning("the scheduler lease could not be released (it expires by "
                        "itself): %s", exc)

    # ---- the loop ---------------------------------------------------------------
    def tick(self) -> dict[str, int]:
        """One round: the jobs, if this process holds the lease; what each one did."""
        done: dict[str, int] = {}
        if self._stopping or not self._hold():
            return done
        for name, job in self.jobs.items():
            if not self._still_holds():
                break
            try:
                done[name] = job()
            except StorageError as exc:
                if self._fault_due.due(name, FAULT_LOG_SECONDS):
                    log.warning("scheduled job %s skipped: %s", name, exc)
            except Exception:
                log.exception("scheduled job %s failed", name)
        return done

    async def run(self) -> None:
        """The loop of a serving process; cancelled when it stops, it releases the lease."""
        self._stopping = False
        loops = [asyncio.create_task(loop()) for loop in self.every_process]
        try:
            while True:
                for name, count in (await run_in_threadpool(self.tick)).items():
                    if count:
                        log.info("%s: %d", name, count)
                await asyncio.sleep(self.interval)
        finally:
            for task in loops:
                task.cancel()
            self._stopping = True  # a tick still running in its thread ends at its next job
            await asyncio.shield(run_in_threadpool(self.release))
