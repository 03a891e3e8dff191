"""Nothing sensitive in the clear: not in the database files, not in the log, files private."""

from __future__ import annotations

import base64
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.keyvault.secrets import SecretClient

from tests.sdk.clients import localhost_client
from tests.security.conftest import Rest
from tests.support.server import DevServer

POLL = {"_polling_interval": 0.2}


def encodings(value: str) -> Iterator[bytes]:
    """The plaintext and the obvious ways it could be stored without a key."""
    raw = value.encode()
    yield raw
    yield value.encode("utf-16-le")
    yield raw.hex().encode()
    yield raw.hex().upper().encode()
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        b64 = enc(raw)
        yield b64
        yield b64.rstrip(b"=")


def assert_absent(haystack: bytes, value: str, where: str) -> None:
    for needle in encodings(value):
        assert needle not in haystack, f"{value!r} found in {where} as {needle!r}"


def database_files(data_dir: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in data_dir.glob("okv.db*")}
    assert "okv.db" in files
    return files


@dataclass
class Stored:
    names: list[str]
    values: list[str]


@pytest.fixture
def stored(server: DevServer, use_server_env: Callable[[DevServer], None]) -> Stored:
    """Distinctive secret values, stored through the SDK in several ways."""
    use_server_env(server)
    client: SecretClient = localhost_client(server)
    mark = uuid.uuid4().hex
    values = [f"CANARY-{mark}-{i}-Zq7x" for i in range(5)]
    a, b = f"atrest-a-{mark[:8]}", f"atrest-b-{mark[:8]}"
    client.set_secret(a, values[0])
    client.set_secret(a, values[1], content_type="text/plain")  # a second version
    client.set_secret(b, values[2])
    client.begin_delete_secret(b, **POLL).wait()  # soft-deleted values stay at rest
    c, d = f"atrest-c-{mark[:8]}", f"atrest-d-{mark[:8]}"
    client.set_secret(c, values[3] * 100)  # a long value
    backup = client.backup_secret(a)
    client.begin_delete_secret(a, **POLL).wait()
    client.purge_deleted_secret(a)
    client.restore_secret_backup(backup)  # restored values are sealed again
    client.set_secret(d, f"päss ✓ {values[4]}")
    assert client.get_secret(a).value == values[1]
    return Stored([a, b, c, d], values)


def test_secret_values_are_not_in_the_database_files(server: DevServer, stored: Stored) -> None:
    files = database_files(server.data_dir)
    everything = b"".join(files.values())
    for name in stored.names:  # names are not secret: the rows are in the files we read
        assert name.encode() in everything
    for name, data in files.items():
        for value in stored.values:
            assert_absent(data, value, name)


def test_no_file_in_the_data_directory_holds_a_secret_value(server: DevServer,
                                                            stored: Stored) -> None:
    for path in server.data_dir.iterdir():
        if path.is_file():
            data = path.read_bytes()
            for value in stored.values:
                assert_absent(data, value, path.name)


def test_deployment_secrets_are_not_in_the_database_files(server: DevServer) -> None:
    """The root key, the token signing key and the identity header are sealed or elsewhere."""
    root_key = (server.data_dir / "root.key").read_bytes()
    assert len(root_key) == 32
    for name, data in database_files(server.data_dir).items():
        assert root_key not in data, name
        assert base64.b64encode(root_key) not in data, name
        assert root_key.hex().encode() not in data, name
        assert b"PRIVATE KEY" not in data, name
        assert_absent(data, server.env["IDENTITY_HEADER"], name)


def test_backup_blobs_hold_no_plaintext(rest: Rest) -> None:
    name, value = f"bk-{uuid.uuid4().hex[:10]}", f"BACKUP-CANARY-{uuid.uuid4().hex}"
    assert rest.call("PUT", f"/secrets/{name}", json={"value": value}).status_code == 200
    blob = rest.call("POST", f"/secrets/{name}/backup").json()["value"]
    raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
    assert_absent(raw, value, "the backup blob")
    assert name.encode() not in raw  # the name is inside the sealed part too


def test_the_log_holds_no_secret_values_and_no_tokens(server: DevServer, rest: Rest,
                                                      stored: Stored) -> None:
    token = rest.token
    bogus = "eyJhbGciOiJub25lIn0.eyJvaWQiOiJ4In0.forged-signature-value"
    value = f"LOGCANARY-{uuid.uuid4().hex}"
    # Requests that fail after the value has been read, and one with a forged token.
    assert rest.call("PUT", "/secrets/log-canary", json={"value": value,
                                                         "attributes": "not an object"}
                     ).status_code == 400
    r = rest.call("PUT", "/secrets/invalid_name!", json={"value": value})
    assert r.status_code == 400
    assert value not in r.text
    assert rest.call("PUT", "/secrets/log-canary", json={"value": 12345}).status_code == 400
    assert rest.call("GET", "/secrets", token=bogus).status_code == 401
    r = rest.call("PUT", "/secrets/log-canary", json={"value": value})
    assert r.status_code == 200
    assert rest.call("GET", "/secrets/log-canary").json()["value"] == value
    health = rest.call("GET", "/healthz")
    assert health.status_code == 200

    log = server.log_through(health.headers["x-ms-request-id"])  # every line above too
    assert "PUT /secrets/log-canary" in log  # the log is the request log we think it is
    for secret in [*stored.values, value]:
        assert secret not in log
    for t in (token, bogus):
        assert t not in log
        for part in t.split("."):
            assert part not in log
    assert "eyJ" not in log  # no JWT (header) of any kind
    assert "PRIVATE KEY" not in log


@pytest.mark.parametrize("name", ["root.key", "ca.key", "server.key", "dev.env", "okv.db"])
def test_private_files_are_owner_only(server: DevServer, name: str) -> None:
    mode = stat.S_IMODE((server.data_dir / name).stat().st_mode)
    assert mode == 0o600, f"{name} has mode {mode:o}"


def test_database_side_files_and_data_directory_are_owner_only(server: DevServer) -> None:
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    for path in server.data_dir.glob("okv.db-*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.name} has mode {mode:o}"


@pytest.mark.parametrize("name", ["ca.pem", "server.pem", "ca-bundle.pem"])
def test_public_files_hold_no_private_key(server: DevServer, name: str) -> None:
    assert b"PRIVATE KEY" not in (server.data_dir / name).read_bytes()


def test_the_log_does_not_hold_the_identity_header(server: DevServer) -> None:
    log = server.log()
    assert "OpenKeyVault dev server is ready" in log
    assert server.env["IDENTITY_HEADER"] not in log
    assert "IDENTITY_HEADER=<see dev.env>" in log
    assert f"IDENTITY_ENDPOINT={server.env['IDENTITY_ENDPOINT']}" in log
