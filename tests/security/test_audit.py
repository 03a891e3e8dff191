"""The audit trail at the library level: the record, the chain and `okv audit verify`
catching each kind of tampering where it happened, the filters of `okv audit query`, and
the batches and checkpoints in a real SQLite and PostgreSQL database."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, text

from openkeyvault.ops import auditread
from openkeyvault.ops.audit import (
    CLAIM_APPID,
    CLAIM_OID,
    CLAIM_TID,
    CLAIM_UPN,
    ChainKey,
    audit_key,
    canonical,
    encode_record,
    fail_closed,
    link,
    to_record,
)
from openkeyvault.storage.audit import AuditFilter, AuditStore
from openkeyvault.storage.db import Engines, open_database
from tests.security.audit_support import (
    ALICE,
    BOB,
    OID,
    RESOURCE,
    T0,
    TENANT,
    UPN,
    lines,
    new_trail,
    outcome,
    write_lines,
)

KEY = audit_key(b"\x07" * 32)
N = 10


# ---- the record -----------------------------------------------------------------------------
def test_record_has_azure_fields_and_nothing_else() -> None:
    o = outcome(status=403, rbac_authorized=False, operation="SecretSet", duration_ms=12.6)
    assert to_record(o) == {
        "time": "2026-11-30T00:53:20.000000Z",
        "resourceId": RESOURCE.format("ALPHA"),
        "operationName": "SecretSet",
        "operationVersion": "7.5",
        "category": "AuditEvent",
        "resultType": "Failure",
        "resultSignature": "Forbidden",
        "resultDescription": "",
        "durationMs": "13",
        "callerIpAddress": "10.1.2.3",
        "correlationId": "d2b5a6a8-1111-4000-8000-000000000001",
        "identity": {"claim": {CLAIM_OID: OID, CLAIM_TID: TENANT, CLAIM_UPN: UPN,
                               CLAIM_APPID: ALICE.app_id}},
        "properties": {
            "id": "https://alpha.vault.localhost:8443/secrets/s1/abc",
            "requestUri": "https://alpha.vault.localhost:8443/secrets/s1/abc?api-version=7.5",
            "httpStatusCode": 403,
            "clientInfo": "azsdk-python-keyvault-secrets/4.8",
            "isAccessPolicyMatch": None,
            "isRbacAuthorized": False,
            "requestId": "r-1",
        },
    }


@pytest.mark.parametrize(("status", "signature", "result"), [
    (200, "OK", "Success"), (204, "NoContent", "Success"), (401, "Unauthorized", "Failure"),
    (404, "NotFound", "Failure"), (429, "TooManyRequests", "Failure"),
    (503, "ServiceUnavailable", "Failure")])
def test_result_signature_is_the_status_name(status: int, signature: str, result: str
                                             ) -> None:
    r = to_record(outcome(status=status))
    assert (r["resultSignature"], r["resultType"]) == (signature, result)


def test_unknown_query_values_are_not_recorded() -> None:
    uri = "/secrets?api-version=7.5&maxresults=5&client_secret=hunter2&flag&X=1"
    r = to_record(outcome(request_uri=uri))
    assert r["properties"]["requestUri"] == \
        "/secrets?api-version=7.5&maxresults=5&client_secret=REDACTED&flag&X=REDACTED"


def test_anonymous_caller_has_no_claims() -> None:
    r = to_record(outcome(caller=None, status=401, operation="Authentication",
                          resource_id=None, correlation_id=None, user_agent=None))
    assert r["identity"] == {"claim": {}}
    assert (r["resourceId"], r["correlationId"], r["properties"]["clientInfo"]) == ("", "", "")


def test_line_carries_stream_sequence_and_chain(tmp_path: Path) -> None:
    trail = new_trail(tmp_path)
    trail.observe(outcome())
    trail.observe(outcome(status=404))
    trail.close()
    first, second = (json.loads(x) for x in lines(tmp_path / "s-1.jsonl"))
    assert (first["stream"], first["sequence"], second["sequence"]) == ("s-1", 1, 2)
    body = canonical({k: v for k, v in second.items() if k != "chain"})
    assert link(KEY, bytes.fromhex(first["chain"]), body).hex() == second["chain"]
    # Closed: the reserved tail is cut off, the file ends with the last line.
    assert (tmp_path / "s-1.jsonl").read_bytes().endswith(b"}\n")


def test_answered_requests_that_are_no_operation_are_not_recorded(tmp_path: Path) -> None:
    """Health checks, the CA's certificate and metrics scrapes are not audited when they
    succeed; a failed request without an operation is (a 404 path, a 401 before routing),
    and so is a refused scrape."""
    trail = new_trail(tmp_path)
    trail.observe(outcome(operation="", status=200, request_uri="/healthz"))
    trail.observe(outcome(operation="HealthGet", status=200, request_uri="/healthz"))
    trail.observe(outcome(operation="IssuingCaGet", status=200, request_uri="/ca.pem"))
    trail.observe(outcome(operation="MetricsGet", status=200, request_uri="/metrics"))
    trail.observe(outcome(operation="", status=404, request_uri="/nothing-here"))
    trail.observe(outcome(operation="MetricsGet", status=401, request_uri="/metrics"))
    trail.close()
    first, second = (json.loads(x) for x in lines(tmp_path / "s-1.jsonl"))
    assert (first["properties"]["requestUri"], first["sequence"]) == ("/nothing-here", 1)
    assert (second["operationName"], second["resultSignature"]) == ("MetricsGet",
                                                                    "Unauthorized")


@pytest.mark.parametrize("size", [0, 1, 32, 64, 65, 200])
def test_the_chain_key_is_hmac_sha256(size: int) -> None:
    """The request path's chain value (pads hashed once) is HMAC-SHA256, as verify and
    any other HMAC implementation compute it, for keys of every length."""
    import hashlib
    import hmac
    import os

    key = os.urandom(size)
    for previous, body in ((b"", b""), (os.urandom(32), os.urandom(1000))):
        assert ChainKey(key).link(previous, body) == \
            hmac.new(key, previous + body, hashlib.sha256).digest() == \
            link(key, previous, body)


# Values a record's strings can hold: what JSON must escape, what it must not, UTF-8 of
# every width, and a lone surrogate (no UTF-8 for it; written as `?` by both).
AWKWARD = ["", "plain", 'quote " and \\ backslash', "tab\t nl\n cr\r \x00 \x1f \x7f",
           "é ß 中文 😀 \u2028 \u2029", "lone \ud800 surrogate", "x" * 600]


@pytest.mark.parametrize("value", AWKWARD)
def test_the_written_record_is_the_canonical_record(value: str) -> None:
    """`encode_record` (the template the server writes) and `canonical(to_record(...))`
    (what verify recomputes) agree byte for byte, whatever the values."""
    from openkeyvault.ops.outcome import CallerClaims

    cases = [
        outcome(),
        outcome(caller=None, rbac_authorized=None, correlation_id=None, user_agent=None,
                api_version=None, resource_id=None, object_id=None, operation=""),
        outcome(caller=BOB, status=403, rbac_authorized=False, access_policy_match=True),
        outcome(status=599, duration_ms=2.5),  # an unnamed status; rounds half to even
        outcome(duration_ms=-1.0, time=T0 + 0.999999),
        outcome(user_agent=value, correlation_id=value, client_ip=value, request_id=value,
                object_id=value, resource_id=value, api_version=value, operation=value,
                request_uri=f"/secrets/{value}?api-version={value}&sig={value}",
                caller=CallerClaims(value or "o", value, value or None, value or None)),
    ]
    for i, o in enumerate(cases):
        for stream, seq in (("s-1", 1), ("20261206T000000-host-1-abcd", 123456789)):
            written = encode_record(o, stream, seq)
            reference = canonical({**to_record(o), "stream": stream, "sequence": seq})
            assert written == reference, (i, written, reference)
            json.loads(written)  # and it is JSON


def test_fail_closed_defaults(tmp_path: Path) -> None:
    from openkeyvault.config import Settings

    assert fail_closed(Settings(data_dir=tmp_path, dev=False)) is True
    assert fail_closed(Settings(data_dir=tmp_path, dev=True)) is False
    assert fail_closed(Settings(data_dir=tmp_path, dev=True, audit_fail_closed=True)) is True
    assert fail_closed(Settings(data_dir=tmp_path, dev=False, audit_fail_closed=False)) \
        is False


# ---- verify ---------------------------------------------------------------------------------
@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Engines]:
    engines = open_database(tmp_path / "okv.db")
    yield engines
    engines.dispose()


@pytest.fixture
def logged(tmp_path: Path, sqlite: Engines) -> Path:
    """N records in stream s-1 under tmp_path/audit, its checkpoint in SQLite."""
    directory = tmp_path / "audit"
    trail = new_trail(directory, store=AuditStore(sqlite))
    for i in range(N):
        trail.observe(outcome(request_id=f"r-{i + 1}", time=T0 + i))
    trail.close()
    return directory / "s-1.jsonl"


def _verify(path: Path, sqlite: Engines | None, key: bytes = KEY) -> auditread.Report:
    checkpoints = AuditStore(sqlite).checkpoints() if sqlite is not None else None
    return auditread.verify(path.parent, key, checkpoints)


def _found(report: auditread.Report) -> list[tuple[int | None, int | None, str]]:
    return [(p.line, p.sequence, p.what.split(":")[0]) for p in report.problems]


def test_clean_log_verifies(logged: Path, sqlite: Engines) -> None:
    report = _verify(logged, sqlite)
    assert report.ok, report.problems
    assert (report.files, report.records, report.notes) == (1, N, [])
    cp = AuditStore(sqlite).checkpoints()["s-1"]
    assert (cp.seq, cp.chain) == (N, json.loads(lines(logged)[-1])["chain"])


def test_edited_record(logged: Path, sqlite: Engines) -> None:
    content = lines(logged)
    content[3] = content[3].replace(b'"SecretGet"', b'"SecretSet"')
    write_lines(logged, content)
    report = _verify(logged, sqlite)
    assert _found(report) == [(4, 4, "edited")]
    assert str(report.problems[0]).startswith(f"{logged}, line 4, sequence 4: edited")


def test_record_with_its_chain_recomputed_without_the_key(logged: Path, sqlite: Engines
                                                          ) -> None:
    """A forger who knows the format but not the key: SHA-256 instead of the HMAC."""
    import hashlib

    content = lines(logged)
    rec = json.loads(content[5])
    rec["callerIpAddress"] = "192.0.2.66"
    prev = bytes.fromhex(json.loads(content[4])["chain"])
    body = canonical({k: v for k, v in rec.items() if k != "chain"})
    rec["chain"] = hashlib.sha256(prev + body).hexdigest()
    content[5] = json.dumps(rec).encode()
    write_lines(logged, content)
    assert _found(_verify(logged, sqlite))[0] == (6, 6, "edited")


def test_inserted_record(logged: Path, sqlite: Engines) -> None:
    content = lines(logged)
    forged = json.loads(content[4])
    forged["operationName"] = "SecretDelete"
    content.insert(4, json.dumps(forged).encode())
    write_lines(logged, content)
    assert _found(_verify(logged, sqlite)) == [(5, 5, "inserted")]


def test_copied_record(logged: Path, sqlite: Engines) -> None:
    content = lines(logged)
    content.insert(6, content[2])
    write_lines(logged, content)
    assert _found(_verify(logged, sqlite)) == [(7, 3, "duplicate")]


def test_deleted_record(logged: Path, sqlite: Engines) -> None:
    content = lines(logged)
    del content[5]
    write_lines(logged, content)
    report = _verify(logged, sqlite)
    assert _found(report) == [(6, 7, "deleted")]
    assert "sequence 6 missing" in report.problems[0].what


def test_reordered_records(logged: Path, sqlite: Engines) -> None:
    content = lines(logged)
    content[2], content[3] = content[3], content[2]
    write_lines(logged, content)
    assert _found(_verify(logged, sqlite)) == [(3, 4, "reordered"), (4, 3, "reordered")]


def test_truncated_tail(logged: Path, sqlite: Engines) -> None:
    write_lines(logged, lines(logged)[:7])
    report = _verify(logged, sqlite)
    assert _found(report) == [(8, 8, "truncated")]
    assert f"checkpoint records sequence {N}" in report.problems[0].what


def test_truncated_tail_is_invisible_without_checkpoints(logged: Path) -> None:
    """What the checkpoint is for: the chain alone cannot tell a cut tail."""
    write_lines(logged, lines(logged)[:7])
    report = _verify(logged, None)
    assert report.ok and report.notes


def test_deleted_stream_file(logged: Path, sqlite: Engines) -> None:
    logged.unlink()
    report = _verify(logged, sqlite)
    assert [(p.file, p.what.split(":")[0]) for p in report.problems] == \
        [(str(logged), "deleted")]


def test_checkpoint_moved_back(logged: Path, sqlite: Engines) -> None:
    """Cutting the tail and lowering the checkpoint to match: its signature breaks."""
    write_lines(logged, lines(logged)[:7])
    chain = json.loads(lines(logged)[-1])["chain"]
    with sqlite.write.begin() as c:
        c.execute(text("UPDATE audit_streams SET seq = 7, chain = :c"), {"c": chain})
    report = _verify(logged, sqlite)
    assert [(p.sequence, "signature" in p.what) for p in report.problems] == [(7, True)]


def test_damaged_line(logged: Path, sqlite: Engines) -> None:
    content = lines(logged)
    content[8] = content[8][:40]
    write_lines(logged, content)
    assert _found(_verify(logged, sqlite))[0] == (9, None, "not a record (edited or damaged)")


def test_another_key_verifies_nothing(logged: Path, sqlite: Engines) -> None:
    report = _verify(logged, sqlite, key=audit_key(b"\x08" * 32))
    assert _found(report)[0] == (1, 1, "edited")


def test_crashed_process_file_keeps_its_reserved_tail_and_verifies(tmp_path: Path) -> None:
    trail = new_trail(tmp_path)
    for _ in range(3):
        trail.observe(outcome())
    path = tmp_path / "s-1.jsonl"
    # Not closed: as a process killed would leave it, NUL bytes after the last line.
    assert path.read_bytes().endswith(b"\0")
    report = auditread.verify(tmp_path, KEY, None)
    assert report.ok and report.records == 3


def test_streams_of_several_processes_verify_apart(tmp_path: Path, sqlite: Engines) -> None:
    store = AuditStore(sqlite)
    trails = [new_trail(tmp_path, f"s-{i}", store=store) for i in range(3)]
    for n in range(12):
        trails[n % 3].observe(outcome(time=T0 + n))
    for t in trails:
        t.close()
    report = auditread.verify(tmp_path, KEY, store.checkpoints())
    assert report.ok and (report.files, report.records) == (3, 12)
    assert {k: v.seq for k, v in store.checkpoints().items()} == {"s-0": 4, "s-1": 4, "s-2": 4}


# ---- query ----------------------------------------------------------------------------------
def _populate(directory: Path, store: AuditStore | None = None, table: bool = False) -> None:
    trail = new_trail(directory, store=store, table=table)
    trail.observe(outcome(time=T0))
    trail.observe(outcome(time=T0 + 60, status=403, caller=BOB, rbac_authorized=False))
    trail.observe(outcome(time=T0 + 120, vault="beta", operation="KeySign",
                          resource_id=RESOURCE.format("BETA")))
    trail.observe(outcome(time=T0 + 180, status=429, operation="KeySign"))
    trail.observe(outcome(time=T0 + 240, status=204, operation="SecretDelete"))
    trail.close()


QUERIES: list[tuple[AuditFilter, list[int]]] = [
    (AuditFilter(), [0, 1, 2, 3, 4]),
    (AuditFilter(vault="beta"), [2]),
    (AuditFilter(vault="ALPHA"), [0, 1, 3, 4]),
    (AuditFilter(caller=BOB.object_id), [1]),
    (AuditFilter(caller=UPN.upper()), [0, 2, 3, 4]),
    (AuditFilter(caller=OID), [0, 2, 3, 4]),
    (AuditFilter(operation="KeySign"), [2, 3]),
    (AuditFilter(statuses=auditread.result_filter("Success")), [0, 2, 4]),
    (AuditFilter(statuses=auditread.result_filter("failure")), [1, 3]),
    (AuditFilter(statuses=auditread.result_filter("403")), [1]),
    (AuditFilter(statuses=auditread.result_filter("4xx")), [1, 3]),
    (AuditFilter(since_ms=int((T0 + 60) * 1000), until_ms=int((T0 + 180) * 1000)), [1, 2]),
    (AuditFilter(vault="alpha", operation="KeySign", statuses=(429, 429)), [3]),
]


def test_query_files(tmp_path: Path) -> None:
    _populate(tmp_path)
    for f, expected in QUERIES:
        found = auditread.query(tmp_path, f, 100)
        assert [r["sequence"] - 1 for r in found] == expected, f


def test_query_time_parsing() -> None:
    assert auditread.parse_time("2026-11-30T00:53:20Z") == int(T0 * 1000)
    assert auditread.parse_time("2026-11-30T01:53:20+01:00") == int(T0 * 1000)
    with pytest.raises(ValueError):
        auditread.result_filter("maybe")


# ---- the table on PostgreSQL ----------------------------------------------------------------
@pytest.fixture
def pg(pg_url: str) -> Iterator[Engines]:
    engines = open_database(pg_url)
    yield engines
    engines.dispose()


def test_postgres_table_matches_the_files_and_queries_alike(tmp_path: Path, pg: Engines
                                                            ) -> None:
    store = AuditStore(pg)
    _populate(tmp_path, store, table=True)
    rows = store.query(AuditFilter(), 100)
    assert [r.record.encode() for r in rows] == lines(tmp_path / "s-1.jsonl")
    for f, expected in QUERIES:
        assert [r.seq - 1 for r in store.query(f, 100)] == expected, f
    report = auditread.verify(tmp_path, KEY, store.checkpoints())
    assert report.ok and report.records == 5


def test_no_database_round_trip_per_request(tmp_path: Path, pg: Engines) -> None:
    """Records go to the table in one transaction per flush, not one per request."""
    statements: list[str] = []
    event.listen(pg.write, "before_cursor_execute",
                 lambda *a: statements.append(a[2]))
    trail = new_trail(tmp_path, store=AuditStore(pg), table=True)
    for i in range(200):
        trail.observe(outcome(request_id=f"r-{i}"))
    assert statements == []
    trail.flush()
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1 and "audit_streams" in inserts[0]  # the checkpoint
    # (the batch went in as one COPY, on the driver's cursor, under a savepoint)
    assert any(s.upper().startswith("SAVEPOINT") for s in statements)
    trail.close()
    assert len(AuditStore(pg).query(AuditFilter(), 1000)) == 200


def test_a_batch_retried_after_a_lost_commit_keeps_what_is_there(pg: Engines) -> None:
    """The COPY meets rows already written (the COMMIT went through, its answer was
    lost): the batch goes in row by row, keeping those, and nothing is doubled or lost."""
    from openkeyvault.ops.audit import _row

    store = AuditStore(pg)
    rows = [_row("s-1", i + 1, outcome(request_id=f"r-{i}"), f'{{"n":{i}}}\n'.encode())
            for i in range(6)]
    store.append(rows[:4], [])
    store.append(rows, [])
    assert [(r.seq, r.record) for r in store.query(AuditFilter(), 100)] == [
        (i + 1, f'{{"n":{i}}}') for i in range(6)]


def test_table_catches_up_after_the_database_was_away(tmp_path: Path, pg: Engines
                                                      ) -> None:
    """A flush that fails keeps its batch; the next one writes it (the file had it all
    along)."""
    store = AuditStore(pg)
    trail = new_trail(tmp_path, store=store, table=True)
    for _ in range(5):
        trail.observe(outcome())
    real, trail._store = trail._store, _Failing()  # type: ignore[assignment]
    trail.flush()
    assert store.query(AuditFilter(), 100) == []
    trail._store = real
    trail.observe(outcome())
    trail.close()
    assert [r.seq for r in store.query(AuditFilter(), 100)] == [1, 2, 3, 4, 5, 6]
    assert store.checkpoints()["s-1"].seq == 6


class _Failing:
    def append(self, *_: object) -> None:
        from openkeyvault.storage.errors import StorageUnavailable

        raise StorageUnavailable("the database is unreachable")


def test_outcome_fields_are_all_accounted_for() -> None:
    """A field added to Outcome must be judged (recorded or not) here, not slip in."""
    names = {f.name for f in dataclasses.fields(outcome())}
    assert names == {
        "operation", "resource_kind", "resource_name", "resource_id", "object_id",
        "api_version", "status", "time", "duration_ms", "client_ip", "correlation_id",
        "request_id", "request_uri", "user_agent", "caller", "rbac_authorized",
        "access_policy_match", "throttle_class", "meter", "units"}


def test_config_file_audit_table(tmp_path: Path) -> None:
    from openkeyvault.config import ConfigError, load_config

    base = ('[server]\ndata_dir = "data"\n[tls]\ncertificate = "t.crt"\nkey = "t.key"\n'
            '[seal]\ntype = "shamir"\n')
    config = tmp_path / "okv.toml"
    config.write_text(base + '[audit]\ndir = "logs/audit"\nfail_closed = false\n')
    settings = load_config(config)
    assert settings.audit_dir == str((tmp_path / "logs" / "audit").resolve())
    assert fail_closed(settings) is False
    config.write_text(base)
    assert fail_closed(load_config(config)) is True  # production's default
    config.write_text(base + '[audit]\nfail_closed = "no"\n')
    with pytest.raises(ConfigError, match="fail_closed"):
        load_config(config)


def test_a_full_stream_file_is_followed_by_a_new_stream(tmp_path: Path, sqlite: Engines
                                                        ) -> None:
    """Rotation: past the size, the flusher starts a new stream (file and chain) and
    writes the old one's final checkpoint; deleting a rotated-out file is seen."""
    store = AuditStore(sqlite)
    trail = new_trail(tmp_path, store=store, rotate_bytes=4096)
    for round_ in range(3):
        for i in range(6):  # about 900 bytes each: past 4 KiB
            trail.observe(outcome(request_id=f"r-{round_}-{i}", time=T0 + round_))
        trail.flush()
    trail.observe(outcome(request_id="last"))
    trail.close()
    files = auditread.stream_files(tmp_path)
    assert len(files) == 4
    report = auditread.verify(tmp_path, KEY, store.checkpoints())
    assert report.ok, report.problems
    assert report.records == 19 and report.notes == []
    assert sorted(c.seq for c in store.checkpoints().values()) == [1, 6, 6, 6]
    rotated = next(p for p in files if p.name != "s-1.jsonl"
                   and len(lines(p)) == 6)
    rotated.unlink()
    report = auditread.verify(tmp_path, KEY, store.checkpoints())
    assert [(p.file, p.what.split(":")[0]) for p in report.problems] == \
        [(str(rotated), "deleted")]
