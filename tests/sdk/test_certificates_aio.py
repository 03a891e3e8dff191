"""The Certificates API through the official async SDK (`azure.keyvault.certificates.aio`): a
representative subset of test_certificates.py, one coroutine per test run with `asyncio.run`.

The aiohttp transport trusts the server's CA through `SSL_CERT_FILE` from dev.env.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity.aio import ManagedIdentityCredential
from azure.keyvault.certificates import (
    CertificateContact,
    CertificateContentType,
    CertificateOperation,
    CertificatePolicy,
    KeyVaultCertificate,
    WellKnownIssuerNames,
)
from azure.keyvault.certificates.aio import CertificateClient
from azure.keyvault.secrets.aio import SecretClient
from cryptography import x509

from tests.sdk.certs_support import (
    PEM,
    PKCS12,
    POLL,
    Authority,
    cer,
    der,
    key_description,
    leaf,
    name_of,
    parse_pem,
    parse_pfx,
    refused,
    sans_of,
    sha1,
    subject_pairs,
    to_pem,
    to_pfx,
)
from tests.sdk.clients import unique
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env")

Body = Callable[[CertificateClient, SecretClient], Awaitable[None]]


def run(server: DevServer, body: Body) -> None:
    """The default vault on bare localhost, managed identity, challenge verification off."""

    async def main() -> None:
        async with ManagedIdentityCredential() as credential, CertificateClient(
            server.url, credential, verify_challenge_resource=False
        ) as certs, SecretClient(server.url, credential,
                                 verify_challenge_resource=False) as secrets:
            await body(certs, secrets)

    asyncio.run(main())


async def create(client: CertificateClient, policy: CertificatePolicy, name: str | None = None,
                 **kw: Any) -> KeyVaultCertificate:
    result = await client.create_certificate(name or unique("aio"), policy, **kw, **POLL)
    assert isinstance(result, KeyVaultCertificate), result
    return result


def test_create_get_list_update(server: DevServer) -> None:
    async def body(client: CertificateClient, secrets: SecretClient) -> None:
        name = unique("aio")
        policy = CertificatePolicy(issuer_name="Self", subject="CN=aio.example.com",
                                   san_dns_names=["aio.example.com"], key_type="EC",
                                   key_curve_name="P-256", validity_in_months=5)
        first = await create(client, policy, name, tags={"v": "1"})
        second = await create(client, policy, name)
        assert first.id == f"{server.url}/certificates/{name}/{first.properties.version}"
        leaf_cert = cer(first)
        assert subject_pairs(leaf_cert) == name_of("CN=aio.example.com")
        assert list(sans_of(leaf_cert).dns) == ["aio.example.com"]
        assert key_description(leaf_cert.public_key()) == ("EC", "P-256")
        assert first.properties.x509_thumbprint == sha1(leaf_cert)

        latest = await client.get_certificate(name)
        assert latest.properties.version == second.properties.version
        old = await client.get_certificate_version(name, first.properties.version or "")
        assert old.cer == first.cer and old.properties.tags == {"v": "1"}
        versions = [p.version async for p in client.list_properties_of_certificate_versions(name)]
        assert sorted(versions) == sorted([first.properties.version, second.properties.version])
        listed = {p.name: p async for p in client.list_properties_of_certificates()}
        assert listed[name].id == f"{server.url}/certificates/{name}"

        updated = await client.update_certificate_properties(name, tags={"k": "v"})
        assert updated.properties.tags == {"k": "v"}
        p = await client.get_certificate_policy(name)
        assert p.subject == "CN=aio.example.com" and p.validity_in_months == 5
        p2 = await client.update_certificate_policy(
            name, CertificatePolicy(issuer_name="Self", subject="CN=aio2", key_type="EC",
                                    key_curve_name="P-256", validity_in_months=6))
        assert p2.subject == "CN=aio2" and p2.validity_in_months == 6

        secret = await secrets.get_secret(name)
        assert secret.properties.content_type == PKCS12 and secret.value
        material = parse_pfx(base64.b64decode(secret.value))
        assert material.cert == cer(second) and material.key is not None

    run(server, body)


def test_unknown_issuer_and_merge(server: DevServer) -> None:
    async def body(client: CertificateClient, secrets: SecretClient) -> None:
        name = unique("aio")
        policy = CertificatePolicy(issuer_name=WellKnownIssuerNames.unknown,
                                   subject="CN=aio-merge", content_type=CertificateContentType.pem)
        op = await client.create_certificate(name, policy, **POLL)
        assert isinstance(op, CertificateOperation) and op.status == "inProgress" and op.csr
        ca = Authority.make("Aio Root")
        signed = ca.sign_csr(x509.load_der_x509_csr(bytes(op.csr)))
        merged = await client.merge_certificate(name, [der(signed), der(ca.cert)])
        assert cer(merged) == signed
        assert (await client.get_certificate_operation(name)).status == "completed"
        secret = await secrets.get_secret(name)
        assert secret.properties.content_type == PEM
        material = parse_pem(secret.value or "")
        assert material.cert == signed and material.chain == [ca.cert]
        assert material.key is not None

    run(server, body)


def test_import_and_refusals(server: DevServer) -> None:
    async def body(client: CertificateClient, secrets: SecretClient) -> None:
        ca = Authority.make()
        key, cert = leaf(ca, "aio-import")
        name = unique("aio")
        imported = await client.import_certificate(name, to_pfx(key, cert, [ca.cert], b"pw"),
                                                   password="pw")
        assert cer(imported) == cert
        pem = await client.import_certificate(
            unique("aio"), to_pem(key, cert), policy=CertificatePolicy(
                content_type=CertificateContentType.pem))
        assert cer(pem) == cert
        bad = unique("aio")
        with pytest.raises(HttpResponseError) as e:
            await client.import_certificate(bad, to_pfx(key, cert, password=b"pw"),
                                            password="wrong")
        assert refused(e) == (400, "BadParameter")
        with pytest.raises(ResourceNotFoundError) as e:
            await client.get_certificate(bad)
        assert refused(e) == (404, "CertificateNotFound")

    run(server, body)


def test_delete_recover_purge_backup_restore(server: DevServer) -> None:
    async def body(client: CertificateClient, secrets: SecretClient) -> None:
        c = await create(client, CertificatePolicy.get_default())
        name = c.name or ""
        blob = await client.backup_certificate(name)
        deleted = await client.delete_certificate(name, **POLL)
        assert deleted.name == name and deleted.recovery_id
        assert (await client.get_deleted_certificate(name)).cer == c.cer
        assert name in {d.name async for d in client.list_deleted_certificates()}
        recovered = await client.recover_deleted_certificate(name, **POLL)
        assert recovered.cer == c.cer
        assert (await client.get_certificate(name)).cer == c.cer
        await client.delete_certificate(name, **POLL)
        await client.purge_deleted_certificate(name)
        with pytest.raises(ResourceNotFoundError):
            await client.get_deleted_certificate(name)
        restored = await client.restore_certificate_backup(blob)
        assert restored.name == name and restored.cer == c.cer
        assert (await secrets.get_secret(name)).properties.key_id == c.key_id

    run(server, body)


def test_contacts_and_issuers(server: DevServer) -> None:
    async def body(client: CertificateClient, secrets: SecretClient) -> None:
        saved = await client.set_contacts([CertificateContact(email="aio@example.com")])
        assert [c.email for c in saved] == ["aio@example.com"]
        assert [c.email for c in await client.get_contacts()] == ["aio@example.com"]
        await client.delete_contacts()
        with pytest.raises(ResourceNotFoundError):
            await client.get_contacts()

        name = unique("iss")
        await client.create_issuer(name, provider="Test", account_id="a")
        assert (await client.get_issuer(name)).account_id == "a"
        assert name in {i.name async for i in client.list_properties_of_issuers()}
        assert (await client.update_issuer(name, enabled=False)).enabled is False
        await client.delete_issuer(name)
        with pytest.raises(ResourceNotFoundError):
            await client.get_issuer(name)

    run(server, body)
