"""The settings an `okv` command opens the deployment with.

A command that renders URLs (a vault's `vaultUri`, the token issuer) must use the port
and domain the server listens on, not the defaults. The server records them, with its
version, in the data directory when it starts (`server.json`); commands read that
record, and fall back to the defaults when no server was ever started there. The
record is read rather than dev.env: it is public (mode 0644, no identity header), and
its meaning does not drift with what the client environment holds.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from openkeyvault import __version__
from openkeyvault.config import Settings, default_data_dir

SERVER_RECORD = "server.json"


def resolved_dir(data_dir: Path | None) -> Path:
    return (data_dir or default_data_dir()).expanduser().resolve()


def _record(data_dir: Path) -> dict[str, Any]:
    try:
        raw = json.loads((data_dir / SERVER_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def recorded_by_this_version(data_dir: Path) -> bool:
    """Whether a server of this very version started here last (it did the one-time work
    of a start: cli/readonly.py relies on that)."""
    return _record(data_dir).get("version") == __version__


def recorded(data_dir: Path) -> dict[str, Any]:
    """The port and domain the server last started with here ({} if none or unreadable)."""
    raw = _record(data_dir)
    out: dict[str, Any] = {}
    if isinstance(raw.get("port"), int) and 0 < raw["port"] < 65536:
        out["port"] = raw["port"]
    if isinstance(raw.get("domain"), str) and raw["domain"]:
        out["domain"] = raw["domain"]
    return out


def settings_for(data_dir: Path | None, **given: Any) -> Settings:
    """Settings for `data_dir`: what is given, else what the server recorded, else the
    defaults."""
    path = resolved_dir(data_dir)
    return Settings(data_dir=path, **{**recorded(path), **given})


def write_record(settings: Settings) -> str | None:
    """Record the server's port and domain; written only when it changes, so a restart
    with the same settings writes nothing. Returns why it could not be written (the
    server runs without it: commands then show the default port)."""
    path = settings.data_dir / SERVER_RECORD
    data = json.dumps({"port": settings.port, "domain": settings.domain,
                       "version": __version__}, sort_keys=True) + "\n"
    with contextlib.suppress(OSError):
        if path.read_text() == data:
            return None
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return f"cannot write {path}: {exc.strerror}"
    return None
