"""Event Grid events of vaults: what happened, rendered for each subscription, into the outbox.

Azure Key Vault publishes to Event Grid (never for managed HSM pools):

- `Microsoft.KeyVault.{Secret,Key,Certificate}NewVersionCreated` when a version is made
  (set, create, import, rotate, merge, renew; not restore, which brings back versions
  that existed, nor recover);
- `...NearExpiry` 30 days before the current version's `exp` (for a key, when its
  rotation policy's Notify action says), and `...Expired` once it has passed, each
  once per version, found by the scheduler on the deployment's clock;
- `Microsoft.KeyVault.VaultAccessPolicyChanged` when the access policies change, or the
  permission model switches to or from RBAC.

A subscription gets only events of versions created after it was. Each event is
rendered in the subscription's schema (Event Grid or CloudEvents 1.0) and written to
the outbox in the transaction of the change that caused it (a new version, an
access-policy change: the change and its events commit together, so a process that dies
has made both or neither); a notice of expiry with its once-per-version mark.
ops/webhooks.py delivers them, never on the request's path. A fault while rendering an
event never fails the change that caused it.

Azure's diagnostic log has an operation for each notice published: NearExpiry, Expired
and VaultAccessPolicyChanged are `...EventGridNotification` records, whether or not
anyone subscribed. `Events.notified`, when set (the API's accounting, the `okv` command's
trail), is told of each as a `Notice` and records it. Notices of expiry are looked for in
vaults that have a subscription (the scheduler's query stays within them), so a vault
with none has no expiry notifications in its log; a change of its access policies does.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from openkeyvault.ops.clock import Clock
from openkeyvault.ops.outcome import Outcome
from openkeyvault.storage.records import VaultRecord, VersionRecord
from openkeyvault.storage.repository import Also
from openkeyvault.storage.store import Transaction
from openkeyvault.storage.subscriptions import (
    Expiring,
    Pending,
    SubscriptionRecord,
    SubscriptionStore,
)

log = logging.getLogger("openkeyvault.events")

PREFIX = "Microsoft.KeyVault."
EVENT_GRID = "EventGridSchema"
CLOUD_EVENTS = "CloudEventSchemaV1_0"
SCHEMAS = {"eventgrid": EVENT_GRID, "cloudevents": CLOUD_EVENTS}
OBJECT_TYPES = {"secrets": "Secret", "keys": "Key", "certificates": "Certificate"}
EVENT_TYPES = tuple(
    f"{PREFIX}{label}{what}" for label in ("Certificate", "Key", "Secret")
    for what in ("NewVersionCreated", "NearExpiry", "Expired")
) + (f"{PREFIX}VaultAccessPolicyChanged",)
NEAR_EXPIRY_SECONDS = 30 * 86_400


def event_type(name: str) -> str:
    """The full type of `name` ("SecretExpired" or "Microsoft.KeyVault.SecretExpired",
    any case); ValueError naming the known ones otherwise."""
    wanted = name.strip().lower()
    for t in EVENT_TYPES:
        if wanted in (t.lower(), t[len(PREFIX):].lower()):
            return t
    raise ValueError(f"unknown event type '{name[:80]}'; known: "
                     f"{', '.join(t[len(PREFIX):] for t in EVENT_TYPES)}")


def iso_time(seconds: float) -> str:
    """Event Grid's eventTime: UTC with a fraction and Z."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def render(schema: str, event_id: str, kind: str, topic: str, subject: str, when: float,
           data: dict[str, Any]) -> dict[str, Any]:
    """One event in `schema`: Event Grid's envelope, or a CloudEvents 1.0 one."""
    if schema == CLOUD_EVENTS:
        return {"id": event_id, "source": topic, "specversion": "1.0", "type": kind,
                "subject": subject, "time": iso_time(when), "data": data}
    return {"id": event_id, "topic": topic, "subject": subject, "eventType": kind,
            "eventTime": iso_time(when), "data": data, "dataVersion": "1",
            "metadataVersion": "1"}


@dataclass(frozen=True, slots=True)
class Notice:
    """A notice published, as the audit trail records it."""

    operation: str  # e.g. "SecretNearExpiryEventGridNotification" (vault/operations.py)
    vault_id: int  # the vault's storage id
    vault: str  # the vault's name
    uri: str  # the version's URI, or the vault's for an access-policy change
    time: float  # the deployment clock's

    def outcome(self, resource_id: str | None) -> Outcome:
        """The notice as the audit trail records it: an operation of the service's own,
        with no caller, answered 200; `resource_id`: the vault's ARM id."""
        return Outcome(self.operation, "vault", self.vault, resource_id, self.uri, None, 200,
                       self.time, 0.0, "", None, str(uuid.uuid4()), self.uri, None, None,
                       None, None, None, None)


def notification(kind: str) -> str:
    """The operation name of publishing event type `kind`."""
    return f"{kind[len(PREFIX):]}EventGridNotification"


# Called in a version's write transaction once the version is added (storage/repository.py).
InTransaction = Also


class AccessPolicyEvent(Protocol):
    """A vault's access-policy change as an event: `write` in the change's transaction
    (the outbox rows), `published` once it committed (the notice, for the audit trail)."""

    def write(self, c: Transaction) -> None: ...

    def published(self) -> None: ...


class EventPublisher(Protocol):
    """What the vault services call before a change, for what its write transaction must
    also write: a new version's events (None: nothing), an access-policy change's."""

    def new_version(self, vault: VaultRecord, collection: str) -> InTransaction | None: ...

    def access_policy_changed(self, vault: VaultRecord) -> AccessPolicyEvent: ...


class _Nothing:
    def write(self, c: Transaction) -> None:
        return None

    def published(self) -> None:
        return None


NO_CHANGE: AccessPolicyEvent = _Nothing()  # what a change that leaves access alone writes


class NoEvents:
    """The publisher of a service nobody wired to one (unit tests, tools)."""

    def new_version(self, vault: VaultRecord, collection: str) -> InTransaction | None:
        return None

    def access_policy_changed(self, vault: VaultRecord) -> AccessPolicyEvent:
        return NO_CHANGE


NO_EVENTS: EventPublisher = NoEvents()


class Events:
    """The deployment's publisher: fans an event out to the vault's subscriptions."""

    def __init__(self, store: SubscriptionStore, clock: Clock,
                 vault_uri: Callable[[str], str], arm_id: Callable[[str], str | None],
                 wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock
        self._vault_uri = vault_uri  # "https://NAME.vault.DOMAIN:PORT/"
        self._arm_id = arm_id  # the vault's ARM resource id, None if it has no placement
        self._wall = wall
        self.notified: Callable[[Notice], None] | None = None  # module docstring

    # ---- publishing ----------------------------------------------------------------
    def new_version(self, vault: VaultRecord, collection: str) -> InTransaction | None:
        """What the transaction adding a version of `collection` to `vault` also writes:
        its NewVersionCreated event, for each subscription that wants it (read in that
        transaction, so one deleted meanwhile is not written to)."""
        if vault.kind != "vault":
            return None
        kind = f"{PREFIX}{OBJECT_TYPES[collection]}NewVersionCreated"

        def also(c: Transaction, rec: VersionRecord) -> None:
            self._enqueue_in(c, vault, kind, collection, rec.name, rec.version, rec.nbf,
                             rec.exp)
        return also

    def access_policy_changed(self, vault: VaultRecord) -> AccessPolicyEvent:
        """The VaultAccessPolicyChanged event of `vault`, to write with the change."""
        if vault.kind != "vault":
            return NO_CHANGE
        return _PolicyChange(self, vault)

    def _enqueue_in(self, c: Transaction, vault: VaultRecord, kind: str,
                    collection: str | None, name: str, version: str, nbf: int | None,
                    exp: int | None) -> None:
        """The event's outbox rows, in the change's transaction, for each subscription
        that wants it (read in it). A fault while rendering leaves the change without its
        event (logged); a fault of the database fails the change, as it would anyway."""
        subs = [s for s in self.store.find_in(c, vault.id) if s.wants(kind)]
        if not subs:
            return
        try:
            now = self._clock.now()
            pending = self._pending(subs, vault.name, kind, collection, name, version, nbf,
                                    exp, now)
        except Exception:
            log.exception("event %s of vault %s could not be made", kind, vault.name)
            return
        self.store.enqueue_in(c, pending, int(self._wall() * 1000), int(now))

    def _tell(self, kind: str, vault_id: int, vault: str, uri: str) -> None:
        if self.notified is None:
            return
        try:
            self.notified(Notice(notification(kind), vault_id, vault, uri,
                                 self._clock.now()))
        except Exception:  # the record's trouble is its own; the event still goes out
            log.exception("the notification of %s in vault %s was not recorded", kind, vault)

    def _pending(self, subs: list[SubscriptionRecord], vault_name: str, kind: str,
                 collection: str | None, name: str, version: str, nbf: int | None,
                 exp: int | None, when: float) -> list[Pending]:
        uri = self._vault_uri(vault_name)
        data = {
            "Id": f"{uri}{collection}/{name}/{version}" if collection else uri,
            "VaultName": vault_name,
            "ObjectType": OBJECT_TYPES[collection] if collection else "Vault",
            "ObjectName": name, "Version": version, "NBF": nbf, "EXP": exp,
        }
        topic = self._arm_id(vault_name) or uri
        event_id = str(uuid.uuid4())  # one event; each subscription gets its rendering
        return [Pending(s.id, event_id, json.dumps(render(s.schema, event_id, kind, topic,
                                                           name, when, data)))
                for s in subs]

    # ---- expiry notices (a scheduled job) -----------------------------------------------
    def run_expiry(self) -> int:
        """Queue NearExpiry and Expired for the current versions of subscribed vaults'
        objects, once per version; how many were recorded."""
        now = int(self._clock.now())
        done = 0
        for collection, label in OBJECT_TYPES.items():
            near, expired = f"{PREFIX}{label}NearExpiry", f"{PREFIX}{label}Expired"
            rows = self.store.expiring(collection, now, now + NEAR_EXPIRY_SECONDS, near,
                                       expired)
            subs: dict[int, list[SubscriptionRecord]] = {}
            for row in rows:
                if row.exp <= now:
                    kind = expired
                elif now >= row.exp - _notice(row):
                    kind = near
                else:
                    continue
                if row.vault_id not in subs:
                    subs[row.vault_id] = self.store.find(row.vault_id)
                done += self._notice(row, kind, subs[row.vault_id], now)
        return done

    def _notice(self, row: Expiring, kind: str, subs: list[SubscriptionRecord],
                now: int) -> int:
        # Only subscriptions that existed when the version was created hear of it.
        mine = [s for s in subs if s.created <= row.created and s.wants(kind)]
        pending = self._pending(mine, row.vault_name, kind, row.collection, row.name,
                                row.version, row.nbf, row.exp, now)
        once = (row.vault_id, kind, row.name, row.version)
        if not self.store.enqueue(pending, int(self._wall() * 1000), now, once=once):
            return 0
        uri = f"{self._vault_uri(row.vault_name)}{row.collection}/{row.name}/{row.version}"
        self._tell(kind, row.vault_id, row.vault_name, uri)
        return 1


class _PolicyChange:
    """A vault's VaultAccessPolicyChanged (Events.access_policy_changed)."""

    KIND = f"{PREFIX}VaultAccessPolicyChanged"

    def __init__(self, events: Events, vault: VaultRecord) -> None:
        self._events, self._vault = events, vault

    def write(self, c: Transaction) -> None:
        self._events._enqueue_in(c, self._vault, self.KIND, None, self._vault.name, "",
                                 None, None)

    def published(self) -> None:
        v = self._vault
        self._events._tell(self.KIND, v.id, v.name, self._events._vault_uri(v.name))


def _notice(row: Expiring) -> int:
    """Seconds before expiry that NearExpiry is due: 30 days, or for a key the time its
    rotation policy's Notify action names."""
    if row.collection != "keys" or not row.policy:
        return NEAR_EXPIRY_SECONDS
    from openkeyvault.vault import durations

    for action in row.policy.get("lifetimeActions", []):
        before = action.get("trigger", {}).get("timeBeforeExpiry")
        if str(action.get("action", {}).get("type", "")).lower() == "notify" and before:
            try:
                return durations.parse(before, "timeBeforeExpiry")
            except Exception:
                break
    return NEAR_EXPIRY_SECONDS
