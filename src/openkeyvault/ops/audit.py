"""The audit trail: one AuditEvent record per answered request, in a tamper-evident chain.

Record. `encode_record` writes an `Outcome` (ops/outcome.py) as Azure's diagnostic-log
AuditEvent (time, resourceId, operationName, ..., identity.claim, properties; `to_record`
is the same record as a dict, what it is tested against). It copies only the fields
listed there: an Outcome carries no body, token or key material, and nothing else is
read. Of the request URI's query it keeps the values of the API's own
parameters only (`safe_uri`).

Chain. Every record carries `stream`, `sequence` and `chain` = HMAC-SHA256(audit key,
previous chain || canonical JSON of the record without `chain`); the first record of a
stream chains from HMAC(audit key, "genesis" || stream). The audit key is HKDF-SHA256 of
the deployment's root key with a fixed label: only an unsealed deployment (or whoever
holds its root key) can make or check a chain value, the key is never stored, and a
rekey (new shares of the same root key) does not change it.

What is recorded: every request answered with an operation name (refusals included), and
every request without one that failed (a 401 before routing, a 404 path); a successful
read of the node's own endpoints (`UNRECORDED`: `/healthz`, `/ca.pem`, a metrics scrape)
is not, so a load balancer's health checks and a scraper do not fill the trail (Azure's
logs have no such records either); their failures are.

One chain per writer. Every worker process of every node appends to its own stream
(`audit/<started>-<host>-<pid>-<random>.jsonl`, the stream id in each record). A shared
file or a shared sequence would need a lock across processes and nodes on every request;
separate streams need none, and each is still one unbroken chain that `okv audit verify`
checks on its own. Streams are merged by time when read. A stream whose file passes
`ROTATE_BYTES` is followed by a new one (new file, new chain; the flusher does it, off the
request's path), so files stay a size that can be shipped and removed.

High-water mark. On each flush the stream's last sequence number and chain value are
written to `audit_streams` with an HMAC under the audit key, so a tail cut off a file (or
a whole file removed) is seen: the checkpoint names a record the file no longer has.

Sinks and what a crash loses. The JSON line is written to the stream file (`pwrite` into
space reserved ahead, ops/auditsink.py) before the response is sent: a crash of the
process loses nothing answered. The file is `fdatasync`ed on the flusher's timer
(`FLUSH_SECONDS`), so a crash of the machine can lose the last second of lines. On
PostgreSQL the records are also inserted into `audit_events` (every node's records in one
place), in batches on the same timer or every `BATCH_ROWS`: the table lags the files by up
to a second, and a crash loses the unflushed batch from the table (not from the file). On
SQLite the table stays empty: its one node's files are the log, and a second copy in the
same data directory would add a write lock per flush and nothing else. The checkpoint
lags the same way, so a tail cut within the last second before a crash is not detected.

Fail closed. `admit` (a Gate) refuses every operation with 503 `AuditUnavailable` while
the stream cannot be written: a disk that cannot give the next reserved chunk, a write
that failed, a file system remounted read-only. With `fail_closed` off, operations go
on, and the log says once that they are not being audited.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openkeyvault.ops.auditsink import SinkFailed, StreamFile
from openkeyvault.ops.outcome import Attempt, CallerClaims, Outcome, Refusal

if TYPE_CHECKING:
    from openkeyvault.config import Settings
    from openkeyvault.storage.audit import AuditRow, AuditStore, Checkpoint
    from openkeyvault.storage.db import Engines

log = logging.getLogger("openkeyvault.audit")

AUDIT_DIR = "audit"  # under the data directory, unless settings.audit_dir says otherwise
SUFFIX = ".jsonl"
FLUSH_SECONDS = 1.0
ROTATE_BYTES = 64 << 20  # a stream file this large is followed by a new stream
BATCH_ROWS = 500
MAX_PENDING_ROWS = 100_000  # rows kept for the table while the database is away
RETRY_AFTER_SECONDS = 30
ERROR_CODE = "AuditUnavailable"
REFUSAL = Refusal(
    503, ERROR_CODE,
    "The operation was not performed: the service cannot write its audit trail. "
    "Try again later.", RETRY_AFTER_SECONDS)

# The node's own reads, not recorded when they succeed (module docstring).
UNRECORDED = frozenset({"HealthGet", "IssuingCaGet", "MetricsGet"})

CLAIM_OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
CLAIM_UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
CLAIM_TID = "http://schemas.microsoft.com/identity/claims/tenantid"
CLAIM_APPID = "appid"

_KEY_LABEL = b"openkeyvault audit chain v1"
_GENESIS = b"openkeyvault audit genesis\x00"
_CHECKPOINT = b"openkeyvault audit checkpoint\x00"
_STREAM = re.compile(r"[A-Za-z0-9._-]{1,64}")


# ---- the key and the chain ----------------------------------------------------------------
def audit_key(root_key: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869, zero salt, one block) of the root key with a fixed label."""
    prk = hmac.new(b"\0" * 32, root_key, hashlib.sha256).digest()
    return hmac.new(prk, _KEY_LABEL + b"\x01", hashlib.sha256).digest()


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes a chain value covers: sorted keys, no spaces, UTF-8 (a lone surrogate,
    which a client's path could carry and UTF-8 cannot, as `?`)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8", "replace")


class ChainKey:
    """`link` with the audit key's HMAC pads hashed once (RFC 2104: the same values),
    which saves the per-record key set-up on the request's path."""

    def __init__(self, key: bytes) -> None:
        block = key.ljust(64, b"\0") if len(key) <= 64 else \
            hashlib.sha256(key).digest().ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def link(self, previous: bytes, body: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(previous)
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def genesis(key: bytes, stream: str) -> bytes:
    return hmac.new(key, _GENESIS + stream.encode(), hashlib.sha256).digest()


def link(key: bytes, previous: bytes, body: bytes) -> bytes:
    return hmac.digest(key, previous + body, "sha256")


def checkpoint_mac(key: bytes, stream: str, seq: int, chain: str) -> str:
    message = _CHECKPOINT + f"{stream}\x00{seq}\x00{chain}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


# ---- the record ---------------------------------------------------------------------------
# The status as Azure's resultSignature names it (`OK`, `Forbidden`, `NotFound`).
_PHRASES = {int(s): s.phrase.replace(" ", "").replace("-", "") for s in HTTPStatus}


def _phrase(status: int) -> str:
    return _PHRASES.get(status) or str(status)


_second: tuple[int, str] = (-1, "")  # the last whole second formatted (one per second)


def _time(seconds: float) -> str:
    """UTC ISO-8601 with microseconds; the date and time of day formatted once a second."""
    global _second
    whole = int(seconds)
    if whole != _second[0]:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int((seconds - whole) * 1e6):06d}Z"


# Query parameters whose values the record keeps (the REST API's own); any other value is
# replaced, so a credential a client put in a query string by mistake is not recorded.
SAFE_PARAMETERS = frozenset({"api-version", "maxresults", "$top", "$skiptoken",
                             "$filter", "includepending", "resource", "client_id",
                             "object_id", "mi_res_id", "principal_id"})


def safe_uri(uri: str) -> str:
    """`uri` with the values of unknown query parameters replaced by `REDACTED`."""
    path, sep, query = uri.partition("?")
    if not sep:
        return uri
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(part if not eq or name.lower() in SAFE_PARAMETERS
                     else f"{name}=REDACTED")
    return f"{path}?{'&'.join(parts)}"


def result_type(status: int) -> str:
    return "Success" if status < 400 else "Failure"


def _claims(caller: CallerClaims | None) -> dict[str, str]:
    claim: dict[str, str] = {}
    if caller is not None:
        claim[CLAIM_OID] = caller.object_id
        claim[CLAIM_TID] = caller.tenant_id
        if caller.upn:
            claim[CLAIM_UPN] = caller.upn
        if caller.app_id:
            claim[CLAIM_APPID] = caller.app_id
    return claim


def to_record(o: Outcome) -> dict[str, Any]:
    """The AuditEvent of one answered request (only the fields listed; no stream fields).
    What `encode_record` writes, as a dict: the reference it is tested against."""
    return {
        "time": _time(o.time),
        "resourceId": o.resource_id or "",
        "operationName": o.operation,
        "operationVersion": o.api_version or "",
        "category": "AuditEvent",
        "resultType": result_type(o.status),
        "resultSignature": _phrase(o.status),
        "resultDescription": "",
        "durationMs": str(max(0, round(o.duration_ms))),
        "callerIpAddress": o.client_ip,
        "correlationId": o.correlation_id or "",
        "identity": {"claim": _claims(o.caller)},
        "properties": {
            "id": o.object_id or "",
            "requestUri": safe_uri(o.request_uri),
            "httpStatusCode": o.status,
            "clientInfo": o.user_agent or "",
            "isAccessPolicyMatch": o.access_policy_match,
            "isRbacAuthorized": o.rbac_authorized,
            "requestId": o.request_id,
        },
    }


# ---- the record, written directly -----------------------------------------------------------
# `canonical(to_record(o) + stream and sequence)` builds a dict of dicts and sorts it for
# every request. The record's shape is fixed, so its canonical bytes can be written from a
# template whose keys are already in sorted order, each value JSON-encoded as json.dumps
# encodes it. Most of a record repeats from one request to the next (the client's address,
# the operation, the object, the caller's claims, the status, ...): those parts are
# encoded once per combination and kept, and only the correlation id, the duration, the
# request id, the sequence and the time are written per record. A test checks that the two
# agree byte for byte on every kind of value.
_string = json.encoder.encode_basestring  # what json.dumps uses with ensure_ascii=False
_LITERAL = {True: "true", False: "false", None: "null"}
_MEMO_LIMIT = 4096
_Shape = tuple[str, str, str | None, str | None, str | None, str | None,
               CallerClaims | None, str, int, bool | None, bool | None]
_shapes: dict[_Shape, tuple[str, str, str]] = {}  # what repeats → its three fragments


def _fragments(shape: _Shape) -> tuple[str, str, str]:
    """The record's JSON around the per-request values: up to correlationId's value,
    from after durationMs up to requestId's value, and from there up to sequence's."""
    (client_ip, operation, api_version, user_agent, object_id, resource_id, caller,
     request_uri, status, rbac, access_policy) = shape
    identity = canonical({"claim": _claims(caller)}).decode("utf-8", "replace")
    return (
        f'{{"callerIpAddress":{_string(client_ip)},"category":"AuditEvent",'
        f'"correlationId":',
        f',"identity":{identity},"operationName":{_string(operation)},'
        f'"operationVersion":{_string(api_version or "")},'
        f'"properties":{{"clientInfo":{_string(user_agent or "")},'
        f'"httpStatusCode":{int(status)},"id":{_string(object_id or "")},'
        f'"isAccessPolicyMatch":{_LITERAL[access_policy]},'
        f'"isRbacAuthorized":{_LITERAL[rbac]},"requestId":',
        f',"requestUri":{_string(safe_uri(request_uri))}}},'
        f'"resourceId":{_string(resource_id or "")},"resultDescription":"",'
        f'"resultSignature":{_string(_phrase(status))},'
        f'"resultType":"{result_type(status)}","sequence":')


def encode_record(o: Outcome, stream: str, sequence: int) -> bytes:
    """`canonical` of the record of `o` with its stream and sequence, written directly."""
    shape = (o.client_ip, o.operation, o.api_version, o.user_agent, o.object_id,
             o.resource_id, o.caller, o.request_uri, o.status, o.rbac_authorized,
             o.access_policy_match)
    parts = _shapes.get(shape)
    if parts is None:
        if len(_shapes) >= _MEMO_LIMIT:
            _shapes.clear()
        parts = _shapes[shape] = _fragments(shape)
    return (
        f'{parts[0]}{_string(o.correlation_id or "")},'
        f'"durationMs":"{max(0, round(o.duration_ms))}"{parts[1]}{_string(o.request_id)}'
        f'{parts[2]}{int(sequence)},"stream":{_string(stream)},"time":"{_time(o.time)}"}}'
    ).encode("utf-8", "replace")


# ---- the trail ----------------------------------------------------------------------------
class AuditTrail:
    """This process's audit stream: an Observer (one record per outcome) and a Gate (503
    while the stream cannot be written). `close` at shutdown."""

    def __init__(self, file: StreamFile, stream: str, key: bytes, *, fail_closed: bool,
                 store: AuditStore | None = None, table: bool = False,
                 flush_seconds: float = FLUSH_SECONDS,
                 next_file: Callable[[str], StreamFile] | None = None,
                 rotate_bytes: int = ROTATE_BYTES) -> None:
        """`next_file(stream)`: the file of a new stream once this one has `rotate_bytes`
        (None: never rotate)."""
        if not _STREAM.fullmatch(stream):
            raise ValueError("a stream id is 1-64 letters, digits, '.', '_' or '-'")
        self.stream = stream
        self.fail_closed = fail_closed
        self._file = file
        self._key = key
        self._chain = ChainKey(key)
        self._store = store
        self._table = table and store is not None
        self._flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._seq = 0
        self._prev = genesis(key, stream)
        self._pending: list[AuditRow] = []
        self._checkpointed = (stream, 0)  # the last checkpoint written
        self._next_file = next_file
        self._rotate_bytes = rotate_bytes
        self._retired: list[Checkpoint] = []  # final checkpoints of rotated-out streams
        self._reported: str | None = None  # the failure the log told of, until recovery
        self._db_reported = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not file.healthy:
            self._report()

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def healthy(self) -> bool:
        return self._file.healthy

    # ---- Gate ---------------------------------------------------------------------
    def admit(self, attempt: Attempt) -> Refusal | None:
        if self._file.error is None:
            return None
        self._report()
        return REFUSAL if self.fail_closed else None

    # ---- Observer -----------------------------------------------------------------
    def observe(self, outcome: Outcome) -> None:
        if outcome.status < 400 and (not outcome.operation
                                     or outcome.operation in UNRECORDED):
            return  # no operation, or the node's own read, and answered
        try:
            self._append(outcome)
        except Exception:  # noqa: BLE001 - an observer must not raise
            log.exception("audit: a record could not be made")

    def _append(self, outcome: Outcome) -> None:
        with self._lock:
            seq = self._seq + 1
            body = encode_record(outcome, self.stream, seq)
            chain = self._chain.link(self._prev, body)
            line = body[:-1] + b',"chain":"' + chain.hex().encode() + b'"}\n'
            try:
                self._file.append(line)
            except SinkFailed:
                failed = True
            else:
                failed = False
                self._seq, self._prev = seq, chain
                if self._table:
                    self._pending.append(_row(self.stream, seq, outcome, line))
                    if len(self._pending) >= BATCH_ROWS:
                        self._wake.set()
        if failed or not self._file.healthy:
            self._report()

    def _report(self) -> None:
        """Say once, until the trail can be written again, what is wrong and what it means
        for operations (a full disk that then fails a write is still one line)."""
        error = self._file.error
        if error is None or self._reported is not None:
            return
        self._reported = error
        if self.fail_closed:
            log.error("audit: %s; operations are refused (503 %s) until it can be written",
                      error, ERROR_CODE)
        else:
            log.warning("audit: %s; operations go on UNAUDITED (fail_closed is off)", error)

    # ---- the flusher --------------------------------------------------------------
    def start(self) -> None:
        """The flusher thread: sync, retry a failed stream, write the table's batch and
        the checkpoint, every `flush_seconds` or when a batch is full."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="okv-audit-flush",
                                        daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the thread must live on
                log.exception("audit: flush failed")

    def flush(self) -> None:
        """Sync the file (and retry a failed one), start the next stream when this one is
        full, then write what the table lacks and the checkpoints (one transaction)."""
        self._file.sync()
        if not self._file.healthy:
            with self._lock:
                recovered = self._file.recover()
            if recovered and self._reported is not None:
                log.warning("audit: the audit trail can be written again")
                self._reported = None
        if not self._file.healthy:
            self._report()
        self._rotate_if_due()
        if self._store is None:
            self._retired.clear()
            return
        with self._lock:
            rows, self._pending = self._pending, []
            current = self._checkpoint(self.stream, self._file.path, self._seq, self._prev)
        checkpoints = list(self._retired)
        if current.seq and (current.stream, current.seq) != self._checkpointed:
            checkpoints.append(current)
        if not rows and not checkpoints:
            return
        try:
            self._store.append(rows, checkpoints)
        except Exception as e:  # noqa: BLE001 - the file has the records; retried
            with self._lock:
                self._pending[:0] = rows
                dropped = len(self._pending) - MAX_PENDING_ROWS
                if dropped > 0:
                    del self._pending[:dropped]
            if not self._db_reported:
                self._db_reported = True
                log.warning("audit: the audit table lags behind the stream files (%s); "
                            "retrying", type(e).__name__)
            return
        self._retired.clear()  # (only this thread adds to it, in _rotate_if_due)
        self._checkpointed = (current.stream, current.seq)
        if self._db_reported:
            self._db_reported = False
            log.warning("audit: the audit table has caught up")

    def _checkpoint(self, stream: str, path: Path, seq: int, chain: bytes) -> Checkpoint:
        from openkeyvault.storage.audit import Checkpoint

        value = chain.hex()
        return Checkpoint(stream, f"{socket.gethostname()}:{path}", seq, value,
                          checkpoint_mac(self._key, stream, seq, value),
                          int(time.time() * 1000))

    def _rotate_if_due(self) -> None:
        """Start a new stream (a new file, a new chain) once this one has `rotate_bytes`,
        so that files stay a size one can ship and remove; the old one is closed and its
        final checkpoint written with this flush. Off the request's path."""
        if self._next_file is None or self._file.offset < self._rotate_bytes:
            return
        stream = new_stream_id()
        new = self._next_file(stream)
        new.open()
        if not new.healthy:  # the current file still has its reserved space; next flush
            new.close()
            return
        with self._lock:
            old, old_stream, seq, prev = self._file, self.stream, self._seq, self._prev
            self._file, self.stream = new, stream
            self._seq, self._prev = 0, genesis(self._key, stream)
        old.close()  # no append reaches it any more
        if seq:
            self._retired.append(self._checkpoint(old_stream, old.path, seq, prev))

    def close(self) -> None:
        """Stop the flusher, write the last batch and checkpoint, cut the reserved tail."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self.flush()
        with self._lock:
            self._file.close()
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)


def _row(stream: str, seq: int, o: Outcome, line: bytes) -> AuditRow:
    from openkeyvault.storage.audit import AuditRow

    caller = o.caller
    upn = caller.upn.lower() if caller is not None and caller.upn else None
    return AuditRow(stream, seq, int(o.time * 1000), o.resource_name, o.operation, o.status,
                    caller.object_id if caller is not None else None, upn,
                    line[:-1].decode())


# ---- the composition root's entry -----------------------------------------------------------
def audit_dir(settings: Settings) -> Path:
    return Path(settings.audit_dir) if settings.audit_dir else settings.data_dir / AUDIT_DIR


def fail_closed(settings: Settings) -> bool:
    """The deployment's choice, else closed in production and open on a dev server."""
    if settings.audit_fail_closed is not None:
        return settings.audit_fail_closed
    return not settings.dev


def stream_host() -> str:
    """This host's name as stream ids write it."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:24] or "node"


def new_stream_id(now: float | None = None) -> str:
    """`<started>-<host>-<pid>-<random>`: unique per process start, sortable by time."""
    started = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now if now is not None
                                                          else time.time()))
    return f"{started}-{stream_host()}-{os.getpid()}-{secrets.token_hex(4)}"


def dev_root_key(settings: Settings) -> bytes:
    from openkeyvault.storage.datadir import ROOT_KEY
    from openkeyvault.storage.seal import dev_seal_root_key

    return dev_seal_root_key(settings.data_dir / ROOT_KEY)


def open_audit(settings: Settings, engines: Engines | None, root_key: bytes | None,
               *, flush_seconds: float = FLUSH_SECONDS, key: bytes | None = None
               ) -> AuditTrail:
    """This process's audit trail, started: use it as a Gate and as an Observer, and
    `close()` it at shutdown. `root_key`: the seal's (production), None: the dev key file.
    `engines`: the deployment's (checkpoints; records too on PostgreSQL), None: files
    only. Call it in each worker process (after the fork): a stream and its flusher
    thread belong to one process. `key`: the audit key itself, where the caller keeps it
    rather than the root key (the deployment does)."""
    if key is None:
        key = audit_key(root_key if root_key is not None else dev_root_key(settings))
    directory = audit_dir(settings)

    def stream_file(stream: str) -> StreamFile:
        return StreamFile(directory / f"{stream}{SUFFIX}")

    stream = new_stream_id()
    file = stream_file(stream)
    file.open()
    store = None
    if engines is not None:
        from openkeyvault.storage.audit import AuditStore

        store = AuditStore(engines)
    trail = AuditTrail(file, stream, key, fail_closed=fail_closed(settings), store=store,
                       table=engines is not None and engines.dialect == "postgresql",
                       flush_seconds=flush_seconds, next_file=stream_file)
    trail.start()
    return trail
