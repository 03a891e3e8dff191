"""A new version and its NewVersionCreated events commit together, or neither does, on
SQLite and a real PostgreSQL: no crash between the two can leave a version whose
subscribers never hear of it, nor an event of a version that was never made."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, select

from openkeyvault.ops.events import Events
from openkeyvault.storage.db import Engines, open_database
from openkeyvault.storage.records import VaultRecord, VersionRecord
from openkeyvault.storage.repository import Repository
from openkeyvault.storage.schema import event_outbox
from openkeyvault.storage.subscriptions import SubscriptionStore


class Clock:
    def now(self) -> float:
        return 1_800_000_000.0


class Crash(Exception):
    """The process dies here (the transaction is never committed)."""


@pytest.fixture
def setup(database: str) -> Iterator[tuple[Engines, Repository, Events, VaultRecord]]:
    engines = open_database(database)
    repo = Repository(engines)
    store = SubscriptionStore(engines)
    events = Events(store, Clock(),  # type: ignore[arg-type]
                    lambda name: f"https://{name}.vault.localhost/", lambda name: None)
    vault = repo.create_vault("outbox", "vault", "standard", 90, False, 1)
    other = repo.create_vault("quiet", "vault", "standard", 90, False, 1)
    store.add(vault.id, "all", "https://127.0.0.1/hook", None, "EventGridSchema", 0)
    store.add(vault.id, "keys-only", "https://127.0.0.1/keys",
              ["Microsoft.KeyVault.KeyNewVersionCreated"], "EventGridSchema", 0)
    store.add(other.id, "other", "https://127.0.0.1/other", None, "EventGridSchema", 0)
    try:
        yield engines, repo, events, vault
    finally:
        engines.dispose()


def _version(name: str) -> VersionRecord:
    return VersionRecord(name=name, version=uuid.uuid4().hex, created=1, updated=1,
                         enabled=True, sealed=b"x", key_version=1)


def outbox(engines: Engines) -> list[dict[str, Any]]:
    with engines.read.connect() as c:
        return [json.loads(r.body) for r in c.execute(select(event_outbox.c.body))]


def test_a_version_and_its_events_commit_together(
        setup: tuple[Engines, Repository, Events, VaultRecord]) -> None:
    engines, repo, events, vault = setup
    v = _version("Committed")
    assert repo.add_version(vault.id, "secrets", v, also=events.new_version(vault, "secrets"))
    [event] = outbox(engines)  # the subscription that wants every type; not the keys-only one
    assert event["eventType"] == "Microsoft.KeyVault.SecretNewVersionCreated"
    assert (event["subject"], event["data"]["Version"]) == ("Committed", v.version)
    assert repo.get_version(vault.id, "secrets", "committed", v.version) is not None


def test_a_crash_before_the_commit_leaves_neither(
        setup: tuple[Engines, Repository, Events, VaultRecord]) -> None:
    engines, repo, events, vault = setup
    publish = events.new_version(vault, "keys")
    assert publish is not None

    def then_crash(c: Connection, v: VersionRecord) -> None:
        publish(c, v)
        assert len(c.execute(select(event_outbox.c.id)).all()) == 2  # written, not committed
        raise Crash

    v = _version("lost")
    with pytest.raises(Crash):
        repo.add_version(vault.id, "keys", v, also=then_crash)
    assert outbox(engines) == []
    assert repo.get_version(vault.id, "keys", "lost", v.version) is None


def test_a_version_not_added_sends_nothing(
        setup: tuple[Engines, Repository, Events, VaultRecord]) -> None:
    engines, repo, events, vault = setup
    first = _version("raced")
    assert repo.add_version(vault.id, "secrets", first)
    # A compare-and-set that loses (another version became the latest meanwhile).
    assert not repo.add_version(vault.id, "secrets", _version("raced"), expect_latest="nope",
                                also=events.new_version(vault, "secrets"))
    assert outbox(engines) == []


def test_linked_versions_send_the_owners_event(
        setup: tuple[Engines, Repository, Events, VaultRecord]) -> None:
    """A certificate's version (with its key's and secret's) is one event, the
    certificate's, in the same transaction."""
    engines, repo, events, vault = setup
    items = {c: _version("cert") for c in ("certificates", "keys", "secrets")}
    assert repo.add_linked(vault.id, "cert", ("certificates", "keys", "secrets"), items,
                           None, also=events.new_version(vault, "certificates"))
    [event] = outbox(engines)
    assert event["eventType"] == "Microsoft.KeyVault.CertificateNewVersionCreated"
    assert event["data"]["Version"] == items["certificates"].version


def test_an_access_policy_change_and_its_event_commit_together(
        setup: tuple[Engines, Repository, Events, VaultRecord]) -> None:
    engines, repo, events, vault = setup
    told: list[str] = []
    events.notified = lambda notice: told.append(notice.operation)
    event = events.access_policy_changed(vault)

    def then_crash(c: Connection) -> None:
        event.write(c)
        raise Crash

    with pytest.raises(Crash):
        repo.update_vault_properties(vault.id, lambda current: '{"crashed": true}', 2,
                                     also=then_crash)
    assert outbox(engines) == [] and told == []
    found = repo.get_vault("outbox")
    assert found is not None and "crashed" not in (found.properties or "")

    assert repo.update_vault_properties(vault.id, lambda current: '{"kept": true}', 3,
                                        also=event.write) is not None
    event.published()
    [sent] = outbox(engines)
    assert sent["eventType"] == "Microsoft.KeyVault.VaultAccessPolicyChanged"
    assert told == ["VaultAccessPolicyChangedEventGridNotification"]
