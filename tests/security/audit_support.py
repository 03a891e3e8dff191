"""Outcomes and trails for the audit tests (real files, real databases)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from openkeyvault.ops.audit import AuditTrail, audit_key
from openkeyvault.ops.auditsink import StreamFile, read_lines
from openkeyvault.ops.outcome import CallerClaims, Outcome
from openkeyvault.storage.audit import AuditStore

OID = "3f2b1c9e-0000-4000-8000-0000000000aa"
TENANT = "72f988bf-0000-4000-8000-0000000000bb"
APP = "04b07795-0000-4000-8000-0000000000cc"
UPN = "alice@contoso.example"
ALICE = CallerClaims(OID, TENANT, APP, UPN)
BOB = CallerClaims("9d0c7a11-0000-4000-8000-0000000000dd", TENANT, None, None)
RESOURCE = ("/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/RG/"
            "PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/{}")
T0 = 1_796_000_000.0  # 2026-11-30T...


def outcome(**given: Any) -> Outcome:
    vault = given.pop("vault", "alpha")
    base = Outcome(
        operation="SecretGet", resource_kind="vault", resource_name=vault,
        resource_id=RESOURCE.format(vault.upper()),
        object_id=f"https://{vault}.vault.localhost:8443/secrets/s1/abc",
        api_version="7.5", status=200, time=T0, duration_ms=3.4, client_ip="10.1.2.3",
        correlation_id="d2b5a6a8-1111-4000-8000-000000000001", request_id="r-1",
        request_uri=f"https://{vault}.vault.localhost:8443/secrets/s1/abc?api-version=7.5",
        user_agent="azsdk-python-keyvault-secrets/4.8", caller=ALICE, rbac_authorized=True,
        access_policy_match=None, throttle_class="secrets", meter="operations")
    return dataclasses.replace(base, **given)


def new_trail(directory: Path, stream: str = "s-1", *, key: bytes | None = None,
              fail_closed: bool = True, store: AuditStore | None = None,
              table: bool = False, chunk: int = 1 << 20,
              rotate_bytes: int | None = None) -> AuditTrail:
    f = StreamFile(directory / f"{stream}.jsonl", chunk=chunk)
    f.open()
    return AuditTrail(f, stream, key or audit_key(b"\x07" * 32), fail_closed=fail_closed,
                      store=store, table=table, flush_seconds=3600,
                      next_file=None if rotate_bytes is None else
                      lambda s: StreamFile(directory / f"{s}.jsonl", chunk=chunk),
                      rotate_bytes=rotate_bytes or 0)


def lines(path: Path) -> list[bytes]:
    return read_lines(path)


def write_lines(path: Path, content: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in content))


def rlimit_child(limit: int) -> Any:
    """A preexec_fn: files of the child may not grow past `limit` bytes (a full disk
    without a mount; Python ignores SIGXFSZ, so the write fails with EFBIG)."""
    import resource

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def without_dac_override() -> Any:
    """A preexec_fn after which even root obeys file permissions: CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH leave the bounding set, so the exec'd child never has them."""
    def apply() -> None:
        if os.geteuid() != 0:
            return
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "cannot drop the capability")
    return apply
