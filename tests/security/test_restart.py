"""A clean stop and a restart on the same data directory keep everything, identity included."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from tests.security.conftest import Rest
from tests.support.server import DevServer, free_port

POLL = {"_polling_interval": 0.2}


def _client(server: DevServer) -> SecretClient:
    return SecretClient(server.url, ManagedIdentityCredential(), verify_challenge_resource=False)


def _snapshot_files(data_dir: Path) -> dict[str, bytes]:
    return {n: (data_dir / n).read_bytes()
            for n in ("ca.pem", "ca.key", "server.pem", "server.key", "root.key", "dev.env")}


def test_sigint_stops_cleanly_and_a_restart_keeps_everything(
    tmp_path: Path, use_server_env: Callable[[DevServer], None]
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    first = DevServer(data_dir=data_dir, port=port)
    first.start()
    try:
        use_server_env(first)
        client = _client(first)
        mark = uuid.uuid4().hex[:8]
        multi, gone, tagged, disabled = (f"{p}-{mark}" for p in ("multi", "gone", "tagged",
                                                                  "disabled"))
        versions = [client.set_secret(multi, f"multi-value-{i}").properties.version
                    for i in range(3)]
        client.set_secret(gone, "gone-value")
        deleted = client.begin_delete_secret(gone, **POLL).result()
        client.set_secret(tagged, "tagged-value", content_type="text/plain",
                          tags={"team": "security"})
        client.set_secret(disabled, "disabled-value")
        client.update_secret_properties(disabled, enabled=False)
        old_token = Rest(first).token
        before = _snapshot_files(data_dir)
        env_before = dict(first.env)
    finally:
        code = first.stop(group=True)  # SIGINT to the process group, as Ctrl-C would
    assert code == 0, first.log()
    assert "Traceback" not in first.log()

    second = DevServer(data_dir=data_dir, port=port)
    second.start()
    try:
        assert _snapshot_files(data_dir) == before  # CA, keys, dev.env: byte for byte
        assert second.env == env_before
        assert second.env["IDENTITY_HEADER"] == env_before["IDENTITY_HEADER"]

        # A token issued before the restart still verifies: same signing key, same issuer.
        rest = Rest(second)
        assert rest.call("GET", "/secrets", token=old_token).status_code == 200

        use_server_env(second)
        client = _client(second)
        assert client.get_secret(multi).value == "multi-value-2"
        for i, v in enumerate(versions):
            assert client.get_secret(multi, v).value == f"multi-value-{i}"
        listed = {p.version for p in client.list_properties_of_secret_versions(multi)}
        assert listed == set(versions)

        t = client.get_secret(tagged)
        assert (t.value, t.properties.content_type, t.properties.tags) == (
            "tagged-value", "text/plain", {"team": "security"})
        props = {p.name: p for p in client.list_properties_of_secrets()}
        assert props[disabled].enabled is False
        assert gone not in props

        with pytest.raises(ResourceNotFoundError):
            client.get_secret(gone)
        d = client.get_deleted_secret(gone)
        assert d.deleted_date == deleted.deleted_date
        assert d.scheduled_purge_date == deleted.scheduled_purge_date
        assert gone in {s.name for s in client.list_deleted_secrets()}
        client.begin_recover_deleted_secret(gone, **POLL).wait()
        assert client.get_secret(gone).value == "gone-value"
    finally:
        code = second.stop(group=True)
    assert code == 0, second.log()
    assert "Traceback" not in second.log()
