"""Reading the audit trail back: `verify` (is every stream one unbroken chain, up to its
checkpoint?) and `query` (records matching a filter, from the stream files).

Verify walks each stream file line by line with the audit key and names every break by
file, line and sequence number:

- a line that is not a record, or a record of another stream: damaged or inserted;
- a record whose chain value does not match: edited (or not written with this
  deployment's key); one followed by a valid record of the same sequence: inserted;
- a sequence number missing with no later record holding it: deleted; held by a later
  record: reordered; seen before: a duplicate (inserted);
- fewer records than the stream's signed checkpoint names: truncated; a checkpoint whose
  signature or chain value does not match: edited; a checkpoint without its file: deleted.

After a break the walk resynchronises on the stored chain value, so one edit is reported
once and the records after it are still checked.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openkeyvault.ops.audit import (
    CLAIM_OID,
    CLAIM_UPN,
    SUFFIX,
    canonical,
    checkpoint_mac,
    genesis,
    link,
)
from openkeyvault.ops.auditsink import read_lines
from openkeyvault.storage.audit import AuditFilter, Checkpoint


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None  # 1-based; None: about the file as a whole
    sequence: int | None
    what: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f", line {self.line}"
        if self.sequence is not None:
            where += f", sequence {self.sequence}"
        return f"{where}: {self.what}"


@dataclass
class Report:
    files: int = 0
    records: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def stream_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob(f"*{SUFFIX}") if p.is_file())


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _sequence(record: dict[str, Any]) -> int | None:
    seq = record.get("sequence")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else None


def _chain(record: dict[str, Any]) -> bytes | None:
    value = record.get("chain")
    if not isinstance(value, str) or len(value) != 64:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def _links(key: bytes, previous: bytes, record: dict[str, Any]) -> bool:
    stored = _chain(record)
    if stored is None:
        return False
    body = canonical({k: v for k, v in record.items() if k != "chain"})
    return hmac.compare_digest(link(key, previous, body), stored)


def verify_file(path: Path, key: bytes, checkpoint: Checkpoint | None,
                report: Report) -> None:
    stream = path.name[:-len(SUFFIX)]
    name = str(path)
    problems = report.problems
    records = [_parse(line) for line in read_lines(path)]
    sequences = [_sequence(r) if r is not None else None for r in records]
    expected, previous = 1, genesis(key, stream)
    seen: set[int] = set()
    chains: dict[int, bytes | None] = {}
    for i, record in enumerate(records):
        line = i + 1
        if record is None:
            problems.append(Problem(name, line, None, "not a record (edited or damaged)"))
            continue
        seq = sequences[i]
        if record.get("stream") != stream or seq is None:
            problems.append(Problem(name, line, seq, "not a record of this stream "
                                    "(inserted)"))
            continue
        report.records += 1
        if seq == expected:
            if _links(key, previous, record):
                pass
            elif (i + 1 < len(records) and sequences[i + 1] == seq
                  and records[i + 1] is not None
                  and _links(key, previous, records[i + 1])):  # type: ignore[arg-type]
                problems.append(Problem(name, line, seq, "inserted: not part of the chain "
                                        "(the next line is the real record)"))
                continue
            else:
                problems.append(Problem(name, line, seq, "edited: does not match its chain "
                                        "value (or not written with this deployment's key)"))
        elif seq > expected:
            later = {s for s in sequences[i + 1:] if s is not None}
            if any(s in later for s in range(expected, seq)):
                problems.append(Problem(name, line, seq, f"reordered: comes before "
                                        f"sequence {expected}"))
            else:
                gap = str(expected) if seq - expected == 1 else f"{expected}-{seq - 1}"
                problems.append(Problem(name, line, seq, f"deleted: sequence {gap} missing "
                                        "before this line"))
        else:
            what = ("duplicate: this sequence appeared before (inserted)" if seq in seen
                    else f"reordered: comes after sequence {expected - 1}")
            problems.append(Problem(name, line, seq, what))
            continue
        seen.add(seq)
        chains[seq] = _chain(record)
        previous = chains[seq] or previous
        expected = seq + 1
    _check_checkpoint(name, key, stream, checkpoint, expected - 1, chains, len(records),
                      report)


def _check_checkpoint(name: str, key: bytes, stream: str, checkpoint: Checkpoint | None,
                      last: int, chains: dict[int, bytes | None], lines: int,
                      report: Report) -> None:
    if checkpoint is None:
        report.notes.append(f"{name}: no checkpoint in the database (its process stopped "
                            "before its first flush, or the checkpoints were not read); a cut "
                            "tail cannot be detected")
        return
    mac = checkpoint_mac(key, stream, checkpoint.seq, checkpoint.chain)
    if not hmac.compare_digest(mac, checkpoint.mac):
        report.problems.append(Problem(name, None, checkpoint.seq, "the checkpoint in the "
                                       "database does not match its signature (edited)"))
        return
    if checkpoint.seq > last:
        report.problems.append(Problem(
            name, lines + 1, last + 1, f"truncated: the file ends after sequence {last}, but "
            f"its checkpoint records sequence {checkpoint.seq}"))
        return
    stored = chains.get(checkpoint.seq)
    if stored is not None and stored.hex() != checkpoint.chain:
        report.problems.append(Problem(name, None, checkpoint.seq, "the record differs from "
                                       "the checkpoint's chain value (rewritten)"))


def _local(checkpoint: Checkpoint, directory: Path) -> Path | None:
    """The stream file a checkpoint names, if it is in `directory` on this machine (nodes
    of a PostgreSQL deployment each keep their own files)."""
    host, _, path = checkpoint.path.partition(":")
    if host != socket.gethostname() or not path:
        return None
    file = Path(path)
    return file if file.parent.resolve() == directory.resolve() else None


def verify(directory: Path, key: bytes, checkpoints: dict[str, Checkpoint] | None
           ) -> Report:
    """Check every stream file in `directory` (and, with `checkpoints`, every stream the
    database knows of)."""
    report = Report()
    files = stream_files(directory) if directory.is_dir() else []
    known = dict(checkpoints or {})
    for path in files:
        report.files += 1
        stream = path.name[:-len(SUFFIX)]
        verify_file(path, key, known.pop(stream, None), report)
    for stream, checkpoint in sorted(known.items()):
        file = _local(checkpoint, directory)
        if file is None:
            continue  # another node's stream
        report.problems.append(Problem(str(file), None, checkpoint.seq,
                                       f"deleted: the file of stream {stream} is missing "
                                       f"(its checkpoint records sequence {checkpoint.seq})"))
    return report


# ---- query --------------------------------------------------------------------------------
def parse_time(text: str) -> int:
    """Unix milliseconds of an ISO-8601 time (UTC unless it says otherwise)."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)


def result_filter(text: str) -> tuple[int, int]:
    """`Success`, `Failure`, a status (`403`) or a class (`4xx`) as a range of statuses."""
    t = text.strip().lower()
    if t == "success":
        return (0, 399)
    if t == "failure":
        return (400, 999)
    if len(t) == 3 and t[0].isdigit() and t[1:] == "xx":
        return (int(t[0]) * 100, int(t[0]) * 100 + 99)
    if t.isdigit():
        return (int(t), int(t))
    raise ValueError("a result is Success, Failure, a status (403) or a class (4xx)")


def _vault_of(record: dict[str, Any]) -> str:
    resource = record.get("resourceId") or ""
    return resource.rsplit("/", 1)[-1].lower() if isinstance(resource, str) else ""


def matches(record: dict[str, Any], f: AuditFilter) -> bool:
    if f.vault is not None and _vault_of(record) != f.vault.lower():
        return False
    if f.caller is not None:
        claim = (record.get("identity") or {}).get("claim") or {}
        upn = str(claim.get(CLAIM_UPN) or "").lower()
        if claim.get(CLAIM_OID) != f.caller and upn != f.caller.lower():
            return False
    if f.operation is not None and str(record.get("operationName", "")).lower() != \
            f.operation.lower():
        return False
    if f.statuses is not None:
        status = (record.get("properties") or {}).get("httpStatusCode")
        if not isinstance(status, int) or not f.statuses[0] <= status <= f.statuses[1]:
            return False
    if f.since_ms is not None or f.until_ms is not None:
        try:
            when = parse_time(str(record.get("time")))
        except ValueError:
            return False
        if f.since_ms is not None and when < f.since_ms:
            return False
        if f.until_ms is not None and when >= f.until_ms:
            return False
    return True


def records(directory: Path) -> Iterator[dict[str, Any]]:
    for path in stream_files(directory) if directory.is_dir() else []:
        for line in read_lines(path):
            record = _parse(line)
            if record is not None:
                yield record


def query(directory: Path, f: AuditFilter, limit: int) -> list[dict[str, Any]]:
    """Records of the stream files matching `f`, oldest first, at most `limit`."""
    found = [r for r in records(directory) if matches(r, f)]
    found.sort(key=lambda r: (str(r.get("time", "")), str(r.get("stream", "")),
                              r.get("sequence") or 0))
    return found[:limit]
