"""The metrics listener of `okv server --metrics-port`: loopback only by default, every
worker's process metrics and the database's health, the last run's files gone, a worker
replaced after a crash counted, and a taken port refused before anything is served."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import DevServer, free_port
from tests.support.waiting import wait_for


def scrape(port: int, host: str = "127.0.0.1") -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=20) as r:
        assert r.status == 200
        text = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on `port` (Linux /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


def test_listener_serves_workers_and_storage_on_loopback(tmp_path: Path) -> None:
    data = tmp_path / "data"
    mport = free_port()
    server = DevServer(data_dir=data, port=free_port(), workers=2,
                       extra_args=("--metrics-port", str(mport)))
    stale = _metrics_dir(data, server.port)
    stale.mkdir(parents=True)
    (stale / "counter_999999.db").write_bytes(b"\0" * 64)  # a crashed run's file
    server.start()
    try:
        assert listening_addresses(mport) == {"0100007F"}  # 127.0.0.1 only
        assert not (stale / "counter_999999.db").exists()
        found = wait_for(lambda: (f := scrape(mport))["okv_workers"][0][1] == 2 and f,
                         "both workers running")
        assert found["okv_storage_up"][0][1] == 1
        roles = sorted(labels["role"] for labels, _ in found["process_resident_memory_bytes"])
        assert roles == ["supervisor", "worker", "worker"]
        workers = {labels["pid"] for labels, _ in found["process_cpu_seconds_total"]
                   if labels["role"] == "worker"}
        assert all(v > 0 for _, v in found["process_resident_memory_bytes"])

        # A worker killed outright is replaced; the scrape counts the new one, not the dead.
        os.kill(int(next(iter(workers))), signal.SIGKILL)

        def replaced() -> set[str]:
            try:
                f = scrape(mport)
            except OSError:  # a scrape the killed worker was answering: asked again
                return set()
            now = {labels["pid"] for labels, _ in f["process_cpu_seconds_total"]
                   if labels["role"] == "worker"}
            return now if len(now) == 2 and now != workers else set()

        now = wait_for(replaced, "the killed worker replaced")
        assert len(now & workers) == 1
        # The main port still serves meanwhile, and the metrics listener is not on it.
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            pass
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_a_taken_metrics_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        data = tmp_path / "data"
        r = subprocess.run([sys.executable, "-m", "openkeyvault", "server", "--dev",
                            "--data-dir", str(data), "--port", str(free_port()),
                            "--metrics-port", str(port)],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 78, r.stderr
    assert f"cannot listen for metrics on 127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr


def _metrics_dir(data: Path, port: int) -> Path:
    """Where a node on `data` and `port` keeps its workers' metric files."""
    from openkeyvault.config import Settings
    from openkeyvault.ops.metrics import metrics_dir

    return metrics_dir(Settings(data_dir=data, port=port, dev=True))


def test_no_metrics_port_no_listener_no_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = DevServer(data_dir=data, port=free_port())
    server.start()
    try:
        assert not _metrics_dir(data, server.port).exists()
    finally:
        server.stop()


def test_a_production_node_serves_the_listener_of_its_configuration(tmp_path: Path) -> None:
    from tests.support.production import Node, okv, write_config

    port, mport = free_port(), free_port()
    config = write_config(tmp_path, port, {"type": "shamir", "shares": 3, "threshold": 2})
    config.write_text(config.read_text() + f"\n[metrics]\nport = {mport}\n")
    made = okv("init", "--config", str(config))
    assert made.returncode == 0, made.stderr
    node = Node(tmp_path, config, port)
    node.start()
    try:  # sealed: the node serves no vault yet, its metrics listener already answers
        assert listening_addresses(mport) == {"0100007F"}
        found = scrape(mport)
        assert found["okv_storage_up"][0][1] == 1
        assert any(labels["role"] == "supervisor"
                   for labels, _ in found["process_resident_memory_bytes"])
        assert _metrics_dir(tmp_path / "data", port).is_dir()
    finally:
        node.stop()
