"""A data directory of release 0.1 (tests/fixtures/datadir-0.1, made before schema migrations
existed) upgrades when today's server starts on it, and everything it held reads back
through the Azure SDKs: secrets and their versions, a key that still signs, a certificate
with its private key, a service principal's secret and its role assignment.
"""

from __future__ import annotations

import base64
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.certificates import CertificateClient
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.serialization import pkcs12
from sqlalchemy import create_engine

from openkeyvault.storage import migrate
from tests.storage import datadir_fixture as fixture
from tests.support.dns import localhost_subdomains
from tests.support.server import DevServer, running

CREDENTIAL_ENV = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                  "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT",
                  "AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_TOKEN_CREDENTIALS",
                  "IDENTITY_ENDPOINT", "IDENTITY_HEADER")


def restored(tmp_path: Path) -> Path:
    """The fixture copied as an operator restores a backup: private modes (a checkout
    keeps none of them, and the seal refuses a root key others may read)."""
    data = tmp_path / "data"
    shutil.copytree(fixture.FIXTURE, data, ignore=shutil.ignore_patterns("*.json", "*.md"))
    for path in [data, *data.rglob("*")]:
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    return data


def revision_of(db: Path) -> str | None:
    """The schema revision recorded in `db`, read without opening it for writing."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'"
                            ).fetchone():
            return None
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])
    finally:
        conn.close()


def test_the_fixture_is_the_schema_before_migrations(tmp_path: Path) -> None:
    """No revision recorded, and exactly the tables and columns of the baseline revision."""
    db = restored(tmp_path) / "okv.db"
    assert revision_of(db) is None
    baseline = create_engine(f"sqlite:///{tmp_path}/baseline.db")
    old = create_engine(f"sqlite:///{db}")
    try:
        from alembic import command

        with baseline.begin() as conn:
            command.upgrade(migrate.config(conn), migrate.BASELINE)

        def columns(engine: object) -> dict[str, list[tuple[str, str]]]:
            from sqlalchemy import inspect

            found = inspect(engine)
            return {t: [(c["name"], str(c["type"])) for c in found.get_columns(t)]
                    for t in found.get_table_names() if t != "alembic_version"}

        assert columns(old) == columns(baseline)
    finally:
        baseline.dispose()
        old.dispose()


@pytest.fixture
def upgraded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DevServer]:
    """Today's server on the restored fixture, its dev clock set back to when the fixture was
    made (the principal's client secret lives two years at most)."""
    data = restored(tmp_path)
    made_at = fixture.expected()["made_at"]
    (data / "clock-offset").write_text(repr(made_at + 3600 - time.time()))
    with running(data) as server, localhost_subdomains():
        for k in CREDENTIAL_ENV:
            monkeypatch.delenv(k, raising=False)
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)
        yield server


def test_release_0_1_data_reads_back_after_the_upgrade(upgraded: DevServer) -> None:
    server = upgraded
    made = fixture.expected()
    assert made["tenant_id"] == server.env["AZURE_TENANT_ID"]  # the same deployment
    credential = ManagedIdentityCredential()
    url = server.vault_url()

    secrets = SecretClient(url, credential, verify_challenge_resource=False)
    for name, values in fixture.SECRETS.items():
        latest = secrets.get_secret(name)
        assert latest.value == values[-1]
        assert latest.properties.tags == fixture.SECRET_TAGS
        assert latest.properties.content_type == "text/plain"
        versions = list(secrets.list_properties_of_secret_versions(name))
        assert len(versions) == len(values)
        assert sorted(secrets.get_secret(name, v.version).value for v in versions) \
            == sorted(values)

    keys = KeyClient(url, credential, verify_challenge_resource=False)
    key = keys.get_key(fixture.KEY)
    assert key.properties.version == made["key_version"]
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(key.key.x, "big"), int.from_bytes(key.key.y, "big"), ec.SECP256R1()
    ).public_key()
    crypto = CryptographyClient(key, credential, verify_challenge_resource=False)
    # The signature release 0.1 made verifies; a new one from the same private key too.
    assert crypto.verify(SignatureAlgorithm.es256, fixture.SIGNED,
                         base64.b64decode(made["signature"])).is_valid
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"signed after the upgrade")
    fresh = digest.finalize()
    signature = crypto.sign(SignatureAlgorithm.es256, fresh).signature
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    public.verify(utils.encode_dss_signature(r, s), fresh,
                  ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    with pytest.raises(InvalidSignature):
        public.verify(utils.encode_dss_signature(r, s), fixture.SIGNED,
                      ec.ECDSA(utils.Prehashed(hashes.SHA256())))

    certificates = CertificateClient(url, credential, verify_challenge_resource=False)
    certificate = certificates.get_certificate(fixture.CERTIFICATE)
    assert certificate.properties.x509_thumbprint.hex() == made["certificate_thumbprint"]
    bundle = secrets.get_secret(fixture.CERTIFICATE)  # the certificate with its private key
    assert bundle.properties.content_type == "application/x-pkcs12"
    private, cert, _ = pkcs12.load_key_and_certificates(base64.b64decode(bundle.value), None)
    assert cert is not None and private is not None
    assert cert.fingerprint(hashes.SHA1()).hex() == made["certificate_thumbprint"]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert private.public_key().public_bytes(serialization.Encoding.DER, spki) \
        == cert.public_key().public_bytes(serialization.Encoding.DER, spki)

    # The service principal's secret still signs in; its role still reads, and only reads.
    p = made["principal"]
    reader = SecretClient(url, ClientSecretCredential(
        made["tenant_id"], p["client_id"], p["client_secret"],
        authority=f"https://localhost:{server.port}", disable_instance_discovery=True),
        verify_challenge_resource=False)
    assert reader.get_secret("api-token").value == fixture.SECRETS["api-token"][-1]
    with pytest.raises(HttpResponseError) as refused:
        reader.set_secret("api-token", "not allowed")
    assert refused.value.status_code == 403


def test_the_upgraded_database_is_at_the_head(upgraded: DevServer) -> None:
    db = upgraded.data_dir / "okv.db"
    assert revision_of(db) == migrate.head()
    assert "upgraded the database schema (made before schema migrations)" in upgraded.log()
    upgraded.stop()
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            assert migrate.differences(conn) == []
    finally:
        engine.dispose()
    # A second start finds the head and changes nothing.
    with running(upgraded.data_dir) as again:
        assert revision_of(db) == migrate.head()
        assert "upgraded the database schema" not in again.log()
