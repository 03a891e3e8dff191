"""The scheduler's lease: one process of the whole deployment runs the background jobs.

Two lease stores on one database, each with its own engines (as two nodes hold), race
for the lease on SQLite and on a real PostgreSQL: exactly one gets it, every round.
Expiry is the database's clock. Then two schedulers share one database in this
process, and at the end two dev nodes on one PostgreSQL database rotate a key by
policy exactly once, before and after the leading node is killed.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.keyvault.keys import (
    KeyClient,
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
)

from openkeyvault.ops.scheduler import LEASE_NAME, Scheduler
from openkeyvault.storage.db import Engines, open_database
from openkeyvault.storage.errors import StorageUnavailable
from openkeyvault.storage.leases import LeaseStore
from tests.support.identity import NodeIdentity
from tests.support.postgres import PostgresCluster
from tests.support.race import race
from tests.support.server import DevServer, running
from tests.support.waiting import wait_for

ROUNDS = 12


@pytest.fixture
def engines(database: str) -> Iterator[tuple[Engines, Engines]]:
    """Two sets of engines on one database: two nodes (or two worker processes)."""
    opened = (open_database(database), open_database(database))
    try:
        yield opened
    finally:
        for e in opened:
            e.dispose()


@pytest.fixture
def stores(engines: tuple[Engines, Engines]) -> tuple[LeaseStore, LeaseStore]:
    return LeaseStore(engines[0]), LeaseStore(engines[1])


def expired(store: LeaseStore, name: str) -> None:
    wait_for(lambda: store.holder(name) is None, f"lease {name} to expire")


# ---- the lease store ----------------------------------------------------------------
def test_of_two_racing_for_a_free_lease_one_gets_it(stores: tuple[LeaseStore, LeaseStore]
                                                    ) -> None:
    a, b = stores
    for i in range(ROUNDS):
        name = f"free-{i}"
        ra, rb = race(lambda: a.acquire(name, "node-a", 60),  # noqa: B023
                      lambda: b.acquire(name, "node-b", 60))  # noqa: B023
        assert sorted([ra, rb]) == [False, True], (ra, rb)
        for store in (a, b):
            held = store.holder(name)
            assert held is not None and held.holder == ("node-a" if ra else "node-b")


def test_of_two_racing_for_an_expired_lease_one_gets_it(stores: tuple[LeaseStore, LeaseStore]
                                                        ) -> None:
    a, b = stores
    for i in range(ROUNDS):
        name = f"expired-{i}"
        assert a.acquire(name, "gone", 0.001)
        expired(a, name)
        ra, rb = race(lambda: a.acquire(name, "node-a", 60),  # noqa: B023
                      lambda: b.acquire(name, "node-b", 60))  # noqa: B023
        assert sorted([ra, rb]) == [False, True], (ra, rb)
        assert not a.acquire(name, "gone", 60)  # its old holder is refused now


def test_a_late_renewal_races_a_takeover_and_one_wins(stores: tuple[LeaseStore, LeaseStore]
                                                      ) -> None:
    """The old holder renewing a lease that has just expired, against another taking it."""
    a, b = stores
    for i in range(ROUNDS):
        name = f"late-{i}"
        assert a.acquire(name, "node-a", 0.001)
        expired(a, name)
        ra, rb = race(lambda: a.acquire(name, "node-a", 60),  # noqa: B023
                      lambda: b.acquire(name, "node-b", 60))  # noqa: B023
        assert sorted([ra, rb]) == [False, True], (ra, rb)


def test_a_held_lease_is_refused_to_others_and_renewed_by_its_holder(
        stores: tuple[LeaseStore, LeaseStore]) -> None:
    a, b = stores
    assert a.acquire("held", "node-a", 5)
    assert not b.acquire("held", "node-b", 60)
    first = a.holder("held")
    assert first is not None and first.holder == "node-a" and 0 < first.remaining <= 5
    assert a.acquire("held", "node-a", 600)  # renewed: it now lasts longer
    renewed = b.holder("held")
    assert renewed is not None and renewed.holder == "node-a" and renewed.remaining > 5
    assert not b.acquire("held", "node-b", 60)


def test_an_expired_lease_is_taken_over(stores: tuple[LeaseStore, LeaseStore]) -> None:
    a, b = stores
    assert a.acquire("takeover", "node-a", 0.2)
    expired(b, "takeover")
    assert b.acquire("takeover", "node-b", 60)
    assert not a.acquire("takeover", "node-a", 60)
    held = a.holder("takeover")
    assert held is not None and held.holder == "node-b"


def test_only_the_holder_releases(stores: tuple[LeaseStore, LeaseStore]) -> None:
    a, b = stores
    assert a.acquire("released", "node-a", 600)
    assert not b.release("released", "node-b")
    assert not b.acquire("released", "node-b", 60)
    assert a.release("released", "node-a")
    assert a.holder("released") is None
    assert b.acquire("released", "node-b", 60)  # at once, not after the lease's time


def test_expiry_is_the_databases_clock_not_the_nodes(stores: tuple[LeaseStore, LeaseStore],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose clock runs an hour ahead neither takes a live lease nor keeps one
    alive past its time; one an hour behind still takes an expired one."""
    a, b = stores
    real = time.time
    assert a.acquire("skew", "node-a", 600)
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    assert not b.acquire("skew", "node-b", 60)
    assert a.acquire("short", "node-a", 0.2)
    monkeypatch.setattr(time, "time", lambda: real() - 3600)
    expired(b, "short")
    assert b.acquire("short", "node-b", 60)


# ---- schedulers sharing one database --------------------------------------------------
def counting(runs: list[str], who: str) -> dict[str, Callable[[], int]]:
    def job() -> int:
        runs.append(who)
        return 1
    return {"job": job, "other-job": lambda: 0}


@pytest.fixture
def scheduler_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    logger = logging.getLogger("openkeyvault")
    propagates = logger.propagate
    logger.propagate = True  # let caplog see it whatever configure_logging did
    try:
        with caplog.at_level(logging.INFO, logger="openkeyvault.scheduler"):
            yield caplog
    finally:
        logger.propagate = propagates


def lines(caplog: pytest.LogCaptureFixture, needle: str, holder: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "openkeyvault.scheduler" and needle in r.getMessage()
            and holder in r.getMessage()]


def test_one_scheduler_runs_the_jobs_and_another_takes_over_when_it_stops(
        engines: tuple[Engines, Engines], scheduler_log: pytest.LogCaptureFixture) -> None:
    runs: list[str] = []
    # A short interval: the lease (three intervals) lapses soon after its holder stops.
    first = Scheduler(counting(runs, "first"), 0.2, LeaseStore(engines[0]), holder="first")
    second = Scheduler(counting(runs, "second"), 0.2, LeaseStore(engines[1]), holder="second")
    for _ in range(5):
        assert first.tick() == {"job": 1, "other-job": 0}
        assert second.tick() == {}
    assert runs == ["first"] * 5
    assert first.leading and not second.leading
    assert len(lines(scheduler_log, "took the scheduler lease", "first")) == 1
    # `first` stops ticking (its process was killed): `second` takes over once the lease
    # has expired, and says so once.
    wait_for(lambda: second.tick(), "the second scheduler to take over")
    assert second.leading and runs[-1] == "second"
    assert len(lines(scheduler_log, "took the scheduler lease", "second")) == 1
    # `first` comes back: it is refused, stops, and says so once.
    assert first.tick() == {} and not first.leading
    assert first.tick() == {}
    assert len(lines(scheduler_log, "lost the scheduler lease", "first")) == 1
    assert second.tick() == {"job": 1, "other-job": 0}


def test_a_released_lease_is_taken_at_the_next_tick(
        engines: tuple[Engines, Engines], scheduler_log: pytest.LogCaptureFixture) -> None:
    runs: list[str] = []
    first = Scheduler(counting(runs, "first"), 600, LeaseStore(engines[0]), holder="first")
    second = Scheduler(counting(runs, "second"), 600, LeaseStore(engines[1]), holder="second")
    assert first.tick() and not second.tick()
    first.release()  # a process stopping: no need to wait 30 minutes for the lease to lapse
    assert second.tick() == {"job": 1, "other-job": 0}
    assert first.tick() == {}  # a released scheduler stays stopped
    assert len(lines(scheduler_log, "released the scheduler lease", "first")) == 1


class UnreachableLease:
    """A lease store whose database is gone (the scheduler's fault handling)."""

    def acquire(self, name: str, holder: str, ttl: float) -> bool:
        raise StorageUnavailable("the database is unreachable")

    def release(self, name: str, holder: str) -> bool:
        raise StorageUnavailable("the database is unreachable")


def test_an_unreachable_lease_pauses_the_jobs_with_one_line(
        scheduler_log: pytest.LogCaptureFixture) -> None:
    runs: list[str] = []
    scheduler = Scheduler(counting(runs, "here"), 30, UnreachableLease(), holder="here")
    for _ in range(3):
        assert scheduler.tick() == {}
    assert runs == []
    said = [r for r in scheduler_log.records if r.name == "openkeyvault.scheduler"]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelno == logging.WARNING and said[0].exc_info is None
    assert "unreachable" in said[0].getMessage()


# ---- two dev nodes on one PostgreSQL database --------------------------------------------
INTERVAL = 1.0  # the nodes' scheduler tick (OKV_SCHEDULER_INTERVAL); the lease lasts three
ROTATE_AFTER = 7 * 86_400
# The clock is moved to this long before the rotation is due: the jobs the dev endpoint
# runs at once find nothing to do, so the rotation is the leading scheduler's.
LEAD_TIME = 10
LEADS = re.compile(r"this process \((\S+)\) now runs the deployment's scheduled jobs")
ROTATED = "openkeyvault.scheduler key-rotation: 1"


def keys_on(node: DevServer) -> KeyClient:
    """A new client each time: a token issued before the clock moved a week has expired."""
    return KeyClient(node.vault_url(), NodeIdentity(node))


def versions(node: DevServer, name: str) -> list[Any]:
    return list(keys_on(node).list_properties_of_key_versions(name))


def move_clock(node: DevServer, seconds: float) -> dict[str, Any]:
    r = requests.post(f"{node.url}/_okv/dev/clock", json={"advanceSeconds": seconds},
                      headers={"X-IDENTITY-HEADER": node.env["IDENTITY_HEADER"]},
                      verify=node.ca, timeout=60)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def leaders(node: DevServer) -> list[str]:
    """The holders that announced, in `node`'s log, that they took the lease."""
    return LEADS.findall(node.log())


def rotate_once_by_policy(name: str, on: DevServer, leader: DevServer,
                          others: list[DevServer]) -> None:
    """Move the clock to just before the latest version of `name` is due for rotation;
    the leading node rotates it, once."""
    before = versions(on, name)
    created = max(v.created_on for v in before).timestamp()
    now = move_clock(on, 0)["now"]
    moved = move_clock(on, max(0.0, created + ROTATE_AFTER - LEAD_TIME - now))
    assert moved["jobs"]["key-rotation"] == 0, moved  # the scheduler's to do, not the call's
    counts = {n.port: n.log().count(ROTATED) for n in [leader, *others]}
    wait_for(lambda: len(versions(on, name)) > len(before), "the rotation by policy")
    wait_for(lambda: leader.log().count(ROTATED) == counts[leader.port] + 1,
             "the leader to log its rotation")
    time.sleep(3 * INTERVAL)  # a few more ticks of every node: none rotates it again
    assert len(versions(on, name)) == len(before) + 1
    assert leader.log().count(ROTATED) == counts[leader.port] + 1
    for other in others:
        assert other.log().count(ROTATED) == counts[other.port], other.log()


@pytest.mark.usefixtures("resolve_localhost")
def test_two_nodes_rotate_once_and_the_survivor_takes_over(
        postgres: PostgresCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = postgres.create_database()
    data = tmp_path / "data"
    monkeypatch.setenv("OKV_SCHEDULER_INTERVAL", str(INTERVAL))
    with running(data, workers=2, extra_args=("--database", url)) as a, \
            running(data, workers=2, extra_args=("--database", url)) as b:
        for env in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
            monkeypatch.setenv(env, a.env[env])
        nodes = {a.port: a, b.port: b}
        # One process of the four leads.
        wait_for(lambda: leaders(a) + leaders(b), "a process to take the scheduler lease")
        lease = LeaseStore(engines := open_database(url))
        try:
            held = lease.holder(LEASE_NAME)
            assert held is not None
            leader = next(n for n in nodes.values() if held.holder in leaders(n))
            survivor = b if leader is a else a

            name = f"leased-{uuid.uuid4().hex[:8]}"
            client = keys_on(survivor)
            client.create_ec_key(name, curve="P-256")
            client.update_key_rotation_policy(name, KeyRotationPolicy(lifetime_actions=[
                KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate,
                                          time_after_create="P7D")]))
            rotate_once_by_policy(name, survivor, leader, [survivor])

            # The leading node dies without a word; the other takes over once the lease
            # has expired, and the next rotation due happens once, there.
            assert leader.proc is not None
            os.killpg(leader.proc.pid, signal.SIGKILL)
            leader.proc.wait(60)
            wait_for(lambda: (lease.holder(LEASE_NAME) or held).holder in leaders(survivor),
                     "the surviving node to take the lease")
            rotate_once_by_policy(name, survivor, survivor, [])
            assert all(v.enabled for v in versions(survivor, name))
            assert len({v.version for v in versions(survivor, name)}) == 3
            created = [v.created_on for v in versions(survivor, name)]
            assert max(created) - min(created) >= dt.timedelta(days=14)
        finally:
            engines.dispose()
