"""What the benchmarks share, so that each script holds only what it measures.

- running a benchmark: SIGTERM and Ctrl-C stop the server, errors print as `bench: ...`;
- the real `okv server --dev` on a free loopback port with a temporary data directory and
  a log file, its token, its CLI;
- wrk: found or installed, run, its output parsed, with the CPU the server, wrk and the
  rest of the machine used during the run;
- the app called in-process, without HTTP or TLS.

What a benchmark shares with the tests (the workers' memory, raw TLS clients) lives in
tests/support, imported from here.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import re
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests/support, whatever the working directory
    sys.path.insert(1, str(ROOT))

from tests.support.procfs import group, stat_fields  # noqa: E402
from tests.support.server import free_port, read_env_file  # noqa: E402

LOOPBACK = "127.0.0.1"
API_VERSION = "7.5"
HTTP_TIMEOUT = 10.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
APT_TIMEOUT = 300.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


class WrkMissing(BenchError):
    """wrk is not installed and could not be (exit status 2)."""


# ---- running a benchmark ----------------------------------------------------------------------
def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def guarded(body: Callable[[], int], failed: int = 1) -> int:
    """Run `body` so that a SIGTERM or Ctrl-C still stops the server (the `finally` blocks
    run) and an error ends with one `bench: ...` line: exit status `failed`, 2 when wrk is
    missing, 130 when interrupted."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return body()
    except WrkMissing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return failed
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


def add_load_options(ap: argparse.ArgumentParser, *, warmup: bool = True) -> None:
    """The options of every benchmark that drives the server with wrk."""
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    ap.add_argument("--connections", type=int, default=32, help="concurrent connections (32)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="server worker processes (default: CPU count)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    if warmup:
        ap.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of warm-up per endpoint")


def check_load_options(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.duration <= 0 or args.connections < 1 or args.workers < 1 or args.threads < 1:
        ap.error("duration, connections, workers and threads must be positive")


def warn_if_busy() -> None:
    """Say so when other processes already use the CPUs: the figures would be low and noisy."""
    b0, t0 = machine_busy(), time.monotonic()
    time.sleep(1.0)
    idle_load = (machine_busy() - b0) / (time.monotonic() - t0)
    if idle_load > 0.2:
        print(f"bench: WARNING: the machine is busy before the benchmark starts ({idle_load:.2f} "
              "CPUs in use by other processes); results will be low and noisy", flush=True)


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


# ---- the server -------------------------------------------------------------------------------
class ProcessGroup:
    """A process started in a process group of its own (a server and its workers), with a
    log file: its group, whether it still runs, how it stops."""

    proc: subprocess.Popen[bytes] | None
    log_path: Path
    what = "the server"

    @property
    def pgid(self) -> int:
        """The process group: the master and its workers."""
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError(f"{self.what} died during the run:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGINT to the process group, SIGKILL if it has not exited in STOP_TIMEOUT."""
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


class Server(ProcessGroup):
    """`okv server --dev` in its own process group, on a loopback port; its output goes to
    server.log next to the data directory."""

    def __init__(self, data_dir: Path, workers: int, *, pythonpath: str | None = None,
                 extra_args: tuple[str, ...] | list[str] = ()) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.extra_args = list(extra_args)
        self.env = dict(os.environ)
        # One vault driven far past Azure's limits: the throttling gate runs and counts,
        # and never refuses (a benchmark measures the work, not 429s).
        self.env.setdefault("OKV_THROTTLING", "1000000")
        if pythonpath:  # the server (and the CLI) from another source tree
            self.env["PYTHONPATH"] = pythonpath
        self.port = free_port()
        self.base = f"https://{LOOPBACK}:{self.port}"
        self.resource = f"https://vault.localhost:{self.port}"
        self.log_path = data_dir.parent / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctx: ssl.SSLContext | None = None

    @property
    def work_dir(self) -> Path:
        """The temporary directory that holds the data directory: room for scripts."""
        return self.data_dir.parent

    @property
    def ca(self) -> str:
        return str(self.data_dir / "ca.pem")

    def start(self) -> None:
        """Start it and wait until /healthz answers and every worker is up (or the first
        run would measure startup)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "openkeyvault", "server", "--dev",
                 "--data-dir", str(self.data_dir), "--host", LOOPBACK,
                 "--port", str(self.port), "--workers", str(self.workers), *self.extra_args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=self.env,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the server exited early:\n{self.log_tail()}")
            if (self.data_dir / "ca.pem").exists() and (self.data_dir / "dev.env").exists():
                self.ctx = ssl.create_default_context(cafile=self.ca)
                with contextlib.suppress(OSError, BenchError):
                    if (self.request("GET", "/healthz", timeout=2)[0] == 200
                            and self._workers_up() >= self.workers):
                        return
            time.sleep(0.2)
        raise BenchError(f"the server did not become ready in {START_TIMEOUT:.0f}s:\n"
                         f"{self.log_tail()}")

    def _workers_up(self) -> int:
        return max(0, len(group(self.pgid)) - 1)  # the granian master plus one per worker

    def request(self, method: str, path: str, body: object = None,
                headers: dict[str, str] | None = None, timeout: float = HTTP_TIMEOUT
                ) -> tuple[int, dict[str, Any]]:
        """One JSON request; an error status raises BenchError."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise BenchError(f"{method} {path} -> {e.code}: {e.read()[:300]!r}") from None

    def identity(self) -> dict[str, str]:
        """The header that the dev server's managed identity and dev endpoints expect."""
        return {"X-IDENTITY-HEADER": read_env_file(self.data_dir / "dev.env")["IDENTITY_HEADER"]}

    def token(self) -> str:
        """An access token of the dev identity (Key Vault Administrator), from /msi/token."""
        _, body = self.request(
            "GET", f"/msi/token?api-version=2019-08-01&resource={self.resource}",
            headers=self.identity())
        return str(body["access_token"])

    def okv(self, *args: str) -> dict[str, Any]:
        """An `okv` CLI command on the server's data directory; its JSON output."""
        done = subprocess.run([sys.executable, "-m", "openkeyvault", *args,
                               "--data-dir", str(self.data_dir)],
                              capture_output=True, text=True, timeout=60, env=self.env)
        if done.returncode != 0:
            raise BenchError(f"okv {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
        out: dict[str, Any] = json.loads(done.stdout)
        return out


@contextlib.contextmanager
def dev_server(workers: int, *, prefix: str = "okv-bench-", pythonpath: str | None = None,
               extra_args: tuple[str, ...] | list[str] = ()) -> Iterator[Server]:
    """A Server with a temporary data directory, not started yet (the caller may say where
    it runs first), and stopped and removed on the way out."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        server = Server(Path(tmp) / "data", workers, pythonpath=pythonpath,
                        extra_args=extra_args)
        try:
            yield server
        finally:
            server.stop()


def starting(server: Server) -> None:
    """Say which server, on which port, runs which code."""
    print(f"bench: starting okv server --dev ({server.workers} worker(s)) on "
          f"{server.base}, code: {code_under_test()}", flush=True)


@contextlib.contextmanager
def wrk_and_server(workers: int) -> Iterator[tuple[str, Server]]:
    """wrk, a warning if the machine is already busy, and a started dev server (said where
    and with which code), stopped on the way out."""
    wrk = find_or_install_wrk()
    warn_if_busy()
    with dev_server(workers) as server:
        starting(server)
        server.start()
        yield wrk, server


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---- wrk --------------------------------------------------------------------------------------
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
    """wrk on PATH; as root, installed with apt-get (`update` only if the install fails)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise WrkMissing(
            "wrk is not installed and this script can only install it as root with apt-get.\n"
            "Install it yourself (Debian/Ubuntu: `sudo apt-get install -y wrk`; macOS: "
            "`brew install wrk`) or put a wrk binary on PATH, then run again."
        )
    install = ("install", "-y", "--no-install-recommends", "wrk")
    if not _apt_get(*install) and not (_apt_get("update") and _apt_get(*install)):
        raise WrkMissing("could not install wrk with apt-get (see the errors above); "
                         "install it by hand and run again.")
    found = shutil.which("wrk")
    if not found:
        raise WrkMissing("apt-get reported success but wrk is still not on PATH.")
    return found


def body_script(directory: Path, name: str, method: str, body: str) -> Path:
    """A wrk Lua script that sends every request as `method` with the JSON `body`."""
    quoted = body.replace("\\", "\\\\").replace('"', '\\"')
    path = directory / f"{name}.lua"
    path.write_text(f'wrk.method = "{method}"\n'
                    f'wrk.body = "{quoted}"\n'
                    'wrk.headers["Content-Type"] = "application/json"\n')
    return path


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


def group_cpu(pgid: int) -> float:
    """User+sys seconds of the live processes in process group `pgid` (from /proc)."""
    ticks = 0
    for pid in group(pgid):
        if (fields := stat_fields(pid)) is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def run_wrk(wrk: str, label: str, url: str, *, threads: int, connections: int,
            duration: float, server_pgid: int, headers: dict[str, str] | None = None,
            extra_args: list[str] | None = None) -> WrkResult:
    """One `wrk --latency` run (HTTPS, keep-alive), with the CPU used while it ran."""
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
           "--latency", "--timeout", "5s", *(extra_args or [])]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(url)
    cpu0, srv0, t0 = _children_cpu(), group_cpu(server_pgid), time.monotonic()
    busy0 = machine_busy()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           timeout=duration + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk ({label}) did not finish within {duration + 30:.0f}s") from None
    wall = time.monotonic() - t0
    busy1, srv1, cpu1 = machine_busy(), group_cpu(server_pgid), _children_cpu()
    if r.returncode != 0:
        raise BenchError(f"wrk ({label}) failed ({r.returncode}): {r.stderr.strip()}")
    p = parse_wrk(r.stdout)
    return WrkResult(label, threads, p["rps"], p["p50"], p["p99"], int(p["requests"]),
                     int(p["non_2xx"]), int(p["socket_errors"]), cpu1 - cpu0, srv1 - srv0,
                     busy1 - busy0, wall)


TABLE_HEAD = (f"  {'endpoint':<22} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}"
              f" {'server CPU':>10} {'wrk CPU':>8} {'other CPU':>9}")


def row(r: WrkResult) -> str:
    """One line of the table under TABLE_HEAD."""
    return (f"  {r.label:<22} {r.rps:>10,.0f} {r.p50_ms:>9.2f} {r.p99_ms:>9.2f}"
            f" {r.server_cores:>10.2f} {r.wrk_cores:>8.2f} {r.other_cores:>9.2f}")


# ---- the app in-process -----------------------------------------------------------------------
PORT = 8443  # what the in-process app believes it listens on
REPEATS = 5  # best of 5 batches: the machine is shared, the minimum is the stable figure


THROTTLING_SCALE = 1_000_000.0  # the limits x 10^6: the gate runs and counts, never refuses


def in_process_app(tmp: Path) -> tuple[Any, IO[str]]:
    """The app as a granian worker builds it (`create_app`) on a new dev data directory in
    `tmp`, and the file its request log lines go to, as they would go to a log file."""
    from openkeyvault.cli.server import prepare
    from openkeyvault.config import ENV_VAR, Settings

    # Like the benchmark servers: one vault driven far past Azure's limits (a profile of
    # 429s would measure nothing).
    settings = Settings(data_dir=tmp / "data", port=PORT, dev=True,
                        throttling_scale=THROTTLING_SCALE)
    prepare(settings)
    os.environ[ENV_VAR] = settings.to_env()
    from openkeyvault.api.app import create_app

    log_file = open(tmp / "server.log", "w")  # noqa: SIM115 (the caller closes it)
    saved, sys.stderr = sys.stderr, log_file  # the access log takes the stream it finds
    try:
        app = create_app()
    finally:
        sys.stderr = saved
    for h in logging.getLogger("openkeyvault").handlers:  # set up before `create_app`
        if isinstance(h, logging.StreamHandler):
            h.setStream(log_file)
    return app, log_file


def dev_headers(app: Any) -> list[tuple[bytes, bytes]]:
    """Host and a bearer token of the dev identity, as wrk's requests carry them."""
    d = app.d
    token = d.tokens.issue(d.dev_principal, f"https://vault.localhost:{PORT}").access_token
    return [(b"host", f"127.0.0.1:{PORT}".encode()),
            (b"authorization", f"Bearer {token}".encode())]


def asgi_scope(method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]]
               ) -> dict[str, Any]:
    """An ASGI HTTP scope shaped like one of wrk's requests."""
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": method, "scheme": "https", "path": path,
        "raw_path": path.encode(), "query_string": query, "root_path": "",
        "headers": headers, "server": ("127.0.0.1", PORT), "client": ("127.0.0.1", 50000),
    }


class Driver:
    """Calls the ASGI app the way a server would, and keeps the last response."""

    def __init__(self, app: Any, body: bytes = b"") -> None:
        self.app = app
        self.default_body = body  # what `call` sends when given no body
        self.status = 0
        self.body = b""

    async def call(self, scope: dict[str, Any], body: bytes | None = None) -> None:
        sent = self.default_body if body is None else body

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": sent, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body":
                self.body = message.get("body", b"")

        await self.app(scope, receive, send)


async def per_request_us(driver: Driver, scope: dict[str, Any], n: int) -> float:
    """Microseconds per call of `scope` after a warm-up, best of REPEATS batches of n/REPEATS
    (BenchError if the app stopped answering it with success: that would be timed too)."""
    for _ in range(min(200, n)):
        await driver.call(scope)
    batch, best = max(1, n // REPEATS), float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(batch):
            await driver.call(scope)
        best = min(best, (time.perf_counter() - t0) / batch)
    if not 200 <= driver.status < 300:
        raise BenchError(f"{scope['method']} {scope['path']} answered {driver.status}: "
                         f"{driver.body[:200]!r}")
    return best * 1e6
