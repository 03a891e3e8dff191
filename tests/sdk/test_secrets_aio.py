"""The Secrets API through the official async SDK client (`azure.keyvault.secrets.aio`).

Each test runs its coroutine with `asyncio.run` (no pytest plugin). The aiohttp
transport trusts the server's CA only through `SSL_CERT_FILE` from dev.env, as an
application would configure it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential
from azure.keyvault.secrets.aio import SecretClient

from tests.sdk.clients import unique
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env")

POLL = {"_polling_interval": 0.2}

Body = Callable[[SecretClient], Awaitable[None]]


def run_localhost(server: DevServer, body: Body) -> None:
    """The default vault on bare localhost, managed identity, challenge verification off."""

    async def main() -> None:
        async with ManagedIdentityCredential() as credential, SecretClient(
            server.url, credential, verify_challenge_resource=False
        ) as client:
            await body(client)

    asyncio.run(main())


def run_vault_host(server: DevServer, body: Body, vault: str = "dev",
                   credential: Callable[[], AsyncTokenCredential] = DefaultAzureCredential
                   ) -> None:
    """A vault on its own host name, with the SDK's challenge verification on."""

    async def main() -> None:
        async with credential() as cred, SecretClient(server.vault_url(vault), cred) as client:
            await body(client)

    asyncio.run(main())


def test_aio_full_lifecycle_with_managed_identity(server: DevServer) -> None:
    async def body(client: SecretClient) -> None:
        name = unique("aio")
        first = await client.set_secret(name, "one", content_type="text/plain",
                                        tags={"env": "test"})
        second = await client.set_secret(name, "two")
        assert first.id == (
            f"https://localhost:{server.port}/secrets/{name}/{first.properties.version}"
        )
        assert first.properties.version != second.properties.version

        # get: latest and by version
        assert (await client.get_secret(name)).value == "two"
        old = await client.get_secret(name, first.properties.version)
        assert old.value == "one"
        assert old.properties.content_type == "text/plain"
        assert old.properties.tags == {"env": "test"}
        assert old.properties.recovery_level == "Recoverable+Purgeable"

        # list and list versions (oldest first)
        listed = {p.name: p async for p in client.list_properties_of_secrets()}
        assert listed[name].version is None
        assert listed[name].id == f"https://localhost:{server.port}/secrets/{name}"
        versions = [p.version async for p in client.list_properties_of_secret_versions(name)]
        assert versions == [first.properties.version, second.properties.version]

        # update one version, then the latest
        props = await client.update_secret_properties(
            name, first.properties.version, content_type="application/json", tags={"k": "v"}
        )
        assert props.version == first.properties.version and props.tags == {"k": "v"}
        latest = await client.update_secret_properties(name, enabled=False)
        assert latest.version == second.properties.version and latest.enabled is False
        with pytest.raises(HttpResponseError) as e:
            await client.get_secret(name)
        assert e.value.status_code == 403 and e.value.error.code == "Forbidden"
        await client.update_secret_properties(name, enabled=True)

        # backup before delete, for the restore at the end
        blob = await client.backup_secret(name)
        assert isinstance(blob, bytes) and b"two" not in blob

        # delete (the poller waits for the deleted secret to appear)
        deleted = await client.delete_secret(name, **POLL)
        assert deleted.name == name
        assert deleted.recovery_id == f"https://localhost:{server.port}/deletedsecrets/{name}"
        assert (deleted.scheduled_purge_date - deleted.deleted_date).days == 90
        with pytest.raises(ResourceNotFoundError):
            await client.get_secret(name)
        assert (await client.get_deleted_secret(name)).recovery_id == deleted.recovery_id
        assert name in {d.name async for d in client.list_deleted_secrets()}
        with pytest.raises(ResourceExistsError) as conflict:
            await client.set_secret(name, "three")
        assert "ObjectIsDeletedButRecoverable" in str(conflict.value)

        # recover (the poller waits for the secret to be readable again)
        recovered = await client.recover_deleted_secret(name, **POLL)
        assert recovered.name == name and recovered.version == second.properties.version
        assert (await client.get_secret(name)).value == "two"

        # purge
        await client.delete_secret(name, **POLL)
        assert await client.purge_deleted_secret(name) is None
        with pytest.raises(ResourceNotFoundError):
            await client.get_deleted_secret(name)
        with pytest.raises(ResourceNotFoundError):
            await client.purge_deleted_secret(name)

        # restore from the backup: every version comes back
        restored = await client.restore_secret_backup(blob)
        assert restored.name == name and restored.version == second.properties.version
        assert (await client.get_secret(name)).value == "two"
        assert (await client.get_secret(name, first.properties.version)).value == "one"
        with pytest.raises(ResourceExistsError):
            await client.restore_secret_backup(blob)

    run_localhost(server, body)


def test_aio_default_credential_on_the_vault_host(server: DevServer,
                                                  resolve_localhost: None) -> None:
    async def body(client: SecretClient) -> None:
        name = unique("aio")
        created = await client.set_secret(name, "via default credential")
        assert created.id.startswith(
            f"https://dev.vault.localhost:{server.port}/secrets/{name}/"
        )
        assert (await client.get_secret(name)).value == "via default credential"
        # a deleted-secret poller and a recover poller through the same credential
        await client.delete_secret(name, **POLL)
        await client.recover_deleted_secret(name, **POLL)
        assert (await client.get_secret(name)).value == "via default credential"

    run_vault_host(server, body)


def test_aio_paging_follows_next_links(server: DevServer, resolve_localhost: None) -> None:
    async def body(client: SecretClient) -> None:
        name = unique("aio-pages")
        versions = [(await client.set_secret(name, str(i))).properties.version
                    for i in range(7)]
        pages = client.list_properties_of_secret_versions(name, max_page_size=3).by_page()
        sizes, seen = [], []
        async for page in pages:
            items = [p async for p in page]
            sizes.append(len(items))
            seen.extend(p.version for p in items)
            for p in items:
                assert p.id.startswith(f"https://dev.vault.localhost:{server.port}/")
        assert sizes == [3, 3, 1]
        assert seen == versions
        every = [p.version async for p in client.list_properties_of_secret_versions(name)]
        assert every == versions

    run_vault_host(server, body, credential=ManagedIdentityCredential)


def test_aio_second_vault_is_separate(server: DevServer, resolve_localhost: None) -> None:
    vault = unique("a")
    created = server.okv("vault", "create", vault)
    assert created.returncode == 0, created.stderr
    name = unique("aio")

    async def in_second(client: SecretClient) -> None:
        assert [p async for p in client.list_properties_of_secrets()] == []
        await client.set_secret(name, "second vault")

    async def in_dev(client: SecretClient) -> None:
        with pytest.raises(ResourceNotFoundError) as e:
            await client.get_secret(name)
        assert e.value.error.code == "SecretNotFound"

    run_vault_host(server, in_second, vault=vault)
    run_vault_host(server, in_dev)
