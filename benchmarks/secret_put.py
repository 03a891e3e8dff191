"""Secret PUT and GET throughput against the real server, next to the no-op endpoint.

Usage: python benchmarks/secret_put.py [--duration S] [--connections 32] [--workers N]

The write-path companion of secret_get.py (whose server, wrk runner and CPU accounting it
reuses): starts `okv server --dev` on a free loopback port in a temporary data directory,
gets a token, then drives it with wrk (HTTPS, keep-alive) against

  (a) PUT /secrets/NAME?api-version=7.5 with a SecretSetParameters body (value, contentType,
      tags, attributes): every request decodes and validates a body and stores a version,
  (b) GET /secrets/NAME/?api-version=7.5 (the authenticated read path), and
  (c) GET /healthz (what the HTTP stack alone costs),

and prints requests/s, p50 and p99 of each and their ratios to the no-op. To compare two
versions of the code, run it once per version (PYTHONPATH=.../src) and compare the ratios,
which hold across runs on a busy machine better than absolute rates do.

With --in-process it skips HTTP, TLS and wrk: it builds the app as a worker does (the
helpers of profile_secret_get.py) and times the same PUT and GET, an EC sign (a body on
the event loop, no write) and /healthz per request, best of 5 batches. A few microseconds
of body decoding show there, where a shared machine's wrk runs would bury them in noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from secret_get import (  # noqa: E402 (a sibling script, found through the path above)
    API_VERSION,
    BenchError,
    Server,
    WrkResult,
    _interrupt,
    _row,
    code_under_test,
    find_or_install_wrk,
    machine_busy,
    run_wrk,
)

SECRET_NAME = "bench-put"
BODY = {"value": "s" * 32, "contentType": "text/plain",
        "tags": {"env": "bench", "team": "payments"},
        "attributes": {"enabled": True, "exp": 4102444800}}


def put_script(directory: Path) -> Path:
    """A wrk Lua script that sends every request as a PUT with the JSON body."""
    body = json.dumps(BODY).replace("\\", "\\\\").replace('"', '\\"')
    path = directory / "put.lua"
    path.write_text('wrk.method = "PUT"\n'
                    f'wrk.body = "{body}"\n'
                    'wrk.headers["Content-Type"] = "application/json"\n')
    return path


async def in_process(requests: int, tmp: Path) -> None:
    from profile_secret_get import PORT, Driver, _scope, per_request_us

    from openkeyvault.cli.server import prepare
    from openkeyvault.config import ENV_VAR, Settings

    settings = Settings(data_dir=tmp / "data", port=PORT, dev=True)
    prepare(settings)
    os.environ[ENV_VAR] = settings.to_env()
    from openkeyvault.api.app import create_app

    log_file = open(tmp / "server.log", "w")  # noqa: SIM115
    sys.stderr = log_file  # the request log goes to a file, as in production
    app = create_app()
    d = app.d
    host = f"127.0.0.1:{PORT}"
    token = d.tokens.issue(d.dev_principal, f"https://vault.localhost:{PORT}").access_token
    headers = [(b"host", host.encode()), (b"authorization", f"Bearer {token}".encode())]
    json_headers = [*headers, (b"content-type", b"application/json")]
    driver = Driver(app)
    body = json.dumps(BODY).encode()
    put = _scope("PUT", f"/secrets/{SECRET_NAME}", b"api-version=7.5", json_headers)
    get = _scope("GET", f"/secrets/{SECRET_NAME}/", b"api-version=7.5", headers)
    health = _scope("GET", "/healthz", b"", [(b"host", host.encode())])
    await driver.call(_scope("POST", "/keys/bench-ec/create", b"api-version=7.5", json_headers),
                      b'{"kty": "EC", "crv": "P-256"}')
    assert driver.status == 200, driver.body
    sign = _scope("POST", "/keys/bench-ec//sign", b"api-version=7.5", json_headers)
    sign_body = json.dumps({"alg": "ES256", "value": "AQ" * 21 + "A"}).encode()

    class WithBody:
        """A driver whose every call sends `raw`."""

        def __init__(self, raw: bytes) -> None:
            self.raw = raw

        async def call(self, scope: dict[str, object]) -> None:
            await driver.call(scope, self.raw)

    for scope, raw in ((put, body), (sign, sign_body), (get, b"")):
        await driver.call(scope, raw)
        assert driver.status == 200, driver.body
    rows = [("secret PUT", await per_request_us(WithBody(body), put, requests)),  # type: ignore[arg-type]
            ("secret GET", await per_request_us(driver, get, requests)),
            ("key sign ES256", await per_request_us(WithBody(sign_body), sign, requests)),  # type: ignore[arg-type]
            ("no-op /healthz", await per_request_us(driver, health, requests))]
    sys.stderr = sys.__stderr__
    print(f"in-process, per request (no HTTP parsing, no TLS), best of 5 batches of "
          f"{requests // 5}, code: {code_under_test()}")
    for label, us in rows:
        print(f"  {label:<16} {us:9.1f} us")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    ap.add_argument("--connections", type=int, default=32, help="concurrent connections (32)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="server worker processes (default: CPU count)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per endpoint")
    ap.add_argument("--in-process", action="store_true",
                    help="call the app in-process instead of over HTTPS with wrk")
    ap.add_argument("--requests", type=int, default=5000,
                    help="requests per endpoint with --in-process (5000)")
    args = ap.parse_args()
    if args.duration <= 0 or args.connections < 1 or args.workers < 1 or args.threads < 1:
        ap.error("duration, connections, workers and threads must be positive")
    if args.in_process:
        with tempfile.TemporaryDirectory(prefix="okv-bench-") as tmp:
            asyncio.run(in_process(max(5, args.requests), Path(tmp)))
        return 0

    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM must still stop the server
    try:
        wrk = find_or_install_wrk()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    b0, t0 = machine_busy(), time.monotonic()
    time.sleep(1.0)
    idle_load = (machine_busy() - b0) / (time.monotonic() - t0)
    if idle_load > 0.2:
        print(f"bench: WARNING: the machine is busy before the benchmark starts ({idle_load:.2f} "
              "CPUs in use by other processes); results will be low and noisy", flush=True)

    with tempfile.TemporaryDirectory(prefix="okv-bench-") as tmp:
        server = Server(Path(tmp) / "data", args.workers)
        try:
            print(f"bench: starting okv server --dev ({args.workers} worker(s)) on "
                  f"{server.base}, code: {code_under_test()}", flush=True)
            server.start()
            assert server.proc is not None
            env = server.env()
            resource_uri = f"https://vault.localhost:{server.port}"
            _, tok = server.request(
                "GET", f"/msi/token?api-version=2019-08-01&resource={resource_uri}",
                headers={"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]})
            auth = {"Authorization": f"Bearer {tok['access_token']}"}
            put_url = f"/secrets/{SECRET_NAME}?api-version={API_VERSION}"
            status, got = server.request("PUT", put_url, BODY, auth)
            if status != 200 or got.get("value") != BODY["value"]:
                raise BenchError(f"secret PUT returned {status} {got!r}")
            script = put_script(Path(tmp))
            urls = {"put": server.base + put_url,
                    "get": f"{server.base}/secrets/{SECRET_NAME}/?api-version={API_VERSION}",
                    "noop": server.base + "/healthz"}
            common = {"connections": args.connections, "server_pgid": server.proc.pid}
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
            if server.proc.poll() is not None:
                raise BenchError(f"the server died during the run:\n{server.log_tail()}")
            report([put, get, noop])
        except BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("bench: interrupted", file=sys.stderr)
            return 130
        finally:
            server.stop()
    return 0


def report(results: list[WrkResult]) -> None:
    print(f"\n  {'endpoint':<22} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}"
          f" {'server CPU':>10} {'wrk CPU':>8} {'other CPU':>9}")
    for r in results:
        print(_row(r))
    for r in results:
        if r.non_2xx or r.socket_errors:
            print(f"  WARNING: {r.label}: {r.non_2xx} non-2xx answers, {r.socket_errors} "
                  "socket errors")
    put, get, noop = results
    print(f"\n  ratio secret PUT / no-op: {put.rps / noop.rps:.3f}")
    print(f"  ratio secret GET / no-op: {get.rps / noop.rps:.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
