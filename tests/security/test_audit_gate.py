"""Fail closed: the audit gate refuses an operation before it acts while the trail cannot
be written — a read-only directory, a full disk, a write that failed — and with
fail_closed off lets it through, saying so once in the log.

The full disk is a real one for the writing process: a child whose files may not grow
past a few hundred KiB (RLIMIT_FSIZE), so no mount or root is needed. The read-only
directory is a real one too: a directory the child may not write (a root test process
takes CAP_DAC_OVERRIDE from the child, since permissions do not stop root otherwise).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from openkeyvault.ops import auditread
from openkeyvault.ops.audit import ERROR_CODE, RETRY_AFTER_SECONDS, audit_key
from openkeyvault.ops.outcome import Attempt
from tests.security.audit_support import new_trail, outcome, rlimit_child, without_dac_override

KEY = audit_key(b"\x07" * 32)
ATTEMPT = Attempt("SecretGet", "vault", "alpha", "secrets", 1.0, None, "10.1.2.3")

# The child: a trail on ARGS["path"]; per round, ask the gate, then record the outcome (the
# operation's, or the refusal's). Prints what the gate answered, round by round.
CHILD = r"""
import dataclasses, json, logging, sys
from pathlib import Path
from openkeyvault.ops.audit import AuditTrail, audit_key
from openkeyvault.ops.auditsink import StreamFile
from openkeyvault.ops.outcome import Attempt, Outcome

args = json.loads(sys.argv[1])
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
f = StreamFile(Path(args["path"]), chunk=args["chunk"], reserve=args["reserve"])
f.open()
trail = AuditTrail(f, Path(args["path"]).stem, audit_key(b"\x07" * 32),
                   fail_closed=args["fail_closed"], flush_seconds=3600)
attempt = Attempt("SecretGet", "vault", "alpha", "secrets", 1.0, None, "10.1.2.3")
base = Outcome("SecretGet", "vault", "alpha", None, None, "7.5", 200, 0.0, 1.0, "10.1.2.3",
               None, "r", "/secrets/s?api-version=7.5", "ua" * 200, None, None, None,
               None, None)
answers = []
for i in range(args["rounds"]):
    refusal = trail.admit(attempt)
    answers.append(None if refusal is None else [refusal.status, refusal.code,
                                                  refusal.message, refusal.retry_after])
    trail.observe(dataclasses.replace(base, status=200 if refusal is None else
                                      refusal.status, request_id=f"r-{i}"))
    if refusal is not None and sum(a is not None for a in answers) >= 5:
        break
trail.close()
print(json.dumps({"answers": answers, "error": f.error}))
"""


def _child(args: dict[str, Any], preexec: Any) -> tuple[dict[str, Any], str]:
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)],
                          capture_output=True, text=True, timeout=120, preexec_fn=preexec)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def _full_disk(tmp_path: Path, fail_closed: bool, rounds: int = 2000
               ) -> tuple[dict[str, Any], str, Path]:
    directory = tmp_path / "audit"
    directory.mkdir()
    path = directory / "s-full.jsonl"
    # Chunks of 64 KiB; the third cannot be reserved (the file may not pass 160 KiB).
    out, log = _child({"path": str(path), "chunk": 64 << 10, "reserve": 16 << 10,
                       "fail_closed": fail_closed, "rounds": rounds}, rlimit_child(160 << 10))
    return out, log, path


def test_full_disk_refuses_before_the_operation_acts(tmp_path: Path) -> None:
    out, log, path = _full_disk(tmp_path, fail_closed=True)
    answers = out["answers"]
    first = next(i for i, a in enumerate(answers) if a is not None)
    assert first > 100  # the first chunks were used
    assert answers[first:] == [[503, ERROR_CODE, answers[first][2], RETRY_AFTER_SECONDS]] * 5
    assert "audit trail" in answers[first][2]
    assert "disk is full" in out["error"]
    # Every operation let through and every refusal is in the file, one unbroken chain.
    report = auditread.verify(path.parent, KEY, None)
    assert report.ok, report.problems
    assert report.records == len(answers)
    statuses = [r["properties"]["httpStatusCode"] for r in auditread.records(path.parent)]
    assert statuses == [200] * first + [503] * 5
    assert log.count("operations are refused") == 1
    assert path.stat().st_size <= 160 << 10


def test_full_disk_with_fail_closed_off_lets_operations_through_and_warns_once(
        tmp_path: Path) -> None:
    out, log, path = _full_disk(tmp_path, fail_closed=False, rounds=400)
    assert out["answers"] == [None] * 400
    warnings = [line for line in log.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "UNAUDITED" in warnings[0] and "disk is full" in warnings[0]
    # What could be written was, still one chain; the rest is missing at the end only.
    report = auditread.verify(path.parent, KEY, None)
    assert report.ok and 100 < report.records < 400


def test_read_only_directory_refuses_from_the_start(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        out, log = _child({"path": str(directory / "s-ro.jsonl"), "chunk": 1 << 20,
                           "reserve": 1 << 16, "fail_closed": True, "rounds": 3},
                          without_dac_override())
    except subprocess.SubprocessError as e:  # a container that denies CAP_SETPCAP
        pytest.skip(f"root cannot give up its permission override here: {e}")
    assert [a[:2] for a in out["answers"]] == [[503, ERROR_CODE]] * 3
    assert "Permission denied" in out["error"] or "read-only" in out["error"]
    assert log.count("operations are refused") == 1
    assert not any(directory.iterdir())


def test_read_only_file_system_detected_by_statvfs() -> None:
    """/proc is mounted read-only... for writes of new files; statvfs of a read-only mount
    is what the sink checks. Use one the machine has, if any."""
    from openkeyvault.ops.auditsink import read_only_fs

    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
              if " ro," in line or line.split()[3].startswith("ro")]
    if not mounts:
        pytest.skip("no read-only mount on this machine")
    assert read_only_fs(Path(mounts[0]))


def test_write_failure_marks_the_sink_failed(tmp_path: Path) -> None:
    trail = new_trail(tmp_path)
    assert trail.admit(ATTEMPT) is None
    trail.observe(outcome())
    os.close(trail._file._fd)  # the descriptor goes bad under it: the next write fails
    trail.observe(outcome())
    refusal = trail.admit(ATTEMPT)
    assert refusal is not None and (refusal.status, refusal.code) == (503, ERROR_CODE)
    trail._file._fd = -1
    trail.close()
    report = auditread.verify(tmp_path, KEY, None)
    assert report.ok and report.records == 1


def test_a_disk_with_room_again_recovers(tmp_path: Path) -> None:
    trail = new_trail(tmp_path, fail_closed=True)
    trail._file.error = "cannot reserve space in x: its disk is full"
    assert trail.admit(ATTEMPT) is not None
    trail.flush()  # the flusher's retry reserves the space
    assert trail.admit(ATTEMPT) is None
    trail.close()


def test_an_audit_directory_made_writable_recovers(tmp_path: Path, caplog: Any) -> None:
    """A directory that cannot be made (here: a file stands in its parent's place, which
    stops root too) refuses; once it can, the flusher's retry opens the stream."""
    from openkeyvault.ops.audit import AuditTrail
    from openkeyvault.ops.auditsink import StreamFile

    blocker = tmp_path / "logs"
    blocker.write_text("")
    f = StreamFile(blocker / "audit" / "s-1.jsonl")
    f.open()
    trail = AuditTrail(f, "s-1", KEY, fail_closed=True, flush_seconds=3600)
    assert trail.admit(ATTEMPT) is not None
    trail.flush()
    assert trail.admit(ATTEMPT) is not None  # still not writable
    blocker.unlink()
    trail.flush()
    assert trail.admit(ATTEMPT) is None
    trail.observe(outcome())
    trail.close()
    assert "can be written again" in caplog.text
    report = auditread.verify(blocker / "audit", KEY, None)
    assert report.ok and report.records == 1
