"""`okv az-setup`: what the Azure CLI (`az`) needs to work against this deployment.

az reaches a cloud through a registered cloud (its endpoints read from the server's
`/metadata/endpoints`) and a login. This command makes (or reuses) a service principal
for the CLI with the roles a CLI user needs (Key Vault Administrator on the data plane,
Owner on the control plane, both at the deployment: the same domain calls as `okv
principal create` and `okv role assign`) and prints the set-up lines, or with `--run`
runs them. Every line is one a user could type; nothing here talks to the server, so it
works while the server is stopped (the commands themselves need it running).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer

from openkeyvault.cli.hosts import resolves
from openkeyvault.config import Settings

CLOUD = "OpenKeyVault"
DEFAULT_PRINCIPAL = "azure-cli"
ROLES = ("Key Vault Administrator", "Owner")
SECRET_DAYS = 365


def _principal(d: Any, name: str) -> tuple[Any, str]:
    """The principal `name` with a new client secret (created when absent), holding ROLES
    at the deployment scope. A new secret each time: earlier ones are never readable."""
    found = d.directory.find(name)
    if found is None:
        principal, secret = d.directory.create(name, SECRET_DAYS)
    else:
        principal, secret = found, d.directory.add_secret(found.object_id, SECRET_DAYS)
    for role in ROLES:
        d.rbac.assign(principal.object_id, role, "/")
    return principal, secret.client_secret


def cloud_commands(settings: Settings, az: str = "az", update: bool = False
                   ) -> list[list[str]]:
    """Register (or, when it exists from an earlier set-up, update) the cloud from the
    server's /metadata/endpoints, make it the active one, and turn off MSAL's instance
    discovery (it would ask login.microsoftonline.com to vouch for this authority)."""
    base = f"{settings.authority}/"
    verb = "update" if update else "register"
    return [[az, "cloud", verb, "-n", CLOUD, "--endpoint-resource-manager", base],
            [az, "cloud", "set", "-n", CLOUD],
            [az, "config", "set", "core.instance_discovery=false", "--only-show-errors"]]


def login_command(tenant: str, client_id: str, secret: str, az: str = "az") -> list[str]:
    # `--password=` keeps any secret (even one starting with "-") a value, not an option.
    return [az, "login", "--service-principal", "-u", client_id, f"--password={secret}",
            "--tenant", tenant, "--output", "none"]


def env(settings: Settings) -> dict[str, str]:
    """What az's process needs in its environment: trust for the local CA."""
    return {"REQUESTS_CA_BUNDLE": str(settings.data_dir / "ca-bundle.pem")}


def script(settings: Settings, tenant: str, client_id: str, secret: str) -> str:
    """The set-up as shell lines (comments start with #, so the output can be eval'd)."""
    lines = [f"# The Azure CLI for OpenKeyVault at https://localhost:{settings.port}/ "
             f"(the client secret below is new and shown once; keep it private)."]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env(settings).items()]
    lines.append(" && ".join(shlex.join(c) for c in cloud_commands(settings)))
    lines.append(shlex.join(login_command(tenant, client_id, secret)))
    lines.append("# Set up before (another port)? Use `az cloud update` in place of "
                 "`az cloud register`. Each shell that runs az needs REQUESTS_CA_BUNDLE.")
    probe = f"{settings.default_vault}.vault.{settings.domain}"
    if not resolves(probe):
        lines.append(f"# *.vault.{settings.domain} does not resolve here: for each vault az "
                     f"uses, add '127.0.0.1 NAME.vault.{settings.domain}' to /etc/hosts.")
    return "\n".join(lines)


def run_setup(settings: Settings, tenant: str, client_id: str, secret: str, az: str) -> None:
    """Run the set-up with `az`; exits non-zero with az's message when a step fails."""
    child_env = {**os.environ, **env(settings)}

    def call(argv: list[str], shown: list[str]) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(argv, env=child_env, capture_output=True, text=True,
                              check=False)
        if done.returncode:
            typer.echo(f"error: {shlex.join(shown)} failed:\n{done.stderr.strip()}", err=True)
            raise typer.Exit(1)
        return done

    shown = cloud_commands(settings, az, update=True)[0]
    if subprocess.run(shown, env=child_env, capture_output=True, check=False).returncode:
        call(cloud_commands(settings, az)[0], cloud_commands(settings)[0])
    for argv in cloud_commands(settings, az)[1:]:
        call(argv, argv)
    call(login_command(tenant, client_id, secret, az), [az, "login", "--service-principal",
                                                         "-u", client_id, "..."])


def register(app: typer.Typer, settings_for: Any) -> None:
    @app.command("az-setup")
    def az_setup(
        data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data directory.")
                            ] = None,
        name: Annotated[str, typer.Option(
            "--name", help="The service principal az logs in as (created when absent).")
                        ] = DEFAULT_PRINCIPAL,
        run: Annotated[bool, typer.Option(
            "--run", help="Run the commands (with `az` from PATH) instead of printing "
            "them.")] = False,
    ) -> None:
        """Set up the Azure CLI for this deployment: a service principal with Key Vault
        Administrator and Owner, then the `az cloud` and `az login` commands (printed, or
        run with --run). Prints a new client secret each time: keep the output private."""
        from openkeyvault.access.directory import DirectoryError
        from openkeyvault.access.rbac import RbacError
        from openkeyvault.deployment import Deployment

        settings: Settings = settings_for(data_dir)
        d = Deployment.open(settings)
        try:
            principal, secret = _principal(d, name)
        except (DirectoryError, RbacError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        finally:
            d.close()
        tenant, client_id = principal.tenant_id, principal.client_id
        if not run:
            typer.echo(script(settings, tenant, client_id, secret))
            return
        az = shutil.which("az")
        if az is None:
            typer.echo("error: `az` is not on PATH (install azure-cli, or run without "
                       "--run and type the commands where az is)", err=True)
            raise typer.Exit(1)
        run_setup(settings, tenant, client_id, secret, az)
        bundle = shlex.quote(env(settings)["REQUESTS_CA_BUNDLE"])
        typer.echo(f"az is logged in to the cloud {CLOUD} as {client_id} (tenant {tenant}). "
                   f"In each shell that runs az: export REQUESTS_CA_BUNDLE={bundle}")
