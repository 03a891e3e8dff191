"""`okv audit verify` and `okv audit query`: the audit trail read back (ops/audit.py).

Verify needs the audit key, which is derived from the root key and stored nowhere:

- a dev deployment (`--data-dir`): from the dev key file in the data directory;
- a production deployment (`--config FILE`): from the node running on this machine,
  through its control socket (ops/nodectl.py) — it must be unsealed, and the command run
  as the server's user. The key holders' shares are never asked for here: a verify run
  must not rebuild the root key outside the node that already holds it.

The checkpoints (high-water marks) come from the deployment's database; without them a
cut tail cannot be seen, and verify says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from openkeyvault.config import Settings

audit_app = typer.Typer(help="Verify and search the audit trail.", no_args_is_help=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory.")]
ConfigFile = Annotated[Path | None, typer.Option(
    "--config", "-c", help="A production deployment's TOML configuration file.")]
AuditDir = Annotated[Path | None, typer.Option(
    "--dir", help="The directory of the stream files (default: the deployment's).")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _key(settings: Settings) -> bytes:
    """The audit key: from the dev key file, or from this machine's unsealed node."""
    from openkeyvault.ops.audit import audit_key, dev_root_key
    from openkeyvault.storage.errors import StartupRefused

    seal = settings.seal
    if seal is None or seal.get("type") == "devkey":
        try:
            return audit_key(dev_root_key(settings))
        except StartupRefused as e:
            raise _fail(str(e)) from None
    from openkeyvault.ops.nodectl import root_key_from, socket_path

    path = socket_path(settings)
    root = root_key_from(path)
    if root is None:
        raise _fail(f"no unsealed node answers on {path}: run this on a node of the "
                    "deployment, as the server's user, while it is unsealed")
    return audit_key(root)


def _checkpoints(settings: Settings) -> dict[str, Any] | None:
    from openkeyvault.storage.audit import AuditStore
    from openkeyvault.storage.db import open_database
    from openkeyvault.storage.errors import StorageError

    if settings.database_url is None and not settings.db_path.exists():
        return None
    try:
        engines = open_database(settings.database_url or settings.db_path)
    except StorageError as e:
        typer.echo(f"warning: the checkpoints could not be read ({e})", err=True)
        return None
    try:
        return dict(AuditStore(engines).checkpoints())
    finally:
        engines.dispose()


def _directory(settings: Settings, given: Path | None) -> Path:
    from openkeyvault.ops.audit import audit_dir

    return given if given is not None else audit_dir(settings)


def register(app: typer.Typer, settings_for: Callable[..., Settings]) -> None:
    app.add_typer(audit_app, name="audit")

    def settings_of(data_dir: Path | None, config: Path | None) -> Settings:
        if config is not None:
            from openkeyvault.cli.operator import settings_of as from_config

            return from_config(config)
        return settings_for(data_dir)

    @audit_app.command("verify")
    def verify(data_dir: DataDir = None, config: ConfigFile = None,
               directory: AuditDir = None) -> None:
        """Check that every audit stream is one unbroken chain up to its checkpoint; name
        each edited, inserted, deleted, reordered or truncated record. Exit 1 if any."""
        from openkeyvault.ops import auditread

        settings = settings_of(data_dir, config)
        key = _key(settings)
        where = _directory(settings, directory)
        report = auditread.verify(where, key, _checkpoints(settings))
        for note in report.notes:
            typer.echo(f"note: {note}", err=True)
        for problem in report.problems:
            typer.echo(str(problem))
        state = "OK" if report.ok else f"{len(report.problems)} problem(s)"
        typer.echo(f"{where}: {report.files} stream file(s), {report.records} record(s): "
                   f"{state}")
        if not report.ok:
            raise typer.Exit(1)

    @audit_app.command("query")
    def query(
        data_dir: DataDir = None, config: ConfigFile = None, directory: AuditDir = None,
        vault: Annotated[str | None, typer.Option(help="A vault's or pool's name.")] = None,
        caller: Annotated[str | None, typer.Option(
            help="The caller's object id or user principal name.")] = None,
        operation: Annotated[str | None, typer.Option(
            help="An operationName, e.g. SecretGet.")] = None,
        result: Annotated[str | None, typer.Option(
            help="Success, Failure, a status (403) or a class (4xx).")] = None,
        since: Annotated[str | None, typer.Option(
            help="From this time (ISO 8601, UTC unless it says).")] = None,
        until: Annotated[str | None, typer.Option(help="Before this time.")] = None,
        limit: Annotated[int, typer.Option(min=1, max=1_000_000)] = 1000,
        source: Annotated[str | None, typer.Option(
            help="files (this node's stream files) or database (every node's records, "
            "PostgreSQL). Default: database on PostgreSQL, else files.")] = None,
        output: Annotated[str, typer.Option(help="table or json.")] = "table",
    ) -> None:
        """Audit records matching every filter given, oldest first."""
        from openkeyvault.ops import auditread
        from openkeyvault.storage.audit import AuditFilter

        if output not in ("table", "json"):
            raise _fail("--output is table or json")
        settings = settings_of(data_dir, config)
        try:
            f = AuditFilter(
                vault=vault, caller=caller, operation=operation,
                statuses=auditread.result_filter(result) if result is not None else None,
                since_ms=auditread.parse_time(since) if since else None,
                until_ms=auditread.parse_time(until) if until else None)
        except ValueError as e:
            raise _fail(str(e)) from None
        source = source or ("database" if settings.database_url else "files")
        if source == "files":
            found = auditread.query(_directory(settings, directory), f, limit)
        elif source == "database":
            found = _from_database(settings, f, limit)
        else:
            raise _fail("--source is files or database")
        if output == "json":
            typer.echo(json.dumps(found, indent=2))
            return
        _table(found)


def _from_database(settings: Settings, f: Any, limit: int) -> list[dict[str, Any]]:
    from openkeyvault.storage.audit import AuditStore
    from openkeyvault.storage.db import open_database

    engines = open_database(settings.database_url or settings.db_path)
    try:
        rows = AuditStore(engines).query(f, limit)
    finally:
        engines.dispose()
    return [json.loads(r.record) for r in rows]


def _table(records: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from openkeyvault.ops.audit import CLAIM_OID, CLAIM_UPN

    table = Table("time", "vault", "operation", "status", "caller", "address", "ms")
    for r in records:
        claim = (r.get("identity") or {}).get("claim") or {}
        props = r.get("properties") or {}
        resource = str(r.get("resourceId") or "")
        table.add_row(str(r.get("time", "")), resource.rsplit("/", 1)[-1].lower(),
                      str(r.get("operationName", "")), str(props.get("httpStatusCode", "")),
                      str(claim.get(CLAIM_UPN) or claim.get(CLAIM_OID) or ""),
                      str(r.get("callerIpAddress", "")), str(r.get("durationMs", "")))
    Console(width=200).print(table)
