"""The audit trail end to end, on real server processes: every answered request recorded
before its response, no secret value or token in the trail, `okv audit verify` clean on
what a server wrote; fail closed (503 AuditUnavailable, nothing done) and fail open (one
warning) when the audit directory cannot be written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from openkeyvault.ops.audit import AUDIT_DIR, CLAIM_OID, ERROR_CODE
from openkeyvault.ops.auditread import records
from tests.security.conftest import Rest, b64url_decode, open_deployment, resource
from tests.support.server import running

SECRET_VALUE = "audit-canary-7f3c2a91-do-not-log"


def _by_request(data: Path) -> dict[str, dict[str, Any]]:
    return {r["properties"]["requestId"]: r for r in records(data / AUDIT_DIR)}


def test_requests_are_recorded_before_the_response_without_secrets(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running(data) as server:
        rest = Rest(server)
        token = rest.token
        oid = json.loads(b64url_decode(token.split(".")[1]))["oid"]
        put = rest.call("PUT", "/secrets/audited", json={"value": SECRET_VALUE})
        get = rest.call("GET", "/secrets/audited", headers={
            "x-ms-client-request-id": "0b8e4c1e-aaaa-4000-8000-000000000001"})
        anonymous = rest.call("GET", "/secrets/audited", token=None)
        missing = rest.call("GET", "/secrets/never-made")
        assert [r.status_code for r in (put, get, anonymous, missing)] == [200, 200, 401, 404]
        # Each line is in the file by the time its response has arrived.
        seen = _by_request(data)
        for r in (put, get, anonymous, missing):
            assert r.headers["x-ms-request-id"] in seen
        set_, read = (seen[r.headers["x-ms-request-id"]] for r in (put, get))
        assert (set_["operationName"], read["operationName"]) == ("SecretSet", "SecretGet")
        assert read["identity"]["claim"][CLAIM_OID] == oid
        assert read["correlationId"] == "0b8e4c1e-aaaa-4000-8000-000000000001"
        assert read["properties"]["httpStatusCode"] == 200
        assert read["resultSignature"] == "OK" and read["category"] == "AuditEvent"
        assert seen[anonymous.headers["x-ms-request-id"]]["identity"] == {"claim": {}}
        assert seen[missing.headers["x-ms-request-id"]]["resultSignature"] == "NotFound"
    trail = b"".join(p.read_bytes() for p in (data / AUDIT_DIR).iterdir())
    assert SECRET_VALUE.encode() not in trail
    assert token.encode() not in trail and token.split(".")[2].encode() not in trail
    done = server.okv("audit", "verify")
    assert done.returncode == 0, done.stdout + done.stderr


def test_several_workers_each_keep_a_chain(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running(data, workers=2) as server:
        rest = Rest(server)
        for i in range(30):
            assert rest.call("PUT", f"/secrets/w{i}", json={"value": "x"}).status_code == 200
    done = server.okv("audit", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(list(records(data / AUDIT_DIR))) >= 30


def _unwritable_audit_dir(tmp_path: Path) -> str:
    """A path under a regular file: no process, root included, can create it."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    return str(blocker / "audit")


def _msi_status(rest: Rest) -> int:
    r = rest.session.get(f"{rest.server.url}/msi/token",
                         params={"api-version": "2019-08-01", "resource": resource(rest.server)},
                         headers={"X-IDENTITY-HEADER": rest.server.env["IDENTITY_HEADER"]})
    return r.status_code


def test_fail_closed_refuses_before_acting(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("OKV_AUDIT_DIR", _unwritable_audit_dir(tmp_path))
    monkeypatch.setenv("OKV_AUDIT_FAIL_CLOSED", "true")
    with running(data) as server:
        rest = Rest(server)
        # The token service is refused too (issuing a token is an operation): a token
        # minted in this process, as the server would, with the deployment's signing key.
        d = open_deployment(server)
        try:
            rest._token = d.tokens.issue(d.dev_principal, resource(server)).access_token
        finally:
            d.close()
        r = rest.call("PUT", "/secrets/unaudited", json={"value": SECRET_VALUE})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == ERROR_CODE
        assert int(r.headers["Retry-After"]) > 0
        assert rest.call("GET", "/secrets/unaudited").status_code == 503
        assert _msi_status(rest) == 503
    assert server.log().count("operations are refused") == 1
    assert SECRET_VALUE not in server.log()
    monkeypatch.delenv("OKV_AUDIT_DIR")
    with running(data) as again:  # nothing was written by the refused PUT
        assert Rest(again).call("GET", "/secrets/unaudited").status_code == 404


def test_fail_open_on_a_dev_server_warns_once(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OKV_AUDIT_DIR", _unwritable_audit_dir(tmp_path))
    monkeypatch.delenv("OKV_AUDIT_FAIL_CLOSED", raising=False)
    with running(tmp_path / "data") as server:
        rest = Rest(server)
        for i in range(5):
            assert rest.call("PUT", f"/secrets/open{i}", json={"value": "x"}).status_code \
                == 200
    assert server.log().count("UNAUDITED") == 1
