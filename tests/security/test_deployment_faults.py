"""Faults of the deployment itself are named, not disguised.

Start-up: the real `okv server --dev` refuses a data directory it must not serve from
(lost root key, lost database beside key material, a foreign root key, a root key others
can read) with one clear line and exit status 78, creating and replacing nothing; it
restricts a data directory open to others and says so; a restart writes nothing, so it
starts from a read-only disk.

Run time: a full disk (a real, small tmpfs) answers 503 with Retry-After and one log
line, reads keep working and writes work again once space is freed; a vault whose
key-encryption key is lost answers 500 (not a client error), naming nothing secret,
and is logged once, naming the vault.

Mounting needs root (CAP_SYS_ADMIN); where it is not permitted those tests skip.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from openkeyvault.api.errors import map_fault, storage_fault
from openkeyvault.storage.barrier import Barrier, BarrierError
from openkeyvault.storage.db import open_sqlite
from openkeyvault.storage.errors import StorageFull
from openkeyvault.storage.keyring import FileKeyRing
from openkeyvault.storage.repository import Repository
from tests.security.conftest import Rest
from tests.support.server import DevServer, free_port, running

EXIT_REFUSED = 78
KEY_FILES = ("root.key", "server.key", "ca.key", "ca.pem", "server.pem", "ca-bundle.pem",
             "dev.env")


# ---- helpers ----------------------------------------------------------------------------

def snapshot(data: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under `data` except SQLite's side files: (mtime, inode, content). The
    dev token's object store (softhsm/tokens/) is SoftHSM2's own: it stamps its lock and
    state files when a process logs in (a worker's scheduled HSM clean-up does at start),
    so only its files' names count there."""
    out = {}
    for p in sorted(data.rglob("*")):
        if p.is_file() and not p.name.startswith("okv.db"):
            info = p.stat()
            rel = p.relative_to(data)
            out[str(rel)] = ((0, 0, b"") if rel.parts[:2] == ("softhsm", "tokens")
                             else (info.st_mtime_ns, info.st_ino, p.read_bytes()))
    return out


def start(data: Path, port: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run `okv server --dev` on `data` and wait for it to exit (a refused start)."""
    return subprocess.run(
        [sys.executable, "-m", "openkeyvault", "server", "--dev", "--data-dir", str(data),
         "--port", str(port or free_port())],
        capture_output=True, text=True, timeout=90)


def made(tmp_path: Path) -> Path:
    """A data directory with a deployment in it (one real start and stop)."""
    data = tmp_path / "data"
    with running(data):
        pass
    return data


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("okv: ")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return lines[0]


def can_mount() -> str | None:
    """Why a tmpfs cannot be mounted here, or None."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "no mount/umount command"
    return None


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "16m") -> Iterator[Path]:
    """A small real file system at `path` (private, like a data directory), unmounted after."""
    reason = can_mount()
    if reason:
        pytest.skip(reason)
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> Path:
    """Fill the file system holding `directory` to the last byte; the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    return filler


def secrets_client(server: DevServer, use_server_env: Any) -> SecretClient:
    use_server_env(server)
    return SecretClient(server.url, ManagedIdentityCredential(), verify_challenge_resource=False,
                        connection_verify=server.ca)


def put(rest: Rest, name: str, value: str) -> Any:
    return rest.call("PUT", f"/secrets/{name}", json={"value": value})


def get(rest: Rest, name: str) -> Any:
    return rest.call("GET", f"/secrets/{name}")


def log_lines(server: DevServer, needle: str) -> list[str]:
    return [line for line in server.log().splitlines() if needle in line]


# ---- start-up ---------------------------------------------------------------------------

def test_a_deleted_root_key_is_refused_and_never_replaced(tmp_path: Path) -> None:
    data = made(tmp_path)
    (data / "root.key").unlink()
    before = snapshot(data)
    result = start(data)
    assert result.returncode == EXIT_REFUSED, result.stderr
    line = one_line(result)
    assert "root.key is missing" in line and "Restore root.key" in line, line
    assert not (data / "root.key").exists()  # no new random key left behind
    assert snapshot(data) == before


def test_a_deleted_database_beside_key_material_is_refused(tmp_path: Path) -> None:
    data = made(tmp_path)
    for side in ("okv.db", "okv.db-wal", "okv.db-shm"):
        (data / side).unlink(missing_ok=True)
    before = snapshot(data)
    result = start(data)
    assert result.returncode == EXIT_REFUSED, result.stderr
    line = one_line(result)
    assert "okv.db is missing" in line, line
    assert "root.key" in line and "keyring/" in line and "Restore okv.db" in line, line
    assert not (data / "okv.db").exists()  # no empty deployment was started
    assert snapshot(data) == before


@pytest.mark.parametrize("command", [("vault", "list"), ("principal", "list"),
                                     ("role", "list")])
def test_other_commands_refuse_in_one_line_too(tmp_path: Path, command: tuple[str, ...]) -> None:
    """Every `okv` command opens the deployment through the same checks, and says what is
    wrong in one line rather than with a traceback."""
    data = made(tmp_path)
    (data / "okv.db").unlink()
    before = snapshot(data)
    result = subprocess.run([sys.executable, "-m", "openkeyvault", *command, "--data-dir",
                             str(data)], capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_REFUSED, result.stderr
    assert "okv.db is missing" in one_line(result)
    assert not (data / "okv.db").exists()
    assert snapshot(data) == before


def test_a_foreign_root_key_is_refused_before_serving(tmp_path: Path) -> None:
    data = made(tmp_path)
    foreign = os.urandom(32)
    (data / "root.key").write_bytes(foreign)
    before = snapshot(data)
    result = start(data)
    assert result.returncode == EXIT_REFUSED, result.stderr
    assert "root.key does not open the data keys" in one_line(result)
    assert (data / "root.key").read_bytes() == foreign
    assert snapshot(data) == before


def test_a_root_key_readable_by_others_is_refused_with_what_to_do(tmp_path: Path) -> None:
    data = made(tmp_path)
    (data / "root.key").chmod(0o644)
    before = snapshot(data)
    result = start(data)
    assert result.returncode == EXIT_REFUSED, result.stderr
    line = one_line(result)
    assert "readable by other users" in line and "chmod 600" in line, line
    assert stat.S_IMODE((data / "root.key").stat().st_mode) == 0o644  # the operator decides
    assert snapshot(data) == before


def test_a_data_directory_open_to_others_is_restricted_and_said_so(tmp_path: Path) -> None:
    data = made(tmp_path)
    data.chmod(0o755)
    (data / "okv.db").chmod(0o644)
    (data / "server.key").chmod(0o644)
    with running(data) as server:
        lines = log_lines(server, "restricted permissions")
    assert len(lines) == 1, server.log()
    assert f"{data} (755 -> 700)" in lines[0] and "okv.db (644 -> 600)" in lines[0]
    assert "server.key (644 -> 600)" in lines[0]
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("okv.db", "server.key"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600


def test_a_restart_rewrites_no_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    first = DevServer(data_dir=data, port=port)
    first.start()
    first.stop()
    before = snapshot(data)
    again = DevServer(data_dir=data, port=port)
    again.start()
    again.stop()
    after = snapshot(data)
    assert {n: v[:2] for n, v in after.items() if n in KEY_FILES} == \
           {n: v[:2] for n, v in before.items() if n in KEY_FILES}


def test_a_read_only_disk_starts_and_serves_reads(tmp_path: Path, use_server_env: Any) -> None:
    with tmpfs(tmp_path / "data") as data:
        port = free_port()
        server = DevServer(data_dir=data, port=port)
        server.start()
        try:
            assert put(Rest(server), "kept", "still here").status_code == 200
        finally:
            server.stop()
        before = snapshot(data)
        done = subprocess.run(["mount", "-o", "remount,ro", str(data)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            pytest.skip(f"remounting read-only is not permitted here: {done.stderr.strip()}")
        server = DevServer(data_dir=data, port=port)
        server.start()
        try:
            rest = Rest(server)
            read = get(rest, "kept")
            assert read.status_code == 200 and read.json()["value"] == "still here"
            refused = put(rest, "new", "value")
            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"].isdigit()
            assert refused.json()["error"]["code"] == "ServiceUnavailable"
            with pytest.raises(HttpResponseError) as sdk:
                secrets_client(server, use_server_env).set_secret("new", "v", retry_total=0)
            assert sdk.value.status_code == 503
            assert get(rest, "kept").status_code == 200
        finally:
            server.stop()
        assert snapshot(data) == before
        assert "unhandled error" not in server.log()


def test_a_full_disk_starts_and_serves_reads(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "data") as data:
        port = free_port()
        server = DevServer(data_dir=data, port=port)
        server.start()
        try:
            assert put(Rest(server), "kept", "still here").status_code == 200
        finally:
            server.stop()
        filler = fill(data)
        before = snapshot(data)
        server = DevServer(data_dir=data, port=port)
        server.start()
        try:
            rest = Rest(server)
            assert get(rest, "kept").json()["value"] == "still here"
            # SQLite reuses space it already holds: write until the disk is really needed.
            for i in range(200):
                refused = put(rest, f"new-{i}", "x" * 20_000)
                if refused.status_code != 200:
                    break
            assert refused.status_code == 503 and refused.headers["Retry-After"].isdigit()
            assert get(rest, "kept").json()["value"] == "still here"
        finally:
            server.stop()
        # Nothing that was there changed; what is new is the audit trail's own stream
        # (a dev server's: it takes what room it finds, and audits without when none).
        after = snapshot(data)
        assert {k: v for k, v in after.items() if k in before} == before
        assert all(k.startswith("audit/") for k in set(after) - set(before)), after.keys()
        # Without SQLite's side files the database needs room to open: refused, one line.
        for side in ("okv.db-shm", "okv.db-wal"):
            (data / side).unlink(missing_ok=True)
        filler.unlink()
        filler = fill(data)
        before = snapshot(data)
        result = start(data, port)
        assert result.returncode == 75, result.stderr
        assert "disk is full" in one_line(result)
        assert snapshot(data) == before


# ---- run time ---------------------------------------------------------------------------

def test_a_full_disk_is_503_with_retry_after_and_one_log_line(tmp_path: Path,
                                                              use_server_env: Any) -> None:
    with tmpfs(tmp_path / "data") as data, running(data) as server:
        rest = Rest(server)
        assert put(rest, "before", "written before the disk filled").status_code == 200
        filler = fill(data)
        try:
            # SQLite reuses space it already holds: write until the disk is really needed.
            value = "x" * 20_000
            for i in range(200):
                answer = put(rest, f"filling-{i}", value)
                if answer.status_code != 200:
                    break
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"].isdigit()
            assert answer.json()["error"] == {"code": "ServiceUnavailable",
                                              "message": "The service's storage is full. "
                                                         "Retry later."}
            for _ in range(3):
                assert put(rest, "more", value).status_code == 503
            with pytest.raises(HttpResponseError) as sdk:
                secrets_client(server, use_server_env).set_secret("sdk", value, retry_total=0)
            assert sdk.value.status_code == 503
            assert sdk.value.response.headers["Retry-After"].isdigit()
            # Reads are served while the disk is full.
            read = get(rest, "before")
            assert read.status_code == 200 and read.json()["value"].startswith("written")
        finally:
            filler.unlink()
        # Space is back: writes and reads work again, without a restart.
        assert put(rest, "after", "written after space was freed").status_code == 200
        assert get(rest, "after").json()["value"] == "written after space was freed"
        assert get(rest, "before").status_code == 200
        faults = log_lines(server, "storage fault")
    assert len(faults) == 1, server.log()
    assert "disk is full" in faults[0]
    assert "unhandled error" not in server.log() and "Traceback" not in server.log()


def test_a_lost_vault_key_is_a_500_logged_once_naming_the_vault(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    server = DevServer(data_dir=data, port=port)
    server.start()
    try:
        assert put(Rest(server), "kept", "sealed under the vault's key").status_code == 200
    finally:
        server.stop()
    ring = data / "keyring"
    (kek,) = ring.glob("vault.*.kek")  # the dev vault's, the only vault
    owner = kek.name.removesuffix(".kek").replace(".", ":")
    kek.unlink()

    server = DevServer(data_dir=data, port=port)
    server.start()
    try:
        rest = Rest(server)
        answers = [get(rest, "kept") for _ in range(3)]
        for answer in answers:
            assert answer.status_code == 500, answer.text
            error = answer.json()["error"]
            assert error["code"] == "InternalServerError"
            for secret in (str(data), "keyring", owner, ".kek", "sealed under"):
                assert secret not in answer.text
        # Objects without a sealed value still list; the failure is the vault's alone.
        assert rest.call("GET", "/secrets").status_code == 200
        at_start = log_lines(server, "okv: warning: vault 'dev'")
        at_run = log_lines(server, f"vault 'dev' ({owner})")
    finally:
        server.stop()
    assert len(at_start) == 1 and "is gone from the keyring" in at_start[0], server.log()
    assert len(at_run) == 1, server.log()
    assert "unhandled error" not in server.log() and "Traceback" not in server.log()


def test_a_full_keyring_disk_is_a_storage_fault_not_a_lost_key(tmp_path: Path) -> None:
    root = os.urandom(32)
    engines = open_sqlite(tmp_path / "okv.db")
    try:
        with tmpfs(tmp_path / "ring", size="64k") as ring_fs:
            ring = FileKeyRing(ring_fs / "keyring", root)
            assert ring.get("vault:1") is None  # the keyring directory exists
            filler = fill(ring_fs)
            barrier = Barrier(root, Repository(engines), ring)
            with pytest.raises(BarrierError) as refused:
                barrier.ensure_owner("vault:1", 0)
            fault = storage_fault(refused.value)
            assert isinstance(fault, StorageFull)
            status, body, headers = map_fault(fault)
            assert (status, body["error"]["code"]) == (503, "ServiceUnavailable")  # type: ignore[index]
            assert headers["Retry-After"].isdigit()
            assert list((ring_fs / "keyring").iterdir()) == []  # no partial key file left
            filler.unlink()
            barrier.ensure_owner("vault:1", 0)  # space is back: the vault gets its key
            assert [p.name for p in (ring_fs / "keyring").iterdir()] == ["vault.1.kek"]
    finally:
        engines.dispose()
