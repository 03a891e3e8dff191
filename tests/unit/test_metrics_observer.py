"""Metrics across worker processes: each writes its own files, a scrape sums them, a dead
worker's counts stay and its live gauges go; the token endpoint refuses without it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from openkeyvault.config import Settings
from openkeyvault.ops import metrics

WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from openkeyvault.config import Settings
    from openkeyvault.ops import metrics
    from openkeyvault.ops.outcome import Outcome

    data, count, status, vault = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    observer = metrics.open_metrics(Settings(data_dir=Path(data), metrics_port=1))
    for i in range(count):
        observer.observe(Outcome(
            operation="SecretGet", resource_kind="vault", resource_name=vault,
            resource_id=None, object_id=None, api_version="7.5", status=status,
            time=time.time(), duration_ms=3.0, client_ip="127.0.0.1", correlation_id=None,
            request_id="r", request_uri="/secrets/a", user_agent=None, caller=None,
            rbac_authorized=None, access_policy_match=None, throttle_class=None,
            meter="operations"))
    observer.saturation(vault, "secrets", 40.0)
""")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return sum(v for (n, ls), v in found.items()
               if n == name and set(labels.items()) <= set(ls))


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    monkeypatch.delenv(metrics.SUPERVISOR_ENV, raising=False)
    settings = Settings(data_dir=tmp_path, port=18443, metrics_port=1)
    # prepare() names the directory in this process's environment, as the supervisor's.
    metrics.prepare(settings)
    return settings


def run_worker(settings: Settings, count: int, status: int = 200, vault: str = "v1") -> None:
    subprocess.run([sys.executable, "-c", WORKER, str(settings.data_dir), str(count),
                    str(status), vault], check=True, timeout=60)


def scrape(settings: Settings) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return samples(generate_latest(metrics.exposition_registry(settings)).decode())


def test_workers_add_up_and_a_dead_workers_gauges_go(node: Settings) -> None:
    run_worker(node, 3)
    run_worker(node, 4)
    run_worker(node, 2, status=404, vault="v2")
    found = scrape(node)
    # Each worker has exited: its counts remain in the sums...
    assert value(found, "okv_service_api_hit_total", vault="v1",
                 activity_name="SecretGet", activity_type="secret") == 7
    assert value(found, "okv_service_api_result_total", vault="v1", status_code="200",
                 status_code_class="2xx") == 7
    assert value(found, "okv_service_api_result_total", vault="v2", status_code="404",
                 status_code_class="4xx") == 2
    assert value(found, "okv_service_api_latency_milliseconds_count", vault="v1") == 7
    assert value(found, "okv_service_api_latency_milliseconds_sum", vault="v1") == 21.0
    assert value(found, "okv_service_api_latency_milliseconds_bucket", vault="v1",
                 le="5.0") == 7
    assert value(found, "okv_service_api_latency_milliseconds_bucket", vault="v1",
                 le="2.5") == 0
    # ...and their live gauges are dropped at the scrape (the files too).
    assert value(found, "okv_saturation_shoebox_percent") == 0
    assert not list(metrics.metrics_dir(node).glob("gauge_live*"))
    assert value(found, "okv_storage_up") == 1
    assert value(found, "process_resident_memory_bytes", role="supervisor") > 0


def test_prepare_empties_the_last_runs_files(node: Settings) -> None:
    run_worker(node, 5)
    metrics.prepare(node)
    assert value(scrape(node), "okv_service_api_hit_total") == 0


def test_no_metrics_configured_is_a_no_op(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert not metrics.enabled(settings)
    assert metrics.prepare(settings) is None
    assert isinstance(metrics.open_metrics(settings), metrics.NoMetrics)


def test_the_vault_label_is_bounded(node: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "MAX_VAULT_LABELS", 2)
    observer = metrics.MetricsObserver()
    assert [observer._vault_label(n) for n in ("a", "b", "c", "a", None)] == \
        ["a", "b", metrics.OTHER_VAULT, "a", ""]
    assert metrics.MetricsObserver(per_vault=False)._vault_label("a") == ""


@pytest.mark.parametrize(("operation", "kind", "expected"), [
    ("SecretGet", "vault", "secret"), ("KeySign", "vault", "key"),
    ("CertificateCreate", "vault", "certificate"), ("VaultGet", "management", "vault"),
    ("RoleAssignmentCreate", "managedhsm", "managedhsm"), ("", "vault", "vault"),
])
def test_activity_type(operation: str, kind: str, expected: str) -> None:
    assert metrics.activity_type(operation, kind) == expected


def test_the_token_endpoint_needs_the_token(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    token = tmp_path / "metrics.token"
    token.write_text("s3cret-token-value\n")
    settings = Settings(data_dir=tmp_path, metrics_token_file=str(token))
    metrics.prepare(settings)
    endpoint = metrics.MetricsEndpoint(settings)
    for header in (None, "", "Bearer", "Bearer wrong", "Basic s3cret-token-value",
                   "Bearer s3cret-token-valu", "Bearer s3cret-token-value2"):
        status, headers, body = endpoint.respond(header)
        assert status == 401, header
        assert json.loads(body)["error"]["code"] == "Unauthorized"
        assert b"s3cret" not in body
        assert headers["www-authenticate"].startswith("Bearer")
    status, headers, body = endpoint.respond("Bearer s3cret-token-value")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert b"okv_storage_up" in body
    token.write_text("")  # an empty token file serves no one
    assert endpoint.respond("Bearer ")[0] == 401


def test_observations_reach_the_files_at_a_flush(node: Settings) -> None:
    import time

    from openkeyvault.ops.outcome import Outcome

    metrics._multiprocess(metrics.metrics_dir(node))
    observer = metrics.MetricsObserver()

    def seen(ms: float, status: int = 200) -> None:
        observer.observe(Outcome(
            operation="KeySign", resource_kind="vault", resource_name="v9", resource_id=None,
            object_id=None, api_version="7.5", status=status, time=time.time(),
            duration_ms=ms, client_ip="127.0.0.1", correlation_id=None, request_id="r",
            request_uri="/keys/k/sign", user_agent=None, caller=None, rbac_authorized=None,
            access_policy_match=None, throttle_class=None, meter="operations"))

    for ms in (1.0, 1.0001, 5.0, 10001.0):  # a bound itself falls in its own bucket
        seen(ms)
    seen(0.2, status=403)
    assert value(scrape(node), "okv_service_api_hit_total", vault="v9") == 0  # not yet
    observer.flush()
    found = scrape(node)
    labels = {"vault": "v9", "activity_name": "KeySign", "activity_type": "key"}
    assert value(found, "okv_service_api_hit_total", **labels) == 5
    ok = {**labels, "status_code": "200"}
    bucket = "okv_service_api_latency_milliseconds_bucket"
    assert value(found, bucket, le="1.0", **ok) == 1
    assert value(found, bucket, le="2.5", **ok) == 2
    assert value(found, bucket, le="5.0", **ok) == 3
    assert value(found, bucket, le="10000.0", **ok) == 3
    assert value(found, bucket, le="+Inf", **ok) == 4
    assert value(found, "okv_service_api_latency_milliseconds_count", **ok) == 4
    assert value(found, "okv_service_api_latency_milliseconds_sum", **ok) == \
        pytest.approx(10008.0001)
    assert value(found, "okv_service_api_result_total", status_code="403",
                 status_code_class="4xx", **labels) == 1
    observer.flush()  # nothing new: the same totals
    assert value(scrape(node), "okv_service_api_hit_total", **labels) == 5
    assert not [n for n, _ in found if n.startswith("okv_raw_")]


def test_the_metrics_table_of_the_configuration_file(tmp_path: Path) -> None:
    from openkeyvault.config import ConfigError, load_config

    base = ('[server]\ndata_dir = "data"\n[tls]\ncertificate = "c.pem"\nkey = "k.pem"\n'
            '[seal]\ntype = "shamir"\nshares = 3\nthreshold = 2\n')
    config = tmp_path / "okv.toml"
    config.write_text(base + '[metrics]\nport = 9464\nhost = "10.0.0.5"\n'
                      'token_file = "metrics.token"\nper_vault = false\n')
    s = load_config(config)
    assert (s.metrics_port, s.metrics_host, s.metrics_per_vault) == (9464, "10.0.0.5", False)
    assert s.metrics_token_file == str(tmp_path / "metrics.token")
    assert metrics.enabled(s)
    config.write_text(base)
    s = load_config(config)
    assert (s.metrics_port, s.metrics_host, s.metrics_token_file) == (None, "127.0.0.1", None)
    assert not metrics.enabled(s)
    for bad in ('port = "9464"', "port = 0", "port = 70000", "port = true",
                'per_vault = "no"'):
        config.write_text(base + f"[metrics]\n{bad}\n")
        with pytest.raises(ConfigError, match=r"\[metrics\]"):
            load_config(config)


def test_storage_down_or_hanging_reads_as_down(node: Settings,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from prometheus_client import generate_latest

    def unreachable() -> object:
        raise OSError("connection refused")

    registry = metrics.exposition_registry(node, unreachable)  # type: ignore[arg-type]
    assert value(samples(generate_latest(registry).decode()), "okv_storage_up") == 0

    monkeypatch.setattr(metrics, "STORAGE_PROBE_SECONDS", 0.2)
    monkeypatch.setattr(metrics, "STORAGE_PROBE_EVERY", 0.0)
    release = threading.Event()

    def hanging() -> object:
        release.wait(30)
        raise OSError("gave up")

    registry = metrics.exposition_registry(node, hanging)  # type: ignore[arg-type]
    try:
        for _ in range(2):  # the second scrape does not start another probe meanwhile
            found = samples(generate_latest(registry).decode())
            assert value(found, "okv_storage_up") == 0
        assert sum(t.name == "okv-metrics-probe" for t in threading.enumerate()) == 1
    finally:
        release.set()
