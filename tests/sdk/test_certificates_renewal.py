"""Certificate lifetime actions over time: AutoRenew (at days before expiry or a percentage of
the lifetime) and EmailContacts.

Time has to pass, so this module has its own server whose clock is moved with the dev
endpoint (POST /_okv/dev/clock, guarded by the X-IDENTITY-HEADER secret); moving the clock
runs every scheduled job, the lifetime actions included. A jump of more than a day expires
the tokens a client holds, so each step makes new clients. Events ("CertificateNearExpiry",
"CertificateRenewed") are read from the server's data directory with an in-process
Deployment.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.certificates import (
    CertificateClient,
    CertificateContact,
    CertificateOperation,
    CertificatePolicy,
    CertificatePolicyAction,
    KeyVaultCertificate,
    LifetimeAction,
    WellKnownIssuerNames,
)
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient
from cryptography import x509

from openkeyvault.deployment import Deployment
from openkeyvault.storage.records import EventRecord
from tests.sdk.certs_support import (
    POLL,
    Authority,
    assert_validity_months,
    cer,
    der,
    refused,
    same_public,
    secret_material,
)
from tests.sdk.clients import unique
from tests.sdk.keys_support import environment
from tests.sdk.premium_support import premium_vault
from tests.support.server import DevServer, running
from tests.support.softhsm import token_objects

pytestmark = pytest.mark.usefixtures("module_env", "sdk_env")

DAY = 86_400
RENEW = CertificatePolicyAction.auto_renew
EMAIL = CertificatePolicyAction.email_contacts


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """This module's own server: its clock moves by weeks."""
    with running(tmp_path_factory.mktemp("okv-renewal") / "data") as s:
        yield s


@pytest.fixture(scope="module")
def module_env(server: DevServer) -> Iterator[dict[str, str]]:
    yield from environment(server)


def certs(server: DevServer) -> CertificateClient:
    """A new client and credential: a token issued before a jump of weeks has expired."""
    return CertificateClient(server.url, ManagedIdentityCredential(),
                             verify_challenge_resource=False)


def secrets(server: DevServer) -> SecretClient:
    return SecretClient(server.url, ManagedIdentityCredential(), verify_challenge_resource=False)


def clock(server: DevServer, method: str = "GET", **kw: Any) -> dict[str, Any]:
    r = requests.request(method, f"{server.url}/_okv/dev/clock", verify=server.ca,
                         headers={"X-IDENTITY-HEADER": server.env["IDENTITY_HEADER"]},
                         timeout=120, **kw)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def advance_to(server: DevServer, when: int) -> None:
    """Move the server's clock forward to `when` (unix seconds), running the scheduled jobs."""
    now = int(clock(server)["now"])
    assert when >= now, (when, now)
    clock(server, "POST", json={"advanceSeconds": when - now})


def events(server: DevServer, name: str) -> list[EventRecord]:
    d = Deployment.open(server.settings())
    try:
        return [e for e in d.repo.list_events() if e.object_name == name]
    finally:
        d.close()


def create(client: CertificateClient, policy: CertificatePolicy, name: str | None = None
           ) -> KeyVaultCertificate:
    result = client.begin_create_certificate(name or unique("renew"), policy, **POLL).result()
    assert isinstance(result, KeyVaultCertificate), result
    return result


def versions(client: CertificateClient, name: str) -> list[str]:
    return [p.version or "" for p in client.list_properties_of_certificate_versions(name)]


def expiry(c: KeyVaultCertificate) -> int:
    assert c.properties.expires_on is not None
    return int(c.properties.expires_on.timestamp())


def starts(c: KeyVaultCertificate) -> int:
    assert c.properties.not_before is not None
    return int(c.properties.not_before.timestamp())


def assert_renewed(first: KeyVaultCertificate, renewed: KeyVaultCertificate, months: int,
                   *, reuse_key: bool) -> None:
    assert renewed.name == first.name
    assert renewed.properties.version != first.properties.version
    old, new = cer(first), cer(renewed)
    assert new.subject == old.subject and new.issuer == old.issuer
    assert new.serial_number != old.serial_number
    assert new.not_valid_before_utc > old.not_valid_before_utc
    assert_validity_months(new, months)
    assert same_public(new.public_key(), old.public_key()) is reuse_key


# ---- AutoRenew -------------------------------------------------------------------------------
def test_auto_renew_days_before_expiry_with_a_new_key(server: DevServer) -> None:
    policy = CertificatePolicy(issuer_name="Self", subject="CN=renew-days", validity_in_months=2,
                               reuse_key=False,
                               lifetime_actions=[LifetimeAction(RENEW, days_before_expiry=10)])
    first = create(certs(server), policy)
    name = first.name
    due = expiry(first) - 10 * DAY
    advance_to(server, due - 2 * DAY)  # not yet
    client = certs(server)
    assert versions(client, name) == [first.properties.version]
    advance_to(server, due + DAY)
    client = certs(server)
    assert len(versions(client, name)) == 2
    renewed = client.get_certificate(name)
    assert_renewed(first, renewed, 2, reuse_key=False)
    cer(renewed).verify_directly_issued_by(cer(renewed))  # self-signed by its new key
    # the renewed version's secret and key follow; the policy is unchanged
    material = secret_material(secrets(server).get_secret(name))
    assert material.cert == cer(renewed) and material.key is not None
    assert same_public(material.key.public_key(), cer(renewed).public_key())
    assert client.get_certificate_policy(name).lifetime_actions[0].days_before_expiry == 10
    # the old version stays readable, and the renewal is recorded against it
    assert client.get_certificate_version(name, first.properties.version or "").cer == first.cer
    assert ("CertificateRenewed", first.properties.version) in {
        (e.type, e.version) for e in events(server, name)}
    # nothing more happens until the new version's own trigger
    clock(server, "POST", json={"advanceSeconds": DAY})
    assert len(versions(certs(server), name)) == 2


def test_auto_renew_at_lifetime_percentage_reusing_the_key(server: DevServer) -> None:
    policy = CertificatePolicy(issuer_name="Self", subject="CN=renew-percent",
                               validity_in_months=2, reuse_key=True, key_type="EC",
                               key_curve_name="P-384",
                               lifetime_actions=[LifetimeAction(RENEW, lifetime_percentage=50)])
    first = create(certs(server), policy)
    name = first.name
    half = starts(first) + (expiry(first) - starts(first)) // 2
    advance_to(server, half - DAY)
    assert versions(certs(server), name) == [first.properties.version]
    advance_to(server, half + DAY)
    client = certs(server)
    renewed = client.get_certificate(name)
    assert_renewed(first, renewed, 2, reuse_key=True)
    assert len(versions(client, name)) == 2


def test_auto_renew_by_the_builtin_ca(server: DevServer) -> None:
    client = certs(server)
    issuer = unique("ca")
    client.create_issuer(issuer, provider="OpenKeyVault")
    policy = CertificatePolicy(issuer_name=issuer, subject="CN=renew-ca", validity_in_months=3,
                               lifetime_actions=[LifetimeAction(RENEW, days_before_expiry=20)])
    first = create(client, policy)
    chain = secret_material(secrets(server).get_secret(first.name)).chain
    assert chain, "a certificate from the built-in CA carries its chain"
    advance_to(server, expiry(first) - 19 * DAY)
    client = certs(server)
    renewed = client.get_certificate(first.name)
    assert_renewed(first, renewed, 3, reuse_key=False)
    cer(renewed).verify_directly_issued_by(chain[0])  # the same CA signed it
    assert secret_material(secrets(server).get_secret(first.name)).chain == chain


@pytest.mark.usefixtures("resolve_localhost")
def test_auto_renew_of_hsm_keys_in_a_premium_vault(server: DevServer) -> None:
    """An RSA-HSM certificate renews with a new key made in the HSM; an EC-HSM one that
    reuses its key renews with the same HSM key. Both renewed versions are self-signed in
    the HSM, and their keys sign there."""
    vault = premium_vault(server, "renhsm")

    def client() -> CertificateClient:
        return CertificateClient(server.vault_url(vault), ManagedIdentityCredential())

    def held() -> set[str]:
        return {str(o["id"]) for o in token_objects(server.data_dir)
                if o["class"] == "PRIVATE_KEY"}

    renew = [LifetimeAction(RENEW, days_before_expiry=10)]
    new_key = CertificatePolicy(issuer_name="Self", subject="CN=renew-hsm-rsa",
                                validity_in_months=2, key_type="RSA-HSM", key_size=2048,
                                reuse_key=False, lifetime_actions=renew)
    same_key = CertificatePolicy(issuer_name="Self", subject="CN=renew-hsm-ec",
                                 validity_in_months=2, key_type="EC-HSM",
                                 key_curve_name="P-256", reuse_key=True, lifetime_actions=renew)
    before = held()
    firsts = [create(client(), new_key), create(client(), same_key)]
    assert len(held() - before) == 2
    advance_to(server, max(expiry(c) for c in firsts) - 9 * DAY)
    c = client()
    for first, reuse, alg in ((firsts[0], False, "RS256"), (firsts[1], True, "ES256")):
        renewed = c.get_certificate(first.name)
        assert_renewed(first, renewed, 2, reuse_key=reuse)
        cer(renewed).verify_directly_issued_by(cer(renewed))
        key = KeyClient(server.vault_url(vault), ManagedIdentityCredential()).get_key(
            first.name)
        assert key.key_type == ("EC-HSM" if reuse else "RSA-HSM")
        assert key.properties.version == renewed.properties.version
        digest = hashlib.sha256(b"renewed").digest()
        crypto = CryptographyClient(renewed.key_id or "", ManagedIdentityCredential())
        signature = crypto.sign(SignatureAlgorithm(alg), digest).signature
        assert crypto.verify(SignatureAlgorithm(alg), digest, signature).is_valid
        assert secret_material(SecretClient(
            server.vault_url(vault), ManagedIdentityCredential()).get_secret(
                first.name)).key is None
    assert len(held() - before) == 3  # one new key, in the token; the reused one stays


def test_auto_renew_with_the_unknown_issuer_is_refused(server: DevServer) -> None:
    """An `Unknown` issuer's certificates are merged by hand: no AutoRenew (EmailContacts
    only), and the refused create leaves nothing behind."""
    client = certs(server)
    name = unique("renew")
    policy = CertificatePolicy(issuer_name=WellKnownIssuerNames.unknown,
                               subject="CN=renew-unknown",
                               lifetime_actions=[LifetimeAction(RENEW, days_before_expiry=30)])
    with pytest.raises(HttpResponseError) as e:
        client.begin_create_certificate(name, policy, **POLL)
    assert refused(e) == (400, "BadParameter")
    with pytest.raises(ResourceNotFoundError):
        client.get_certificate_operation(name)
    # EmailContacts is accepted, and the merged certificate is never renewed
    policy = CertificatePolicy(issuer_name=WellKnownIssuerNames.unknown,
                               subject="CN=renew-unknown",
                               lifetime_actions=[LifetimeAction(EMAIL, days_before_expiry=30)])
    op = client.begin_create_certificate(name, policy, **POLL).result()
    assert isinstance(op, CertificateOperation) and op.csr
    ca = Authority.make()
    server_now = dt.datetime.fromtimestamp(clock(server)["now"], dt.UTC)
    signed = ca.sign_csr(x509.load_der_x509_csr(bytes(op.csr)), days=40, now=server_now)
    merged = client.merge_certificate(name, [der(signed)])
    advance_to(server, expiry(merged) - 25 * DAY)
    assert versions(certs(server), name) == [merged.properties.version]
    assert [e.type for e in events(server, name) if e.type.startswith("Certificate")] == [
        "CertificateNearExpiry"]


# ---- EmailContacts -------------------------------------------------------------------------------
def test_email_contacts_records_one_notice(server: DevServer) -> None:
    client = certs(server)
    client.set_contacts([CertificateContact(email="certs@example.com", name="Certs")])
    policy = CertificatePolicy(issuer_name="Self", subject="CN=notify", validity_in_months=1,
                               lifetime_actions=[LifetimeAction(EMAIL, days_before_expiry=7)])
    first = create(client, policy)
    name, version = first.name, first.properties.version
    advance_to(server, expiry(first) - 8 * DAY)
    assert [e for e in events(server, name) if e.type == "CertificateNearExpiry"] == []
    advance_to(server, expiry(first) - 6 * DAY)
    notices = [e for e in events(server, name) if e.type == "CertificateNearExpiry"]
    assert [(e.version, e.object_name) for e in notices] == [(version, name)]
    # once per version, and no renewal
    clock(server, "POST", json={"advanceSeconds": DAY})
    assert len([e for e in events(server, name) if e.type == "CertificateNearExpiry"]) == 1
    assert versions(certs(server), name) == [version]
