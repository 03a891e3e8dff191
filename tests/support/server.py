"""Run the real `okv server --dev` as a subprocess for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k] = v
    return env


@dataclass
class DevServer:
    data_dir: Path
    port: int
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    extra_args: tuple[str, ...] = ()  # more `okv server` options, e.g. --trusted-proxy
    database_url: str | None = None  # a PostgreSQL database (tests/support/cluster.py)

    def settings(self, **given: Any) -> Any:
        """The deployment's settings, for opening it in the test process."""
        from openkeyvault.config import Settings

        return Settings(**{"data_dir": self.data_dir, "port": self.port,
                           "database_url": self.database_url, **given})

    @property
    def url(self) -> str:
        """The default vault on bare localhost (clients must skip challenge verification)."""
        return f"https://localhost:{self.port}"

    def vault_url(self, name: str = "dev") -> str:
        return f"https://{name}.vault.localhost:{self.port}"

    @property
    def ca(self) -> str:
        return str(self.data_dir / "ca.pem")

    def start(self, timeout: float = 60) -> None:
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        with open(self.log_path, "ab") as log:
            # Its database is the one its own options name, never one the environment
            # of the test process happens to name.
            env = {k: v for k, v in os.environ.items() if k != "OKV_DATABASE_URL"}
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "openkeyvault", "server", "--dev",
                 "--data-dir", str(self.data_dir), "--port", str(self.port),
                 "--workers", str(self.workers), *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
            )
        ctx = ssl.create_default_context()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            if (self.data_dir / "ca.pem").exists():
                ctx = ssl.create_default_context(cafile=self.ca)
                try:
                    with urllib.request.urlopen(
                        f"https://127.0.0.1:{self.port}/healthz", context=ctx, timeout=2
                    ) as r:
                        if r.status == 200:
                            self.env = read_env_file(self.data_dir / "dev.env")
                            return
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become ready:\n{self.log()}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20,
             group: bool = False) -> int | None:
        """Send `sig` to the main process, as `kill PID` does (it then stops its workers), or
        with `group=True` to the whole process group, as Ctrl-C does.

        A worker that gets the group's signal as well as its main process's stop sometimes
        stops only when killed, SHUTDOWN_GRACE_SECONDS later: tests that only need the
        server gone stop it the first way; those about Ctrl-C ask for the group.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if group:
                    os.killpg(self.proc.pid, sig)
                else:
                    os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def log_through(self, request_id: str, timeout: float = 20.0) -> str:
        """The log once the request line of `request_id` is in it, and with it every line
        written before (a worker writes its request lines a buffer at a time, within a
        fraction of a second: ops/logs.py `buffered_stderr`)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            if f" rid={request_id} " in text or time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    def okv(self, *args: str, inprocess: bool = True) -> subprocess.CompletedProcess[str]:
        """`okv ARGS --data-dir DATA`: in this process (tests/support/okvcli.py, same result
        shape, a fraction of the time), or with `inprocess=False` as a real
        `python -m openkeyvault` process, for what only a process shows."""
        argv = (*args, "--data-dir", str(self.data_dir))
        if inprocess:
            from tests.support.okvcli import run

            return run(*argv)
        return subprocess.run([sys.executable, "-m", "openkeyvault", *argv],
                              capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def running(data_dir: Path, workers: int = 1,
            extra_args: tuple[str, ...] = ()) -> Iterator[DevServer]:
    server = DevServer(data_dir=data_dir, port=free_port(), workers=workers,
                       extra_args=extra_args)
    server.start()
    try:
        yield server
    finally:
        server.stop()
