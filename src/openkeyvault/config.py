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


def _env_flag(name: str) -> bool | None:
    """A true/false environment variable (1/0, true/false, yes/no, on/off); None if unset."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    from openkeyvault.storage.errors import StartupRefused

    raise StartupRefused(f"{name} must be true or false, not {raw[:40]!r}")


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
    # The audit trail (ops/audit.py): the directory of its stream files (None: `audit/` in
    # data_dir; `OKV_AUDIT_DIR`), and whether an operation is refused (503) while it cannot
    # be written (None: yes in production, no on a dev server; `OKV_AUDIT_FAIL_CLOSED`).
    audit_dir: str | None = field(default_factory=lambda: os.environ.get("OKV_AUDIT_DIR")
                                  or None)
    audit_fail_closed: bool | None = field(default_factory=lambda: _env_flag(
        "OKV_AUDIT_FAIL_CLOSED"))
    # Prometheus metrics (ops/metrics.py): a plain-HTTP listener of the supervising process
    # on metrics_host:metrics_port (None: none), and/or /metrics on the main port for a
    # bearer token read from metrics_token_file (None: not served there). metrics_per_vault
    # False drops the vault label (fewer series with many vaults).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_token_file: str | None = None
    metrics_per_vault: bool = True
    # Throttling by Azure's service limits (ops/throttle.py, ops/limits.py): on or off,
    # a multiplier of every limit, and limits per 10 s replacing single classes'.
    throttling: bool = True
    throttling_scale: float = 1.0
    throttling_limits: dict[str, float] = field(default_factory=dict)
    # The PKCS#11 token HSM-protected keys live in (keystore/pkcs11.py), as the config
    # file's [pkcs11] table: module, token, pin_file or pin_env, environment. None: none
    # (a dev server uses the SoftHSM2 token in its data directory, keystore/softhsm.py).
    pkcs11: dict[str, Any] | None = None
    # Secure key release: the attestation authorities whose tokens a key may be released
    # on, as the config file's [attestation] authorities (each {"issuer", "jwks_file" |
    # "jwks"}). A dev server also trusts its dev authority (access/attestation_trust.py).
    attestation_authorities: tuple[dict[str, Any], ...] = ()

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
        d["attestation_authorities"] = tuple(d.get("attestation_authorities", ()))
        return cls(**d)


class ConfigError(ValueError):
    """The configuration file is unreadable or says something this version cannot do."""


_SEAL_TYPES = ("shamir", "azurekeyvault", "devkey")


def _metrics_settings(metrics: dict[str, Any], base: Path, path: Path) -> dict[str, Any]:
    """[metrics] port, host, token_file, per_vault (docs/operations.md "Metrics")."""
    out: dict[str, Any] = {}
    if "port" in metrics:
        port = metrics["port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ConfigError(f"{path}: [metrics] port must be a port number (1-65535)")
        out["metrics_port"] = port
    if "host" in metrics:
        out["metrics_host"] = str(metrics["host"])
    if "token_file" in metrics:
        out["metrics_token_file"] = str((base / str(metrics["token_file"])).resolve())
    if "per_vault" in metrics:
        if not isinstance(metrics["per_vault"], bool):
            raise ConfigError(f"{path}: [metrics] per_vault must be true or false")
        out["metrics_per_vault"] = metrics["per_vault"]
    return out


def load_config(path: Path) -> Settings:
    """Production settings from a TOML file (docs/operations.md shows every key).

    [server] host, port, workers, data_dir, idle_timeout, max_connections,
    max_connections_per_address, trusted_proxies; [dns] domain; [tls] certificate, key;
    [database] url; [seal] type = "shamir" (shares, threshold) | "azurekeyvault"
    (key_id, tenant_id, client_id, client_secret_file | credential = "default") |
    "devkey" (refused unless force = true); [throttling] enabled, scale, limits;
    [attestation] authorities."""
    import tomllib

    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    known = {"server", "dns", "tls", "database", "seal", "audit", "metrics", "throttling",
             "pkcs11", "attestation"}
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
    audit = raw.get("audit", {})
    if "dir" in audit:
        settings["audit_dir"] = str((base / str(audit["dir"])).resolve())
    if "fail_closed" in audit:
        if not isinstance(audit["fail_closed"], bool):
            raise ConfigError(f"{path}: [audit] fail_closed must be true or false")
        settings["audit_fail_closed"] = audit["fail_closed"]
    settings.update(_metrics_settings(raw.get("metrics", {}), base, path))
    settings.update(_throttling_settings(raw.get("throttling", {}), path))
    if "pkcs11" in raw:
        settings["pkcs11"] = _pkcs11_settings(raw["pkcs11"], base, path)
    if "attestation" in raw:
        settings["attestation_authorities"] = _attestation_settings(raw["attestation"], base,
                                                                    path)
    if "domain" in dns:
        settings["domain"] = str(dns["domain"])
    try:
        return Settings(**settings)
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _pkcs11_settings(table: Any, base: Path, path: Path) -> dict[str, Any]:
    """[pkcs11] module, token, pin_file | pin_env, environment (docs/hsm.md)."""
    where = f"{path}: [pkcs11]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    if unknown := sorted(set(table) - {"module", "token", "pin_file", "pin_env",
                                       "environment"}):
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for key in ("module", "token"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise ConfigError(f"{where} {key} is required (the PKCS#11 module's path and "
                              "the token's label)")
    if ("pin_file" in table) == ("pin_env" in table):
        raise ConfigError(f"{where}: give the user PIN as exactly one of pin_file (a file "
                          "holding it) or pin_env (an environment variable's name)")
    env = table.get("environment", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in env.items()):
        raise ConfigError(f"{where} environment must be a table of NAME = \"value\"")
    out: dict[str, Any] = {"module": str((base / table["module"]).resolve()),
                           "token": table["token"], "environment": dict(env)}
    if "pin_file" in table:
        out["pin_file"] = str((base / str(table["pin_file"])).resolve())
    else:
        out["pin_env"] = str(table["pin_env"])
    return out


def _attestation_settings(table: Any, base: Path, path: Path) -> tuple[dict[str, Any], ...]:
    """[attestation] authorities = [{issuer, jwks_file | jwks}] (docs/configuration.md,
    "Secure key release")."""
    from openkeyvault.access.attestation_trust import authority_setting

    where = f"{path}: [attestation]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    if unknown := sorted(set(table) - {"authorities"}):
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: authorities")
    entries = table.get("authorities", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f'{where} authorities must be an array of tables {{issuer = '
                          f'"https://...", jwks_file = "..."}} (or jwks = {{keys = [...]}})')
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        try:
            out.append(authority_setting(entry, base, [e["issuer"] for e in out]))
        except ValueError as exc:
            raise ConfigError(f"{where} authorities[{i}]: {exc}") from None
    return tuple(out)


def parse_throttling(value: str) -> dict[str, Any]:
    """`okv server --throttling off|on|SCALE`: the settings it stands for (ValueError if it
    is none of them). SCALE multiplies every limit (0.01: a hundredth of Azure's)."""
    word = value.strip().lower()
    if word in ("on", "off"):
        return {"throttling": word == "on"}
    try:
        scale = float(word)
    except ValueError:
        scale = math.nan
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError("--throttling takes off, on or a positive multiplier of the limits")
    return {"throttling": True, "throttling_scale": scale}


def _throttling_settings(table: dict[str, Any], path: Path) -> dict[str, Any]:
    """[throttling] enabled, scale, limits = {class = N per 10 s} (docs/operations.md
    "Throttling")."""
    from openkeyvault.ops.limits import CLASSES

    out: dict[str, Any] = {}
    if unknown := sorted(set(table) - {"enabled", "scale", "limits"}):
        raise ConfigError(f"{path}: [throttling] has no key(s) {', '.join(unknown)}; known: "
                          "enabled, scale, limits")
    if "enabled" in table:
        if not isinstance(table["enabled"], bool):
            raise ConfigError(f"{path}: [throttling] enabled must be true or false")
        out["throttling"] = table["enabled"]
    if "scale" in table:
        scale = table["scale"]
        if isinstance(scale, bool) or not isinstance(scale, int | float) \
                or not math.isfinite(scale) or scale <= 0:
            raise ConfigError(f"{path}: [throttling] scale must be a positive number")
        out["throttling_scale"] = float(scale)
    limits = table.get("limits", {})
    if not isinstance(limits, dict):
        raise ConfigError(f"{path}: [throttling] limits must be a table of class = number")
    for name, limit in limits.items():
        if name not in CLASSES:
            raise ConfigError(f"{path}: [throttling.limits] {name} is not a throttling "
                              f"class; known: {', '.join(sorted(CLASSES))}")
        if isinstance(limit, bool) or not isinstance(limit, int | float) \
                or not math.isfinite(limit) or limit < 0:
            raise ConfigError(f"{path}: [throttling.limits] {name} must be a number of "
                              "transactions per 10 seconds (0 or more)")
    if limits:
        out["throttling_limits"] = {k: float(v) for k, v in limits.items()}
    return out
