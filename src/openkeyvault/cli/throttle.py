"""`okv vault throttle NAME`: a vault's own scale of the throttling limits.

A vault that needs more (a build farm's) or less than the deployment's limits gets a
multiplier of them, or none at all (`--off`); the setting is kept in the database, so every
node applies it, within ops/throttle.py's REFRESH_SECONDS and without a restart; a change is
authorized and audited as cli/acting.py says. One number per vault is all it keeps: the
class limits themselves are the deployment's ([throttling]).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated

import typer

from openkeyvault.cli.vaults import DataDir, fail
from openkeyvault.config import Settings


def register(vault_app: typer.Typer, settings_for: Callable[..., Settings]) -> None:
    @vault_app.command("throttle")
    def throttle(
        name: str,
        scale: Annotated[float | None, typer.Option(
            help="Multiply the vault's throttling limits by this (e.g. 2: twice Azure's).")
        ] = None,
        off: Annotated[bool, typer.Option("--off", help="Do not throttle this vault.")] = False,
        reset: Annotated[bool, typer.Option(
            "--reset", help="Back to the deployment's limits.")] = False,
        data_dir: DataDir = None,
    ) -> None:
        """Show or set a vault's (or managed HSM pool's) scale of the throttling limits."""
        from openkeyvault.cli.acting import perform
        from openkeyvault.deployment import Deployment
        from openkeyvault.ops.limits import LIMITS
        from openkeyvault.storage.throttles import ThrottleStore, parse_scale

        if (scale is not None) + off + reset > 1:
            fail("give one of --scale, --off and --reset")
        if scale is not None and parse_scale(str(scale)) in (None, False):
            fail("--scale must be a positive number")
        d = Deployment.open(settings_for(data_dir))
        try:
            vault = d.repo.get_vault(name.lower())
            if vault is None:
                fail(f"no vault or managed HSM pool named '{name[:40]}'")
            store = ThrottleStore(d.engines)
            change = (lambda: store.set_vault_scale(vault.name, scale)) if scale is not None \
                else (lambda: store.set_vault_scale(vault.name, None)) if off \
                else (lambda: store.reset_vault_scale(vault.name)) if reset else None
            if change is not None:
                perform(d, "VaultThrottleSet", change, vault=vault.name)
            current = store.vault_scales().get(vault.name, 1.0)
        finally:
            d.close()
        limits = LIMITS.get(vault.kind, {})
        typer.echo(json.dumps({
            "name": vault.name,
            "scale": "off" if current is None else current,
            # Azure's limits per 10 s times the vault's scale, before the deployment's own
            # [throttling] scale and the share of each node.
            "limits": {} if current is None else {c: n * current for c, n in limits.items()},
        }, indent=2))

