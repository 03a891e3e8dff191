"""HSM-protected keys' signatures through the API against the token's own rate, both
with every core in use.

    .venv/bin/python benchmarks/hsm_sign.py [--duration 8] [--workers N] [--connections 32]

In one run, on 127.0.0.1:

1. the raw rate: one process per CPU, each loading SoftHSM2's PKCS#11 module itself
   (python-pkcs11, no okv code), logging in to a token made for the run and signing a
   SHA-256 digest in a loop for the duration with its own RSA-2048 (CKM_RSA_PKCS over a
   DigestInfo, as RS256 is done) or P-256 key (CKM_ECDSA); the sum of their rates;
2. `okv server --dev` (one worker per CPU unless --workers), a Premium vault, an RSA-HSM
   2048 and an EC-HSM P-256 key made in its SoftHSM2 token, and wrk (HTTPS keep-alive)
   on POST /keys/NAME/VERSION/sign with RS256 and with ES256;
3. the same server's no-op rate (GET /healthz, wrk the same way), and the ceiling it puts
   on API / raw: were a signature request to cost the no-op's request plus the token's
   signature and nothing else, API / raw would be no-op / (no-op + raw);
4. the ratios API / raw (aim: at least 70%) and the server's CPU per signature.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from support import (
    API_VERSION,
    BenchError,
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

from openkeyvault.keystore.softhsm import CONF_ENV, ensure_token

DIGEST = "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg"  # SHA-256 of "test"
AIM = 0.70

# One process's raw loop: its own key in the token, signs for `seconds`, prints the count.
_RAW = r"""
import hashlib, sys, time
import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11.util.ec import encode_named_curve_parameters
module, label, pin, kind, seconds = sys.argv[1:6]
session = pkcs11.lib(module).get_token(token_label=label).open(user_pin=pin, rw=True)
digest = hashlib.sha256(b"test").digest()
if kind == "RS256":
    _, key = session.generate_keypair(KeyType.RSA, 2048)
    data = bytes.fromhex("3031300d060960864801650304020105000420") + digest
    mechanism = Mechanism.RSA_PKCS
else:
    params = session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
        local=True)
    _, key = params.generate_keypair()
    data, mechanism = digest, Mechanism.ECDSA
for _ in range(20):
    key.sign(data, mechanism=mechanism)
count, end = 0, time.monotonic() + float(seconds)
while time.monotonic() < end:
    key.sign(data, mechanism=mechanism)
    count += 1
print(count / float(seconds))
"""


def raw_rate(work: Path, alg: str, processes: int, seconds: float) -> float:
    """Signatures per second of `processes` processes signing in SoftHSM2 at once."""
    token = ensure_token(work, "okv-bench-raw")
    env = {**os.environ, CONF_ENV: str(token.conf)}
    procs = [subprocess.Popen([sys.executable, "-c", _RAW, token.module, token.label,
                               token.pin(), alg, str(seconds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(processes)]
    total = 0.0
    for p in procs:
        out, err = p.communicate(timeout=seconds + 120)
        if p.returncode != 0:
            raise BenchError(f"the raw {alg} loop failed: {err.strip()[-300:]}")
        total += float(out)
    return total


def measure(args: argparse.Namespace) -> int:
    wrk = find_or_install_wrk()
    warn_if_busy()
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="okv-bench-hsm-") as tmp:
        raw = {alg: raw_rate(Path(tmp), alg, cpus, args.duration)
               for alg in ("RS256", "ES256")}
    with dev_server(args.workers, prefix="okv-bench-hsm-") as server:
        server.start()
        vault = "benchpremium"
        server.okv("vault", "create", vault, "--sku", "premium", "--output", "json")
        host = {"Host": f"{vault}.vault.localhost:{server.port}"}
        auth = {**bearer(server.token()), **host}
        q = f"?api-version={API_VERSION}"
        results = {}
        for alg, body in (("RS256", {"kty": "RSA-HSM", "key_size": 2048}),
                          ("ES256", {"kty": "EC-HSM", "crv": "P-256"})):
            _, made = server.request("POST", f"/keys/bench-{alg}/create{q}", body,
                                     headers=auth)
            if made["key"]["kty"] != body["kty"]:
                raise BenchError(f"the key was made as {made['key']['kty']}")
            version = made["key"]["kid"].rsplit("/", 1)[1]
            path = f"/keys/bench-{alg}/{version}/sign{q}"
            sign = {"alg": alg, "value": DIGEST}
            if "value" not in server.request("POST", path, sign, headers=auth)[1]:
                raise BenchError(f"{alg} answered without a signature")
            script = body_script(server.work_dir, alg, "POST", json.dumps(sign))
            url = f"https://127.0.0.1:{server.port}{path}"
            for label, seconds in ((f"{alg} warm-up", args.warmup), (alg, args.duration)):
                if seconds > 0:
                    results[alg] = run_wrk(wrk, label, url, threads=args.threads,
                                           connections=args.connections, duration=seconds,
                                           server_pgid=server.pgid, headers=auth,
                                           extra_args=["-s", str(script)])
            server.check_alive()
        noop_url = f"https://127.0.0.1:{server.port}/healthz"
        for label, seconds in (("no-op warm-up", args.warmup), ("no-op", args.duration)):
            if seconds > 0:
                noop = run_wrk(wrk, label, noop_url, threads=args.threads,
                               connections=args.connections, duration=seconds,
                               server_pgid=server.pgid)
        server.check_alive()
    print(f"\nHSM sign benchmark: SoftHSM2, {cpus} CPUs, raw: {cpus} processes; API: "
          f"{args.workers} worker(s), wrk -t{args.threads} -c{args.connections}, "
          f"{args.duration:.0f}s per run, HTTPS keep-alive, loopback")
    print(f"  {'':<14} {'raw sign/s':>11} {'API req/s':>10} {'API / raw':>10} "
          f"{'ceiling':>8} {'server CPU us/req':>18} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'non-2xx':>8}")
    for alg, label in (("RS256", "RSA-2048"), ("ES256", "P-256")):
        r = results[alg]
        ceiling = noop.rps / (noop.rps + raw[alg])
        print(f"  {label + ' ' + alg:<14} {raw[alg]:>11,.0f} {r.rps:>10,.0f} "
              f"{r.rps / raw[alg]:>10.1%} {ceiling:>8.1%} "
              f"{r.server_cpu_s / max(1, r.requests) * 1e6:>18.0f} "
              f"{r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.non_2xx + r.socket_errors:>8}")
    print(f"  no-op GET /healthz: {noop.rps:,.0f} req/s, server CPU "
          f"{noop.server_cpu_s / max(1, noop.requests) * 1e6:.0f} us/req")
    print(f"  aim: API at least {AIM:.0%} of the raw rate; ceiling: no-op / (no-op + raw), "
          "what API / raw would be if a signature request cost only the no-op's request "
          "and the token's signature")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_options(ap)
    ap.set_defaults(duration=8.0, workers=os.cpu_count() or 1)
    args = ap.parse_args()
    check_load_options(ap, args)
    return guarded(lambda: measure(args))


if __name__ == "__main__":
    sys.exit(main())
