"""A production deployment: `okv init` from a configuration file, a node sealed until a
quorum of key holders unseal it, no dev identity or dev endpoints, and the operator's
seal and rekey."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

from tests.support.production import Node, okv, production_node, write_config
from tests.support.server import free_port

pytestmark = pytest.mark.usefixtures("resolve_localhost")
SHAMIR = {"type": "shamir", "shares": 5, "threshold": 3}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, dict[str, Any]]]:
    with production_node(tmp_path_factory.mktemp("production"), SHAMIR) as made:
        yield made


def _unseal(node: Node, shares: list[str]) -> list[dict[str, Any]]:
    import json

    out = []
    for share in shares:
        r = node.operator("unseal", stdin=share + "\n")
        out.append({"rc": r.returncode, **json.loads(r.stdout)})
    return out


def _credential(node: Node, made: dict[str, Any]) -> ClientSecretCredential:
    admin = made["administrator"]
    return ClientSecretCredential(made["tenant_id"], admin["client_id"], admin["client_secret"],
                                  authority=node.url, connection_verify=node.ca,
                                  disable_instance_discovery=True)


def _vault(node: Node, made: dict[str, Any], name: str) -> str:
    """A vault made through the management API by the first administrator."""
    token = _credential(node, made).get_token(f"{node.url}/.default").token
    subs = requests.get(f"{node.url}/subscriptions?api-version=2022-12-01", verify=node.ca,
                        headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
    sub = subs["value"][0]["subscriptionId"]
    base = f"{node.url}/subscriptions/{sub}/resourceGroups/prod"
    auth = {"Authorization": f"Bearer {token}"}
    assert requests.put(f"{base}?api-version=2021-04-01", json={"location": "local"},
                        headers=auth, verify=node.ca, timeout=30).status_code in (200, 201)
    r = requests.put(f"{base}/providers/Microsoft.KeyVault/vaults/{name}"
                     "?api-version=2023-07-01", headers=auth, verify=node.ca, timeout=30,
                     json={"location": "local", "properties": {
                         "tenantId": made["tenant_id"], "sku": {"family": "A", "name": "standard"},
                         "enableRbacAuthorization": True}})
    assert r.status_code in (200, 201), r.text
    return f"https://{name}.vault.localhost:{node.port}"


def test_init_prints_the_administrator_and_the_shares_once(
        node: tuple[Node, dict[str, Any]]) -> None:
    n, made = node
    assert len(made["shares"]) == 5 and made["threshold"] == 3
    assert len(set(made["shares"])) == 5
    assert made["administrator"]["client_secret"]
    again = okv("init", "--config", str(n.config))
    assert again.returncode == 1 and "initialised already" in again.stderr
    data = n.base / "data"
    assert not (data / "root.key").exists()  # the root key is nowhere on disk
    assert not (data / "dev.env").exists()


def test_a_sealed_node_answers_503_and_loses_nothing(node: tuple[Node, dict[str, Any]]
                                                     ) -> None:
    n, made = node
    body = n.wait_health(503)
    assert body["status"] == "sealed" and body["seal"] == {"type": "shamir", "threshold": 3,
                                                           "shares": 5}
    r = requests.get(f"{n.url}/subscriptions?api-version=2022-12-01", verify=n.ca, timeout=10)
    assert r.status_code == 503 and r.headers["Retry-After"].isdigit()
    assert r.json()["error"]["code"] == "ServiceUnavailable"
    # fewer than the quorum: still sealed, progress shown
    first = _unseal(n, made["shares"][:2])
    assert [a["progress"]["received"] for a in first] == [1, 2]
    assert n.health()[1]["progress"] == {"received": 2, "threshold": 3}
    # a wrong share completing the quorum is refused, and the progress starts over
    wrong = made["shares"][4][:-6] + ("A" * 6 if not made["shares"][4].endswith("A" * 6)
                                      else "B" * 6)
    refused = _unseal(n, [wrong])[0]
    assert refused["rc"] == 1 and refused["sealed"] is True, refused
    assert n.health()[0] == 503
    # the quorum: unsealed, and the workers serve within a second or so
    done = _unseal(n, made["shares"][1:4])
    assert done[-1]["sealed"] is False
    assert n.wait_health(200)["status"] == "ready"


def test_the_administrator_works_and_there_is_no_dev_identity(
        node: tuple[Node, dict[str, Any]]) -> None:
    n, made = node
    n.wait_health(200)
    vault_url = _vault(n, made, "prodvault")
    client = SecretClient(vault_url, _credential(n, made), connection_verify=n.ca)
    client.set_secret("db-password", "kept")
    assert client.get_secret("db-password").value == "kept"
    for path in ("/msi/token?resource=x&api-version=2019-08-01",
                 "/metadata/identity/oauth2/token?resource=x&api-version=2018-02-01"):
        r = requests.get(f"{n.url}{path}", headers={"Metadata": "true",
                                                    "X-IDENTITY-HEADER": "x"},
                         verify=n.ca, timeout=10)
        assert r.status_code in (401, 404), (path, r.status_code)
        assert "access_token" not in r.text


def test_seal_stops_service_and_unseal_brings_the_data_back(
        node: tuple[Node, dict[str, Any]]) -> None:
    n, made = node
    n.wait_health(200)
    vault_url = _vault(n, made, "sealtest")
    SecretClient(vault_url, _credential(n, made), connection_verify=n.ca).set_secret("s", "v")
    sealed = n.operator("seal")
    assert sealed.returncode == 0
    n.wait_health(503)
    r = requests.get(f"{vault_url}/secrets/s?api-version=7.6", verify=n.ca, timeout=10)
    assert r.status_code == 503
    # a restart comes up sealed too: the key is only in memory
    n.stop()
    n.start()
    assert n.health()[0] == 503
    _unseal(n, made["shares"][2:5])
    n.wait_health(200)
    client = SecretClient(vault_url, _credential(n, made), connection_verify=n.ca)
    assert client.get_secret("s").value == "v"


def test_rekey_replaces_the_shares(tmp_path: Path) -> None:
    import json

    with production_node(tmp_path, {"type": "shamir", "shares": 3, "threshold": 2}) as (n, made):
        r = n.operator("rekey", "--shares", "4", "--threshold", "3",
                       stdin="\n".join(made["shares"][:2]) + "\n")
        assert r.returncode == 0, r.stderr
        new = json.loads(r.stdout)["shares"]
        assert len(new) == 4 and not set(new) & set(made["shares"])
        n.stop()
        n.start()
        old = _unseal(n, made["shares"][:2])
        assert all(a["rc"] == 1 for a in old)  # the old seal's shares are refused
        _unseal(n, new[:3])
        n.wait_health(200)


@pytest.mark.parametrize(("seal", "says"), [
    ({"type": "devkey"}, "force = true"),
    ({"type": "bogus"}, "[seal] type"),
])
def test_bad_configurations_are_refused(tmp_path: Path, seal: dict[str, Any], says: str
                                        ) -> None:
    config = write_config(tmp_path, free_port(), seal)
    r = okv("init", "--config", str(config))
    assert r.returncode == 2 and says in r.stderr
    assert not (tmp_path / "data").exists()


def test_a_forced_key_file_seal_initialises_and_serves_unsealed(tmp_path: Path) -> None:
    """[seal] type = "devkey" with force = true: the key file is made with the database,
    and the node needs no key holder."""
    with production_node(tmp_path, {"type": "devkey", "force": True}) as (node, made):
        assert made["seal"] == "devkey" and "shares" not in made
        assert (tmp_path / "data" / "root.key").exists()
        assert node.wait_health(200)["status"] == "ready"


def test_a_node_of_an_uninitialised_deployment_does_not_start(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), SHAMIR)
    r = okv("server", "--config", str(config))
    assert r.returncode == 78 and "okv init" in r.stderr


def test_a_node_sealed_by_another_key_vault_unseals_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Auto-unseal: the root key wrapped by an RSA key in another server (a dev server
    here), reached with a service principal that may only wrap and unwrap with it."""
    import json

    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.keys import KeyClient

    from tests.support.server import running

    resolver = Path(__file__).parents[1] / "cli" / "resolver"
    with running(tmp_path / "remote") as remote:
        for k, v in remote.env.items():
            monkeypatch.setenv(k, v)
        key = KeyClient(remote.vault_url(), ManagedIdentityCredential()).create_rsa_key(
            "root-wrapper", size=2048)
        made = remote.okv("principal", "create", "unsealer")
        p = json.loads(made.stdout)
        assigned = remote.okv("role", "assign", "--principal", p["object_id"], "--role",
                              "Key Vault Crypto Service Encryption User",
                              "--scope", "/vaults/dev/keys/root-wrapper")
        assert assigned.returncode == 0, assigned.stderr
        secret_file = tmp_path / "node" / "unsealer.secret"
        secret_file.parent.mkdir()
        secret_file.write_text(p["client_secret"])
        secret_file.chmod(0o600)
        # the node process: trusts the remote's CA, resolves its vault host
        monkeypatch.setenv("PYTHONPATH", f"{resolver}:{Path.cwd() / 'src'}")
        seal = {"type": "azurekeyvault", "key_id": key.id, "tenant_id": p["tenant_id"],
                "client_id": p["client_id"], "client_secret_file": str(secret_file),
                "authority": f"https://localhost:{remote.port}"}
        with production_node(tmp_path / "node", seal) as (n, init):
            assert "shares" not in init
            assert n.wait_health(200)["status"] == "ready"  # no operator needed
            n.stop()
            # the wrapping key disabled: the node stays sealed and says why in its log
            KeyClient(remote.vault_url(), ManagedIdentityCredential()).update_key_properties(
                "root-wrapper", enabled=False)
            n.start()
            assert n.wait_health(503)["sealed"] is True
            status = n.operator("status")
            assert "disabled" in status.stdout


def test_a_sealed_node_closes_its_audit_streams(tmp_path: Path) -> None:
    """Sealing a node closes its workers' accounting while the node runs on: each audit
    stream of the unsealed time ends at its last record (the space reserved ahead cut
    off, the final checkpoint written) and the trail verifies; unsealed again, the workers
    write new streams. Without the close, the old streams stay open, with their reserved
    tail of NUL bytes and their flusher threads, next to the new ones."""
    with production_node(tmp_path, SHAMIR) as (node, made):
        _unseal(node, made["shares"][:3])
        node.wait_health(200)
        _vault(node, made, "closing")  # audited requests, in the node's workers
        assert node.operator("seal").returncode == 0
        node.wait_health(503)
        directory = tmp_path / "data" / "audit"
        deadline = time.monotonic() + 30
        while True:  # each worker notices the seal within a second
            streams = sorted(directory.glob("*.jsonl"))
            tails = [p.read_bytes()[-2:] for p in streams]
            if (streams and all(t == b"}\n" for t in tails)) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert streams and all(t == b"}\n" for t in tails), list(zip(streams, tails, strict=True))
        _unseal(node, made["shares"][2:5])
        node.wait_health(200)
        _vault(node, made, "reopened")
        assert len(sorted(directory.glob("*.jsonl"))) > len(streams)
        verified = okv("audit", "verify", "--config", str(node.config))  # (needs the key)
        assert verified.returncode == 0, verified.stdout + verified.stderr


def test_requests_refused_while_sealed_are_audited_once_unsealed(tmp_path: Path) -> None:
    """A sealed node cannot chain records (no root key, no audit key): its workers keep
    what they refused and record it as soon as the node is unsealed. Health probes are
    not kept."""
    import json

    with production_node(tmp_path, SHAMIR) as (node, made):
        sent = []
        for path, correlation in (("/secrets/early?api-version=7.6", "c-1"),
                                  ("/keys?api-version=7.6&sig=do-not-log", "c-2")):
            r = requests.get(f"https://sealedv.vault.localhost:{node.port}{path}",
                             verify=node.ca, timeout=10,
                             headers={"x-ms-client-request-id": correlation,
                                      "User-Agent": "sealed-test/1.0",
                                      "Authorization": "Bearer not-a-token"})
            assert r.status_code == 503
            sent.append((r.headers["x-ms-request-id"], path, correlation))
        assert node.health()[0] == 503
        assert list((tmp_path / "data" / "audit").glob("*.sealed"))  # kept meanwhile
        _unseal(node, made["shares"][:3])
        node.wait_health(200)
        deadline = time.monotonic() + 30
        while list((tmp_path / "data" / "audit").glob("*.sealed*")) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not list((tmp_path / "data" / "audit").glob("*.sealed*"))
        found = okv("audit", "query", "--config", str(node.config), "--output", "json",
                    "--limit", "1000")
        assert found.returncode == 0, found.stderr
        records = {r["properties"]["requestId"]: r for r in json.loads(found.stdout)}
        for request_id, path, correlation in sent:
            record = records[request_id]
            assert (record["resultSignature"], record["correlationId"],
                    record["callerIpAddress"]) == ("ServiceUnavailable", correlation,
                                                   "127.0.0.1")
            assert record["properties"]["clientInfo"] == "sealed-test/1.0"
            assert record["properties"]["requestUri"].startswith(path.split("&")[0])
            assert "do-not-log" not in json.dumps(record)  # unknown query values: REDACTED
            assert record["identity"] == {"claim": {}}  # no token was read
        assert not [r for r in records.values()
                    if r["properties"]["requestUri"].startswith("/healthz")]
        verified = okv("audit", "verify", "--config", str(node.config))
        assert verified.returncode == 0, verified.stdout + verified.stderr
