"""Where a secret GET spends its time inside one worker, without HTTP or TLS.

Usage: python benchmarks/profile_secret_get.py [--requests N] [--cprofile] [--top 30]

Builds the real ASGI app (`create_app`, as a granian worker does) on a temporary dev data
directory, sets one 32-byte secret, then calls the app in-process with ASGI scopes shaped like
wrk's requests. It prints:

- the in-process cost per request of the secret GET and of the no-op /healthz;
- the same hot path taken apart: each step timed on its own (token verify from the cache,
  vault lookup query, secret query, barrier decrypt, rendering + JSON + Response, the request
  log line, ...), so the parts add up to roughly the whole;
- with --cprofile, a cProfile of the secret GET loop (profiler overhead inflates pure-Python
  code; use the step timings for proportions and the profile for the call tree).

Request log lines go to a file in the temporary directory, as they would go to a log file.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import os
import pstats
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

SECRET_NAME = "bench-secret"
SECRET_VALUE = "s" * 32
PORT = 8443


def _scope(method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]]
           ) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": method, "scheme": "https", "path": path,
        "raw_path": path.encode(), "query_string": query, "root_path": "",
        "headers": headers, "server": ("127.0.0.1", PORT), "client": ("127.0.0.1", 50000),
    }


class Driver:
    """Calls the ASGI app the way a server would, and keeps the last response."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.status = 0
        self.body = b""

    async def call(self, scope: dict[str, Any], body: bytes = b"") -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body":
                self.body = message.get("body", b"")

        await self.app(scope, receive, send)


REPEATS = 5  # best of 5 batches: the machine is shared, the minimum is the stable figure


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


async def per_request_us(driver: Driver, scope: dict[str, Any], n: int) -> float:
    for _ in range(min(200, n)):
        await driver.call(scope)
    batch, best = max(1, n // REPEATS), float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(batch):
            await driver.call(scope)
        best = min(best, (time.perf_counter() - t0) / batch)
    return best * 1e6


async def run(args: argparse.Namespace, tmp: Path) -> None:
    from openkeyvault.api import render
    from openkeyvault.api.http import json_response
    from openkeyvault.cli.server import prepare
    from openkeyvault.config import ENV_VAR, Settings
    from openkeyvault.storage.barrier import vault_owner
    from openkeyvault.vault.context import Caller

    settings = Settings(data_dir=tmp / "data", port=PORT, dev=True)
    prepare(settings)
    os.environ[ENV_VAR] = settings.to_env()
    from openkeyvault.api.app import create_app

    app = create_app()
    log_file = open(tmp / "server.log", "w")  # noqa: SIM115
    for h in logging.getLogger("openkeyvault").handlers:
        if isinstance(h, logging.StreamHandler):
            h.setStream(log_file)
    d = app.d
    host = f"127.0.0.1:{PORT}"
    token = d.tokens.issue(d.dev_principal, f"https://vault.localhost:{PORT}").access_token
    headers = [(b"host", host.encode()), (b"authorization", f"Bearer {token}".encode())]
    driver = Driver(app)

    put = _scope("PUT", f"/secrets/{SECRET_NAME}", b"api-version=7.5",
                 [*headers, (b"content-type", b"application/json")])
    await driver.call(put, f'{{"value": "{SECRET_VALUE}"}}'.encode())
    assert driver.status == 200, driver.body
    get = _scope("GET", f"/secrets/{SECRET_NAME}/", b"api-version=7.5", headers)
    await driver.call(get)
    assert driver.status == 200 and SECRET_VALUE.encode() in driver.body, driver.body
    health = _scope("GET", "/healthz", b"", [(b"host", host.encode())])

    n = args.requests
    total = await per_request_us(driver, get, n)
    noop = await per_request_us(driver, health, n)
    print(f"in-process, per request (no HTTP parsing, no TLS), best of {REPEATS} batches of "
          f"{n // REPEATS}:")
    print(f"  secret GET  {total:8.1f} us  ({1e6 / total:,.0f}/s on one core)")
    print(f"  /healthz    {noop:8.1f} us  ({1e6 / noop:,.0f}/s on one core)")

    # ---- the same path, step by step ----------------------------------------------------
    audiences = app.hosts.audiences(host)
    vault = d.repo.get_vault("dev")
    assert vault is not None
    caller = Caller(d.dev_principal, vault)
    rec = d.repo.get_version(vault.id, "secrets", SECRET_NAME, None)
    assert rec is not None
    ctx_aad = f"okv/secret/{vault.id}/{SECRET_NAME}/{rec.version}".encode()
    bundle = d.secrets.get(caller, SECRET_NAME, None)
    base = f"https://{host}"
    req_log = logging.getLogger("openkeyvault.request")
    from starlette.requests import Request

    steps: list[tuple[str, Callable[[], object]]] = [
        ("(whole) SecretService.get: the domain call",
         lambda: d.secrets.get(caller, SECRET_NAME, None)),
        ("token verify (cache hit: sha256 + dict)", lambda: d.tokens.verify(token, audiences)),
        ("  of which clock.now() (OffsetClock: os.stat)", d.clock.now),
        ("vault lookup query (repo.get_vault)", lambda: d.repo.get_vault("dev")),
        ("secret query (repo.get_version)",
         lambda: d.repo.get_version(vault.id, "secrets", SECRET_NAME, None)),
        ("barrier decrypt (Barrier.open)",
         lambda: d.barrier.open(vault_owner(vault.id), rec.key_version or 1, ctx_aad,
                                rec.sealed or b"")),
        ("authorize + bundle (service.get minus query)",
         lambda: d.secrets._bundle(caller, rec, with_value=True)),
        ("render.secret + json.dumps + Response()",
         lambda: json_response(render.secret(base, bundle))),
        ("request log line (log.info to a file)",
         lambda: req_log.info("rid=%s %s %s %d %.1fms", "x" * 36, "GET", "/secrets/x/", 200,
                              1.0)),
        ("uuid4 request id", lambda: str(uuid.uuid4())),
        ("Request() + header lookups",
         lambda: (r := Request(get)).headers.get("host") and r.headers.get("authorization")),
        ("parse_qsl of the query", lambda: dict(parse_qsl("api-version=7.5"))),
        ("router.resolve", lambda: app.router.resolve("GET", f"/secrets/{SECRET_NAME}/")),
    ]
    print("\nthe secret GET path, each step timed alone:")
    accounted = 0.0
    for label, fn in steps:
        us = per_call_us(fn, n)
        if not label.startswith(("  ", "(whole)")):
            accounted += us
        print(f"  {label:<48} {us:8.1f} us  {us / total:6.1%}")
    print(f"  {'sum of the steps':<48} {accounted:8.1f} us  {accounted / total:6.1%}")
    print(f"  {'rest (ASGI send, Response.__call__, glue)':<48} {total - accounted:8.1f} us  "
          f"{(total - accounted) / total:6.1%}")

    # The two queries without SQLAlchemy: what the raw driver costs for the same SQL.
    import sqlite3

    raw = sqlite3.connect(settings.db_path, check_same_thread=False, isolation_level=None)
    q_vault = "SELECT id, name, kind, sku, retention_days, purge_protection, created " \
              "FROM vaults WHERE name = ?"
    q_secret = ("SELECT o.name, v.version, v.created, v.updated, v.enabled, v.nbf, v.exp, "
                "v.content_type, v.tags, v.props, v.sealed, v.key_version, v.seq, "
                "o.deleted_date, o.scheduled_purge_date FROM versions v JOIN objects o "
                "ON v.object_id = o.id WHERE o.vault_id = ? AND o.collection = ? AND "
                "o.name_lc = ? AND o.deleted_date IS NULL ORDER BY v.seq DESC LIMIT 1")
    print("\nthe same two queries on the raw sqlite3 driver (one open connection):")
    us_v = per_call_us(lambda: raw.execute(q_vault, ("dev",)).fetchone(), n)
    us_s = per_call_us(lambda: raw.execute(q_secret, (vault.id, "secrets", SECRET_NAME))
                       .fetchone(), n)
    print(f"  vault lookup  {us_v:8.1f} us")
    print(f"  secret query  {us_s:8.1f} us")
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
