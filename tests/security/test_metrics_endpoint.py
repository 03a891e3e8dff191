"""/metrics on the main HTTPS port of a production node, for the bearer token of its
`[metrics] token_file` (docs/operations.md "Metrics"): refused without it, the Prometheus
text with it, the operations counted once they have been made."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.support.production import production_node
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("resolve_localhost")
TOKEN = "metrics-scrape-token-0123456789"  # noqa: S105 (a test's own token)


def test_the_main_port_serves_metrics_for_the_token_file(tmp_path: Path) -> None:
    (tmp_path / "metrics.token").write_text(TOKEN + "\n")
    extra = '\n[metrics]\ntoken_file = "metrics.token"\n'
    seal = {"type": "shamir", "shares": 2, "threshold": 2}
    with production_node(tmp_path, seal, extra=extra) as (node, made):
        for share in made["shares"]:
            assert node.operator("unseal", stdin=share + "\n").returncode == 0
        node.wait_health(200)
        url = f"{node.url}/metrics"
        for header in ({}, {"Authorization": "Bearer wrong"},
                       {"Authorization": f"Basic {TOKEN}"}):
            r = requests.get(url, headers=header, verify=node.ca, timeout=30)
            assert r.status_code == 401, header
            assert r.json()["error"]["code"] == "Unauthorized"
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert TOKEN not in r.text

        def scraped() -> str | None:
            r = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"},
                             verify=node.ca, timeout=30)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            # the refused scrapes are requests too: counted once the workers flush
            return r.text if 'activity_name="HealthGet"' in r.text else None

        text = wait_for(scraped, "the health checks counted in the metrics")
        assert "okv_service_api_hit_total" in text and "okv_storage_up" in text
