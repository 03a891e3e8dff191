"""A node's control socket: where its root key is unsealed, held and handed to workers.

A production node's root key comes from a seal (storage/seals.py), never from disk. The
`okv server` process (the supervisor of the worker processes) holds it in memory, and
listens on a unix socket in the data directory (`node-PORT.sock`, mode 0600) for:

- `status`: sealed or not, the unseal progress, the seal's public description;
- `unseal` with one Shamir share (`okv operator unseal`, once per key holder);
- `seal`: forget the root key (`okv operator seal`); the workers stop serving;
- `root-key`: the key itself, for the node's own worker processes.

Only processes of the server's own user (or root) may connect (SO_PEERCRED), and the
socket file is not reachable by others (0600 in a 0700 directory). Workers ask for the
key once a second until they have it, and keep asking while they serve, so a seal
reaches them within a second.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openkeyvault.config import Settings

log = logging.getLogger("openkeyvault.seal")

MAX_REQUEST = 4096
TIMEOUT_SECONDS = 5.0


def socket_path(settings: Settings) -> Path:
    """One socket per node (several dev nodes may share a data directory)."""
    return settings.data_dir / f"node-{settings.port}.sock"


def _peer_allowed(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (os.getuid(), 0)


class NodeControl:
    """The supervisor's side: the root key, the unseal progress, the socket."""

    def __init__(self, settings: Settings, stored: dict[str, Any]) -> None:
        from openkeyvault.storage import seals

        self.settings = settings
        self.stored = stored
        self._seals = seals
        self._root_key: bytearray | None = None
        self._lock = threading.Lock()
        self._unsealer = seals.Unsealer(stored) if seals.seal_type(stored) == "shamir" \
            else None
        self._auto_error: str | None = None
        self._sock: socket.socket | None = None

    # ---- state ---------------------------------------------------------------------
    @property
    def sealed(self) -> bool:
        return self._root_key is None

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sealed": self.sealed,
                               "seal": self._seals.describe(self.stored)}
        if self._unsealer is not None and self.sealed:
            p = self._unsealer.progress
            out["progress"] = {"received": p.received, "threshold": p.threshold}
        if self._auto_error is not None and self.sealed:
            out["error"] = self._auto_error
        return out

    def _set(self, root_key: bytes | None) -> None:
        with self._lock:
            if self._root_key is not None:
                self._root_key[:] = bytes(len(self._root_key))
            self._root_key = bytearray(root_key) if root_key is not None else None

    def unseal(self, share: str) -> dict[str, Any]:
        if self._unsealer is None:
            return {"error": "this node's seal takes no shares: it unseals itself"}
        if not self.sealed:
            return self.status()
        try:
            progress = self._unsealer.submit(share)
        except self._seals.ShareRefused as exc:
            return {**self.status(), "error": str(exc)}
        if progress.root_key is not None:
            self._set(progress.root_key)
            log.warning("okv: node unsealed (%d of %d shares)", progress.received,
                        progress.threshold)
        return self.status()

    def seal(self) -> dict[str, Any]:
        self._set(None)
        if self._unsealer is not None:
            self._unsealer.reset()
        log.warning("okv: node sealed by the operator")
        return self.status()

    def unseal_with(self, fetch: Callable[[], bytes], retry_seconds: float = 5.0,
                    wait_seconds: float = 30.0) -> None:
        """Auto-unseal in the background: `fetch()` until it gives the root key; every
        `retry_seconds` while the other vault is out of reach, every `wait_seconds` while
        an operator must act there (the key disabled or deleted, access refused)."""
        def run() -> None:
            while self.sealed:
                try:
                    self._set(fetch())
                    self._auto_error = None
                    log.warning("okv: node unsealed itself")
                    return
                except Exception as exc:  # noqa: BLE001 - reported, retried
                    self._auto_error = str(exc)
                    transient = getattr(exc, "retryable", True)
                    log.warning("okv: cannot unseal: %s (%s)", exc, "retrying" if transient
                                else f"trying again in {wait_seconds:.0f} s")
                    time.sleep(retry_seconds if transient else wait_seconds)
        threading.Thread(target=run, name="okv-auto-unseal", daemon=True).start()

    # ---- the socket ----------------------------------------------------------------
    def listen(self) -> Path:
        path = socket_path(self.settings)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        sock.listen(16)
        self._sock = sock
        threading.Thread(target=self._serve, name="okv-node-control", daemon=True).start()
        return path

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            with contextlib.suppress(OSError):
                socket_path(self.settings).unlink()
        self._set(None)

    def _serve(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(TIMEOUT_SECONDS)
            try:
                if not _peer_allowed(conn):
                    return
                request = json.loads(_read_line(conn))
                answer = self._dispatch(request if isinstance(request, dict) else {})
            except (OSError, ValueError):
                return
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(answer).encode() + b"\n")

    def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return self.status()
        if op == "unseal" and isinstance(request.get("share"), str):
            return self.unseal(request["share"])
        if op == "seal":
            return self.seal()
        if op == "root-key":
            with self._lock:
                key = bytes(self._root_key) if self._root_key is not None else None
            if key is None:
                return {"sealed": True}
            return {"sealed": False, "root_key": base64.b64encode(key).decode()}
        return {"error": "unknown request"}


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(MAX_REQUEST)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError("request too long")
    return data.split(b"\n", 1)[0]


def call(path: Path, request: dict[str, Any], timeout: float = TIMEOUT_SECONDS
         ) -> dict[str, Any]:
    """One request to a node's control socket; OSError when no node listens there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        answer = json.loads(_read_line(sock) or b"{}")
    return answer if isinstance(answer, dict) else {}


def root_key_from(path: Path) -> bytes | None:
    """For a worker: the node's root key, or None while it is sealed (or unreachable)."""
    try:
        answer = call(path, {"op": "root-key"}, timeout=2.0)
    except (OSError, ValueError):
        return None
    key = answer.get("root_key")
    return base64.b64decode(key) if isinstance(key, str) else None


def public_status(path: Path) -> dict[str, Any]:
    """What `/healthz` of a sealed node shows: sealed, the seal's type and quorum, the
    unseal progress (never an error's details: they may name the unsealing key)."""
    try:
        answer = call(path, {"op": "status"}, timeout=2.0)
    except (OSError, ValueError):
        return {"sealed": True}
    return {k: answer[k] for k in ("sealed", "seal", "progress") if k in answer}
