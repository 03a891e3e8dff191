"""Metrics and usage against the real server: the counters move as requests are made
(refusals included, no secret value in any label), and the billed counts match the
operations performed, across workers, a clean restart and a kill after a flush."""

from __future__ import annotations

import hashlib
import json
import signal
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient
from prometheus_client.parser import text_string_to_metric_families

from openkeyvault.ops.usage import month_of
from tests.support.server import DevServer, free_port
from tests.support.waiting import wait_for

Samples = list[tuple[str, dict[str, str], float]]


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20) as r:
        return r.read().decode()


def scrape(port: int) -> Samples:
    return [(s.name, s.labels, s.value)
            for family in text_string_to_metric_families(scrape_text(port))
            for s in family.samples]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples if n == name and labels.items() <= ls.items())


def secrets_client(server: DevServer) -> SecretClient:
    return SecretClient(server.url, ManagedIdentityCredential(),
                        verify_challenge_resource=False)


def test_metrics_counters_move_as_requests_are_made(
        tmp_path: Path, use_server_env: Callable[[DevServer], None]) -> None:
    mport = free_port()
    server = DevServer(data_dir=tmp_path / "data", port=free_port(), workers=2,
                       extra_args=("--metrics-port", str(mport)))
    server.start()
    try:
        use_server_env(server)
        client = secrets_client(server)
        name = f"m-{uuid.uuid4().hex[:8]}"
        value = f"do-not-leak-{uuid.uuid4().hex}"
        for _ in range(3):
            client.set_secret(name, value)
        for _ in range(5):
            assert client.get_secret(name).value == value
        with pytest.raises(ResourceNotFoundError):
            client.get_secret(f"missing-{uuid.uuid4().hex[:8]}")

        def settled() -> Samples | None:
            s = scrape(mport)
            done = total(s, "okv_service_api_result_total", activity_name="SecretGet",
                         status_code="200") == 5
            return s if done else None

        s = wait_for(settled, "five SecretGet results in the metrics")
        common = {"vault": "dev", "activity_type": "secret"}
        assert total(s, "okv_service_api_hit_total", activity_name="SecretGet", **common) == 6
        assert total(s, "okv_service_api_hit_total", activity_name="SecretSet", **common) == 3
        assert total(s, "okv_service_api_result_total", activity_name="SecretGet",
                     status_code="404", status_code_class="4xx", **common) == 1
        assert total(s, "okv_service_api_result_total", activity_name="SecretSet",
                     status_code="200", status_code_class="2xx", **common) == 3
        assert total(s, "okv_service_api_latency_milliseconds_count",
                     activity_name="SecretGet", status_code="200", **common) == 5
        assert total(s, "okv_service_api_latency_milliseconds_sum",
                     activity_name="SecretGet", status_code="200", **common) > 0
        # Refusals count too: each SDK client's first request is answered 401 (challenge).
        assert total(s, "okv_service_api_result_total", status_code="401") >= 1
        text = scrape_text(mport)
        assert value not in text
        assert server.env["IDENTITY_HEADER"] not in text
        assert total(s, "okv_workers") == 2
        assert total(s, "okv_storage_up") == 1
    finally:
        server.stop()


def okv_usage(data_dir: Path, month: str) -> dict[str, int]:
    from tests.support.okvcli import run

    r = run("usage", "--data-dir", str(data_dir), "--vault", "dev", "--month", month,
            "-o", "json")
    assert r.returncode == 0, r.stderr
    return {ln["meter"]: ln["count"] for ln in json.loads(r.stdout)["usage"]}


def test_usage_counts_match_operations_and_survive_restarts(
        tmp_path: Path, use_server_env: Callable[[DevServer], None]) -> None:
    data = tmp_path / "data"
    port = free_port()
    month = month_of(time.time())[0]

    first = DevServer(data_dir=data, port=port, workers=2)
    first.start()
    try:
        use_server_env(first)
        client = secrets_client(first)
        name = f"u-{uuid.uuid4().hex[:8]}"
        for i in range(4):
            client.set_secret(name, f"value-{i}")
        for _ in range(6):
            client.get_secret(name)
        for _ in range(2):  # not found: not billed
            with pytest.raises(ResourceNotFoundError):
                client.get_secret(f"missing-{uuid.uuid4().hex[:8]}")
        # An EC key: its create and each sign are advanced key operations.
        keys = KeyClient(first.url, ManagedIdentityCredential(),
                         verify_challenge_resource=False)
        key = keys.create_ec_key(f"k-{uuid.uuid4().hex[:8]}", curve="P-256")
        crypto = CryptographyClient(key, ManagedIdentityCredential(),
                                    verify_challenge_resource=False)
        digest = hashlib.sha256(b"usage").digest()
        for _ in range(3):
            crypto.sign(SignatureAlgorithm.es256, digest)
    finally:
        assert first.stop() == 0  # a clean stop flushes every worker's counts
    assert okv_usage(data, month) == {"operations": 10, "advanced_key_operations": 4}

    second = DevServer(data_dir=data, port=port, workers=1)
    second.start()
    try:
        use_server_env(second)
        client = secrets_client(second)
        client.get_secret(name)
        client.get_secret(name)
        # Flushed on the timer while the server runs...
        wait_for(lambda: okv_usage(data, month).get("operations") == 12,
                 "the running server's counts flushed")
    finally:
        # ...so a kill after the flush loses nothing of them.
        second.stop(sig=signal.SIGKILL, group=True)
    assert okv_usage(data, month) == {"operations": 12, "advanced_key_operations": 4}
