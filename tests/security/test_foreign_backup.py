"""Backup blobs restore only inside the deployment that made them."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError

from tests.sdk.clients import localhost_client
from tests.security.conftest import Rest, b64url, b64url_decode
from tests.support.server import DevServer, running


@pytest.fixture(scope="module")
def other_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """A second deployment: its own data directory, root key and deployment id."""
    data: Path = tmp_path_factory.mktemp("other") / "data"
    with running(data) as s:
        yield s


def _backup(rest: Rest, value: str) -> tuple[str, bytes]:
    name = f"foreign-{uuid.uuid4().hex[:10]}"
    assert rest.call("PUT", f"/secrets/{name}", json={"value": value}).status_code == 200
    r = rest.call("POST", f"/secrets/{name}/backup")
    assert r.status_code == 200, r.text
    return name, b64url_decode(r.json()["value"])


def test_a_blob_from_another_deployment_is_refused(server: DevServer, other_server: DevServer,
                                                   sdk_env: dict[str, str]) -> None:
    name, blob = _backup(Rest(other_server), "from-the-other-deployment")
    client = localhost_client(server)
    with pytest.raises(HttpResponseError) as info:
        client.restore_secret_backup(blob)
    assert info.value.status_code == 400
    assert info.value.error is not None
    assert info.value.error.code == "BadParameter"
    assert "another deployment" in str(info.value.error.message)
    assert "from-the-other-deployment" not in str(info.value)
    with pytest.raises(HttpResponseError) as missing:
        client.get_secret(name)
    assert missing.value.status_code == 404


def test_a_foreign_blob_is_refused_on_the_wire(rest: Rest, other_server: DevServer) -> None:
    name, blob = _backup(Rest(other_server), "wire-value")
    r = rest.call("POST", "/secrets/restore", json={"value": b64url(blob)})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "BadParameter"
    assert "another deployment" in err["message"]
    assert "Retry-After" not in r.headers
    assert rest.call("GET", f"/secrets/{name}").status_code == 404


def test_a_foreign_blob_relabelled_with_this_deployment_id_is_refused(
    rest: Rest, other_server: DevServer
) -> None:
    """Copying this deployment's id into the header does not help: the seal does not open."""
    _, mine = _backup(rest, "mine")
    name, foreign = _backup(Rest(other_server), "theirs")
    header = len(b"OKVBKP01")
    relabelled = foreign[:header] + mine[header:header + 16] + foreign[header + 16:]
    r = rest.call("POST", "/secrets/restore", json={"value": b64url(relabelled)})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "BadParameter"
    assert "integrity" in r.json()["error"]["message"]
    assert rest.call("GET", f"/secrets/{name}").status_code == 404


def test_a_blob_restores_in_its_own_deployment(other_server: DevServer) -> None:
    """The control: the same kind of blob is fine where it was made."""
    rest = Rest(other_server)
    name, blob = _backup(rest, "round-trip")
    assert rest.call("DELETE", f"/secrets/{name}").status_code == 200
    assert rest.call("DELETE", f"/deletedsecrets/{name}").status_code == 204
    r = rest.call("POST", "/secrets/restore",
                  json={"value": base64.urlsafe_b64encode(blob).decode()})
    assert r.status_code == 200, r.text
    assert rest.call("GET", f"/secrets/{name}").json()["value"] == "round-trip"


@pytest.mark.parametrize("mangle", ["flip-last", "flip-middle", "truncate", "not-a-backup"])
def test_tampered_blobs_are_refused(rest: Rest, mangle: str) -> None:
    name, blob = _backup(rest, "tamper-me")
    assert rest.call("DELETE", f"/secrets/{name}").status_code == 200
    assert rest.call("DELETE", f"/deletedsecrets/{name}").status_code == 204
    bad = bytearray(blob)
    if mangle == "flip-last":
        bad[-1] ^= 1
    elif mangle == "flip-middle":
        bad[len(bad) // 2] ^= 1
    elif mangle == "truncate":
        bad = bad[:-20]
    else:
        bad = bytearray(b"JUNKJUNK" + bytes(bad[8:]))
    r = rest.call("POST", "/secrets/restore", json={"value": b64url(bytes(bad))})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "BadParameter"
    assert "tamper-me" not in r.text
    assert rest.call("GET", f"/secrets/{name}").status_code == 404
