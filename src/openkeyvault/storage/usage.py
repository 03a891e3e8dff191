"""Billing usage rows: counts per (vault, meter, month), added to by every process.

Each worker keeps its counts in memory (ops/usage.py) and hands them here on a timer:
`add` is one transaction of upserts that ADD (`INSERT ... ON CONFLICT DO UPDATE SET
count = count + excluded.count`), so two processes or nodes flushing the same key at the
same time both land: PostgreSQL locks the conflicting row and applies the second
increment to the first's committed value; SQLite serialises the writers. Keys are
written in sorted order, so two flushes never wait on each other's rows crosswise.

Meters read from storage rather than counted (HSM key versions alive in a month, Managed
HSM pool-hours, scheduled rotations and renewals) are computed by the `*_by_vault`
readers; `raise_to` keeps the highest reading seen under "<meter>@snapshot", so a purge
that removes the rows they were read from does not lower what the month billed.
"""

from __future__ import annotations

import calendar
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

from openkeyvault.storage.db import Engines
from openkeyvault.storage.schema import events, objects, usage, vault_placement, vaults, versions
from openkeyvault.storage.store import Store

SNAPSHOT = "@snapshot"  # suffix of a derived meter's highest reading
Key = tuple[str, str, str]  # (vault, meter, month)


@dataclass(frozen=True)
class UsageRow:
    vault: str
    meter: str
    month: str  # "YYYY-MM" (UTC)
    count: int


def month_bounds(month: str) -> tuple[int, int]:
    """[start, end) of a "YYYY-MM" month in Unix seconds (UTC)."""
    year, mon = (int(p) for p in month.split("-"))
    start = calendar.timegm((year, mon, 1, 0, 0, 0))
    end = calendar.timegm((year + mon // 12, mon % 12 + 1, 1, 0, 0, 0))
    return start, end


def hsm_meter(props: str | None) -> str | None:
    """The key-month meter of a key version's stored props (JSON), None if not HSM."""
    try:
        p = json.loads(props or "")
        kty, size = p.get("kty", ""), p.get("size")
    except (ValueError, AttributeError):
        return None
    if not isinstance(kty, str) or not kty.endswith("-HSM"):
        return None
    if kty == "EC-HSM" or (kty == "RSA-HSM" and isinstance(size, int) and size > 2048):
        return "hsm_advanced_key_months"
    return "hsm_key_months"


def _statements(dialect: str) -> tuple[Any, Any]:
    insert = (postgresql if dialect == "postgresql" else sqlite_dialect).insert(usage)
    row = insert.values(vault=bindparam("vault"), meter=bindparam("meter"),
                        month=bindparam("month"), count=bindparam("count"))
    keys = [usage.c.vault, usage.c.meter, usage.c.month]
    add = row.on_conflict_do_update(index_elements=keys,
                                    set_={"count": usage.c.count + row.excluded.count})
    raise_to = row.on_conflict_do_update(index_elements=keys,
                                         set_={"count": row.excluded.count},
                                         where=usage.c.count < row.excluded.count)
    return add, raise_to


class UsageStore(Store):
    def __init__(self, engines: Engines) -> None:
        super().__init__(engines)
        self._add, self._raise = _statements(engines.dialect)

    def add(self, counts: Mapping[Key, int]) -> None:
        """Add `counts` to the stored ones, in one transaction (all or nothing)."""
        self._upsert(self._add, counts)

    def raise_to(self, readings: Mapping[Key, int]) -> None:
        """Store each reading where it is higher than the one stored."""
        self._upsert(self._raise, readings)

    def _upsert(self, statement: Any, counts: Mapping[Key, int]) -> None:
        rows = [{"vault": v, "meter": m, "month": mo, "count": int(n)}
                for (v, m, mo), n in sorted(counts.items()) if n]
        if not rows:
            return
        with self._write() as c:
            c.execute(statement, rows)

    def rows(self, vault: str | None = None, month: str | None = None) -> list[UsageRow]:
        q = (select(usage.c.vault, usage.c.meter, usage.c.month, usage.c.count)
             .order_by(usage.c.vault, usage.c.month, usage.c.meter))
        if vault is not None:
            q = q.where(usage.c.vault == vault)
        if month is not None:
            q = q.where(usage.c.month == month)
        with self._r.connect() as c:
            return [UsageRow(v, m, mo, int(n)) for v, m, mo, n in c.execute(q)]

    # ---- meters read from storage ----------------------------------------------------
    def hsm_key_versions_by_vault(self, month: str) -> dict[tuple[str, str], int]:
        """HSM-protected key versions (kty RSA-HSM, EC-HSM, oct-HSM) that existed during
        `month` (created before its end, in a key not deleted before its start), per
        (vault, "hsm_key_months" | "hsm_advanced_key_months"): RSA 3072/4096 and EC keys
        are Azure's advanced keys. An upper bound of Azure's meter, which bills a version
        only if it was used in the last 30 days (use per version is not recorded)."""
        start, end = month_bounds(month)
        q = (select(vaults.c.name, versions.c.props)
             .select_from(versions.join(objects, versions.c.object_id == objects.c.id)
                          .join(vaults, objects.c.vault_id == vaults.c.id))
             .where(objects.c.collection == "keys", versions.c.created < end,
                    versions.c.props.contains("-HSM"),
                    or_(objects.c.deleted_date.is_(None), objects.c.deleted_date >= start)))
        out: dict[tuple[str, str], int] = {}
        with self._r.connect() as c:
            for name, props in c.execute(q):
                meter = hsm_meter(props)
                if meter is not None:
                    out[name, meter] = out.get((name, meter), 0) + 1
        return out

    def pool_hours_by_vault(self, month: str, now: int) -> dict[str, int]:
        """Managed HSM pool-hours in `month`: each pool from its creation until `now`
        (a soft-deleted pool is billed until it is purged; a purged one has no row left),
        every hour begun counted whole."""
        start, end = month_bounds(month)
        q = (select(vaults.c.name, vaults.c.created)
             .where(func.lower(vaults.c.kind) == "managedhsm", vaults.c.created < end))
        out: dict[str, int] = {}
        with self._r.connect() as c:
            for name, created in c.execute(q):
                seconds = min(end, now) - max(start, int(created))
                if seconds > 0:
                    out[name] = math.ceil(seconds / 3600)
        return out

    def events_by_vault(self, event_type: str, month: str) -> dict[str, int]:
        """How many `event_type` events (recorded once each: "KeyRotated" by the rotation
        policy job, "CertificateRenewed" by the lifetime-action job) each vault had in
        `month`."""
        start, end = month_bounds(month)
        q = (select(vaults.c.name, func.count())
             .select_from(events.join(vaults, events.c.vault_id == vaults.c.id))
             .where(and_(events.c.type == event_type, events.c.time >= start,
                         events.c.time < end))
             .group_by(vaults.c.name))
        with self._r.connect() as c:
            return {name: int(n) for name, n in c.execute(q)}

    def deleted_pools(self) -> set[str]:
        """Names of soft-deleted pools (still billed)."""
        q = (select(vaults.c.name)
             .select_from(vaults.join(vault_placement,
                                      vault_placement.c.vault_id == vaults.c.id))
             .where(func.lower(vaults.c.kind) == "managedhsm",
                    vault_placement.c.deleted_date.is_not(None)))
        with self._r.connect() as c:
            return {r[0] for r in c.execute(q)}


def merged(rows: Iterable[UsageRow], live: Mapping[Key, int]) -> dict[Key, int]:
    """What each (vault, meter, month) billed: the counts added by the processes, plus for
    a meter read from storage the higher of its stored snapshot and its live reading
    (`live`, under the meter's own name)."""
    counted: dict[Key, int] = {}
    derived: dict[Key, int] = dict(live)
    for r in rows:
        if r.meter.endswith(SNAPSHOT):
            k = (r.vault, r.meter[: -len(SNAPSHOT)], r.month)
            derived[k] = max(derived.get(k, 0), r.count)
        else:
            k = (r.vault, r.meter, r.month)
            counted[k] = counted.get(k, 0) + r.count
    for k, n in derived.items():
        counted[k] = counted.get(k, 0) + n
    return counted
