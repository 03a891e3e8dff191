"""Storage at scale: one vault with 10k .. 1M secrets, and a deployment with 10,000 vaults.

Usage: python benchmarks/storage_scale.py [--max 100000] [--backend both] [--vaults 10000]

For each backend (SQLite, and PostgreSQL on a throwaway cluster from
tests/support/postgres.py), it prepares a dev data directory with the real server, fills
the database directly (bulk inserts in large transactions, every value sealed by the
barrier under its own associated data, as the server would seal it) and at each size
starts `okv server --dev` on the filled database and measures, through HTTPS with one
keep-alive connection:

- start-up: from spawning the server to `/healthz` answering with every worker up;
- secret GET of random secrets (median, p99);
- one list page (`GET /secrets?maxresults=25`): the first page, and a page 90% deep in
  the listing (the first page's nextLink with its position moved there);
- one `GET /secrets/{name}/versions` page of a secret with many versions;
- the workers' resident memory after the runs;

and, in this process on the same database, what the scheduled jobs read on every tick
(`objects_with_policy` of keys and certificates, `purge_expired`) and the vault listing.
The reference is the same figure at the smallest size in the same run: flat is 1.0x.
`--explain` prints the query plans of the listing and job queries at the largest size.
Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import random
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import API_VERSION, LOOPBACK, BenchError, Server, guarded

from tests.support.procfs import worker_rss

BATCH = 50_000  # rows per executemany / COPY batch (one transaction per batch)
VERSIONED = "versioned-secret"  # one secret with many versions
VERSIONED_COUNT = 300  # at least; and one version for every VERSIONED_SHARE secrets
VERSIONED_SHARE = 100
PAGE = 25


def secret_name(i: int) -> str:
    """Names spread over the alphabet, unrelated to insertion order (as real names are)."""
    return f"{hashlib.blake2b(i.to_bytes(8, 'big'), digest_size=4).hexdigest()}-{i}"


def live(i: int) -> bool:
    return i % 100 != 99  # 1% soft-deleted


# ---- filling the database -------------------------------------------------------------------
@dataclass
class Filler:
    """Bulk inserts through the deployment's own engine and barrier."""

    d: Any  # openkeyvault.deployment.Deployment
    vault_id: int
    filled: int = 0
    versioned: int = 0  # versions of VERSIONED
    versioned_id: int = 0
    vaults: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def postgres(self) -> bool:
        return bool(self.d.engines.dialect == "postgresql")

    def _next_ids(self) -> tuple[int, int]:
        from sqlalchemy import func, select

        from openkeyvault.storage.schema import objects, versions
        with self.d.engines.read.connect() as c:
            oid = c.execute(select(func.coalesce(func.max(objects.c.id), 0))).scalar_one()
            seq = c.execute(select(func.coalesce(func.max(versions.c.seq), 0))).scalar_one()
        return int(oid) + 1, int(seq) + 1

    def _insert(self, rows: dict[str, tuple[tuple[str, ...], list[tuple[Any, ...]]]]) -> None:
        """Insert rows into each table (in the order given), in one transaction."""
        raw = self.d.engines.write.raw_connection()
        try:
            conn: Any = raw.dbapi_connection
            if self.postgres:
                with conn.cursor() as cur:
                    for table, (cols, values) in rows.items():
                        with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
                            for r in values:
                                cp.write_row(r)
                conn.commit()
            else:
                conn.execute("BEGIN IMMEDIATE")
                for table, (cols, values) in rows.items():
                    marks = ", ".join("?" * len(cols))
                    conn.executemany(
                        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", values)
                conn.execute("COMMIT")
        finally:
            raw.close()

    def _after_fill(self) -> None:
        if not self.postgres:
            # Fold the write-ahead log into the database, as the server's own stop would:
            # otherwise every read of the next run looks through a log of a million rows.
            raw = self.d.engines.write.raw_connection()
            try:
                raw.dbapi_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                raw.close()
            return
        raw = self.d.engines.write.raw_connection()
        try:
            conn: Any = raw.dbapi_connection
            for table, col in (("objects", "id"), ("versions", "seq"), ("vaults", "id")):
                conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{col}'), "
                             f"(SELECT max({col}) FROM {table}))")
            conn.commit()
            conn.autocommit = True
            conn.execute("ANALYZE")  # what autovacuum does after a bulk load
            conn.autocommit = False
        finally:
            raw.close()

    def _seal(self, vault_id: int, name_lc: str, version: str, value: bytes) -> tuple[int, bytes]:
        from openkeyvault.storage.barrier import vault_owner
        from openkeyvault.vault.secrets import _context
        return self.d.barrier.seal(  # type: ignore[no-any-return]
            vault_owner(vault_id), _context(vault_id, name_lc, version), value)

    def _version_row(self, seq: int, object_id: int, vault_id: int, name_lc: str,
                     version: str, now: int) -> tuple[Any, ...]:
        key_version, sealed = self._seal(vault_id, name_lc, version, b"v" * 32)
        return (seq, object_id, version, now, now, True, sealed, key_version)

    VERSION_COLS = ("seq", "object_id", "version", "created", "updated", "enabled", "sealed",
                    "key_version")
    OBJECT_COLS = ("id", "vault_id", "collection", "name", "name_lc", "deleted_date",
                   "scheduled_purge_date")

    def secrets_to(self, size: int) -> None:
        """Add secrets to the vault until it holds `size` (1% soft-deleted, every tenth with
        two versions), and versions to VERSIONED (size / VERSIONED_SHARE of them)."""
        t0 = time.monotonic()
        now = int(time.time())
        oid, seq = self._next_ids()
        while self.filled < size:
            objs: list[tuple[Any, ...]] = []
            vers: list[tuple[Any, ...]] = []
            if self.filled == 0:
                objs.append((oid, self.vault_id, "secrets", VERSIONED, VERSIONED, None, None))
                self.versioned_id = oid
                oid += 1
            while self.versioned < max(VERSIONED_COUNT, size // VERSIONED_SHARE):
                vers.append(self._version_row(seq, self.versioned_id, self.vault_id, VERSIONED,
                                              f"{self.versioned:032x}", now))
                self.versioned += 1
                seq += 1
            for i in range(self.filled, min(size, self.filled + BATCH)):
                name = secret_name(i)
                deleted = None if live(i) else now
                objs.append((oid, self.vault_id, "secrets", name, name, deleted,
                             None if deleted is None else now + 90 * 86400))
                for k in range(2 if i % 10 == 0 else 1):
                    vers.append(self._version_row(seq, oid, self.vault_id, name,
                                                  f"{i:024x}{k:08x}", now))
                    seq += 1
                oid += 1
            self.filled = min(size, self.filled + BATCH)
            self._insert({"objects": (self.OBJECT_COLS, objs),
                          "versions": (self.VERSION_COLS, vers)})
        self._after_fill()
        self.timings[f"secrets {size}"] = time.monotonic() - t0

    def vaults_to(self, count: int) -> None:
        """Add vaults (placed where the dev vault is, each with its data key under its own
        key-encryption key, and one secret) until the deployment holds `count` more."""
        from openkeyvault.crypto import aead
        from openkeyvault.storage.barrier import vault_owner
        from openkeyvault.storage.schema import vault_placement
        from openkeyvault.vault.secrets import _context
        t0 = time.monotonic()
        now = int(time.time())
        with self.d.engines.read.connect() as c:
            from sqlalchemy import func, select

            from openkeyvault.storage.schema import vaults
            place = c.execute(select(vault_placement).where(
                vault_placement.c.vault_id == self.vault_id)).one()
            vid = int(c.execute(select(func.max(vaults.c.id))).scalar_one()) + 1
        oid, seq = self._next_ids()
        barrier = self.d.barrier
        while self.vaults < count:
            vrows, prows, krows, objs, vers = [], [], [], [], []
            for j in range(self.vaults, min(count, self.vaults + 2000)):
                owner = vault_owner(vid)
                vrows.append((vid, f"scale{j:05d}", "vault", "standard", 90, False, now))
                prows.append((vid, place.subscription, place.resource_group,
                              place.resource_group_lc, place.location, place.tenant_id))
                key = aead.new_key()
                krows.append((owner, 1, barrier._wrap(owner, 1, key, barrier._kek(owner)), now))
                objs.append((oid, vid, "secrets", "one", "one", None, None))
                vers.append((seq, oid, "0" * 32, now, now, True,
                             aead.Sealer(key).seal(b"v" * 32, _context(vid, "one", "0" * 32)), 1))
                seq += 1
                self.vaults = j + 1
                vid += 1
                oid += 1
            self._insert({
                "vaults": (("id", "name", "kind", "sku", "retention_days", "purge_protection",
                            "created"), vrows),
                "vault_placement": (("vault_id", "subscription", "resource_group",
                                     "resource_group_lc", "location", "tenant_id"), prows),
                "data_keys": (("owner", "version", "wrapped", "created"), krows),
                "objects": (self.OBJECT_COLS, objs),
                "versions": (self.VERSION_COLS, vers)})
        self._after_fill()
        self.timings[f"vaults {count}"] = time.monotonic() - t0


# ---- measuring through the server -------------------------------------------------------------
class Client:
    """One keep-alive HTTPS connection to the server, bearer token attached."""

    def __init__(self, server: Server) -> None:
        assert server.ctx is not None
        self.server = server
        self.token = server.token()
        self.conn = http.client.HTTPSConnection(LOOPBACK, server.port, context=server.ctx,
                                                timeout=60)

    def get(self, path: str, host: str | None = None) -> tuple[float, dict[str, Any]]:
        """Seconds for one GET (request to last byte) and the JSON body; non-200 raises."""
        headers = {"Authorization": f"Bearer {self.token}"}
        if host:
            headers["Host"] = f"{host}:{self.server.port}"
        t0 = time.perf_counter()
        self.conn.request("GET", path, headers=headers)
        resp = self.conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - t0
        if resp.status != 200:
            raise BenchError(f"GET {path} -> {resp.status}: {body[:300]!r}")
        return elapsed, json.loads(body)

    def close(self) -> None:
        self.conn.close()


def q(path: str, **params: str) -> str:
    return f"{path}?{urllib.parse.urlencode({**params, 'api-version': API_VERSION})}"


def timed(fn: Callable[[], float], n: int) -> tuple[float, float]:
    """(median, p99) in ms of n calls of fn (which returns seconds), after 5 warm-up calls."""
    for _ in range(min(5, n)):
        fn()
    xs = sorted(fn() for _ in range(n))
    return statistics.median(xs) * 1e3, xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1e3


def deep_link(next_link: str, position: dict[str, Any]) -> str:
    """A nextLink with its position moved (the token is the server's own encoding)."""
    from openkeyvault.vault.paging import encode_token
    u = urllib.parse.urlsplit(next_link)
    query = dict(urllib.parse.parse_qsl(u.query))
    query["$skiptoken"] = encode_token(position)
    return f"{u.path}?{urllib.parse.urlencode(query)}"


@dataclass
class Figures:
    label: str
    startup_s: float = 0.0
    get: tuple[float, float] = (0.0, 0.0)
    list_first: float = 0.0
    list_deep: float = 0.0
    versions: float = 0.0
    rss_mib: float = 0.0
    jobs_ms: float = 0.0
    purge_ms: float = 0.0
    vault_list_ms: float = 0.0


def in_process_ms(fn: Callable[[], object], n: int = 5) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def measure(server: Server, d: Any, label: str, filled: int, requests: int,
            vaults: int = 0) -> Figures:
    f = Figures(label)
    t0 = time.monotonic()
    server.start()
    f.startup_s = time.monotonic() - t0
    client = Client(server)
    try:
        rng = random.Random(7)
        names = [secret_name(i) for i in (rng.randrange(filled) for _ in range(requests * 2))
                 if live(i)][:requests]
        it = iter(names * 2)
        f.get = timed(lambda: client.get(q(f"/secrets/{next(it)}/"))[0], len(names) - 5)
        reps = max(20, requests // 20)
        f.list_first = timed(lambda: client.get(q("/secrets", maxresults=str(PAGE)))[0],
                             reps)[0]
        _, page = client.get(q("/secrets", maxresults=str(PAGE)))
        if page.get("nextLink"):
            deep = deep_link(page["nextLink"], {"a": "e6666666"})  # ~90% into the names
            f.list_deep = timed(lambda: client.get(deep)[0], reps)[0]
        f.versions = timed(lambda: client.get(
            q(f"/secrets/{VERSIONED}/versions", maxresults=str(PAGE)))[0], reps)[0]
        if vaults:
            picks = [f"scale{rng.randrange(vaults):05d}" for _ in range(requests)]
            vit = iter(picks * 2)
            f.get = timed(lambda: client.get(q("/secrets/one/"),
                                             host=f"{next(vit)}.vault.localhost")[0],
                          len(picks) - 5)
        f.rss_mib = worker_rss(server) / 2**20
    finally:
        client.close()
        server.stop()
    now = int(time.time())
    f.jobs_ms = in_process_ms(lambda: (d.repo.objects_with_policy("keys"),
                                       d.repo.objects_with_policy("certificates")))
    f.purge_ms = in_process_ms(lambda: d.repo.purge_expired(now))
    f.vault_list_ms = in_process_ms(d.repo.list_vaults)
    return f


HEAD = (f"  {'backend':<10} {'size':<16} {'start s':>8} {'GET p50':>8} {'GET p99':>8}"
        f" {'list 1st':>9} {'list 90%':>9} {'versions':>9} {'RSS MiB':>8} {'jobs ms':>8}"
        f" {'purge ms':>8} {'vaults ms':>9}")


def line(backend: str, f: Figures, ref: Figures | None) -> str:
    out = (f"  {backend:<10} {f.label:<16} {f.startup_s:>8.2f} {f.get[0]:>8.2f} {f.get[1]:>8.2f}"
           f" {f.list_first:>9.2f} {f.list_deep:>9.2f} {f.versions:>9.2f} {f.rss_mib:>8.0f}"
           f" {f.jobs_ms:>8.2f} {f.purge_ms:>8.2f} {f.vault_list_ms:>9.2f}")
    if ref is not None and ref is not f:
        def r(a: float, b: float) -> str:
            return f"{a / b:.1f}x" if b > 0 else "-"
        out += (f"\n  {'':<10} {'  vs smallest':<16} {r(f.startup_s, ref.startup_s):>8}"
                f" {r(f.get[0], ref.get[0]):>8} {r(f.get[1], ref.get[1]):>8}"
                f" {r(f.list_first, ref.list_first):>9} {r(f.list_deep, ref.list_deep):>9}"
                f" {r(f.versions, ref.versions):>9} {r(f.rss_mib, ref.rss_mib):>8}"
                f" {r(f.jobs_ms, ref.jobs_ms):>8} {r(f.purge_ms, ref.purge_ms):>8}"
                f" {r(f.vault_list_ms, ref.vault_list_ms):>9}")
    return out


# ---- query plans ----------------------------------------------------------------------------
def explain(d: Any, vault_id: int) -> None:
    """The plan of every statement the listing and job reads execute, on this backend."""
    from sqlalchemy import event
    engine = d.engines.read
    postgres = d.engines.dialect == "postgresql"
    calls: dict[str, Callable[[], object]] = {
        "list_latest (first page)": lambda: d.repo.list_latest(vault_id, "secrets", False,
                                                               None, PAGE + 1),
        "list_latest (deep page)": lambda: d.repo.list_latest(vault_id, "secrets", False,
                                                              "e6666666", PAGE + 1),
        "list_latest (deleted)": lambda: d.repo.list_latest(vault_id, "secrets", True, None,
                                                            PAGE + 1),
        "list_versions": lambda: d.repo.list_versions(vault_id, "secrets", VERSIONED, None,
                                                      PAGE + 1),
        "list_versionless": lambda: d.repo.list_versionless(vault_id, "certificates", None,
                                                            PAGE + 1),
        "objects_with_policy": lambda: d.repo.objects_with_policy("keys"),
        "list_vaults": d.repo.list_vaults,
    }
    for label, call in calls.items():
        seen: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                    executemany: bool) -> None:
            seen.append((statement, parameters))  # noqa: B023 - read right after the call

        event.listen(engine, "before_cursor_execute", capture)
        try:
            call()
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        for statement, parameters in seen:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            prefix = "EXPLAIN (ANALYZE, COSTS OFF) " if postgres else "EXPLAIN QUERY PLAN "
            with engine.connect() as c:
                rows = c.exec_driver_sql(prefix + statement, parameters).all()
            print(f"\n  -- {label}")
            for r in rows:
                print("     " + (str(r[0]) if postgres else f"{'  ' * (r[1] > 0)}{r[-1]}"))


# ---- the run ----------------------------------------------------------------------------------
@contextlib.contextmanager
def database(backend: str) -> Iterator[str | None]:
    """None (SQLite in the data directory) or the URL of a new PostgreSQL database."""
    if backend == "sqlite":
        yield None
        return
    from tests.support.postgres import postgres_cluster
    with postgres_cluster() as cluster:
        yield cluster.create_database("okv_scale")


def run_backend(backend: str, args: argparse.Namespace, sizes: list[int]) -> list[Figures]:
    from openkeyvault.config import Settings
    from openkeyvault.deployment import Deployment
    out: list[Figures] = []
    with database(backend) as url, tempfile.TemporaryDirectory(prefix="okv-scale-") as tmp:
        extra = ("--database", url) if url else ()
        server = Server(Path(tmp) / "data", 1, extra_args=extra)
        server.start()  # prepares the data directory and the dev vault
        server.stop()
        d = Deployment.open(Settings(data_dir=server.data_dir, dev=True, database_url=url))
        try:
            dev = d.repo.get_vault("dev")
            assert dev is not None
            filler = Filler(d, dev.id)
            for size in sizes:
                print(f"bench: {backend}: filling to {size:,} secrets", flush=True)
                filler.secrets_to(size)
                print(f"bench: {backend}: filled in {filler.timings[f'secrets {size}']:.0f}s, "
                      "measuring", flush=True)
                out.append(measure(server, d, f"{size:,} secrets", filler.filled,
                                   args.requests))
            if args.explain:
                print(f"\n  query plans on {backend}, {sizes[-1]:,} secrets:")
                explain(d, dev.id)
                print()
            if args.vaults:
                print(f"bench: {backend}: adding {args.vaults:,} vaults", flush=True)
                filler.vaults_to(args.vaults)
                print(f"bench: {backend}: added in {filler.timings[f'vaults {args.vaults}']:.0f}s,"
                      " measuring", flush=True)
                out.append(measure(server, d, f"+{args.vaults:,} vaults", filler.filled,
                                   args.requests, vaults=args.vaults))
        finally:
            d.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max", type=int, default=100_000,
                    help="the largest vault, in secrets (sizes: 10k, 100k, 1M up to it)")
    ap.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--vaults", type=int, default=10_000,
                    help="vaults added after the largest size (0: none)")
    ap.add_argument("--requests", type=int, default=500, help="secret GETs per size")
    ap.add_argument("--explain", action="store_true",
                    help="print the query plans at the largest size")
    args = ap.parse_args()
    sizes = [n for n in (10_000, 100_000, 1_000_000) if n < args.max] + [args.max]
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    return guarded(lambda: run(args, sizes, backends))


def run(args: argparse.Namespace, sizes: list[int], backends: list[str]) -> int:
    results: dict[str, list[Figures]] = {}
    for b in backends:
        results[b] = run_backend(b, args, sizes)
        print(HEAD)  # at once, in case a later backend fails
        for f in results[b]:
            print(line(b, f, results[b][0]), flush=True)
    print("\n  times in ms unless said; list pages of 25; jobs = objects_with_policy of keys "
          "and certificates (every tick);\n  purge = purge_expired with nothing due; vaults = "
          "list_vaults; the vaults row's GET is of a secret in a random vault")
    print(HEAD)
    for backend, figures in results.items():
        for f in figures:
            print(line(backend, f, figures[0]))
    if len(results) == 2:
        for s, p in zip(results["sqlite"], results["postgresql"], strict=True):
            print(f"  PostgreSQL / SQLite at {p.label}: secret GET median "
                  f"{p.get[0] / s.get[0]:.2f}x, list page {p.list_first / s.list_first:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
