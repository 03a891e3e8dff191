"""The data directory of release 0.1 kept in tests/fixtures/datadir-0.1: how it was made and
what it holds (tests/storage/test_upgrade.py reads it back with the code of today).

Made by running this module with release 0.1's code on the path, the last release whose
database had no schema revisions:

    PYTHONPATH=/path/to/okv-0.1/src python -m tests.storage.datadir_fixture

It starts that release's dev server on a new data directory, fills it through the Azure
SDKs and the `okv` CLI, stops it cleanly (nothing left in the write-ahead log), and copies
only the files an upgrade needs (FILES) into the fixture, with `expected.json`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).parents[1] / "fixtures" / "datadir-0.1"
# What the server needs to reopen a deployment; the rest (TLS CA and server certificate,
# dev.env, server.json) is made again at start.
FILES = ("okv.db", "root.key", "keyring")
SECRETS = {"db-password": ["first value", "second value"], "api-token": ["token of 0.1"]}
SECRET_TAGS = {"made-by": "0.1"}
KEY = "signing-key"
CERTIFICATE = "web-cert"
SIGNED = hashlib.sha256(b"signed by release 0.1").digest()
PRINCIPAL = "fixture-reader"
ROLE = "Key Vault Secrets User"


def expected() -> dict[str, Any]:
    """What the fixture was made with (ids, the principal's secret, a signature)."""
    return json.loads((FIXTURE / "expected.json").read_text())  # type: ignore[no-any-return]


def _fill(server: Any) -> dict[str, Any]:
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.certificates import CertificateClient, CertificatePolicy
    from azure.keyvault.keys import KeyClient
    from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
    from azure.keyvault.secrets import SecretClient

    for k, v in server.env.items():
        os.environ[k] = v
    credential = ManagedIdentityCredential()
    url = server.vault_url()
    secrets = SecretClient(url, credential, verify_challenge_resource=False)
    for name, values in SECRETS.items():
        for value in values:
            secrets.set_secret(name, value, content_type="text/plain", tags=SECRET_TAGS)
    keys = KeyClient(url, credential, verify_challenge_resource=False)
    key = keys.create_ec_key(KEY, curve="P-256")
    signature = CryptographyClient(key, credential, verify_challenge_resource=False).sign(
        SignatureAlgorithm.es256, SIGNED).signature
    certificates = CertificateClient(url, credential, verify_challenge_resource=False)
    policy = CertificatePolicy.get_default()
    certificate = certificates.begin_create_certificate(
        CERTIFICATE, policy, _polling_interval=0.2).result()
    principal = json.loads(okv(server.data_dir, "principal", "create", PRINCIPAL,
                               "--days", "730"))
    okv(server.data_dir, "role", "assign", "--principal", principal["client_id"],
        "--role", ROLE, "--scope", "/vaults/dev")
    return {
        "made_at": int(time.time()),
        "key_version": key.properties.version,
        "signature": base64.b64encode(signature).decode(),
        "certificate_thumbprint": certificate.properties.x509_thumbprint.hex(),
        "principal": {k: principal[k] for k in ("object_id", "client_id", "client_secret")},
        "tenant_id": server.env["AZURE_TENANT_ID"],
    }


def okv(data: Path, *args: str) -> str:
    """`okv ARGS --data-dir DATA` as a process of the release on the path; its output."""
    done = subprocess.run([sys.executable, "-m", "openkeyvault", *args, "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"okv {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def main() -> int:
    from tests.support.dns import localhost_subdomains
    from tests.support.server import running

    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        with running(data) as server, localhost_subdomains():
            made = _fill(server)
        # Fold the write-ahead log into the file, as the last close of the database does
        # (the fixture is the one file; nothing in it changes).
        conn = sqlite3.connect(data / "okv.db", isolation_level=None)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        shutil.rmtree(FIXTURE, ignore_errors=True)
        FIXTURE.mkdir(parents=True)
        for name in FILES:
            source = data / name
            if source.is_dir():
                shutil.copytree(source, FIXTURE / name)
            else:
                shutil.copy2(source, FIXTURE / name)
        (FIXTURE / "expected.json").write_text(json.dumps(made, indent=2) + "\n")
    print(f"wrote {FIXTURE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
