"""Server settings, shared by the CLI and the worker processes (through one env var)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

ENV_VAR = "OKV_SETTINGS"
DEFAULT_PORT = 8443
DEFAULT_VAULT = "dev"


def default_data_dir() -> Path:
    env = os.environ.get("OKV_DATA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "openkeyvault"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    domain: str = "localhost"
    default_vault: str = DEFAULT_VAULT
    dev: bool = True
    workers: int = 1

    @property
    def db_path(self) -> Path:
        return self.data_dir / "okv.db"

    def to_env(self) -> str:
        d = asdict(self)
        d["data_dir"] = str(self.data_dir)
        return json.dumps(d)

    @classmethod
    def from_env(cls) -> Settings:
        d = json.loads(os.environ[ENV_VAR])
        d["data_dir"] = Path(d["data_dir"])
        return cls(**d)
