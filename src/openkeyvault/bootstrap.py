"""Files a development server creates in its data directory on first start.

- `ca.pem` / `ca.key`: the local certificate authority;
- `server.pem` / `server.key`: the TLS certificate for every dev host name;
- `ca-bundle.pem`: the system CA bundle plus the local CA (what clients trust);
- `dev.env`: the environment that makes an unmodified SDK application work.

Each is written only when its content changes, so a restart writes nothing and a server
starts from a full or read-only disk as long as nothing is due (a certificate to renew,
a new system CA bundle).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from openkeyvault.config import Settings
from openkeyvault.crypto.x509 import cert_covers, make_ca, make_server_cert

SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)


def server_names(domain: str) -> list[str]:
    return ["localhost", "127.0.0.1", "::1", f"*.vault.{domain}", f"*.managedhsm.{domain}",
            "host.docker.internal"]


def _unchanged(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False


def _write_private(path: Path, data: bytes) -> None:
    if _unchanged(path, data):
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    if _unchanged(path, data):
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _system_bundle() -> bytes:
    for candidate in SYSTEM_BUNDLES:
        p = Path(candidate)
        if p.is_file():
            return p.read_bytes()
    try:
        import certifi

        return Path(certifi.where()).read_bytes()
    except ImportError:
        return b""


def ensure_tls(settings: Settings) -> tuple[Path, Path, Path]:
    """Create (or reuse) the CA, server certificate and CA bundle. Returns their paths."""
    d = settings.data_dir
    now = dt.datetime.now(dt.UTC)
    ca_pem, ca_key = d / "ca.pem", d / "ca.key"
    if not (ca_pem.exists() and ca_key.exists()):
        cert, key = make_ca("OpenKeyVault Development CA", now)
        _write_private(ca_key, key)
        _write_public(ca_pem, cert)
    names = server_names(settings.domain)
    srv_pem, srv_key = d / "server.pem", d / "server.key"
    if not (srv_pem.exists() and srv_key.exists()) or not cert_covers(
        srv_pem.read_bytes(), names, now
    ):
        cert, key = make_server_cert(ca_pem.read_bytes(), ca_key.read_bytes(), names, now)
        _write_private(srv_key, key)
        _write_public(srv_pem, cert)
    bundle = d / "ca-bundle.pem"
    system = _system_bundle()
    _write_public(bundle, system.rstrip(b"\n") + b"\n" + ca_pem.read_bytes())
    return srv_pem, srv_key, bundle


def dev_environment(settings: Settings, identity_header: str, tenant_id: str = "",
                    subscription_id: str = "") -> dict[str, str]:
    """The environment an unmodified SDK application needs against this server.

    IDENTITY_ENDPOINT makes DefaultAzureCredential use the managed-identity credential
    (no client secret, so its environment credential stays unused). AZURE_TENANT_ID and
    AZURE_SUBSCRIPTION_ID are what management code must send; AZURE_AUTHORITY_HOST points
    the credentials that ask a token service (ClientSecretCredential, ...) at this one.
    Those still need `disable_instance_discovery=True`: otherwise MSAL first asks the
    public cloud whether an authority host it does not know is genuine."""
    base = settings.authority
    bundle = str(settings.data_dir / "ca-bundle.pem")
    env = {
        "AZURE_KEYVAULT_URL": settings.resource_uri(settings.default_vault).rstrip("/"),
        "IDENTITY_ENDPOINT": f"{base}/msi/token",
        "IDENTITY_HEADER": identity_header,
        "AZURE_AUTHORITY_HOST": base,
    }
    if tenant_id:
        env["AZURE_TENANT_ID"] = tenant_id
    if subscription_id:
        env["AZURE_SUBSCRIPTION_ID"] = subscription_id
    return {**env,
            "REQUESTS_CA_BUNDLE": bundle,
            "SSL_CERT_FILE": bundle,
            "NODE_EXTRA_CA_CERTS": str(settings.data_dir / "ca.pem")}


def write_env_file(settings: Settings, env: dict[str, str]) -> Path:
    path = settings.data_dir / "dev.env"
    _write_private(path, "".join(f"{k}={v}\n" for k, v in env.items()).encode())
    return path
