"""What the request accounting costs under load: the server with every gate and observer
on, the same endpoints on a tree from before the accounting, and a bare signing app.

    .venv/bin/python benchmarks/accounting.py [--before OTHER/src] [--duration 8] [--workers 2]
                                              [--rounds 1]

In one run, on 127.0.0.1, with wrk (HTTPS keep-alive, 32 connections):

1. `okv server --dev` of this tree with the accounting on: the audit trail (default), the
   metrics (`--metrics-port`, a free port), the throttling gate counting every request but
   never refusing (`--throttling 1000000`), the usage meter (default), the request log;
2. with `--before SRC`, the same endpoints on `okv server --dev` from that source tree
   (PYTHONPATH=SRC, same interpreter and venv), e.g. a checkout from before the accounting;
3. benchmarks/bare_sign_app.py: Starlette under the same granian, the same worker count,
   the dev server's certificate, one route that signs with RSA-2048 or P-256 and nothing
   else: the floor for a sign through any Starlette-on-granian app.

Endpoints: GET /healthz (the no-op), GET /secrets/NAME/ (32 bytes), POST
/keys/NAME/VERSION/sign with RS256 (RSA-2048) and ES256 (P-256). Each answers 200 to one
request first; wrk's non-2xx answers (a 429 would be the throttling gate refusing) and
socket errors are reported. Aims: ES256 sign >= 35% of the same server's no-op rate; RS256
sign >= 85% of the bare app's; secret GET unchanged or better than before; the accounting
costs under 5% of the rate of each endpoint against before. The bare app's ES256 rate over
the no-op's is printed beside the first: what that ratio is for an app that only signs.
With `--rounds N` each server is started and measured N times, alternately, and each
endpoint's fastest run is kept.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bare_sign_app import SIGN_PATH
from support import (
    API_VERSION,
    LOOPBACK,
    START_TIMEOUT,
    BenchError,
    ProcessGroup,
    Server,
    WrkResult,
    add_load_options,
    bearer,
    body_script,
    check_load_options,
    dev_server,
    find_or_install_wrk,
    guarded,
    run_wrk,
    warn_if_busy,
)

from tests.support.procfs import group
from tests.support.server import free_port

HERE = Path(__file__).resolve().parent
DIGEST = base64.urlsafe_b64encode(hashlib.sha256(b"openkeyvault benchmark").digest()
                                  ).rstrip(b"=").decode()
SCALE = "1000000"  # throttling limits x 10^6: the gate runs and counts, never refuses
NOOP, GET, RS256, ES256 = "no-op /healthz", "secret GET", "RS256 sign", "ES256 sign"
ENDPOINTS = (NOOP, GET, RS256, ES256)
CURRENT, BEFORE, BARE = "current", "before", "bare"
BUSY = 0.2  # cores used by other processes during a run above which its figures are suspect


@dataclass
class Target:
    """One endpoint of one server, as wrk drives it."""

    label: str
    url: str
    headers: dict[str, str]
    script: Path | None = None  # a body script for the POSTs

    @property
    def wrk_args(self) -> list[str]:
        return ["-s", str(self.script)] if self.script else []


def sign_body(alg: str) -> dict[str, str]:
    return {"alg": alg, "value": DIGEST}


def okv_targets(server: Server) -> list[Target]:
    """A 32-byte secret, an RSA-2048 and a P-256 key on `server`, and its four endpoints,
    each checked to answer 200 first."""
    auth = bearer(server.token())

    def ok(method: str, path: str, body: object = None) -> dict[str, object]:
        status, out = server.request(method, path, body, headers=auth)
        if status != 200:
            raise BenchError(f"{method} {path} answered {status}, not 200")
        return out

    q = f"?api-version={API_VERSION}"
    ok("PUT", f"/secrets/bench-secret{q}", {"value": "s" * 32})
    targets = [Target(NOOP, server.base + "/healthz", {}),
               Target(GET, f"{server.base}/secrets/bench-secret/{q}", auth)]
    status, _ = server.request("GET", "/healthz")
    if status != 200:
        raise BenchError(f"GET /healthz answered {status}, not 200")
    if "value" not in ok("GET", f"/secrets/bench-secret/{q}"):
        raise BenchError("the secret GET answered without a value")
    for label, name, body, alg in ((RS256, "bench-rsa", {"kty": "RSA", "key_size": 2048},
                                    "RS256"),
                                   (ES256, "bench-ec", {"kty": "EC", "crv": "P-256"}, "ES256")):
        key = ok("POST", f"/keys/{name}/create{q}", body)["key"]
        version = str(key["kid"]).rsplit("/", 1)[1]  # type: ignore[index]
        path = f"/keys/{name}/{version}/sign{q}"
        if "value" not in ok("POST", path, sign_body(alg)):
            raise BenchError(f"{label} answered without a signature")
        script = body_script(server.work_dir, name, "POST",
                             f'{{"alg":"{alg}","value":"{DIGEST}"}}')
        targets.append(Target(label, server.base + path, auth, script))
    return targets


def drive(wrk: str, targets: list[Target], pgid: int, args: argparse.Namespace,
          alive: Server | BareApp) -> dict[str, WrkResult]:
    """A warm-up and a measured wrk run per target."""
    out = {}
    for t in targets:
        runs = [(f"{t.label} warm-up", args.warmup)] if args.warmup > 0 else []
        for label, seconds in [*runs, (t.label, args.duration)]:
            out[t.label] = run_wrk(wrk, label, t.url, threads=args.threads,
                                   connections=args.connections, duration=seconds,
                                   server_pgid=pgid, headers=t.headers, extra_args=t.wrk_args)
        alive.check_alive()
    return out


def metrics_answer(port: int) -> int:
    """Bytes of the Prometheus exposition on the metrics port (proof that metrics are on)."""
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=10) as r:
            return len(r.read())
    except (OSError, urllib.error.URLError) as exc:
        raise BenchError(f"the metrics port {port} does not answer: {exc}") from None


def audit_records(directory: Path) -> int:
    """Records in the audit trail's stream files (one JSON line each; the reserved tail is
    NUL bytes)."""
    return sum(p.read_bytes().count(b"\n") for p in directory.glob("*.jsonl"))


# ---- the bare app -----------------------------------------------------------------------------
class BareApp(ProcessGroup):
    """benchmarks/bare_sign_app.py in its own process group on a loopback port."""

    what = "the bare app"

    def __init__(self, work_dir: Path, workers: int, cert: Path, key: Path, ca: Path) -> None:
        self.workers = workers
        self.port = free_port()
        self.base = f"https://{LOOPBACK}:{self.port}"
        self.log_path = work_dir / "bare.log"
        self.cert, self.key = cert, key
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.proc: subprocess.Popen[bytes] | None = None

    def sign(self, timeout: float = 10.0) -> int:
        req = urllib.request.Request(self.base + SIGN_PATH, method="POST",
                                     data=json.dumps(sign_body("RS256")).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as r:
                if "value" not in json.loads(r.read()):
                    raise BenchError("the bare app answered without a signature")
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(HERE)}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "bare_sign_app.py"), "--port", str(self.port),
                 "--workers", str(self.workers), "--cert", str(self.cert),
                 "--key", str(self.key)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError):
                status = self.sign(timeout=2)
                if status != 200:
                    raise BenchError(f"the bare app's sign answered {status}, not 200")
                if len(group(self.pgid)) - 1 >= self.workers:
                    return
            time.sleep(0.2)
        raise BenchError(f"the bare app did not become ready in {START_TIMEOUT:.0f}s:\n"
                         f"{self.log_tail()}")


@contextlib.contextmanager
def bare_app(workers: int, data_dir: Path) -> Iterator[BareApp]:
    """The bare app with a copy of the dev server's certificate and key, stopped and its
    temporary directory removed on the way out."""
    with tempfile.TemporaryDirectory(prefix="okv-bench-bare-") as tmp:
        work = Path(tmp)
        for name in ("server.pem", "server.key", "ca.pem"):
            shutil.copy(data_dir / name, work / name)
        app = BareApp(work, workers, work / "server.pem", work / "server.key", work / "ca.pem")
        try:
            app.start()
            yield app
        finally:
            app.stop()


# ---- the run ----------------------------------------------------------------------------------
def measure(args: argparse.Namespace) -> int:
    wrk = find_or_install_wrk()
    warn_if_busy()
    results: dict[str, dict[str, WrkResult]] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="okv-bench-tls-") as keep:
        tls = Path(keep)
        for n in range(args.rounds):
            if args.rounds > 1:
                print(f"bench: round {n + 1} of {args.rounds}", file=sys.stderr, flush=True)
            keep_best(results, CURRENT, measure_current(wrk, args, tls, notes if n == 0 else []))
            if args.before:
                keep_best(results, BEFORE, measure_before(wrk, args))
            keep_best(results, BARE, measure_bare(wrk, args, tls))
    report(args, results, notes)
    return 0


def keep_best(results: dict[str, dict[str, WrkResult]], server: str,
              new: dict[str, WrkResult]) -> None:
    """Each endpoint's fastest run of the rounds: other load only ever slows a run down."""
    best = results.setdefault(server, {})
    for label, r in new.items():
        if label not in best or r.rps > best[label].rps:
            best[label] = r


def measure_current(wrk: str, args: argparse.Namespace, tls: Path,
                    notes: list[str]) -> dict[str, WrkResult]:
    """This tree with the accounting on; its certificate copied to `tls` for the bare app;
    what shows that metrics and audit were on added to `notes`."""
    metrics_port = free_port()
    with dev_server(args.workers, prefix="okv-bench-current-", extra_args=(
            "--metrics-port", str(metrics_port), "--throttling", SCALE)) as server:
        print(f"bench: {CURRENT}: okv server --dev on {server.base} ({args.workers} "
              f"worker(s)), audit on, metrics on :{metrics_port}, throttling x{SCALE}, "
              "usage on", file=sys.stderr, flush=True)
        server.start()
        for name in ("server.pem", "server.key", "ca.pem"):
            shutil.copy(server.data_dir / name, tls / name)
        targets = okv_targets(server)
        exposed = metrics_answer(metrics_port)
        out = drive(wrk, targets, server.pgid, args, server)
        notes.append(f"metrics exposition: {exposed:,} bytes before the run, "
                     f"{metrics_answer(metrics_port):,} after")
        served = sum(r.requests for r in out.values())
        notes.append(f"audit records in the trail: {audit_records(server.data_dir / 'audit'):,}"
                     f" (wrk's measured requests: {served:,}, plus the warm-ups)")
    return out


def measure_before(wrk: str, args: argparse.Namespace) -> dict[str, WrkResult]:
    with dev_server(args.workers, prefix="okv-bench-before-", pythonpath=args.before) as server:
        print(f"bench: {BEFORE}: okv server --dev from {args.before} on {server.base}",
              file=sys.stderr, flush=True)
        server.start()
        return drive(wrk, okv_targets(server), server.pgid, args, server)


def measure_bare(wrk: str, args: argparse.Namespace, tls: Path) -> dict[str, WrkResult]:
    with bare_app(args.workers, tls) as app:
        print(f"bench: {BARE}: bare_sign_app.py on {app.base}", file=sys.stderr, flush=True)
        targets = [Target(label, app.base + SIGN_PATH, {},
                          body_script(tls, f"bare-{alg}", "POST",
                                      f'{{"alg":"{alg}","value":"{DIGEST}"}}'))
                   for label, alg in ((RS256, "RS256"), (ES256, "ES256"))]
        return drive(wrk, targets, app.pgid, args, app)


def us_per_request(r: WrkResult) -> float:
    return r.server_cpu_s / max(1, r.requests) * 1e6


def report(args: argparse.Namespace, results: dict[str, dict[str, WrkResult]],
           notes: list[str]) -> None:
    rounds = f", best of {args.rounds} rounds" if args.rounds > 1 else ""
    print(f"\naccounting benchmark: {args.workers} worker(s), {args.connections} connections, "
          f"wrk -t{args.threads}, {args.duration:.0f}s per run{rounds}, {os.cpu_count()} CPUs, "
          "HTTPS keep-alive, loopback")
    print(f"  {'server':<8} {'endpoint':<15} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
          f" {'CPU us/req':>10} {'server CPU':>10} {'wrk CPU':>8} {'other CPU':>9}")
    for server, by_label in results.items():
        for label, r in by_label.items():
            print(f"  {server:<8} {label:<15} {r.rps:>9,.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f}"
                  f" {us_per_request(r):>10.0f} {r.server_cores:>10.2f} {r.wrk_cores:>8.2f}"
                  f" {r.other_cores:>9.2f}{'  <- busy' if r.other_cores > BUSY else ''}")
    for server, by_label in results.items():
        for r in by_label.values():
            if r.non_2xx or r.socket_errors:
                print(f"  warning: {server} {r.label}: {r.non_2xx} non-2xx answers (429: the "
                      f"throttling gate refused), {r.socket_errors} socket errors")
    if any(r.other_cores > BUSY for by_label in results.values() for r in by_label.values()):
        print(f"  warning: rows marked busy ran while other processes used more than {BUSY} "
              "of a CPU: their figures are low; run again on a quiet machine")
    for note in notes:
        print(f"  {note}")

    cur = results[CURRENT]
    print("\nratios")
    bare = results[BARE]
    print(f"  ES256 sign / no-op, current: {cur[ES256].rps / cur[NOOP].rps:.1%} "
          "(aim: at least 35%)")
    print(f"    the floor: the bare app's ES256 sign / this no-op: "
          f"{bare[ES256].rps / cur[NOOP].rps:.1%}; ES256 sign / bare app's ES256 sign, "
          f"current: {cur[ES256].rps / bare[ES256].rps:.1%}")
    print(f"  RS256 sign / bare app's sign, current: {cur[RS256].rps / bare[RS256].rps:.1%} "
          "(aim: at least 85%)")
    before = results.get(BEFORE)
    if before is None:
        print("  (no --before: no comparison with an earlier tree)")
        return
    print(f"  ES256 sign / no-op, before: {before[ES256].rps / before[NOOP].rps:.1%}; "
          f"RS256 sign / bare app's sign, before: {before[RS256].rps / bare[RS256].rps:.1%}")
    print(f"  secret GET, current / before: {cur[GET].rps / before[GET].rps:.1%} "
          "(aim: unchanged or better)")
    print("  the accounting's cost, 1 - current/before rate (aim: under 5%), and the server's "
          "CPU per request, current - before:")
    for label in ENDPOINTS:
        c, b = cur[label], before[label]
        extra = us_per_request(c) - us_per_request(b)
        print(f"    {label:<15} {1 - c.rps / b.rps:>7.1%}   {extra:>+6.0f} us/request "
              f"({extra / us_per_request(b):+.1%})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_options(ap)
    ap.set_defaults(duration=8.0, workers=2)
    ap.add_argument("--rounds", type=int, default=1,
                    help="start and measure each server this many times, keep the fastest (1)")
    ap.add_argument("--before", metavar="SRC",
                    help="a source tree to run as the 'before' server (PYTHONPATH=SRC)")
    args = ap.parse_args()
    check_load_options(ap, args)
    if args.warmup < 0 or args.rounds < 1:
        ap.error("--warmup must not be negative, --rounds must be positive")
    if args.before and not (Path(args.before) / "openkeyvault").is_dir():
        ap.error(f"--before {args.before}: no openkeyvault package there")
    return guarded(lambda: measure(args))


if __name__ == "__main__":
    sys.exit(main())
