"""Memoised reads that stay fresh on every backend: generations per domain.

Rarely written rows (vaults, role assignments, principals, the barrier's data keys)
are read on every request. Each such domain has a row in `generations`, bumped in the
same transaction as any change to the domain (`Store._write(domain)`). On PostgreSQL it
is bumped first thing in that transaction, so that concurrent writers of one domain
queue on that row and a read-decide-write inside the transaction sees every earlier
commit; on SQLite, whose writers queue on the whole database, it is bumped last and
only if the transaction changed anything.

A reader checks the generations once per request (outside a request, on every call)
and keeps, per thread, one memo per set of domains; a memo is emptied when one of its
domains' generations moved. A secret written does not flush the role cache.

- `SqlReadCache` (any database): one `SELECT` of the generations table per request. On
  PostgreSQL, triggers move a generation row per vault, `objects:<vault id>`, with every
  change to that vault's objects or versions (migration 0008); the request's vault's row
  comes in the same query (`requestscope.addresses`), so its object reads are memoised
  too and a GET costs that one query.
- `SqliteReadCache`: SQLite's `PRAGMA data_version` changes only when another
  connection commits, so the generations are read only after something was written;
  the pseudo-domain `objects` (secrets, keys, certificates: too often written for a
  generation row of their own) is memoised under the data version itself.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    String,
    bindparam,
    cast,
    func,
    literal,
    select,
    union_all,
    update,
)

from openkeyvault.ops import requestscope
from openkeyvault.storage.schema import generations, vaults

if TYPE_CHECKING:
    from openkeyvault.storage.db import FastReader, PostgresFastReader

VAULTS = "vaults"  # vault rows, their properties (access policies, network rules), placement
ACCESS = "access"  # role assignments and custom role definitions
IDENTITIES = "identities"  # principals, credentials, signing keys, trusted issuers
BARRIER = "barrier"  # data keys: added after the first, or destroyed
DOMAINS = (VAULTS, ACCESS, IDENTITIES, BARRIER)
OBJECTS = "objects"  # memoised only where a change anywhere is cheap to see (SQLite)

_MEMO_LIMIT = 1024
_CHECKED_LIMIT = 256  # requests whose check one thread keeps (those in flight on a worker)
OBJECTS_PREFIX = "objects:"
# The domains' rows, not the per-vault ones (a deployment may have 10,000 vaults).
_GENERATIONS = select(generations.c.domain, generations.c.value).where(
    generations.c.domain.not_like(OBJECTS_PREFIX + "%"))


def objects_domain(vault_id: int) -> str:
    """The generation row of one vault's objects (PostgreSQL; moved by triggers)."""
    return f"{OBJECTS_PREFIX}{vault_id}"


def with_vault_objects(which: Any) -> Any:
    """The domains' generations and those of the objects of the vaults `which` (a
    condition on `vaults`) selects: 0 while a vault's row does not exist yet (the first
    change creates it with 1)."""
    per_vault = generations.alias("vault_objects")
    domain = literal(OBJECTS_PREFIX) + cast(vaults.c.id, String)
    vault_objects = (
        select(domain.label("domain"), func.coalesce(per_vault.c.value, 0).label("value"))
        .select_from(vaults.outerjoin(per_vault, per_vault.c.domain == domain))
        .where(which)
    )
    return union_all(_GENERATIONS, vault_objects)


_GENERATIONS_AND_VAULT = with_vault_objects(vaults.c.name == bindparam("vault"))


def bump(c: Connection, domains: tuple[str, ...]) -> None:
    """Move the generations of `domains`, inside the caller's write transaction (and, on
    PostgreSQL, lock their rows until it ends: writers of a domain queue here)."""
    for domain in sorted(domains):  # one order for every writer: no lock cycles
        c.execute(update(generations).where(generations.c.domain == domain)
                  .values(value=generations.c.value + 1))


def ensure_rows(c: Connection) -> None:
    """Create the generation rows that are missing (a new database)."""
    have = {r.domain for r in c.execute(_GENERATIONS)}
    for domain in DOMAINS:
        if domain not in have:
            c.execute(generations.insert().values(domain=domain, value=0))


class ReadCache:
    """Per-thread memos by sets of domains, fresh once per request."""

    memoises_objects = False

    def __init__(self) -> None:
        self._local = threading.local()

    def _current(self) -> dict[str, int]:
        """The generation of every domain, as storage has it now (a dict never changed
        once returned: `memo` recognises the same generations by the same object)."""
        raise NotImplementedError

    def _fresh(self) -> dict[str, int]:
        """The generations this thread checked for the current request (checked now if
        it has not yet; outside a request, on every call). Kept per request, for the last
        _CHECKED_LIMIT requests: on the event loop requests interleave (one awaits its
        body while another runs), and each keeps the check it made."""
        local = self._local
        request = requestscope.current.get()
        checked: dict[int, dict[str, int]] | None = getattr(local, "checked", None)
        if checked is None:
            checked = local.checked = {}
        if request:
            gens = checked.get(request)
            if gens is not None:
                return gens
        # A check the request's pipeline already made for it (storage/freshness.py),
        # unless this thread wrote since: then it reads again, to see its own write.
        shared = requestscope.fresh.get() if request else None
        if shared is not None and getattr(local, "wrote_in", None) != request:
            gens = local.gens = shared
        else:
            gens = local.gens = self._current()
        if request:
            if len(checked) >= _CHECKED_LIMIT:
                checked.clear()
            checked[request] = gens
        return gens

    def generation(self, domain: str) -> int:
        return self._fresh().get(domain, 0)

    def memo(self, domains: tuple[str, ...]) -> dict[Any, Any]:
        """The memo for `domains`: the same object for as long as none of them changed."""
        gens = self._fresh()
        memos: dict[tuple[str, ...], tuple[tuple[int, ...], dict[Any, Any], object]] | None \
            = getattr(self._local, "memos", None)
        if memos is None:
            memos = self._local.memos = {}
        entry = memos.get(domains)
        if entry is not None and entry[2] is gens and len(entry[1]) <= _MEMO_LIMIT:
            return entry[1]  # the very generations it was stamped with: nothing to compare
        stamp = tuple([gens.get(d, 0) for d in domains])
        if entry is None or entry[0] != stamp or len(entry[1]) > _MEMO_LIMIT:
            entry = (stamp, {}, gens)
        else:
            entry = (stamp, entry[1], gens)
        memos[domains] = entry
        return entry[1]

    def objects_stamp(self, vault_id: int) -> tuple[int, int] | None:
        """What a memoised read of the objects of `vault_id` is valid under, or None when
        this request's check did not cover that vault (then its reads are not memoised)."""
        gens = self._fresh()
        value = gens.get(objects_domain(vault_id))
        return None if value is None else (gens.get(VAULTS, 0), value)

    def objects_memo(self) -> dict[Any, tuple[tuple[int, int], Any]]:
        """This thread's memo of object reads, each entry with the stamp it was read under
        (one bounded memo for every vault)."""
        memo: dict[Any, tuple[tuple[int, int], Any]] | None = \
            getattr(self._local, "objects", None)
        if memo is None or len(memo) > _MEMO_LIMIT:
            memo = self._local.objects = {}
        return memo

    def invalidate(self) -> None:
        """After this thread wrote: its next read re-checks the generations."""
        request = requestscope.current.get()
        checked: dict[int, dict[str, int]] | None = getattr(self._local, "checked", None)
        if checked is not None:
            checked.pop(request, None)
        self._local.wrote_in = request


class SqlReadCache(ReadCache):
    """Generations read with one query per request (through `fast`, a reader with one
    round trip per query, where there is one); objects are never memoised."""

    def __init__(self, engine: Engine, fast: PostgresFastReader | None = None) -> None:
        super().__init__()
        self._engine = engine
        self._fast = fast

    def _current(self) -> dict[str, int]:
        vault = requestscope.vault.get()
        statement, params = (_GENERATIONS, {}) if vault is None \
            else (_GENERATIONS_AND_VAULT, {"vault": vault})
        if self._fast is not None:
            gens = {r.domain: r.value for r in self._fast.all(statement, params)}
        else:
            with self._engine.connect() as c:
                gens = {r.domain: r.value for r in c.execute(statement, params)}
        return gens


class SqliteReadCache(ReadCache):
    """Generations read only after another connection committed (PRAGMA data_version)."""

    memoises_objects = True

    def __init__(self, fast: FastReader) -> None:
        super().__init__()
        self._fast = fast

    def _current(self) -> dict[str, int]:
        version = self._fast.data_version()
        local = self._local
        gens: dict[str, int] | None = getattr(local, "gens", None)
        if gens is not None and local.data_version == version:
            return gens
        gens = {r.domain: r.value for r in self._fast.all(_GENERATIONS, {})}
        gens[OBJECTS] = version
        local.data_version = version
        return gens
