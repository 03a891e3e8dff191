"""What a PostgreSQL deployment answers while its database is away, and what it keeps when
something dies in the middle of writes.

- PostgreSQL stopped: every request that needs the database is 503 with Retry-After, the
  log says so once (no traceback per request), /healthz still answers and says storage
  is unreachable, and the node serves again by itself once PostgreSQL is back; an Azure
  SDK client with its default retry policy carries a write through a short outage.
- A node killed (SIGKILL to its whole process group) while several clients write through
  it and through a second node: every acknowledged write reads back on the survivor, and
  no certificate is half written (its key, secret and certificate versions exist
  together or not at all).
- PostgreSQL restarted in immediate mode (a crash: no checkpoint, no goodbye to clients)
  while clients write, on a cluster that flushes every commit (fsync and synchronous
  commits on), and on one with synchronous commits off: every acknowledged write
  survives, and an unacknowledged one happened entirely or not at all.

Outcomes have generous deadlines; nothing here measures speed. The counts of writes
attempted, acknowledged and found are printed (`pytest -s`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.certificates import CertificateClient
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient

from tests.support.identity import NodeIdentity
from tests.support.postgres import PostgresCluster, postgres_cluster
from tests.support.procfs import children
from tests.support.server import DevServer, running

pytestmark = pytest.mark.usefixtures("resolve_localhost")

API = {"api-version": "7.5"}
DEADLINE = 180.0  # seconds an outcome may take (recovery, enough writes); never a measure
WRITERS_PER_NODE = 3
EC_POLICY = {"policy": {
    "key_props": {"kty": "EC", "crv": "P-256", "exportable": True, "reuse_key": False},
    "secret_props": {"contentType": "application/x-pkcs12"},
    "x509_props": {"subject": "CN=durable.example.com", "validity_months": 12},
    "issuer": {"name": "Self"},
}}


# ---- clients -----------------------------------------------------------------------------
class Rest:
    """Raw HTTPS to one node's default vault, one attempt per call (no retries: what the
    server acknowledged is exactly what it answered 2xx)."""

    def __init__(self, node: DevServer) -> None:
        self.node = node
        token = NodeIdentity(node).get_token(f"https://vault.localhost:{node.port}/.default")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token.token}"

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.session.request(method, self.node.vault_url() + path, params=API,
                                    json=body, verify=self.node.ca, timeout=60)


def sdk(node: DevServer, cls: Any, **kw: Any) -> Any:
    return cls(node.vault_url(), NodeIdentity(node), connection_verify=node.ca, **kw)


def pg_ctl(cluster: PostgresCluster, *args: str) -> None:
    """`pg_ctl ARGS` on the cluster (start and restart log to its file: a pipe would be held
    open by the server)."""
    log = ("-l", str(cluster.log_path)) if {"start", "restart"} & set(args) else ()
    done = cluster.run("pg_ctl", "-D", str(cluster.data), *log, "-w", "-t", "60", *args,
                       timeout=90)
    assert done.returncode == 0, f"pg_ctl {args}: {done.stderr}\n{cluster.log()[-3000:]}"


def until(what: str, check: Any, deadline: float = DEADLINE) -> Any:
    """Poll `check` until it returns something true; fail after `deadline` seconds."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"not within {deadline:.0f}s: {what}")


def statuses(log: str) -> Counter[int]:
    """HTTP statuses in an access log text."""
    return Counter(int(m) for m in re.findall(r" (\d{3}) [\d.]+ms$", log, re.MULTILINE))


# ---- the database away -------------------------------------------------------------------
@pytest.fixture(scope="module")
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster of this module's own: these tests stop and start it."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def node(own_cluster: PostgresCluster, tmp_path: Path) -> Iterator[DevServer]:
    url = own_cluster.create_database()
    with running(tmp_path / "data", extra_args=("--database", url)) as server:
        yield server


@pytest.fixture
def postgres_stopped(own_cluster: PostgresCluster) -> Iterator[Any]:
    """Stop (immediate) and start the cluster at will; it runs again after the test."""

    class Control:
        def stop(self) -> None:
            pg_ctl(own_cluster, "-m", "immediate", "stop")

        def start(self) -> None:
            pg_ctl(own_cluster, "start")

    yield Control()
    if not (own_cluster.data / "postmaster.pid").exists():
        pg_ctl(own_cluster, "start")


def health_of(node: DevServer) -> tuple[int, str]:
    answer = requests.get(f"{node.url}/healthz", verify=node.ca, timeout=60)
    return answer.status_code, answer.json().get("storage", "")


def _unavailable(answer: requests.Response) -> bool:
    return (answer.status_code == 503 and answer.headers.get("Retry-After", "").isdigit()
            and int(answer.headers["Retry-After"]) > 0
            and answer.json()["error"]["code"] == "ServiceUnavailable")


REQUESTS_NEEDING_THE_DATABASE: list[tuple[str, str, Any]] = [
    ("GET", "/secrets/before", None),
    ("PUT", "/secrets/during", {"value": "written while the database is away"}),
    ("GET", "/secrets", None),
    ("GET", "/secrets/before/versions", None),
    ("PATCH", "/secrets/before/", {"tags": {"a": "b"}}),
    ("DELETE", "/secrets/before", None),
    ("GET", "/deletedsecrets", None),
    ("POST", "/keys/during/create", {"kty": "EC", "crv": "P-256"}),
    ("GET", "/keys/signer", None),
    ("POST", "/certificates/during/create", EC_POLICY),
    ("GET", "/certificates", None),
]


def test_while_postgresql_is_away_requests_are_503_with_retry_after_and_the_node_recovers(
        node: DevServer, postgres_stopped: Any) -> None:
    rest = Rest(node)
    assert rest.call("PUT", "/secrets/before", {"value": "v"}).status_code == 200
    assert rest.call("POST", "/keys/signer/create", {"kty": "EC", "crv": "P-256"}
                     ).status_code == 200
    assert health_of(node) == (200, "reachable")
    log_from = len(node.log())

    postgres_stopped.stop()
    refused = 0
    for _ in range(3):
        for method, path, body in REQUESTS_NEEDING_THE_DATABASE:
            answer = rest.call(method, path, body)
            assert _unavailable(answer), (method, path, answer.status_code, answer.text)
            refused += 1
    # A new token needs the identity rows: the managed-identity endpoint says 503 too.
    token = requests.get(node.env["IDENTITY_ENDPOINT"],
                         params={"resource": f"https://vault.localhost:{node.port}",
                                 "api-version": "2019-08-01"},
                         headers={"X-IDENTITY-HEADER": node.env["IDENTITY_HEADER"]},
                         verify=node.ca, timeout=30)
    assert _unavailable(token), (token.status_code, token.text)
    # The node is out of a load balancer's rotation while it cannot serve.
    until("/healthz says storage is unreachable",
          lambda: health_of(node) == (503, "unreachable"))

    postgres_stopped.start()
    until("the node serves again", lambda: rest.call("GET", "/secrets/before").status_code
          == 200)
    # Every pooled connection died with the server: each one is replaced, none is used.
    for _ in range(3):
        assert rest.call("GET", "/secrets/before").json()["value"] == "v"
        assert rest.call("PUT", "/secrets/after", {"value": "w"}).status_code == 200
        assert rest.call("GET", "/keys/signer").status_code == 200
    assert rest.call("GET", "/secrets/during").status_code == 404  # nothing was half done
    until("/healthz says storage is reachable", lambda: health_of(node) == (200, "reachable"))

    log = node.log()[log_from:]
    assert "Traceback" not in log, log[-4000:]
    assert statuses(log)[500] == 0, log[-4000:]
    # One line for the whole outage (one worker, well within the fault log's interval),
    # however many requests were refused.
    faults = log.count("storage fault:")
    assert 1 <= faults <= 2 < refused, log[-4000:]


def test_a_request_in_flight_when_postgresql_dies_is_503_not_500(
        node: DevServer, postgres_stopped: Any) -> None:
    """Writers and readers busy on every pooled connection when the server is killed: each
    answer is 200 or 503; afterwards every broken pooled connection is replaced."""
    rest = Rest(node)
    assert rest.call("PUT", "/secrets/busy", {"value": "0"}).status_code == 200
    stop = threading.Event()
    seen: Counter[int] = Counter()
    lock = threading.Lock()

    def busy(n: int) -> None:
        mine = Rest(node)
        for i in itertools.count():
            if stop.is_set():
                return
            answer = (mine.call("PUT", f"/secrets/busy-{n}", {"value": str(i)}) if i % 2
                      else mine.call("GET", "/secrets/busy"))
            with lock:
                seen[answer.status_code] += 1

    threads = [threading.Thread(target=busy, args=(n,), daemon=True) for n in range(6)]
    for t in threads:
        t.start()
    until("requests under way", lambda: seen[200] >= 30)
    postgres_stopped.stop()
    until("requests refused", lambda: seen[503] >= 30)
    postgres_stopped.start()
    before = seen[200]
    until("requests served again", lambda: seen[200] >= before + 60)
    stop.set()
    for t in threads:
        t.join(60)
    assert set(seen) == {200, 503}, seen
    log = node.log()
    assert "Traceback" not in log, log[-4000:]


def test_connections_pooled_before_a_restart_are_replaced_not_used(
        node: DevServer, postgres_stopped: Any) -> None:
    """Many connections open and idle when PostgreSQL restarts, no request in between: the
    first requests afterwards find them dead and get fresh ones, never a 503."""
    rest = Rest(node)
    assert rest.call("PUT", "/secrets/pooled", {"value": "v"}).status_code == 200

    def burst(n: int) -> list[int]:
        mine = Rest(node)
        return [(mine.call("PUT", f"/secrets/pooled-{n}", {"value": str(i)}) if i % 2
                 else mine.call("GET", "/secrets/pooled")).status_code for i in range(10)]

    def concurrently() -> Counter[int]:
        got: Counter[int] = Counter()
        with ThreadPoolExecutor(8) as pool:
            for answers in pool.map(burst, range(8)):
                got.update(answers)
        return got

    assert concurrently() == {200: 80}  # every pool holds several connections now
    postgres_stopped.stop()
    postgres_stopped.start()
    answers = Counter(rest.call("GET", "/secrets/pooled").status_code for _ in range(10))
    answers.update(concurrently())
    assert answers == {200: 90}, answers


def test_a_database_that_hangs_takes_the_node_out_of_rotation(
        node: DevServer, own_cluster: PostgresCluster) -> None:
    """PostgreSQL frozen (SIGSTOP: connections open, no answer): /healthz answers 503 once
    its probe has waited long enough, and 200 again when the database thaws."""
    assert health_of(node) == (200, "reachable")
    postmaster = int((own_cluster.data / "postmaster.pid").read_text().split()[0])
    frozen = {postmaster} | children(postmaster)
    try:
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        until("/healthz says storage is unreachable",
              lambda: health_of(node) == (503, "unreachable"))
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    until("/healthz says storage is reachable", lambda: health_of(node) == (200, "reachable"))


def test_the_sdk_carries_a_write_through_a_short_outage(node: DevServer,
                                                        postgres_stopped: Any) -> None:
    """SecretClient with its default retry policy: the call made while PostgreSQL is down
    is answered 503 + Retry-After, retried, and succeeds once the database is back."""
    secrets: SecretClient = sdk(node, SecretClient)
    secrets.set_secret("carried", "before")  # the token is fetched (and cached) now
    postgres_stopped.stop()
    outcome: dict[str, Any] = {}

    def write() -> None:
        try:
            outcome["secret"] = secrets.set_secret("carried", "during the outage")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    until("the write refused once", lambda: re.search(r"PUT /secrets/carried 503", node.log()))
    postgres_stopped.start()
    writer.join(DEADLINE)
    assert not writer.is_alive()
    assert "error" not in outcome, outcome
    assert outcome["secret"].value == "during the outage"
    assert secrets.get_secret("carried").value == "during the outage"


# ---- writes, and something dies ----------------------------------------------------------
@dataclass
class Ledger:
    """Every write attempted, and which the server acknowledged (answered 2xx)."""

    secrets: dict[str, str] = field(default_factory=dict)  # unique name -> value
    versions: dict[str, dict[str, str | None]] = field(default_factory=dict)  # shared name ->
    # {value written: version acknowledged, or None}
    certificates: dict[str, bool] = field(default_factory=dict)  # name -> acknowledged
    acked: set[str] = field(default_factory=set)  # unique secret names acknowledged
    answers: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attempted(self) -> int:
        return len(self.secrets) + sum(map(len, self.versions.values())) + \
            len(self.certificates)

    def acknowledged(self) -> int:
        return len(self.acked) + sum(v is not None for d in self.versions.values()
                                     for v in d.values()) + sum(self.certificates.values())


SHARED = ("shared-a", "shared-b")


def writer(rest: Rest, tag: str, ledger: Ledger, stop: threading.Event) -> None:
    """Write until `stop`: new secrets, new versions of shared secrets (two nodes race on
    the same rows), new self-signed certificates (three objects in one transaction)."""
    for i in itertools.count():
        if stop.is_set():
            return
        kind = i % 4
        name = f"{tag}-{i}"
        value = f"{tag}-{i}-{uuid.uuid4().hex}"
        with ledger.lock:
            if kind in (0, 1):
                ledger.secrets[name] = value
            elif kind == 2:
                ledger.versions.setdefault(SHARED[i % 8 // 4], {})[value] = None
            else:
                ledger.certificates[name] = False
        try:
            if kind in (0, 1):
                answer = rest.call("PUT", f"/secrets/{name}", {"value": value})
            elif kind == 2:
                answer = rest.call("PUT", f"/secrets/{SHARED[i % 8 // 4]}", {"value": value})
            else:
                answer = rest.call("POST", f"/certificates/{name}/create", EC_POLICY)
        except requests.RequestException:
            with ledger.lock:
                ledger.answers["no answer"] += 1
            if stop.wait(0.05):  # a killed node: try again shortly (until told to stop)
                return
            continue
        with ledger.lock:
            ledger.answers[str(answer.status_code)] += 1
            if answer.status_code == 200 and kind in (0, 1):
                ledger.acked.add(name)
            elif answer.status_code == 200:
                ledger.versions[SHARED[i % 8 // 4]][value] = answer.json()["id"].rsplit(
                    "/", 1)[1]
            elif answer.status_code == 202:
                ledger.certificates[name] = True
        if answer.status_code == 503:
            stop.wait(0.1)


@dataclass
class Found:
    acknowledged_found: int = 0
    unacknowledged_found: int = 0


def verify(node: DevServer, ledger: Ledger) -> Found:
    """Read every write back through `node`: acknowledged ones are there with their value;
    the others are there whole or not at all."""
    secrets: SecretClient = sdk(node, SecretClient)
    keys: KeyClient = sdk(node, KeyClient)
    certificates: CertificateClient = sdk(node, CertificateClient)
    found = Found()
    for name, value in ledger.secrets.items():
        try:
            got = secrets.get_secret(name).value
        except ResourceNotFoundError:
            assert name not in ledger.acked, f"acknowledged secret {name} lost"
            continue
        assert got == value, name
        if name in ledger.acked:
            found.acknowledged_found += 1
        else:
            found.unacknowledged_found += 1
    for name, written in ledger.versions.items():
        listed = {p.version for p in secrets.list_properties_of_secret_versions(name)}
        values = {secrets.get_secret(name, v).value: v for v in listed}
        assert set(values) <= set(written), f"{name}: a value nobody wrote"
        for value, version in written.items():
            if version is not None:
                assert values.get(value) == version, f"acknowledged version of {name} lost"
                found.acknowledged_found += 1
            elif value in values:
                found.unacknowledged_found += 1
    for name, acked in ledger.certificates.items():
        cert_versions = _versions(certificates.list_properties_of_certificate_versions, name)
        key_versions = _versions(keys.list_properties_of_key_versions, name)
        secret_versions = _versions(secrets.list_properties_of_secret_versions, name)
        assert cert_versions == key_versions == secret_versions, \
            f"certificate {name} half written: {cert_versions} {key_versions} {secret_versions}"
        assert len(cert_versions) <= 1, name
        if acked:
            assert cert_versions, f"acknowledged certificate {name} lost"
            assert certificates.get_certificate(name).cer
            found.acknowledged_found += 1
        elif cert_versions:
            found.unacknowledged_found += 1
    return found


def _versions(listing: Any, name: str) -> set[str]:
    """The versions `listing(name)` lists (none when there is no such object)."""
    try:
        return {p.version for p in listing(name)}
    except ResourceNotFoundError:
        return set()


def report(what: str, ledger: Ledger, found: Found) -> None:
    print(f"\n{what}: attempted {ledger.attempted()}, acknowledged {ledger.acknowledged()}, "
          f"acknowledged found {found.acknowledged_found}, unacknowledged found "
          f"{found.unacknowledged_found}; answers {dict(ledger.answers)}")


def _run_writers(nodes: list[DevServer], ledger: Ledger, stop: threading.Event
                 ) -> list[threading.Thread]:
    threads = []
    for n, server in enumerate(nodes):
        for w in range(WRITERS_PER_NODE):
            t = threading.Thread(target=writer, args=(Rest(server), f"n{n}w{w}", ledger, stop),
                                 daemon=True)
            t.start()
            threads.append(t)
    return threads


def _count(ledger: Ledger) -> int:
    with ledger.lock:
        return ledger.acknowledged()


def test_a_node_killed_mid_write_loses_no_acknowledged_write(
        postgres: PostgresCluster, tmp_path: Path) -> None:
    url = postgres.create_database()
    data = tmp_path / "data"
    with running(data, extra_args=("--database", url)) as doomed, \
            running(data, extra_args=("--database", url)) as survivor:
        ledger, stop = Ledger(), threading.Event()
        threads = _run_writers([doomed, survivor], ledger, stop)
        try:
            until("writes acknowledged on both nodes", lambda: _count(ledger) >= 60)
            assert doomed.proc is not None
            os.killpg(doomed.proc.pid, signal.SIGKILL)  # main process and workers at once
            doomed.proc.wait(60)
            after = _count(ledger)
            until("the survivor goes on", lambda: _count(ledger) >= after + 40)
        finally:
            stop.set()
            for t in threads:
                t.join(90)
        found = verify(survivor, ledger)
        report("node killed", ledger, found)
        assert found.acknowledged_found == ledger.acknowledged()
        assert not {a for a in ledger.answers if a.startswith("5") and a != "503"}, \
            ledger.answers


@pytest.mark.parametrize("durable", [True, False], ids=["fsync-on", "synchronous-commit-off"])
def test_postgresql_crashing_mid_write_loses_no_acknowledged_write(tmp_path: Path,
                                                                   durable: bool) -> None:
    """`pg_ctl restart -m immediate`: a crash of the database server, as far as this
    deployment can tell. On a cluster that flushes its commits (fsync and
    synchronous_commit on), and on the test cluster's settings (synchronous_commit off,
    where PostgreSQL answers a COMMIT before writing it: the node's sessions turn it on)."""
    with postgres_cluster(durable=durable) as cluster:
        url = cluster.create_database()
        data = tmp_path / "data"
        with running(data, extra_args=("--database", url)) as first, \
                running(data, extra_args=("--database", url)) as second:
            ledger, stop = Ledger(), threading.Event()
            threads = _run_writers([first, second], ledger, stop)
            try:
                until("writes acknowledged", lambda: _count(ledger) >= 60)
                pg_ctl(cluster, "-m", "immediate", "restart")
                after = _count(ledger)
                until("writes acknowledged after the restart",
                      lambda: _count(ledger) >= after + 40)
            finally:
                stop.set()
                for t in threads:
                    t.join(90)
            found = verify(second, ledger)
            report(f"postgresql restarted (durable={durable})", ledger, found)
            assert found.acknowledged_found == ledger.acknowledged()
            assert not {a for a in ledger.answers if a.startswith("5") and a != "503"}, \
                ledger.answers
            log = first.log() + second.log()
            assert "Traceback" not in log, log[-4000:]
