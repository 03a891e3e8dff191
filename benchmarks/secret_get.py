"""Secret GET throughput against the real server, next to a no-op endpoint and the crypto ceiling.

Usage: python benchmarks/secret_get.py [--duration S] [--connections 32] [--workers N]

Starts `okv server --dev` on a free loopback port in a temporary data directory, sets one
32-byte secret, gets a token from the managed identity endpoint, then drives the same server
with wrk (HTTPS, keep-alive) against

  (a) GET /secrets/NAME/?api-version=7.5 with a bearer token (the authenticated hot path), and
  (b) GET /healthz (no auth, no storage: what the HTTP stack alone costs),

and prints requests/s, p50, p99 of both, their ratio, and the raw `cryptography` AES-256-GCM
decrypt rate for a 32-byte value measured in the same run (the reference ceiling). It also
checks that wrk is not the bottleneck: a 1-thread wrk run on the no-op endpoint against the
N-thread one, and the CPU time wrk and the server used (from rusage and /proc). See
benchmarks/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from support import (
    API_VERSION,
    TABLE_HEAD,
    BenchError,
    WrkResult,
    add_load_options,
    bearer,
    check_load_options,
    guarded,
    row,
    run_wrk,
    wrk_and_server,
)

SECRET_NAME = "bench-secret"
SECRET_VALUE = "s" * 32  # 32 bytes, like the ceiling's plaintext


# ---- the crypto ceiling -----------------------------------------------------------------------
def aes_gcm_decrypt_rate(seconds: float = 1.0) -> tuple[float, float]:
    """Decrypts/s of a 32-byte AES-256-GCM value: (key object reused, AESGCM(key) per call)."""
    key = AESGCM.generate_key(bit_length=256)
    nonce, aad = os.urandom(12), b"okv/secret/1/bench-secret/" + b"0" * 32
    sealed = AESGCM(key).encrypt(nonce, SECRET_VALUE.encode(), aad)

    def rate(fn: object) -> float:
        assert callable(fn)
        n, batch, t0 = 0, 2000, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            for _ in range(batch):
                fn()
            n += batch
        return n / elapsed

    aes = AESGCM(key)
    reused = rate(lambda: aes.decrypt(nonce, sealed, aad))
    fresh = rate(lambda: AESGCM(key).decrypt(nonce, sealed, aad))
    return reused, fresh


# ---- report -------------------------------------------------------------------------------------
def report(args: argparse.Namespace, secret: WrkResult, noop: WrkResult,
           noop_t1: WrkResult | None, aes: tuple[float, float]) -> None:
    ncpu = os.cpu_count() or 1
    print()
    print(f"secret GET benchmark: {args.workers} worker(s), {args.connections} connections, "
          f"wrk -t{args.threads}, {args.duration:g}s per run, {ncpu} CPUs, HTTPS keep-alive, "
          "loopback")
    print(TABLE_HEAD)
    for r in (secret, noop, noop_t1):
        if r is not None:
            print(row(r))
    print(f"  ratio secret GET / no-op: {secret.rps / noop.rps:.1%} of the throughput, "
          f"p50 x{secret.p50_ms / noop.p50_ms:.2f}, p99 x{secret.p99_ms / noop.p99_ms:.2f}")
    reused, fresh = aes
    print(f"  ceiling: raw cryptography AES-256-GCM decrypt of 32 bytes, one core: "
          f"{reused:,.0f}/s (key object reused), {fresh:,.0f}/s (AESGCM(key) per call, as "
          f"the barrier does); secret GET per worker is {secret.rps / args.workers / reused:.1%}"
          " of the reused-key rate")
    for r in (secret, noop, noop_t1):
        if r is not None and r.other_cores > 0.2:
            print(f"  WARNING: {r.label}: other processes used {r.other_cores:.2f} CPUs during "
                  "the run; the machine was not quiet, so these figures are low and noisy")
        if r is not None and (r.non_2xx or r.socket_errors):
            print(f"  WARNING: {r.label}: {r.non_2xx} non-2xx responses, {r.socket_errors} socket "
                  "errors; its figures are not trustworthy")

    # Is the load generator the bottleneck?
    print("  load generator check:")
    busiest = max(secret.wrk_cores / secret.threads, noop.wrk_cores / noop.threads,
                  noop_t1.wrk_cores if noop_t1 is not None else 0.0)
    print(f"    wrk CPU per thread: {busiest:.0%} at most (100% = a wrk thread saturated); "
          f"server CPU: {noop.server_cores:.2f} cores on the no-op, "
          f"{secret.server_cores:.2f} on secret GET; machine has {ncpu} CPUs")
    limited = []
    if noop_t1 is not None:
        gain = noop.rps / noop_t1.rps - 1
        print(f"    no-op with wrk -t1: {noop_t1.rps:,.0f} req/s (wrk {noop_t1.wrk_cores:.0%} "
              f"of a core); with -t{noop.threads}: {noop.rps:,.0f} req/s ({gain:+.0%})")
        if gain > 0.15:
            limited.append(f"doubling wrk threads still raised the no-op rate by {gain:.0%}")
    if busiest > 0.9:
        limited.append("a wrk thread is near 100% CPU")
    if limited:
        print("    verdict: wrk MAY be limiting the no-op figure: " + "; ".join(limited))
    else:
        print("    verdict: wrk is not the bottleneck (adding a wrk thread does not raise "
              "the no-op rate and no wrk thread is saturated)")
    busy = noop.server_cores + noop.wrk_cores
    if busy > 0.85 * ncpu:
        print(f"    note: wrk and the server together use {busy:.2f} of {ncpu} CPUs on the "
              "no-op: they share the machine, so absolute req/s are a lower bound for a "
              "dedicated server; the ratio (same conditions, same run) is the figure to "
              "compare")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_options(ap)
    ap.add_argument("--no-loadgen-check", action="store_true",
                    help="skip the extra wrk -t1 run on the no-op endpoint")
    args = ap.parse_args()
    check_load_options(ap, args)
    return guarded(lambda: measure(args))


def measure(args: argparse.Namespace) -> int:
    with wrk_and_server(args.workers) as (wrk, server):
        auth = bearer(server.token())
        path = f"/secrets/{SECRET_NAME}/?api-version={API_VERSION}"
        server.request("PUT", f"/secrets/{SECRET_NAME}?api-version={API_VERSION}",
                       {"value": SECRET_VALUE}, auth)
        status, got = server.request("GET", path, headers=auth)
        if status != 200 or got.get("value") != SECRET_VALUE:
            raise BenchError(f"secret GET returned {status} {got!r}")

        urls = {"secret": server.base + path, "noop": server.base + "/healthz"}
        common = {"connections": args.connections, "server_pgid": server.pgid}
        if args.warmup > 0:
            print(f"bench: warm-up {args.warmup:g}s per endpoint", flush=True)
            run_wrk(wrk, "warm-up", urls["secret"], threads=args.threads,
                    duration=args.warmup, headers=auth, **common)
            run_wrk(wrk, "warm-up", urls["noop"], threads=args.threads,
                    duration=args.warmup, **common)
        print("bench: measuring the crypto ceiling", flush=True)
        aes = aes_gcm_decrypt_rate()
        print(f"bench: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, "
              "secret GET then no-op", flush=True)
        secret = run_wrk(wrk, "secret GET (auth)", urls["secret"], threads=args.threads,
                         duration=args.duration, headers=auth, **common)
        noop = run_wrk(wrk, "no-op /healthz", urls["noop"], threads=args.threads,
                       duration=args.duration, **common)
        noop_t1 = None
        if not args.no_loadgen_check and args.threads > 1:
            print("bench: load generator check: no-op with wrk -t1", flush=True)
            noop_t1 = run_wrk(wrk, "no-op /healthz (-t1)", urls["noop"], threads=1,
                              duration=args.duration, **common)
        server.check_alive()
        report(args, secret, noop, noop_t1, aes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
