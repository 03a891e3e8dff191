"""`okv ca`: the deployment's built-in issuing CA (signs certificates of issuers whose
provider is "OpenKeyVault")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from openkeyvault.cli.settings import settings_for

ca_app = typer.Typer(help="The built-in certificate issuing CA.", no_args_is_help=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory.")]


@ca_app.command("show")
def ca_show(data_dir: DataDir = None) -> None:
    """Print the issuing CA's root certificate (PEM), creating the CA on first use.

    Clients that should trust certificates the vaults issue add this root to their trust
    store. The same PEM is served without authentication at GET /ca.pem.
    """
    from openkeyvault.deployment import Deployment

    d = Deployment.open(settings_for(data_dir))
    try:
        typer.echo(d.ca.root_pem().decode(), nl=False)
    finally:
        d.close()
