"""A managed HSM pool's AES-GCM encryption through the API against the token's own rate,
both with every core in use.

    .venv/bin/python benchmarks/hsm_aes.py [--duration 8] [--workers N] [--connections 32]

In one run, on 127.0.0.1:

1. the raw rate: one process per CPU, each loading SoftHSM2's PKCS#11 module itself
   (python-pkcs11, no okv code), logging in to a token made for the run, generating its
   own AES-256 key and encrypting 1 KiB in a loop for the duration with CKM_AES_GCM (a
   12-byte iv from C_GenerateRandom per encryption, as the keystore does; a 16-byte tag);
   the sum of their rates;
2. `okv server --dev` (one worker per CPU unless --workers), a managed HSM pool made
   through the management API (the dev identity its administrator, and Managed HSM Crypto
   User at its `/`), an oct-HSM 256 key made in the server's SoftHSM2 token, and wrk
   (HTTPS keep-alive, the pool's Host header) on POST /keys/NAME/VERSION/encrypt with
   A256GCM and a 1 KiB value;
3. the same server's no-op rate (GET /healthz, wrk the same way), and the ceiling it puts
   on API / raw: were an encryption request to cost the no-op's request plus the token's
   encryption and nothing else, API / raw would be no-op / (no-op + raw);
4. the ratio API / raw and the server's CPU per encryption.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import select
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from support import (
    API_VERSION,
    BenchError,
    Server,
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

from openkeyvault.keystore.softhsm import CONF_ENV, SoftHsmError, ensure_token

PLAINTEXT_BYTES = 1024
READY_TIMEOUT = 60.0  # for a raw process to log in and make its key
MANAGEMENT = "https://management.azure.com/"
MANAGEMENT_API_VERSION = "2023-07-01"
CRYPTO_USER = ("Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"
               "21dbd100-6940-42c2-9190-5d6cb909625b")  # Managed HSM Crypto User

# One process's raw loop: its own AES-256 key, a token object as the keystore makes it;
# says "ready", waits for a line on stdin, encrypts for `seconds`, prints the count per
# second. SoftHSM2 keeps token objects in files that a process making a key rewrites, and a
# process that opens the token or reads an object meanwhile can find no token or fail: the
# processes make their keys one after the other and start encrypting together.
_RAW = r"""
import sys, time
import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11.mechanisms import GCMParams
module, label, pin, size, seconds = sys.argv[1:6]
session = pkcs11.lib(module).get_token(token_label=label).open(user_pin=pin, rw=True)
key = session.generate_key(KeyType.AES, 256, store=True, template={
    Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
plaintext = bytes(int(size))

def encrypt():
    iv = session.generate_random(96)
    out = key.encrypt(plaintext, mechanism=Mechanism.AES_GCM,
                      mechanism_param=GCMParams(iv, None, 128))
    assert len(iv) == 12 and len(out) == len(plaintext) + 16

print("ready", flush=True)
sys.stdin.readline()
for _ in range(20):
    encrypt()
count, end = 0, time.monotonic() + float(seconds)
while time.monotonic() < end:
    encrypt()
    count += 1
print(count / float(seconds))
"""


def raw_rate(work: Path, processes: int, seconds: float) -> float:
    """AES-GCM encryptions of PLAINTEXT_BYTES per second of `processes` processes
    encrypting in SoftHSM2 at once."""
    try:
        token = ensure_token(work, "okv-bench-raw")
    except SoftHsmError as exc:
        raise BenchError(str(exc)) from None
    env = {**os.environ, CONF_ENV: str(token.conf)}
    procs: list[subprocess.Popen[str]] = []
    try:
        for _ in range(processes):  # one at a time until its key is made
            p = subprocess.Popen([sys.executable, "-c", _RAW, token.module, token.label,
                                  token.pin(), str(PLAINTEXT_BYTES), str(seconds)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
            procs.append(p)
            assert p.stdout is not None
            if not select.select([p.stdout], [], [], READY_TIMEOUT)[0]:
                raise BenchError(f"a raw AES-GCM process made no key in {READY_TIMEOUT:.0f}s")
            if p.stdout.readline().strip() != "ready":  # EOF when it failed
                _, err = p.communicate(timeout=60)
                raise BenchError(f"the raw AES-GCM loop failed: {err.strip()[-300:]}")
        total = 0.0
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            out, err = p.communicate(timeout=seconds + 120)
            if p.returncode != 0:
                raise BenchError(f"the raw AES-GCM loop failed: {err.strip()[-300:]}")
            total += float(out)
        return total
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)


def token_for(server: Server, resource: str) -> str:
    """An access token of the dev identity for `resource`, from /msi/token."""
    _, body = server.request(
        "GET", f"/msi/token?api-version=2019-08-01&resource={resource}",
        headers=server.identity())
    return str(body["access_token"])


def make_pool(server: Server) -> str:
    """A managed HSM pool made through the management API, the dev identity its
    administrator and Managed HSM Crypto User at its `/`, activated; its name."""
    token = token_for(server, MANAGEMENT)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    name = f"bench{uuid.uuid4().hex[:12]}"
    server.request(
        "PUT", f"/subscriptions/{uuid.uuid4()}/resourceGroups/rg1/providers/"
               f"Microsoft.KeyVault/managedHSMs/{name}?api-version={MANAGEMENT_API_VERSION}",
        {"location": "westeurope", "sku": {"family": "B", "name": "Standard_B1"},
         "properties": {"tenantId": claims["tid"], "initialAdminObjectIds": [claims["oid"]]}},
        headers={**bearer(token), "Host": f"localhost:{server.port}"}, timeout=60)
    server.request(
        "PUT", f"/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}"
               f"?api-version={API_VERSION}",
        {"properties": {"scope": "/", "roleDefinitionId": CRYPTO_USER,
                        "principalId": claims["oid"]}},
        headers=pool_headers(server, name))
    # A new pool refuses key operations until its security domain is downloaded.
    server.request("POST", f"/securitydomain/download?api-version={API_VERSION}",
                   {"certificates": [wrapping_jwk() for _ in range(3)], "required": 2},
                   headers=pool_headers(server, name))
    return name


def wrapping_jwk() -> dict[str, object]:
    """A security domain wrapping key: a new self-signed RSA-2048 certificate, as x5c."""
    key = rsa.generate_private_key(65537, 2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench security domain")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    return {"kty": "RSA", "x5c": [base64.b64encode(der).decode()]}


def pool_headers(server: Server, pool: str) -> dict[str, str]:
    """The pool's Host header and a bearer token of the dev identity for managed HSM."""
    return {**bearer(token_for(server, f"https://managedhsm.localhost:{server.port}")),
            "Host": f"{pool}.managedhsm.localhost:{server.port}"}


def measure(args: argparse.Namespace) -> int:
    wrk = find_or_install_wrk()
    warn_if_busy()
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="okv-bench-hsm-aes-") as tmp:
        raw = raw_rate(Path(tmp), cpus, args.duration)
    with dev_server(args.workers, prefix="okv-bench-hsm-aes-") as server:
        server.start()
        pool = make_pool(server)
        auth = pool_headers(server, pool)
        q = f"?api-version={API_VERSION}"
        _, made = server.request("POST", f"/keys/bench-aes/create{q}",
                                 {"kty": "oct-HSM", "key_size": 256}, headers=auth)
        if made["key"]["kty"] != "oct-HSM":
            raise BenchError(f"the key was made as {made['key']['kty']}")
        version = made["key"]["kid"].rsplit("/", 1)[1]
        path = f"/keys/bench-aes/{version}/encrypt{q}"
        value = base64.urlsafe_b64encode(os.urandom(PLAINTEXT_BYTES)).rstrip(b"=").decode()
        encrypt = {"alg": "A256GCM", "value": value}
        status, out = server.request("POST", path, encrypt, headers=auth)
        if status != 200 or not {"value", "iv", "tag"} <= set(out):
            raise BenchError(f"A256GCM encrypt answered {status} with {sorted(out)}")
        script = body_script(server.work_dir, "a256gcm", "POST", json.dumps(encrypt))
        url = f"https://127.0.0.1:{server.port}{path}"
        for label, seconds in (("A256GCM warm-up", args.warmup), ("A256GCM", args.duration)):
            if seconds > 0:
                api = run_wrk(wrk, label, url, threads=args.threads,
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
    print(f"\nHSM AES benchmark: SoftHSM2, {cpus} CPUs, raw: {cpus} processes; API: "
          f"managed HSM pool, {args.workers} worker(s), wrk -t{args.threads} "
          f"-c{args.connections}, {args.duration:.0f}s per run, HTTPS keep-alive, loopback")
    print(f"  {'':<22} {'raw encrypt/s':>13} {'API req/s':>10} {'API / raw':>10} "
          f"{'ceiling':>8} {'server CPU us/req':>18} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'non-2xx':>8}")
    ceiling = noop.rps / (noop.rps + raw)
    print(f"  {'oct-HSM A256GCM 1 KiB':<22} {raw:>13,.0f} {api.rps:>10,.0f} "
          f"{api.rps / raw:>10.1%} {ceiling:>8.1%} "
          f"{api.server_cpu_s / max(1, api.requests) * 1e6:>18.0f} "
          f"{api.p50_ms:>7.2f} {api.p99_ms:>7.2f} {api.non_2xx + api.socket_errors:>8}")
    print(f"  no-op GET /healthz: {noop.rps:,.0f} req/s, server CPU "
          f"{noop.server_cpu_s / max(1, noop.requests) * 1e6:.0f} us/req")
    print("  ceiling: no-op / (no-op + raw), what API / raw would be if an encryption "
          "request cost only the no-op's request and the token's encryption")
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
