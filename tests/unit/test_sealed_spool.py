"""The spool of a sealed worker (ops/sealedspool.py): entries read back as they were
kept, a spool taken once, a live worker's spool left alone, a dead one's taken, a full
spool counting what it drops, and a torn last line skipped."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from openkeyvault.ops import sealedspool
from openkeyvault.ops.audit import new_stream_id, stream_host
from openkeyvault.ops.outcome import Outcome
from openkeyvault.ops.sealedspool import SealedSpool, take

REFUSED = Outcome("", "vault", "alpha", None, "https://alpha.vault.localhost/secrets/s",
                  "7.6", 503, 1_800_000_000.5, 0.4, "10.0.0.7", "c-1", "r-1",
                  "/secrets/s?api-version=7.6", "ua/1 é", None, None, None, None, None)


def test_entries_come_back_as_kept_and_are_taken_once(tmp_path: Path) -> None:
    spool = SealedSpool(tmp_path, new_stream_id())
    spool.add(REFUSED)
    spool.add(dataclasses.replace(REFUSED, request_id="r-2", correlation_id=None))
    spool.close()
    assert [o.request_id for o in take(tmp_path, stream_host())] == ["r-1", "r-2"]
    assert next(iter(take(tmp_path, stream_host())), None) is None
    assert list(tmp_path.iterdir()) == []
    again = SealedSpool(tmp_path, new_stream_id())
    again.add(REFUSED)
    again.close()
    assert list(take(tmp_path, stream_host())) == [REFUSED]  # every field, as it was


def test_a_live_workers_spool_is_left_and_a_dead_ones_taken(tmp_path: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        for pid, request_id in ((live.pid, "live"), (dead.pid, "dead")):
            name = f"20261206T000000-{stream_host()}-{pid}-abcd0123"
            spool = SealedSpool(tmp_path, name)
            spool.add(dataclasses.replace(REFUSED, request_id=request_id))
            spool.close()
        other_host = SealedSpool(tmp_path, f"20261206T000000-elsewhere-{dead.pid}-abcd0123")
        other_host.add(REFUSED)
        other_host.close()
        assert [o.request_id for o in take(tmp_path, stream_host())] == ["dead"]
        assert sorted(p.name.split("-")[1] for p in tmp_path.iterdir()) == [
            "elsewhere", stream_host().split("-")[0]]
    finally:
        live.kill()
        live.wait()


def test_a_full_spool_counts_what_it_drops(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sealedspool, "SPOOL_MAX", 3)
    spool = SealedSpool(tmp_path, new_stream_id())
    for i in range(5):
        spool.add(dataclasses.replace(REFUSED, request_id=f"r-{i}"))
    spool.close()
    assert spool.dropped == 2
    assert len(list(take(tmp_path, stream_host()))) == 3


def test_a_torn_or_foreign_line_is_skipped(tmp_path: Path) -> None:
    spool = SealedSpool(tmp_path, new_stream_id())
    spool.add(REFUSED)
    spool.close()
    with open(spool.path, "ab") as f:
        f.write(b'{"not": "an outcome"}\n{"operation": "SecretGet", "sta')
    assert [o.request_id for o in take(tmp_path, stream_host())] == ["r-1"]
