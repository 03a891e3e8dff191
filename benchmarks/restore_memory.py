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
import contextlib
import json
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from secret_get import LOOPBACK, BenchError, Server, code_under_test  # noqa: E402

MIB = 1024 * 1024
COLLECTIONS = ("keys", "secrets", "certificates")
REQUEST_TIMEOUT = 120.0
CHUNK = 256 * 1024


@dataclass
class Outcome:
    status: int | None
    sent: int
    error: str | None


def post_large(port: int, ca: str, path: str, token: str, size: int,
               timeout: float = REQUEST_TIMEOUT) -> Outcome:
    """POST a `size`-byte `{"value": "AAAA..."}` body; stop sending once an answer begins."""
    ctx = ssl.create_default_context(cafile=ca)
    raw = socket.create_connection((LOOPBACK, port), timeout=timeout)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    head = (f"POST {path} HTTP/1.1\r\nHost: localhost:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    prefix, suffix = b'{"value":"', b'"}'
    filler = b"A" * CHUNK
    sent, got, error = 0, b"", None
    deadline = time.monotonic() + timeout
    try:
        s.sendall(head)
        s.setblocking(False)
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536)
                if not data:
                    break
                got += data
                if _complete(got):
                    break
                continue
            except (ssl.SSLWantReadError, BlockingIOError):
                pass
            if sent < size and not got:
                tail = size - len(suffix)
                piece = (prefix[sent:] if sent < len(prefix) else
                         suffix[sent - tail:] if sent >= tail else filler[: tail - sent])
                try:
                    sent += s.send(piece)
                except (ssl.SSLWantWriteError, BlockingIOError):
                    select.select([s], [s], [], 0.05)
            else:
                select.select([s], [], [], 0.05)
    except OSError as exc:
        error = type(exc).__name__
    finally:
        s.close()
    status = int(got.split(b" ", 2)[1]) if got.startswith(b"HTTP/1.1 ") else None
    return Outcome(status, sent, error)


def _complete(got: bytes) -> bool:
    head, sep, rest = got.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    return m is None or len(rest) >= int(m.group(1))


def worker_rss(server: Server) -> int:
    """Sum of VmRSS (bytes) of the server process's children (its workers)."""
    total = 0
    for pid in server.pids():
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


class Sampler(threading.Thread):
    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server, self.peak, self._done = server, 0, threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, worker_rss(self.server))
            self._done.wait(0.01)

    def stop(self) -> int:
        self._done.set()
        self.join(5)
        return self.peak


def no_role_token(server: Server) -> str:
    """A new service principal with no role, and a token for it from the token endpoint."""
    r = subprocess.run([sys.executable, "-m", "openkeyvault", "principal", "create",
                        "restore-memory-bench", "--data-dir", str(server.data_dir)],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise BenchError(f"okv principal create failed: {r.stderr.strip()[:300]}")
    p = json.loads(r.stdout)
    form = urllib.parse.urlencode({
        "grant_type": "client_credentials", "client_id": p["client_id"],
        "client_secret": p["client_secret"],
        "scope": f"https://vault.localhost:{server.port}/.default"}).encode()
    req = urllib.request.Request(f"{server.base}/{p['tenant_id']}/oauth2/v2.0/token", form)
    with urllib.request.urlopen(req, context=server.ctx, timeout=10) as resp:
        return str(json.loads(resp.read())["access_token"])


def owner_token(server: Server) -> str:
    env = server.env()
    _, tok = server.request(
        "GET", f"/msi/token?api-version=2019-08-01&resource=https://vault.localhost:{server.port}",
        headers={"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]})
    return str(tok["access_token"])


def burst(server: Server, token: str, n: int, size: int) -> list[Outcome]:
    paths = [f"/{COLLECTIONS[i % 3]}/restore?api-version=7.5" for i in range(n)]
    ca = str(server.data_dir / "ca.pem")
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda p: post_large(server.port, ca, p, token, size), paths))


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
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    size = int(args.size_mib * MIB)
    with tempfile.TemporaryDirectory(prefix="okv-bench-") as tmp:
        server = Server(Path(tmp) / "data", args.workers)
        try:
            tuning = os.environ.get("OKV_MALLOC_TUNING", "")
            print(f"bench: okv server --dev ({args.workers} worker(s)), code: "
                  f"{code_under_test()}, OKV_MALLOC_TUNING={tuning}", flush=True)
            server.start()
            token = no_role_token(server) if args.caller == "no-role" else owner_token(server)
            for _ in range(3):  # warm-up: the path, the token and the decision are cached
                post_large(server.port, str(server.data_dir / "ca.pem"),
                           "/secrets/restore?api-version=7.5", token, 64)
            time.sleep(1.0)
            base = worker_rss(server)
            print(f"  {args.concurrency} concurrent restores of {args.size_mib:g} MiB as "
                  f"{args.caller}, {args.rounds} round(s); worker RSS baseline "
                  f"{base / MIB:.0f} MiB")
            for rnd in range(1, args.rounds + 1):
                sampler = Sampler(server)
                sampler.start()
                t0 = time.monotonic()
                outcomes = burst(server, token, args.concurrency, size)
                wall = time.monotonic() - t0
                peak = sampler.stop()
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
            if server.proc is not None and server.proc.poll() is not None:
                raise BenchError(f"the server died:\n{server.log_tail()}")
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
