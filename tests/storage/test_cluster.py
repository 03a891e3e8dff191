"""Three nodes on one PostgreSQL database behind a real load balancer (HAProxy balancing
every request round robin): the Azure SDKs work through it unchanged, every node serves
some of their requests, and a key rotation or certificate renewal due by policy happens
exactly once."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from azure.identity import ManagedIdentityCredential
from azure.keyvault.certificates import (
    CertificateClient,
    CertificatePolicy,
    CertificatePolicyAction,
    LifetimeAction,
)
from azure.keyvault.keys import (
    KeyClient,
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
)
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient

from tests.support.haproxy import balancer
from tests.support.postgres import PostgresCluster
from tests.support.server import DevServer, free_port, running
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("resolve_localhost")
NODES = 3
INTERVAL = 1.0  # the scheduler's tick on every node (OKV_SCHEDULER_INTERVAL)
ROTATE_AFTER = 7 * 86_400
ROTATED = "openkeyvault.scheduler key-rotation: 1"


@dataclass
class Cluster:
    nodes: list[DevServer]
    port: int  # the load balancer's

    def vault_url(self, name: str = "dev") -> str:
        return f"https://{name}.vault.localhost:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return self.nodes[0].env

    def served(self, node: DevServer, path: str) -> int:
        """Requests for `path...` in `node`'s access log."""
        return len(re.findall(rf"rid=\S+ \w+ {re.escape(path)}", node.log()))


@pytest.fixture(scope="module")
def cluster(postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    url = postgres.create_database()
    base = tmp_path_factory.mktemp("cluster")
    data = base / "data"
    lb = free_port()
    mp = pytest.MonkeyPatch()
    mp.setenv("OKV_SCHEDULER_INTERVAL", str(INTERVAL))
    try:
        with ExitStack() as stack:
            nodes = [stack.enter_context(running(data, extra_args=(
                "--database", url, "--public-port", str(lb)))) for _ in range(NODES)]
            stack.enter_context(balancer(base, lb, [n.port for n in nodes],
                                         data / "server.pem", data / "server.key",
                                         nodes[0].ca))
            for k, v in nodes[-1].env.items():  # dev.env names the balancer
                mp.setenv(k, v)
            yield Cluster(nodes, lb)
    finally:
        mp.undo()


def test_the_clients_are_given_the_balancers_address(cluster: Cluster) -> None:
    assert cluster.env["AZURE_KEYVAULT_URL"] == cluster.vault_url()
    assert cluster.env["IDENTITY_ENDPOINT"] == f"https://localhost:{cluster.port}/msi/token"


def test_secrets_through_the_balancer_reach_every_node(cluster: Cluster) -> None:
    client = SecretClient(cluster.vault_url(), ManagedIdentityCredential())
    before = [cluster.served(n, "/secrets/") for n in cluster.nodes]
    for i in range(12):
        client.set_secret(f"spread-{i}", f"value-{i}")
        assert client.get_secret(f"spread-{i}").value == f"value-{i}"  # on another node
    names = {s.name for s in client.list_properties_of_secrets()}
    assert {f"spread-{i}" for i in range(12)} <= names
    client.begin_delete_secret("spread-0").wait()
    assert client.get_deleted_secret("spread-0").name == "spread-0"
    client.begin_recover_deleted_secret("spread-0").wait()
    assert client.get_secret("spread-0").value == "value-0"
    deadline = time.monotonic() + 10  # request lines reach the log within a fraction of a second
    while True:
        after = [cluster.served(n, "/secrets/") for n in cluster.nodes]
        if all(a > b for a, b in zip(after, before, strict=True)) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)


def test_keys_and_certificates_through_the_balancer(cluster: Cluster) -> None:
    credential = ManagedIdentityCredential()
    key = KeyClient(cluster.vault_url(), credential).create_rsa_key("lb-signer", size=2048)
    crypto = CryptographyClient(key, credential)
    digest = b"\x07" * 32
    for _ in range(6):
        signed = crypto.sign(SignatureAlgorithm.rs256, digest)
        assert crypto.verify(SignatureAlgorithm.rs256, digest, signed.signature).is_valid
    certs = CertificateClient(cluster.vault_url(), credential)
    made = certs.begin_create_certificate("lb-cert", CertificatePolicy.get_default()).result()
    assert made.name == "lb-cert"
    assert certs.get_certificate("lb-cert").cer == made.cer


def _move_clock(cluster: Cluster, seconds: float) -> dict[str, Any]:
    r = requests.post(f"https://localhost:{cluster.port}/_okv/dev/clock",
                      json={"advanceSeconds": seconds},
                      headers={"X-IDENTITY-HEADER": cluster.env["IDENTITY_HEADER"]},
                      verify=cluster.nodes[0].ca, timeout=60)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_a_rotation_due_happens_once_in_the_cluster(cluster: Cluster) -> None:
    name = f"lb-rotated-{uuid.uuid4().hex[:8]}"
    client = KeyClient(cluster.vault_url(), ManagedIdentityCredential())
    client.create_ec_key(name, curve="P-256")
    client.update_key_rotation_policy(name, KeyRotationPolicy(lifetime_actions=[
        KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P7D")]))
    created = next(iter(client.list_properties_of_key_versions(name))).created_on
    assert created is not None
    counts = [n.log().count(ROTATED) for n in cluster.nodes]
    now = _move_clock(cluster, 0)["now"]
    # to just before it is due: the scheduler of one node rotates it, not this call
    moved = _move_clock(cluster, max(0.0, created.timestamp() + ROTATE_AFTER - 10 - now))
    assert moved["jobs"]["key-rotation"] == 0, moved

    def versions() -> list[Any]:
        fresh = KeyClient(cluster.vault_url(), ManagedIdentityCredential())
        return list(fresh.list_properties_of_key_versions(name))

    wait_for(lambda: len(versions()) == 2, "the rotation by policy")
    time.sleep(4 * INTERVAL)  # more ticks on every node: none rotates it again
    assert len(versions()) == 2
    rotated = [n.log().count(ROTATED) - c for n, c in zip(cluster.nodes, counts, strict=True)]
    assert sorted(rotated) == [0] * (NODES - 1) + [1], rotated


RENEWED = "openkeyvault.scheduler certificate-lifetime-actions: 1"


def test_a_renewal_due_happens_once_in_the_cluster(cluster: Cluster) -> None:
    name = f"lb-renewed-{uuid.uuid4().hex[:8]}"
    certs = CertificateClient(cluster.vault_url(), ManagedIdentityCredential())
    policy = CertificatePolicy(issuer_name="Self", subject="CN=lb-renewed",
                               validity_in_months=2, lifetime_actions=[LifetimeAction(
                                   CertificatePolicyAction.auto_renew, days_before_expiry=10)])
    first = certs.begin_create_certificate(name, policy).result()
    expires = first.properties.expires_on
    assert expires is not None
    counts = [n.log().count(RENEWED) for n in cluster.nodes]
    now = _move_clock(cluster, 0)["now"]
    due = expires.timestamp() - 10 * 86_400
    moved = _move_clock(cluster, max(0.0, due - 10 - now))  # just before: the scheduler's
    assert moved["jobs"]["certificate-lifetime-actions"] == 0, moved

    def versions() -> list[Any]:
        fresh = CertificateClient(cluster.vault_url(), ManagedIdentityCredential())
        return list(fresh.list_properties_of_certificate_versions(name))

    wait_for(lambda: len(versions()) == 2, "the renewal by policy")
    time.sleep(4 * INTERVAL)
    assert len(versions()) == 2
    renewed = [n.log().count(RENEWED) - c for n, c in zip(cluster.nodes, counts, strict=True)]
    assert sorted(renewed) == [0] * (NODES - 1) + [1], renewed
