"""Secret PUT and GET throughput against the real server, next to the no-op endpoint.

Usage: python benchmarks/secret_put.py [--duration S] [--connections 32] [--workers N]

The write-path companion of secret_get.py, on the same server, wrk runner and CPU accounting
(benchmarks/support.py): starts `okv server --dev` on a free loopback port in a temporary
data directory, gets a token, then drives it with wrk (HTTPS, keep-alive) against

  (a) PUT /secrets/NAME?api-version=7.5 with a SecretSetParameters body (value, contentType,
      tags, attributes): every request decodes and validates a body and stores a version,
  (b) GET /secrets/NAME/?api-version=7.5 (the authenticated read path), and
  (c) GET /healthz (what the HTTP stack alone costs),

and prints requests/s, p50 and p99 of each and their ratios to the no-op. To compare two
versions of the code, run it once per version (PYTHONPATH=.../src) and compare the ratios,
which hold across runs on a busy machine better than absolute rates do.

With --in-process it skips HTTP, TLS and wrk: it builds the app as a worker does (as
profile_secret_get.py does) and times the same PUT and GET, an EC sign (a body on
the event loop, no write) and /healthz per request, best of 5 batches. A few microseconds
of body decoding show there, where a shared machine's wrk runs would bury them in noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from support import (
    API_VERSION,
    TABLE_HEAD,
    BenchError,
    Driver,
    WrkResult,
    add_load_options,
    asgi_scope,
    bearer,
    body_script,
    check_load_options,
    code_under_test,
    dev_headers,
    guarded,
    in_process_app,
    per_request_us,
    row,
    run_wrk,
    wrk_and_server,
)

SECRET_NAME = "bench-put"
BODY = {"value": "s" * 32, "contentType": "text/plain",
        "tags": {"env": "bench", "team": "payments"},
        "attributes": {"enabled": True, "exp": 4102444800}}


async def in_process(requests: int, tmp: Path) -> None:
    app, _log = in_process_app(tmp)  # the log file stays open: the app logs to it
    headers = dev_headers(app)
    json_headers = [*headers, (b"content-type", b"application/json")]
    driver = Driver(app)
    body = json.dumps(BODY).encode()
    put = asgi_scope("PUT", f"/secrets/{SECRET_NAME}", b"api-version=7.5", json_headers)
    get = asgi_scope("GET", f"/secrets/{SECRET_NAME}/", b"api-version=7.5", headers)
    health = asgi_scope("GET", "/healthz", b"", headers[:1])
    await driver.call(asgi_scope("POST", "/keys/bench-ec/create", b"api-version=7.5",
                                 json_headers), b'{"kty": "EC", "crv": "P-256"}')
    assert driver.status == 200, driver.body
    sign = asgi_scope("POST", "/keys/bench-ec//sign", b"api-version=7.5", json_headers)
    sign_body = json.dumps({"alg": "ES256", "value": "AQ" * 21 + "A"}).encode()

    for scope, raw in ((put, body), (sign, sign_body), (get, b"")):
        await driver.call(scope, raw)
        assert driver.status == 200, driver.body
    rows = [("secret PUT", await per_request_us(Driver(app, body), put, requests)),
            ("secret GET", await per_request_us(driver, get, requests)),
            ("key sign ES256", await per_request_us(Driver(app, sign_body), sign, requests)),
            ("no-op /healthz", await per_request_us(driver, health, requests))]
    print(f"in-process, per request (no HTTP parsing, no TLS), best of 5 batches of "
          f"{requests // 5}, code: {code_under_test()}")
    for label, us in rows:
        print(f"  {label:<16} {us:9.1f} us")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_options(ap)
    ap.add_argument("--in-process", action="store_true",
                    help="call the app in-process instead of over HTTPS with wrk")
    ap.add_argument("--requests", type=int, default=5000,
                    help="requests per endpoint with --in-process (5000)")
    args = ap.parse_args()
    check_load_options(ap, args)
    if args.in_process:
        with tempfile.TemporaryDirectory(prefix="okv-bench-") as tmp:
            asyncio.run(in_process(max(5, args.requests), Path(tmp)))
        return 0

    return guarded(lambda: measure(args))


def measure(args: argparse.Namespace) -> int:
    with wrk_and_server(args.workers) as (wrk, server):
        auth = bearer(server.token())
        put_url = f"/secrets/{SECRET_NAME}?api-version={API_VERSION}"
        status, got = server.request("PUT", put_url, BODY, auth)
        if status != 200 or got.get("value") != BODY["value"]:
            raise BenchError(f"secret PUT returned {status} {got!r}")
        script = body_script(server.work_dir, "put", "PUT", json.dumps(BODY))
        urls = {"put": server.base + put_url,
                "get": f"{server.base}/secrets/{SECRET_NAME}/?api-version={API_VERSION}",
                "noop": server.base + "/healthz"}
        common = {"connections": args.connections, "server_pgid": server.pgid}
        put_args = {"headers": auth, "extra_args": ["-s", str(script)]}
        if args.warmup > 0:
            print(f"bench: warm-up {args.warmup:g}s per endpoint", flush=True)
            run_wrk(wrk, "warm-up", urls["put"], threads=args.threads,
                    duration=args.warmup, **put_args, **common)
            run_wrk(wrk, "warm-up", urls["get"], threads=args.threads,
                    duration=args.warmup, headers=auth, **common)
        print(f"bench: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, "
              "secret PUT, secret GET, no-op", flush=True)
        put = run_wrk(wrk, "secret PUT (auth)", urls["put"], threads=args.threads,
                      duration=args.duration, **put_args, **common)
        get = run_wrk(wrk, "secret GET (auth)", urls["get"], threads=args.threads,
                      duration=args.duration, headers=auth, **common)
        noop = run_wrk(wrk, "no-op /healthz", urls["noop"], threads=args.threads,
                       duration=args.duration, **common)
        server.check_alive()
        report([put, get, noop])
    return 0


def report(results: list[WrkResult]) -> None:
    print()
    print(TABLE_HEAD)
    for r in results:
        print(row(r))
    for r in results:
        if r.non_2xx or r.socket_errors:
            print(f"  WARNING: {r.label}: {r.non_2xx} non-2xx answers, {r.socket_errors} "
                  "socket errors")
    put, get, noop = results
    print(f"\n  ratio secret PUT / no-op: {put.rps / noop.rps:.3f}")
    print(f"  ratio secret GET / no-op: {get.rps / noop.rps:.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
