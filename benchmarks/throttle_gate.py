"""What the throttling gate (ops/throttle.py) costs per request, against a secret GET
through the whole app in the same run.

    .venv/bin/python benchmarks/throttle_gate.py [--repeat 7] [--processes 2]

In-process micro-benchmarks (no server, no network): best of `--repeat` timings of a loop.
Rows: the gate admitting a vault's request (the common case), refusing one (a full
window), passing one of a class it does not count, and no gate at all; the counters file
on tmpfs (where the gate puts it) and in a data directory on disk; then `--processes`
processes taking from one counter at once (the lock contended), per call. The reference
is one authenticated secret GET through the ASGI app in this process (benchmarks/
support.py `in_process_app`): read the gate's cost as a share of it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support import Driver, asgi_scope, dev_headers, guarded, in_process_app, per_request_us

from openkeyvault.ops.outcome import Attempt
from openkeyvault.ops.throttle import (
    NoThrottle,
    SharedWindows,
    Throttle,
    counter_key,
    counters_path,
    scaled_limits,
)

READ = Attempt("SecretGet", "vault", "dev", "vault_other", 1.0, None, "127.0.0.1")
ARM = Attempt("VaultGet", "management", None, "management", 1.0, None, "127.0.0.1")
CONTENDED_CALLS = 50_000


def best(fn: Callable[[], Any], repeat: int, number: int) -> float:
    """Seconds per call, the best of `repeat` runs of `number` calls."""
    return min(timeit.timeit(fn, number=number) for _ in range(repeat)) / number


def secret_get_us(tmp: Path) -> float:
    app, log_file = in_process_app(tmp)
    try:
        headers = dev_headers(app)
        driver = Driver(app, b'{"value": "' + b"s" * 32 + b'"}')
        put = asgi_scope("PUT", "/secrets/bench-secret", b"api-version=7.5",
                         [*headers, (b"content-type", b"application/json")])
        asyncio.run(driver.call(put))
        if driver.status != 200:
            raise SystemExit(f"bench: setting the secret answered {driver.status}")
        get = asgi_scope("GET", "/secrets/bench-secret/", b"api-version=7.5", headers)
        return asyncio.run(per_request_us(driver, get, 20_000))
    finally:
        log_file.close()


def _contend(path: str, start: Any, done: Any) -> None:
    windows = SharedWindows(Path(path))
    key = counter_key("dev", "vault_other")
    start.wait(30)
    t0 = time.perf_counter()
    for _ in range(CONTENDED_CALLS):
        windows.take(key, int(time.monotonic()), 1.0, 1e12)
    done.put(time.perf_counter() - t0)
    windows.close()


def contended_us(path: Path, processes: int) -> float:
    """Wall microseconds per call while `processes` processes take from one counter."""
    ctx = multiprocessing.get_context("spawn")
    start, done = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(str(path), start, done))
             for _ in range(processes)]
    for p in procs:
        p.start()
    try:
        time.sleep(1.0)  # all of them started and mapped
        start.set()
        walls = [done.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    return max(walls) / CONTENDED_CALLS * 1e6


def run(args: argparse.Namespace) -> int:
    r = args.repeat
    with tempfile.TemporaryDirectory(prefix="okv-bench-throttle-") as tmp_name:
        tmp = Path(tmp_name)
        disk = tmp / "disk-counters"
        shm = counters_path(tmp, 0)  # where the gate puts a node's counters
        rows: list[tuple[str, float]] = []
        for label, path in (("tmpfs", shm), ("data dir", disk)):
            windows = SharedWindows(path)
            gate = Throttle(windows, scaled_limits(1e9))
            rows.append((f"admit: counted, admitted ({label})", best(
                lambda g=gate: g.admit(READ), r, 200_000)))  # type: ignore[misc]
            windows.close()
        windows = SharedWindows(shm)
        full = Throttle(windows, scaled_limits(1e-9))
        full.admit(READ)
        rows.append(("admit: refused (window full)", best(lambda: full.admit(READ), r,
                                                          200_000)))
        rows.append(("admit: class not counted (ARM)", best(lambda: full.admit(ARM), r,
                                                            500_000)))
        windows.close()
        off = NoThrottle()
        rows.append(("admit: throttling off", best(lambda: off.admit(READ), r, 500_000)))
        rows.append((f"take: {args.processes} processes, one counter", contended_us(
            shm, args.processes)))
        shm.unlink()
        reference = secret_get_us(tmp)
    print(f"{'measured':44s} {'us/call':>8s}  share of a secret GET ({reference:.0f} us)")
    for name, seconds in rows[:-1]:
        us = seconds * 1e6
        print(f"{name:44s} {us:8.2f}  {us / reference:6.1%}")
    name, us = rows[-1]
    print(f"{name:44s} {us:8.2f}  {us / reference:6.1%}  (wall time per call, each process)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    return guarded(lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())
