"""A throwaway PostgreSQL cluster for tests: `initdb` + `pg_ctl` in a temporary directory.

The cluster listens only on a unix socket inside its own directory (no TCP port to
collide with another test process), runs with fsync off (its data is thrown away;
`durable=True` turns fsync and synchronous commits on, for crash tests) and trusts
every local connection. `initdb` refuses to run as root, so as root the server runs as
an unprivileged account (`postgres` where the server package made one, else `nobody`)
that owns the directory; the tests connect to it as root through the socket.

`postgres_cluster()` is the plain context manager; tests/conftest.py registers the
session fixture `postgres` (one cluster per test process) and the function fixture
`pg_url` (a fresh database for each test).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "okv"
PORT = 5432  # only names the socket file (.s.PGSQL.5432): the directory is the cluster's own
SETTINGS = {
    "listen_addresses": "''",
    "unix_socket_directories": None,  # the cluster's directory, set below
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
}
# What `durable=True` changes: every commit is flushed to disk before it is acknowledged,
# for tests about what survives a crash of the server.
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
INSTALL_HINT = ("PostgreSQL's server binaries (initdb, pg_ctl) were not found on PATH nor "
                "in /usr/lib/postgresql/*/bin: `make test` installs them, or run "
                "`apt-get install --no-install-recommends postgresql`")


class PostgresUnavailable(RuntimeError):
    """No server binaries, or the cluster did not start (the message says which)."""


def find_bin_dir() -> Path:
    """The directory holding initdb and pg_ctl: PATH first, then Debian's versioned
    directories (newest first), where the server package puts them."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    candidates = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.parent.name))

    for bin_dir in sorted(candidates, key=version, reverse=True):
        if (bin_dir / "pg_ctl").exists():
            return bin_dir
    raise PostgresUnavailable(INSTALL_HINT)


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this one) unless this is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable("running as root with neither a `postgres` nor a `nobody` "
                              "account to run the PostgreSQL server as")


@dataclass
class PostgresCluster:
    base: Path
    bin_dir: Path
    account: pwd.struct_passwd | None
    durable: bool = False  # fsync and synchronous commits on (DURABLE)
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base

    @property
    def log_path(self) -> Path:
        return self.base / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3) for `database`, through the unix socket."""
        return (f"postgresql+psycopg://{SUPERUSER}@/{database}"
                f"?host={self.socket_dir}&port={PORT}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a server binary (as the server's account when this is root)."""
        account = self.account
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC",
               "HOME": str(self.base)}
        return subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]], capture_output=True, text=True,
            timeout=timeout, env=env, cwd=self.base, stdin=subprocess.DEVNULL,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one statement with the superuser (autocommit, as CREATE DATABASE needs)."""
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), port=PORT, user=SUPERUSER,
                             dbname=database, autocommit=True) as conn:
            cur = conn.execute(sql)
            return str(cur.fetchall()) if cur.description else ""

    def create_database(self, name: str | None = None, template: str = "template0") -> str:
        """A new empty database (named `test_N` unless given); its URL."""
        name = name or f"test_{next(self._names)}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE {template}')
        return self.url(name)

    def start(self) -> None:
        init = self.run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                        "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
        if init.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {init.stderr.strip() or init.stdout}")
        settings = {**SETTINGS, **(DURABLE if self.durable else {}),
                    "unix_socket_directories": f"'{self.socket_dir}'", "port": str(PORT)}
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# tests/support/postgres.py\n")
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        started = self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path),
                           "-w", "-t", "60", "start")
        if started.returncode != 0:
            raise PostgresUnavailable(
                f"pg_ctl start failed: {started.stderr.strip()}\n{self.log()[-4000:]}")

    def stop(self) -> None:
        """Stop at once (the data is thrown away: no checkpoint needed)."""
        if (self.data / "postmaster.pid").exists():
            self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")


@contextlib.contextmanager
def postgres_cluster(durable: bool = False) -> Iterator[PostgresCluster]:
    """A running throwaway cluster; stopped and removed on the way out, whatever happened.
    `durable`: fsync and synchronous commits on, as a production server runs."""
    bin_dir = find_bin_dir()
    account = _server_account()
    # Short path: a unix socket's path is limited to about 100 bytes.
    base = Path(tempfile.mkdtemp(prefix="okv-pg-", dir="/tmp"))
    cluster = PostgresCluster(base=base, bin_dir=bin_dir, account=account, durable=durable)
    try:
        if account is not None:
            os.chown(base, account.pw_uid, account.pw_gid)
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)
