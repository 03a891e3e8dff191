"""A legitimate client's service during a flood of idle TLS connections.

Usage: python benchmarks/idle_tls.py [--flood 1000] [--duration 30] [--workers 1]
                                     [--reconnect] [--pythonpath DIR] [--server-arg ARG ...]

Starts `okv server --dev` on a free loopback port in a temporary data directory, then:

  1. baseline: a client sends GET /healthz, one request per new TLS connection (no pooled
     connection to hide behind), for --baseline seconds;
  2. flood: --flood connections complete the TLS handshake and then never send a byte,
     each waiting up to --duration seconds for the server to close it (with --reconnect,
     each is opened again when the server closes it, so the flood never lets up);
     meanwhile the same client keeps sending requests (2 s timeout each) for --duration
     seconds.

It prints how many of the client's requests were served during the flood, their rate
against the baseline rate measured in the same run, and what became of the idle
connections (closed by the server and when, still open at the end, never accepted).
`--pythonpath DIR` runs the server from another source tree (e.g. an unmodified checkout)
for a before/after comparison. Everything targets 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import ssl
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from support import LOOPBACK, BenchError, dev_server, guarded

# tests/support is importable once `support` has put the repository root on sys.path.
from tests.support.tls import healthz

REQUEST_TIMEOUT = 2.0
HANDSHAKE_TIMEOUT = 10.0
CONCURRENT_HANDSHAKES = 64
WINDOW = 5.0  # seconds per bucket of the served-over-time line


@dataclass
class ClientRun:
    served: int = 0
    failed: int = 0
    seconds: float = 0.0
    served_at: list[float] = field(default_factory=list)  # seconds from the start

    @property
    def rate(self) -> float:
        return self.served / self.seconds if self.seconds else 0.0


def client_loop(port: int, ca: str, seconds: float, out: ClientRun) -> None:
    """Back-to-back requests for `seconds`; a request that fails is counted, not retried."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if healthz(port, ca, REQUEST_TIMEOUT):
            out.served += 1
            out.served_at.append(time.monotonic() - start)
        else:
            out.failed += 1
    out.seconds = time.monotonic() - start


@dataclass
class FloodRun:
    outcomes: Counter[str] = field(default_factory=Counter)
    closed_after: list[float] = field(default_factory=list)  # seconds after the handshake


async def idle_flood(port: int, ca: str, count: int, hold: float, out: FloodRun,
                     reconnect: bool) -> None:
    """`count` connections that complete the TLS handshake and then stay silent; with
    `reconnect`, each one is opened again when the server closes it, until `hold` ends."""
    ctx = ssl.create_default_context(cafile=ca)
    handshakes = asyncio.Semaphore(CONCURRENT_HANDSHAKES)
    deadline = time.monotonic() + hold

    async def one() -> str:
        async with handshakes:
            if time.monotonic() >= deadline:
                return "not attempted"
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(LOOPBACK, port, ssl=ctx), HANDSHAKE_TIMEOUT)
            except (OSError, TimeoutError):
                return "no handshake"
        up = time.monotonic()
        try:
            await asyncio.wait_for(reader.read(1), max(0.0, deadline - up))
        except TimeoutError:
            return "still open"
        except (OSError, ssl.SSLError):
            pass  # reset by the server
        finally:
            writer.close()
        out.closed_after.append(time.monotonic() - up)
        return "closed by server"

    async def slot() -> None:
        while True:
            outcome = await one()
            out.outcomes[outcome] += 1
            if not reconnect or outcome != "closed by server" or time.monotonic() >= deadline:
                return

    await asyncio.gather(*(slot() for _ in range(count)))


def _flood_process(port: int, ca: str, count: int, hold: float, reconnect: bool,
                   results: multiprocessing.SimpleQueue[FloodRun]) -> None:
    out = FloodRun()
    asyncio.run(idle_flood(port, ca, count, hold, out, reconnect))
    results.put(out)


def measure(args: argparse.Namespace) -> int:
    with dev_server(args.workers, prefix="okv-idle-tls-", pythonpath=args.pythonpath,
                    extra_args=args.server_arg) as server:
        server.start()
        baseline = ClientRun()
        client_loop(server.port, server.ca, args.baseline, baseline)

        during = ClientRun()
        # The flood runs in a process of its own, so that its handshakes do not take
        # the client's interpreter lock; both still share the machine with the server.
        results: multiprocessing.SimpleQueue[FloodRun] = multiprocessing.SimpleQueue()
        flooder = multiprocessing.Process(target=_flood_process, args=(
            server.port, server.ca, args.flood, args.duration, args.reconnect, results))
        flooder.start()
        client_loop(server.port, server.ca, args.duration, during)
        flooder.join(args.duration + HANDSHAKE_TIMEOUT + 30)
        if flooder.is_alive():
            flooder.kill()
            raise BenchError("the flood did not stop")
        flood = results.get()
        alive = server.proc is not None and server.proc.poll() is None

    source = args.pythonpath or "this tree"
    print(f"server: {source}, {args.workers} worker(s), extra args: {args.server_arg or '-'}")
    print(f"  baseline client      {baseline.served:6d} served {baseline.failed:5d} failed "
          f"in {baseline.seconds:5.1f}s  = {baseline.rate:7.1f} req/s")
    print(f"  during idle flood    {during.served:6d} served {during.failed:5d} failed "
          f"in {during.seconds:5.1f}s  = {during.rate:7.1f} req/s")
    ratio = during.rate / baseline.rate if baseline.rate else 0.0
    print(f"  ratio during flood / baseline: {ratio:.2f}")
    windows = max(1, int(during.seconds // WINDOW))
    per_window = Counter(min(int(t // WINDOW), windows - 1) for t in during.served_at)
    print(f"  served per {WINDOW:.0f}s of the flood: "
          + " ".join(str(per_window[i]) for i in range(windows)))
    mode = "reopened when closed" if args.reconnect else "opened once"
    print(f"  idle connections ({args.flood}, {mode}): " + ", ".join(
        f"{k} {v}" for k, v in sorted(flood.outcomes.items())))
    if flood.closed_after:
        c = sorted(flood.closed_after)
        print(f"  closed by the server after: median {statistics.median(c):.1f}s, "
              f"max {c[-1]:.1f}s (after the handshake)")
    print(f"  server still running at the end: {'yes' if alive else 'NO'}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flood", type=int, default=1000, help="idle TLS connections (max 5000)")
    p.add_argument("--duration", type=float, default=30.0,
                   help="seconds the flood lasts and the client runs during it (max 300)")
    p.add_argument("--baseline", type=float, default=5.0, help="seconds of baseline client")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--reconnect", action="store_true",
                   help="open each idle connection again when the server closes it")
    p.add_argument("--pythonpath", help="run the server from this source tree")
    p.add_argument("--server-arg", action="append", default=[],
                   help="extra `okv server` argument (repeatable), "
                   "e.g. --server-arg=--idle-timeout=2")
    args = p.parse_args()
    args.flood = max(1, min(args.flood, 5000))
    args.duration = max(1.0, min(args.duration, 300.0))
    args.baseline = max(1.0, min(args.baseline, 60.0))
    return guarded(lambda: measure(args))


if __name__ == "__main__":
    sys.exit(main())
