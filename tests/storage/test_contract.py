"""The storage contract, on every backend: SQLite and a real PostgreSQL.

Two `Repository` objects on one database, each with its own engines (its own
connections, as two nodes have), race at every compare-and-set many times over; the
invariant of each must hold after every round. Memoised reads must see another node's
write at its next request, and a write in one domain must not flush another's memo.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from openkeyvault.ops import requestscope
from openkeyvault.storage.db import Engines, open_database
from openkeyvault.storage.identities import IdentityStore
from openkeyvault.storage.readcache import (
    ACCESS,
    BARRIER,
    IDENTITIES,
    VAULTS,
    objects_domain,
)
from openkeyvault.storage.records import (
    EventRecord,
    NameConflict,
    PrincipalRecord,
    RoleAssignmentRecord,
    RoleDefinitionRecord,
    SigningKeyRecord,
    VersionRecord,
)
from openkeyvault.storage.repository import Repository
from tests.support.race import race

ROUNDS = 12


@pytest.fixture
def nodes(database: str) -> Iterator[tuple[Repository, Repository]]:
    """Two repositories on one database, as two nodes (or two worker processes) hold."""
    opened: list[Engines] = [open_database(database), open_database(database)]
    try:
        yield Repository(opened[0]), Repository(opened[1])
    finally:
        for e in opened:
            e.dispose()


def _version(name: str, version: str | None = None) -> VersionRecord:
    return VersionRecord(name=name, version=version or uuid.uuid4().hex, created=1, updated=1,
                         enabled=True, sealed=b"x", key_version=1)


def _vault(repo: Repository, name: str = "racevault") -> int:
    return repo.create_vault(name, "vault", "standard", 90, False, 1).id


# ---- objects ------------------------------------------------------------------------
def test_add_version_expecting_the_latest_adds_one(nodes: tuple[Repository, Repository]
                                                   ) -> None:
    a, b = nodes
    vault = _vault(a)
    first = _version("rotated")
    assert a.add_version(vault, "keys", first)
    latest = first.version
    for _ in range(ROUNDS):
        va, vb = _version("rotated"), _version("rotated")
        ra, rb = race(lambda: a.add_version(vault, "keys", va, expect_latest=latest),  # noqa: B023
                      lambda: b.add_version(vault, "keys", vb, expect_latest=latest))  # noqa: B023
        assert sorted([ra, rb]) == [False, True], (ra, rb)
        latest = (va if ra else vb).version
        assert a.get_version(vault, "keys", "rotated", None).version == latest
    assert len(a.all_versions(vault, "keys", "rotated")) == ROUNDS + 1


def test_first_versions_of_a_new_name_make_one_object(nodes: tuple[Repository, Repository]
                                                      ) -> None:
    a, b = nodes
    vault = _vault(a)
    for i in range(ROUNDS):
        name = f"fresh{i}"
        ra, rb = race(lambda: a.add_version(vault, "secrets", _version(name)),  # noqa: B023
                      lambda: b.add_version(vault, "secrets", _version(name)))  # noqa: B023
        assert (ra, rb) == (True, True), (ra, rb)
        assert len(a.all_versions(vault, "secrets", name)) == 2


def test_linked_add_expecting_a_state_adds_once(nodes: tuple[Repository, Repository]) -> None:
    a, b = nodes
    vault = _vault(a)
    cols = ("certificates", "keys", "secrets")
    for i in range(ROUNDS):
        name = f"cert{i}"

        def create(repo: Repository, n: str = name) -> bool:
            items = {c: _version(n) for c in cols}
            return repo.add_linked(vault, n, cols, items, {"policy": {"x": 1}},
                                   expect_state=lambda s: s is None)

        ra, rb = race(lambda: create(a), lambda: create(b))  # noqa: B023
        assert sorted([ra, rb]) == [False, True], (ra, rb)
        for c in cols:
            assert len(a.all_versions(vault, c, name)) == 1


def test_linked_state_compare_and_set_sets_once(nodes: tuple[Repository, Repository]) -> None:
    a, b = nodes
    vault = _vault(a)
    cols = ("certificates", "keys", "secrets")
    a.add_linked(vault, "renewed", cols, {c: _version("renewed") for c in cols}, {"n": 0})
    for i in range(ROUNDS):
        def bump(repo: Repository, n: int = i) -> bool:
            return repo.set_linked_state(vault, "certificates", "renewed", {"n": n + 1},
                                         expect=lambda s: s == {"n": n})
        ra, rb = race(lambda: bump(a), lambda: bump(b))  # noqa: B023
        assert sorted([ra, rb]) == [False, True], (ra, rb)
    assert a.get_object(vault, "certificates", "renewed")[2] == {"n": ROUNDS}


def test_restores_of_one_name_restore_once(nodes: tuple[Repository, Repository]) -> None:
    a, b = nodes
    vault = _vault(a)
    for i in range(ROUNDS):
        name = f"restored{i}"
        ra, rb = race(lambda: a.restore(vault, "secrets", name, [_version(name)]),  # noqa: B023
                      lambda: b.restore(vault, "secrets", name, [_version(name)]))  # noqa: B023
        outcomes = sorted(type(r).__name__ for r in (ra, rb))
        assert outcomes == ["NameConflict", "NoneType"], (ra, rb)
        assert len(a.all_versions(vault, "secrets", name)) == 1


def test_purge_and_recover_of_one_object_never_half_happen(
        nodes: tuple[Repository, Repository]) -> None:
    a, b = nodes
    vault = _vault(a)
    for i in range(ROUNDS):
        name = f"gone{i}"
        a.add_version(vault, "secrets", _version(name))
        a.soft_delete(vault, "secrets", name, 1, 2)
        ra, rb = race(lambda: a.purge(vault, "secrets", name),  # noqa: B023
                      lambda: b.recover(vault, "secrets", name))  # noqa: B023
        live = a.get_version(vault, "secrets", name, None)
        gone = a.get_object(vault, "secrets", name) is None
        assert (ra, rb) in ((True, False), (False, True)), (ra, rb)
        assert (live is not None) == rb and gone == ra


def test_events_are_recorded_once(nodes: tuple[Repository, Repository]) -> None:
    a, b = nodes
    vault = _vault(a)
    for i in range(ROUNDS):
        e = EventRecord(vault, "SecretNearExpiry", f"s{i}", "v1", 1)
        ra, rb = race(lambda: a.add_event_once(e), lambda: b.add_event_once(e))  # noqa: B023
        assert sorted([ra, rb]) == [False, True], (ra, rb)


# ---- rarely written rows --------------------------------------------------------------
def test_meta_set_if_absent_agrees(nodes: tuple[Repository, Repository]) -> None:
    a, b = nodes
    for i in range(ROUNDS):
        ra, rb = race(lambda: a.set_meta_if_absent(f"k{i}", "from-a"),  # noqa: B023
                      lambda: b.set_meta_if_absent(f"k{i}", "from-b"))  # noqa: B023
        assert ra == rb and ra in ("from-a", "from-b"), (ra, rb)


def test_data_key_versions_never_collide(nodes: tuple[Repository, Repository]) -> None:
    a, b = nodes
    for i in range(ROUNDS):
        owner = f"vault-{i}"
        ra, rb = race(lambda: a.add_data_key_if_absent(owner, lambda v: b"w", 1),  # noqa: B023
                      lambda: b.add_data_key_if_absent(owner, lambda v: b"w", 1))  # noqa: B023
        assert ra is None and rb is None, (ra, rb)
        ra, rb = race(
            lambda: a.add_data_key_version(owner, lambda v: b"w", lambda v, w: None, 1),  # noqa: B023
            lambda: b.add_data_key_version(owner, lambda v: b"w", lambda v, w: None, 1))  # noqa: B023
        assert sorted([ra, rb]) == [2, 3], (ra, rb)


def test_vault_property_changes_are_never_lost(nodes: tuple[Repository, Repository]) -> None:
    a, b = nodes
    vault = _vault(a)

    def append(repo: Repository, item: str) -> Any:
        def change(current: str | None) -> str:
            items = json.loads(current) if current else []
            return json.dumps([*items, item])
        return repo.update_vault_properties(vault, change, 1)

    for i in range(ROUNDS):
        race(lambda: append(a, f"a{i}"), lambda: append(b, f"b{i}"))  # noqa: B023
    stored = json.loads(a.get_vault("racevault").properties or "[]")
    assert sorted(stored) == sorted([f"a{i}" for i in range(ROUNDS)] +
                                    [f"b{i}" for i in range(ROUNDS)])


def _assignment(name: str, principal: str, role: str = "role-1") -> RoleAssignmentRecord:
    return RoleAssignmentRecord(name, "/", role, principal, 1)


def test_role_assignment_duplicates_are_refused(nodes: tuple[Repository, Repository]) -> None:
    a, b = nodes
    for i in range(ROUNDS):
        p = f"principal-{i}"
        ra, rb = race(
            lambda: a.create_role_assignment(_assignment(str(uuid.uuid4()), p), False),  # noqa: B023
            lambda: b.create_role_assignment(_assignment(str(uuid.uuid4()), p), False))  # noqa: B023
        assert sorted([ra[0], rb[0]]) == ["created", "duplicate"], (ra, rb)
        assert len(a.role_assignments(p)) == 1


def _definition(role_name: str) -> RoleDefinitionRecord:
    return RoleDefinitionRecord(str(uuid.uuid4()), role_name, "", ({"actions": ["x"]},),
                                ("/",), 1)


def test_custom_role_limit_and_names_hold(nodes: tuple[Repository, Repository]) -> None:
    a, b = nodes
    for i in range(ROUNDS):
        # The same role name: one is created, the other finds it taken.
        ra, rb = race(lambda: a.put_role_definition(_definition(f"same{i}"), 1000),  # noqa: B023
                      lambda: b.put_role_definition(_definition(f"same{i}"), 1000))  # noqa: B023
        assert sorted([ra[0], rb[0]]) == ["created", "name_taken"], (ra, rb)
    # At the limit minus one: one more is created, never two.
    limit = ROUNDS + 1
    ra, rb = race(lambda: a.put_role_definition(_definition("last-a"), limit),
                  lambda: b.put_role_definition(_definition("last-b"), limit))
    assert sorted([ra[0], rb[0]]) == ["created", "limit"], (ra, rb)
    assert len(a.role_definitions()) == limit


def test_a_role_in_use_is_never_deleted(nodes: tuple[Repository, Repository]) -> None:
    a, b = nodes
    for i in range(ROUNDS):
        d = _definition(f"inuse{i}")
        a.put_role_definition(d, 1000)
        ra, rb = race(lambda: a.delete_role_definition(d.id),  # noqa: B023
                      lambda: b.create_role_assignment(  # noqa: B023
                          _assignment(str(uuid.uuid4()), f"user{i}", d.id), True))  # noqa: B023
        assert (ra[0], rb[0]) in (("deleted", "no_definition"), ("assigned", "created")), (ra, rb)


def test_principal_if_absent_never_fails(nodes: tuple[Repository, Repository]) -> None:
    a, b = nodes
    for i in range(ROUNDS):
        p = PrincipalRecord(f"oid-{i}", f"cid-{i}", "t", "n", "app", 1)
        ra, rb = race(lambda: a.add_principal(p, if_absent=True),  # noqa: B023
                      lambda: b.add_principal(p, if_absent=True))  # noqa: B023
        assert ra is None and rb is None, (ra, rb)


def test_signing_key_rotation_rotates_once(database: str) -> None:
    engines = [open_database(database), open_database(database)]
    try:
        a, b = IdentityStore(engines[0]), IdentityStore(engines[1])
        a.add_signing_key(SigningKeyRecord("k0", 0, None, "{}"), 1, b"s")
        for i in range(1, ROUNDS + 1):
            ka, kb = (SigningKeyRecord(f"k{i}{s}", i * 10, None, "{}") for s in "ab")
            ra, rb = race(
                lambda: a.add_signing_key(ka, 1, b"s", if_current_created_before=i * 10),  # noqa: B023
                lambda: b.add_signing_key(kb, 1, b"s", if_current_created_before=i * 10))  # noqa: B023
            assert sorted([ra, rb]) == [False, True], (ra, rb)
            assert sum(k.retired is None for k in a.signing_keys()) == 1
    finally:
        for e in engines:
            e.dispose()


# ---- memoised reads ---------------------------------------------------------------------
def test_another_nodes_write_is_seen_at_the_next_request(
        nodes: tuple[Repository, Repository]) -> None:
    a, b = nodes
    requestscope.begin()
    assert b.get_vault("seen") is None  # memoised as absent on b
    a.create_vault("seen", "vault", "standard", 90, False, 1)
    requestscope.begin()  # b's next request
    assert b.get_vault("seen") is not None
    a.add_role_assignment(_assignment("ra-seen", "p-seen"))
    requestscope.begin()
    assert [r.id for r in b.role_assignments("p-seen")] == ["ra-seen"]


def test_each_request_is_checked_once_while_requests_interleave(
        nodes: tuple[Repository, Repository], monkeypatch: pytest.MonkeyPatch) -> None:
    """On the event loop one request awaits its body while another runs: each keeps the
    check it made, and a new request still checks anew."""
    _, b = nodes
    checks: list[int] = []
    current = b._cache._current
    monkeypatch.setattr(b._cache, "_current",
                        lambda: checks.append(requestscope.current.get()) or current())
    requestscope.begin()
    first = requestscope.current.get()
    b.get_vault("interleaved")
    requestscope.begin()
    second = requestscope.current.get()
    b.get_vault("interleaved")
    requestscope.current.set(first)  # the first resumes
    b.get_vault("interleaved")
    b.role_assignments("p-interleaved")
    requestscope.current.set(second)
    b.get_vault("interleaved")
    assert checks == [first, second]
    requestscope.begin()
    b.get_vault("interleaved")
    assert len(checks) == 3


def test_a_write_moves_only_its_domain(nodes: tuple[Repository, Repository]) -> None:
    a, b = nodes
    vault = _vault(a, "domains")
    requestscope.begin()
    before = {d: b.generation(d) for d in (VAULTS, ACCESS, IDENTITIES, BARRIER)}
    access_memo = b.snapshot(ACCESS)
    a.add_version(vault, "secrets", _version("plain"))  # a secret: no domain moves
    a.add_role_assignment(_assignment("ra-domain", "p-domain"))  # access moves
    requestscope.begin()
    after = {d: b.generation(d) for d in before}
    assert after == {**before, ACCESS: before[ACCESS] + 1}
    assert b.snapshot(ACCESS) is not access_memo
    vaults_memo = b.snapshot(VAULTS)
    a.add_version(vault, "secrets", _version("plain"))
    requestscope.begin()
    assert b.snapshot(VAULTS) is vaults_memo  # a secret write keeps the vault memo


def test_each_read_of_a_version_is_its_own_record(
        nodes: tuple[Repository, Repository]) -> None:
    """Props and tags are parsed once per text and shared by later reads: what one caller
    changes in its record is not seen by the next."""
    a, b = nodes
    vault = _vault(a, "ownrecord")
    v = _version("s")
    v.props, v.tags = {"kty": "EC", "key_ops": ["sign"]}, {"team": "a"}
    a.add_version(vault, "keys", v)
    requestscope.begin()
    first = b.get_version(vault, "keys", "s", None)
    assert first is not None and first.tags is not None
    first.props["kty"] = "changed"
    first.tags["team"] = "changed"
    requestscope.begin()
    again = b.get_version(vault, "keys", "s", v.version)
    assert again is not None and again.props["kty"] == "EC" and again.tags == {"team": "a"}


def test_object_reads_follow_every_change_of_their_vault(
        nodes: tuple[Repository, Repository], database: str) -> None:
    """b memoises its reads of one vault's objects where it can (PostgreSQL: under that
    vault's objects generation, read with the request's check) and still sees each change a
    makes at its next request; a change in another vault leaves that generation alone."""
    a, b = nodes
    vault, other = _vault(a, "objmemo"), _vault(a, "objother")
    postgres = not database.endswith(".db")

    def request() -> int:
        requestscope.begin()
        requestscope.addresses("objmemo")
        return b.generation(objects_domain(vault))

    def read(version: str | None = None, deleted: bool = False) -> VersionRecord | None:
        request()
        return b.get_version(vault, "secrets", "s", version, deleted)

    assert read() is None
    first = _version("s")
    a.add_version(vault, "secrets", first)
    assert read() is not None and read().version == first.version  # type: ignore[union-attr]
    assert read(first.version) is not None
    a.update_version(vault, "secrets", "s", first.version, {"enabled": False})
    assert read(first.version).enabled is False  # type: ignore[union-attr]
    second = _version("s")
    a.add_version(vault, "secrets", second)
    assert read().version == second.version  # type: ignore[union-attr]
    seen = request()
    a.add_version(other, "secrets", _version("s"))
    a.set_policy(other, "secrets", "s", {})
    assert request() == seen  # another vault's objects: this one's memo stays
    a.soft_delete(vault, "secrets", "s", 2, 100)
    assert read() is None and read(deleted=True) is not None
    a.recover(vault, "secrets", "s")
    assert read().version == second.version  # type: ignore[union-attr]
    a.soft_delete(vault, "secrets", "s", 3, 100)
    assert a.purge(vault, "secrets", "s")
    assert read(deleted=True) is None and read(second.version) is None
    if postgres:
        assert request() > seen > 0  # the vault's own generation moved with each change


def test_name_conflicts_keep_their_meaning(nodes: tuple[Repository, Repository]) -> None:
    a, _ = nodes
    vault = _vault(a)
    a.add_version(vault, "secrets", _version("taken"))
    with pytest.raises(NameConflict) as live:
        a.restore(vault, "secrets", "taken", [_version("taken")])
    assert live.value.deleted is False
    a.soft_delete(vault, "secrets", "taken", 1, 2)
    with pytest.raises(NameConflict) as deleted:
        a.add_version(vault, "secrets", _version("taken"))
    assert deleted.value.deleted is True
    with pytest.raises(NameConflict) as deleted_restore:
        a.restore(vault, "secrets", "taken", [_version("taken")])
    assert deleted_restore.value.deleted is True
