"""Server settings, shared by the CLI and the worker processes (through one env var)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ENV_VAR = "OKV_SETTINGS"
DEFAULT_PORT = 8443
DEFAULT_VAULT = "dev"
DEFAULT_IDLE_TIMEOUT = 5.0
# The HTTP server takes whole milliseconds, up to one minute.
IDLE_TIMEOUT_RANGE = (0.001, 60.0)
DEFAULT_MAX_CONNECTIONS = 8192
MAX_CONNECTIONS_RANGE = (64, 65536)
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 1024
SCHEDULER_INTERVAL_ENV = "OKV_SCHEDULER_INTERVAL"
DEFAULT_SCHEDULER_INTERVAL = 30.0
SCHEDULER_INTERVAL_RANGE = (0.1, 3600.0)


def default_data_dir() -> Path:
    env = os.environ.get("OKV_DATA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "openkeyvault"


def default_database_url() -> str | None:
    """`OKV_DATABASE_URL`: a PostgreSQL URL; unset, the SQLite file in the data directory."""
    return os.environ.get("OKV_DATABASE_URL") or None


def default_scheduler_interval() -> float:
    """`OKV_SCHEDULER_INTERVAL`: seconds between the scheduler's ticks (ops/scheduler.py;
    its lease lasts three). Unset: DEFAULT_SCHEDULER_INTERVAL."""
    raw = os.environ.get(SCHEDULER_INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_SCHEDULER_INTERVAL
    low, high = SCHEDULER_INTERVAL_RANGE
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # NaN fails too
        from openkeyvault.storage.errors import StartupRefused

        raise StartupRefused(f"{SCHEDULER_INTERVAL_ENV} must be a number of seconds from "
                             f"{low:g} to {high:g}, not {raw[:40]!r}")
    return value


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
    # Production (`okv server --config FILE`): the seal the root key is protected by (as
    # the config file's [seal] table; None: the dev key file), and the TLS files.
    seal: dict[str, Any] | None = None
    tls_certificate: str | None = None
    tls_key: str | None = None
    # The port clients use, where it is not `port` (nodes behind a load balancer): the
    # URLs the deployment hands out (vault URIs, the token issuer) carry it.
    public_port: int | None = None

    @property
    def public(self) -> int:
        return self.public_port or self.port
    # Seconds between the background scheduler's ticks; the process holding the scheduler
    # lease runs the jobs, and a dead holder is replaced after about three ticks.
    scheduler_interval: float = field(default_factory=default_scheduler_interval)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "okv.db"

    def resource_uri(self, name: str, kind: str = "vault") -> str:
        """A vault's (kind "vault") or managed HSM pool's (kind "managedhsm") URI as the
        control plane reports it; clients on the data plane get ids from their own Host."""
        port = "" if self.public == 443 else f":{self.public}"
        return f"https://{name}.{kind}.{self.domain}{port}/"

    @property
    def authority(self) -> str:
        """The token service's base URL: `localhost` on a dev server, the deployment's
        domain in production (clients reach it there, as the management API)."""
        host = "localhost" if self.dev else self.domain
        port = "" if self.public == 443 else f":{self.public}"
        return f"https://{host}{port}"

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


class ConfigError(ValueError):
    """The configuration file is unreadable or says something this version cannot do."""


_SEAL_TYPES = ("shamir", "azurekeyvault", "devkey")


def load_config(path: Path) -> Settings:
    """Production settings from a TOML file (docs/operations.md shows every key).

    [server] host, port, workers, data_dir, idle_timeout, max_connections,
    max_connections_per_address, trusted_proxies; [dns] domain; [tls] certificate, key;
    [database] url; [seal] type = "shamir" (shares, threshold) | "azurekeyvault"
    (key_id, tenant_id, client_id, client_secret_file | credential = "default") |
    "devkey" (refused unless force = true)."""
    import tomllib

    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    known = {"server", "dns", "tls", "database", "seal"}
    if unknown := sorted(set(raw) - known):
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(known))}")
    server, dns, tls = raw.get("server", {}), raw.get("dns", {}), raw.get("tls", {})
    database, seal = raw.get("database", {}), raw.get("seal")
    if "data_dir" not in server:
        raise ConfigError(f"{path}: [server] data_dir is required")
    if not tls.get("certificate") or not tls.get("key"):
        raise ConfigError(f"{path}: [tls] certificate and key (PEM files) are required")
    if not isinstance(seal, dict) or seal.get("type") not in _SEAL_TYPES:
        raise ConfigError(f"{path}: [seal] type must be one of {', '.join(_SEAL_TYPES)}")
    if seal["type"] == "devkey" and seal.get("force") is not True:
        raise ConfigError(f"{path}: the dev key-file seal keeps the root key on disk beside "
                          "the data; set [seal] force = true to use it anyway")
    base = path.parent
    settings: dict[str, Any] = {
        "data_dir": (base / str(server["data_dir"])).resolve(),
        "dev": False,
        "imds": False,
        "seal": dict(seal),
        "tls_certificate": str((base / str(tls["certificate"])).resolve()),
        "tls_key": str((base / str(tls["key"])).resolve()),
        "database_url": database.get("url") or default_database_url(),
    }
    for key in ("host", "port", "public_port", "workers", "idle_timeout", "max_connections",
                "max_connections_per_address"):
        if key in server:
            settings[key] = server[key]
    if "trusted_proxies" in server:
        settings["trusted_proxies"] = tuple(server["trusted_proxies"])
    if "domain" in dns:
        settings["domain"] = str(dns["domain"])
    try:
        return Settings(**settings)
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
