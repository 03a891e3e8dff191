"""Prometheus metrics: Azure Key Vault's metrics (ServiceApiHit, ServiceApiLatency,
ServiceApiResult, SaturationShoebox) per vault, plus process and storage health.

Several worker processes serve requests, so the counts live in prometheus-client's
multi-process mode: each worker adds what its requests did, once a second, to its own
memory-mapped files in a directory of the node (`metrics_dir`: in /dev/shm where there is
one, else `run/metrics-PORT/` in the data directory), emptied by the supervising process
before it starts the workers (`prepare`), and a scrape sums every file. The counts of a
worker that died stay in the sum (a total never goes back); the live gauges of a dead
worker are removed at the next scrape (`mark_process_dead`, as the library documents for
a process that exits).

Exposed (docs/operations.md "Metrics") by a plain-HTTP listener of the supervising
process (`okv server --metrics-port N`, on 127.0.0.1 unless [metrics] host says
otherwise), and/or as /metrics on the main port for a bearer token ([metrics] token_file;
`MetricsEndpoint`, which api/app.py mounts as /metrics).

An Outcome carries no request or response body, so no secret value, key material or token
can reach a label: the labels are the vault's name, the operation's name and the status.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import contextlib
import hmac
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openkeyvault.ops import rundir
from openkeyvault.ops.flusher import Flusher
from openkeyvault.ops.outcome import Outcome

if TYPE_CHECKING:
    from openkeyvault.config import Settings
    from openkeyvault.storage.db import Engines

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SUPERVISOR_ENV = "OKV_METRICS_SUPERVISOR"  # the supervising process's pid, for the workers
METRICS_PATH = "/metrics"
# Milliseconds, as Azure's ServiceApiLatency.
LATENCY_BUCKETS_MS = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
                      5000.0, 10000.0)
# Distinct vault label values one worker reports; further names count as "_other", so a
# flood of requests to made-up vault names cannot grow the series without bound.
MAX_VAULT_LABELS = 2000
OTHER_VAULT = "_other"
FLUSH_SECONDS = 1.0  # a worker's observations reach its files this often
STORAGE_PROBE_SECONDS = 5.0  # a probe with no answer by then counts as unreachable
STORAGE_PROBE_EVERY = 1.0
# Azure's ActivityType values (unverified beyond these four) from the operation's name.
_ACTIVITY_TYPES = (("Key", "key"), ("Secret", "secret"), ("Certificate", "certificate"),
                   ("Vault", "vault"), ("Authentication", "vault"))
_LABELS = ("vault", "activity_type", "activity_name")
_RESULT_LABELS = (*_LABELS, "status_code", "status_code_class")
_SLOTS = len(LATENCY_BUCKETS_MS) + 2  # the buckets, +Inf, and the sum
_LE = (*(repr(b) for b in LATENCY_BUCKETS_MS), "+Inf")
_RAW_BUCKET = "okv_raw_latency_bucket"
_RAW_SUM = "okv_raw_latency_sum"


def enabled(settings: Settings) -> bool:
    """Whether this node exposes metrics at all (a listener, or /metrics with a token)."""
    return settings.metrics_port is not None or settings.metrics_token_file is not None


def metrics_dir(settings: Settings) -> Path:
    """The node's multi-process directory: in memory where the machine has it (ops/rundir.py;
    these files go with the processes, and must not take room on the data disk), named
    after the data directory and the port (several dev nodes may share a data directory)."""
    where = rundir.run_dir()
    if where is None:
        return settings.data_dir / "run" / f"metrics-{settings.port}"
    return where / f"metrics-{rundir.tag(settings.data_dir.resolve(), settings.port)}"


def prepare(settings: Settings) -> Path | None:
    """In the supervising process, before any worker starts: an empty multi-process
    directory named in the environment the workers inherit; None when metrics are off."""
    if not enabled(settings):
        return None
    path = metrics_dir(settings)
    shutil.rmtree(path, ignore_errors=True)  # the last run's workers are all gone
    path.mkdir(parents=True, mode=0o700, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    return path


_installed_for: list[str] = []  # the directory this process's metric values write to


def _multiprocess(path: Path) -> None:
    """Make prometheus-client write to `path`'s files in this process. It chooses the
    kind of value when it is imported, and keeps each file open by name (`counter_PID.db`)
    whatever the directory: a process that imported it before, or that wrote to another
    directory (a test), gets a fresh value class for `path`."""
    if os.environ.get(MULTIPROC_ENV) != str(path):
        path.mkdir(parents=True, mode=0o700, exist_ok=True)
        os.environ[MULTIPROC_ENV] = str(path)
    from prometheus_client import values

    if _installed_for != [str(path)]:
        if _installed_for or not getattr(values.ValueClass, "_multiprocess", False):
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        _installed_for[:] = [str(path)]


def activity_type(operation: str, resource_kind: str) -> str:
    for prefix, kind in _ACTIVITY_TYPES:
        if operation.startswith(prefix):
            return kind
    return resource_kind or "other"


class MetricsObserver(Flusher):
    """The metrics Observer of one worker process.

    A request only adds to a small table in memory (its latency bucket and sum, under one
    uncontended lock: well under a microsecond); a daemon thread adds that table to the
    memory-mapped files every FLUSH_SECONDS and at exit. A worker killed outright loses at
    most that last second of its observations."""

    thread_name = "okv-metrics-flush"

    def __init__(self, per_vault: bool = True, engines: Engines | None = None,
                 interval: float = FLUSH_SECONDS) -> None:
        super().__init__(interval)
        from prometheus_client import CollectorRegistry, Counter, Gauge

        # The worker's own registry is never scraped: the exposition reads the files.
        registry = CollectorRegistry(auto_describe=False)
        # The latency histogram as counters of its own buckets (not cumulative) and of its
        # sum, which a flush can add whole batches to; the scrape turns them back into
        # ServiceApiLatency, and derives ServiceApiResult and ServiceApiHit from their
        # counts (`_AzureMetrics`).
        self._bucket = Counter(_RAW_BUCKET, "Requests per latency bucket (raw).",
                               (*_RESULT_LABELS, "le"), registry=registry)
        self._sum = Counter(_RAW_SUM, "Sum of request latencies in ms (raw).",
                            _RESULT_LABELS, registry=registry)
        self._saturation = Gauge("okv_saturation_shoebox_percent",
                                 "Share of the throttling limit in use, percent (Azure: "
                                 "SaturationShoebox), as the throttle last set it.",
                                 ("vault", "transaction_type"), registry=registry,
                                 multiprocess_mode="livemax")
        self._pool = Gauge("okv_storage_connections_in_use",
                           "Database connections checked out of the pools.", ("pool",),
                           registry=registry, multiprocess_mode="livesum")
        self._per_vault = per_vault
        self._pending: dict[tuple[str | None, str, int, str], list[float]] = {}
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._children: dict[tuple[str | None, str, int, str],
                             tuple[list[Any], Any, tuple[str, ...]]] = {}
        self._vaults: set[str] = set()
        self._engines = engines

    def observe(self, outcome: Outcome) -> None:
        try:
            ms = outcome.duration_ms
            slot = bisect.bisect_left(LATENCY_BUCKETS_MS, ms)
            key = (outcome.resource_name, outcome.operation, outcome.status,
                   outcome.resource_kind)
            with self._lock:
                entry = self._pending.get(key)
                if entry is None:
                    entry = self._pending[key] = [0.0] * _SLOTS
                entry[slot] += 1
                entry[-1] += ms
        except Exception:  # noqa: BLE001, S110 - an observer never fails a request
            pass

    def flush(self) -> None:
        """Add what was observed since the last flush to this worker's files."""
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, {}
            for key, entry in pending.items():
                buckets, total, labels = self._children.get(key) or self._new_children(key)
                for slot in range(_SLOTS - 1):
                    if entry[slot]:
                        child = buckets[slot]
                        if child is None:
                            child = buckets[slot] = self._bucket.labels(*labels, _LE[slot])
                        child.inc(entry[slot])
                total.inc(entry[-1])
            if self._engines is not None:
                self._sample_pools()

    def _new_children(self, key: tuple[str | None, str, int, str]
                      ) -> tuple[list[Any], Any, tuple[str, ...]]:
        name, operation, status, kind = key
        code = str(status)
        labels = (self._vault_label(name), activity_type(operation, kind),
                  operation or "unmatched", code, f"{code[0]}xx")
        children = ([None] * (_SLOTS - 1), self._sum.labels(*labels), labels)
        self._children[key] = children
        return children

    def _vault_label(self, name: str | None) -> str:
        if not self._per_vault or not name:
            return ""
        if name in self._vaults:
            return name
        if len(self._vaults) >= MAX_VAULT_LABELS:
            return OTHER_VAULT
        self._vaults.add(name)
        return name

    def _sample_pools(self) -> None:
        engines = self._engines
        assert engines is not None
        pools = {"read": engines.read, "write": engines.write}
        for label, engine in pools.items():
            checkedout = getattr(engine.pool, "checkedout", None)
            if checkedout is not None:
                self._pool.labels(label).set(checkedout())

    def saturation(self, vault: str, transaction_type: str, percent: float) -> None:
        """What the throttle reports: the share of `vault`'s limit of `transaction_type`
        (a throttling class) used in the current window, in percent."""
        with contextlib.suppress(Exception):
            self._saturation.labels(self._vault_label(vault), transaction_type).set(percent)


class NoMetrics:
    """The Observer where metrics are off: does nothing."""

    def observe(self, outcome: Outcome) -> None:
        return None

    def saturation(self, vault: str, transaction_type: str, percent: float) -> None:
        return None


def open_metrics(settings: Settings,
                 engines: Engines | None = None) -> MetricsObserver | NoMetrics:
    """The metrics Observer of a worker (the composition root calls this once per process);
    `engines`, if given, are sampled for connections in use about once a second."""
    if not enabled(settings):
        return NoMetrics()
    _multiprocess(Path(os.environ.get(MULTIPROC_ENV) or metrics_dir(settings)))
    return MetricsObserver(settings.metrics_per_vault, engines).start()


# ---- the exposition (the supervising process, or a worker for the token endpoint) -------
def _children_of(pid: int) -> list[int]:
    """The child processes of `pid` (Linux /proc; [] elsewhere)."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                found.update(int(c) for c in
                             Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


class _DeadWorkers:
    """Drops the live gauges of workers that are gone, before each scrape."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def collect(self) -> Iterator[Any]:
        from prometheus_client import multiprocess

        pids = {int(m.group(1)) for f in os.listdir(self._path)
                if (m := _LIVE_FILE.fullmatch(f))}
        for pid in pids:
            if not _alive(pid):
                multiprocess.mark_process_dead(pid, str(self._path))  # type: ignore[no-untyped-call]
        return iter(())


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


LATENCY = "okv_service_api_latency_milliseconds"


class _AzureMetrics:
    """Every worker's files summed, with Azure's three request metrics built from the raw
    counters the workers write: ServiceApiLatency (a histogram: cumulative buckets, sum,
    count), ServiceApiResult (its count per vault, operation and status) and ServiceApiHit
    (per vault and operation)."""

    def __init__(self, files: Any) -> None:
        self._files = files

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        buckets: dict[tuple[str, ...], dict[str, float]] = {}
        sums: dict[tuple[str, ...], float] = {}
        for family in self._files.collect():
            if family.name == _RAW_BUCKET:
                for sample in family.samples:
                    labels = tuple(sample.labels.get(k, "") for k in _RESULT_LABELS)
                    per = buckets.setdefault(labels, {})
                    le = sample.labels.get("le", "+Inf")
                    per[le] = per.get(le, 0.0) + sample.value
            elif family.name == _RAW_SUM:
                for sample in family.samples:
                    labels = tuple(sample.labels.get(k, "") for k in _RESULT_LABELS)
                    sums[labels] = sums.get(labels, 0.0) + sample.value
            else:
                yield family
        latency = HistogramMetricFamily(LATENCY, "Server time of a request in milliseconds "
                                        "(Azure: ServiceApiLatency).", labels=_RESULT_LABELS)
        result = CounterMetricFamily("okv_service_api_result", "Answered requests by "
                                     "status (Azure: ServiceApiResult).",
                                     labels=_RESULT_LABELS)
        hit = CounterMetricFamily("okv_service_api_hit", "Requests (Azure: ServiceApiHit).",
                                  labels=_LABELS)
        hits: dict[tuple[str, ...], float] = {}
        for labels in sorted(buckets):
            per, running, cumulative = buckets[labels], 0.0, []
            for le in _LE:
                running += per.get(le, 0.0)
                cumulative.append((le, running))
            latency.add_metric(list(labels), cumulative, sums.get(labels, 0.0))
            result.add_metric(list(labels), running)
            hits[labels[:3]] = hits.get(labels[:3], 0.0) + running
        for labels3, n in sorted(hits.items()):
            hit.add_metric(list(labels3), n)
        yield hit
        yield result
        yield latency


class _Processes:
    """process_* metrics (CPU, memory, open files, start time) of the supervising process
    and each worker, labelled with role and pid."""

    def __init__(self, supervisor: int) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Any]:
        from prometheus_client import ProcessCollector

        families: dict[str, Any] = {}
        procs = [(self._supervisor, "supervisor")]
        procs += [(p, "worker") for p in _children_of(self._supervisor)]
        for pid, role in procs:
            collector = ProcessCollector(pid=_constant(pid), registry=None)
            for family in collector.collect():
                into = families.setdefault(family.name, family)
                samples = [s._replace(labels={**s.labels, "role": role, "pid": str(pid)})
                           for s in family.samples]
                if into is family:
                    family.samples = samples
                else:
                    into.samples.extend(samples)
        workers = sum(1 for _, role in procs if role == "worker")
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("okv_workers", "Worker processes running.", value=workers)
        yield from families.values()


class _StorageHealth:
    """okv_storage_up: whether the database answers a one-row read (probed at most once a
    second, one probe at a time; no answer within STORAGE_PROBE_SECONDS is down)."""

    def __init__(self, open_engines: Callable[[], Engines]) -> None:
        self._open = open_engines
        self._engines: Engines | None = None
        self._running: concurrent.futures.Future[bool] | None = None
        self._seen = (-STORAGE_PROBE_EVERY, 0.0, 0.0)  # (when, up, seconds)
        self._lock = threading.Lock()

    def _probe(self, result: concurrent.futures.Future[bool]) -> None:
        """On a daemon thread: a probe that hangs never holds up the process's exit."""
        from openkeyvault.storage.db import reachable

        try:
            if self._engines is None:
                self._engines = self._open()
            result.set_result(reachable(self._engines))
        except Exception as exc:  # noqa: BLE001 - the database cannot be opened: down
            result.set_exception(exc)

    def _state(self) -> tuple[float, float]:
        with self._lock:
            when, up, took = self._seen
            if time.monotonic() - when < STORAGE_PROBE_EVERY:
                return up, took
            if self._running is not None and not self._running.done():
                return 0.0, STORAGE_PROBE_SECONDS  # the last probe still hangs
            start = time.monotonic()
            running = self._running = concurrent.futures.Future()
            threading.Thread(target=self._probe, args=(running,), name="okv-metrics-probe",
                             daemon=True).start()
        try:
            ok = running.result(timeout=STORAGE_PROBE_SECONDS)
        except Exception:  # noqa: BLE001 - no answer in time, or the open failed
            ok = False
        took = time.monotonic() - start
        with self._lock:
            self._seen = (time.monotonic(), 1.0 if ok else 0.0, took)
        return (1.0 if ok else 0.0), took

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up, took = self._state()
        yield GaugeMetricFamily("okv_storage_up", "1 while the database answers a read.",
                                value=up)
        yield GaugeMetricFamily("okv_storage_probe_seconds",
                                "How long the last database probe took.", value=took)


def exposition_registry(settings: Settings,
                        engines: Callable[[], Engines] | None = None) -> Any:
    """What a scrape returns: every worker's files summed, process and storage health.
    `engines` opens the database for the health probe (default: a connection of its own,
    opened at the first scrape)."""
    path = Path(os.environ.get(MULTIPROC_ENV) or metrics_dir(settings))
    path.mkdir(parents=True, mode=0o700, exist_ok=True)
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DeadWorkers(path))  # first: before the files are read
    registry.register(_AzureMetrics(
        MultiProcessCollector(None, path=str(path))))  # type: ignore[no-untyped-call]
    supervisor = int(os.environ.get(SUPERVISOR_ENV) or os.getpid())
    registry.register(_Processes(supervisor))

    def own_engines() -> Engines:
        from openkeyvault.storage.db import open_database

        return open_database(settings.database_url or settings.db_path)

    registry.register(_StorageHealth(engines or own_engines))
    return registry


class MetricsListenError(Exception):
    """The metrics listener cannot own its address; the message says why."""


def serve_listener(settings: Settings) -> Any:
    """Start the metrics listener of the supervising process (plain HTTP, a daemon thread);
    what the library returns for it, or None when no port is configured."""
    if settings.metrics_port is None:
        return None
    from prometheus_client import start_http_server

    registry = exposition_registry(settings)
    try:
        started = start_http_server(settings.metrics_port, settings.metrics_host,
                                    registry=registry)
    except OSError as exc:
        raise MetricsListenError(
            f"cannot listen for metrics on {settings.metrics_host}:{settings.metrics_port}: "
            f"{exc.strerror or exc}. Choose another --metrics-port.") from None
    return started


class MetricsEndpoint:
    """/metrics on the main port, for the bearer token in [metrics] token_file."""

    def __init__(self, settings: Settings, engines: Engines | None = None) -> None:
        assert settings.metrics_token_file is not None
        self._token_file = Path(settings.metrics_token_file)
        self._registry = exposition_registry(
            settings, None if engines is None else (lambda: engines))

    def _token(self) -> bytes | None:
        """Read at every scrape, so a replaced token file takes effect at once."""
        try:
            token = self._token_file.read_bytes().strip()
        except OSError:
            return None
        return token or None

    def respond(self, authorization: str | None) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of a GET /metrics with this Authorization header."""
        token = self._token()
        given = (authorization or "").encode()
        scheme, _, value = given.partition(b" ")
        if token is None or scheme.lower() != b"bearer" or \
                not hmac.compare_digest(value.strip(), token):
            body = json.dumps({"error": {"code": "Unauthorized", "message":
                                         "The metrics endpoint needs the bearer token of "
                                         "the deployment's [metrics] token_file."}})
            return 401, {"content-type": "application/json; charset=utf-8",
                         "www-authenticate": 'Bearer realm="metrics"'}, body.encode()
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return 200, {"content-type": CONTENT_TYPE_LATEST}, generate_latest(self._registry)
