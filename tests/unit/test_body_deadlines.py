"""One timer per worker cuts the body reads that pass their deadline (api/http.py
`Deadlines`): not before the deadline, within a tick after it, never a read that ended
in time, and never mistaking another cancellation for its own."""

from __future__ import annotations

import asyncio
import time

import pytest

from openkeyvault.api.http import Deadlines

TICK = 0.05


async def _read(d: Deadlines, seconds: float, takes: float) -> tuple[str, float]:
    """A read of `takes` seconds with a deadline of `seconds`: how it ended, and when."""
    task = asyncio.current_task()
    assert task is not None
    started = time.monotonic()
    d.watch(task, seconds)
    try:
        await asyncio.sleep(takes)
        return "read", time.monotonic() - started
    except asyncio.CancelledError:
        if not d.cut(task):
            raise
        return "cut", time.monotonic() - started
    finally:
        d.forget(task)


def test_a_read_past_its_deadline_is_cut_at_it() -> None:
    async def run() -> None:
        d = Deadlines(TICK)
        how, took = await _read(d, 0.3, 10)
        assert how == "cut" and 0.3 <= took < 0.3 + 4 * TICK
        # The task goes on normally: its cancellation was taken back.
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        await asyncio.sleep(2 * TICK)
    asyncio.run(run())


def test_a_read_in_time_is_never_cancelled_afterwards() -> None:
    async def run() -> None:
        d = Deadlines(TICK)
        assert (await _read(d, 0.2, 0.05))[0] == "read"
        await asyncio.sleep(0.4)  # well past the deadline it no longer has
    asyncio.run(run())


def test_another_cancellation_is_not_a_deadline() -> None:
    async def run() -> None:
        d = Deadlines(TICK)
        reader = asyncio.ensure_future(_read(d, 30, 10))
        await asyncio.sleep(TICK)
        reader.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await reader
    asyncio.run(run())


def test_many_reads_share_the_timer_and_each_meets_its_own_deadline() -> None:
    async def run() -> None:
        d = Deadlines(TICK)
        results = await asyncio.gather(*(_read(d, 0.1 * (i % 3 + 1), 0.15) for i in range(9)))
        assert [how for how, _ in results] == ["cut", "read", "read"] * 3
    asyncio.run(run())


def test_each_event_loop_gets_its_timer() -> None:
    """A worker has one loop; tests make several, one after another: a loop that closed
    with the timer still set leaves nothing that stops the next loop's deadlines."""
    d = Deadlines(TICK)
    assert asyncio.run(_read(d, 30, 0.001))[0] == "read"  # the timer is still set as it closes
    assert asyncio.run(_read(d, 0.1, 10))[0] == "cut"
