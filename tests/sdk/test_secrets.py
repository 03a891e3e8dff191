"""The Secrets API through the official SDK (sync client), against the real server."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

from tests.sdk.clients import localhost_client, unique, vault_client

pytestmark = pytest.mark.usefixtures("sdk_env")

POLL = {"_polling_interval": 0.2}


@pytest.fixture
def client(server) -> SecretClient:
    return localhost_client(server)


def test_dev_env_is_complete(server) -> None:
    assert set(server.env) == {
        "AZURE_KEYVAULT_URL", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "AZURE_AUTHORITY_HOST", "AZURE_TENANT_ID",
        "AZURE_SUBSCRIPTION_ID",
    }
    bundle = Path(server.env["REQUESTS_CA_BUNDLE"]).read_text()
    assert Path(server.ca).read_text().strip() in bundle
    assert bundle.count("BEGIN CERTIFICATE") > 1  # the system roots are kept
    assert server.env["AZURE_KEYVAULT_URL"] == f"https://dev.vault.localhost:{server.port}"


def test_challenge_verification_on_with_default_credential(server, resolve_localhost) -> None:
    client = SecretClient(os.environ["AZURE_KEYVAULT_URL"], DefaultAzureCredential())
    name = unique()
    created = client.set_secret(name, "v1")
    assert created.id.startswith(f"https://dev.vault.localhost:{server.port}/secrets/{name}/")
    assert client.get_secret(name).value == "v1"


def test_set_get_latest_and_by_version(client, server) -> None:
    name = unique()
    first = client.set_secret(name, "one", content_type="text/plain", tags={"env": "test"})
    second = client.set_secret(name, "two")
    assert len(first.properties.version) == 32
    int(first.properties.version, 16)
    assert first.properties.version != second.properties.version
    assert first.id == f"https://localhost:{server.port}/secrets/{name}/{first.properties.version}"
    assert client.get_secret(name).value == "two"
    old = client.get_secret(name, first.properties.version)
    assert old.value == "one"
    assert old.properties.content_type == "text/plain"
    assert old.properties.tags == {"env": "test"}
    assert old.properties.enabled is True
    assert old.properties.recovery_level == "Recoverable+Purgeable"
    assert old.properties.recoverable_days == 90
    now = dt.datetime.now(dt.UTC)
    assert abs((old.properties.created_on - now).total_seconds()) < 120
    assert old.properties.updated_on == old.properties.created_on


def test_names_are_case_insensitive(client) -> None:
    name = unique("Mixed")
    client.set_secret(name, "v")
    assert client.get_secret(name.lower()).value == "v"
    assert client.get_secret(name.upper()).name == name


def test_unicode_and_maximum_size_values(client) -> None:
    name = unique()
    value = "päss wörd ✓ " * 10
    assert client.set_secret(name, value).value == value
    assert client.get_secret(name).value == value
    big = "x" * (25 * 1024)
    assert client.set_secret(name, big).value == big
    assert client.get_secret(name).value == big


def test_update_properties(client) -> None:
    name = unique()
    v1 = client.set_secret(name, "one")
    client.set_secret(name, "two")
    nbf = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    exp = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    props = client.update_secret_properties(
        name, v1.properties.version, content_type="application/json", tags={"k": "v"},
        not_before=nbf, expires_on=exp,
    )
    assert props.version == v1.properties.version
    assert props.content_type == "application/json"
    assert props.tags == {"k": "v"}
    assert props.not_before == nbf and props.expires_on == exp
    # nbf/exp are informational for secrets: the value is still readable
    assert client.get_secret(name, v1.properties.version).value == "one"
    # the latest version was not touched
    assert client.get_secret(name).properties.tags is None
    # update with no version updates the latest
    latest = client.update_secret_properties(name, tags={"latest": "yes"})
    assert latest.tags == {"latest": "yes"}
    assert client.get_secret(name).properties.tags == {"latest": "yes"}


def test_disabled_secret_refuses_value_but_lists(client) -> None:
    name = unique()
    client.set_secret(name, "hidden")
    client.update_secret_properties(name, enabled=False)
    with pytest.raises(HttpResponseError) as e:
        client.get_secret(name)
    assert e.value.status_code == 403
    assert e.value.error.code == "Forbidden"
    assert e.value.message.startswith("(Forbidden) Operation get is not allowed on a disabled")
    assert "SecretDisabled" in str(e.value)
    listed = {p.name: p for p in client.list_properties_of_secrets()}
    assert listed[name].enabled is False
    client.update_secret_properties(name, enabled=True)
    assert client.get_secret(name).value == "hidden"


def test_set_disabled_and_expired(client) -> None:
    name = unique()
    past = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
    s = client.set_secret(name, "v", enabled=False, expires_on=past)
    assert s.properties.enabled is False and s.properties.expires_on == past
    client.update_secret_properties(name, enabled=True)
    assert client.get_secret(name).value == "v"  # expired, still readable as in Azure


def test_missing_secret_and_version(client) -> None:
    with pytest.raises(ResourceNotFoundError) as e:
        client.get_secret(unique())
    assert e.value.error.code == "SecretNotFound"
    name = unique()
    client.set_secret(name, "v")
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name, "0" * 32)


def test_delete_recover_purge(client) -> None:
    name = unique()
    client.set_secret(name, "one")
    client.set_secret(name, "two")
    deleted = client.begin_delete_secret(name, **POLL).result()
    assert deleted.recovery_id.endswith(f"/deletedsecrets/{name}")
    assert deleted.deleted_date is not None
    assert (deleted.scheduled_purge_date - deleted.deleted_date).days == 90
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)
    assert name in {s.name for s in client.list_deleted_secrets()}
    assert name not in {s.name for s in client.list_properties_of_secrets()}
    got = client.get_deleted_secret(name)
    assert got.name == name and got.recovery_id == deleted.recovery_id
    with pytest.raises(ResourceExistsError) as e:
        client.set_secret(name, "three")
    assert "ObjectIsDeletedButRecoverable" in str(e.value)
    with pytest.raises(ResourceNotFoundError):
        client.begin_delete_secret(name, **POLL)

    recovered = client.begin_recover_deleted_secret(name, **POLL).result()
    assert recovered.name == name
    assert client.get_secret(name).value == "two"
    assert len(list(client.list_properties_of_secret_versions(name))) == 2

    client.begin_delete_secret(name, **POLL).wait()
    client.purge_deleted_secret(name)
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret(name)
    with pytest.raises(ResourceNotFoundError):
        client.purge_deleted_secret(name)
    with pytest.raises(ResourceNotFoundError):
        client.begin_recover_deleted_secret(name, **POLL)
    # the name is free again, with no history
    client.set_secret(name, "fresh")
    assert len(list(client.list_properties_of_secret_versions(name))) == 1


def test_delete_poller_waits_until_deleted(client) -> None:
    name = unique()
    client.set_secret(name, "v")
    poller = client.begin_delete_secret(name, **POLL)
    poller.wait()
    assert poller.done()
    assert client.get_deleted_secret(name).name == name


def test_paging_over_more_than_25_secrets_and_versions(client) -> None:
    from azure.keyvault.secrets import SecretClient as _  # noqa: F401

    prefix = unique("page")
    names = {f"{prefix}-{i:02d}" for i in range(30)}
    for n in names:
        client.set_secret(n, "v")
    listed = [p.name for p in client.list_properties_of_secrets()]
    assert names <= set(listed)
    assert len(listed) == len(set(listed))
    pages = list(client.list_properties_of_secrets(max_page_size=7).by_page())
    seen = [p.name for page in pages for p in page]
    assert names <= set(seen) and len(seen) == len(set(seen))
    assert len(pages) >= 5

    name = unique()
    versions = [client.set_secret(name, str(i)).properties.version for i in range(27)]
    listed_versions = [p.version for p in client.list_properties_of_secret_versions(name)]
    assert listed_versions == versions  # oldest first, every one exactly once
    for p in client.list_properties_of_secret_versions(name):
        assert p.id.endswith(f"/{p.version}")


def test_deleted_list_pages(client) -> None:
    prefix = unique("del")
    for i in range(27):
        client.set_secret(f"{prefix}-{i:02d}", "v")
        client.begin_delete_secret(f"{prefix}-{i:02d}", **POLL).wait()
    deleted = [d.name for d in client.list_deleted_secrets() if d.name.startswith(prefix)]
    assert sorted(deleted) == [f"{prefix}-{i:02d}" for i in range(27)]


def test_backup_restore_same_vault(client) -> None:
    name = unique()
    client.set_secret(name, "one", tags={"t": "1"})
    client.set_secret(name, "two", content_type="text/plain")
    blob = client.backup_secret(name)
    assert b"one" not in blob and b"two" not in blob
    with pytest.raises(ResourceExistsError):
        client.restore_secret_backup(blob)
    client.begin_delete_secret(name, **POLL).wait()
    with pytest.raises(ResourceExistsError) as e:
        client.restore_secret_backup(blob)
    assert "ObjectIsDeletedButRecoverable" in str(e.value)
    client.purge_deleted_secret(name)
    restored = client.restore_secret_backup(blob)
    assert restored.name == name
    assert client.get_secret(name).value == "two"
    versions = list(client.list_properties_of_secret_versions(name))
    assert len(versions) == 2
    assert client.get_secret(name, versions[0].version).value == "one"
    assert client.get_secret(name, versions[0].version).properties.tags == {"t": "1"}


def test_backup_into_second_vault(server, resolve_localhost) -> None:
    second = unique("v")[:20]
    result = server.okv("vault", "create", second)
    assert result.returncode == 0, result.stderr
    listed = server.okv("vault", "list", "--output", "json")
    assert second in listed.stdout
    src = vault_client(server)
    dst = vault_client(server, second)
    name = unique()
    src.set_secret(name, "moved")
    restored = dst.restore_secret_backup(src.backup_secret(name))
    assert restored.id.startswith(f"https://{second}.vault.localhost:{server.port}/")
    assert dst.get_secret(name).value == "moved"
    # independent copies
    dst.set_secret(name, "changed")
    assert src.get_secret(name).value == "moved"


def test_tampered_backup_refused(client) -> None:
    name = unique()
    client.set_secret(name, "v")
    blob = bytearray(client.backup_secret(name))
    client.begin_delete_secret(name, **POLL).wait()
    client.purge_deleted_secret(name)
    for i in (len(blob) - 1, len(blob) // 2, 30):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(HttpResponseError) as e:
            client.restore_secret_backup(bytes(bad))
        assert e.value.status_code == 400
        assert e.value.error.code == "BadParameter"
    with pytest.raises(HttpResponseError) as e:
        client.restore_secret_backup(b"not a backup at all")
    assert e.value.status_code == 400
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)  # nothing was restored by a refused blob
