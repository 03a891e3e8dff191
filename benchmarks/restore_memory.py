"""Worker memory under a burst of large restore bodies.

Usage: python benchmarks/restore_memory.py [--concurrency 16] [--size-mib 40] [--workers 1]
                                            [--caller no-role|owner] [--rounds 1]

Starts `okv server --dev` on a loopback port (the same way as `secret_get.py`; set
PYTHONPATH to measure another tree), then sends `--concurrency` restore requests at once,
spread over /keys/restore, /secrets/restore and /certificates/restore, each with a body of
`--size-mib` MiB (`{"value": "AAAA..."}`: well-formed base64url that is no backup blob),
`--rounds` times, as

  no-role: a service principal with no role anywhere (made with `okv principal create`,
           token from the token endpoint): every request should be refused, and
  owner:   the dev identity (Key Vault Administrator): every request is allowed, read and
           decoded, then refused as no backup blob (400), or refused for its size (413).

Each client sends its body while watching for an answer, and stops sending once the answer
begins (a server that refuses before reading answers early). A sampler reads VmRSS of the
server's worker processes (the children of the server process) from /proc every 10 ms.
Reported: RSS before the burst, the peak during it, and 1 s and 5 s after, as growth over
the baseline, next to the bytes the clients sent. Everything runs on 127.0.0.1 and is
bounded: each request 120 s, the server start 60 s and its stop 20 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from support import Server, code_under_test, dev_server, guarded

# tests/support is importable once `support` has put the repository root on sys.path.
from tests.support.procfs import PeakRss, worker_rss
from tests.support.tls import LargePost, post_large

MIB = 1024 * 1024
COLLECTIONS = ("keys", "secrets", "certificates")


def no_role_token(server: Server) -> str:
    """A new service principal with no role, and a token for it from the token endpoint."""
    p = server.okv("principal", "create", "restore-memory-bench")
    form = urllib.parse.urlencode({
        "grant_type": "client_credentials", "client_id": p["client_id"],
        "client_secret": p["client_secret"],
        "scope": f"{server.resource}/.default"}).encode()
    req = urllib.request.Request(f"{server.base}/{p['tenant_id']}/oauth2/v2.0/token", form)
    with urllib.request.urlopen(req, context=server.ctx, timeout=10) as resp:
        return str(json.loads(resp.read())["access_token"])


def burst(server: Server, token: str, n: int, size: int) -> list[LargePost]:
    paths = [f"/{COLLECTIONS[i % 3]}/restore?api-version=7.5" for i in range(n)]
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda p: post_large(server.port, server.ca, p, token, size),
                             paths))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--size-mib", type=float, default=40.0, help="body size per request")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--caller", choices=("no-role", "owner"), default="no-role")
    ap.add_argument("--rounds", type=int, default=1, help="bursts, one after the other")
    args = ap.parse_args()
    if not 1 <= args.concurrency <= 64 or not 0 < args.size_mib <= 256 or args.rounds < 1:
        ap.error("concurrency 1..64, size 0..256 MiB, rounds >= 1")
    return guarded(lambda: measure(args))


def measure(args: argparse.Namespace) -> int:
    size = int(args.size_mib * MIB)
    with dev_server(args.workers) as server:
        tuning = os.environ.get("OKV_MALLOC_TUNING", "")
        print(f"bench: okv server --dev ({args.workers} worker(s)), code: "
              f"{code_under_test()}, OKV_MALLOC_TUNING={tuning}", flush=True)
        server.start()
        token = no_role_token(server) if args.caller == "no-role" else server.token()
        for _ in range(3):  # warm-up: the path, the token and the decision are cached
            post_large(server.port, server.ca, "/secrets/restore?api-version=7.5", token, 64)
        time.sleep(1.0)
        base = worker_rss(server)
        print(f"  {args.concurrency} concurrent restores of {args.size_mib:g} MiB as "
              f"{args.caller}, {args.rounds} round(s); worker RSS baseline "
              f"{base / MIB:.0f} MiB")
        for rnd in range(1, args.rounds + 1):
            with PeakRss(server) as rss:
                t0 = time.monotonic()
                outcomes = burst(server, token, args.concurrency, size)
                wall = time.monotonic() - t0
            peak = rss.peak
            time.sleep(1.0)
            after1 = worker_rss(server)
            time.sleep(4.0)
            after5 = worker_rss(server)
            sent = sum(o.sent for o in outcomes)
            statuses: dict[str, int] = {}
            for o in outcomes:
                key = str(o.status) if o.status is not None else (o.error or "none")
                statuses[key] = statuses.get(key, 0) + 1
            print(f"  round {rnd}: answers {statuses} in {wall:.1f}s; client sent "
                  f"{sent / MIB:.0f} MiB; RSS peak +{(peak - base) / MIB:.0f} MiB, "
                  f"+1s +{(after1 - base) / MIB:.0f} MiB, +5s +{(after5 - base) / MIB:.0f} "
                  f"MiB (peak {peak / MIB:.0f} MiB)", flush=True)
        server.check_alive()
    return 0


if __name__ == "__main__":
    sys.exit(main())
