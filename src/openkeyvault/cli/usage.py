"""`okv usage`: billed transactions per vault and meter, with Azure's list price.

Reads the `usage` table that the server's workers add to (ops/usage.py) and the meters
derived from storage (HSM key-months, pool-hours, scheduled rotations and renewals). Safe
while the server runs; counts of the last few seconds may not be flushed yet.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from openkeyvault.config import Settings

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory.")]
_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


def register(app: typer.Typer, settings_for: Callable[..., Settings]) -> None:
    @app.command("usage")
    def usage(
        vault: Annotated[str | None, typer.Option(
            "--vault", help="Only this vault or Managed HSM pool (its name).")] = None,
        month: Annotated[str | None, typer.Option(
            "--month", metavar="YYYY-MM", help="Only this month (UTC).")] = None,
        output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
        data_dir: DataDir = None,
        config: Annotated[Path | None, typer.Option(
            "--config", "-c", help="A production deployment's TOML configuration file "
            "(its database).")] = None,
    ) -> None:
        """Billed transactions per vault, month and Azure billing meter, with what they
        would cost at Azure's list price (docs/operations.md, "Usage")."""
        if config is not None and data_dir is not None:
            _fail("give --data-dir or --config, not both")
        if output not in ("table", "json"):
            _fail(f"--output is table or json, not '{output[:20]}'")
        if month is not None and not _MONTH.fullmatch(month):
            _fail(f"--month takes YYYY-MM, not '{month[:20]}'")
        if config is not None:
            from openkeyvault.cli.operator import settings_of

            settings = settings_of(config)
        else:
            settings = settings_for(data_dir)
        lines = _report(settings, vault.lower() if vault else None, month)
        if output == "json":
            typer.echo(json.dumps({"usage": [ln.to_json() for ln in lines]}, indent=2))
            return
        _table(lines)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _report(settings: Settings, vault: str | None, month: str | None) -> list[Any]:
    """Only the database is opened: no root key is needed to count (a sealed production
    deployment can be read too)."""
    from openkeyvault.ops.clock import deployment_clock
    from openkeyvault.ops.usage import report
    from openkeyvault.storage.db import open_database
    from openkeyvault.storage.usage import UsageStore

    if settings.database_url is None and not settings.db_path.exists():
        _fail(f"no deployment in {settings.data_dir} (start `okv server` there first)")
    engines = open_database(settings.database_url or settings.db_path)
    try:
        now = deployment_clock(settings.data_dir, settings.dev).now()
        return report(UsageStore(engines), now, vault, month)
    finally:
        engines.dispose()


def _table(lines: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("month", "vault", "meter", "count", "USD at Azure list price")
    group: tuple[str, str] | None = None
    total = 0.0
    for ln in [*lines, None]:
        key = None if ln is None else (ln.month, ln.vault)
        if group is not None and key != group:  # the group's total after its meters
            table.add_row(*group, "total", "", f"{total:.6f}", style="bold", end_section=True)
            total = 0.0
        if ln is None:
            break
        group = key
        cost = ln.list_price_usd
        total += cost or 0.0
        table.add_row(ln.month, ln.vault, ln.meter, str(ln.count),
                      "" if cost is None else f"{cost:.6f}")
    Console().print(table)
    if any(ln.price is not None and not ln.price.verified for ln in lines):
        typer.echo("Prices: Azure's pay-as-you-go list prices as read on the dates in "
                   "`--output json`; some are from a single unverified read. Estimates only.")
