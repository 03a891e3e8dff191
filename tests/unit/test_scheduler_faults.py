"""A storage fault in a scheduled job is one warning line, not a traceback every tick."""

from __future__ import annotations

import logging

import pytest

from openkeyvault.ops.scheduler import Scheduler
from openkeyvault.storage.errors import StorageFull


def test_a_storage_fault_is_said_once_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def full() -> int:
        calls.append(1)
        raise StorageFull("database or disk is full")

    scheduler = Scheduler({"purge-expired": full, "fine": lambda: 2})
    logger = logging.getLogger("openkeyvault")
    logger.propagate = True  # let caplog see it whatever configure_logging did
    try:
        with caplog.at_level(logging.INFO, logger="openkeyvault.scheduler"):
            assert scheduler.tick() == {"fine": 2}
            assert scheduler.tick() == {"fine": 2}
    finally:
        logger.propagate = False
    assert len(calls) == 2  # the job is still tried on every tick
    lines = [r for r in caplog.records if r.name == "openkeyvault.scheduler"]
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING and lines[0].exc_info is None
    assert "purge-expired" in lines[0].getMessage() and "full" in lines[0].getMessage()


def test_other_faults_still_carry_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> int:
        raise ValueError("a bug")

    logger = logging.getLogger("openkeyvault")
    logger.propagate = True
    try:
        with caplog.at_level(logging.INFO, logger="openkeyvault.scheduler"):
            Scheduler({"broken": broken}).tick()
    finally:
        logger.propagate = False
    records = [r for r in caplog.records if r.name == "openkeyvault.scheduler"]
    assert records and all(r.levelno == logging.ERROR and r.exc_info for r in records)
