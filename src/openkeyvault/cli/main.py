"""The `okv` command.

Only Typer and the settings are imported here: each command imports what it uses when
it runs, so that `okv --help` and every command start quickly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from openkeyvault.cli import (
    attestation,
    audit,
    azsetup,
    byok,
    ca,
    events,
    hsms,
    operator,
    throttle,
    trust,
    usage,
    vaults,
)
from openkeyvault.cli.settings import settings_for
from openkeyvault.config import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_PORT,
    IDLE_TIMEOUT_RANGE,
    MAX_CONNECTIONS_RANGE,
    Settings,
    default_trusted_proxies,
    parse_throttling,
)

app = typer.Typer(help="OpenKeyVault: a self-hosted Azure Key Vault.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_show_locals=False)
vault_app = typer.Typer(help="Manage vaults.", no_args_is_help=True)
app.add_typer(vault_app, name="vault")
hsm_app = typer.Typer(help="Manage managed HSM pools.", no_args_is_help=True)
app.add_typer(hsm_app, name="hsm")
network_app = typer.Typer(help="Manage a vault's network rules.", no_args_is_help=True)
vault_app.add_typer(network_app, name="network")
policy_app = typer.Typer(help="Manage a vault's access policies.", no_args_is_help=True)
vault_app.add_typer(policy_app, name="policy")
principal_app = typer.Typer(help="Manage service principals.", no_args_is_help=True)
app.add_typer(principal_app, name="principal")
role_app = typer.Typer(help="Manage role assignments and definitions.", no_args_is_help=True)
app.add_typer(role_app, name="role")
definition_app = typer.Typer(help="Manage role definitions.", no_args_is_help=True)
role_app.add_typer(definition_app, name="definition")
secret_app = typer.Typer(help="Manage a principal's client secrets.", no_args_is_help=True)
principal_app.add_typer(secret_app, name="secret")
principal_app.add_typer(trust.cert_app, name="cert")
principal_app.add_typer(trust.federated_app, name="federated")
app.add_typer(trust.issuer_app, name="issuer")
app.add_typer(trust.token_app, name="token")
app.add_typer(ca.ca_app, name="ca")
app.add_typer(events.events_app, name="events")

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory.")]


def _settings(data_dir: Path | None, **kw: object) -> Settings:
    """The deployment's settings: those given, else the port and domain the server
    recorded at its last start (cli/settings.py), else the defaults."""
    return settings_for(data_dir, **kw)


def _print_table(table: Any) -> None:
    from rich.console import Console

    Console().print(table)


vaults.register(vault_app, _settings)
hsms.register(hsm_app, _settings)
azsetup.register(app, _settings)
operator.register(app)
audit.register(app, _settings)
throttle.register(vault_app, _settings)
usage.register(app, _settings)
byok.register(app)
attestation.register(app)


@app.command()
def server(
    dev: Annotated[bool, typer.Option("--dev", help="Development mode: dev seal, dev identity, "
                                      "built-in CA.")] = False,
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    trusted_proxy: Annotated[list[str] | None, typer.Option(
        "--trusted-proxy", help="CIDR of a reverse proxy whose X-Forwarded-For names the "
        "client address (repeatable; default: $OKV_TRUSTED_PROXIES).")] = None,
    token_key_days: Annotated[int, typer.Option(
        help="Days between automatic rotations of the token signing key (0: never).")] = 30,
    imds: Annotated[bool | None, typer.Option(
        "--imds/--no-imds", help="Serve the IMDS-style token endpoint (no secret; callers on "
        "this machine only). Default: on when --host is a loopback address.")] = None,
    idle_timeout: Annotated[float, typer.Option(
        min=IDLE_TIMEOUT_RANGE[0], max=IDLE_TIMEOUT_RANGE[1],
        help="Seconds a connection may stay silent before the server closes it: after the "
        "TLS handshake until a request's headers arrive, and between keep-alive "
        "requests.")] = DEFAULT_IDLE_TIMEOUT,
    max_connections: Annotated[int, typer.Option(
        min=MAX_CONNECTIONS_RANGE[0], max=MAX_CONNECTIONS_RANGE[1],
        help="Connections each worker process holds open at once (lowered to what the "
        "open-file limit allows).")] = DEFAULT_MAX_CONNECTIONS,
    max_connections_per_address: Annotated[int, typer.Option(
        min=0, max=MAX_CONNECTIONS_RANGE[1],
        help="Connections from one client address that may have a request in progress at "
        "once, per worker (0: no limit); past it the server answers 429 and closes the "
        "connection. Trusted proxies are not counted.")] = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    database: Annotated[str | None, typer.Option(
        "--database", metavar="URL",
        help="PostgreSQL database URL (postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, or "
        "?host=/socket/dir). Servers started on the same data directory and database are "
        "nodes of one deployment. Default: $OKV_DATABASE_URL, else SQLite (okv.db in the "
        "data directory).")] = None,
    public_port: Annotated[int | None, typer.Option(
        help="The port clients use, where it is not --port (nodes behind a load "
        "balancer): vault URIs and the token issuer carry it.")] = None,
    throttling: Annotated[str, typer.Option(
        metavar="off|on|SCALE", envvar="OKV_THROTTLING",
        help="Throttling by Azure's limits per vault and 10 s: on (Azure's numbers), off, "
        "or on with every limit multiplied by SCALE (e.g. 0.01 for a test that should see "
        "429s). Default: $OKV_THROTTLING, else on.")] = "on",
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Run the production deployment this TOML file describes "
        "(made by `okv init --config FILE`; docs/operations.md).")] = None,
    metrics_port: Annotated[int | None, typer.Option(
        min=1, max=65535, help="Serve Prometheus metrics over plain HTTP on this port "
        "(docs/operations.md, Metrics).")] = None,
    metrics_host: Annotated[str, typer.Option(
        help="Address of the metrics listener.")] = "127.0.0.1",
) -> None:
    """Run the server: a dev server (--dev), or the production deployment a
    configuration file describes (--config, made by `okv init`)."""
    if config is not None:
        if dev:
            typer.echo("error: give --dev or --config, not both", err=True)
            raise typer.Exit(2)
        from openkeyvault.cli.server import run_production

        run_production(operator.settings_of(config))
        return
    if not dev:
        typer.echo("error: give --dev (a development server) or --config FILE (a "
                   "deployment made by `okv init`)", err=True)
        raise typer.Exit(2)
    from openkeyvault.access.network import InvalidNetworkRule, parse_rule
    from openkeyvault.cli.server import run

    if database is not None:
        from openkeyvault.storage.db import is_database_url

        if not is_database_url(database):
            typer.echo("error: --database takes a PostgreSQL URL (postgresql://...)", err=True)
            raise typer.Exit(2)
    try:
        throttle_settings = parse_throttling(throttling)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    proxies = tuple(trusted_proxy) if trusted_proxy else default_trusted_proxies()
    try:
        proxies = tuple(str(parse_rule(p)) for p in proxies)
    except InvalidNetworkRule as exc:
        typer.echo(f"error: trusted proxy: {exc}", err=True)
        raise typer.Exit(2) from None
    run(_settings(data_dir, host=host, port=port, workers=max(1, workers), dev=True,
                  trusted_proxies=proxies, token_key_days=max(0, token_key_days), imds=imds,
                  idle_timeout=idle_timeout, max_connections=max_connections,
                  max_connections_per_address=max_connections_per_address,
                  public_port=public_port, **throttle_settings,
                  metrics_port=metrics_port, metrics_host=metrics_host,
                  **({"database_url": database} if database else {})))


def _properties_call(data_dir: Path | None, name: str, fn: Any, operation: str) -> None:
    """Run `fn(d.vault_properties)` as `operation` (cli/acting.py) and print the vault with
    its properties as JSON. A managed HSM pool's name is refused: its access settings are
    its own (ARM's network rules, its local RBAC), not a vault's."""
    from openkeyvault.cli.acting import perform
    from openkeyvault.deployment import Deployment
    from openkeyvault.vault.errors import DomainError

    d = Deployment.open(_settings(data_dir))
    try:
        kind = d.vaults.kind_of(name)
        if kind is not None and kind != d.vaults.KIND:
            typer.echo(f"error: {vaults.other_kind(name, kind, d.vaults.KIND)}", err=True)
            raise typer.Exit(1)
        props = perform(d, operation, lambda: fn(d.vault_properties), vault=name)
        v = d.vaults.get(name)
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        d.close()
    assert v is not None
    typer.echo(json.dumps({"name": v.name, "properties": {
        "sku": {"family": "A", "name": v.sku}, "enableSoftDelete": True,
        "softDeleteRetentionInDays": v.retention_days,
        "enablePurgeProtection": v.purge_protection, **props.to_wire()}}, indent=2))


@network_app.command("add-rule")
def network_add_rule(name: str, cidr: str, data_dir: DataDir = None) -> None:
    """Allow an IPv4/IPv6 address or CIDR range (when the default action is Deny)."""
    _properties_call(data_dir, name, lambda s: s.add_ip_rule(name, cidr), "VaultPatch")


@network_app.command("remove-rule")
def network_remove_rule(name: str, cidr: str, data_dir: DataDir = None) -> None:
    """Remove an IP rule."""
    _properties_call(data_dir, name, lambda s: s.remove_ip_rule(name, cidr), "VaultPatch")


def _permissions(**given: str | None) -> dict[str, list[str]]:
    return {kind: [p.strip() for p in value.split(",") if p.strip()]
            for kind, value in given.items() if value is not None}


Perms = Annotated[str | None, typer.Option(
    help="Comma-separated permissions (replaces this kind's list; '' clears it).")]
ObjectId = Annotated[str, typer.Option("--object-id", help="The principal's object id.")]
TenantId = Annotated[str | None, typer.Option(
    "--tenant-id", help="Default: the deployment's tenant.")]


@policy_app.command("set")
def policy_set(name: str, object_id: ObjectId, data_dir: DataDir = None,
               tenant_id: TenantId = None, keys: Perms = None, secrets: Perms = None,
               certificates: Perms = None) -> None:
    """Give a principal access-policy permissions (used when the vault is in
    access-policy mode)."""
    perms = _permissions(keys=keys, secrets=secrets, certificates=certificates)
    _properties_call(data_dir, name, lambda s: s.set_access_policy(
        name, object_id, tenant_id, perms), "VaultAccessPolicyUpdate")


@policy_app.command("remove")
def policy_remove(name: str, object_id: ObjectId, data_dir: DataDir = None,
                  tenant_id: TenantId = None) -> None:
    """Remove a principal's access policy."""
    _properties_call(data_dir, name, lambda s: s.remove_access_policy(
        name, object_id, tenant_id), "VaultAccessPolicyUpdate")


def _directory_call(data_dir: Path | None, fn: Any, operation: str | None = None) -> Any:
    """`fn(d.directory)`; a change as `operation` (cli/acting.py)."""
    from openkeyvault.access.directory import DirectoryError
    from openkeyvault.cli.acting import perform
    from openkeyvault.deployment import Deployment

    d = Deployment.open(_settings(data_dir))
    try:
        if operation is None:
            return fn(d.directory)
        return perform(d, operation, lambda: fn(d.directory))
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
    external_issuer: Annotated[str | None, typer.Option(
        help="A trusted issuer (okv issuer add) whose tokens act as this principal; "
        "no secret.")] = None,
    external_subject: Annotated[str | None, typer.Option(
        help="With --external-issuer: the tokens' 'oid' (else 'sub').")] = None,
) -> None:
    """Create a service principal (prints its ids and first client secret, shown once), a
    managed identity, or a principal for an external issuer's subject."""
    if (external_issuer is None) != (external_subject is None) or (
            external_issuer and managed_identity):
        typer.echo("error: give --external-issuer and --external-subject together, without "
                   "--managed-identity", err=True)
        raise typer.Exit(2)

    def create(directory: Any) -> dict[str, Any]:
        if external_issuer is not None:
            ext = directory.create_external(name, external_issuer, external_subject)
            return {"tenant_id": ext.tenant_id, "client_id": ext.client_id,
                    "object_id": ext.object_id, "display_name": ext.display_name,
                    "external_issuer": external_issuer, "external_subject": external_subject}
        if managed_identity:
            mi = directory.create_managed_identity(name)
            return {"tenant_id": mi.tenant_id, "client_id": mi.client_id,
                    "object_id": mi.object_id, "display_name": mi.display_name,
                    "kind": mi.kind}
        p, secret = directory.create(name, days)
        return {"tenant_id": p.tenant_id, "client_id": p.client_id, "object_id": p.object_id,
                "display_name": p.display_name, "client_secret": secret.client_secret,
                "secret_id": secret.credential_id, "secret_expires": secret.expires}
    typer.echo(json.dumps(_directory_call(data_dir, create, "ServicePrincipalCreate"),
                          indent=2))


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
                             for c in directory.credentials(p.object_id) if c.kind == "secret"],
                 "certificates": [{"id": c.id, "thumbprint": c.sha1.upper(),
                                   "thumbprint_sha256": c.sha256.upper(),
                                   "subject": c.subject, "expires": c.expires}
                                  for c in directory.certificates(p.object_id)],
                 "federated_credentials": [{"id": f.id, "issuer": f.issuer,
                                            "subject": f.subject, "audience": f.audience}
                                           for f in directory.federated(p.object_id)],
                 "external_identities": [{"issuer": i, "subject": s}
                                         for i, s in directory.external_identities(
                                             p.object_id)]}
                for p in directory.principals()]
    found = _directory_call(data_dir, rows)
    if output == "json":
        typer.echo(json.dumps(found, indent=2))
        return
    from rich.table import Table

    table = Table("name", "client id", "object id", "secrets", "certificates", "federated")
    for r in found:
        table.add_row(r["display_name"], r["client_id"], r["object_id"], str(len(r["secrets"])),
                      str(len(r["certificates"])), str(len(r["federated_credentials"])))
    _print_table(table)


@principal_app.command("delete")
def principal_delete(principal: str, data_dir: DataDir = None) -> None:
    """Delete a principal and its credentials (its tokens stop working at once)."""
    _directory_call(data_dir, lambda d: d.delete(_find(d, principal).object_id),
                    "ServicePrincipalDelete")
    typer.echo(json.dumps({"deleted": principal}))


@secret_app.command("add")
def secret_add(principal: str, data_dir: DataDir = None, days: Days = 365) -> None:
    """Add a client secret to a principal; prints it once."""
    def add(directory: Any) -> dict[str, Any]:
        p = _find(directory, principal)
        s = directory.add_secret(p.object_id, days)
        return {"client_id": p.client_id, "secret_id": s.credential_id,
                "client_secret": s.client_secret, "secret_expires": s.expires}
    typer.echo(json.dumps(_directory_call(data_dir, add, "ServicePrincipalCredentialAdd"),
                          indent=2))


@secret_app.command("remove")
def secret_remove(principal: str, secret_id: str, data_dir: DataDir = None) -> None:
    """Remove (revoke) one client secret of a principal."""
    def remove(directory: Any) -> bool:
        return bool(directory.remove_secret(_find(directory, principal).object_id, secret_id))
    if not _directory_call(data_dir, remove, "ServicePrincipalCredentialRemove"):
        typer.echo(f"error: principal has no secret '{secret_id}'", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps({"removed": secret_id}))


@role_app.command("assign")
def role_assign(
    principal: Annotated[str, typer.Option(help="Object id, client id or name.")],
    role: Annotated[str, typer.Option(help="Role name or GUID, e.g. 'Key Vault Secrets User'.")],
    scope: Annotated[str, typer.Option(
        # Square brackets are escaped: the help is rendered as Rich markup.
        help="/, /vaults/NAME, /vaults/NAME/secrets\\[/NAME]..., or an ARM scope: "
        "/subscriptions/ID\\[/resourceGroups/RG\\[/providers/Microsoft.KeyVault/vaults/"
        "NAME...]]")
                     ] = "/",
    data_dir: DataDir = None,
) -> None:
    """Give a principal a role at a scope (an ARM scope is stored in its internal form)."""
    from openkeyvault.access.control import arm_to_internal, internal_to_arm
    from openkeyvault.access.rbac import RbacError
    from openkeyvault.cli.acting import perform
    from openkeyvault.deployment import Deployment

    d = Deployment.open(_settings(data_dir))
    try:
        p = _find(d.directory, principal)
        # Authorized where it is made (an ARM scope in its internal form), for that role.
        internal = arm_to_internal(scope) if scope.lower().startswith("/subscriptions/") \
            else scope
        wanted = d.rbac.definitions.find(role)
        r = perform(d, "RoleAssignmentCreate", lambda: d.rbac.assign(p.object_id, role, scope),
                    scope=internal or "/", assigning=wanted.id if wanted else None)
        found = d.rbac.definitions.get(r.role_definition_id)
        arm = internal_to_arm(r.scope, d.vaults.placement_of)
    except RbacError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        d.close()
    typer.echo(json.dumps({"id": r.id, "principal_id": r.principal_id, "scope": r.scope,
                           "arm_scope": arm, "role_definition_id": r.role_definition_id,
                           "role": found.name if found else None}, indent=2))


@role_app.command("list")
def role_list(
    data_dir: DataDir = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
) -> None:
    """List role assignments: each scope in its internal and its ARM form."""
    from openkeyvault.access.control import internal_to_arm
    from openkeyvault.cli.readonly import reading

    with reading(_settings(data_dir)) as d:
        find = d.rbac.definitions.get
        rows = [{"id": r.id, "principal_id": r.principal_id, "scope": r.scope,
                 "arm_scope": internal_to_arm(r.scope, d.vaults.placement_of),
                 "role_definition_id": r.role_definition_id,
                 "role": (f.name if (f := find(r.role_definition_id)) else None)}
                for r in d.rbac.all()]
    if output == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table("id", "principal", "role", "scope", "ARM scope")
    for r in rows:
        table.add_row(r["id"], r["principal_id"], r["role"] or r["role_definition_id"], r["scope"],
                      r["arm_scope"])
    _print_table(table)


@role_app.command("remove")
def role_remove(assignment_id: str, data_dir: DataDir = None) -> None:
    """Remove a role assignment."""
    from openkeyvault.cli.acting import perform
    from openkeyvault.deployment import Deployment

    d = Deployment.open(_settings(data_dir))
    try:
        found = d.rbac.get(assignment_id)
        removed = perform(d, "RoleAssignmentDelete", lambda: d.rbac.remove(assignment_id),
                          scope=found.scope if found else "/",
                          assigning=found.role_definition_id if found else None)
    finally:
        d.close()
    if not removed:
        typer.echo(f"error: no role assignment '{assignment_id}'", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps({"removed": assignment_id}))


def _definitions_call(data_dir: Path | None, fn: Any, operation: str | None = None) -> Any:
    """`fn(d.rbac.definitions)`; a change as `operation` (cli/acting.py), at `/`."""
    from openkeyvault.access.rbac import RbacError
    from openkeyvault.cli.acting import perform
    from openkeyvault.deployment import Deployment

    d = Deployment.open(_settings(data_dir))
    try:
        if operation is None:
            return fn(d.rbac.definitions)
        return perform(d, operation, lambda: fn(d.rbac.definitions))
    except RbacError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        d.close()


@definition_app.command("list")
def role_definition_list(
    data_dir: DataDir = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
) -> None:
    """List role definitions: the built-in roles and the custom ones (JSON: the wire shape)."""
    from openkeyvault.api.rbac import definition

    found = _definitions_call(data_dir, lambda defs: [definition(r) for r in defs.all()])
    if output == "json":
        typer.echo(json.dumps(found, indent=2))
        return
    from rich.table import Table

    table = Table("name (GUID)", "role name", "type", "data actions")
    for r in found:
        props = r["properties"]
        actions = [a for p in props["permissions"] for a in p["dataActions"]]
        table.add_row(r["name"], props["roleName"], props["type"], str(len(actions)))
    _print_table(table)


@definition_app.command("create")
def role_definition_create(
    file: Annotated[Path, typer.Argument(help="JSON file: {\"name\": GUID (optional), "
                                         "\"properties\": {roleName, description, "
                                         "permissions, assignableScopes}}.")],
    data_dir: DataDir = None,
) -> None:
    """Create or replace a custom role definition from a JSON file in the wire shape."""
    import uuid

    from openkeyvault.api.models import decode
    from openkeyvault.api.models.rbac import RoleDefinitionCreateParameters
    from openkeyvault.api.rbac import definition
    from openkeyvault.vault.accesscontrol import definition_document
    from openkeyvault.vault.errors import BadParameter

    try:
        raw = file.read_bytes()
        body = json.loads(raw)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot read {file}: {exc}", err=True)
        raise typer.Exit(1) from None
    if not isinstance(body, dict):
        typer.echo("error: the file must hold a JSON object", err=True)
        raise typer.Exit(1)
    try:  # the same request model as the API's PUT roleDefinitions/{name}
        request = decode(raw, RoleDefinitionCreateParameters).to_request()
    except BadParameter as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    name = body.get("name") or str(uuid.uuid4())
    created = _definitions_call(
        data_dir, lambda defs: definition(defs.set(str(name),
                                                   definition_document(request))[0]),
        "RoleDefinitionSet")
    typer.echo(json.dumps(created, indent=2))


@definition_app.command("delete")
def role_definition_delete(definition_id: str, data_dir: DataDir = None) -> None:
    """Delete a custom role definition (refused while it is assigned)."""
    _definitions_call(data_dir, lambda defs: defs.delete(definition_id),
                      "RoleDefinitionDelete")
    typer.echo(json.dumps({"deleted": definition_id}))


def main(args: list[str] | None = None, prog_name: str | None = None) -> None:
    """The `okv` entry point. `args` and `prog_name` (default: the process's own) let the
    same entry, with its one-line fatal errors, run inside another program."""
    import sys

    from openkeyvault.cli import acting
    from openkeyvault.storage.errors import StartupRefused, StorageError

    acting.ARGV[:] = sys.argv[1:] if args is None else args
    try:
        app(args=args, prog_name=prog_name)
    except StartupRefused as exc:  # the data directory is not fit to use: one line
        typer.echo(f"okv: cannot open the deployment: {exc}", err=True)
        raise SystemExit(78) from None  # EX_CONFIG: the operator must act
    except StorageError as exc:  # full, read-only or failing disk
        typer.echo(f"okv: storage: {exc}", err=True)
        raise SystemExit(75) from None  # EX_TEMPFAIL: may work once the disk does
