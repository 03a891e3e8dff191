"""Background work of a server process, run on an interval in a worker thread.

Every worker runs the loop; jobs are idempotent, so several workers sharing one
database only repeat a cheap query.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

log = logging.getLogger("openkeyvault.scheduler")
INTERVAL_SECONDS = 30.0

Job = Callable[[], int]


class Scheduler:
    def __init__(self, jobs: dict[str, Job], interval: float = INTERVAL_SECONDS) -> None:
        self.jobs = jobs
        self.interval = interval

    def tick(self) -> dict[str, int]:
        done: dict[str, int] = {}
        for name, job in self.jobs.items():
            try:
                done[name] = job()
            except Exception:
                log.exception("scheduled job %s failed", name)
        return done

    async def run(self) -> None:
        while True:
            for name, count in (await run_in_threadpool(self.tick)).items():
                if count:
                    log.info("%s: %d", name, count)
            await asyncio.sleep(self.interval)
