"""Where a secret GET spends its time inside one worker, without HTTP or TLS.

Usage: python benchmarks/profile_secret_get.py [--requests N] [--cprofile] [--top 30]

Builds the real ASGI app (`create_app`, as a granian worker does) on a temporary dev data
directory, sets one 32-byte secret, then calls the app in-process with ASGI scopes shaped like
wrk's requests. It prints:

- the in-process cost per request of the secret GET and of the no-op /healthz;
- the same hot path taken apart: each step timed on its own (the storage check and the
  look-up of the request's admission, api/admitted.py, which a repeated request is served
  from, so that the token verify, vault lookup and route are not run again; the secret
  query, barrier decrypt, rendering + JSON + Response, the request log line, ...), so the
  parts add up to roughly the whole;
- with --cprofile, a cProfile of the secret GET loop (profiler overhead inflates pure-Python
  code; use the step timings for proportions and the profile for the call tree).

Request log lines go to a file in the temporary directory, as they would go to a log file.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import inspect
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support import REPEATS, Driver, asgi_scope, dev_headers, in_process_app, per_request_us

SECRET_NAME = "bench-secret"
SECRET_VALUE = "s" * 32


def per_call_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(200, n)):
        fn()
    batch, best = max(1, n // REPEATS), float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        best = min(best, (time.perf_counter() - t0) / batch)
    return best * 1e6


class Timer:
    """Accumulates wall time spent inside wrapped callables, by label."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        fn = getattr(owner, attr, None)
        if fn is None:  # the code moved on: skip this probe rather than fail
            print(f"  (probe {label!r}: {owner!r}.{attr} not found, skipped)")
            return
        spent = self.spent
        spent.setdefault(label, 0.0)
        perf = time.perf_counter
        if inspect.iscoroutinefunction(fn):
            async def awrapped(*a: Any, **k: Any) -> Any:
                t0 = perf()
                try:
                    return await fn(*a, **k)
                finally:
                    spent[label] += perf() - t0
            wrapped: Any = awrapped
        else:
            def wrapped(*a: Any, **k: Any) -> Any:
                t0 = perf()
                try:
                    return fn(*a, **k)
                finally:
                    spent[label] += perf() - t0
        if attr in vars(owner):  # a module's or class's own attribute: put it back after
            self._undo.append(lambda: setattr(owner, attr, fn))
        else:  # a bound method shadowed on an instance: remove the shadow after
            self._undo.append(lambda: delattr(owner, attr))
        setattr(owner, attr, wrapped)

    def undo(self) -> None:
        for u in reversed(self._undo):
            u()
        self._undo.clear()


async def in_situ(app: Any, driver: Driver, scope: dict[str, Any], n: int, total: float
                  ) -> None:
    """Time each step inside real requests (wrappers add well under a microsecond each)."""
    from starlette.responses import Response

    import openkeyvault.api.admitted as admitted_mod
    import openkeyvault.api.render as render_mod
    import openkeyvault.api.secrets as secrets_routes

    d, t = app.d, Timer()
    print("\nthe secret GET, each step timed inside real requests:")
    t.wrap(d.repo, "snapshot", "storage check (repo.snapshot: PRAGMA data_version)")
    t.wrap(admitted_mod, "find", "admission memo look-up (admitted.find)")
    t.wrap(d.tokens, "verified", "token verify (a memo miss only)")
    t.wrap(d.repo, "get_vault", "vault lookup query (a memo miss only)")
    t.wrap(d.repo, "get_version", "secret query (repo.get_version)")
    t.wrap(d.barrier, "open", "barrier decrypt (Barrier.open)")
    t.wrap(render_mod, "secret", "render.secret (bundle -> dict)")
    t.wrap(secrets_routes, "json_response", "JSON + Response() (json_response)")
    t.wrap(Response, "__call__", "Starlette Response.__call__ (ASGI send)")
    t.wrap(app.router, "resolve", "router.resolve (a memo miss only)")
    for gate in app.accounting.gates:  # throttling, the audit trail's health
        t.wrap(gate, "admit", f"gate: {type(gate).__name__}.admit")
    for observer in app.accounting.observers:  # audit, metrics, usage, the request log
        t.wrap(observer, "observe", f"observer: {type(observer).__name__}.observe")
    try:
        for _ in range(min(200, n)):
            await driver.call(scope)
        batch, measured, best = max(1, n // REPEATS), float("inf"), dict(t.spent)
        for _ in range(REPEATS):  # keep the quietest batch, as for the totals
            for k in t.spent:
                t.spent[k] = 0.0
            t0 = time.perf_counter()
            for _ in range(batch):
                await driver.call(scope)
            took = (time.perf_counter() - t0) / batch * 1e6
            if took < measured:
                measured, best = took, dict(t.spent)
    finally:
        t.undo()
    accounted = 0.0
    for label, secs in sorted(best.items(), key=lambda kv: -kv[1]):
        us = secs / batch * 1e6
        accounted += us
        print(f"  {label:<48} {us:8.1f} us  {us / measured:6.1%}")
    rest = measured - accounted
    print(f"  {'rest (Request, headers, query, Ctx, glue)':<48} {rest:8.1f} us  "
          f"{rest / measured:6.1%}")
    print(f"  {'total of this (instrumented) run':<48} {measured:8.1f} us  "
          f"(uninstrumented best: {total:.1f} us)")


async def gc_effect(driver: Driver, scope: dict[str, Any], n: int, total: float) -> None:
    gc.collect()
    gc.freeze()
    frozen = await per_request_us(driver, scope, n)
    gc.unfreeze()
    gc.disable()
    try:
        off = await per_request_us(driver, scope, n)
    finally:
        gc.enable()
    print(f"\ngarbage collector: secret GET {total:.1f} us as is, {frozen:.1f} us after "
          f"gc.freeze() of the startup heap, {off:.1f} us with gc disabled")


async def run(args: argparse.Namespace, tmp: Path) -> None:
    app, log_file = in_process_app(tmp)
    d = app.d
    headers = dev_headers(app)
    driver = Driver(app)

    put = asgi_scope("PUT", f"/secrets/{SECRET_NAME}", b"api-version=7.5",
                     [*headers, (b"content-type", b"application/json")])
    await driver.call(put, f'{{"value": "{SECRET_VALUE}"}}'.encode())
    assert driver.status == 200, driver.body
    get = asgi_scope("GET", f"/secrets/{SECRET_NAME}/", b"api-version=7.5", headers)
    await driver.call(get)
    assert driver.status == 200 and SECRET_VALUE.encode() in driver.body, driver.body
    health = asgi_scope("GET", "/healthz", b"", headers[:1])

    n = args.requests
    warm_until = time.monotonic() + 2.0  # caches, allocator and CPU clocks settle first
    while time.monotonic() < warm_until:
        await driver.call(get)
        await driver.call(health)
    total = await per_request_us(driver, get, n)
    noop = await per_request_us(driver, health, n)
    print(f"in-process, per request (no HTTP parsing, no TLS), best of {REPEATS} batches of "
          f"{n // REPEATS}:")
    print(f"  secret GET  {total:8.1f} us  ({1e6 / total:,.0f}/s on one core)")
    print(f"  /healthz    {noop:8.1f} us  ({1e6 / noop:,.0f}/s on one core)")

    # ---- the same path, measured in place ---------------------------------------------
    vault = d.repo.get_vault("dev")
    assert vault is not None
    await in_situ(app, driver, get, n, total)
    await gc_effect(driver, get, n, total)

    # The two queries without SQLAlchemy: what the raw driver costs for the same SQL.
    import sqlite3

    raw = sqlite3.connect(d.settings.db_path, check_same_thread=False, isolation_level=None)
    q_vault = "SELECT id, name, kind, sku, retention_days, purge_protection, created " \
              "FROM vaults WHERE name = ?"
    q_secret = ("SELECT o.name, v.version, v.created, v.updated, v.enabled, v.nbf, v.exp, "
                "v.content_type, v.tags, v.props, v.sealed, v.key_version, v.seq, "
                "o.deleted_date, o.scheduled_purge_date FROM versions v JOIN objects o "
                "ON v.object_id = o.id WHERE o.vault_id = ? AND o.collection = ? AND "
                "o.name_lc = ? AND o.deleted_date IS NULL ORDER BY v.seq DESC LIMIT 1")
    print("\nthe two queries alone, through the repository vs the same SQL on the raw sqlite3 "
          "driver:")
    rows = [
        ("vault lookup", lambda: d.repo.get_vault("dev"),
         lambda: raw.execute(q_vault, ("dev",)).fetchone()),
        ("secret query", lambda: d.repo.get_version(vault.id, "secrets", SECRET_NAME, None),
         lambda: raw.execute(q_secret, (vault.id, "secrets", SECRET_NAME)).fetchone()),
    ]
    for label, via_repo, via_raw in rows:
        a, b = per_call_us(via_repo, n), per_call_us(via_raw, n)
        print(f"  {label}  repository {a:7.1f} us   raw sqlite3 {b:6.1f} us   (x{a / b:.0f})")
    raw.close()

    if args.cprofile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            await driver.call(get)
        prof.disable()
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out).strip_dirs()
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)
        print(f"\ncProfile of {n} secret GETs (profiler overhead included):")
        print(out.getvalue())
    app.accounting.close()  # the audit trail and usage counts, before the directory goes
    log_file.close()
    d.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000, help="calls per measurement (5000)")
    ap.add_argument("--cprofile", action="store_true", help="also print a cProfile")
    ap.add_argument("--top", type=int, default=30, help="rows of the cProfile to print (30)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="okv-profile-") as tmp:
        asyncio.run(run(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
