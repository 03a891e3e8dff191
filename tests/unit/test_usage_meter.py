"""Usage counting and its arithmetic: what is billed, per month, flushed once; prices."""

from __future__ import annotations

import calendar
import json
import threading
from collections.abc import Mapping

import pytest

from openkeyvault.ops.outcome import Outcome
from openkeyvault.ops.prices import PRICES, price_of
from openkeyvault.ops.usage import DERIVED, METERS, UsageMeter, month_of
from openkeyvault.storage.usage import SNAPSHOT, UsageRow, hsm_meter, merged, month_bounds

DEC_31 = calendar.timegm((2026, 12, 31, 23, 59, 59))
JAN_1 = calendar.timegm((2027, 1, 1, 0, 0, 0))


def outcome(vault: str | None = "v1", meter: str | None = "operations", status: int = 200,
            t: float = DEC_31, operation: str = "SecretGet") -> Outcome:
    return Outcome(operation=operation, resource_kind="vault", resource_name=vault,
                   resource_id=None, object_id=None, api_version="7.5", status=status,
                   time=t, duration_ms=1.0, client_ip="127.0.0.1", correlation_id=None,
                   request_id="r", request_uri="/secrets/a", user_agent=None, caller=None,
                   rbac_authorized=None, access_policy_match=None, throttle_class=None,
                   meter=meter)


class Sink:
    """Where a meter flushes to: a dict standing in for the table, or a failure."""

    def __init__(self) -> None:
        self.table: dict[tuple[str, str, str], int] = {}
        self.calls = 0
        self.fail = False

    def __call__(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        self.calls += 1
        if self.fail:
            raise OSError("database away")
        for k, n in counts.items():
            self.table[k] = self.table.get(k, 0) + n


def test_only_successful_billed_operations_of_a_vault_count() -> None:
    sink = Sink()
    meter = UsageMeter(sink)
    meter.observe(outcome())
    meter.observe(outcome(meter="advanced_key_operations", operation="KeySign"))
    meter.observe(outcome(status=204))
    for not_billed in (outcome(meter=None), outcome(status=403), outcome(status=429),
                       outcome(status=503), outcome(status=401), outcome(vault=None),
                       outcome(status=301),
                       # scheduled ones are read from their events (not counted twice)
                       outcome(meter="key_rotation", operation="KeyRotateIfDue"),
                       outcome(meter="certificate_renewal", operation="CertificateRenew")):
        meter.observe(not_billed)
    assert meter.pending() == {("v1", "operations", "2026-12"): 2,
                               ("v1", "advanced_key_operations", "2026-12"): 1}


def test_counts_fall_in_the_month_of_the_request() -> None:
    meter = UsageMeter(Sink())
    meter.observe(outcome(t=DEC_31))
    meter.observe(outcome(t=JAN_1))
    meter.observe(outcome(t=DEC_31 - 86_400 * 40))  # November, after the cache moved on
    assert meter.pending() == {("v1", "operations", "2026-12"): 1,
                               ("v1", "operations", "2027-01"): 1,
                               ("v1", "operations", "2026-11"): 1}


def test_a_flush_hands_each_count_over_once() -> None:
    sink = Sink()
    meter = UsageMeter(sink)
    for _ in range(5):
        meter.observe(outcome())
    assert meter.flush()
    assert meter.flush()  # nothing new: not written again
    meter.observe(outcome())
    meter.flush()
    assert sink.table == {("v1", "operations", "2026-12"): 6}
    assert sink.calls == 2
    assert meter.pending() == {}


def test_a_failed_flush_keeps_its_counts_for_the_next() -> None:
    sink = Sink()
    meter = UsageMeter(sink)
    meter.observe(outcome())
    meter.observe(outcome())
    sink.fail = True
    assert not meter.flush()
    meter.observe(outcome())  # counted while the database was away
    assert meter.pending() == {("v1", "operations", "2026-12"): 3}
    sink.fail = False
    assert meter.flush()
    assert sink.table == {("v1", "operations", "2026-12"): 3}


def test_counts_from_many_threads_add_up_across_flushes() -> None:
    sink = Sink()
    meter = UsageMeter(sink)
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            meter.flush()

    t = threading.Thread(target=flusher)
    t.start()
    workers = [threading.Thread(target=lambda: [meter.observe(outcome()) for _ in range(5000)])
               for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    t.join()
    meter.flush()
    assert sink.table == {("v1", "operations", "2026-12"): 20_000}


def test_close_flushes_what_is_left_and_stops_the_timer() -> None:
    sink = Sink()
    meter = UsageMeter(sink, interval=3600).start()
    meter.observe(outcome())
    meter.close()
    assert sink.table == {("v1", "operations", "2026-12"): 1}


def test_merged_adds_counts_and_keeps_the_highest_derived_reading() -> None:
    rows = [UsageRow("v1", "operations", "2026-12", 7),
            UsageRow("v1", "operations", "2026-12", 3),  # (one row per key in the table)
            UsageRow("v1", "key_rotation" + SNAPSHOT, "2026-12", 4),
            UsageRow("p1", "managed_hsm_pool_hours" + SNAPSHOT, "2026-11", 100),
            UsageRow("v1", "hsm_key_months", "2026-12", 1)]
    live = {("v1", "key_rotation", "2026-12"): 2,  # a rotated key was purged since
            ("p1", "managed_hsm_pool_hours", "2026-11"): 120,
            ("v1", "hsm_key_months", "2026-12"): 2}
    assert merged(rows, live) == {
        ("v1", "operations", "2026-12"): 10,
        ("v1", "key_rotation", "2026-12"): 4,
        ("p1", "managed_hsm_pool_hours", "2026-11"): 120,
        # a row added by a process (none are, today) adds to the derived reading
        ("v1", "hsm_key_months", "2026-12"): 3,
    }


@pytest.mark.parametrize(("month", "start", "end"), [
    ("2026-12", (2026, 12, 1), (2027, 1, 1)),
    ("2027-02", (2027, 2, 1), (2027, 3, 1)),
    ("2028-02", (2028, 2, 1), (2028, 3, 1)),
])
def test_month_bounds(month: str, start: tuple[int, int, int],
                      end: tuple[int, int, int]) -> None:
    s, e = month_bounds(month)
    assert s == calendar.timegm((*start, 0, 0, 0))
    assert e == calendar.timegm((*end, 0, 0, 0))
    assert month_of(s)[0] == month and month_of(e - 1)[0] == month
    assert month_of(s)[1:] == (float(s), float(e))


@pytest.mark.parametrize(("props", "meter"), [
    ({"kty": "RSA-HSM", "size": 2048}, "hsm_key_months"),
    ({"kty": "RSA-HSM", "size": 3072}, "hsm_advanced_key_months"),
    ({"kty": "RSA-HSM", "size": 4096}, "hsm_advanced_key_months"),
    ({"kty": "EC-HSM", "size": 256}, "hsm_advanced_key_months"),
    ({"kty": "oct-HSM", "size": 256}, "hsm_key_months"),
    ({"kty": "RSA", "size": 4096}, None),
    ({"kty": "EC", "note": "-HSM"}, None),
])
def test_hsm_key_meter(props: dict[str, object], meter: str | None) -> None:
    assert hsm_meter(json.dumps(props)) == meter
    assert hsm_meter("not json") is None


def test_every_meter_has_a_dated_sourced_price() -> None:
    assert set(PRICES) == set(METERS)
    for meter in METERS:
        p = price_of(meter)
        assert p is not None and p.as_of and p.source and p.azure_meter and p.per > 0
    assert set(DERIVED) < set(METERS)


def test_price_arithmetic() -> None:
    ops = PRICES["operations"]
    assert ops.cost(10_000) == pytest.approx(0.03)
    assert ops.cost(25_000) == pytest.approx(0.075)
    assert PRICES["advanced_key_operations"].cost(20_000) == pytest.approx(0.30)
    assert PRICES["managed_hsm_pool_hours"].cost(730) == pytest.approx(2336.0)
    assert PRICES["key_rotation"].cost(3) == pytest.approx(3.0)
    assert PRICES["certificate_renewal"].cost(2) == pytest.approx(6.0)
    # Single reads and conflicting ones are not marked verified.
    assert not PRICES["advanced_key_operations"].verified
    assert not PRICES["hsm_advanced_key_months"].verified
