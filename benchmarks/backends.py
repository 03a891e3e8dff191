"""The hot path on PostgreSQL against SQLite: secret GET and RSA-2048 sign, one node.

Usage: python benchmarks/backends.py [--duration 10] [--workers 1] [--pythonpath SRC]

Starts `okv server --dev` twice in the same run, once on its SQLite file and once on a
throwaway PostgreSQL cluster (tests/support/postgres.py: unix socket, fsync off), sets
one 32-byte secret and creates one RSA-2048 key, then drives each with wrk (HTTPS,
keep-alive): `GET /secrets/NAME/` and `POST /keys/NAME/VERSION/sign` (RS256), in
interleaved rounds (sqlite, postgresql, postgresql, sqlite, ...: `--rounds`, `--duration`
split among them), so that a machine whose speed drifts during the run (a shared VM's
does, by a third and more) weighs on both backends alike. It prints
requests/s, latency and CPU of each, and PostgreSQL's rate as a share of SQLite's
(aim: at least 70%). The PostgreSQL server shares the machine's CPUs with the okv
server and wrk, as it would on a one-machine deployment. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import sys
from collections.abc import Iterator

from support import (
    API_VERSION,
    TABLE_HEAD,
    BenchError,
    Server,
    WrkResult,
    add_load_options,
    bearer,
    body_script,
    check_load_options,
    dev_server,
    find_or_install_wrk,
    guarded,
    row,
    run_wrk,
    starting,
    warn_if_busy,
)

SECRET = "bench-secret"
BACKENDS = ("sqlite", "postgresql")
DIGEST = base64.urlsafe_b64encode(hashlib.sha256(b"okv backends").digest()).rstrip(b"=").decode()


@contextlib.contextmanager
def database(backend: str) -> Iterator[tuple[str, ...]]:
    """The server arguments that put it on `backend` (a new PostgreSQL cluster)."""
    if backend == "sqlite":
        yield ()
        return
    from tests.support.postgres import postgres_cluster
    with postgres_cluster() as cluster:
        yield ("--database", cluster.create_database("okv_bench"))


@contextlib.contextmanager
def backend_server(backend: str, args: argparse.Namespace
                   ) -> Iterator[tuple[Server, dict[str, str], dict[str, tuple[str, list[str]]]]]:
    """A running server on `backend` with the secret and the key set, and its targets."""
    with database(backend) as extra, dev_server(args.workers, pythonpath=args.pythonpath,
                                                extra_args=extra) as server:
        starting(server)
        server.start()
        auth = bearer(server.token())
        server.request("PUT", f"/secrets/{SECRET}?api-version={API_VERSION}",
                       {"value": "s" * 32}, headers=auth)
        _, key = server.request("POST", f"/keys/bench-rsa/create?api-version={API_VERSION}",
                                {"kty": "RSA", "key_size": 2048}, headers=auth)
        version = str(key["key"]["kid"]).rsplit("/", 1)[1]
        sign = f"/keys/bench-rsa/{version}/sign?api-version={API_VERSION}"
        status, out = server.request("POST", sign, {"alg": "RS256", "value": DIGEST},
                                     headers=auth)
        if status != 200 or "value" not in out:
            raise BenchError(f"sign through the API failed on {backend}: {status}")
        script = body_script(server.work_dir, "sign", "POST",
                             f'{{"alg":"RS256","value":"{DIGEST}"}}')
        yield server, auth, {
            "secret GET": (server.base + f"/secrets/{SECRET}/?api-version={API_VERSION}", []),
            "RSA-2048 sign": (server.base + sign, ["-s", str(script)]),
        }


def merged(label: str, parts: list[WrkResult]) -> WrkResult:
    """Rounds of one target on one backend as one result (latencies: the rounds' median)."""
    def mid(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    return WrkResult(label, parts[0].threads,
                     sum(p.requests for p in parts) / sum(p.wall_s for p in parts),
                     mid([p.p50_ms for p in parts]), mid([p.p99_ms for p in parts]),
                     sum(p.requests for p in parts), sum(p.non_2xx for p in parts),
                     sum(p.socket_errors for p in parts), sum(p.wrk_cpu_s for p in parts),
                     sum(p.server_cpu_s for p in parts), sum(p.machine_busy_s for p in parts),
                     sum(p.wall_s for p in parts))


def measure(args: argparse.Namespace) -> int:
    wrk = find_or_install_wrk()
    warn_if_busy()
    with contextlib.ExitStack() as stack:
        servers = {b: stack.enter_context(backend_server(b, args)) for b in BACKENDS}
        parts: dict[tuple[str, str], list[WrkResult]] = {}
        for label in servers["sqlite"][2]:
            for server, auth, targets in servers.values():
                url, extra_args = targets[label]
                run_wrk(wrk, f"{label} warm-up", url, duration=args.warmup,
                        extra_args=extra_args, threads=args.threads,
                        connections=args.connections, server_pgid=server.pgid,
                        headers=auth)
            for i in range(args.rounds):
                # Alternate which goes first, so that a drift of the machine's speed during
                # the run weighs on both alike.
                order = BACKENDS if i % 2 == 0 else BACKENDS[::-1]
                for backend in order:
                    server, auth, targets = servers[backend]
                    url, extra_args = targets[label]
                    parts.setdefault((label, backend), []).append(run_wrk(
                        wrk, f"{label} ({backend})", url, duration=args.duration / args.rounds,
                        extra_args=extra_args, threads=args.threads,
                        connections=args.connections, server_pgid=server.pgid,
                        headers=auth))
                    server.check_alive()
    results = {key: merged(f"{key[0]} ({key[1]})", p) for key, p in parts.items()}
    print(f"\nbackends: {args.workers} worker(s), wrk -t{args.threads} -c{args.connections}, "
          f"{args.rounds} interleaved rounds of {args.duration / args.rounds:.0f}s each, "
          "HTTPS keep-alive, loopback")
    print(TABLE_HEAD)
    for backend in BACKENDS:
        for (_, b), r in results.items():
            if b == backend:
                print(row(r))
    for label in dict.fromkeys(label for label, _ in results):
        s, p = results[(label, "sqlite")], results[(label, "postgresql")]
        for r in (s, p):
            if r.non_2xx or r.socket_errors:
                print(f"  warning: {r.label}: {r.non_2xx} non-2xx, {r.socket_errors} "
                      "socket errors")
        print(f"  {label}: PostgreSQL {p.rps / s.rps:.0%} of SQLite's rate (aim: at least "
              f"70%); server CPU per request {p.server_cpu_s / max(1, p.requests) * 1e6:.0f} "
              f"us vs {s.server_cpu_s / max(1, s.requests) * 1e6:.0f} us")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_options(ap)
    ap.set_defaults(workers=1)
    ap.add_argument("--pythonpath", help="run the server from another source tree")
    ap.add_argument("--rounds", type=int, default=4,
                    help="interleaved rounds per target, --duration split among them (4)")
    args = ap.parse_args()
    check_load_options(ap, args)
    return guarded(lambda: measure(args))


if __name__ == "__main__":
    sys.exit(main())
