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
import contextlib
import importlib.util
import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

LOOPBACK = "127.0.0.1"
API_VERSION = "7.5"
SECRET_NAME = "bench-secret"
SECRET_VALUE = "s" * 32  # 32 bytes, like the ceiling's plaintext
HTTP_TIMEOUT = 10.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
APT_TIMEOUT = 300.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    pass


# ---- wrk ------------------------------------------------------------------------------------
def _apt_get(*args: str) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"bench: running apt-get {' '.join(args)}", flush=True)
    try:
        r = subprocess.run(["apt-get", *args], env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=APT_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"bench: apt-get {args[0]} timed out after {APT_TIMEOUT:.0f}s", file=sys.stderr)
        return False
    if r.returncode != 0:
        tail = "\n".join(r.stderr.strip().splitlines()[-3:])
        print(f"bench: apt-get {args[0]} failed ({r.returncode}): {tail}", file=sys.stderr)
    return r.returncode == 0


def find_or_install_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError(
            "wrk is not installed and this script can only install it as root with apt-get.\n"
            "Install it yourself (Debian/Ubuntu: `sudo apt-get install -y wrk`; macOS: "
            "`brew install wrk`) or put a wrk binary on PATH, then run again."
        )
    install = ("install", "-y", "--no-install-recommends", "wrk")
    if not _apt_get(*install) and not (_apt_get("update") and _apt_get(*install)):
        raise BenchError("could not install wrk with apt-get (see the errors above); "
                         "install it by hand and run again.")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get reported success but wrk is still not on PATH.")
    return found


_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise BenchError(f"cannot parse wrk time {text!r}")
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


@dataclass
class WrkResult:
    label: str
    threads: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    wrk_cpu_s: float  # user+sys of the wrk process
    server_cpu_s: float  # user+sys of every server process (master and workers)
    machine_busy_s: float  # non-idle CPU time of the whole machine (/proc/stat)
    wall_s: float

    @property
    def wrk_cores(self) -> float:
        return self.wrk_cpu_s / self.wall_s

    @property
    def server_cores(self) -> float:
        return self.server_cpu_s / self.wall_s

    @property
    def other_cores(self) -> float:
        """CPU that neither wrk nor the server used: other load on the machine."""
        return max(0.0, self.machine_busy_s - self.server_cpu_s - self.wrk_cpu_s) / self.wall_s


def parse_wrk(out: str) -> dict[str, float]:
    def grab(pattern: str) -> str:
        m = re.search(pattern, out, re.MULTILINE)
        if not m:
            raise BenchError(f"unexpected wrk output (no match for {pattern!r}):\n{out}")
        return m.group(1)

    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(grab(r"^Requests/sec:\s+([\d.]+)")),
        "p50": _ms(grab(r"^\s+50%\s+(\S+)")),
        "p99": _ms(grab(r"^\s+99%\s+(\S+)")),
        "requests": int(grab(r"^\s+(\d+) requests in")),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
    }


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def machine_busy() -> float:
    """Non-idle CPU seconds of the whole machine since boot (all CPUs, from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def _group_cpu(pgid: int) -> float:
    """User+sys seconds of the live processes in process group `pgid` (from /proc)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[0] is field 3 (state); pgrp is field 5, utime 14, stime 15.
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def run_wrk(wrk: str, label: str, url: str, *, threads: int, connections: int,
            duration: float, server_pgid: int, headers: dict[str, str] | None = None,
            extra_args: list[str] | None = None) -> WrkResult:
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
           "--latency", "--timeout", "5s", *(extra_args or [])]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(url)
    cpu0, srv0, t0 = _children_cpu(), _group_cpu(server_pgid), time.monotonic()
    busy0 = machine_busy()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           timeout=duration + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk ({label}) did not finish within {duration + 30:.0f}s") from None
    wall = time.monotonic() - t0
    busy1, srv1, cpu1 = machine_busy(), _group_cpu(server_pgid), _children_cpu()
    if r.returncode != 0:
        raise BenchError(f"wrk ({label}) failed ({r.returncode}): {r.stderr.strip()}")
    p = parse_wrk(r.stdout)
    return WrkResult(label, threads, p["rps"], p["p50"], p["p99"], int(p["requests"]),
                     int(p["non_2xx"]), int(p["socket_errors"]), cpu1 - cpu0, srv1 - srv0,
                     busy1 - busy0, wall)


# ---- the server -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class Server:
    """`okv server --dev` in its own process group, on a loopback port."""

    def __init__(self, data_dir: Path, workers: int) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.port = free_port()
        self.base = f"https://{LOOPBACK}:{self.port}"
        self.log_path = data_dir.parent / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctx: ssl.SSLContext | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "openkeyvault", "server", "--dev",
                 "--data-dir", str(self.data_dir), "--host", LOOPBACK,
                 "--port", str(self.port), "--workers", str(self.workers)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the server exited early:\n{self.log_tail()}")
            if (self.data_dir / "ca.pem").exists() and (self.data_dir / "dev.env").exists():
                self.ctx = ssl.create_default_context(cafile=str(self.data_dir / "ca.pem"))
                # Every worker must be up too, or the first run measures startup.
                with contextlib.suppress(OSError, BenchError):
                    if (self.request("GET", "/healthz", timeout=2)[0] == 200
                            and self._workers_up() >= self.workers):
                        return
            time.sleep(0.2)
        raise BenchError(f"the server did not become ready in {START_TIMEOUT:.0f}s:\n"
                         f"{self.log_tail()}")

    def _workers_up(self) -> int:
        assert self.proc is not None
        return max(0, len(self.pids()) - 1)  # the granian master plus one per worker

    def pids(self) -> list[int]:
        assert self.proc is not None
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat[stat.rindex(")") + 2:].split()[2]) == self.proc.pid:
                    out.append(int(entry))
        return out

    def request(self, method: str, path: str, body: object = None,
                headers: dict[str, str] | None = None, timeout: float = HTTP_TIMEOUT
                ) -> tuple[int, dict[str, object]]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise BenchError(f"{method} {path} -> {e.code}: {e.read()[:300]!r}") from None

    def env(self) -> dict[str, str]:
        out = {}
        for line in (self.data_dir / "dev.env").read_text().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.partition("=")
                out[k] = v
        return out

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


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
def _row(r: WrkResult) -> str:
    return (f"  {r.label:<22} {r.rps:>10,.0f} {r.p50_ms:>9.2f} {r.p99_ms:>9.2f}"
            f" {r.server_cores:>10.2f} {r.wrk_cores:>8.2f} {r.other_cores:>9.2f}")


def report(args: argparse.Namespace, secret: WrkResult, noop: WrkResult,
           noop_t1: WrkResult | None, aes: tuple[float, float]) -> None:
    ncpu = os.cpu_count() or 1
    print()
    print(f"secret GET benchmark: {args.workers} worker(s), {args.connections} connections, "
          f"wrk -t{args.threads}, {args.duration:g}s per run, {ncpu} CPUs, HTTPS keep-alive, "
          "loopback")
    print(f"  {'endpoint':<22} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}"
          f" {'server CPU':>10} {'wrk CPU':>8} {'other CPU':>9}")
    for r in (secret, noop, noop_t1):
        if r is not None:
            print(_row(r))
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

def code_under_test() -> str:
    """Where the server's code comes from, and its git commit when there is one."""
    spec = importlib.util.find_spec("openkeyvault")
    where = Path(spec.origin).parent if spec and spec.origin else Path("?")
    try:
        rev = subprocess.run(["git", "-C", str(where), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return str(where)
    return f"{where} @ {rev.stdout.strip()}" if rev.returncode == 0 else str(where)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    ap.add_argument("--connections", type=int, default=32, help="concurrent connections (32)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="server worker processes (default: CPU count)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per endpoint")
    ap.add_argument("--no-loadgen-check", action="store_true",
                    help="skip the extra wrk -t1 run on the no-op endpoint")
    args = ap.parse_args()
    if args.duration <= 0 or args.connections < 1 or args.workers < 1 or args.threads < 1:
        ap.error("duration, connections, workers and threads must be positive")

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
            path = f"/secrets/{SECRET_NAME}/?api-version={API_VERSION}"
            server.request("PUT", f"/secrets/{SECRET_NAME}?api-version={API_VERSION}",
                           {"value": SECRET_VALUE}, auth)
            status, got = server.request("GET", path, headers=auth)
            if status != 200 or got.get("value") != SECRET_VALUE:
                raise BenchError(f"secret GET returned {status} {got!r}")

            urls = {"secret": server.base + path, "noop": server.base + "/healthz"}
            common = {"connections": args.connections, "server_pgid": server.proc.pid}
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
            if server.proc.poll() is not None:
                raise BenchError(f"the server died during the run:\n{server.log_tail()}")
            report(args, secret, noop, noop_t1, aes)
        except BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("bench: interrupted", file=sys.stderr)
            return 130
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
