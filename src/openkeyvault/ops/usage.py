"""Billing usage: transactions per vault and Azure billing meter, kept durably.

Meters (Azure's, docs/operations.md "Usage"; list prices in ops/prices.py):

- counted from requests (`Outcome.meter`, set by the operations table; only successful
  operations, 2xx, are billed): "operations" (secrets, RSA-2048 software keys,
  certificates), "advanced_key_operations" (RSA 3072/4096 and EC key operations), and
  any other meter an operation names;
- read from storage: "hsm_key_months" / "hsm_advanced_key_months" (HSM-protected key
  versions alive in the month), "managed_hsm_pool_hours" (from each pool's creation until
  it is purged), "key_rotation" (rotations done by a rotation policy: the "KeyRotated"
  events) and "certificate_renewal" (renewals done by a lifetime action: the
  "CertificateRenewed" events).

No request waits on the database for this: each worker adds to a dict in memory
(`UsageMeter.observe`, well under a microsecond of work) and a background thread adds the
dict to the `usage` table every FLUSH_SECONDS and at shutdown, with one upsert that adds
(storage/usage.py), so every worker and node of a deployment adds up in one table.

What can be lost: a worker killed outright (SIGKILL, the machine's power) loses what it
counted since its last flush, at most FLUSH_SECONDS of its requests; a normal stop
(SIGTERM, Ctrl-C) flushes first. A flush that fails (database away) keeps its counts in
memory and tries again at the next tick. A flush whose COMMIT was cut off after the
database applied it (the connection lost at that instant) may be added twice.
"""

from __future__ import annotations

import calendar
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from openkeyvault.ops.flusher import Flusher
from openkeyvault.ops.outcome import Outcome
from openkeyvault.ops.prices import Price, price_of

if TYPE_CHECKING:
    from openkeyvault.config import Settings
    from openkeyvault.storage.db import Engines
    from openkeyvault.storage.usage import UsageStore

log = logging.getLogger("openkeyvault.usage")

FLUSH_SECONDS = 10.0
COUNTED = ("operations", "advanced_key_operations")
DERIVED = ("hsm_key_months", "hsm_advanced_key_months", "managed_hsm_pool_hours",
           "key_rotation", "certificate_renewal")
# Read from the events the scheduled jobs record once each (exactly once, whichever process
# ran the job): an Outcome naming one of these meters is not counted again.
FROM_EVENTS = ("key_rotation", "certificate_renewal")
# Display order of `okv usage`.
METERS = (*COUNTED, *DERIVED)
Key = tuple[str, str, str]  # (vault, meter, month)


def key_meter(kty: str, size: int | None) -> str:
    """The meter of a transaction on a key: RSA 3072/4096 and EC keys are billed as
    advanced key operations, RSA-2048 and oct keys as standard operations (§7)."""
    family = kty.removesuffix("-HSM")
    advanced = family == "EC" or (family == "RSA" and size is not None and size > 2048)
    return "advanced_key_operations" if advanced else "operations"


def month_of(t: float) -> tuple[str, float, float]:
    """The UTC month "YYYY-MM" of a time, with its [start, end) in Unix seconds."""
    g = time.gmtime(t)
    start = calendar.timegm((g.tm_year, g.tm_mon, 1, 0, 0, 0))
    end = calendar.timegm((g.tm_year + g.tm_mon // 12, g.tm_mon % 12 + 1, 1, 0, 0, 0))
    return f"{g.tm_year:04d}-{g.tm_mon:02d}", float(start), float(end)


class UsageMeter(Flusher):
    """The usage Observer of one worker process: counts in memory, flushed on a timer."""

    thread_name = "okv-usage-flush"

    def __init__(self, flush_to: Callable[[Mapping[Key, int]], None],
                 interval: float = FLUSH_SECONDS) -> None:
        super().__init__(interval)
        self._flush_to = flush_to
        self._counts: dict[Key, int] = {}
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time (timer, close)
        self._month: tuple[str, float, float] = ("", 0.0, 0.0)
        self._failing = False

    def observe(self, outcome: Outcome) -> None:
        meter = outcome.meter
        if meter is None or not 200 <= outcome.status < 300 or not outcome.resource_name \
                or meter in FROM_EVENTS:
            return
        t = outcome.time
        month = self._month
        if not month[1] <= t < month[2]:
            month = self._month = month_of(t)
        key = (outcome.resource_name, meter, month[0])
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def pending(self) -> dict[Key, int]:
        """What was counted and not yet flushed (a copy)."""
        with self._lock:
            return dict(self._counts)

    def flush(self) -> bool:
        """Add what was counted since the last flush to the table; whether it was written
        (on failure the counts stay, to be added at the next flush)."""
        with self._flushing:
            with self._lock:
                counts, self._counts = self._counts, {}
            if not counts:
                return True
            try:
                self._flush_to(counts)
            except Exception as exc:  # noqa: BLE001 - kept and retried; the server goes on
                with self._lock:
                    for k, n in counts.items():
                        self._counts[k] = self._counts.get(k, 0) + n
                if not self._failing:
                    log.warning("usage counts could not be written (%s); kept in memory "
                                "and retried every %g s", type(exc).__name__, self._interval)
                self._failing = True
                return False
            if self._failing:
                log.warning("usage counts written again")
            self._failing = False
            return True


def open_usage(settings: Settings, engines: Engines,
               interval: float = FLUSH_SECONDS) -> UsageMeter:
    """The usage Observer of a worker (the composition root calls this once per process):
    started, and flushed at exit."""
    from openkeyvault.storage.usage import UsageStore

    return UsageMeter(UsageStore(engines).add, interval).start()


# ---- meters read from storage ------------------------------------------------------------
def derived_readings(store: UsageStore, month: str, now: float) -> dict[Key, int]:
    """The storage-derived meters of `month`, per vault, as read now."""
    out: dict[Key, int] = {}
    for (vault, meter), n in store.hsm_key_versions_by_vault(month).items():
        out[vault, meter, month] = n
    for vault, n in store.pool_hours_by_vault(month, int(now)).items():
        out[vault, "managed_hsm_pool_hours", month] = n
    for meter, event in (("key_rotation", "KeyRotated"),
                         ("certificate_renewal", "CertificateRenewed")):
        for vault, n in store.events_by_vault(event, month).items():
            out[vault, meter, month] = n
    return out


def record_snapshots(store: UsageStore, now: float) -> int:
    """Keep the highest reading of each storage-derived meter for this month and the last
    (a scheduled job: a pool or key purged later still counts for the months it lived);
    how many stored readings rose (only those are written)."""
    from openkeyvault.storage.usage import SNAPSHOT

    this = month_of(now)
    last = month_of(this[1] - 1)[0]
    readings: dict[Key, int] = {}
    for month in (last, this[0]):
        stored = {(r.vault, r.meter, r.month): r.count for r in store.rows(month=month)
                  if r.meter.endswith(SNAPSHOT)}
        for (vault, meter, mo), n in derived_readings(store, month, now).items():
            key = (vault, meter + SNAPSHOT, mo)
            if n > stored.get(key, 0):
                readings[key] = n
    store.raise_to(readings)
    return len(readings)


@dataclass(frozen=True)
class UsageLine:
    vault: str
    month: str
    meter: str
    count: int
    price: Price | None

    @property
    def list_price_usd(self) -> float | None:
        return None if self.price is None else self.price.cost(self.count)

    def to_json(self) -> dict[str, Any]:
        p = self.price
        return {"vault": self.vault, "month": self.month, "meter": self.meter,
                "count": self.count,
                "list_price_usd": None if p is None else round(p.cost(self.count), 6),
                "price": None if p is None else {
                    "azure_meter": p.azure_meter, "usd": p.usd, "per": p.per,
                    "unit": p.unit, "as_of": p.as_of, "source": p.source,
                    "verified": p.verified}}


def report(store: UsageStore, now: float, vault: str | None = None,
           month: str | None = None) -> list[UsageLine]:
    """The counts per vault, month and meter (stored counts plus the storage-derived
    meters' readings), each with the equivalent Azure list price."""
    from openkeyvault.storage.usage import merged

    rows = store.rows(vault, month)
    months = {month} if month is not None else {r.month for r in rows} | {month_of(now)[0]}
    live: dict[Key, int] = {}
    for mo in months:
        live.update({k: n for k, n in derived_readings(store, mo, now).items()
                     if vault is None or k[0] == vault})
    totals = merged(rows, live)
    order = {m: i for i, m in enumerate(METERS)}
    keys = sorted((k for k, n in totals.items() if n),
                  key=lambda k: (k[2], k[0], order.get(k[1], len(order)), k[1]))
    return [UsageLine(v, mo, m, totals[v, m, mo], price_of(m)) for v, m, mo in keys]
