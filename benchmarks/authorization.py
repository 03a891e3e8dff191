"""What the authorization decision costs on the secret GET path.

Usage: python benchmarks/authorization.py [--duration S] [--connections 32] [--workers N]
                                          [--assignments 200]

Starts `okv server --dev` (the same way as `secret_get.py`), sets one secret, and then:

  1. in this process, on the server's data directory, times what the decision adds to a
     request — `Authorizer.allowed` for the secret GET's data action — for
     (a) the dev identity: one role assignment (Key Vault Administrator at `/`), and
     (b) a "heavy" principal holding `--assignments` assignments on other secrets plus
         Key Vault Secrets User on the benchmark secret (the covering one is found last);
     each decision runs in a fresh request scope after the vault lookup, as on the server,
     and the same loop without the decision is subtracted;
  2. drives the server with wrk: secret GET with (a)'s token, secret GET with (b)'s token, and
     the no-op `/healthz`;
  3. reports the decision time as a share of the server CPU time one secret GET takes (server
     CPU seconds / requests, measured in the same wrk run). That share is what the checks cost:
     without them the same CPU would serve rate / (1 - share) requests per second.

See benchmarks/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from support import (
    API_VERSION,
    BenchError,
    Server,
    WrkResult,
    add_load_options,
    bearer,
    check_load_options,
    code_under_test,
    dev_server,
    find_or_install_wrk,
    guarded,
    run_wrk,
)

from openkeyvault.access.authorize import Scope
from openkeyvault.access.principals import Principal
from openkeyvault.access.roles import find
from openkeyvault.config import Settings
from openkeyvault.deployment import Deployment
from openkeyvault.ops import requestscope

SECRET_NAME = "bench-secret"
SECRET_VALUE = "s" * 32
ACTION = "Microsoft.KeyVault/vaults/secrets/getSecret/action"
SECRETS_USER = "Key Vault Secrets User"


def decision_time(deployment: Deployment, principal: Principal, scope: Scope,
                  seconds: float = 1.0) -> float:
    """Mean seconds one `allowed` call adds to a request.

    Each iteration is a fresh request scope that first looks the vault up, as the server
    does before any handler runs (that lookup pays the once-per-request storage freshness
    check); the same loop without the decision is subtracted.
    """
    allowed = deployment.authorizer.allowed
    get_vault = deployment.repo.get_vault
    assert allowed(principal, ACTION, scope), "the benchmark principal must be allowed"

    def loop(decide: bool) -> float:
        n, batch, t0 = 0, 1000, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            for _ in range(batch):
                requestscope.begin()
                get_vault("dev")
                if decide:
                    allowed(principal, ACTION, scope)
            n += batch
        return elapsed / n

    return max(0.0, loop(True) - loop(False))


def heavy_principal(deployment: Deployment, count: int) -> Principal:
    role = find(SECRETS_USER)
    assert role is not None
    record, _ = deployment.directory.create("bench heavy principal")
    for i in range(count):
        deployment.rbac.assign(record.object_id, role.id, f"/vaults/dev/secrets/other-{i}")
    deployment.rbac.assign(record.object_id, role.id, f"/vaults/dev/secrets/{SECRET_NAME}")
    return Principal(record.object_id, deployment.tenant_id, record.client_id)


def per_request_cpu_us(r: WrkResult) -> float:
    return r.server_cpu_s / max(1, r.requests) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_options(ap, warmup=False)
    ap.add_argument("--assignments", type=int, default=200,
                    help="role assignments of the heavy principal (200)")
    args = ap.parse_args()
    check_load_options(ap, args)
    if args.assignments < 0:
        ap.error("assignments must not be negative")
    return guarded(lambda: measure(args), failed=2)


def measure(args: argparse.Namespace) -> int:
    wrk = find_or_install_wrk()
    with dev_server(args.workers, prefix="okv-bench-authz-") as server:
        return run(args, wrk, server)


def run(args: argparse.Namespace, wrk: str, server: Server) -> int:
    server.start()
    dev_token = server.token()
    path = f"/secrets/{SECRET_NAME}/?api-version={API_VERSION}"
    server.request("PUT", f"/secrets/{SECRET_NAME}?api-version={API_VERSION}",
                   {"value": SECRET_VALUE},
                   headers=bearer(dev_token))

    deployment = Deployment.open(Settings(data_dir=server.data_dir, port=server.port))
    try:
        heavy = heavy_principal(deployment, args.assignments)
        heavy_token = deployment.tokens.issue(heavy, server.resource).access_token
        scope = Scope("dev", f"/secrets/{SECRET_NAME}")
        light_s = decision_time(deployment, deployment.dev_principal, scope)
        heavy_s = decision_time(deployment, heavy, scope)
    finally:
        deployment.close()

    status, body = server.request("GET", path, headers=bearer(heavy_token))
    if status != 200 or body.get("value") != SECRET_VALUE:
        raise BenchError("the heavy principal cannot read the benchmark secret")

    common = {"threads": args.threads, "connections": args.connections,
              "server_pgid": server.pgid}
    url = server.base + path
    run_wrk(wrk, "warm-up", url, duration=2, headers=bearer(dev_token), **common)
    run_wrk(wrk, "warm-up", url, duration=2, headers=bearer(heavy_token), **common)
    light = run_wrk(wrk, "secret GET, 1 assignment", url, duration=args.duration,
                    headers=bearer(dev_token), **common)
    heavy_r = run_wrk(wrk, f"secret GET, {args.assignments + 1} asg.", url,
                      duration=args.duration, headers=bearer(heavy_token), **common)
    noop = run_wrk(wrk, "no-op /healthz", server.base + "/healthz", duration=args.duration,
                   **common)

    ncpu = os.cpu_count() or 1
    print()
    print(f"authorization benchmark: {args.workers} worker(s), {args.connections} connections, "
          f"wrk -t{args.threads}, {args.duration:g}s per run, {ncpu} CPUs; "
          f"code: {code_under_test()}")
    print(f"  {'run':<28} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11}")
    for r in (light, heavy_r, noop):
        print(f"  {r.label:<28} {r.rps:>10,.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f}"
              f" {per_request_cpu_us(r):>11.1f}")
        if r.non_2xx or r.socket_errors:
            print(f"  WARNING: {r.label}: {r.non_2xx} non-2xx, {r.socket_errors} socket errors")
        if r.other_cores > 0.2:
            print(f"  WARNING: {r.label}: other processes used {r.other_cores:.2f} CPUs")
    for label, decision, r in (("1 assignment", light_s, light),
                               (f"{args.assignments + 1} assignments", heavy_s, heavy_r)):
        share = decision * 1e6 / per_request_cpu_us(r)
        print(f"  decision, {label:<18}: {decision * 1e6:7.2f} us = {share:6.2%} of a secret "
              f"GET's server CPU; without it: {r.rps / (1 - share):,.0f} req/s "
              f"(measured {r.rps:,.0f})")
    print(f"  heavy / light secret GET rate: {heavy_r.rps / light.rps:.1%}; "
          f"secret GET / no-op: {light.rps / noop.rps:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
