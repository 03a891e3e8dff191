"""Background work of a server process, run on an interval in a worker thread.

Every worker runs the loop; jobs are idempotent, so several workers sharing one
database only repeat a cheap query.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from openkeyvault.ops.logs import Intervals
from openkeyvault.storage.errors import StorageError

log = logging.getLogger("openkeyvault.scheduler")
INTERVAL_SECONDS = 30.0
# A storage fault (full or read-only disk) fails every job on every tick: say so once in
# this many seconds per job, in one line, rather than a traceback each time.
FAULT_LOG_SECONDS = 600.0

Job = Callable[[], int]


class Scheduler:
    def __init__(self, jobs: dict[str, Job], interval: float = INTERVAL_SECONDS) -> None:
        self.jobs = jobs
        self.interval = interval
        self._fault_due = Intervals()

    def tick(self) -> dict[str, int]:
        done: dict[str, int] = {}
        for name, job in self.jobs.items():
            try:
                done[name] = job()
            except StorageError as exc:
                if self._fault_due.due(name, FAULT_LOG_SECONDS):
                    log.warning("scheduled job %s skipped: %s", name, exc)
            except Exception:
                log.exception("scheduled job %s failed", name)
        return done

    async def run(self) -> None:
        while True:
            for name, count in (await run_in_threadpool(self.tick)).items():
                if count:
                    log.info("%s: %d", name, count)
            await asyncio.sleep(self.interval)
