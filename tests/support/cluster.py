"""Several dev nodes on one PostgreSQL database behind HAProxy, shaped as one DevServer.

`OKV_TEST_CLUSTER=3` makes the session's `server` fixture (tests/conftest.py) such a
cluster: the SDK suites then run, unchanged, against three nodes with every request
balanced round robin (`make test-cluster`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field

from tests.support.haproxy import balancer
from tests.support.server import DevServer, free_port, read_env_file, running


@dataclass
class ClusterServer(DevServer):
    """`port` is the load balancer's; `nodes` are the servers behind it."""

    database_url: str = ""
    count: int = 3
    nodes: list[DevServer] = field(default_factory=list)
    _stack: ExitStack | None = None

    def start(self, timeout: float = 60) -> None:
        stack = ExitStack()
        try:
            self.nodes = [stack.enter_context(running(self.data_dir, workers=self.workers,
                                                      extra_args=(
                "--database", self.database_url, "--public-port", str(self.port),
                *self.extra_args))) for _ in range(self.count)]
            stack.enter_context(balancer(self.data_dir.parent, self.port,
                                         [n.port for n in self.nodes],
                                         self.data_dir / "server.pem",
                                         self.data_dir / "server.key", self.ca))
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        self.env = read_env_file(self.data_dir / "dev.env")

    def stop(self, sig: int = 2, timeout: float = 20, group: bool = False) -> int | None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        return 0

    def log(self) -> str:
        return "\n".join(n.log() for n in self.nodes)

    def okv(self, *args: str, inprocess: bool = True) -> subprocess.CompletedProcess[str]:
        argv = (*args, "--data-dir", str(self.data_dir))
        env = {"OKV_DATABASE_URL": self.database_url}
        if inprocess:
            from tests.support.okvcli import run

            return run(*argv, env=env)
        return subprocess.run([sys.executable, "-m", "openkeyvault", *argv],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, **env})


def cluster_server(data_dir: object, database_url: str, count: int) -> ClusterServer:
    from pathlib import Path

    return ClusterServer(data_dir=Path(str(data_dir)), port=free_port(),
                         database_url=database_url, count=count)
