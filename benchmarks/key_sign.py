"""Key sign throughput through the API, next to the raw `cryptography` sign rate.

Starts the real server (`okv server --dev`, all worker processes), creates an
RSA-2048 and an EC P-256 key, then drives `POST /keys/{name}/{version}/sign`
over HTTPS with keep-alive and 32 connections (wrk + a Lua body script). In the
same run it measures the raw pyca/cryptography sign rate with as many
processes as the server has workers, and the server's no-op endpoint.

    .venv/bin/python benchmarks/key_sign.py [--duration 10] [--workers N]

Aims: RSA-2048 sign through the API >= 85% of the raw rate; EC P-256 sign >=
half of the no-op request rate. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import multiprocessing
import os
import sys
import time

from support import (
    API_VERSION,
    BenchError,
    WrkResult,
    add_load_options,
    bearer,
    body_script,
    check_load_options,
    dev_server,
    find_or_install_wrk,
    guarded,
    run_wrk,
)

DIGEST = hashlib.sha256(b"openkeyvault benchmark").digest()


def _raw_worker(kind: str, seconds: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

    if kind == "rsa":
        key = rsa.generate_private_key(65537, 2048)

        def sign() -> None:
            key.sign(DIGEST, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    else:
        eck = ec.generate_private_key(ec.SECP256R1())

        def sign() -> None:
            eck.sign(DIGEST, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            sign()
        n += 20
    out.put(n / (time.perf_counter() - start))


def raw_rate(kind: str, processes: int, seconds: float) -> float:
    """Signatures/s of `processes` processes signing in parallel (the ceiling)."""
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_raw_worker, args=(kind, seconds, q)) for _ in range(processes)]
    for p in procs:
        p.start()
    rates = [q.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(10)
    return sum(rates)


def row(label: str, r: WrkResult) -> str:
    return (f"  {label:<26}{r.rps:>9,.0f}{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}"
            f"{r.server_cores:>11.2f}{r.wrk_cores:>9.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_options(ap, warmup=False)
    args = ap.parse_args()
    check_load_options(ap, args)
    return guarded(lambda: measure(args))


def measure(args: argparse.Namespace) -> int:
    wrk = find_or_install_wrk()
    with dev_server(args.workers) as server:
        server.start()
        auth = bearer(server.token())
        digest = base64.urlsafe_b64encode(DIGEST).rstrip(b"=").decode()
        targets = []
        for name, body, alg in (("bench-rsa", {"kty": "RSA", "key_size": 2048}, "RS256"),
                                ("bench-ec", {"kty": "EC", "crv": "P-256"}, "ES256")):
            _, key = server.request("POST", f"/keys/{name}/create?api-version={API_VERSION}",
                                    body, headers=auth)
            version = str(key["key"]["kid"]).rsplit("/", 1)[1]
            path = f"/keys/{name}/{version}/sign?api-version={API_VERSION}"
            status, out = server.request("POST", path, {"alg": alg, "value": digest},
                                         headers=auth)
            if status != 200 or "value" not in out:
                raise BenchError(f"sign through the API failed: {status} {out}")
            script = body_script(server.work_dir, name, "POST",
                                 f'{{"alg":"{alg}","value":"{digest}"}}')
            targets.append((name, alg, server.base + path, script))

        common = {"threads": args.threads, "connections": args.connections,
                  "server_pgid": server.pgid}
        print(f"bench: warm-up, then wrk -t{args.threads} -c{args.connections} "
              f"-d{args.duration:.0f}s per endpoint", file=sys.stderr)
        results = {}
        for name, alg, url, script in targets:
            run_wrk(wrk, f"{alg} warm-up", url, duration=2, headers=auth,
                    extra_args=["-s", str(script)], **common)
            results[name] = run_wrk(wrk, f"{alg} sign", url, duration=args.duration,
                                    headers=auth, extra_args=["-s", str(script)], **common)
        noop = run_wrk(wrk, "no-op", server.base + "/healthz", duration=args.duration,
                       **common)
    rsa_raw = raw_rate("rsa", args.workers, min(args.duration, 5.0))
    ec_raw = raw_rate("ec", args.workers, min(args.duration, 5.0))

    rsa_api, ec_api = results["bench-rsa"], results["bench-ec"]
    print(f"\nkey sign benchmark: {args.workers} worker(s), {args.connections} connections, "
          f"wrk -t{args.threads}, {args.duration:.0f}s per run, {os.cpu_count()} CPUs, "
          "HTTPS keep-alive, loopback")
    print(f"  {'endpoint':<26}{'req/s':>9}{'p50 ms':>10}{'p99 ms':>10}{'server CPU':>11}"
          f"{'wrk CPU':>9}")
    print(row("RS256 sign (RSA-2048)", rsa_api))
    print(row("ES256 sign (P-256)", ec_api))
    print(row("no-op /healthz", noop))
    for r in (rsa_api, ec_api, noop):
        if r.non_2xx or r.socket_errors:
            print(f"  warning: {r.label}: {r.non_2xx} non-2xx, {r.socket_errors} socket errors")
    print(f"  raw cryptography, {args.workers} process(es): RSA-2048 sign {rsa_raw:,.0f}/s, "
          f"P-256 sign {ec_raw:,.0f}/s")
    print(f"  RSA-2048 sign through the API: {rsa_api.rps / rsa_raw:.1%} of the raw rate "
          "(aim: at least 85%)")
    print(f"  P-256 sign through the API: {ec_api.rps / noop.rps:.1%} of the no-op rate "
          f"(aim: at least 50%); {ec_api.rps / ec_raw:.1%} of the raw rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
