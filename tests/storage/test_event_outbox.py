"""The event outbox on every backend (storage/subscriptions.py): two nodes claiming due
events at the same moment never take the same one, and an expiry notice recorded by two
racing jobs is queued once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from openkeyvault.storage.db import Engines, open_database
from openkeyvault.storage.records import VersionRecord
from openkeyvault.storage.repository import Repository
from openkeyvault.storage.subscriptions import Pending, SubscriptionExists, SubscriptionStore
from tests.support.race import race

ROUNDS = 12


@pytest.fixture
def nodes(database: str) -> Iterator[tuple[SubscriptionStore, SubscriptionStore, Repository]]:
    opened: list[Engines] = [open_database(database), open_database(database)]
    try:
        yield (SubscriptionStore(opened[0]), SubscriptionStore(opened[1]),
               Repository(opened[0]))
    finally:
        for e in opened:
            e.dispose()


def _subscribed(store: SubscriptionStore, repo: Repository, vault: str = "evvault") -> int:
    vault_id = repo.create_vault(vault, "vault", "standard", 90, False, 1).id
    store.add(vault_id, "hook", "https://example.invalid/hook", None, "EventGridSchema", 1)
    return vault_id


def test_a_subscription_name_is_taken_once(
        nodes: tuple[SubscriptionStore, SubscriptionStore, Repository]) -> None:
    a, b, repo = nodes
    vault = _subscribed(a, repo)
    with pytest.raises(SubscriptionExists):
        b.add(vault, "hook", "https://example.invalid/other", None, "EventGridSchema", 2)
    assert [s.endpoint for s in b.find(vault)] == ["https://example.invalid/hook"]


def test_two_nodes_never_claim_the_same_event(
        nodes: tuple[SubscriptionStore, SubscriptionStore, Repository]) -> None:
    a, b, repo = nodes
    sub = a.find(_subscribed(a, repo))[0].id
    total = ROUNDS * 8
    a.enqueue([Pending(sub, str(uuid.uuid4()), "{}") for _ in range(total)], 1_000, 1)
    taken: list[int] = []
    for _ in range(ROUNDS):
        ra, rb = race(lambda: a.claim(2_000, 60_000, 5), lambda: b.claim(2_000, 60_000, 5))
        ids = [c.id for c in (*ra, *rb)]
        assert len(ids) == len(set(ids)), ids
        taken.extend(ids)
    assert len(taken) == len(set(taken))
    # Claimed rows are not due again until their claim runs out.
    assert not a.any_due(2_000) or len(taken) < total
    assert a.claim(2_000 + 60_001, 60_000, total) != []


def test_a_notice_is_queued_once_by_racing_jobs(
        nodes: tuple[SubscriptionStore, SubscriptionStore, Repository]) -> None:
    a, b, repo = nodes
    vault = _subscribed(a, repo)
    sub = a.find(vault)[0].id
    for i in range(ROUNDS):
        once = (vault, "Microsoft.KeyVault.SecretExpired", f"s{i}", "v1")
        ra, rb = race(lambda: a.enqueue([Pending(sub, "a", "{}")], 1, 1, once),  # noqa: B023
                      lambda: b.enqueue([Pending(sub, "b", "{}")], 1, 1, once))  # noqa: B023
        assert sorted([ra, rb]) == [False, True], (ra, rb)
    assert a.waiting() == ROUNDS


def test_expiring_reads_subscribed_vaults_and_skips_what_was_sent(
        nodes: tuple[SubscriptionStore, SubscriptionStore, Repository]) -> None:
    a, _, repo = nodes
    vault = _subscribed(a, repo)
    quiet = repo.create_vault("quietvault", "vault", "standard", 90, False, 1).id
    for v in (vault, quiet):
        repo.add_version(v, "secrets", VersionRecord(
            name="soon", version="v1", created=1, updated=1, enabled=True, exp=100,
            sealed=b"x", key_version=1))
    near, expired = "Microsoft.KeyVault.SecretNearExpiry", "Microsoft.KeyVault.SecretExpired"
    [row] = a.expiring("secrets", 50, 150, near, expired)
    assert (row.vault_id, row.name, row.version, row.exp) == (vault, "soon", "v1", 100)
    a.enqueue([], 1, 50, (vault, near, "soon", "v1"))
    assert a.expiring("secrets", 50, 150, near, expired) == []  # near sent, not expired yet
    assert len(a.expiring("secrets", 100, 200, near, expired)) == 1  # now expired
    a.enqueue([], 1, 100, (vault, expired, "soon", "v1"))
    assert a.expiring("secrets", 100, 200, near, expired) == []
