"""The server process: silent TLS connections are closed, dead workers are replaced, and a
port already in use is refused.

Everything runs against the real `okv server` on 127.0.0.1; floods are bounded in count
and time. Waits are generous and the assertions are outcomes (served, closed, exit code),
never durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from openkeyvault.cli.server import FILES_PER_WORKER, connection_slots
from tests.support.procfs import children
from tests.support.server import DevServer, free_port, running
from tests.support.tls import healthz

LOOPBACK = "127.0.0.1"
FLOOD = 1100  # more than one worker's default connection slots (1024)
HANDSHAKE_WAIT = 30.0
# A flood connection waits this long for the server to close it; the client's wait for
# service ends well before, so a server that never closes them cannot pass by the flood
# giving up first.
HOLD = 150.0
SERVED_WAIT = 60.0


def _healthz(server: DevServer, timeout: float = 30.0) -> bool:
    """One request on a new TLS connection, as a client with no pooled connection."""
    return healthz(server.port, server.ca, timeout)


def _served_within(server: DevServer, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if _healthz(server, timeout=min(30.0, max(1.0, deadline - time.monotonic()))):
            return True
        time.sleep(0.2)
    return False


class IdleTLSFlood:
    """`count` connections that complete the TLS handshake, then never send a byte.

    Each one waits up to `hold` seconds for the server to close it. `outcomes` counts
    "closed" (the server closed it), "open" (still open when the wait ended) and
    "no handshake" (refused or not accepted in time).
    """

    def __init__(self, port: int, ca: str, count: int, hold: float,
                 handshake_wait: float = HANDSHAKE_WAIT) -> None:
        self.port, self.ca, self.count, self.hold = port, ca, count, hold
        self.handshake_wait = handshake_wait
        self.outcomes: Counter[str] = Counter()
        self.attempted = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> IdleTLSFlood:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.join()

    def join(self) -> Counter[str]:
        self._thread.join(self.handshake_wait + self.hold + 60)
        assert not self._thread.is_alive(), "the flood did not stop"
        return self.outcomes

    async def _run(self) -> None:
        ctx = ssl.create_default_context(cafile=self.ca)
        handshakes = asyncio.Semaphore(64)
        started = 0

        async def one() -> str:
            nonlocal started
            async with handshakes:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(LOOPBACK, self.port, ssl=ctx),
                        self.handshake_wait)
                except (OSError, TimeoutError):
                    return "no handshake"
                finally:
                    started += 1
                    if started == self.count:
                        self.attempted.set()
            try:
                await asyncio.wait_for(reader.read(1), self.hold)
                return "closed"  # EOF: the server closed it
            except TimeoutError:
                return "open"
            except (OSError, ssl.SSLError):
                return "closed"  # reset by the server
            finally:
                writer.close()

        results = await asyncio.gather(*(one() for _ in range(self.count)))
        self.outcomes.update(results)
        self.attempted.set()


# ---- idle connections ------------------------------------------------------------------------
def test_idle_tls_flood_is_closed_and_a_client_is_still_served(tmp_path: Path) -> None:
    with running(tmp_path / "data") as server, \
            IdleTLSFlood(server.port, server.ca, FLOOD, HOLD) as flood:
        assert flood.attempted.wait(FLOOD * HANDSHAKE_WAIT / 64 + 30)
        served = _served_within(server, SERVED_WAIT)
        outcomes = flood.join()
        assert served, f"a client was not served during an idle TLS flood ({dict(outcomes)})"
        assert outcomes["open"] == 0, f"idle connections were left open: {dict(outcomes)}"
        assert outcomes["closed"] > 0, dict(outcomes)
        assert _healthz(server)


def test_silent_connections_held_open_do_not_use_up_the_slots(tmp_path: Path) -> None:
    """With the idle timeout long, 1,100 silent connections stay open: each holds one of
    the worker's connection slots, and a client must still find one free. (The flood
    holds them longer than its own handshake wait plus the client's wait, so a server
    whose slots ran out cannot pass by the flood letting go first.)"""
    with running(tmp_path / "data", extra_args=("--idle-timeout", "60")) as server, \
            IdleTLSFlood(server.port, server.ca, FLOOD, 25.0, handshake_wait=10.0) as flood:
        assert flood.attempted.wait(FLOOD * 10.0 / 64 + 30)
        served = _served_within(server, 10.0)
        outcomes = flood.join()
        assert outcomes["open"] > FLOOD // 2, dict(outcomes)  # they really were held
        assert served, f"a client was not served beside {FLOOD} open connections"


def test_connection_slots_fit_the_open_file_limit() -> None:
    assert connection_slots(8192, None) == 8192
    assert connection_slots(8192, 1_048_576) == 8192
    assert connection_slots(8192, 1024) == 1024 - FILES_PER_WORKER


def test_max_connections_out_of_range_is_refused(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "openkeyvault", "server", "--dev",
                        "--data-dir", str(tmp_path / "data"), "--port", str(free_port()),
                        "--max-connections", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--max-connections" in r.stderr
    assert not (tmp_path / "data").exists()


def test_silent_keep_alive_connection_is_closed(tmp_path: Path) -> None:
    with running(tmp_path / "data", extra_args=("--idle-timeout", "1")) as server:
        ctx = ssl.create_default_context(cafile=server.ca)
        with socket.create_connection((LOOPBACK, server.port), timeout=60) as raw, \
                ctx.wrap_socket(raw, server_hostname=LOOPBACK) as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            response = b""
            while b"\r\n\r\n" not in response:
                response += tls.recv(4096)
            assert response.startswith(b"HTTP/1.1 200")
            rest = b""
            with contextlib.suppress(ConnectionError):
                while chunk := tls.recv(4096):  # the body, then EOF when the server closes
                    rest += chunk
            assert b"HTTP/1.1" not in rest  # closed without answering anything else


def test_idle_timeout_out_of_range_is_refused(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "openkeyvault", "server", "--dev",
                        "--data-dir", str(tmp_path / "data"), "--port", str(free_port()),
                        "--idle-timeout", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--idle-timeout" in r.stderr
    assert not (tmp_path / "data").exists()


# ---- supervision ----------------------------------------------------------------------------
def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2:].split()[0] == "Z"


def _wait_for(predicate: object, wait: float = 60.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_killed_is_replaced_and_service_continues(tmp_path: Path, workers: int) -> None:
    with running(tmp_path / "data", workers=workers) as server:
        assert server.proc is not None
        master = server.proc.pid
        assert _wait_for(lambda: len(children(master)) == workers)
        before = children(master)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        assert _wait_for(lambda: _gone(victim))
        # Sent while the worker is being replaced: it waits in the listen queue.
        assert _healthz(server, timeout=60), server.log()[-2000:]
        assert _wait_for(lambda: len(children(master)) == workers and victim not in
                         children(master)), server.log()[-2000:]
        assert server.proc.poll() is None
        replacement = children(master) - before
        assert len(replacement) == 1
        for _ in range(5):
            assert _healthz(server)


# ---- the port -------------------------------------------------------------------------------
def _okv_server(data_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
    """Start a server expected to refuse; one that starts anyway is stopped after 60 s."""
    proc = subprocess.Popen([sys.executable, "-m", "openkeyvault", "server", "--dev",
                             "--data-dir", str(data_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the server started on a port in use:\n{out[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_second_server_on_a_port_in_use_is_refused(tmp_path: Path) -> None:
    with running(tmp_path / "first") as first:
        r = _okv_server(tmp_path / "second", first.port)
        assert r.returncode != 0
        assert "already in use" in r.stderr and str(first.port) in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert not (tmp_path / "second").exists()  # refused before anything was made
        assert _healthz(first)


def test_port_held_by_a_reuseport_listener_is_refused(tmp_path: Path) -> None:
    """A listener that itself allows address sharing (as granian's own sockets do)."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind((LOOPBACK, 0))
        other.listen(8)
        r = _okv_server(tmp_path / "data", other.getsockname()[1])
    assert r.returncode != 0
    assert "already in use" in r.stderr, r.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_a_later_listener_gets_no_share_of_the_port(tmp_path: Path, workers: int) -> None:
    """Another process that asks to share the port (SO_REUSEPORT, as granian's sockets
    do) is either refused or joins without ever being handed a connection."""
    with running(tmp_path / "data", workers=workers) as server, socket.socket() as intruder:
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            intruder.bind((LOOPBACK, server.port))
            intruder.listen(64)
        except OSError:
            return  # refused outright
        intruder.setblocking(False)
        clients = [socket.create_connection((LOOPBACK, server.port), timeout=10)
                   for _ in range(50)]
        try:
            with pytest.raises(BlockingIOError):
                intruder.accept()
        finally:
            for c in clients:
                c.close()
        assert _healthz(server)
