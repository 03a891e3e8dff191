"""`okv events subscribe|list|delete`: a vault's Event Grid-style webhook subscriptions.

`subscribe` runs Event Grid's handshake with the endpoint first (ops/webhooks.py) and
stores the subscription only if the endpoint answered it; from then on the vault's new
versions, expiry notices and access policy changes are POSTed there by the server
(ops/events.py). Like the other commands, each opens the deployment's storage (safe
while the server runs). A refusal prints `error: ...` on stderr and exits with code 2.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from openkeyvault.cli.acting import perform
from openkeyvault.cli.settings import settings_for
from openkeyvault.cli.vaults import fail

events_app = typer.Typer(help="Send a vault's events to webhooks (Event Grid schema or "
                              "CloudEvents).", no_args_is_help=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory.")]
Vault = Annotated[str, typer.Option("--vault", help="The vault's name.")]
# Event Grid's rule for an event subscription's name.
NAME = re.compile(r"[A-Za-z0-9-]{3,64}")


@contextmanager
def _deployment(data_dir: Path | None) -> Iterator[Any]:
    from openkeyvault.deployment import Deployment

    d = Deployment.open(settings_for(data_dir))
    try:
        yield d
    finally:
        d.close()


def _vault(d: Any, name: str) -> Any:
    from openkeyvault.vault import names

    vault = d.repo.get_vault(name.lower()) if names.VAULT_NAME.fullmatch(name) else None
    if vault is None:
        fail(f"no vault named '{name[:24]}'")
    if vault.kind != "vault":
        fail(f"'{vault.name}' is a managed HSM pool: pools publish no events")
    return vault


@events_app.command("subscribe")
def subscribe(
    vault: Vault,
    endpoint: Annotated[str, typer.Option("--endpoint", help="The webhook's https URL.")],
    name: Annotated[str | None, typer.Option(
        "--name", help="The subscription's name (3-64 letters, digits, hyphens).")] = None,
    types: Annotated[str | None, typer.Option(
        "--types", help="Event types to send, comma-separated (e.g. SecretNewVersionCreated,"
                        "SecretNearExpiry); default: all.")] = None,
    schema: Annotated[str, typer.Option(
        "--schema", help="eventgrid (Event Grid schema) or cloudevents (CloudEvents 1.0).")
    ] = "eventgrid",
    data_dir: DataDir = None,
) -> None:
    """Subscribe a webhook to a vault's events, after the endpoint passed the handshake."""
    from openkeyvault.ops import events, webhooks
    from openkeyvault.storage.subscriptions import SubscriptionExists

    name = name or f"okv-{secrets.token_hex(4)}"
    if not NAME.fullmatch(name):
        fail("--name is 3 to 64 letters, digits and hyphens")
    if schema.lower() not in events.SCHEMAS:
        fail(f"--schema is eventgrid or cloudevents, not '{schema[:20]}'")
    try:
        wanted = sorted({events.event_type(t) for t in types.split(",") if t.strip()}) \
            if types else None
    except ValueError as exc:
        fail(str(exc))
    if types is not None and not wanted:
        fail("--types names no event type")
    with _deployment(data_dir) as d:
        v = _vault(d, vault)
        try:
            webhooks.check_endpoint(endpoint, d.settings.dev)
        except webhooks.EndpointRefused as exc:
            fail(f"refused endpoint: {exc}")
        if any(s.name.lower() == name.lower() for s in d.events.store.find(v.id)):
            fail(f"vault '{v.name}' already has a subscription named '{name}'")
        kind = events.SCHEMAS[schema.lower()]
        place = d.vaults.placement_of(v.name)
        topic = (f"/subscriptions/{place[0]}/resourceGroups/{place[1]}/providers/"
                 f"Microsoft.KeyVault/vaults/{v.name}") if place else v.name
        ctx = webhooks.tls_context(d.settings.data_dir / "ca.pem" if d.settings.dev else None)

        def add() -> None:  # the handshake too, once authorized
            try:
                webhooks.validate(endpoint, kind, name, topic, ctx, d.clock.now())
            except webhooks.EndpointRefused as exc:
                fail(f"the endpoint failed the subscription handshake: {exc}")
            try:
                d.events.store.add(v.id, name, endpoint, wanted, kind, int(d.clock.now()))
            except SubscriptionExists:
                fail(f"vault '{v.name}' already has a subscription named '{name}'")

        perform(d, "EventSubscriptionPut", add, vault=v.name)
    typer.echo(f"subscribed {name} to the events of vault {v.name} "
               f"({', '.join(t.split('.')[-1] for t in wanted) if wanted else 'all types'})")


@events_app.command("list")
def list_subscriptions(
    vault: Annotated[str | None, typer.Option("--vault", help="Only this vault's.")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    data_dir: DataDir = None,
) -> None:
    """List event subscriptions (endpoints without their query string)."""
    from openkeyvault.ops.events import iso_time
    from openkeyvault.ops.webhooks import shown

    if output not in ("table", "json"):
        fail(f"--output is table or json, not '{output[:20]}'")
    with _deployment(data_dir) as d:
        found = d.events.store.find(_vault(d, vault).id if vault else None)
        waiting = d.events.store.waiting()
    rows = [{"vault": s.vault_name, "name": s.name, "endpoint": shown(s.endpoint),
             "schema": s.schema,
             "eventTypes": list(s.event_types) if s.event_types else None,
             "created": iso_time(s.created)} for s in found]
    if output == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("vault", "name", "endpoint", "schema", "event types", "created")
    for r in rows:
        types = r["eventTypes"]
        table.add_row(r["vault"], r["name"], r["endpoint"], r["schema"],
                      ", ".join(t.split(".")[-1] for t in types) if types else "all",
                      r["created"])
    console = Console(width=200)
    console.print(table)
    console.print(f"{waiting} event(s) waiting for delivery")


@events_app.command("delete")
def delete(
    vault: Vault,
    name: Annotated[str, typer.Option("--name", help="The subscription's name.")],
    data_dir: DataDir = None,
) -> None:
    """Delete a subscription; its events not yet delivered are dropped."""
    with _deployment(data_dir) as d:
        v = _vault(d, vault)
        if not perform(d, "EventSubscriptionDelete", lambda: d.events.store.delete(v.id, name),
                       vault=v.name):
            fail(f"vault '{v.name}' has no subscription named '{name[:64]}'")
    typer.echo(f"deleted subscription {name} of vault {v.name}")
