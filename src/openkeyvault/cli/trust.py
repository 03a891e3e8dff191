"""`okv` commands for the token service's trust: certificate and federated credentials of
principals, trusted external issuers, and the token signing keys. Each change is an
operation of the table, authorized and audited (cli/acting.py)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from openkeyvault.cli.acting import perform
from openkeyvault.cli.settings import settings_for

if TYPE_CHECKING:
    from openkeyvault.deployment import Deployment
    from openkeyvault.storage.records import PrincipalRecord

cert_app = typer.Typer(help="Manage a principal's certificate credentials.", no_args_is_help=True)
federated_app = typer.Typer(help="Manage a principal's federated credentials (workload "
                            "identity).", no_args_is_help=True)
issuer_app = typer.Typer(help="Manage trusted external OpenID Connect issuers.",
                         no_args_is_help=True)
token_app = typer.Typer(help="Manage the token signing keys.", no_args_is_help=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory.")]
Output = Annotated[str, typer.Option("--output", "-o", help="table or json.")]


@contextlib.contextmanager
def _deployment(data_dir: Path | None) -> Iterator[Deployment]:
    """The deployment; a refused change prints its message and exits 1."""
    from openkeyvault.access.directory import DirectoryError
    from openkeyvault.access.issuers import IssuerError
    from openkeyvault.deployment import Deployment

    d = Deployment.open(settings_for(data_dir))
    try:
        yield d
    except (DirectoryError, IssuerError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        d.close()


def _principal(d: Deployment, key: str) -> PrincipalRecord:
    found = d.directory.find(key)
    if found is None:
        typer.echo(f"error: no principal '{key}' (give its object id, client id or name)",
                   err=True)
        raise typer.Exit(1)
    return found


def _iso(when: int) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="seconds")


def _echo(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


# ---- okv principal cert ------------------------------------------------------------
@cert_app.command("add")
def cert_add(
    principal: str,
    cert: Annotated[Path, typer.Option("--cert", help="PEM file with the certificate (a "
                                       "private key in it is ignored and not stored).")],
    days: Annotated[int | None, typer.Option(
        "--days", help="Expire sooner than the certificate does.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Register a certificate: the principal can then authenticate with a client assertion
    signed by its key (CertificateCredential)."""
    try:
        pem = cert.read_bytes()[: 64 * 1024 + 1]
    except OSError:
        typer.echo(f"error: cannot read '{cert}'", err=True)
        raise typer.Exit(1) from None
    with _deployment(data_dir) as d:
        p = _principal(d, principal)
        c = perform(d, "ServicePrincipalCredentialAdd",
                    lambda: d.directory.add_certificate(p.object_id, pem, days))
    _echo({"client_id": p.client_id, "credential_id": c.id, "thumbprint": c.sha1.upper(),
           "thumbprint_sha256": c.sha256.upper(), "subject": c.subject, "expires": c.expires})


@cert_app.command("remove")
def cert_remove(principal: str, credential: Annotated[str, typer.Argument(
        help="The credential id or the certificate's thumbprint (SHA-1 or SHA-256, hex).")],
                data_dir: DataDir = None) -> None:
    """Remove a certificate credential."""
    with _deployment(data_dir) as d:
        oid = _principal(d, principal).object_id
        removed = perform(d, "ServicePrincipalCredentialRemove",
                          lambda: d.directory.remove_credential(oid, credential,
                                                                "certificate"))
    if not removed:
        typer.echo(f"error: principal has no certificate '{credential}'", err=True)
        raise typer.Exit(1)
    _echo({"removed": credential})


# ---- okv principal federated -------------------------------------------------------
@federated_app.command("add")
def federated_add(
    principal: str,
    issuer: Annotated[str, typer.Option(help="The external token's 'iss' (a trusted issuer's "
                                        "URL).")],
    subject: Annotated[str, typer.Option(help="The external token's 'sub', e.g. "
                                         "system:serviceaccount:NAMESPACE:NAME.")],
    audience: Annotated[str, typer.Option(help="The external token's 'aud'.")
                        ] = "api://AzureADTokenExchange",
    data_dir: DataDir = None,
) -> None:
    """Let a trusted issuer's token for SUBJECT act as the principal (workload identity)."""
    with _deployment(data_dir) as d:
        p = _principal(d, principal)
        if d.tokens.issuers.by_issuer(issuer) is None:
            typer.echo(f"warning: '{issuer}' is not a trusted issuer yet (okv issuer add)",
                       err=True)
        f = perform(d, "ServicePrincipalCredentialAdd", lambda: d.directory.add_federated(
            p.object_id, issuer, subject, audience))
    _echo({"client_id": p.client_id, "credential_id": f.id, "issuer": f.issuer,
           "subject": f.subject, "audience": f.audience})


@federated_app.command("remove")
def federated_remove(principal: str, credential_id: str, data_dir: DataDir = None) -> None:
    """Remove a federated credential."""
    with _deployment(data_dir) as d:
        oid = _principal(d, principal).object_id
        removed = perform(d, "ServicePrincipalCredentialRemove",
                          lambda: d.directory.remove_credential(oid, credential_id,
                                                                "federated"))
    if not removed:
        typer.echo(f"error: principal has no federated credential '{credential_id}'",
                   err=True)
        raise typer.Exit(1)
    _echo({"removed": credential_id})


# ---- okv issuer --------------------------------------------------------------------
@issuer_app.command("add")
def issuer_add(
    name: str,
    issuer: Annotated[str, typer.Option(help="Its tokens' 'iss', exactly.")],
    jwks_url: Annotated[str | None, typer.Option(help="HTTPS URL of its JWKS.")] = None,
    jwks_file: Annotated[Path | None, typer.Option(help="A local JWKS file.")] = None,
    audience: Annotated[str | None, typer.Option(
        help="Accept its access tokens on the data plane when 'aud' is this value "
        "(e.g. https://vault.localhost:8443).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Trust an external OpenID Connect issuer."""
    with _deployment(data_dir) as d:
        r = perform(d, "TrustedIssuerPut", lambda: d.tokens.issuers.add(
            name, issuer, jwks_url=jwks_url, jwks_file=jwks_file, audience=audience))
    _echo(_issuer_row(r))


def _issuer_row(r: Any) -> dict[str, Any]:
    return {"name": r.name, "issuer": r.issuer, "jwks_url": r.jwks_url,
            "jwks_file": r.jwks_file, "audience": r.audience, "created": r.created}


@issuer_app.command("list")
def issuer_list(data_dir: DataDir = None, output: Output = "table") -> None:
    """List the trusted issuers."""
    with _deployment(data_dir) as d:
        rows = [_issuer_row(r) for r in d.tokens.issuers.all()]
    if output == "json":
        _echo(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "issuer", "keys from", "audience")
    for r in rows:
        table.add_row(r["name"], r["issuer"], r["jwks_url"] or r["jwks_file"],
                      r["audience"] or "-")
    Console().print(table)


@issuer_app.command("remove")
def issuer_remove(name: str, data_dir: DataDir = None) -> None:
    """Stop trusting an issuer (its tokens are refused from the next request)."""
    with _deployment(data_dir) as d:
        removed = perform(d, "TrustedIssuerDelete", lambda: d.tokens.issuers.remove(name))
    if not removed:
        typer.echo(f"error: no trusted issuer '{name}'", err=True)
        raise typer.Exit(1)
    _echo({"removed": name})


# ---- okv token ---------------------------------------------------------------------
@token_app.command("rotate-key")
def token_rotate_key(
    drop_previous: Annotated[bool, typer.Option(
        "--drop-previous", help="Stop accepting tokens signed by earlier keys at once "
        "(after a key compromise); every client then needs a new token.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Make a new token signing key current. Earlier keys keep verifying the tokens they
    signed until those have expired, unless --drop-previous."""
    with _deployment(data_dir) as d:
        kid = perform(d, "SigningKeyRotate",
                      lambda: d.tokens.keys.rotate(drop_previous=drop_previous))
    _echo({"kid": kid, "dropped_previous": drop_previous})


@token_app.command("keys")
def token_keys(data_dir: DataDir = None, output: Output = "table") -> None:
    """List the token signing keys."""
    with _deployment(data_dir) as d:
        retain = d.tokens.keys.retain_seconds
        current = d.tokens.jwk["kid"]
        rows: list[dict[str, Any]] = [
            {"kid": r.kid, "current": r.kid == current, "created": r.created,
             "retired": r.retired,
             "verifies_until": None if r.retired is None else r.retired + retain}
            for r in d.identities.signing_keys()]
    if output == "json":
        _echo(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("kid", "current", "created", "verifies until")
    for r in rows:
        table.add_row(r["kid"], "yes" if r["current"] else "",
                      _iso(r["created"]),
                      "-" if r["verifies_until"] is None else _iso(r["verifies_until"]))
    Console().print(table)
