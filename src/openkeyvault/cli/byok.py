"""`okv byok`: a .byok transfer blob from a private key file and a key-exchange key's
public key, for bringing a key into a Premium vault's HSM without a vendor tool
(docs/hsm.md, "Bring your own key"). Runs offline: it talks to no server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer


def register(app: typer.Typer) -> None:
    @app.command("byok")
    def byok(
        key: Annotated[Path, typer.Option(
            "--key", help="The private key to bring: PEM or DER (PKCS#8, PKCS#1, SEC 1); "
            "RSA 2048/3072/4096 or EC P-256, P-256K, P-384, P-521.")],
        kek: Annotated[Path, typer.Option(
            "--kek", help="The key-exchange key's public key: PEM (`az keyvault key "
            "download`) or its JSON (`az keyvault key show`, the SDK's key).")],
        output: Annotated[Path, typer.Option("--output", "-o", help="The .byok file.")],
        kek_id: Annotated[str | None, typer.Option(
            "--kek-id", help="The KEK's key id with its version (read from the JSON when "
            "it has one).")] = None,
        password_file: Annotated[Path | None, typer.Option(
            "--password-file", help="A file holding the key file's password.")] = None,
    ) -> None:
        """Wrap a private key for import into an HSM (CKM_RSA_AES_KEY_WRAP)."""
        from openkeyvault import __version__
        from openkeyvault.crypto import transfer

        try:
            password = password_file.read_bytes().rstrip(b"\r\n") if password_file else None
            private = transfer.load_private_key(key.read_bytes(), password)
            kek_public, named = transfer.load_kek(kek.read_bytes())
        except OSError as exc:
            _fail(f"cannot read {exc.filename}: {exc.strerror}")
        except transfer.TransferError as exc:
            _fail(str(exc))
        kid = kek_id or named
        if not kid:
            _fail("the KEK file names no key id: give --kek-id")
        if kek_id and named and kek_id != named:
            _fail(f"--kek-id differs from the kid in {kek}")
        try:
            blob = transfer.transfer_blob(kek_public, kid, private,
                                          f"okv byok {__version__}; pyca/cryptography")
        except transfer.TransferError as exc:
            _fail(str(exc))
        kty, crv = transfer.key_type(private)
        del private
        try:
            output.write_bytes(blob)
        except OSError as exc:
            _fail(f"cannot write {output}: {exc.strerror}")
        typer.echo(f"wrote {output}: {kty}{' ' + crv if crv else ''}, wrapped to {kid}")
        typer.echo(f"import it: az keyvault key import --vault-name VAULT --name NAME "
                   f"--byok-file {output} --kty {kty}"
                   + (f" --curve {crv}" if crv else ""))


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
