"""Certificate issuers and contacts through the official SDK (sync and async
CertificateClient), each test on a vault of its own so that vault-wide contacts and issuer
lists are the test's alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import DefaultAzureCredential
from azure.identity.aio import DefaultAzureCredential as AsyncDefaultAzureCredential
from azure.keyvault.certificates import (
    AdministratorContact,
    CertificateClient,
    CertificateContact,
)
from azure.keyvault.certificates.aio import CertificateClient as AsyncCertificateClient

from tests.sdk.clients import unique
from tests.support.server import DevServer

ADA = AdministratorContact(first_name="Ada", last_name="Admin", email="ada@example.com",
                           phone="555-0101")
BOB = AdministratorContact(first_name="Bob", last_name="Ops", email="bob@example.com")


def admins(issuer: object) -> list[tuple[str | None, ...]]:
    return [(a.first_name, a.last_name, a.email, a.phone)
            for a in getattr(issuer, "admin_contacts", None) or []]


@pytest.fixture
def vault(server: DevServer, resolve_localhost: None, sdk_env: dict[str, str]) -> str:
    name = unique("ci")[:20]
    done = server.okv("vault", "create", name)
    assert done.returncode == 0, done.stderr
    return name


@pytest.fixture
def cc(server: DevServer, vault: str) -> Iterator[CertificateClient]:
    with CertificateClient(server.vault_url(vault), DefaultAzureCredential()) as client:
        yield client


def test_issuer_lifecycle(cc: CertificateClient, server: DevServer, vault: str) -> None:
    created = cc.create_issuer("digi", "DigiCert", account_id="acct-1", password="pw-secret-1",
                               organization_id="org-1", admin_contacts=[ADA], enabled=True)
    assert created.id == f"{server.vault_url(vault)}/certificates/issuers/digi"
    assert created.name == "digi" and created.provider == "DigiCert"
    assert created.account_id == "acct-1" and created.organization_id == "org-1"
    assert created.password is None  # write-only, as in Azure
    assert created.enabled is True
    assert created.created_on is not None and created.created_on == created.updated_on
    assert admins(created) == [("Ada", "Admin", "ada@example.com", "555-0101")]

    got = cc.get_issuer("DIGI")  # names are case-insensitive; the stored spelling is kept
    assert got.name == "digi" and got.password is None and admins(got) == admins(created)

    updated = cc.update_issuer("digi", admin_contacts=[BOB])
    assert admins(updated) == [("Bob", "Ops", "bob@example.com", None)]
    # what the update did not name stays
    assert updated.provider == "DigiCert" and updated.account_id == "acct-1"
    assert updated.organization_id == "org-1" and updated.enabled is True
    assert updated.created_on == created.created_on

    disabled = cc.update_issuer("digi", enabled=False, provider="GlobalSign")
    assert disabled.enabled is False and disabled.provider == "GlobalSign"
    assert cc.get_issuer("digi").enabled is False

    # set replaces the whole issuer (created kept)
    replaced = cc.create_issuer("digi", "OpenKeyVault")
    assert replaced.provider == "OpenKeyVault" and replaced.enabled is True
    assert replaced.account_id is None and replaced.organization_id is None
    assert admins(replaced) == [] and replaced.created_on == created.created_on

    deleted = cc.delete_issuer("digi")
    assert deleted.name == "digi" and deleted.provider == "OpenKeyVault"
    with pytest.raises(ResourceNotFoundError) as e:
        cc.get_issuer("digi")
    assert e.value.error is not None and e.value.error.code == "CertificateIssuerNotFound"
    assert "not found" in str(e.value.message).lower()
    assert [i.name for i in cc.list_properties_of_issuers()] == []


def test_list_issuers_pages(cc: CertificateClient, server: DevServer, vault: str) -> None:
    names = [f"iss-{i:02d}" for i in range(7)]
    for n in reversed(names):
        cc.create_issuer(n, "Test", account_id=f"acct-{n}", password="never-listed")
    pages = list(cc.list_properties_of_issuers(max_page_size=3).by_page())
    assert [len(list(p)) for p in cc.list_properties_of_issuers(max_page_size=3).by_page()] \
        == [3, 3, 1]
    assert len(pages) == 3
    listed = list(cc.list_properties_of_issuers(max_page_size=3))
    assert [i.name for i in listed] == names  # ordered by name
    assert {i.provider for i in listed} == {"Test"}
    assert all(i.id == f"{server.vault_url(vault)}/certificates/issuers/{i.name}"
               for i in listed)


def test_contacts_lifecycle(cc: CertificateClient) -> None:
    with pytest.raises(ResourceNotFoundError) as e:
        cc.get_contacts()
    assert e.value.error is not None and e.value.error.code == "ContactsNotFound"
    first = [CertificateContact(email="a@example.com", name="A", phone="1"),
             CertificateContact(email="b@example.com")]
    saved = cc.set_contacts(first)
    assert [(c.email, c.name, c.phone) for c in saved] == [
        ("a@example.com", "A", "1"), ("b@example.com", None, None)]
    # a second set replaces the list
    cc.set_contacts([CertificateContact(email="c@example.com", name="C")])
    assert [(c.email, c.name) for c in cc.get_contacts()] == [("c@example.com", "C")]
    deleted = cc.delete_contacts()
    assert [c.email for c in deleted] == ["c@example.com"]
    with pytest.raises(ResourceNotFoundError):
        cc.get_contacts()
    with pytest.raises(ResourceNotFoundError):
        cc.delete_contacts()


def test_contacts_and_issuers_are_per_vault(cc: CertificateClient, server: DevServer,
                                            vault: str) -> None:
    other = unique("ci")[:20]
    assert server.okv("vault", "create", other).returncode == 0
    cc.set_contacts([CertificateContact(email="only-here@example.com")])
    cc.create_issuer("here", "Test")
    with CertificateClient(server.vault_url(other), DefaultAzureCredential()) as oc:
        with pytest.raises(ResourceNotFoundError):
            oc.get_contacts()
        with pytest.raises(ResourceNotFoundError):
            oc.get_issuer("here")
        assert list(oc.list_properties_of_issuers()) == []


def test_reserved_and_invalid_issuers_refused(cc: CertificateClient) -> None:
    for name in ("Self", "unknown"):
        with pytest.raises(HttpResponseError) as e:
            cc.create_issuer(name, "Test")
        assert e.value.status_code == 400 and e.value.error is not None
        assert e.value.error.code == "BadParameter"
    with pytest.raises(HttpResponseError) as e:
        cc.create_issuer("bad-admin", "Test",
                         admin_contacts=[AdministratorContact(email="not-an-email")])
    assert e.value.status_code == 400
    assert [i.name for i in cc.list_properties_of_issuers()] == []


def test_async_client(server: DevServer, vault: str) -> None:
    async def run() -> None:
        async with AsyncDefaultAzureCredential() as cred, \
                AsyncCertificateClient(server.vault_url(vault), cred) as client:
            await client.create_issuer("aio", "OpenKeyVault", enabled=True)
            assert (await client.get_issuer("aio")).provider == "OpenKeyVault"
            assert [i.name async for i in client.list_properties_of_issuers()] == ["aio"]
            await client.set_contacts([CertificateContact(email="aio@example.com")])
            assert [c.email for c in await client.get_contacts()] == ["aio@example.com"]
            assert (await client.delete_issuer("aio")).name == "aio"
            assert [c.email for c in await client.delete_contacts()] == ["aio@example.com"]

    asyncio.run(run())
