"""The token endpoint under client-secret guessing: enumeration timing and flood cost.

Usage: python benchmarks/token_guessing.py [--compare SRC] [--duration S] [--guessers 16]
                                           [--samples 40] [--workers 1]

For this tree's server (and, with `--compare SRC`, a server run from another source tree,
e.g. an unmodified checkout's `src`, measured in the same run):

  1. starts `okv server --dev` on 127.0.0.1 with a temporary data directory and makes,
     with the `okv` CLI: a principal with one secret, one with three, a managed identity;
  2. latency of a wrong secret, sequentially over keep-alive connections, for a known
     client id, an unknown one, the managed identity and the three-secret principal, and
     of a good secret, interleaved; each kind from its own loopback address and at most
     8 per round, the dev clock moved 2 minutes between rounds (so the attempt limit never
     answers 429 here: what is timed is the secret check);
  3. token requests/s of one legitimate client (good secret, keep-alive, its own address)
     alone for `--duration` seconds, then again while `--guessers` clients (threads in a
     separate process, one loopback address each) send wrong secrets for unknown ids and
     for the three-secret principal, flat out, for the same time.

Prints medians per kind and their ratio to the unknown id's, and the legitimate client's
rate during the flood as a share of its rate alone. Everything targets 127.0.0.1, each
phase is bounded in time, and the servers are stopped (SIGINT, then SIGKILL) at the end.
The load generator shares the machine's CPUs with the server; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import multiprocessing
import secrets
import ssl
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from support import LOOPBACK, BenchError, Server, dev_server, guarded

HTTP_TIMEOUT = 30.0
PER_ROUND = 8  # wrong secrets per kind per round: below every attempt limit
HERE = Path(__file__).resolve().parent.parent / "src"
CLOCK = "/_okv/dev/clock"


def connect(port: int, ca: str, source: str) -> http.client.HTTPSConnection:
    """A keep-alive connection to the server from loopback address `source`."""
    ctx = ssl.create_default_context(cafile=ca)
    return http.client.HTTPSConnection(LOOPBACK, port, context=ctx, timeout=HTTP_TIMEOUT,
                                       source_address=(source, 0))


def advance_clock(server: Server, seconds: int) -> None:
    server.request("POST", CLOCK, {"advanceSeconds": seconds}, headers=server.identity())


def token(conn: http.client.HTTPSConnection, port: int, tenant: str, client_id: str,
          client_secret: str) -> int:
    form = {"grant_type": "client_credentials", "client_id": client_id,
            "client_secret": client_secret, "scope": f"https://vault.localhost:{port}/.default"}
    conn.request("POST", f"/{tenant}/oauth2/v2.0/token", body=urlencode(form),
                 headers={"Content-Type": "application/x-www-form-urlencoded",
                          "Host": f"localhost:{port}"})
    r = conn.getresponse()
    r.read()
    return r.status


def wrong_secret(i: int) -> str:
    """Alternately the earlier secret format (40 characters) and an `ID~RANDOM` one."""
    if i % 2:
        return secrets.token_urlsafe(30)
    return f"{secrets.token_urlsafe(16)[:22]}~{secrets.token_urlsafe(30)}"


@dataclass
class Setup:
    tenant: str
    one: dict[str, str]
    three: dict[str, str]
    managed: dict[str, str]


def prepare(server: Server) -> Setup:
    one = server.okv("principal", "create", "bench-one")
    three = server.okv("principal", "create", "bench-three")
    for _ in range(2):
        server.okv("principal", "secret", "add", three["client_id"])
    managed = server.okv("principal", "create", "bench-managed", "--managed-identity")
    return Setup(one["tenant_id"], one, three, managed)


def latencies(server: Server, s: Setup, samples: int) -> dict[str, list[float]]:
    kinds = {"known id, wrong secret": s.one["client_id"],
             "unknown id": "",
             "managed identity id": s.managed["client_id"],
             "3-secret principal": s.three["client_id"],
             "good secret": s.one["client_id"]}
    conns: dict[str, http.client.HTTPSConnection] = {}
    out: dict[str, list[float]] = {k: [] for k in kinds}
    rounds = max(1, -(-samples // PER_ROUND))
    try:
        for rnd in range(rounds):
            for k in kinds:  # fresh addresses each round: no lock carries over
                with contextlib.suppress(Exception):
                    conns[k].close()
                conns[k] = connect(server.port, server.ca,
                                   f"127.0.{rnd + 10}.{list(kinds).index(k) + 1}")
                token(conns[k], server.port, s.tenant, s.one["client_id"],
                      s.one["client_secret"])  # connect + warm (a success: counts nothing)
            for i in range(PER_ROUND):
                for k, client_id in kinds.items():
                    cid = client_id or str(uuid.uuid4())
                    secret = s.one["client_secret"] if k == "good secret" else wrong_secret(i)
                    t0 = time.perf_counter()
                    status = token(conns[k], server.port, s.tenant, cid, secret)
                    out[k].append((time.perf_counter() - t0) * 1000)
                    want = 200 if k == "good secret" else 401
                    if status != want:
                        raise BenchError(f"{k}: expected {want}, got {status}")
            advance_clock(server, 120)
    finally:
        for c in conns.values():
            c.close()
    return out


def _guesser(port: int, ca: str, tenant: str, target: str, source: str, until: float,
             counts: dict[int, int], lock: threading.Lock) -> None:
    conn = connect(port, ca, source)
    i = 0
    try:
        while time.monotonic() < until:
            cid = target if i % 2 else str(uuid.uuid4())
            try:
                status = token(conn, port, tenant, cid, wrong_secret(i // 2))
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
            with lock:
                counts[status] = counts.get(status, 0) + 1
            i += 1
    finally:
        conn.close()


def flood(port: int, ca: str, tenant: str, target: str, guessers: int, seconds: float,
          queue: multiprocessing.Queue[dict[int, int]]) -> None:
    """Run in a child process: `guessers` threads, each from its own loopback address."""
    until = time.monotonic() + seconds
    counts: dict[int, int] = {}
    lock = threading.Lock()
    threads = [threading.Thread(target=_guesser, args=(
        port, ca, tenant, target, f"127.1.{i // 250}.{i % 250 + 1}", until, counts, lock),
        daemon=True) for i in range(guessers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + HTTP_TIMEOUT)
    queue.put(counts)


def legit_rate(server: Server, s: Setup, seconds: float) -> tuple[float, int, int]:
    """(requests/s, good answers, others) of one client with a good secret."""
    conn = connect(server.port, server.ca, "127.0.0.2")
    good = other = 0
    try:
        token(conn, server.port, s.tenant, s.one["client_id"], s.one["client_secret"])
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            status = token(conn, server.port, s.tenant, s.one["client_id"],
                           s.one["client_secret"])
            good, other = (good + 1, other) if status == 200 else (good, other + 1)
    finally:
        conn.close()
    return good / elapsed, good, other


@dataclass
class Result:
    label: str
    latency: dict[str, list[float]]
    alone: float
    flooded: float
    refused: int
    guesses: dict[int, int]


def measure(label: str, src: Path, args: argparse.Namespace) -> Result:
    with dev_server(args.workers, prefix="okv-bench-guess-", pythonpath=str(src)) as server:
        server.start()
        s = prepare(server)
        lat = latencies(server, s, args.samples)
        advance_clock(server, 120)
        alone, _, _ = legit_rate(server, s, args.duration)
        queue: multiprocessing.Queue[dict[int, int]] = multiprocessing.Queue()
        child = multiprocessing.Process(target=flood, args=(
            server.port, server.ca, s.tenant, s.three["client_id"], args.guessers,
            args.duration + 2, queue))
        child.start()
        time.sleep(1.0)  # let the guessers get going
        flooded, _, refused = legit_rate(server, s, args.duration)
        child.join(args.duration + HTTP_TIMEOUT + 10)
        if child.is_alive():
            child.kill()
        guesses = queue.get(timeout=5) if not queue.empty() else {}
        return Result(label, lat, alone, flooded, refused, guesses)


def report(r: Result, duration: float) -> None:
    print(f"\n== {r.label}")
    unknown = statistics.median(r.latency["unknown id"])
    print(f"  {'token request':28} {'p50 ms':>8} {'p90 ms':>8} {'/ unknown id':>13}")
    for k, v in r.latency.items():
        q = statistics.quantiles(v, n=10)
        print(f"  {k:28} {statistics.median(v):8.2f} {q[8]:8.2f} "
              f"{statistics.median(v) / unknown:13.2f}")
    total = sum(r.guesses.values())
    print(f"  legitimate client alone:        {r.alone:8.1f} tokens/s")
    print(f"  legitimate client during flood: {r.flooded:8.1f} tokens/s "
          f"({r.flooded / r.alone:.0%} of alone; {r.refused} not 200)")
    print(f"  guessers: {total / (duration + 2):.0f} req/s answered, by status "
          f"{dict(sorted(r.guesses.items()))}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare", type=Path, help="another source tree's src/ to measure too")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--guessers", type=int, default=16)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    if not 1 <= args.duration <= 120 or not 1 <= args.guessers <= 200 \
            or not 1 <= args.samples <= 400:
        ap.error("--duration 1-120, --guessers 1-200, --samples 1-400")
    return guarded(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    runs = [("this tree", HERE)]
    if args.compare is not None:
        runs.append((f"compare: {args.compare}", args.compare.resolve()))
    results = [measure(label, src, args) for label, src in runs]
    for r in results:
        report(r, args.duration)
    if len(results) == 2:
        a, b = results
        print(f"\n  during the flood, this tree serves {a.flooded / b.flooded:.1f}x the "
              f"legitimate tokens/s of the compared one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
