"""Storage for the control plane: where each vault sits (subscription, resource group,
location, tenant, tags) and its soft-deleted state.

A vault without a `vault_placement` row sits in the default place handed to each call.
Every change is one write transaction; creating a vault writes the vault, its properties
and its placement together, so a half-created vault is never visible.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from openkeyvault.storage.readcache import VAULTS
from openkeyvault.storage.records import NameConflict, VaultRecord
from openkeyvault.storage.schema import (
    certificate_contacts,
    certificate_issuers,
    events,
    objects,
    vault_placement,
    vault_properties,
    vaults,
    versions,
)
from openkeyvault.storage.store import Store, Transaction

_P = vault_placement


@dataclass(frozen=True)
class Placement:
    subscription: str
    resource_group: str
    location: str
    tenant_id: str
    tags: dict[str, str] | None = None
    deleted_date: int | None = None
    scheduled_purge_date: int | None = None


@dataclass(frozen=True)
class PlacedVault:
    vault: VaultRecord
    placement: Placement


_SELECT = select(
    vaults, vault_properties.c.properties,
    _P.c.subscription, _P.c.resource_group, _P.c.location, _P.c.tenant_id, _P.c.tags,
    _P.c.deleted_date, _P.c.scheduled_purge_date,
).select_from(
    vaults.outerjoin(vault_properties, vault_properties.c.vault_id == vaults.c.id)
    .outerjoin(_P, _P.c.vault_id == vaults.c.id)
)


_PLACE = select(vaults.c.id, _P.c.subscription, _P.c.resource_group).select_from(
    vaults.outerjoin(_P, _P.c.vault_id == vaults.c.id)).where(vaults.c.name == bindparam("name"))


def _placed(row: Any, default: Placement) -> PlacedVault:
    vault = VaultRecord(id=row.id, name=row.name, kind=row.kind, sku=row.sku,
                        retention_days=row.retention_days,
                        purge_protection=bool(row.purge_protection), created=row.created,
                        properties=row.properties)
    if row.subscription is None:
        return PlacedVault(vault, default)
    return PlacedVault(vault, Placement(
        row.subscription, row.resource_group, row.location, row.tenant_id,
        json.loads(row.tags) if row.tags else None, row.deleted_date,
        row.scheduled_purge_date))


def _values(p: Placement) -> dict[str, Any]:
    return {"subscription": p.subscription, "resource_group": p.resource_group,
            "resource_group_lc": p.resource_group.lower(), "location": p.location,
            "tenant_id": p.tenant_id,
            "tags": json.dumps(p.tags, separators=(",", ":")) if p.tags is not None else None,
            "deleted_date": p.deleted_date, "scheduled_purge_date": p.scheduled_purge_date}


class PlacementStore(Store):
    def get(self, name: str, default: Placement) -> PlacedVault | None:
        """The vault named `name`, live or deleted."""
        with self._r.connect() as c:
            row = c.execute(_SELECT.where(vaults.c.name == name)).first()
        return _placed(row, default) if row else None

    def place(self, name: str) -> tuple[str | None, str | None] | None:
        """(subscription, resource group) of the vault named `name`, live or deleted
        (None, None when it has no placement row; None when there is no such vault),
        memoised while storage is unchanged: authorization decisions ask this."""
        params = {"name": name}
        row = self._first_cached((VAULTS,), _PLACE, params)
        return None if row is None else (row.subscription, row.resource_group)

    def list(self, default: Placement, *, deleted: bool) -> list[PlacedVault]:
        """Every live (or every deleted) vault; callers filter by place (few vaults)."""
        q = _SELECT.where(_P.c.deleted_date.is_not(None) if deleted
                          else _P.c.deleted_date.is_(None))
        with self._r.connect() as c:
            return [_placed(r, default) for r in c.execute(q.order_by(vaults.c.name))]

    def page(self, default: Placement, *, kind: str | None, subscription: str,
             group: str | None, after: str | None, limit: int, name: str | None = None
             ) -> tuple[builtins.list[PlacedVault], bool]:
        """Live vaults of `kind` (None: of every kind; `name`: only the one of that name)
        in a subscription (and resource group), in name order after `after` (keyset
        paging: the cost of a page does not grow with the vaults before it), at most
        `limit`; and whether more follow. A vault without a placement row is in the
        default place."""
        q = _SELECT.where(_P.c.deleted_date.is_(None), self._in_sub(default, subscription))
        if kind is not None:
            q = q.where(vaults.c.kind == kind)
        if name is not None:
            q = q.where(vaults.c.name == name.lower())
        if group is not None:
            in_group = func.lower(_P.c.resource_group) == group.lower()
            if group.lower() == default.resource_group.lower():
                in_group = in_group | _P.c.subscription.is_(None)
            q = q.where(in_group)
        if after is not None:
            q = q.where(vaults.c.name > after)
        with self._r.connect() as c:
            rows = c.execute(q.order_by(vaults.c.name).limit(limit + 1)).all()
        return [_placed(r, default) for r in rows[:limit]], len(rows) > limit

    @staticmethod
    def _in_sub(default: Placement, subscription: str) -> Any:
        unplaced = _P.c.subscription.is_(None)
        return (_P.c.subscription == subscription) | unplaced \
            if subscription == default.subscription else _P.c.subscription == subscription

    def groups_in_use(self, default: Placement, subscription: str
                      ) -> builtins.list[tuple[str, str]]:
        """(resource group, a location) of each group that live vaults of `subscription`
        sit in, one query however many vaults there are."""
        q = (select(_P.c.resource_group, func.min(_P.c.location), func.count())
             .select_from(vaults.outerjoin(_P, _P.c.vault_id == vaults.c.id))
             .where(_P.c.deleted_date.is_(None), self._in_sub(default, subscription))
             .group_by(_P.c.resource_group))
        with self._r.connect() as c:
            rows = c.execute(q).all()
        return [(g, loc) if g is not None else (default.resource_group, default.location)
                for g, loc, _ in rows]

    def create(self, name: str, sku: str, retention_days: int, purge_protection: bool,
               now: int, placement: Placement, properties: str | None,
               kind: str = "vault") -> None:
        """Insert the vault (or another kind of vault row, e.g. a managed HSM), its
        properties and placement; NameConflict if the name is taken by any kind (`deleted`
        True when a soft-deleted one holds it)."""
        try:
            with self._write(VAULTS) as c:
                vault_id = c.execute(insert(vaults).values(
                    name=name, kind=kind, sku=sku, retention_days=retention_days,
                    purge_protection=purge_protection, created=now)).inserted_primary_key
                assert vault_id is not None
                vault_id = vault_id[0]
                if properties is not None:
                    c.execute(insert(vault_properties).values(
                        vault_id=vault_id, properties=properties, updated=now))
                c.execute(insert(_P).values(vault_id=vault_id, **_values(placement)))
        except IntegrityError:
            with self._r.connect() as c:
                deleted = c.execute(
                    select(_P.c.deleted_date).select_from(vaults.join(_P, _P.c.vault_id ==
                                                                      vaults.c.id))
                    .where(vaults.c.name == name)).scalar()
            raise NameConflict(deleted=deleted is not None) from None

    def place_unplaced(self, default: Placement) -> int:
        """Give every vault without a placement row the default one (idempotent)."""
        with self._write(VAULTS) as c:
            ids = c.execute(select(vaults.c.id).where(
                ~select(_P.c.vault_id).where(_P.c.vault_id == vaults.c.id).exists())).scalars()
            count = 0
            for vault_id in list(ids):
                c.execute(insert(_P).values(vault_id=vault_id, **_values(default)))
                count += 1
            return count

    def update(self, vault_id: int, *, placement: Placement,
               properties: str | Callable[[str | None], str] | None = None,
               sku: str | None = None, purge_protection: bool | None = None, now: int,
               also: Callable[[Transaction], None] | None = None) -> None:
        """Change a vault's placement (and its SKU, purge protection and properties when
        given) in one write transaction; `also` is called in it last (what must commit
        with the change: its events, ops/events.py). `properties` is the new document, or
        a function of the stored one (None: none stored) read in the same transaction, so
        a member another writer changed meanwhile is not lost."""
        with self._write(VAULTS) as c:
            changes: dict[str, Any] = {}
            if sku is not None:
                changes["sku"] = sku
            if purge_protection is not None:
                changes["purge_protection"] = purge_protection
            if changes:
                c.execute(update(vaults).where(vaults.c.id == vault_id).values(**changes))
            if properties is not None:
                row = c.execute(select(vault_properties.c.properties)
                                .where(vault_properties.c.vault_id == vault_id)).first()
                text = properties(row[0] if row is not None else None) \
                    if callable(properties) else properties
                if row is not None:
                    c.execute(update(vault_properties)
                              .where(vault_properties.c.vault_id == vault_id)
                              .values(properties=text, updated=now))
                else:
                    c.execute(insert(vault_properties).values(
                        vault_id=vault_id, properties=text, updated=now))
            have = c.execute(select(func.count()).select_from(_P)
                             .where(_P.c.vault_id == vault_id)).scalar()
            if have:
                c.execute(update(_P).where(_P.c.vault_id == vault_id)
                          .values(**_values(placement)))
            else:
                c.execute(insert(_P).values(vault_id=vault_id, **_values(placement)))
            if also is not None:
                also(c)

    def expired(self, now: int) -> builtins.list[tuple[int, str]]:
        """(id, name) of deleted vaults whose scheduled purge date has passed."""
        with self._r.connect() as c:
            return [(r.id, r.name) for r in c.execute(
                select(vaults.c.id, vaults.c.name).join(_P, _P.c.vault_id == vaults.c.id)
                .where(_P.c.scheduled_purge_date.is_not(None),
                       _P.c.scheduled_purge_date <= now))]

    def remove(self, vault_id: int) -> None:
        """Delete the vault and every row of it (objects, versions, settings); its data
        keys are the barrier's to destroy (`Barrier.destroy_owner`), first."""
        with self._write(VAULTS) as c:
            object_ids = select(objects.c.id).where(objects.c.vault_id == vault_id)
            c.execute(delete(versions).where(versions.c.object_id.in_(object_ids)))
            c.execute(delete(objects).where(objects.c.vault_id == vault_id))
            for table in (events, certificate_issuers, certificate_contacts, vault_properties,
                          _P):
                c.execute(delete(table).where(table.c.vault_id == vault_id))
            c.execute(delete(vaults).where(vaults.c.id == vault_id))
