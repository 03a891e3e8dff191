"""Behaviours the Azure SDK for Python's own live tests rely on, through the SDKs:

- the 401 challenge names the tenant on the token service, and a credential configured for
  another tenant (`additionally_allowed_tenants=["*"]`) gets its token in that one;
- a policy's encipherOnly/decipherOnly key usage without keyAgreement is accepted and
  echoed, and the issued certificate's KeyUsage carries those bits;
- an `Unknown`-issuer operation asks for a merge in Azure's words;
- merge takes x5c entries that are base64 of PEM text, with or without its headers;
- a `platformManaged` policy (api-version 2026-04-01) needs no subject and is echoed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.certificates import (
    CertificateClient,
    CertificateOperation,
    CertificatePolicy,
    KeyUsageType,
    KeyVaultCertificate,
    PlatformManaged,
    WellKnownIssuerNames,
)
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.sdk.certs_support import POLL, SERVER_AUTH, Authority, cer, der, subject_pairs
from tests.sdk.clients import unique
from tests.sdk.keys_support import environment
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("module_env")

MERGE_DETAILS = "Pending certificate created. Please Perform Merge to complete the request."


@pytest.fixture(scope="module")
def module_env(server: DevServer) -> Iterator[dict[str, str]]:
    yield from environment(server)


@pytest.fixture(scope="module")
def cc(server: DevServer, module_env: dict[str, str]) -> CertificateClient:
    return CertificateClient(server.url, ManagedIdentityCredential(),
                             verify_challenge_resource=False)


# ---- the challenge names the tenant ----------------------------------------------------------
def test_a_credential_of_another_tenant_follows_the_challenge(server: DevServer) -> None:
    done = server.okv("principal", "create", f"other-tenant-{uuid.uuid4().hex[:8]}")
    assert done.returncode == 0, done.stderr
    p = json.loads(done.stdout)
    name = unique("tenant")
    assigned = server.okv("role", "assign", "--principal", p["object_id"], "--role",
                          "Key Vault Secrets User", "--scope", f"/vaults/dev/secrets/{name}")
    assert assigned.returncode == 0, assigned.stderr
    SecretClient(server.url, ManagedIdentityCredential(),
                 verify_challenge_resource=False).set_secret(name, "across-tenants")

    other_tenant = str(uuid.uuid4())
    assert other_tenant != p["tenant_id"]
    credential = ClientSecretCredential(other_tenant, p["client_id"], p["client_secret"],
                                        authority=f"https://localhost:{server.port}",
                                        disable_instance_discovery=True,
                                        additionally_allowed_tenants=["*"])
    client = SecretClient(server.url, credential, verify_challenge_resource=False)
    assert client.get_secret(name).value == "across-tenants"


# ---- key usage without keyAgreement ------------------------------------------------------------
@pytest.mark.parametrize("usage,in_certificate", [
    ([KeyUsageType.digital_signature, KeyUsageType.decipher_only], {"digital_signature"}),
    ([KeyUsageType.key_encipherment, KeyUsageType.encipher_only], {"key_encipherment"}),
])
def test_encipher_or_decipher_only_without_key_agreement_is_echoed(
        cc: CertificateClient, usage: list[KeyUsageType], in_certificate: set[str]) -> None:
    policy = CertificatePolicy(issuer_name=WellKnownIssuerNames.self, subject="CN=usage.test",
                               key_usage=usage)
    name = unique("usage")
    made = cc.begin_create_certificate(name, policy, **POLL).result()
    assert isinstance(made, KeyVaultCertificate), made
    assert made.policy is not None
    assert set(made.policy.key_usage or []) == set(usage)
    assert set(cc.get_certificate_policy(name).key_usage or []) == set(usage)
    # The certificate stays valid X.509 that any reader parses: the bits RFC 5280 leaves
    # undefined without keyAgreement are not set.
    ku = cer(made).extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    set_bits = {a for a in ("digital_signature", "content_commitment", "key_encipherment",
                            "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign")
                if getattr(ku.value, a)}
    assert set_bits == in_certificate


# ---- Unknown issuer: Azure's status text ----------------------------------------------------
def _unknown(cc: CertificateClient, name: str) -> tuple[CertificateOperation, x509.Certificate]:
    policy = CertificatePolicy(issuer_name=WellKnownIssuerNames.unknown,
                               subject="CN=merge.example.com", enhanced_key_usage=[SERVER_AUTH])
    op = cc.begin_create_certificate(name, policy, **POLL).result()
    assert isinstance(op, CertificateOperation), op
    assert op.csr is not None
    return op, Authority.make("Fidelity Root").sign_csr(x509.load_der_x509_csr(bytes(op.csr)))


def test_unknown_issuer_operation_asks_for_a_merge(cc: CertificateClient) -> None:
    name = unique("pending")
    op, _ = _unknown(cc, name)
    assert op.status == "inProgress"
    assert op.status_details == MERGE_DETAILS
    assert cc.get_certificate_operation(name).status_details == MERGE_DETAILS


# ---- merge: the forms the SDK sends ---------------------------------------------------------
def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _pem_body(cert: x509.Certificate) -> bytes:
    """What the SDK's own merge test hands `merge_certificate`: the PEM body, no headers."""
    text = _pem(cert).replace("\n", "")
    return text.removeprefix("-----BEGIN CERTIFICATE-----") \
        .removesuffix("-----END CERTIFICATE-----").encode()


@pytest.mark.parametrize("form", ["pem-body", "pem-text", "der"])
def test_merge_takes_the_forms_the_sdk_sends(cc: CertificateClient, form: str) -> None:
    name = unique("merge")
    _, signed = _unknown(cc, name)
    entry: dict[str, Any] = {"pem-body": _pem_body(signed), "pem-text": _pem(signed).encode(),
                             "der": der(signed)}
    merged = cc.merge_certificate(name, [entry[form]])
    assert cer(merged) == signed
    assert cc.get_certificate_operation(name).status == "completed"


def test_merge_takes_a_pem_chain_in_one_entry(cc: CertificateClient) -> None:
    name = unique("merge")
    op, _ = _unknown(cc, name)
    ca = Authority.make("Fidelity Chain Root")
    assert op.csr is not None
    signed = ca.sign_csr(x509.load_der_x509_csr(bytes(op.csr)))
    merged = cc.merge_certificate(name, [(_pem(signed) + _pem(ca.cert)).encode()])
    assert cer(merged) == signed


def test_merge_refuses_what_is_not_a_certificate(cc: CertificateClient) -> None:
    name = unique("merge")
    _unknown(cc, name)
    for junk in (b"not base64 of anything", b"-----BEGIN CERTIFICATE-----\nAAAA\n"
                 b"-----END CERTIFICATE-----\n", b"QUJD"):
        with pytest.raises(HttpResponseError) as e:
            cc.merge_certificate(name, [junk])
        assert e.value.status_code == 400
        assert e.value.error is not None and e.value.error.code == "BadParameter"
    assert cc.get_certificate_operation(name).status == "inProgress"


# ---- platformManaged -------------------------------------------------------------------------
def test_a_platform_managed_policy_needs_no_subject(cc: CertificateClient) -> None:
    managed = PlatformManaged(certificate_usage="ServerAuthentication",
                              metadata={"owner": "fidelity", "n": 1})
    policy = CertificatePolicy(issuer_name=WellKnownIssuerNames.self, platform_managed=managed)
    name = unique("platform")
    made = cc.begin_create_certificate(name, policy, **POLL).result()
    assert isinstance(made, KeyVaultCertificate), made
    for got in (made.policy, cc.get_certificate_policy(name)):
        assert got is not None and got.platform_managed is not None
        assert got.platform_managed.certificate_usage == "ServerAuthentication"
        assert got.platform_managed.metadata == {"owner": "fidelity", "n": 1}
    assert subject_pairs(cer(made)) == [(x509.oid.NameOID.COMMON_NAME, name)]
