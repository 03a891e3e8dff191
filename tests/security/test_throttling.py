"""Throttling by Azure's limits, against a real server with two worker processes and every
limit at a hundredth of Azure's (`--throttling 0.01`: 3 secret creates and 40 other
transactions per vault in any 10 seconds): a burst past the limit is answered 429 with
Azure's body and Retry-After, shared by both workers; other vaults and other classes go
on; refusals do not count; and the Azure SDK's own retry policy completes a throttled
burst."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from tests.security.conftest import API, CREDENTIAL_ENV, Rest
from tests.support.server import DevServer, running

SCALE = "0.01"
SECRET_CREATES = 3  # 300 × 0.01 per 10 s
THROTTLED = {"error": {"code": "Throttled", "message": (
    "Request was not processed because too many requests were received. "
    "Reason: VaultRequestTypeLimitReached")}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    data = tmp_path_factory.mktemp("okv-throttle") / "data"
    with running(data, workers=2, extra_args=("--throttling", SCALE)) as s:
        yield s


@pytest.fixture(scope="module")
def rest(server: DevServer) -> Rest:
    return Rest(server)


def new_vault(server: DevServer) -> str:
    name = f"t{uuid.uuid4().hex[:12]}"
    done = server.okv("vault", "create", name, "--output", "json")
    assert done.returncode == 0, done.stderr
    return name


def host(server: DevServer, vault: str) -> str:
    return f"{vault}.vault.localhost:{server.port}"


def on_new_connection(rest: Rest, vault: str, method: str, path: str,
                      body: dict[str, Any] | None = None) -> requests.Response:
    """One request on a connection of its own (closed after it), so that a burst is
    spread over both worker processes."""
    server = rest.server
    return requests.request(
        method, f"{server.url}{path}?{API}", json=body, headers={
            "Host": host(server, vault), "Authorization": f"Bearer {rest.token}",
            "Connection": "close"}, verify=server.ca, timeout=30)


def set_secrets(rest: Rest, vault: str, count: int) -> list[requests.Response]:
    return [on_new_connection(rest, vault, "PUT", f"/secrets/s{i}", {"value": "v"})
            for i in range(count)]


def burst(rest: Rest, vault: str, count: int) -> list[requests.Response]:
    """`count` secret creates, within one window: each is given its own 10 seconds, so
    a burst that took longer (a machine far too busy to say anything) is not judged."""
    started = time.monotonic()
    answers = set_secrets(rest, vault, count)
    if time.monotonic() - started >= 9:
        pytest.skip("the burst did not fit in one 10-second window")
    return answers


def test_a_burst_past_the_limit_gets_azures_429(server: DevServer, rest: Rest) -> None:
    vault = new_vault(server)
    answers = burst(rest, vault, 10)
    assert [a.status_code for a in answers] == [200] * SECRET_CREATES + [429] * 7, \
        [a.text for a in answers]
    for refused in answers[SECRET_CREATES:]:
        assert refused.json() == THROTTLED
        assert refused.headers["Content-Type"].startswith("application/json")
        assert refused.headers["Retry-After"].isdigit()
        assert 1 <= int(refused.headers["Retry-After"]) <= 10
    # Nothing refused was stored.
    listed = rest.call("GET", "/secrets", headers={"Host": host(server, vault)})
    assert listed.status_code == 200, listed.text
    names = sorted(s["id"].rsplit("/", 1)[1] for s in listed.json()["value"])
    assert names == [f"s{i}" for i in range(SECRET_CREATES)]


def test_other_vaults_and_other_classes_go_on(server: DevServer, rest: Rest) -> None:
    busy, other = new_vault(server), new_vault(server)
    assert [a.status_code for a in burst(rest, busy, SECRET_CREATES + 1)][-1] == 429
    # Another vault's creates, and the busy vault's reads (another class), are admitted.
    assert [a.status_code for a in set_secrets(rest, other, SECRET_CREATES)] == [200] * 3
    read = on_new_connection(rest, busy, "GET", "/secrets/s0")
    assert read.status_code == 200, read.text
    assert json.loads(read.text)["value"] == "v"


def test_refusals_do_not_count(server: DevServer, rest: Rest) -> None:
    """Once the admitted creates have left the window, the limit is whole again however
    many were refused meanwhile, the last of them a second before (a refused request
    counted would hold it shut for ten seconds more)."""
    vault = new_vault(server)
    started = time.monotonic()  # no admitted create was counted before this
    answers = burst(rest, vault, SECRET_CREATES + 1)
    admitted_by = time.monotonic()  # every admitted create was answered before this
    if admitted_by - started > 6:
        pytest.skip("the burst took too long to leave room for refusals after it")
    assert answers[-1].status_code == 429
    refusals = 0
    # Until 8 s after the start, all three admitted creates are still in the window (10 s,
    # in whole seconds), so each of these is refused.
    while time.monotonic() < started + 8:
        again = on_new_connection(rest, vault, "PUT", "/secrets/late", {"value": "v"})
        assert again.status_code == 429, again.text
        refusals += 1
        time.sleep(0.5)
    assert refusals >= 2
    # The last admitted create has left the window by 11 s after it was answered; the
    # refusals made since 8 s after the start would not have, were they counted.
    time.sleep(max(0.0, admitted_by + 11 - time.monotonic()))
    late = [on_new_connection(rest, vault, "PUT", f"/secrets/late{i}", {"value": "v"})
            for i in range(SECRET_CREATES)]
    assert [a.status_code for a in late] == [200] * SECRET_CREATES, [a.text for a in late]


class CountStatuses(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Every response the client's pipeline saw, retries included."""

    def __init__(self) -> None:
        self.statuses: list[int] = []

    def on_response(self, request: Any, response: Any) -> None:
        self.statuses.append(response.http_response.status_code)


def test_the_sdks_retry_completes_a_throttled_burst(
        server: DevServer, monkeypatch: pytest.MonkeyPatch, resolve_localhost: None) -> None:
    for k in CREDENTIAL_ENV:
        monkeypatch.delenv(k, raising=False)
    for k, v in server.env.items():
        monkeypatch.setenv(k, v)
    vault = new_vault(server)
    seen = CountStatuses()
    client = SecretClient(server.vault_url(vault), ManagedIdentityCredential(),
                          per_retry_policies=[seen])
    with client:
        # Twice the limit, with the SDK's default retry policy: it waits as told.
        for i in range(2 * SECRET_CREATES):
            assert client.set_secret(f"sdk{i}", f"value{i}").value == f"value{i}"
        names = {p.name for p in client.list_properties_of_secrets()}
    assert names == {f"sdk{i}" for i in range(2 * SECRET_CREATES)}
    assert 429 in seen.statuses, seen.statuses


def test_the_flag_refuses_nonsense(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "openkeyvault", "server", "--dev",
                           "--data-dir", str(tmp_path / "d"), "--throttling", "fast"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--throttling takes off, on or a positive multiplier" in done.stderr
    assert not (tmp_path / "d").exists()
