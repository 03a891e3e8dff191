"""What the metrics and usage observers cost per request, in-process.

Usage: python benchmarks/observers.py [--rounds N] [--repeat R]

Calls `observe(outcome)` of the metrics observer (ops/metrics.py: counts in memory, added
to prometheus-client's memory-mapped multi-process files by a flush every second) and of
the usage meter (ops/usage.py: counts in memory, flushed to the database every 10 s), each
`--rounds` times over a mix of vaults, operations and statuses (the flushes are not on the
request's path and are timed separately), and
prints microseconds per call next to a reference measured in the same run: building one
`Outcome` (what the pipeline does once per request anyway). Best of `--repeat` runs.
Nothing is sent over the network.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from support import guarded

from openkeyvault.config import Settings
from openkeyvault.ops import metrics
from openkeyvault.ops.outcome import Outcome
from openkeyvault.ops.usage import UsageMeter

VAULTS = ("alpha", "beta", "gamma", "delta")
OPERATIONS = (("SecretGet", 200, "operations"), ("SecretSet", 200, "operations"),
              ("KeySign", 200, "advanced_key_operations"), ("SecretGet", 404, "operations"),
              ("SecretGet", 401, None))


def outcome(i: int) -> Outcome:
    name, status, meter = OPERATIONS[i % len(OPERATIONS)]
    return Outcome(operation=name, resource_kind="vault", resource_name=VAULTS[i % 4],
                   resource_id=None, object_id=None, api_version="7.5", status=status,
                   time=1_796_000_000.0 + i, duration_ms=1.5 + i % 7, client_ip="127.0.0.1",
                   correlation_id=None, request_id=f"r{i}", request_uri="/secrets/x",
                   user_agent=None, caller=None, rbac_authorized=True,
                   access_policy_match=None, throttle_class="vault_other", meter=meter)


def per_call_us(fn: Callable[[int], object], rounds: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for i in range(rounds):
            fn(i)
        best = min(best, time.perf_counter() - start)
    return best / rounds * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="okv-bench-obs-") as tmp:
        os.environ.pop(metrics.MULTIPROC_ENV, None)
        settings = Settings(data_dir=Path(tmp), metrics_port=1)
        metrics.prepare(settings)
        observer = metrics.open_metrics(settings)
        assert isinstance(observer, metrics.MetricsObserver)
        flushed: list[int] = []
        meter = UsageMeter(lambda counts: flushed.append(len(counts)))
        outcomes = [outcome(i) for i in range(1000)]

        ref = per_call_us(outcome, args.rounds, args.repeat)
        m = per_call_us(lambda i: observer.observe(outcomes[i % 1000]), args.rounds,
                        args.repeat)
        u = per_call_us(lambda i: meter.observe(outcomes[i % 1000]), args.rounds, args.repeat)
        start = time.perf_counter()
        meter.flush()
        flush_ms = (time.perf_counter() - start) * 1000
        for i in range(1000):  # one second's worth at 1,000 req/s, then its flush
            observer.observe(outcomes[i])
        start = time.perf_counter()
        observer.flush()
        metrics_flush_ms = (time.perf_counter() - start) * 1000
        from prometheus_client import generate_latest

        registry = metrics.exposition_registry(settings)
        generate_latest(registry)  # the first opens the database for the health probe
        time.sleep(metrics.STORAGE_PROBE_EVERY)
        start = time.perf_counter()
        size = len(generate_latest(registry))
        scrape_ms = (time.perf_counter() - start) * 1000
    print(f"  reference: build one Outcome          {ref:8.2f} us")
    print(f"  metrics observe()                     {m:8.2f} us   ({m / ref:.1f}x reference)")
    print(f"  usage observe()                       {u:8.2f} us   ({u / ref:.1f}x reference)")
    print(f"  usage flush of {flushed[0] if flushed else 0} keys to a no-op sink     "
          f"{flush_ms:8.3f} ms (a background thread, every 10 s)")
    print(f"  metrics flush of 1,000 observations    {metrics_flush_ms:8.3f} ms (a background "
          "thread, every second)")
    print(f"  a scrape ({size} bytes, {len(VAULTS) * len(OPERATIONS)} series sets) "
          f"{scrape_ms:8.2f} ms (off the request path)")
    return 0


if __name__ == "__main__":
    sys.exit(guarded(main))
