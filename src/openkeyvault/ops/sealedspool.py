"""What a sealed worker refused, kept until the audit trail can chain it.

A sealed node has no root key, so no audit key: it cannot make a chain value, and its
workers answer every request 503 (api/sealed.py). So that those refusals are not lost to
the audit trail, each sealed worker appends what it would record of them (the Outcome:
time, client address, request URI, user agent, correlation id, status; never a header
value beyond those, a body or a token, which are not even read) to a spool file of its
own in the audit directory, `<stream id>.sealed`. Once the node is unsealed, each worker,
as it opens the deployment, takes its own spool and those of the workers of this host
that died while sealed (an atomic rename: one taker per file), records each entry in
its stream, with the entry's own time, and removes the file. A spool of a live worker
is left to that worker: it may still be writing it.

Tamper-evidence of these records starts when they are chained: while a node is sealed,
whoever can write its audit directory could edit a spool file, as they could delete
anything there. `okv audit verify` and `okv audit query` read `*.jsonl` only.

A worker keeps at most SPOOL_MAX entries per sealed period (a client hammering a sealed
node must not fill its disk); the rest are counted and said in one log line when the
spool is taken.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from openkeyvault.ops.outcome import Outcome

log = logging.getLogger("openkeyvault.audit")

SUFFIX = ".sealed"
SPOOL_MAX = 10_000
_TAKEN = ".taken"
_FIELDS = {f.name for f in dataclasses.fields(Outcome)}


class SealedSpool:
    """One sealed worker's spool (module docstring). Not thread-safe: the worker's event
    loop writes it."""

    def __init__(self, directory: Path, stream: str) -> None:
        self.directory = directory
        self.path = directory / f"{stream}{SUFFIX}"
        self._fd = -1
        self._count = 0
        self.dropped = 0  # entries beyond SPOOL_MAX this sealed period

    def add(self, outcome: Outcome) -> None:
        """Keep `outcome` (a refusal while sealed); never raises."""
        if self._count >= SPOOL_MAX:
            self.dropped += 1
            return
        line = json.dumps(dataclasses.asdict(outcome), separators=(",", ":")) + "\n"
        try:
            if self._fd < 0:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND |
                                   os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            os.write(self._fd, line.encode("utf-8", "replace"))
            self._count += 1
        except OSError as e:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("audit: a request refused while sealed cannot be kept (%s)",
                            e.strerror or type(e).__name__)

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


def _writer(name: str) -> tuple[str, int] | None:
    """(host, pid) of the worker that wrote spool `name` (`<started>-<host>-<pid>-<random>`,
    ops/audit.py `new_stream_id`), None for a name not of that shape."""
    started, _, rest = name.removesuffix(SUFFIX).partition("-")
    host, _, tail = rest.rpartition("-")  # tail: random
    host, _, pid = host.rpartition("-")
    return (host, int(pid)) if started and host and pid.isdigit() else None


def _mine_or_orphaned(name: str, host: str) -> bool:
    writer = _writer(name)
    if writer is None or writer[0] != host:
        return False
    if writer[1] == os.getpid():
        return True
    try:
        os.kill(writer[1], 0)
    except ProcessLookupError:
        return True  # its worker is gone
    except PermissionError:
        return False
    return False


def take(directory: Path, host: str) -> Iterator[Outcome]:
    """The spooled refusals in `directory` of this worker (close its spool first) and of
    this host's dead workers, each file taken by one caller only and removed once read;
    `host`: this host's name as stream ids write it."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if not _mine_or_orphaned(path.name, host):
            continue
        taken = path.with_name(f"{path.name}{_TAKEN}-{os.getpid()}")
        try:
            os.rename(path, taken)  # the first taker has it
        except OSError:
            continue
        try:
            for line in taken.read_bytes().splitlines():
                outcome = _outcome(line)
                if outcome is not None:
                    yield outcome
        finally:
            with contextlib.suppress(OSError):
                taken.unlink()


def _outcome(line: bytes) -> Outcome | None:
    """An entry read back; None for a line that is not one (a torn last line)."""
    try:
        fields = json.loads(line)
        if not isinstance(fields, dict) or set(fields) != _FIELDS or \
                fields.get("caller") is not None:
            return None
        return Outcome(**fields)
    except (ValueError, TypeError):
        return None
