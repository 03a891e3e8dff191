"""Event subscriptions of vaults and the outbox of their deliveries (ops/events.py).

The outbox holds one row per event per subscription until a delivery loop has handed it
over or given up. Several processes on several nodes run that loop: a claim moves a
row's `due` past the attempt in the same statement that picks it (`FOR UPDATE SKIP
LOCKED` on PostgreSQL, so two nodes never wait on or take the same row; SQLite
serialises writers anyway). A node that dies mid-attempt leaves the row to be claimed
again once the claim runs out: delivery is at least once, as Event Grid's is.

An expiry notice is due once per version: its mark in `events` (vault, type, object,
version; unique) and its outbox rows are written in one transaction, so a notice is
neither lost nor sent twice by jobs that race.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from openkeyvault.storage.db import Engines
from openkeyvault.storage.schema import (
    event_outbox,
    event_subscriptions,
    events,
    objects,
    vault_placement,
    vaults,
    versions,
)
from openkeyvault.storage.store import Store, insert_ignore


class SubscriptionExists(Exception):
    """A subscription of that name exists on the vault."""


@dataclass(frozen=True)
class SubscriptionRecord:
    id: int
    vault_id: int
    vault_name: str
    name: str
    endpoint: str
    event_types: tuple[str, ...] | None  # None: every type
    schema: str
    created: int

    def wants(self, event_type: str) -> bool:
        return self.event_types is None or event_type in self.event_types


@dataclass(frozen=True)
class Pending:
    """One event for one subscription, as it waits in the outbox."""

    subscription_id: int
    event_id: str
    body: str


@dataclass(frozen=True)
class Claimed:
    """An outbox row a delivery loop has claimed, with where it goes."""

    id: int
    event_id: str
    body: str
    attempts: int  # attempts made before this one
    endpoint: str
    schema: str
    subscription: str
    vault_name: str


@dataclass(frozen=True)
class Expiring:
    """The latest version of a live object that has an expiry date."""

    vault_id: int
    vault_name: str
    collection: str
    name: str
    version: str
    created: int
    nbf: int | None
    exp: int
    policy: dict[str, Any] | None


_newer = versions.alias("newer")
_LATEST = (select(func.max(_newer.c.seq)).where(_newer.c.object_id == versions.c.object_id)
           .correlate(versions).scalar_subquery())
_SUBSCRIBED = select(event_subscriptions.c.vault_id)
_DELETED = select(vault_placement.c.vault_id).where(vault_placement.c.deleted_date.is_not(None))
_SUB_COLS = (*event_subscriptions.c, vaults.c.name.label("vault_name"))
_ALL = (select(*_SUB_COLS).select_from(event_subscriptions.join(
    vaults, event_subscriptions.c.vault_id == vaults.c.id))
    .order_by(vaults.c.name, event_subscriptions.c.name))
_OF_VAULT = _ALL.where(event_subscriptions.c.vault_id == bindparam("vault_id"))


def _subscription(r: Any) -> SubscriptionRecord:
    types = tuple(json.loads(r.event_types)) if r.event_types else None
    return SubscriptionRecord(r.id, r.vault_id, r.vault_name, r.name, r.endpoint, types,
                              r.schema, r.created)


class SubscriptionStore(Store):
    def __init__(self, engines: Engines) -> None:
        super().__init__(engines)
        self._postgres = engines.dialect == "postgresql"

    # ---- subscriptions ----------------------------------------------------------
    def add(self, vault_id: int, name: str, endpoint: str, event_types: list[str] | None,
            schema: str, created: int) -> None:
        """SubscriptionExists if the vault has one of that name."""
        values = {"vault_id": vault_id, "name": name, "endpoint": endpoint,
                  "event_types": json.dumps(event_types) if event_types else None,
                  "schema": schema, "created": created}
        try:
            with self._write() as c:
                if not insert_ignore(c, event_subscriptions, values):
                    raise SubscriptionExists(name)
        except IntegrityError:
            raise SubscriptionExists(name) from None

    def find(self, vault_id: int | None = None) -> list[SubscriptionRecord]:
        """A vault's subscriptions (every vault's with None). Asked after every new
        version: one indexed read through the hot-path reader."""
        if vault_id is not None:
            return [_subscription(r) for r in self._all(_OF_VAULT, {"vault_id": vault_id})]
        with self._r.connect() as c:
            return [_subscription(r) for r in c.execute(_ALL)]

    def find_in(self, c: Connection, vault_id: int) -> list[SubscriptionRecord]:
        """A vault's subscriptions, read in the caller's write transaction."""
        return [_subscription(r) for r in c.execute(_OF_VAULT, {"vault_id": vault_id})]

    def delete(self, vault_id: int, name: str) -> bool:
        """Remove the subscription and whatever of it is still in the outbox."""
        with self._write() as c:
            ids = [r.id for r in c.execute(select(event_subscriptions.c.id).where(
                event_subscriptions.c.vault_id == vault_id,
                event_subscriptions.c.name == name))]
            if not ids:
                return False
            c.execute(delete(event_outbox).where(event_outbox.c.subscription_id.in_(ids)))
            c.execute(delete(event_subscriptions).where(event_subscriptions.c.id.in_(ids)))
            return True

    # ---- the outbox -------------------------------------------------------------
    def enqueue(self, pending: list[Pending], due_ms: int, created: int,
                once: tuple[int, str, str, str] | None = None) -> bool:
        """Put `pending` in the outbox, in one transaction. With `once` (vault id, event
        type, object name, version): only if that event was not recorded before, and
        record it; whether anything was written."""
        with self._write() as c:
            if once is not None and not insert_ignore(c, events, {
                "vault_id": once[0], "type": once[1], "object_name": once[2],
                "version": once[3], "time": created,
            }):
                return False
            self.enqueue_in(c, pending, due_ms, created)
            return True

    @staticmethod
    def enqueue_in(c: Connection, pending: list[Pending], due_ms: int, created: int) -> None:
        """Put `pending` in the outbox in the caller's write transaction: the change that
        caused the events and the events commit together, or neither does."""
        if pending:
            c.execute(event_outbox.insert(), [
                {"subscription_id": p.subscription_id, "event_id": p.event_id,
                 "body": p.body, "attempts": 0, "due": due_ms, "created": created}
                for p in pending])

    def any_due(self, now_ms: int) -> bool:
        """Whether some row is due (a read: an idle loop writes nothing)."""
        q = select(event_outbox.c.id).where(event_outbox.c.due <= now_ms).limit(1)
        with self._r.connect() as c:
            return c.execute(q).first() is not None

    def claim(self, now_ms: int, hold_ms: int, limit: int) -> list[Claimed]:
        """Take up to `limit` due rows for `hold_ms`: no other loop takes them meanwhile."""
        pick = (select(event_outbox.c.id).where(event_outbox.c.due <= now_ms)
                .order_by(event_outbox.c.due).limit(limit))
        if self._postgres:
            pick = pick.with_for_update(skip_locked=True)
        with self._write() as c:
            ids = [r.id for r in c.execute(pick)]
            if not ids:
                return []
            c.execute(update(event_outbox).where(event_outbox.c.id.in_(ids))
                      .values(due=now_ms + hold_ms))
            rows = c.execute(
                select(event_outbox.c.id, event_outbox.c.event_id, event_outbox.c.body,
                       event_outbox.c.attempts, event_subscriptions.c.endpoint,
                       event_subscriptions.c.schema, event_subscriptions.c.name.label("sub"),
                       vaults.c.name.label("vault_name"))
                .select_from(event_outbox.join(
                    event_subscriptions,
                    event_outbox.c.subscription_id == event_subscriptions.c.id)
                    .join(vaults, event_subscriptions.c.vault_id == vaults.c.id))
                .where(event_outbox.c.id.in_(ids)).order_by(event_outbox.c.id)).all()
        return [Claimed(r.id, r.event_id, r.body, r.attempts, r.endpoint, r.schema, r.sub,
                        r.vault_name) for r in rows]

    def delivered(self, row_id: int) -> None:
        """Delivered or given up: the row goes."""
        with self._write() as c:
            c.execute(delete(event_outbox).where(event_outbox.c.id == row_id))

    def retry(self, row_id: int, attempts: int, due_ms: int) -> None:
        with self._write() as c:
            c.execute(update(event_outbox).where(event_outbox.c.id == row_id)
                      .values(attempts=attempts, due=due_ms))

    def waiting(self) -> int:
        """Rows in the outbox (for `okv events list`)."""
        with self._r.connect() as c:
            return int(c.execute(select(func.count()).select_from(event_outbox)).scalar_one())

    # ---- expiry notices -----------------------------------------------------------
    def expiring(self, collection: str, now: int, until: int, near_type: str,
                 expired_type: str) -> list[Expiring]:
        """The latest version of every live object of `collection` in a subscribed vault
        (not one a certificate manages) that has a notice still to send: expired by `now`
        without `expired_type` recorded, or expiring by `until` (any time, for a key with
        a rotation policy) without `near_type` recorded."""
        def unmarked(kind: str) -> Any:
            return ~select(events.c.id).where(
                events.c.vault_id == objects.c.vault_id, events.c.type == kind,
                events.c.object_name == objects.c.name,
                events.c.version == versions.c.version).exists()

        window = versions.c.exp <= until
        if collection == "keys":
            window = window | objects.c.policy.is_not(None)
        q = (
            select(vaults.c.id.label("vault_id"), vaults.c.name.label("vault_name"),
                   objects.c.name, objects.c.policy, versions.c.version, versions.c.created,
                   versions.c.nbf, versions.c.exp, versions.c.props)
            .select_from(versions.join(objects, versions.c.object_id == objects.c.id)
                         .join(vaults, objects.c.vault_id == vaults.c.id))
            .where(objects.c.collection == collection,
                   objects.c.vault_id.in_(_SUBSCRIBED), objects.c.vault_id.not_in(_DELETED),
                   objects.c.deleted_date.is_(None), versions.c.exp.is_not(None), window,
                   versions.c.seq == _LATEST, unmarked(expired_type),
                   (versions.c.exp <= now) | unmarked(near_type))
        )
        with self._r.connect() as c:
            rows = c.execute(q).all()
        return [Expiring(r.vault_id, r.vault_name, collection, r.name, r.version, r.created,
                         r.nbf, r.exp, json.loads(r.policy) if r.policy else None)
                for r in rows if not json.loads(r.props or "{}").get("managed")]
