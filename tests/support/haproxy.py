"""A real load balancer (HAProxy) in front of several nodes, for tests.

It terminates TLS with the nodes' certificate and balances every request (not every
connection) round robin over the nodes, re-encrypting to them, so that one SDK client
on one keep-alive connection still reaches every node.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import requests


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                        if Path("/usr/sbin/haproxy").exists() else None)
    if found is None:
        raise RuntimeError("haproxy is not installed (`make test` installs it)")
    return found


@contextlib.contextmanager
def balancer(base: Path, port: int, backends: list[int], certificate: Path, key: Path,
             ca: str) -> Iterator[subprocess.Popen[bytes]]:
    """HAProxy on 127.0.0.1:`port` in front of 127.0.0.1:`backends`."""
    pem = base / "haproxy.pem"
    pem.write_bytes(certificate.read_bytes() + key.read_bytes())
    pem.chmod(0o600)
    servers = "\n".join(f"    server node{i} 127.0.0.1:{p} ssl verify required ca-file {ca} "
                        "sni str(localhost) check-ssl check inter 500ms fall 2 rise 1"
                        for i, p in enumerate(backends))
    config = base / "haproxy.cfg"
    config.write_text(f"""global
    maxconn 2000

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option httpchk GET /healthz
    http-reuse never

frontend okv
    bind 127.0.0.1:{port} ssl crt {pem} alpn http/1.1
    default_backend nodes

backend nodes
    balance roundrobin
    option forwardfor
{servers}
""")
    log = open(base / "haproxy.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([haproxy_binary(), "-db", "-f", str(config)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError((base / "haproxy.log").read_text())
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"https://localhost:{port}/healthz", verify=ca,
                                timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("haproxy did not answer: " +
                                   (base / "haproxy.log").read_text())
            time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
