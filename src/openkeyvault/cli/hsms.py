"""`okv hsm create|list|show|delete|recover|purge`: managed HSM pools (vault/managedhsms.py,
the service behind the management API's `managedHSMs`) from the command line, as
`okv vault` manages vaults (cli/vaults.py).

A pool is named by its name alone (unique among the deployment's vaults and pools); a
vault's name is refused, as `okv vault` refuses a pool's. Each change is the management
API's operation (ManagedHsmPut, ManagedHsmDelete, DeletedManagedHsmPurge), authorized and
audited as cli/acting.py says; a refusal prints `error: ...` on stderr and exits with code
2, changing nothing. Output: a Rich table, or with `--output json` the ARM resources the
management API answers (`Microsoft.KeyVault/managedHSMs`, `deletedManagedHSMs`).

A pool's initial administrators (`--administrator`: object id, client id or name) hold
Managed HSM Administrator in the pool's local RBAC, and, as on Azure, no key permission:
`create` says how to give one. Without `--administrator` the dev identity of a dev data
directory is the administrator; a production deployment (one `okv init` made) has none to
give, and `create` is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from openkeyvault.cli.vaults import (
    DataDir,
    Output,
    SettingsFor,
    Tags,
    Vaults,
    _output,
    _print,
    _table,
    _yes,
    fail,
    host_note,
    opened,
    parse_tags,
    show_deleted,
)

# The role that gives a pool's principals the use of its keys (vault/hsmrbac.py's roles).
KEY_ROLE = "Managed HSM Crypto User"


class Pools(Vaults):
    """The deployment's ManagedHsmService, with a pool found by name alone."""

    @staticmethod
    def service_of(d: Any) -> Any:
        return d.managed_hsms

    def administrators(self, given: list[str] | None) -> list[str]:
        """The object ids of the principals `given` (object id, client id or name), else
        the dev identity of a dev deployment; refused when one is unknown, or when none is
        given on a production deployment."""
        if not given:
            if production(self.d):
                fail("give the pool's administrators with --administrator (object id, "
                     "client id or name): a production deployment has no dev identity to "
                     "make its administrator")
            return [self.d.dev_principal.object_id]
        out: list[str] = []
        for key in given:
            found = self.d.directory.find(key)
            if found is None:
                fail(f"--administrator: no principal '{key[:64]}' (give its object id, "
                     "client id or name)")
            out.append(found.object_id)
        return list(dict.fromkeys(out))

    def names_of(self, object_ids: list[str]) -> dict[str, str]:
        """The display names of the principals `object_ids` that are in the directory."""
        out = {}
        for oid in object_ids:
            found = self.d.repo.get_principal(object_id=oid)
            if found is not None:
                out[oid] = found.display_name
        return out


def production(d: Any) -> bool:
    """Whether `d` is a production deployment: opened from its configuration, or made by
    `okv init` (which records the deployment's seal)."""
    from openkeyvault.cli.operator import SEAL_META

    return not d.settings.dev or d.repo.get_meta(SEAL_META) is not None


def key_role_command(name: str, object_id: str) -> str:
    """The az command that gives `object_id` the use of the keys of pool `name`."""
    return (f"az keyvault role assignment create --hsm-name {name} --role \"{KEY_ROLE}\" "
            f"--scope / --assignee-object-id {object_id} "
            "--assignee-principal-type ServicePrincipal")


def _admins(v: dict[str, Any], names: dict[str, str]) -> str:
    ids = v["properties"].get("initialAdminObjectIds") or []
    return ", ".join(f"{i} ({names[i]})" if i in names else i for i in ids) or "-"


def show_pools(found: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        typer.echo(json.dumps(found, indent=2))
        return
    table = _table("name", "resource group", "location", "sku", "administrators",
                   "retention (days)", "purge protection", "HSM URI")
    for v in found:
        p = v["properties"]
        table.add_row(v["name"], v["id"].split("/")[4], v["location"], v["sku"]["name"],
                      str(len(p.get("initialAdminObjectIds") or [])),
                      str(p["softDeleteRetentionInDays"]), _yes(p.get("enablePurgeProtection")),
                      p["hsmUri"])
    _print(table)


def show_pool(v: dict[str, Any], output: str, names: dict[str, str] | None = None) -> None:
    if output == "json":
        typer.echo(json.dumps(v, indent=2))
        return
    p = v["properties"]
    acls = p.get("networkAcls") or {}
    table = _table("property", "value", show_header=False)
    for key, value in (
        ("name", v["name"]), ("id", v["id"]), ("location", v["location"]),
        ("HSM URI", p["hsmUri"]), ("tenant", p["tenantId"]), ("sku", v["sku"]["name"]),
        ("administrators", _admins(v, names or {})),
        ("network default action", str(acls.get("defaultAction", "Allow"))),
        ("public network access", str(p.get("publicNetworkAccess", "Enabled"))),
        ("soft-delete retention (days)", str(p["softDeleteRetentionInDays"])),
        ("purge protection", _yes(p.get("enablePurgeProtection"))),
        ("security domain",
         str((p.get("securityDomainProperties") or {}).get("activationStatus", "-"))),
        ("tags", ", ".join(f"{k}={val}" for k, val in (v.get("tags") or {}).items()) or "-"),
    ):
        table.add_row(key, value)
    _print(table)


def register(hsm_app: typer.Typer, settings_for: SettingsFor) -> None:
    """Add the lifecycle commands to `okv hsm`."""

    @hsm_app.command("create")
    def hsm_create(
        name: str,
        data_dir: DataDir = None,
        administrator: Annotated[list[str] | None, typer.Option(
            "--administrator", help="An initial administrator: object id, client id or name "
            "(repeatable; default: the dev identity of a dev deployment).")] = None,
        retention_days: Annotated[int, typer.Option(
            help="Soft-delete retention, 7-90 days (fixed once created).")] = 90,
        purge_protection: Annotated[bool, typer.Option(
            "--purge-protection", help="Refuse purges until the retention ends (cannot be "
            "turned off).")] = False,
        sku: Annotated[str, typer.Option(
            help="Standard_B1, Custom_B32 or Custom_B6.")] = "Standard_B1",
        subscription: Annotated[str | None, typer.Option(
            help="Subscription id (default: the deployment's default subscription).")] = None,
        resource_group: Annotated[str, typer.Option(help="Resource group.")] = "default",
        location: Annotated[str, typer.Option(help="Location.")] = "local",
        tag: Tags = None,
        output: Output = "table",
    ) -> None:
        """Create a managed HSM pool, reachable at https://NAME.managedhsm.DOMAIN:PORT/."""
        from openkeyvault.vault import controlrequests as c
        from openkeyvault.vault.requests import UNSET

        output = _output(output)
        tags = parse_tags(tag)
        with opened(settings_for, data_dir, resources=Pools) as pools:
            assert isinstance(pools, Pools)
            s = pools.service
            admins = pools.administrators(administrator)
            free = s.check_name_availability(name)
            if not free["nameAvailable"]:
                fail(free["message"])
            request = c.ManagedHsmCreateOrUpdate(
                location, tags or UNSET, c.Sku("B", sku), c.ManagedHsmSettings(
                    tenant_id=pools.d.tenant_id, initial_admin_object_ids=admins,
                    soft_delete_retention_in_days=retention_days,
                    enable_purge_protection=True if purge_protection else None))
            sub = subscription or s.default_subscription()
            created, _ = pools.perform(
                "ManagedHsmPut", lambda: s.create_or_update(sub, resource_group, name, request),
                name, placement=(sub, resource_group))
            names = pools.names_of(created["properties"]["initialAdminObjectIds"])
        show_pool(created, output, names)
        if output == "table":
            typer.echo(f"Note: the administrators hold no key permission until they assign "
                       f"themselves a role such as {KEY_ROLE}: "
                       f"{key_role_command(created['name'], admins[0])}")
        host_note(created["properties"]["hsmUri"])

    @hsm_app.command("activate")
    def hsm_activate(
        name: str,
        certificate: Annotated[list[Path], typer.Option(
            "--certificate", help="A certificate (PEM or DER) whose RSA key (2048 bits or "
            "more) takes one share of the security domain: 3 to 10, repeatable. Keep their "
            "private keys apart: a quorum of them recovers the pool.")],
        file: Annotated[Path, typer.Option(
            "--file", help="Where to write the security domain (not overwritten).")],
        quorum: Annotated[int, typer.Option(
            help="How many of the private keys recover the domain (2 to the number of "
            "certificates).")] = 2,
        data_dir: DataDir = None,
    ) -> None:
        """Activate a pool: download its security domain (as `az keyvault security-domain
        download` does), written to --file; the pool then serves key operations."""
        import base64

        from openkeyvault.access.authorize import Authorizer
        from openkeyvault.cli.acting import acting_principal, perform
        from openkeyvault.crypto.securitydomain import WrappingKeyError, certificate_der
        from openkeyvault.vault.context import Caller
        from openkeyvault.vault.errors import DomainError
        from openkeyvault.vault.securitydomain import SecurityDomainService, WrappingKey

        if file.exists():
            fail(f"{file} exists: the security domain is not written over another file")
        keys = []
        for path in certificate:
            try:
                der = certificate_der(path.read_bytes())
            except OSError as exc:
                fail(f"--certificate {path}: {exc.strerror}")
            except WrappingKeyError as exc:
                fail(f"--certificate {path}: {exc}")
            keys.append(WrappingKey("RSA", (base64.b64encode(der).decode(),)))
        with opened(settings_for, data_dir, resources=Pools) as pools:
            pools.place(name)
            pool = pools.d.repo.get_vault(name)
            if pool is None:
                fail(f"managed HSM pool '{name[:24]}' is deleted: recover it first")
            domain = SecurityDomainService(
                pools.d.repo, pools.d.barrier,
                Authorizer(pools.d.rbac.local_to_resources), pools.d.clock)
            caller = Caller(acting_principal(pools.d), pool)
            try:
                value = perform(pools.d, "SecurityDomainBackup",
                                lambda: domain.download(caller, keys, quorum), vault=name,
                                scope=f"/vaults/{pool.name}", kind=pools.service.KIND)
            except DomainError as exc:
                fail(exc.message)
        file.write_text(value)
        file.chmod(0o600)
        typer.echo(f"managed HSM pool '{name}' activated; its security domain is in {file} "
                   f"(quorum {quorum} of {len(keys)}). Keep it, and the certificates' private "
                   "keys apart: a quorum of them recovers the pool.")

    @hsm_app.command("list")
    def hsm_list(
        data_dir: DataDir = None,
        deleted: Annotated[bool, typer.Option(
            "--deleted", help="List soft-deleted pools instead.")] = False,
        subscription: Annotated[str | None, typer.Option(
            help="Only this subscription's pools.")] = None,
        resource_group: Annotated[str | None, typer.Option(
            help="Only this resource group's pools.")] = None,
        output: Output = "table",
    ) -> None:
        """List the managed HSM pools (or the deleted pools) of the deployment."""
        output = _output(output)
        with opened(settings_for, data_dir, read_only=True, resources=Pools) as pools:
            found = pools.all(deleted, subscription, resource_group)
        (show_deleted if deleted else show_pools)(found, output)

    @hsm_app.command("show")
    def hsm_show(name: str, data_dir: DataDir = None, output: Output = "table") -> None:
        """Show a pool: its ARM resource (placement, SKU, administrators, retention)."""
        output = _output(output)
        with opened(settings_for, data_dir, read_only=True, resources=Pools) as pools:
            assert isinstance(pools, Pools)
            sub, rg = pools.place(name)
            gone = pools.deleted(name)
            if gone is not None:
                fail(f"managed HSM pool '{gone['name']}' is deleted: 'okv hsm recover "
                     f"{gone['name']}' brings it back")
            v = pools.service.get(sub, rg, name)
            names = pools.names_of(v["properties"]["initialAdminObjectIds"])
        show_pool(v, output, names)

    @hsm_app.command("delete")
    def hsm_delete(name: str, data_dir: DataDir = None, output: Output = "table") -> None:
        """Delete a pool (soft: recoverable until its retention ends)."""
        output = _output(output)
        with opened(settings_for, data_dir, resources=Pools) as pools:
            sub, rg = pools.place(name)
            if pools.deleted(name) is not None:
                fail(f"managed HSM pool '{name}' is already deleted")
            pools.perform("ManagedHsmDelete", lambda: pools.service.delete(sub, rg, name),
                          name)
            gone = pools.deleted(name)
        assert gone is not None
        show_deleted([gone], output)

    @hsm_app.command("recover")
    def hsm_recover(name: str, data_dir: DataDir = None, output: Output = "table") -> None:
        """Recover a deleted pool with its keys and role assignments."""
        output = _output(output)
        with opened(settings_for, data_dir, resources=Pools) as pools:
            assert isinstance(pools, Pools)
            sub, rg = pools.place(name)
            # Azure recovers a pool with a PUT (createMode: recover).
            v = pools.perform("ManagedHsmPut", lambda: pools.service.recover(sub, rg, name),
                              name)
            names = pools.names_of(v["properties"]["initialAdminObjectIds"])
        show_pool(v, output, names)

    @hsm_app.command("purge")
    def hsm_purge(name: str, data_dir: DataDir = None, output: Output = "table") -> None:
        """Purge a deleted pool: destroy its key material and remove it, for good."""
        output = _output(output)
        with opened(settings_for, data_dir, resources=Pools) as pools:
            gone = pools.deleted(name)
            if gone is None:
                fail(f"managed HSM pool '{name[:24]}' is not deleted: delete it first")
            sub, _ = pools.place(name)
            pools.perform("DeletedManagedHsmPurge", lambda: pools.service.purge_deleted(
                gone["properties"]["location"], name, sub), name)
        if output == "json":
            typer.echo(json.dumps({"purged": gone["name"]}))
        else:
            typer.echo(f"purged {gone['name']}")
