"""A production node for tests: a TLS certificate, a configuration file, `okv init`, and
`okv server --config` as a real process group."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.server import free_port


def write_tls(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and its vault and pool hosts (a CA too, so
    that clients may trust it as their bundle)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.DNSName("*.vault.localhost"),
                x509.DNSName("*.managedhsm.localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    crt, pem_key = directory / "tls.crt", directory / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem_key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    pem_key.chmod(0o600)
    return crt, pem_key


def okv(*args: str, stdin: str = "", cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "openkeyvault", *args], input=stdin,
                          capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, **(env or {})})


@dataclass
class Node:
    base: Path
    config: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.base / f"node-{self.port}.log"

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def ca(self) -> str:
        return str(self.base / "tls.crt")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "openkeyvault", "server", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited early:\n{self.log()}")
            with contextlib.suppress(requests.RequestException):
                requests.get(f"{self.url}/healthz", verify=self.ca, timeout=2)
                return
            time.sleep(0.1)
        raise RuntimeError(f"node did not answer:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def health(self) -> tuple[int, dict[str, Any]]:
        r = requests.get(f"{self.url}/healthz", verify=self.ca, timeout=10)
        return r.status_code, r.json()

    def operator(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return okv("operator", *args, "--config", str(self.config), stdin=stdin)

    def wait_health(self, status: int, deadline_seconds: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + deadline_seconds
        while True:
            code, body = self.health()
            if code == status or time.monotonic() > deadline:
                assert code == status, body
                return body
            time.sleep(0.2)


def write_config(base: Path, port: int, seal: dict[str, Any],
                 database_url: str | None = None, extra: str = "") -> Path:
    """The node's configuration file; `extra`: more TOML tables, as they are written."""
    write_tls(base)
    lines = ["[server]", 'data_dir = "data"', f"port = {port}", "", "[dns]",
             'domain = "localhost"', "", "[tls]", 'certificate = "tls.crt"', 'key = "tls.key"',
             "", "[seal]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in seal.items()]
    if database_url:
        lines += ["", "[database]", f"url = {json.dumps(database_url)}"]
    config = base / "okv.toml"
    config.write_text("\n".join(lines) + "\n" + extra)
    return config


@contextlib.contextmanager
def production_node(base: Path, seal: dict[str, Any], database_url: str | None = None,
                    extra: str = "") -> Iterator[tuple[Node, dict[str, Any]]]:
    """An initialised, started node (sealed, unless its seal unseals itself) and what
    `okv init` printed; `extra`: more of the configuration file (`write_config`)."""
    port = free_port()
    config = write_config(base, port, seal, database_url, extra)
    made = okv("init", "--config", str(config))
    assert made.returncode == 0, made.stderr
    node = Node(base, config, port)
    node.start()
    try:
        yield node, json.loads(made.stdout)
    finally:
        node.stop()
