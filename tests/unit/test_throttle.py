"""Throttling's counting (ops/throttle.py, ops/limits.py): the sliding 10-second window,
the classes and key weights of Azure's limits, refusals that count nothing, the share of
each node, and worker processes sharing one node's counters through one file.

Time is given to the counters as whole seconds, so nothing here waits."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openkeyvault.config import (
    ENV_VAR,
    ConfigError,
    Settings,
    _throttling_settings,
    load_config,
    parse_throttling,
)
from openkeyvault.ops import limits
from openkeyvault.ops.outcome import Attempt
from openkeyvault.ops.throttle import (
    MESSAGE,
    NoThrottle,
    Refresher,
    SharedWindows,
    Throttle,
    counter_key,
    counters_path,
    open_throttle,
    scaled_limits,
)
from openkeyvault.storage.db import open_database
from openkeyvault.storage.errors import StorageUnavailable
from openkeyvault.storage.throttles import ThrottleStore
from openkeyvault.vault import operations
from tests.support.waiting import wait_for

KEY = counter_key("dev", "vault_other")


@pytest.fixture
def windows(tmp_path: Path) -> Iterator[SharedWindows]:
    w = SharedWindows(tmp_path / "counters", capacity=64)
    yield w
    w.close()


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def attempt(vault: str | None = "dev", throttle_class: str | None = "vault_other",
            kind: str = "vault", units: float = 1.0, operation: str = "SecretGet") -> Attempt:
    return Attempt(operation, kind, vault, throttle_class, units, None, "127.0.0.1")


def admitted(throttle: Throttle, a: Attempt, count: int) -> int:
    return sum(throttle.admit(a) is None for _ in range(count))


# ---- the window ------------------------------------------------------------------------
def test_a_limit_holds_over_any_ten_seconds(windows: SharedWindows) -> None:
    assert [windows.take(KEY, 100, 1, 3) for _ in range(4)] == [0, 0, 0, 10]
    # The window slides: the three of second 100 leave it at second 110, not before.
    assert windows.take(KEY, 109, 1, 3) == 1
    assert windows.take(KEY, 110, 1, 3) == 0


def test_retry_after_is_the_wait_until_enough_leaves_the_window(
        windows: SharedWindows) -> None:
    assert windows.take(KEY, 100, 2, 4) == 0
    assert windows.take(KEY, 105, 1, 4) == 0
    assert windows.take(KEY, 106, 1, 4) == 0
    # At 107 the window holds 4: one more fits once second 100's two leave it, at 110.
    assert windows.take(KEY, 107, 1, 4) == 3
    # Three more need second 105's one as well: at 115.
    assert windows.take(KEY, 107, 3, 4) == 8
    # More than the limit waits for an empty window (at 116), then fits alone.
    assert windows.take(KEY, 107, 5, 4) == 9
    assert windows.take(KEY, 110, 1, 4) == 0
    assert windows.take(KEY, 120, 5, 4) == 0
    assert windows.take(KEY, 121, 1, 4) == 9
    # A limit of 0 admits nothing.
    other = counter_key("dev", "key_create")
    assert windows.take(other, 100, 1, 0) == 10


def test_refusals_count_nothing(windows: SharedWindows) -> None:
    assert windows.take(KEY, 100, 3, 3) == 0
    for second in range(100, 110):
        assert windows.take(KEY, second, 1, 3) > 0
    # Only what was admitted at 100 was ever counted: all of it fits again at 110.
    assert [windows.take(KEY, 110, 1, 3) for _ in range(3)] == [0, 0, 0]


def test_a_long_pause_empties_the_window(windows: SharedWindows) -> None:
    assert windows.take(KEY, 100, 3, 3) == 0
    assert windows.take(KEY, 100_000, 3, 3) == 0


def test_a_second_already_left_behind_counts_in_the_latest(windows: SharedWindows) -> None:
    """A process that read the clock just before another took the lock counts in the
    other's second, never in one that has left the window."""
    assert windows.take(KEY, 105, 2, 3) == 0
    assert windows.take(KEY, 90, 1, 3) == 0
    assert windows.take(KEY, 105, 1, 3) > 0
    assert windows.take(KEY, 115, 3, 3) == 0


def test_counters_are_per_key_and_expired_slots_are_reused(tmp_path: Path) -> None:
    w = SharedWindows(tmp_path / "small", capacity=4)
    keys = [counter_key(f"v{i}", "vault_other") for i in range(4)]
    for k in keys:
        assert w.take(k, 100, 2, 2) == 0
    assert all(w.take(k, 101, 1, 2) > 0 for k in keys)
    # A fifth key while all four are live: admitted uncounted (never refused for want of
    # room); once theirs have left the window, it gets a slot and is counted.
    fifth = counter_key("v5", "vault_other")
    assert [w.take(fifth, 105, 1, 1) for _ in range(3)] == [0, 0, 0]
    assert [w.take(fifth, 111, 1, 1) for _ in range(2)] == [0, 10]
    w.close()


# ---- the gate: classes, weights, scales, nodes -------------------------------------------
def test_the_refusal_is_azures_throttled_answer(windows: SharedWindows) -> None:
    t = Throttle(windows, scaled_limits(1 / 100), Clock())  # secret_create: 3 per 10 s
    a = attempt(throttle_class="secret_create", operation="SecretSet")
    assert admitted(t, a, 3) == 3
    refusal = t.admit(a)
    assert refusal is not None
    assert (refusal.status, refusal.code, refusal.retry_after) == (429, "Throttled", 10)
    assert refusal.message == MESSAGE
    assert MESSAGE.endswith("Reason: VaultRequestTypeLimitReached")


def test_azures_numbers_are_the_default() -> None:
    assert limits.VAULT_LIMITS == {"secret_create": 300, "vault_other": 4000,
                                   "key_create": 20, "key_other": 4000}
    assert scaled_limits(1.0)["vault"] == limits.VAULT_LIMITS


def test_classes_and_vaults_count_apart(windows: SharedWindows) -> None:
    t = Throttle(windows, scaled_limits(1 / 100), Clock())
    assert admitted(t, attempt(throttle_class="secret_create"), 5) == 3
    assert admitted(t, attempt(throttle_class="vault_other"), 50) == 40
    # 0.2 per 10 s: one create fits in an empty window, so no class is ever shut.
    assert admitted(t, attempt(throttle_class="key_create"), 3) == 1
    assert admitted(t, attempt(vault="other", throttle_class="secret_create"), 5) == 3


@pytest.mark.parametrize("a", [
    attempt(throttle_class="management", kind="management", vault=None),
    attempt(throttle_class="management"),
    attempt(throttle_class="none", kind="identity", vault=None),
    attempt(throttle_class=None),
    attempt(vault=None),
    # A pool does not throttle its crypto, nor anything but role management writes.
    attempt(kind="managedhsm", throttle_class="key_other", operation="KeySign"),
    attempt(kind="managedhsm", throttle_class="key_create", operation="KeyCreate"),
    attempt(kind="managedhsm", throttle_class="vault_other", operation="RoleAssignmentList"),
])
def test_what_is_not_throttled(windows: SharedWindows, a: Attempt) -> None:
    t = Throttle(windows, scaled_limits(1e-9), Clock())
    assert admitted(t, a, 20) == 20


def test_a_pool_limits_role_management_writes(windows: SharedWindows) -> None:
    t = Throttle(windows, scaled_limits(1.0), Clock())
    a = attempt(kind="managedhsm", vault="pool", throttle_class="vault_other",
                operation="RoleAssignmentCreate")
    assert admitted(t, a, 60) == 50  # 5 per second


def test_key_weights_follow_azures_table() -> None:
    def hsm_limit(kty: str, size: int | None) -> float:
        return float(limits.VAULT_LIMITS["key_other"] / limits.key_units("key_other", kty,
                                                                         size))

    # Azure's "other ops" per 10 s, HSM and software.
    assert [hsm_limit("RSA-HSM", n) for n in (2048, 3072, 4096)] == [2000, 500, 250]
    assert [hsm_limit("RSA", n) for n in (2048, 3072, 4096)] == [4000, 1000, 500]
    assert hsm_limit("EC-HSM", None) == 2000
    assert hsm_limit("EC", None) == 4000
    assert hsm_limit("oct-HSM", 256) == 2000
    # CREATE (and RELEASE): 20 software keys, 10 HSM keys per 10 s.
    create = limits.VAULT_LIMITS["key_create"]
    assert create / limits.key_units("key_create", "RSA", 4096) == 20
    assert create / limits.key_units("key_create", "EC-HSM") == 10
    assert limits.key_units("secret_create", "RSA-HSM", 4096) == 1


def test_weights_are_enforced_on_the_sum(windows: SharedWindows) -> None:
    """Azure's example: 248 RSA-4096-HSM GETs and 16 RSA-2048-HSM GETs exhaust it."""
    t = Throttle(windows, scaled_limits(1.0), Clock())
    big = attempt(throttle_class="key_other", operation="KeyGet",
                  units=limits.key_units("key_other", "RSA-HSM", 4096))
    small = attempt(throttle_class="key_other", operation="KeyGet",
                    units=limits.key_units("key_other", "RSA-HSM", 2048))
    assert admitted(t, big, 248) == 248
    assert admitted(t, small, 16) == 16
    assert t.admit(small) is not None
    assert t.admit(attempt(throttle_class="key_other", units=1.0)) is not None


def test_a_vault_scale_and_the_nodes_share(windows: SharedWindows) -> None:
    clock = Clock()
    t = Throttle(windows, scaled_limits(1 / 100), clock)
    t.vault_scales = {"big": 2.0, "free": None}
    assert admitted(t, attempt(vault="big", throttle_class="secret_create"), 10) == 6
    assert admitted(t, attempt(vault="free", throttle_class="secret_create"), 50) == 50
    t.nodes = 2
    clock.now += 10
    assert admitted(t, attempt(vault="big", throttle_class="secret_create"), 10) == 3
    assert admitted(t, attempt(throttle_class="vault_other"), 50) == 20


def test_the_window_moves_with_the_clock(windows: SharedWindows) -> None:
    clock = Clock(500.0)
    t = Throttle(windows, scaled_limits(1 / 100), clock)
    a = attempt(throttle_class="secret_create")
    assert admitted(t, a, 3) == 3
    clock.now = 505.9
    refusal = t.admit(a)
    assert refusal is not None and refusal.retry_after == 5
    clock.now = 510.0
    assert admitted(t, a, 4) == 3


def test_limits_scale_and_overrides() -> None:
    scaled = scaled_limits(2.0, {"key_create": 7})
    assert scaled["vault"] == {"secret_create": 600, "vault_other": 8000,
                               "key_create": 7, "key_other": 8000}
    assert scaled["managedhsm"]["hsm_rbac_write"] == 100
    with pytest.raises(ValueError, match="unknown throttling class"):
        scaled_limits(1.0, {"secrets": 1})


def test_every_class_of_the_operations_table_is_known() -> None:
    unthrottled = {limits.MANAGEMENT, limits.NONE}
    assert set(limits.VAULT_LIMITS) | unthrottled == operations.THROTTLE_CLASSES


def test_throttling_off_admits_everything() -> None:
    gate = NoThrottle()
    assert all(gate.admit(attempt()) is None for _ in range(10))


# ---- settings ----------------------------------------------------------------------------
def test_the_dev_flag() -> None:
    assert parse_throttling("off") == {"throttling": False}
    assert parse_throttling("ON") == {"throttling": True}
    assert parse_throttling("0.01") == {"throttling": True, "throttling_scale": 0.01}
    for bad in ("0", "-1", "nan", "inf", "fast", ""):
        with pytest.raises(ValueError, match="--throttling"):
            parse_throttling(bad)


def test_the_config_table(tmp_path: Path) -> None:
    path = tmp_path / "okv.toml"
    assert _throttling_settings({}, path) == {}
    assert _throttling_settings({"enabled": False, "scale": 2, "limits": {
        "secret_create": 1000, "key_other": 0}}, path) == {
        "throttling": False, "throttling_scale": 2.0,
        "throttling_limits": {"secret_create": 1000.0, "key_other": 0.0}}
    bad: dict[str, Any]
    for bad in ({"enabled": "no"}, {"scale": 0}, {"scale": True}, {"limit": {}},
                {"limits": {"secrets": 1}}, {"limits": {"key_create": -1}},
                {"limits": 5}):
        with pytest.raises(ConfigError):
            _throttling_settings(bad, path)


def test_a_production_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "okv.toml"
    base = """[server]\ndata_dir = "data"\n[tls]\ncertificate = "tls.crt"\nkey = "tls.key"
[seal]\ntype = "shamir"\nshares = 3\nthreshold = 2\n"""
    path.write_text(base)
    default = load_config(path)
    assert (default.throttling, default.throttling_scale, default.throttling_limits) == (
        True, 1.0, {})
    path.write_text(base + "[throttling]\nscale = 0.5\n[throttling.limits]\nkey_create = 40\n")
    given = load_config(path)
    assert (given.throttling, given.throttling_scale, given.throttling_limits) == (
        True, 0.5, {"key_create": 40.0})
    # What a worker process gets through the environment.
    monkeypatch.setenv(ENV_VAR, given.to_env())
    assert Settings.from_env() == given
    path.write_text(base + "[throttling]\nscale = -1\n")
    with pytest.raises(ConfigError, match="scale must be a positive number"):
        load_config(path)


# ---- storage: live nodes and vault scales --------------------------------------------------
def test_live_nodes_and_vault_scales(tmp_path: Path) -> None:
    one, two = open_database(tmp_path / "okv.db"), open_database(tmp_path / "okv.db")
    try:
        a, b = ThrottleStore(one), ThrottleStore(two)
        assert a.live_nodes() == 0
        a.heartbeat("host-a/10", 30)
        a.heartbeat("host-a/10", 30)  # a second worker of the same node
        assert b.live_nodes() == 1
        b.heartbeat("host-b/10", 0.001)
        assert a.live_nodes() in (1, 2)  # b's lapses at once
        b.heartbeat("host-b/10", 30)
        assert a.live_nodes() == 2
        a.set_vault_scale("dev", 2.5)
        a.set_vault_scale("quiet", None)
        a.set_vault_scale("dev", 3.0)
        assert b.vault_scales() == {"dev": 3.0, "quiet": None}
        b.reset_vault_scale("dev")
        assert a.vault_scales() == {"quiet": None}
        # The refresh a worker runs: the share follows the live nodes.
        t = Throttle(SharedWindows(tmp_path / "c", capacity=8), scaled_limits(1.0))
        t.refresh(a, "host-a/10")
        assert (t.nodes, t.vault_scales) == (2, {"quiet": None})
    finally:
        one.dispose()
        two.dispose()


def test_nodes_on_one_machine_keep_their_own_counters(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert counters_path(data, 100) != counters_path(data, 101)
    assert counters_path(data, 100) == counters_path(data, 100)


# ---- worker processes of one node ----------------------------------------------------------
WORKERS = 4
TRIES = 20_000
LIMIT = 50_000


def _worker(path: str, start: Any, results: Any) -> None:
    windows = SharedWindows(Path(path), capacity=64)
    start.wait(30)
    results.put(sum(windows.take(KEY, 7000, 1, LIMIT) == 0 for _ in range(TRIES)))
    windows.close()


def test_worker_processes_share_their_nodes_limit(tmp_path: Path) -> None:
    """Four real processes, each trying 20,000 requests in the same second against one
    limit of 50,000 through one file: exactly 50,000 are admitted in all (not 4 × 20,000:
    no update is lost to another process's, and none is counted twice)."""
    ctx = multiprocessing.get_context("spawn")
    path = tmp_path / "counters"
    SharedWindows(path, capacity=64).close()
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(path), start, results))
             for _ in range(WORKERS)]
    for p in procs:
        p.start()
    try:
        start.set()
        counts = [results.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert sum(counts) == LIMIT
    # The parent, a fifth process, sees the same window.
    windows = SharedWindows(path, capacity=64)
    assert windows.take(KEY, 7000, 1, LIMIT) == 10
    windows.close()


# ---- `okv vault throttle` ------------------------------------------------------------------
def test_a_vaults_own_scale_from_the_cli(tmp_path: Path) -> None:
    from tests.support.okvcli import run

    data = str(tmp_path / "data")

    def okv(*args: str) -> Any:
        done = run("vault", *args, "--data-dir", data)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.startswith("{") else done.stdout

    okv("create", "busy", "--output", "json")
    shown = okv("throttle", "busy")
    assert shown == {"name": "busy", "scale": 1.0, "limits": dict(limits.VAULT_LIMITS)}
    assert okv("throttle", "BUSY", "--scale", "2.5")["limits"]["secret_create"] == 750
    assert okv("throttle", "busy")["scale"] == 2.5
    assert okv("throttle", "busy", "--off") == {"name": "busy", "scale": "off", "limits": {}}
    engines = open_database(tmp_path / "data" / "okv.db")
    try:
        assert ThrottleStore(engines).vault_scales() == {"busy": None}
    finally:
        engines.dispose()
    assert okv("throttle", "busy", "--reset")["scale"] == 1.0
    for args, says in ((("nothere",), "no vault or managed HSM pool named 'nothere'"),
                       (("busy", "--scale", "0"), "--scale must be a positive number"),
                       (("busy", "--scale", "nan"), "--scale must be a positive number"),
                       (("busy", "--off", "--reset"), "give one of")):
        done = run("vault", "throttle", *args, "--data-dir", data)
        assert done.returncode == 2, (args, done.stdout)
        assert says in done.stderr and done.stdout == ""


# ---- the refresh ---------------------------------------------------------------------------
class Storage:
    """Storage as the refresh sees it, able to fail as a full disk or a lost database does."""

    def __init__(self) -> None:
        self.failing = False
        self.nodes = 3

    def heartbeat(self, node: str, ttl: float) -> None:
        if self.failing:
            raise StorageUnavailable("the database is not reachable")

    def live_nodes(self) -> int:
        return self.nodes

    def vault_scales(self) -> dict[str, float | None]:
        return {"dev": 2.0}


def test_a_failing_refresh_keeps_what_was_known(
        windows: SharedWindows, caplog: pytest.LogCaptureFixture) -> None:
    t = Throttle(windows, scaled_limits(1.0))
    storage = Storage()
    refresher = Refresher(t, storage, "host/1")
    refresher.refresh()
    assert (t.nodes, t.vault_scales) == (3, {"dev": 2.0})
    storage.failing, storage.nodes = True, 5
    with caplog.at_level("WARNING", logger="openkeyvault.throttle"):
        refresher.refresh()
        refresher.refresh()
    assert (t.nodes, t.vault_scales) == (3, {"dev": 2.0})
    said = [r.getMessage() for r in caplog.records if r.name == "openkeyvault.throttle"]
    assert len(said) == 1 and "the last known are used" in said[0], said
    storage.failing = False
    refresher.refresh()
    assert t.nodes == 5


def test_open_throttle_follows_the_settings(tmp_path: Path) -> None:
    assert isinstance(open_throttle(Settings(data_dir=tmp_path, throttling=False)), NoThrottle)
    engines = open_database(tmp_path / "okv.db")
    try:
        ThrottleStore(engines).heartbeat("another-host/1", 30)
        gate = open_throttle(Settings(data_dir=tmp_path, throttling_scale=0.01,
                                      throttling_limits={"vault_other": 5}), engines)
        assert isinstance(gate, Throttle)
        try:
            assert gate.limits["vault"]["secret_create"] == 3
            assert gate.limits["vault"]["vault_other"] == 5
            wait_for(lambda: gate.nodes == 2, "the refresh to count two live nodes")
        finally:
            gate.close()
            gate.windows.path.unlink()
    finally:
        engines.dispose()


# ---- leases: most requests counted without the file lock ----------------------------------
def test_a_lease_counts_ahead_and_is_given_back(tmp_path: Path) -> None:
    """A process counts whole requests ahead (at most 32, at most an eighth of the room
    left) and spends them without the file's lock; another process sees them counted.
    What is not spent goes back when the process next takes the lock in a later second,
    and when it closes: in the end exactly what was admitted is counted."""
    path = tmp_path / "counters"
    a, b = SharedWindows(path, capacity=64), SharedWindows(path, capacity=64)
    try:
        assert a.take(KEY, 100, 1, 400) == 0  # 1 admitted, 32 ahead: 33 counted
        assert b.take(KEY, 100, 1, 34) == 0
        assert b.take(KEY, 100, 1, 34) > 0  # the lease's units count for everyone
        assert [a.take(KEY, 100, 1, 400) for _ in range(32)] == [0] * 32  # from the lease
        assert b.take(KEY, 100, 1, 34) > 0  # still 34: the lease was spent, not added to
        assert a.take(KEY, 101, 1, 400) == 0  # a new second: nothing was left to give back
        a.close()  # the 32 counted ahead at 101 go back: 35 were admitted in all
        assert [b.take(KEY, 101, 1, 36) for _ in range(2)] == [0, 9]
    finally:
        b.close()


def test_leases_shrink_to_none_near_the_limit(windows: SharedWindows) -> None:
    """Near the limit every request takes the lock, so the limit is met exactly."""
    assert [windows.take(KEY, 100, 1, 20) for _ in range(21)] == [0] * 20 + [10]
    other = counter_key("dev", "key_other")
    assert [windows.take(other, 100, 2.5, 500) for _ in range(201)] == [0] * 200 + [10]


def test_an_unspent_lease_of_an_earlier_second_goes_back_to_that_second(
        tmp_path: Path) -> None:
    path = tmp_path / "counters"
    a, b = SharedWindows(path, capacity=64), SharedWindows(path, capacity=64)
    try:
        assert a.take(KEY, 100, 1, 400) == 0  # 32 ahead, counted in second 100
        assert a.take(KEY, 105, 1, 400) == 0  # they go back to 100; 32 ahead at 105
        a.close()
        # Counted: one at 100 and one at 105. At 109 a limit of 3 leaves room for one.
        assert [b.take(KEY, 109, 1, 3) for _ in range(2)] == [0, 1]
        assert b.take(KEY, 110, 1, 3) == 0  # second 100's one has left the window
    finally:
        b.close()
