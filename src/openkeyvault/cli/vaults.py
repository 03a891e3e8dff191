"""`okv vault create|list|show|update|delete|recover|purge`: the control plane's vault
lifecycle (vault/vaults.py, the service behind the management API) from the command line.

Each command opens the deployment's storage (safe while the server runs: the server sees
the change on its next request) and prints a Rich table, or with `--output json` the ARM
resource shapes the management API answers. A vault is named by its name alone (unique in
the deployment); its subscription and resource group are looked up; a managed HSM pool's
name is refused (`okv hsm`, cli/hsms.py, serves pools through the same class). A refusal
prints `error: ...` on stderr and exits with code 2, changing nothing. Each change is the
management API's operation (VaultPut, VaultPatch, VaultDelete, DeletedVaultPurge),
authorized and audited as cli/acting.py says.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from openkeyvault.config import Settings

if TYPE_CHECKING:  # imported when a command runs: `okv --help` stays quick
    from rich.table import Table

SettingsFor = Callable[[Path | None], Settings]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory.")]
Output = Annotated[str, typer.Option("--output", "-o", help="table or json.")]
Tags = Annotated[list[str] | None, typer.Option(
    "--tag", help="A tag KEY=VALUE (repeatable).")]
MAX_CLI_TAGS = 50
REFUSED = 2


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(REFUSED)


def parse_tags(given: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in given or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--tag takes KEY=VALUE, not '{item[:80]}'")
        out[key.strip()] = value
    if len(out) > MAX_CLI_TAGS:
        fail(f"at most {MAX_CLI_TAGS} tags")
    return out


def _output(value: str) -> str:
    if value not in ("table", "json"):
        fail(f"--output is table or json, not '{value[:20]}'")
    return value


# What each kind of resource (a vault row's kind) is called, and the command managing it.
NOUNS = {"vault": ("vault", "okv vault"), "managedHsm": ("managed HSM pool", "okv hsm")}


class Vaults:
    """The deployment's VaultService, with a vault found by name alone. A subclass serves
    another kind of resource through its service (`okv hsm`: cli/hsms.py); a name held by
    a resource of another kind is refused as such."""

    def __init__(self, d: Any) -> None:
        self.d = d
        self.service = self.service_of(d)
        self.noun = NOUNS[self.service.KIND][0]

    @staticmethod
    def service_of(d: Any) -> Any:
        return d.vaults

    def perform(self, operation: str, act: Callable[[], Any], name: str,
                placement: tuple[str, str] | None = None) -> Any:
        """`act` as `operation` on resource `name` (cli/acting.py); `placement`: a new
        resource's subscription and resource group."""
        from openkeyvault.cli.acting import perform

        return perform(self.d, operation, act, vault=name, placement=placement,
                       kind=self.service.KIND)

    def place(self, name: str) -> tuple[str, str]:
        """The subscription and resource group of the resource `name`, live or deleted;
        refused unless it is of this kind."""
        kind = self.service.kind_of(name)
        if kind is None:
            fail(f"no {self.noun} named '{name[:24]}'")
        if kind != self.service.KIND:
            fail(other_kind(name, kind, self.service.KIND))
        where = self.service.placement_of(name)
        assert where is not None
        return str(where[0]), str(where[1])

    def live(self, name: str) -> dict[str, Any]:
        sub, rg = self.place(name)
        return self.service.get(sub, rg, name)  # type: ignore[no-any-return]

    def deleted(self, name: str) -> dict[str, Any] | None:
        sub, _ = self.place(name)
        return next((v for v in self.service.list_deleted(sub)
                     if v["name"].lower() == name.lower()), None)

    def all(self, deleted: bool, subscription: str | None,
            resource_group: str | None) -> list[dict[str, Any]]:
        from openkeyvault.storage.placement import Placement, PlacementStore
        from openkeyvault.vault.vaults import DEFAULT_LOCATION, DEFAULT_RESOURCE_GROUP

        if subscription is not None:
            if deleted:
                found = self.service.list_deleted(subscription)
                return [v for v in found if resource_group is None
                        or _deleted_group(v).lower() == resource_group.lower()]
            return self.service.list(subscription, resource_group)  # type: ignore[no-any-return]
        default = Placement(self.service.default_subscription(), DEFAULT_RESOURCE_GROUP,
                            DEFAULT_LOCATION, self.d.tenant_id)
        placed = PlacementStore(self.d.engines).list(default, deleted=deleted)
        out = []
        for p in placed:
            pl = p.placement
            if p.vault.kind != self.service.KIND:  # only this kind's resources are listed
                continue
            if resource_group is not None and pl.resource_group.lower() != \
                    resource_group.lower():
                continue
            if deleted:
                out.append(self.service.get_deleted(pl.location, p.vault.name, pl.subscription))
            else:
                out.append(self.service.get(pl.subscription, pl.resource_group, p.vault.name))
        return out


def other_kind(name: str, kind: str, wanted: str) -> str:
    """The refusal of a name held by a resource of `kind` where one of `wanted` is meant."""
    noun, command = NOUNS.get(kind, (kind, "okv"))
    return f"'{name[:24]}' is a {noun}, not a {NOUNS[wanted][0]}: manage it with '{command}'"


def _group_of(resource_id: str) -> str:
    parts = resource_id.split("/")
    return parts[4] if len(parts) > 4 else ""


def _deleted_group(v: dict[str, Any]) -> str:
    """The resource group a deleted vault (`vaultId`) or pool (`mhsmId`) was in."""
    p = v["properties"]
    return _group_of(p.get("vaultId") or p.get("mhsmId") or "")


@contextmanager
def opened(settings_for: SettingsFor, data_dir: Path | None, read_only: bool = False,
           resources: type[Vaults] = Vaults) -> Iterator[Vaults]:
    """The deployment's vaults (or the resources of `resources`' kind); a domain refusal
    becomes `error: ...` and exit code 2. `read_only`: through the lighter view where it
    can be used (cli/readonly.py)."""
    from openkeyvault.cli.readonly import open_readonly
    from openkeyvault.vault.errors import DomainError

    settings = settings_for(data_dir)
    d: Any = open_readonly(settings) if read_only else None
    if d is None:
        from openkeyvault.deployment import Deployment

        d = Deployment.open(settings)
    try:
        yield resources(d)
    except DomainError as exc:
        fail(exc.message)
    finally:
        d.close()


def _table(*columns: str, **kw: Any) -> Table:
    from rich.table import Table

    return Table(*columns, **kw)


def _print(table: Table) -> None:
    from rich.console import Console

    Console(width=200).print(table)


def _yes(value: object) -> str:
    return "yes" if value else "no"


def show_vaults(found: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        typer.echo(json.dumps(found, indent=2))
        return
    table = _table("name", "resource group", "location", "sku", "permission model",
                  "retention (days)", "purge protection", "vault URI")
    for v in found:
        p = v["properties"]
        rg = v["id"].split("/")[4]
        table.add_row(v["name"], rg, v["location"], p["sku"]["name"],
                      "RBAC" if p.get("enableRbacAuthorization") else "access policies",
                      str(p["softDeleteRetentionInDays"]),
                      _yes(p.get("enablePurgeProtection")), p["vaultUri"])
    _print(table)


def host_note(vault_uri: str) -> None:
    """On stderr: the hosts line a new vault's name needs where it does not resolve."""
    from urllib.parse import urlsplit

    from openkeyvault.cli.hosts import hosts_note

    host = urlsplit(vault_uri).hostname
    for line in hosts_note(host) if host else []:
        typer.echo(line, err=True)


def show_deleted(found: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        typer.echo(json.dumps(found, indent=2))
        return
    table = _table("name", "resource group", "location", "deleted", "scheduled purge",
                  "purge protection")
    for v in found:
        p = v["properties"]
        table.add_row(v["name"], _deleted_group(v), p["location"], p["deletionDate"],
                      p["scheduledPurgeDate"], _yes(p.get("purgeProtectionEnabled")))
    _print(table)


def show_vault(v: dict[str, Any], output: str) -> None:
    if output == "json":
        typer.echo(json.dumps(v, indent=2))
        return
    p = v["properties"]
    acls = p.get("networkAcls") or {}
    table = _table("property", "value", show_header=False)
    for key, value in (
        ("name", v["name"]), ("id", v["id"]), ("location", v["location"]),
        ("vault URI", p["vaultUri"]), ("tenant", p["tenantId"]), ("sku", p["sku"]["name"]),
        ("permission model",
         "RBAC" if p.get("enableRbacAuthorization") else "access policies"),
        ("access policies", str(len(p.get("accessPolicies") or []))),
        ("network default action", str(acls.get("defaultAction", "Allow"))),
        ("IP rules", ", ".join(r["value"] for r in acls.get("ipRules") or []) or "-"),
        ("soft-delete retention (days)", str(p["softDeleteRetentionInDays"])),
        ("purge protection", _yes(p.get("enablePurgeProtection"))),
        ("tags", ", ".join(f"{k}={val}" for k, val in (v.get("tags") or {}).items()) or "-"),
    ):
        table.add_row(key, value)
    _print(table)


def register(vault_app: typer.Typer, settings_for: SettingsFor) -> None:
    """Add the lifecycle commands to `okv vault`."""

    @vault_app.command("create")
    def vault_create(
        name: str,
        data_dir: DataDir = None,
        sku: Annotated[str, typer.Option(help="standard or premium.")] = "standard",
        retention_days: Annotated[int, typer.Option(
            help="Soft-delete retention, 7-90 days (fixed once created).")] = 90,
        purge_protection: Annotated[bool, typer.Option(
            "--purge-protection", help="Refuse purges until the retention ends (cannot be "
            "turned off).")] = False,
        access_policies: Annotated[bool, typer.Option(
            "--access-policies", help="Authorize by access policies instead of role "
            "assignments.")] = False,
        subscription: Annotated[str | None, typer.Option(
            help="Subscription id (default: the deployment's default subscription).")] = None,
        resource_group: Annotated[str, typer.Option(help="Resource group.")] = "default",
        location: Annotated[str, typer.Option(help="Location.")] = "local",
        tag: Tags = None,
        output: Output = "table",
    ) -> None:
        """Create a vault, reachable at https://NAME.vault.DOMAIN:PORT/."""
        from openkeyvault.vault import controlrequests as c
        from openkeyvault.vault.requests import UNSET

        output = _output(output)
        tags = parse_tags(tag)
        with opened(settings_for, data_dir) as vaults:
            s = vaults.service
            free = s.check_name_availability(name)
            if not free["nameAvailable"]:
                fail(free["message"])
            request = c.VaultCreateOrUpdate(location, tags or UNSET, c.VaultSettings(
                tenant_id=vaults.d.tenant_id, sku=c.Sku("A", sku),
                soft_delete_retention_in_days=retention_days,
                enable_rbac_authorization=not access_policies,
                enable_purge_protection=True if purge_protection else None))
            sub = subscription or s.default_subscription()
            created, _ = vaults.perform(
                "VaultPut", lambda: s.create_or_update(sub, resource_group, name, request),
                name, placement=(sub, resource_group))
        show_vault(created, output)
        host_note(created["properties"]["vaultUri"])

    @vault_app.command("list")
    def vault_list(
        data_dir: DataDir = None,
        deleted: Annotated[bool, typer.Option(
            "--deleted", help="List soft-deleted vaults instead.")] = False,
        subscription: Annotated[str | None, typer.Option(
            help="Only this subscription's vaults.")] = None,
        resource_group: Annotated[str | None, typer.Option(
            help="Only this resource group's vaults.")] = None,
        output: Output = "table",
    ) -> None:
        """List the vaults (or the deleted vaults) of the deployment."""
        output = _output(output)
        with opened(settings_for, data_dir, read_only=True) as vaults:
            found = vaults.all(deleted, subscription, resource_group)
        (show_deleted if deleted else show_vaults)(found, output)

    @vault_app.command("show")
    def vault_show(name: str, data_dir: DataDir = None, output: Output = "table") -> None:
        """Show a vault: its ARM resource (placement, SKU, access settings, retention)."""
        output = _output(output)
        with opened(settings_for, data_dir, read_only=True) as vaults:
            sub, rg = vaults.place(name)
            gone = vaults.deleted(name)
            if gone is not None:
                fail(f"vault '{gone['name']}' is deleted: 'okv vault recover {gone['name']}' "
                     "brings it back")
            v = vaults.service.get(sub, rg, name)
        show_vault(v, output)

    @vault_app.command("update")
    def vault_update(
        name: str,
        data_dir: DataDir = None,
        purge_protection: Annotated[bool, typer.Option(
            "--purge-protection", help="Turn purge protection on (it cannot be turned "
            "off).")] = False,
        rbac: Annotated[bool | None, typer.Option(
            "--rbac/--access-policies",
            help="Authorize by role assignments (enableRbacAuthorization) or by the vault's "
            "access policies.")] = None,
        default_action: Annotated[str | None, typer.Option(
            help="Network rules' default action: Allow or Deny.")] = None,
        bypass: Annotated[str | None, typer.Option(
            help="AzureServices or None (stored; no effect here).")] = None,
        tag: Annotated[list[str] | None, typer.Option(
            "--tag", help="Set a tag KEY=VALUE (repeatable; other tags are kept).")] = None,
        output: Output = "table",
    ) -> None:
        """Change a vault: purge protection, permission model, network action, tags."""
        from openkeyvault.vault import controlrequests as c
        from openkeyvault.vault.requests import UNSET

        output = _output(output)
        tags = parse_tags(tag)
        with opened(settings_for, data_dir) as vaults:
            current = vaults.live(name)
            sub, rg = vaults.place(name)
            acls = None
            if default_action is not None or bypass is not None:
                now = current["properties"]["networkAcls"]
                acls = c.NetworkRules(
                    bypass if bypass is not None else now["bypass"],
                    default_action if default_action is not None else now["defaultAction"],
                    [r["value"] for r in now["ipRules"]])
            patch = c.VaultPatch(
                {**(current.get("tags") or {}), **tags} if tags else UNSET,
                c.VaultSettings(enable_purge_protection=True if purge_protection else None,
                                enable_rbac_authorization=rbac, network_acls=acls))
            v = vaults.perform("VaultPatch",
                               lambda: vaults.service.update(sub, rg, name, patch), name)
        show_vault(v, output)

    @vault_app.command("delete")
    def vault_delete(name: str, data_dir: DataDir = None, output: Output = "table") -> None:
        """Delete a vault (soft: recoverable until its retention ends)."""
        output = _output(output)
        with opened(settings_for, data_dir) as vaults:
            sub, rg = vaults.place(name)
            if vaults.deleted(name) is not None:
                fail(f"vault '{name}' is already deleted")
            vaults.perform("VaultDelete", lambda: vaults.service.delete(sub, rg, name), name)
            gone = vaults.deleted(name)
        assert gone is not None
        show_deleted([gone], output)

    @vault_app.command("recover")
    def vault_recover(name: str, data_dir: DataDir = None, output: Output = "table") -> None:
        """Recover a deleted vault with all its objects."""
        output = _output(output)
        with opened(settings_for, data_dir) as vaults:
            sub, rg = vaults.place(name)
            # Azure recovers a vault with a PUT (createMode: recover).
            v = vaults.perform("VaultPut", lambda: vaults.service.recover(sub, rg, name), name)
        show_vault(v, output)

    @vault_app.command("purge")
    def vault_purge(name: str, data_dir: DataDir = None, output: Output = "table") -> None:
        """Purge a deleted vault: destroy its key material and remove it, for good."""
        output = _output(output)
        with opened(settings_for, data_dir) as vaults:
            gone = vaults.deleted(name)
            if gone is None:
                fail(f"vault '{name[:24]}' is not deleted: delete it first")
            sub, _ = vaults.place(name)
            vaults.perform("DeletedVaultPurge", lambda: vaults.service.purge_deleted(
                gone["properties"]["location"], name, sub), name)
        if output == "json":
            typer.echo(json.dumps({"purged": gone["name"]}))
        else:
            typer.echo(f"purged {gone['name']}")
