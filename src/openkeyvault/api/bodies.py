"""How many large request bodies one worker holds at a time.

A body costs memory while it is read, parsed and decoded (a restore body several
times its size, until the call returns). Authorization comes before the body is
read, so only a caller allowed the operation gets this far; but even an allowed
burst must not multiply a worker's memory without limit. Each worker admits at most
`PERMITS` bodies over `LARGE_BYTES` at once. The others wait before their body is
read (its bytes stay in the client's and the kernel's buffers); one that waits more
than `WAIT_SECONDS` is answered 503 with Retry-After. After a large body the worker
frees what it left and hands the memory back (ops/memory.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

from starlette.requests import Request

from openkeyvault.api.http import declared_length
from openkeyvault.ops import memory

LARGE_BYTES = 1024 * 1024
PERMITS = 2
WAIT_SECONDS = 30.0
RETRY_AFTER_SECONDS = 5


class Busy(Exception):
    """Too many large bodies are in progress in this worker."""


class LargeBodies:
    def __init__(self, permits: int = PERMITS, wait: float = WAIT_SECONDS) -> None:
        self._permits = asyncio.Semaphore(permits)
        self._wait = wait

    @staticmethod
    def is_large(request: Request, limit: int) -> bool:
        """True for a body declared over LARGE_BYTES (and within the route's limit: one
        over it is refused at once, without a permit), or of unknown size on a route that
        takes more than that."""
        declared = declared_length(request)
        if declared is None:
            return limit > LARGE_BYTES
        return LARGE_BYTES < declared <= limit

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Hold one permit while the body is read and the call runs; Busy if none frees
        up in time."""
        try:
            async with asyncio.timeout(self._wait):
                await self._permits.acquire()
        except TimeoutError:
            raise Busy from None
        try:
            yield
        finally:
            self._permits.release()
            # Once the request's objects are gone: after an error they live on in the
            # traceback until the app has turned it into a response, which is before the
            # response is sent, where the loop runs this.
            asyncio.get_running_loop().call_soon(_give_back)


def _give_back() -> None:
    """Free what a large body left behind, and hand it back to the system.

    An error raised while a body is decoded leaves its exception chain in a reference
    cycle with frames that hold the body and its decoded copies; only the cycle collector
    frees them, and an idle worker allocates too little to trigger it (measured: some
    50 objects holding ~110 MiB after 16 refused 9 MiB restores, until a collection).
    A collection costs ~1.5 ms (start-up objects are frozen out of it), a trim less.
    """
    gc.collect()
    memory.trim()
