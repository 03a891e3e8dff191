"""`okv init` and `okv operator`: a production deployment's creation and its seal.

`okv init --config FILE` makes the deployment the file describes: a new root key,
protected by the configured seal (Shamir shares, another Key Vault's key, or — forced —
the dev key file), the database with its first administrator. It prints, once, the
administrator's credentials and the key holders' shares. `okv operator` talks to a
running node through its control socket (ops/nodectl.py): `status`, `unseal` (one
share at a time, hidden input), `seal`; `rekey` makes new shares from a quorum of the
current ones, with or without a running node.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from openkeyvault.config import ConfigError, Settings, load_config

operator_app = typer.Typer(help="Seal, unseal and rekey a production node.",
                           no_args_is_help=True)

ConfigFile = Annotated[Path, typer.Option("--config", "-c", help="The deployment's TOML "
                                          "configuration file (docs/operations.md).")]
SEAL_META = "seal"


def settings_of(config: Path) -> Settings:
    try:
        return load_config(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def stored_seal(settings: Settings) -> dict[str, Any] | None:
    """The seal description stored in the deployment's database (no root key needed)."""
    from openkeyvault.storage.db import open_database
    from openkeyvault.storage.repository import Repository

    if settings.database_url is None and not settings.db_path.exists():
        return None  # nothing made yet (and nothing to create here)
    engines = open_database(settings.database_url or settings.db_path)
    try:
        raw = Repository(engines).get_meta(SEAL_META)
    finally:
        engines.dispose()
    return json.loads(raw) if raw else None


def _credential(seal: dict[str, Any]) -> Any:
    """The credential an auto-unseal seal uses to reach its Key Vault."""
    if seal.get("credential") == "default":
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()
    from azure.identity import ClientSecretCredential

    missing = [k for k in ("tenant_id", "client_id", "client_secret_file") if not seal.get(k)]
    if missing:
        raise ConfigError(f"[seal] needs {', '.join(missing)} (or credential = \"default\")")
    secret = Path(seal["client_secret_file"]).read_text().strip()
    kwargs: dict[str, Any] = {}
    if seal.get("authority"):  # another OpenKeyVault's token service, or a sovereign cloud
        kwargs["authority"] = seal["authority"]
        kwargs["disable_instance_discovery"] = True
    return ClientSecretCredential(seal["tenant_id"], seal["client_id"], secret, **kwargs)


def auto_unseal(settings: Settings, stored: dict[str, Any]) -> bytes:
    from openkeyvault.storage.seals import KeyVaultSeal

    assert settings.seal is not None
    return KeyVaultSeal.unseal(stored, _credential(settings.seal))


def register(app: typer.Typer) -> None:
    app.add_typer(operator_app, name="operator")

    @app.command("init")
    def init(config: ConfigFile) -> None:
        """Create the production deployment a configuration file describes; prints the
        first administrator's credentials and the seal's shares, once."""
        settings = settings_of(config)
        _init(settings)

    @operator_app.command("status")
    def status(config: ConfigFile) -> None:
        """The node's seal state and unseal progress."""
        typer.echo(json.dumps(_call(settings_of(config), {"op": "status"}), indent=2))

    @operator_app.command("unseal")
    def unseal(config: ConfigFile) -> None:
        """Give the node one key holder's share (read without echo, or from standard
        input when it is not a terminal)."""
        share = getpass.getpass("Share: ") if sys.stdin.isatty() else sys.stdin.readline()
        answer = _call(settings_of(config), {"op": "unseal", "share": share.strip()})
        _report(answer)

    @operator_app.command("seal")
    def seal(config: ConfigFile) -> None:
        """Make the node forget its root key: it answers 503 until unsealed again."""
        _report(_call(settings_of(config), {"op": "seal"}))

    @operator_app.command("rekey")
    def rekey(config: ConfigFile,
              shares: Annotated[int, typer.Option(help="Key holders.")] = 5,
              threshold: Annotated[int, typer.Option(help="Shares that unseal.")] = 3) -> None:
        """New shares for the same root key, from a quorum of the current ones (read one
        per line from standard input); the current shares stop counting."""
        from openkeyvault.storage.seals import ShamirSeal, ShareRefused

        settings = settings_of(config)
        stored = stored_seal(settings)
        if stored is None or stored.get("type") != "shamir":
            typer.echo("error: the deployment's seal is not a Shamir seal", err=True)
            raise typer.Exit(2)
        old = [line.strip() for line in sys.stdin if line.strip()]
        try:
            new_stored, texts = ShamirSeal.rekey(stored, old, shares, threshold)
        except (ShareRefused, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        _replace_seal(settings, new_stored)
        typer.echo(json.dumps({"shares": texts, "threshold": threshold}, indent=2))


def _call(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    from openkeyvault.ops.nodectl import call, socket_path

    path = socket_path(settings)
    try:
        return call(path, request)
    except (OSError, ValueError):
        typer.echo(f"error: no node answers at {path} (is `okv server --config` running "
                   "on this machine, as this user?)", err=True)
        raise typer.Exit(1) from None


def _report(answer: dict[str, Any]) -> None:
    typer.echo(json.dumps(answer, indent=2))
    if "error" in answer:
        raise typer.Exit(1)


def _replace_seal(settings: Settings, stored: dict[str, Any]) -> None:
    from openkeyvault.storage.db import open_database
    from openkeyvault.storage.repository import Repository

    engines = open_database(settings.database_url or settings.db_path)
    try:
        Repository(engines).set_meta(SEAL_META, json.dumps(stored))
    finally:
        engines.dispose()


def _init(settings: Settings) -> None:
    from openkeyvault.access.roles import KEY_VAULT_ADMINISTRATOR, OWNER
    from openkeyvault.crypto.aead import new_key
    from openkeyvault.deployment import Deployment
    from openkeyvault.storage.errors import StartupRefused, StorageError
    from openkeyvault.storage.seals import AutoUnsealError, DevFileSeal, KeyVaultSeal, ShamirSeal

    assert settings.seal is not None
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        if stored_seal(settings) is not None:
            where = "its database" if settings.database_url else str(settings.db_path)
            typer.echo(f"error: the deployment in {where} is initialised already", err=True)
            raise typer.Exit(1)
        kind = settings.seal["type"]
        shares: list[str] = []
        if kind == "devkey":  # the key file is made with the database, by Deployment.open
            stored = DevFileSeal.init()
        else:
            root_key = new_key()
            if kind == "shamir":
                stored, shares = ShamirSeal.init(root_key, int(settings.seal.get("shares", 5)),
                                                 int(settings.seal.get("threshold", 3)))
            else:
                stored = KeyVaultSeal.init(root_key, str(settings.seal.get("key_id", "")),
                                           _credential(settings.seal))
        d = Deployment.open(settings, root_key=None if kind == "devkey" else root_key)
        try:
            d.repo.set_meta_if_absent(SEAL_META, json.dumps(stored))
            admin, secret = d.directory.create("administrator", 365)
            d.rbac.assign(admin.object_id, KEY_VAULT_ADMINISTRATOR.id, "/")
            d.rbac.assign(admin.object_id, OWNER.id, "/")
            tenant_id = d.tenant_id
        finally:
            d.close()
    except (StartupRefused, StorageError, ConfigError, ValueError, AutoUnsealError,
            OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    out: dict[str, Any] = {
        "tenant_id": tenant_id, "authority": settings.authority,
        "administrator": {"client_id": admin.client_id, "object_id": admin.object_id,
                          "client_secret": secret.client_secret,
                          "secret_expires": secret.expires},
        "seal": stored.get("type"),
    }
    if shares:
        out["shares"] = shares
        out["threshold"] = int(settings.seal.get("threshold", 3))
    typer.echo(json.dumps(out, indent=2))
    typer.echo("Shown once: give each share to one key holder, and keep the administrator's "
               "secret safe. Start the server with `okv server --config FILE`, then unseal "
               "it with `okv operator unseal --config FILE`.", err=True)
