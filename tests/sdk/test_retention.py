"""Soft-delete retention: deleted secrets are purged automatically when it ends.

The dev server's clock is moved with its dev endpoint (POST /_okv/dev/clock,
guarded by the X-IDENTITY-HEADER secret), which also runs the purge of expired
deleted objects. Moving a clock by months would reach every other module if it
were the session server's (created dates, token lifetimes), so this module
overrides the `server` fixture with a server of its own; `sdk_env` then loads
that server's dev.env.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.secrets import SecretClient

from tests.sdk.clients import localhost_client, unique
from tests.support.server import DevServer, running

pytestmark = pytest.mark.usefixtures("sdk_env")

DAY = 86_400
HOUR = 3_600
RETENTION_DAYS = 90
POLL = {"_polling_interval": 0.2}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """This module's own server: its clock moves by months."""
    with running(tmp_path_factory.mktemp("okv-retention") / "data") as s:
        yield s


def clock(server: DevServer, method: str = "GET", header: str | None = None,
          **kw: Any) -> requests.Response:
    secret = server.env["IDENTITY_HEADER"] if header is None else header
    return requests.request(method, f"{server.url}/_okv/dev/clock", verify=server.ca,
                            headers={"X-IDENTITY-HEADER": secret}, timeout=30, **kw)


def advance(server: DevServer, seconds: int) -> dict[str, Any]:
    r = clock(server, "POST", json={"advanceSeconds": seconds})
    assert r.status_code == 200, r.text
    return r.json()


def fresh_client(server: DevServer) -> SecretClient:
    """A new client and credential: a token issued before a jump of months has expired."""
    return localhost_client(server)


def test_deleted_secret_is_recoverable_until_retention_ends(server: DevServer) -> None:
    client = fresh_client(server)
    name = unique("ret")
    client.set_secret(name, "kept")
    deleted = client.begin_delete_secret(name, **POLL).result()
    purge_at = int(deleted.scheduled_purge_date.timestamp())
    assert purge_at - int(deleted.deleted_date.timestamp()) == RETENTION_DAYS * DAY

    moved = advance(server, RETENTION_DAYS * DAY - HOUR)
    assert moved["now"] < purge_at

    client = fresh_client(server)
    still = client.get_deleted_secret(name)
    assert int(still.scheduled_purge_date.timestamp()) == purge_at
    assert name in {d.name for d in client.list_deleted_secrets()}
    client.begin_recover_deleted_secret(name, **POLL).wait()
    assert client.get_secret(name).value == "kept"


def test_auto_purge_after_retention_frees_the_name(server: DevServer) -> None:
    client = fresh_client(server)
    name, later = unique("ret"), unique("ret")
    for value in ("one", "two"):
        client.set_secret(name, value)
    deleted = client.begin_delete_secret(name, **POLL).result()
    purge_at = int(deleted.scheduled_purge_date.timestamp())

    assert advance(server, RETENTION_DAYS * DAY - HOUR)["now"] < purge_at
    client = fresh_client(server)
    assert client.get_deleted_secret(name).name == name
    # a secret deleted now has its own, later, purge date
    client.set_secret(later, "deleted later")
    client.begin_delete_secret(later, **POLL).wait()

    moved = advance(server, 2 * HOUR)
    assert moved["now"] >= purge_at
    assert moved["purged"] >= 1

    client = fresh_client(server)
    with pytest.raises(ResourceNotFoundError) as e:
        client.get_deleted_secret(name)
    assert e.value.error.code == "SecretNotFound"
    deleted_names = {d.name for d in client.list_deleted_secrets()}
    assert name not in deleted_names
    assert later in deleted_names
    with pytest.raises(ResourceNotFoundError):
        client.begin_recover_deleted_secret(name, **POLL)
    with pytest.raises(ResourceNotFoundError):
        client.purge_deleted_secret(name)
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)

    # the name is free again, with no history
    fresh = client.set_secret(name, "fresh")
    assert client.get_secret(name).value == "fresh"
    assert [p.version for p in client.list_properties_of_secret_versions(name)] == [
        fresh.properties.version
    ]
    client.begin_recover_deleted_secret(later, **POLL).wait()
    assert client.get_secret(later).value == "deleted later"


def test_clock_endpoint_refuses_a_wrong_header(server: DevServer) -> None:
    before = clock(server)
    assert before.status_code == 200, before.text
    right = server.env["IDENTITY_HEADER"]
    for header in ("", "wrong", right[:-1], right + "x", "x" * len(right)):
        for method, kw in (("POST", {"json": {"advanceSeconds": 10 * DAY}}), ("GET", {})):
            r = clock(server, method, header=header, **kw)
            assert r.status_code == 401, r.text
            assert r.json()["error"]["code"] == "Unauthorized"
            assert set(r.json()["error"]) == {"code", "message"}
    r = requests.post(f"{server.url}/_okv/dev/clock", json={"advanceSeconds": 10 * DAY},
                      verify=server.ca, timeout=30)
    assert r.status_code == 401, r.text
    # a bearer token is no substitute for the identity header
    token = requests.get(f"{server.url}/msi/token",
                         params={"api-version": "2019-08-01",
                                 "resource": f"https://vault.localhost:{server.port}"},
                         headers={"X-IDENTITY-HEADER": right}, verify=server.ca,
                         timeout=30).json()["access_token"]
    r = requests.post(f"{server.url}/_okv/dev/clock", json={"advanceSeconds": 10 * DAY},
                      headers={"Authorization": f"Bearer {token}"}, verify=server.ca, timeout=30)
    assert r.status_code == 401, r.text
    assert clock(server).json()["offset"] == before.json()["offset"]


@pytest.mark.parametrize("body", [
    {"advanceSeconds": -1}, {"advanceSeconds": "10"}, {"advanceSeconds": True},
    {"advanceSeconds": None}, {}, {"advanceSeconds": 21 * 365 * DAY}, [1],
])
def test_clock_endpoint_refuses_a_bad_advance(server: DevServer, body: Any) -> None:
    before = clock(server).json()["offset"]
    r = clock(server, "POST", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "BadParameter"
    assert clock(server).json()["offset"] == before
