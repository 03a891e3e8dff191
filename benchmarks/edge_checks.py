"""What the edge checks add to a request: the JSON depth bound, the duplicate-Host check and
the escaping of access-log lines, each against a reference measured in the same run.

    .venv/bin/python benchmarks/edge_checks.py [--repeat 7]

In-process micro-benchmarks (no server, no network): best of `--repeat` timings of a loop,
so that other load on the machine inflates them as little as possible. Ratios are what to
read; nanoseconds depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import time
import timeit
from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from openkeyvault.api.app import _scan
from openkeyvault.api.exchange import Exchange
from openkeyvault.api.http import _BLANK, _MAY_HOLD_SURROGATE, parse_json_object
from openkeyvault.api.jsondepth import nesting, too_deep
from openkeyvault.ops.logs import AccessLog

SECRET_PUT = json.dumps({"value": "s" * 32, "contentType": "text/plain",
                         "attributes": {"enabled": True}, "tags": {"env": "dev"}}).encode()
JSON_SECRET = json.dumps({"value": json.dumps({"a": [[1, 2]] * 40})}).encode()  # > 64 brackets
WIDE = b"[" + b"[]," * 80_000 + b"[]]"
HEADERS = [(b"host", b"dev.vault.localhost:8443"), (b"user-agent", b"azsdk-python-keyvault/4.9"),
           (b"accept", b"application/json"), (b"accept-encoding", b"gzip, deflate"),
           (b"connection", b"keep-alive"), (b"x-ms-client-request-id", b"0" * 36),
           (b"authorization", b"Bearer " + b"t" * 900), (b"content-length", b"0")]
PATH = "/secrets/bench-secret/"
FORGED_PATH = "/secrets/x\r\n1999-01-01 00:00:00,000 INFO forged\x1b[2J"


def pair(fn: Callable[[], Any], ref: Callable[[], Any], repeat: int,
         number: int) -> tuple[float, float]:
    """Seconds per call of `fn` and of `ref`, each the best of `repeat` runs of `number`
    calls, the runs of the two interleaved so that a burst of other load hits both."""
    a, b = [], []
    for _ in range(repeat):
        a.append(timeit.timeit(fn, number=number))
        b.append(timeit.timeit(ref, number=number))
    return min(a) / number, min(b) / number


class _Sink:
    """A stream that keeps nothing: the cost measured is the formatting, not the buffer."""

    def write(self, text: str) -> int:
        return len(text)


class UnescapedAccessLog(AccessLog):
    """The access log as it was before its fields were escaped (the reference)."""

    def write(self, request_id: str, method: str, path: str, status: int, ms: float) -> None:
        if not self.enabled:
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        millis = int((now - second) * 1000)
        self._stream.write(
            f"{self._stamp},{millis:03d} INFO openkeyvault.request rid={request_id} {method} "
            f"{path} {status} {ms:.1f}ms\n"
        )


def unbounded_parse(raw: bytes) -> dict[str, Any]:
    """parse_json_object without the depth bound (the reference)."""
    if _BLANK.fullmatch(raw):
        raise ValueError("empty")
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("not an object")
    if _MAY_HOLD_SURROGATE.search(raw):
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    r = args.repeat
    rows: list[tuple[str, float, str, float]] = []

    def row(name: str, fn: Callable[[], Any], ref_name: str, ref: Callable[[], Any],
            number: int) -> None:
        t, t_ref = pair(fn, ref, r, number)
        rows.append((name, t, ref_name, t_ref))

    # JSON depth: the pre-scan against json.loads of the same body, and the whole parse
    # against the same parse without the bound.
    row("too_deep(secret PUT body)", lambda: too_deep(SECRET_PUT),
        "json.loads(same)", lambda: json.loads(SECRET_PUT), 200_000)
    row("parse_json_object(secret PUT)", lambda: parse_json_object(SECRET_PUT),
        "same without the depth bound", lambda: unbounded_parse(SECRET_PUT), 100_000)
    row("too_deep(JSON-valued secret, scanned)", lambda: too_deep(JSON_SECRET),
        "json.loads(same)", lambda: json.loads(JSON_SECRET), 20_000)
    row("nesting(240 KB wide array)", lambda: nesting(WIDE),
        "json.loads(same)", lambda: json.loads(WIDE), 20)

    # Two Host headers: the one scan of the raw header list (which also finds the Host and
    # Authorization headers and what the Outcome reports), against a Starlette Host lookup.
    scope = {"type": "http", "headers": HEADERS}
    exchange = Exchange(0.0, 0.0)
    row("_scan(8 headers)", lambda: _scan(HEADERS, exchange),
        "Request(scope).headers.get('host')", lambda: Request(scope).headers.get("host"),
        500_000)

    # Access log: the escaped line against the unescaped one.
    rid = "5c04af2d-22c2-42b7-bcb3-000000000001"
    escaped = AccessLog(_Sink())
    unescaped = UnescapedAccessLog(_Sink())
    escaped.enabled = unescaped.enabled = True
    for label, path in (("clean path", PATH), ("forged path", FORGED_PATH)):
        row(f"AccessLog.write({label})",
            lambda p=path: escaped.write(rid, "GET", p, 200, 0.31),  # type: ignore[misc]
            "same line unescaped",
            lambda p=path: unescaped.write(rid, "GET", p, 200, 0.31),  # type: ignore[misc]
            200_000)

    print(f"{'measured':40s} {'ns':>9s}   {'reference':36s} {'ns':>9s}  ratio")
    for name, t, ref_name, ref in rows:
        print(f"{name:40s} {t * 1e9:9.0f}   {ref_name:36s} {ref * 1e9:9.0f}  {t / ref:5.2f}")


if __name__ == "__main__":
    main()
