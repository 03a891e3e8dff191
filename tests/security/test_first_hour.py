"""A newcomer's first steps with the dev server and `okv`: what they are told matches
what the server does.

- `okv vault show|list|create` render `vaultUri` with the port the server listens on
  (the server records it in the data directory at start), not the default port;
- `okv vault create` says which hosts line a new vault needs where `*.localhost` does not
  resolve;
- dev.env names the deployment's tenant, default subscription and token service, and
  DefaultAzureCredential still picks the managed-identity credential from it;
- a ClientSecretCredential configured only by dev.env's AZURE_AUTHORITY_HOST (plus
  `disable_instance_discovery=True`) gets its token from this server and from nothing
  outside the machine;
- the read-only commands' lighter way in (cli/readonly.py) answers what a full open of
  the deployment answers.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from azure.identity import ClientSecretCredential, DefaultAzureCredential

from openkeyvault.cli.hosts import resolves
from openkeyvault.cli.settings import SERVER_RECORD
from openkeyvault.config import DEFAULT_PORT
from tests.support.server import DevServer, read_env_file, running

VAULT_SCOPE = "https://vault.azure.net/.default"


def _json(server: DevServer, *args: str) -> Any:
    done = server.okv(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_server_port_is_not_the_default(server: DevServer) -> None:
    assert server.port != DEFAULT_PORT  # else the next tests prove nothing


def test_vault_show_renders_the_servers_port(server: DevServer) -> None:
    shown = _json(server, "vault", "show", "dev", "-o", "json")
    assert shown["properties"]["vaultUri"] == f"https://dev.vault.localhost:{server.port}/"
    listed = _json(server, "vault", "list", "-o", "json")
    assert {v["properties"]["vaultUri"] for v in listed} >= {shown["properties"]["vaultUri"]}
    table = server.okv("vault", "show", "dev")
    assert f"https://dev.vault.localhost:{server.port}/" in table.stdout


def test_vault_create_names_the_hosts_line_it_needs(server: DevServer) -> None:
    name = f"pay{uuid.uuid4().hex[:12]}"
    done = server.okv("vault", "create", name, "-o", "json")
    assert done.returncode == 0, done.stderr
    uri = json.loads(done.stdout)["properties"]["vaultUri"]
    host = f"{name}.vault.localhost"
    assert uri == f"https://{host}:{server.port}/"
    if resolves(host):
        assert "/etc/hosts" not in done.stderr
    else:
        assert f"127.0.0.1 {host}" in done.stderr
        assert "/etc/hosts" in done.stderr


def test_dev_env_names_tenant_subscription_and_authority(server: DevServer) -> None:
    env = read_env_file(server.data_dir / "dev.env")
    shown = _json(server, "vault", "show", "dev", "-o", "json")
    assert env["AZURE_TENANT_ID"] == shown["properties"]["tenantId"]
    assert env["AZURE_SUBSCRIPTION_ID"] == shown["id"].split("/")[2]
    assert env["AZURE_AUTHORITY_HOST"] == f"https://localhost:{server.port}"


def test_default_credential_still_uses_the_managed_identity(
        server: DevServer, sdk_env: dict[str, str]) -> None:
    assert {"AZURE_TENANT_ID", "AZURE_AUTHORITY_HOST", "IDENTITY_ENDPOINT"} <= set(sdk_env)
    with DefaultAzureCredential() as cred:
        token = cred.get_token(VAULT_SCOPE).token
    claims = jwt.decode(token, options={"verify_signature": False})
    # The dev identity is the one the managed-identity endpoint issues tokens for.
    principals = _json(server, "principal", "list", "-o", "json")
    dev = next(p for p in principals if p["display_name"] == "dev identity")
    assert claims["oid"] == dev["object_id"]
    assert claims["tid"] == sdk_env["AZURE_TENANT_ID"]


@pytest.fixture
def connections() -> Iterator[list[tuple[str, object]]]:
    """Every host this process resolves and every address it connects to, meanwhile."""
    seen: list[tuple[str, object]] = []
    active = [True]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if not active[0]:
            return
        if event == "socket.getaddrinfo":
            seen.append(("resolve", args[0]))
        elif event == "socket.connect":
            seen.append(("connect", args[1]))

    sys.addaudithook(hook)  # an audit hook cannot be removed: it is switched off instead
    try:
        yield seen
    finally:
        active[0] = False


def _local(host: object) -> bool:
    name = host.decode() if isinstance(host, bytes) else str(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def test_client_secret_credential_stays_on_this_machine(
        server: DevServer, sdk_env: dict[str, str],
        connections: list[tuple[str, object]]) -> None:
    created = _json(server, "principal", "create", f"app-{uuid.uuid4().hex[:8]}")
    assert created["tenant_id"] == sdk_env["AZURE_TENANT_ID"]
    connections.clear()
    # The authority comes from AZURE_AUTHORITY_HOST alone; MSAL's instance discovery would
    # ask the public cloud about an authority host it does not know.
    with ClientSecretCredential(sdk_env["AZURE_TENANT_ID"], created["client_id"],
                                created["client_secret"],
                                disable_instance_discovery=True) as cred:
        token = cred.get_token(VAULT_SCOPE).token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["oid"] == created["object_id"]
    assert connections, "no connection was observed"
    for kind, where in connections:
        host = where[0] if isinstance(where, tuple) else where
        assert _local(host), f"{kind} {where!r} leaves the machine"


READ_ONLY = (("vault", "list", "-o", "json"), ("vault", "list", "--deleted", "-o", "json"),
             ("vault", "show", "dev", "-o", "json"), ("vault", "show", "app", "-o", "json"),
             ("role", "list", "-o", "json"))


def test_read_only_commands_agree_with_a_full_open(tmp_path: Path) -> None:
    with running(tmp_path / "data") as s:
        for args in (("vault", "create", "app"), ("vault", "create", "gone"),
                     ("vault", "delete", "gone"), ("principal", "create", "reader")):
            assert s.okv(*args).returncode == 0
        assigned = s.okv("role", "assign", "--principal", "reader", "--role",
                         "Key Vault Secrets User", "--scope", "/vaults/app")
        assert assigned.returncode == 0, assigned.stderr
    # Stopped: the commands read the storage alone, through the server's record.
    light = {args: s.okv(*args) for args in READ_ONLY}
    (s.data_dir / SERVER_RECORD).rename(tmp_path / SERVER_RECORD)
    full = {args: s.okv(*args) for args in READ_ONLY}  # no record: a full open, port 8443
    for args in READ_ONLY:
        assert light[args].returncode == full[args].returncode == 0, full[args].stderr
        assert f":{s.port}/" in light[args].stdout or args[0] == "role" or \
            "--deleted" in args
        assert light[args].stdout.replace(f":{s.port}/", f":{DEFAULT_PORT}/") == \
            full[args].stdout, args
