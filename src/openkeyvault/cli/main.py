"""The `okv` command."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from openkeyvault.config import DEFAULT_PORT, Settings, default_data_dir

app = typer.Typer(help="OpenKeyVault: a self-hosted Azure Key Vault.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_show_locals=False)
vault_app = typer.Typer(help="Manage vaults.", no_args_is_help=True)
app.add_typer(vault_app, name="vault")
principal_app = typer.Typer(help="Manage service principals.", no_args_is_help=True)
app.add_typer(principal_app, name="principal")
role_app = typer.Typer(help="Manage role assignments.", no_args_is_help=True)
app.add_typer(role_app, name="role")
secret_app = typer.Typer(help="Manage a principal's client secrets.", no_args_is_help=True)
principal_app.add_typer(secret_app, name="secret")

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


def _directory_call(data_dir: Path | None, fn: Any) -> Any:
    from openkeyvault.access.directory import DirectoryError
    from openkeyvault.deployment import Deployment

    d = Deployment.open(_settings(data_dir))
    try:
        return fn(d.directory)
    except DirectoryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        d.close()


def _find(directory: Any, key: str) -> Any:
    found = directory.find(key)
    if found is None:
        typer.echo(f"error: no principal '{key}' (give its object id, client id or name)",
                   err=True)
        raise typer.Exit(1)
    return found


Days = Annotated[int, typer.Option("--days", help="Days until the secret expires.")]


@principal_app.command("create")
def principal_create(
    name: str, data_dir: DataDir = None, days: Days = 365,
    managed_identity: Annotated[bool, typer.Option(
        "--managed-identity", help="A managed identity (tokens from the managed-identity "
        "endpoints, no secret) instead of a service principal.")] = False,
) -> None:
    """Create a service principal (prints its ids and first client secret, shown once) or a
    managed identity."""
    def create(directory: Any) -> dict[str, Any]:
        if managed_identity:
            mi = directory.create_managed_identity(name)
            return {"tenant_id": mi.tenant_id, "client_id": mi.client_id,
                    "object_id": mi.object_id, "display_name": mi.display_name,
                    "kind": mi.kind}
        p, secret = directory.create(name, days)
        return {"tenant_id": p.tenant_id, "client_id": p.client_id, "object_id": p.object_id,
                "display_name": p.display_name, "client_secret": secret.client_secret,
                "secret_id": secret.credential_id, "secret_expires": secret.expires}
    typer.echo(json.dumps(_directory_call(data_dir, create), indent=2))


@principal_app.command("list")
def principal_list(
    data_dir: DataDir = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
) -> None:
    """List service principals (never their secrets)."""
    def rows(directory: Any) -> list[dict[str, Any]]:
        return [{"display_name": p.display_name, "client_id": p.client_id,
                 "object_id": p.object_id, "tenant_id": p.tenant_id, "kind": p.kind,
                 "secrets": [{"id": c.id, "hint": c.hint + "…", "expires": c.expires}
                             for c in directory.credentials(p.object_id)]}
                for p in directory.principals()]
    found = _directory_call(data_dir, rows)
    if output == "json":
        typer.echo(json.dumps(found, indent=2))
        return
    table = Table("name", "client id", "object id", "secrets")
    for r in found:
        table.add_row(r["display_name"], r["client_id"], r["object_id"], str(len(r["secrets"])))
    Console().print(table)


@principal_app.command("delete")
def principal_delete(principal: str, data_dir: DataDir = None) -> None:
    """Delete a principal and all its secrets."""
    _directory_call(data_dir, lambda d: d.delete(_find(d, principal).object_id))
    typer.echo(json.dumps({"deleted": principal}))


@secret_app.command("add")
def secret_add(principal: str, data_dir: DataDir = None, days: Days = 365) -> None:
    """Add a client secret to a principal; prints it once."""
    def add(directory: Any) -> dict[str, Any]:
        p = _find(directory, principal)
        s = directory.add_secret(p.object_id, days)
        return {"client_id": p.client_id, "secret_id": s.credential_id,
                "client_secret": s.client_secret, "secret_expires": s.expires}
    typer.echo(json.dumps(_directory_call(data_dir, add), indent=2))


@secret_app.command("remove")
def secret_remove(principal: str, secret_id: str, data_dir: DataDir = None) -> None:
    """Remove (revoke) one client secret of a principal."""
    def remove(directory: Any) -> bool:
        return bool(directory.remove_secret(_find(directory, principal).object_id, secret_id))
    if not _directory_call(data_dir, remove):
        typer.echo(f"error: principal has no secret '{secret_id}'", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps({"removed": secret_id}))


@role_app.command("assign")
def role_assign(
    principal: Annotated[str, typer.Option(help="Object id, client id or name.")],
    role: Annotated[str, typer.Option(help="Role name or GUID, e.g. 'Key Vault Secrets User'.")],
    scope: Annotated[str, typer.Option(help="/, /vaults/NAME, /vaults/NAME/secrets[/NAME]...")
                     ] = "/",
    data_dir: DataDir = None,
) -> None:
    """Give a principal a role at a scope."""
    from openkeyvault.access.rbac import RbacError
    from openkeyvault.access.roles import find
    from openkeyvault.deployment import Deployment

    d = Deployment.open(_settings(data_dir))
    try:
        p = _find(d.directory, principal)
        r = d.rbac.assign(p.object_id, role, scope)
    except RbacError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        d.close()
    found = find(r.role_definition_id)
    typer.echo(json.dumps({"id": r.id, "principal_id": r.principal_id, "scope": r.scope,
                           "role_definition_id": r.role_definition_id,
                           "role": found.name if found else None}, indent=2))


@role_app.command("list")
def role_list(
    data_dir: DataDir = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
) -> None:
    """List role assignments."""
    from openkeyvault.access.roles import find
    from openkeyvault.deployment import Deployment

    d = Deployment.open(_settings(data_dir))
    try:
        rows = [{"id": r.id, "principal_id": r.principal_id, "scope": r.scope,
                 "role_definition_id": r.role_definition_id,
                 "role": (f.name if (f := find(r.role_definition_id)) else None)}
                for r in d.rbac.all()]
    finally:
        d.close()
    if output == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("id", "principal", "role", "scope")
    for r in rows:
        table.add_row(r["id"], r["principal_id"], r["role"] or r["role_definition_id"], r["scope"])
    Console().print(table)


@role_app.command("remove")
def role_remove(assignment_id: str, data_dir: DataDir = None) -> None:
    """Remove a role assignment."""
    from openkeyvault.deployment import Deployment

    d = Deployment.open(_settings(data_dir))
    try:
        removed = d.rbac.remove(assignment_id)
    finally:
        d.close()
    if not removed:
        typer.echo(f"error: no role assignment '{assignment_id}'", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps({"removed": assignment_id}))


def main() -> None:
    app()
