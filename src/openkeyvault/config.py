"""Server settings, shared by the CLI and the worker processes (through one env var)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

ENV_VAR = "OKV_SETTINGS"
DEFAULT_PORT = 8443
DEFAULT_VAULT = "dev"
DEFAULT_IDLE_TIMEOUT = 5.0
# The HTTP server takes whole milliseconds, up to one minute.
IDLE_TIMEOUT_RANGE = (0.001, 60.0)
DEFAULT_MAX_CONNECTIONS = 8192
MAX_CONNECTIONS_RANGE = (64, 65536)
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 1024


def default_data_dir() -> Path:
    env = os.environ.get("OKV_DATA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "openkeyvault"


def default_database_url() -> str | None:
    """`OKV_DATABASE_URL`: a PostgreSQL URL; unset, the SQLite file in the data directory."""
    return os.environ.get("OKV_DATABASE_URL") or None


def default_trusted_proxies() -> tuple[str, ...]:
    """`OKV_TRUSTED_PROXIES`: CIDR ranges separated by commas or spaces."""
    raw = os.environ.get("OKV_TRUSTED_PROXIES", "")
    return tuple(p for p in raw.replace(",", " ").split() if p)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    domain: str = "localhost"
    default_vault: str = DEFAULT_VAULT
    dev: bool = True
    workers: int = 1
    # Seconds a connection may stay silent: after the TLS handshake until a request's head
    # has arrived, and on a keep-alive connection between a response and the next request.
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    # Connections each worker process holds open at once (granian's "backpressure"). Idle
    # ones are closed after `idle_timeout`, but until then each holds a slot: a few
    # thousand silent connections must not use up every slot.
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # Connections from one client address that may each have a request in progress at
    # once, in each worker (0: no limit); past it, 429 and the connection is closed.
    max_connections_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
    # Days between automatic rotations of the token signing key (0: never).
    token_key_days: int = 30
    # CIDR ranges of reverse proxies whose X-Forwarded-For names the client address
    # (checked against vault network rules); empty: the socket peer is the client.
    trusted_proxies: tuple[str, ...] = ()
    # The IMDS-style token endpoint (no secret, loopback callers only): None serves it
    # when `host` is a loopback address; True/False turn it on or off (`--imds/--no-imds`).
    imds: bool | None = None
    # A PostgreSQL URL (`postgresql://user@host/db`); None: SQLite, `okv.db` in data_dir.
    # Nodes started on the same data directory and database URL are one deployment.
    database_url: str | None = field(default_factory=default_database_url)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "okv.db"

    def resource_uri(self, name: str, kind: str = "vault") -> str:
        """A vault's (kind "vault") or managed HSM pool's (kind "managedhsm") URI as the
        control plane reports it; clients on the data plane get ids from their own Host."""
        port = "" if self.port == 443 else f":{self.port}"
        return f"https://{name}.{kind}.{self.domain}{port}/"

    def to_env(self) -> str:
        d = asdict(self)
        d["data_dir"] = str(self.data_dir)
        return json.dumps(d)

    @classmethod
    def from_env(cls) -> Settings:
        d = json.loads(os.environ[ENV_VAR])
        d["data_dir"] = Path(d["data_dir"])
        d["trusted_proxies"] = tuple(d.get("trusted_proxies", ()))
        return cls(**d)
