"""What one audit record costs on a request's path, next to the bare minimum any JSON-lines
log pays.

Usage: python benchmarks/audit_observe.py [--records N] [--rounds R]

In this process, on a real file in a temporary directory (no database: the table's batch
is written by the flusher thread, off the request's path):

  (a) AuditTrail.observe(outcome): the AuditEvent record built, canonical JSON, the
      HMAC-SHA256 chain value, one pwrite into reserved space, under the stream's lock;
  (b) the reference: json.dumps of the same record and one os.write to an O_APPEND file,
      what the plainest JSON-lines logger does.

Prints microseconds per record of each (best of R rounds of N records) and their ratio.
Bounded: N records x R rounds, nothing on the network.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from openkeyvault.ops.audit import AuditTrail, audit_key, to_record  # noqa: E402
from openkeyvault.ops.auditsink import StreamFile  # noqa: E402
from openkeyvault.ops.outcome import CallerClaims, Outcome  # noqa: E402

OUTCOME = Outcome(
    "SecretGet", "vault", "payments", "/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/PROVIDERS/"
    "MICROSOFT.KEYVAULT/VAULTS/PAYMENTS", "https://payments.vault.localhost:8443/secrets/db/"
    "0123456789abcdef0123456789abcdef", "7.5", 200, time.time(), 1.7, "127.0.0.1",
    "0b8e4c1e-aaaa-4000-8000-000000000001", "c70d73e2-5fa1-45e7-9dd0-000000000007",
    "/secrets/db/?api-version=7.5", "azsdk-python-keyvault-secrets/4.8.0 Python/3.11.7",
    CallerClaims("3f2b1c9e-0000-4000-8000-0000000000aa", "72f988bf-0000-4000-8000-0000000000bb",
                 "04b07795-0000-4000-8000-0000000000cc", None),
    True, None, "secrets", "operations")


def trail_rate(directory: Path, records: int) -> float:
    f = StreamFile(directory / f"s-{time.monotonic_ns()}.jsonl")
    f.open()
    trail = AuditTrail(f, f.path.stem, audit_key(os.urandom(32)), fail_closed=True,
                       flush_seconds=3600)
    start = time.perf_counter()
    for _ in range(records):
        trail.observe(OUTCOME)
    elapsed = time.perf_counter() - start
    trail.close()
    return elapsed / records * 1e6


def reference_rate(directory: Path, records: int) -> float:
    fd = os.open(directory / f"r-{time.monotonic_ns()}.jsonl",
                 os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        start = time.perf_counter()
        for _ in range(records):
            os.write(fd, json.dumps(to_record(OUTCOME)).encode() + b"\n")
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    return elapsed / records * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        trail = min(trail_rate(directory, args.records) for _ in range(args.rounds))
        ref = min(reference_rate(directory, args.records) for _ in range(args.rounds))
    print(f"audit observe: {trail:.1f} us/record ({1e6 / trail:,.0f}/s on one core)")
    print(f"reference (json.dumps + O_APPEND write): {ref:.1f} us/record")
    print(f"ratio audit / reference: x{trail / ref:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
