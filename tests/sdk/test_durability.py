"""A crash mid-request loses nothing that was acknowledged."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from azure.core.exceptions import AzureError

from tests.sdk.clients import localhost_client
from tests.support.server import DevServer, free_port, read_env_file


@pytest.fixture
def own_server(tmp_path, monkeypatch):
    server = DevServer(data_dir=tmp_path / "data", port=free_port(), workers=2)
    server.start()
    for k, v in server.env.items():
        monkeypatch.setenv(k, v)
    yield server
    server.stop()


def test_sigkill_during_writes_keeps_every_acknowledged_secret(own_server) -> None:
    client = localhost_client(own_server)
    acknowledged: dict[str, str] = {}
    stop = threading.Event()

    def writer(prefix: str) -> None:
        i = 0
        while not stop.is_set():
            name, value = f"{prefix}-{i}", f"value-{prefix}-{i}"
            try:
                client.set_secret(name, value, retry_total=0)
            except AzureError:
                return
            acknowledged[name] = value
            i += 1

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("a", "b", "c", "d")]
    for t in threads:
        t.start()
    while len(acknowledged) < 40:
        threading.Event().wait(0.01)
    assert own_server.proc is not None
    os.killpg(own_server.proc.pid, signal.SIGKILL)  # no clean shutdown
    own_server.proc.wait()
    own_server.proc = None
    stop.set()
    for t in threads:
        t.join(30)

    own_server.start()
    assert read_env_file(own_server.data_dir / "dev.env")["IDENTITY_HEADER"] == \
        own_server.env["IDENTITY_HEADER"]
    client = localhost_client(own_server)
    for name, value in acknowledged.items():
        assert client.get_secret(name).value == value
    # and the restarted server keeps working
    client.set_secret("after-crash", "ok")
    assert client.get_secret("after-crash").value == "ok"
