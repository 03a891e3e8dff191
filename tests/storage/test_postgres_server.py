"""The dev server on PostgreSQL, through the Azure SDKs: one node, then two nodes (two
servers on one data directory and one database URL, on two ports) that see each
other's writes at their next request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient

from tests.support.identity import NodeIdentity
from tests.support.postgres import PostgresCluster
from tests.support.server import DevServer, running

pytestmark = pytest.mark.usefixtures("resolve_localhost")


@pytest.fixture(scope="module")
def two_nodes(postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[DevServer, DevServer]]:
    url = postgres.create_database()
    data = tmp_path_factory.mktemp("pg-nodes") / "data"
    with running(data, extra_args=("--database", url)) as first, \
            running(data, extra_args=("--database", url)) as second:
        yield first, second


@pytest.fixture(autouse=True)
def _trust(two_nodes: tuple[DevServer, DevServer], monkeypatch: pytest.MonkeyPatch) -> None:
    """The nodes share the data directory, so its CA too."""
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(name, two_nodes[0].env[name])


def _secrets(node: DevServer, vault: str | None = None) -> SecretClient:
    return SecretClient(node.vault_url(vault) if vault else node.vault_url(),
                        NodeIdentity(node))  # type: ignore[arg-type]


def test_secrets_and_keys_work_on_postgresql(two_nodes: tuple[DevServer, DevServer]) -> None:
    node, _ = two_nodes
    secrets = _secrets(node)
    secrets.set_secret("on-postgres", "v1")
    secrets.set_secret("on-postgres", "v2")
    assert secrets.get_secret("on-postgres").value == "v2"
    assert len(list(secrets.list_properties_of_secret_versions("on-postgres"))) == 2
    keys = KeyClient(node.vault_url(), NodeIdentity(node))  # type: ignore[arg-type]
    key = keys.create_ec_key("pg-signer", curve="P-256")
    crypto = CryptographyClient(key, NodeIdentity(node))  # type: ignore[arg-type]
    digest = b"\x01" * 32
    signed = crypto.sign(SignatureAlgorithm.es256, digest)
    assert crypto.verify(SignatureAlgorithm.es256, digest, signed.signature).is_valid


def test_a_write_on_one_node_is_read_on_the_other(two_nodes: tuple[DevServer, DevServer]
                                                  ) -> None:
    first, second = two_nodes
    assert first.port != second.port
    on_first, on_second = _secrets(first), _secrets(second)
    for i in range(5):
        on_first.set_secret("replicated", f"value-{i}")
        assert on_second.get_secret("replicated").value == f"value-{i}"
    on_second.begin_delete_secret("replicated").wait()
    with pytest.raises(ResourceNotFoundError):
        on_first.get_secret("replicated")
    assert on_first.get_deleted_secret("replicated").name == "replicated"


def test_a_vault_made_on_one_node_answers_on_the_other(
        two_nodes: tuple[DevServer, DevServer], monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = two_nodes
    monkeypatch.setenv("OKV_DATABASE_URL", _url_of(first))
    made = first.okv("vault", "create", "pgnodes", inprocess=False)
    assert made.returncode == 0, made.stderr
    _secrets(second, "pgnodes").set_secret("s", "in the new vault")
    assert _secrets(first, "pgnodes").get_secret("s").value == "in the new vault"


def _url_of(node: DevServer) -> str:
    args = list(node.extra_args)
    return args[args.index("--database") + 1]


def test_a_second_node_needs_no_new_key_material(two_nodes: tuple[DevServer, DevServer]
                                                 ) -> None:
    first, second = two_nodes
    assert first.data_dir == second.data_dir
    assert sorted(p.name for p in Path(first.data_dir).glob("root.key")) == ["root.key"]
