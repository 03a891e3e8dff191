"""`okv attestation`: the deployment's key attestation root, checking an attestation
offline (docs/hsm.md, "Key attestation"), and the dev attestation authority that signs
attestation tokens for secure key release (docs/configuration.md, "Secure key release").

`root` reads the root certificate from the deployment's database (no root key needed,
so a sealed deployment can publish it too); `verify` checks the KeyBundle the
attestation endpoint returned and talks to no server; `issue` and `authority` use the
dev authority's key in the data directory (made on first use) and talk to no server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from openkeyvault.cli.settings import settings_for

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory.")]
HSM_KEYSTORE = "pkcs11"  # the keystore whose attestation root is published

attestation_app = typer.Typer(help="Key attestation (the root to publish, offline "
                              "verification) and the dev attestation authority (tokens for "
                              "secure key release).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(attestation_app, name="attestation")


@attestation_app.command("root")
def root(
    data_dir: DataDir = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="A production deployment's TOML configuration file (its "
        "database).")] = None,
) -> None:
    """Print the attestation root certificate (PEM).

    It is made in the HSM with the first key attestation; clients verify attestations
    against it (`okv attestation verify --root`).
    """
    from openkeyvault.crypto.attestation import root_pem
    from openkeyvault.storage.db import open_database
    from openkeyvault.storage.repository import Repository
    from openkeyvault.vault.attestation import meta_key

    if config is not None and data_dir is not None:
        _fail("give --data-dir or --config, not both")
    if config is not None:
        from openkeyvault.cli.operator import settings_of

        settings = settings_of(config)
    else:
        settings = settings_for(data_dir)
    if settings.database_url is None and not settings.db_path.exists():
        _fail(f"no deployment in {settings.data_dir} (start `okv server` there first)")
    engines = open_database(settings.database_url or settings.db_path)
    try:
        stored = Repository(engines).get_meta(meta_key(HSM_KEYSTORE))
    finally:
        engines.dispose()
    if stored is None:
        _fail("this deployment has no attestation root yet: it is made in the HSM with the "
              "first key attestation (GET /keys/NAME/VERSION/attestation of an HSM key)")
    try:
        typer.echo(root_pem(stored).decode(), nl=False)
    except ValueError as exc:
        _fail(str(exc))


@attestation_app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(
        help="The JSON KeyBundle GET /keys/NAME/VERSION/attestation returned.")],
    root_file: Annotated[Path | None, typer.Option(
        "--root", help="The attestation root to trust (PEM, from `okv attestation root`); "
        "without it, the chain is checked against the root it carries.")] = None,
) -> None:
    """Check a key attestation offline (no server).

    Checks the certificate chain, both signed statements, and that they describe the
    bundle's key. Exit 0 when every check holds, 1 (with the check that failed) when
    one does not.
    """
    import datetime as dt

    from openkeyvault.crypto.attestation_check import AttestationInvalid, load_root
    from openkeyvault.crypto.attestation_check import verify as check

    try:
        bundle: Any = json.loads(file.read_bytes())
    except OSError as exc:
        _fail(f"cannot read {exc.filename}: {exc.strerror}")
    except (ValueError, RecursionError):
        _fail(f"{file} is not JSON")
    trusted = None
    if root_file is not None:
        try:
            trusted = load_root(root_file.read_bytes())
        except OSError as exc:
            _fail(f"cannot read {exc.filename}: {exc.strerror}")
        except ValueError:
            _fail(f"{root_file} holds no PEM certificate")
    try:
        facts = check(bundle, dt.datetime.now(dt.UTC), trusted)
    except AttestationInvalid as exc:
        typer.echo(f"attestation invalid: {exc}", err=True)
        raise typer.Exit(1) from None
    token = facts.token
    typer.echo(f"attestation valid: {facts.kid} ({facts.kty})")
    typer.echo(f"  sensitive: {_yes(facts.sensitive)}")
    typer.echo(f"  extractable: {_yes(facts.extractable)}")
    typer.echo(f"  never extractable: {_yes(facts.never_extractable)}")
    typer.echo(f"  generated in the HSM: {_yes(facts.generated_in_hsm)}")
    typer.echo(f"  token: {token.get('label')} ({token.get('manufacturer')}, "
               f"{token.get('model')}, serial {token.get('serial')})")
    typer.echo(f"  root: {facts.root.subject.rfc4514_string()}"
               + (" (the one given)" if trusted is not None else " (not checked against a "
                  "trusted root: give --root)"))


@attestation_app.command("issue")
def issue(
    claim: Annotated[list[str] | None, typer.Option(
        "--claim", metavar="NAME=VALUE",
        help="A claim of the token (repeatable). VALUE is read as JSON when it is JSON "
        "(true, 5, \"5\", an object), else as text; a dotted NAME "
        "(x-ms-isolation-tee.x-ms-attestation-type) makes nested objects.")] = None,
    runtime_key: Annotated[Path | None, typer.Option(
        "--runtime-key", metavar="PATH",
        help="The RSA public key (PEM, or a JWK as JSON) a released key is wrapped to: "
        "the token carries it in x-ms-runtime.keys.")] = None,
    lifetime: Annotated[int, typer.Option(
        min=1, max=30 * 24 * 3600, help="Seconds the token is valid, from now.")] = 8 * 3600,
    data_dir: DataDir = None,
) -> None:
    """Print an attestation token signed by the dev attestation authority.

    A dev server trusts this authority (issuer https://attest.localhost): give the token
    as the target of a key release whose policy names that issuer. No server is needed;
    the authority's key is made in the data directory on first use.
    """
    from openkeyvault.access.dev_attestation import DevAttestationAuthority, DevAttestationError
    from openkeyvault.ops.clock import deployment_clock

    claims: dict[str, Any] = {}
    for item in claim or []:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            _fail(f"--claim takes NAME=VALUE, not {item[:60]!r}")
        try:
            _set_claim(claims, name.strip(), _claim_value(text))
        except ValueError as exc:
            _fail(str(exc))
    key_pem = None
    if runtime_key is not None:
        try:
            key_pem = runtime_key.read_bytes()
        except OSError as exc:
            _fail(f"cannot read {exc.filename}: {exc.strerror}")
    directory = settings_for(data_dir).data_dir
    try:
        token = DevAttestationAuthority(directory, deployment_clock(directory, dev=True)) \
            .issue(claims, key_pem, lifetime)
    except DevAttestationError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot make the dev attestation key in {directory}: {exc.strerror}")
    typer.echo(token)


@attestation_app.command("authority")
def authority(data_dir: DataDir = None) -> None:
    """Print the dev attestation authority's issuer and signing keys (JWKS) as JSON.

    Give them to another deployment's [attestation] authorities to trust it there too.
    """
    from openkeyvault.access.dev_attestation import DevAttestationAuthority, DevAttestationError

    directory = settings_for(data_dir).data_dir
    dev = DevAttestationAuthority(directory)
    try:
        jwks = dev.jwks()
    except DevAttestationError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot make the dev attestation key in {directory}: {exc.strerror}")
    typer.echo(json.dumps({"issuer": dev.issuer, "jwks": jwks}, indent=2))


def _claim_value(text: str) -> Any:
    """JSON when the text is JSON (no NaN or Infinity), else the text itself."""
    def refuse(name: str) -> Any:
        raise ValueError(name)

    try:
        return json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError):
        return text


def _set_claim(claims: dict[str, Any], name: str, value: Any) -> None:
    """claims[a][b][c] = value for the name `a.b.c`."""
    *parents, last = name.split(".")
    if "" in (*parents, last):
        raise ValueError(f"--claim {name}: a claim name has no empty part")
    here = claims
    for part in parents:
        child = here.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"--claim {name}: {part} is already a value, not an object")
        here = child
    here[last] = value


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
