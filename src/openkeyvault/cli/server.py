"""`okv server`: prepare the data directory, then run the ASGI app under granian."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

from openkeyvault import bootstrap
from openkeyvault.api.identity import imds_notice
from openkeyvault.cli.hosts import hosts_note
from openkeyvault.cli.settings import write_record
from openkeyvault.config import DEFAULT_PORT, ENV_VAR, Settings
from openkeyvault.deployment import Deployment
from openkeyvault.storage.barrier import vault_owner
from openkeyvault.storage.errors import StartupRefused, StorageError
from openkeyvault.storage.keyring import KEYRING_DIR, SUFFIX

# Exit statuses of a refused start (sysexits.h): a supervisor should not restart-loop on
# the first (the operator must act), and may retry the second (the disk may recover).
EXIT_REFUSED = 78  # EX_CONFIG
EXIT_UNAVAILABLE = 75  # EX_TEMPFAIL


def prepare(settings: Settings) -> dict[str, str]:
    """Create or reuse everything a dev server needs; return the client environment.

    The data directory is checked before anything is created (Deployment.open); a start
    that must not go on ends the process with one line saying what was found and what
    to do. A restart writes nothing, so it also works from a full or read-only disk."""
    _ensure_dev_token(settings)
    try:
        d = Deployment.open(settings)
        try:
            _warn_unusable_vaults(d)
            bootstrap.ensure_tls(settings)
            d.vaults.ensure(settings.default_vault)
            env = bootstrap.dev_environment(settings, d.identity_header, d.tenant_id,
                                            d.vaults.default_subscription())
        finally:
            d.close()
        bootstrap.write_env_file(settings, env)
        if (problem := write_record(settings)) is not None:
            print(f"okv: warning: {problem}; okv commands will show URLs with port "
                  f"{DEFAULT_PORT}", file=sys.stderr, flush=True)
    except StartupRefused as exc:
        _refuse(f"okv: cannot start: {exc}", EXIT_REFUSED)
    except StorageError as exc:  # full, read-only or failing disk
        _refuse(f"okv: cannot start: {exc}, in {settings.data_dir}: start again once the "
                "disk is usable", EXIT_UNAVAILABLE)
    except OSError as exc:  # the TLS files or dev.env
        _refuse(f"okv: cannot start: cannot write {exc.filename}: {exc.strerror}",
                EXIT_UNAVAILABLE)
    return env


def _ensure_dev_token(settings: Settings) -> None:
    """A dev server without [pkcs11] settings keeps HSM-protected keys in a SoftHSM2 token
    in its data directory, made here on the first start. Without SoftHSM2 it serves all
    else, and says once that Premium vaults' HSM key types are unavailable."""
    if settings.pkcs11 or not settings.dev:
        return
    from openkeyvault.keystore import softhsm
    from openkeyvault.keystore.configured import DEV_TOKEN_LABEL

    try:
        softhsm.ensure_token(settings.data_dir, DEV_TOKEN_LABEL)
    except (softhsm.SoftHsmError, OSError) as exc:
        print(f"okv: warning: HSM-protected keys (RSA-HSM, EC-HSM in Premium vaults) are "
              f"unavailable: {exc}", file=sys.stderr, flush=True)


def _refuse(line: str, status: int) -> NoReturn:
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(status)


def _warn_unusable_vaults(d: Deployment) -> None:
    """One line per vault whose key-encryption key is lost or damaged: it is served (its
    objects answer 500), but the operator should hear of it before the first request.
    Only KEK files can be lost apart from the database: with KEKs in the database (several
    nodes), start-up reads no vault rows for this."""
    if not d.barrier.keks_in_files:
        return
    names = {vault_owner(v.id): v.name for v in d.repo.list_vaults()}
    for owner, reason in d.barrier.unusable_owners(list(names)):
        print(f"okv: warning: vault '{names[owner]}': {reason}; its keys, secrets and "
              f"certificates cannot be opened until {KEYRING_DIR}/{owner.replace(':', '.')}"
              f"{SUFFIX} is restored from backup", file=sys.stderr, flush=True)


def _announce_when_ready(settings: Settings, env: dict[str, str]) -> None:
    if (notice := imds_notice(settings)) is not None:  # at once, ready or not
        print(f"okv: {notice}", file=sys.stderr, flush=True)
    ctx = ssl.create_default_context(cafile=str(settings.data_dir / "ca.pem"))
    # The certificate names localhost and the dev host names, not every address the server
    # may be bound to: the probe checks the chain up to the local CA, not the name.
    ctx.check_hostname = False
    probe_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host  # noqa: S104
    if ":" in probe_host:
        probe_host = f"[{probe_host}]"
    url = f"https://{probe_host}:{settings.port}/healthz"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.1)
    else:
        print(f"okv: the server did not become ready at {url}", file=sys.stderr, flush=True)
        return
    lines = ["", "OpenKeyVault dev server is ready.", ""]
    # The identity header lets its holder act as the dev identity: show it on a terminal,
    # never in a redirected log (dev.env, mode 0600, always has it).
    shown = env if sys.stdout.isatty() else {**env, "IDENTITY_HEADER": "<see dev.env>"}
    lines += [f"{k}={v}" for k, v in shown.items()]
    lines += ["", f"Written to {settings.data_dir / 'dev.env'}. Load it with:",
              f"  set -a; . {settings.data_dir / 'dev.env'}; set +a"]
    vault_host = env["AZURE_KEYVAULT_URL"].split("//", 1)[1].rsplit(":", 1)[0]
    if note := hosts_note(vault_host):
        lines += ["", *note]
    print("\n".join(lines) + "\n", flush=True)


class ListenError(Exception):
    """The server cannot own its address; the message says why and what to do."""


# Seconds a stopping worker may take to finish its requests before it is killed.
SHUTDOWN_GRACE_SECONDS = 10

# Connections the kernel queues for each listening socket (granian's default).
LISTEN_BACKLOG = 1024
SO_ATTACH_REUSEPORT_CBPF = 51  # Linux


def open_listeners(host: str, port: int, count: int,
                   backlog: int = LISTEN_BACKLOG) -> list[socket.socket]:
    """Listening sockets for `count` workers on an address this deployment alone serves.

    granian's own sockets set SO_REUSEPORT, so a second server on a taken port binds
    silently and the kernel splits connections between the two. Here the port is first
    bound without SO_REUSEPORT: a taken port fails before anything is served. One worker
    (or a system other than Linux) keeps that socket, which nobody can join; several
    workers on Linux get one SO_REUSEPORT socket each, so that the kernel spreads new
    connections over them (workers sharing one socket do not share the load: the first
    to wake accepts nearly every connection of a burst), and `_only_first_sockets` keeps
    any socket that joins the group later from receiving connections.
    """
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        raise ListenError(f"--host must be an IP address, not {host!r}") from None
    where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    first = _listen(family, host, port, backlog, where, reuseport=False)
    if count == 1 or not sys.platform.startswith("linux"):
        return [first]
    first.close()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(_listen(family, host, port, backlog, where, reuseport=True))
    except ListenError:
        for s in socks:
            s.close()
        raise
    _only_first_sockets(socks[0], count)
    return socks


def _listen(family: int, host: str, port: int, backlog: int, where: str,
            reuseport: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR only lets a restart bind while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as granian's sockets
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"cannot listen on {where}: the address is already in use (another "
                              "server is listening on this port). Stop it or choose another "
                              "--port.") from None
        if exc.errno == errno.EACCES:
            raise ListenError(f"cannot listen on {where}: permission denied (ports below 1024 "
                              "need privileges). Choose another --port.") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ListenError(f"cannot listen on {where}: {host} is not an address of this "
                              "machine. Choose another --host.") from None
        raise ListenError(f"cannot listen on {where}: {exc.strerror}") from None
    return sock


def _only_first_sockets(member: socket.socket, count: int) -> None:
    """Send each new connection of `member`'s SO_REUSEPORT group to one of its first
    `count` sockets, at random.

    Those are this server's, held open by the supervising process for as long as it runs,
    so their places in the group never change; a socket that another process of the same
    user adds later takes a place after them and is never chosen. A kernel without this
    option leaves the kernel's own spreading (by connection hash), which would include it.
    """
    # Classic BPF: A = random u32; A %= count; return A (the socket's place in the group).
    program = [(0x20, 0, 0, 0xFFFFF000 + 56),  # ld [SKF_AD_OFF + SKF_AD_RANDOM]
               (0x94, 0, 0, count),             # mod #count
               (0x16, 0, 0, 0)]                 # ret a
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *op) for op in program))
    fprog = struct.pack("HP", len(program), ctypes.addressof(code))
    with contextlib.suppress(OSError):
        member.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def _raise_open_file_limit() -> int | None:
    """Raise this process's open-file limit to its hard limit; the soft limit now, or None
    where there is none to read (not POSIX, or unlimited).

    A soft limit of 1024 open files (a common default) runs out before a worker's
    connection slots do, and a worker out of descriptors cannot accept.
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 16
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


# Descriptors each worker keeps for what is not a connection (database, keyring, logs).
FILES_PER_WORKER = 128


def connection_slots(wanted: int, open_files: int | None) -> int:
    """Connections each worker may hold: `wanted`, lowered to fit the open-file limit
    (a per-process limit: each worker's connections are its own descriptors)."""
    if open_files is None:
        return wanted
    return max(1, min(wanted, open_files - FILES_PER_WORKER))


def _granian_on(listeners: list[socket.socket]) -> type[Any]:
    """granian's server class, made to serve on `listeners` instead of sockets of its own.

    Worker N accepts from socket N (all from the one socket when there is one). The
    supervising process holds every socket open: a worker that dies loses no queued
    connection, and while it is being replaced its new connections wait in the listen
    queue instead of being refused.
    """
    from granian import Granian
    from granian._granian import SocketHolder

    holder_cls: Any = SocketHolder  # its stub lists no constructor arguments

    def holder(sock: socket.socket) -> Any:
        if sys.platform.startswith(("linux", "freebsd")):
            return holder_cls(sock.fileno(), False, LISTEN_BACKLOG)
        return holder_cls(sock.fileno(), False)

    class OwnSocketsGranian(Granian):  # type: ignore[misc, valid-type]
        _sso: socket.socket | None

        def _use(self, idx: int) -> None:
            sock = listeners[idx % len(listeners)]
            self._ssp = None
            self._shd = holder(sock)
            self._sfd = sock.fileno()
            self._sso = sock  # passed to the worker

        def _init_shared_socket(self) -> None:
            for sock in listeners:
                sock.set_inheritable(True)
            self._use(0)

        def _spawn_worker(self, idx: int, target: Any, callback_loader: Any) -> Any:
            self._use(idx)
            return super()._spawn_worker(idx=idx, target=target, callback_loader=callback_loader)

        def _drop_shared_socket(self) -> None:
            for sock in listeners:
                sock.close()
            self._sso = None

    return OwnSocketsGranian


def run(settings: Settings) -> None:
    """Own the port (or exit with a clear message), prepare the data directory, then serve.

    The supervising process replaces any worker that dies; one that dies again within a
    few seconds of being replaced is a crash loop, and the server exits non-zero.
    """
    try:
        listeners = open_listeners(settings.host, settings.port, settings.workers)
    except ListenError as exc:
        # The operator must act (stop the other server or choose another port).
        print(f"okv: cannot start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_REFUSED) from None
    try:
        env = prepare(settings)
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    threading.Thread(target=_announce_when_ready, args=(settings, env), daemon=True).start()
    _serve(settings, listeners, settings.data_dir / "server.pem",
           settings.data_dir / "server.key")


def _serve(settings: Settings, listeners: list[socket.socket], certificate: Path,
           key: Path) -> None:
    """Run the workers under granian on `listeners` until the server is stopped."""
    from openkeyvault.ops import metrics

    metrics.prepare(settings)  # the workers' metrics files (ops/metrics.py), emptied
    try:
        metrics.serve_listener(settings)
    except metrics.MetricsListenError as exc:
        _refuse(f"okv: cannot start: {exc}", EXIT_REFUSED)
    os.environ[ENV_VAR] = settings.to_env()
    open_files = _raise_open_file_limit()
    slots = connection_slots(settings.max_connections, open_files)
    if slots < settings.max_connections:
        print(f"okv: warning: each worker holds at most {slots} connections, not "
              f"{settings.max_connections}: the open-file limit is {open_files} (raise it "
              "with `ulimit -n` or LimitNOFILE=)", file=sys.stderr, flush=True)
    from granian.constants import HTTPModes, Interfaces, RuntimeModes, SSLProtocols
    from granian.http import HTTP1Settings

    server = _granian_on(listeners)(
        "openkeyvault.api.app:create_app",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        factory=True,
        ssl_cert=certificate,
        ssl_key=key,
        ssl_protocol_min=SSLProtocols.tls12,
        log_access=False,
        # One Rust I/O thread per worker: with CPU-bound handlers (RSA signing) the
        # multi-threaded runtime spends more on GIL hand-offs than it gains
        # (RSA-2048 sign via the API: 53% -> 59% of the raw rate, 2 workers on 2 cores).
        runtime_mode=RuntimeModes.st,
        # HTTP/1.1 only: in "auto" mode granian first waits, without any time limit, for
        # bytes telling HTTP/1 from HTTP/2, so a client that completes the TLS handshake
        # and stays silent holds a connection (and one of the worker's `backpressure`
        # connection slots) forever. HTTP/1's header read timeout starts when the
        # connection is ready and again after each response: it bounds both the wait for
        # a request's head and a keep-alive connection's idle time.
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(
            header_read_timeout=max(1, round(settings.idle_timeout * 1000))),
        backlog=LISTEN_BACKLOG,
        # Connections a worker holds at once. Each idle one holds a slot until the idle
        # timeout closes it; granian's default (1024 shared by the workers) let about a
        # thousand silent connections, reopened as they were closed, starve every client.
        backpressure=slots,
        respawn_failed_workers=True,
        # On shutdown a worker finishes its requests; one still holding a connection open
        # after this long is killed, so that Ctrl-C or a supervisor's stop always ends.
        workers_kill_timeout=SHUTDOWN_GRACE_SECONDS,
    )
    server.serve()


# ---- production ---------------------------------------------------------------------
def run_production(settings: Settings) -> None:
    """A node of the deployment `okv init` made from a configuration file: no dev
    identity, no dev endpoints, TLS from the given files, the root key from the seal
    (ops/nodectl.py holds it for the workers)."""
    try:
        listeners = open_listeners(settings.host, settings.port, settings.workers)
    except ListenError as exc:
        _refuse(f"okv: cannot start: {exc}", EXIT_REFUSED)
    control = None
    try:
        control = _prepare_production(settings)
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    state = "sealed: unseal it with `okv operator unseal --config FILE`" \
        if control is not None and control.sealed else "serving"
    print(f"okv: node at {settings.authority}/ ({state})", file=sys.stderr, flush=True)
    try:
        _serve(settings, listeners, Path(str(settings.tls_certificate)),
               Path(str(settings.tls_key)))
    finally:
        if control is not None:
            control.close()


def _prepare_production(settings: Settings) -> Any:
    from openkeyvault.cli.operator import auto_unseal, stored_seal
    from openkeyvault.ops.nodectl import NodeControl

    assert settings.seal is not None
    for what, path in (("certificate", settings.tls_certificate), ("key", settings.tls_key)):
        if not path or not os.access(path, os.R_OK):
            _refuse(f"okv: cannot start: the TLS {what} {path} cannot be read", EXIT_REFUSED)
    try:
        stored = stored_seal(settings)
    except StartupRefused as exc:
        _refuse(f"okv: cannot start: {exc}", EXIT_REFUSED)
    except StorageError as exc:
        _refuse(f"okv: cannot start: {exc}", EXIT_UNAVAILABLE)
    if stored is None:
        _refuse("okv: cannot start: the deployment is not initialised: run `okv init "
                "--config FILE` first", EXIT_REFUSED)
    if stored.get("type") != settings.seal["type"]:
        _refuse(f"okv: cannot start: the configuration names a {settings.seal['type']} seal, "
                f"but the deployment is sealed by a {stored.get('type')} seal", EXIT_REFUSED)
    if stored["type"] == "devkey":
        return None  # the workers read the key file themselves
    control = NodeControl(settings, stored)
    control.listen()
    if stored["type"] == "azurekeyvault":
        control.unseal_with(lambda: auto_unseal(settings, stored))
    return control
