"""The `okv` command."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from openkeyvault.config import DEFAULT_PORT, Settings, default_data_dir

app = typer.Typer(help="OpenKeyVault: a self-hosted Azure Key Vault.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_show_locals=False)
vault_app = typer.Typer(help="Manage vaults.", no_args_is_help=True)
app.add_typer(vault_app, name="vault")

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory.")]


def _settings(data_dir: Path | None, **kw: object) -> Settings:
    return Settings(data_dir=(data_dir or default_data_dir()).expanduser().resolve(), **kw)  # type: ignore[arg-type]


@app.command()
def server(
    dev: Annotated[bool, typer.Option("--dev", help="Development mode: dev seal, dev identity, "
                                      "built-in CA.")] = False,
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Run the server."""
    if not dev:
        typer.echo("Only --dev mode is available in this version.", err=True)
        raise typer.Exit(2)
    from openkeyvault.cli.server import run

    run(_settings(data_dir, host=host, port=port, workers=max(1, workers), dev=True))


@vault_app.command("create")
def vault_create(
    name: str,
    data_dir: DataDir = None,
    sku: Annotated[str, typer.Option(help="standard or premium.")] = "standard",
    retention_days: Annotated[int, typer.Option(help="Soft-delete retention, 7-90 days.")] = 90,
    purge_protection: Annotated[bool, typer.Option(help="Refuse purges.")] = False,
) -> None:
    """Create a vault, reachable at https://NAME.vault.localhost:PORT."""
    from openkeyvault.deployment import Deployment
    from openkeyvault.vault.errors import DomainError

    d = Deployment.open(_settings(data_dir))
    try:
        v = d.vaults.create(name, sku=sku, retention_days=retention_days,
                            purge_protection=purge_protection)
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        d.close()
    typer.echo(json.dumps({"name": v.name, "sku": v.sku, "retentionDays": v.retention_days,
                           "purgeProtection": v.purge_protection}))


@vault_app.command("list")
def vault_list(
    data_dir: DataDir = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
) -> None:
    """List the vaults."""
    from openkeyvault.deployment import Deployment

    d = Deployment.open(_settings(data_dir))
    try:
        vaults = d.vaults.list()
    finally:
        d.close()
    if output == "json":
        typer.echo(json.dumps([{"name": v.name, "sku": v.sku, "retentionDays": v.retention_days,
                                "purgeProtection": v.purge_protection,
                                "created": v.created} for v in vaults]))
        return
    table = Table("name", "sku", "retention (days)", "purge protection", "created")
    for v in vaults:
        table.add_row(v.name, v.sku, str(v.retention_days), "yes" if v.purge_protection else "no",
                      dt.datetime.fromtimestamp(v.created, dt.UTC).isoformat(timespec="seconds"))
    Console().print(table)


def main() -> None:
    app()
