"""Storage for resource groups created explicitly (ARM's `PUT .../resourcegroups/{rg}`).

A resource group that holds a vault exists through the vault's placement
(`storage/placement.py`); this table keeps only the groups a client created by name, with
their location and tags, so that an empty group survives until it is deleted. Names are
case-insensitive within a subscription (kept as first written, matched in lower case).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from openkeyvault.storage.schema import resource_groups as _G
from openkeyvault.storage.store import Store


@dataclass(frozen=True)
class ResourceGroupRecord:
    subscription: str
    name: str
    location: str
    tags: dict[str, str] | None = None


def _record(row: Any) -> ResourceGroupRecord:
    return ResourceGroupRecord(row.subscription, row.name, row.location,
                               json.loads(row.tags) if row.tags else None)


class ResourceGroupStore(Store):
    def get(self, subscription: str, name: str) -> ResourceGroupRecord | None:
        with self._r.connect() as c:
            row = c.execute(select(_G).where(_G.c.subscription == subscription.lower(),
                                             _G.c.name_lc == name.lower())).first()
        return _record(row) if row else None

    def list(self, subscription: str) -> list[ResourceGroupRecord]:
        with self._r.connect() as c:
            return [_record(r) for r in c.execute(
                select(_G).where(_G.c.subscription == subscription.lower())
                .order_by(_G.c.name_lc))]

    def put(self, group: ResourceGroupRecord) -> bool:
        """Create or update the group in one transaction; True when it was created. An
        update keeps the name as first written (ARM's names keep their first casing)."""
        tags = json.dumps(group.tags, separators=(",", ":")) if group.tags is not None else None
        key = (_G.c.subscription == group.subscription.lower(),
               _G.c.name_lc == group.name.lower())
        try:
            with self._write() as c:
                if c.execute(select(_G.c.name).where(*key)).first() is None:
                    c.execute(insert(_G).values(subscription=group.subscription.lower(),
                                                name_lc=group.name.lower(), name=group.name,
                                                location=group.location, tags=tags))
                    return True
        except IntegrityError:  # another worker created it first: this PUT updates it
            pass
        with self._write() as c:
            c.execute(update(_G).where(*key).values(location=group.location, tags=tags))
        return False

    def delete(self, subscription: str, name: str) -> bool:
        """Remove the group's row; True when there was one."""
        with self._write() as c:
            done = c.execute(delete(_G).where(_G.c.subscription == subscription.lower(),
                                              _G.c.name_lc == name.lower()))
            return bool(done.rowcount)
