"""Certificate policy rules: defaults as Azure fills them, merges, refusals, key operations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from openkeyvault.api.models import decode
from openkeyvault.api.models.certificates import CertificatePolicy
from openkeyvault.vault import certpolicy
from openkeyvault.vault.certrequests import CertificatePolicy as PolicyRequest
from openkeyvault.vault.errors import BadParameter

SUBJECT = {"x509_props": {"subject": "CN=unit"}}


def typed(policy: Any) -> PolicyRequest:
    """The policy as the service gets it: decoded by the request model (which refuses
    wrong JSON types with BadParameter)."""
    return decode(json.dumps(policy).encode(), CertificatePolicy).to_request()


def validate(policy: Any, base: dict[str, Any] | None, now: int) -> dict[str, Any]:
    return certpolicy.validate(typed(policy), base, now)


def test_defaults_for_a_self_signed_policy() -> None:
    p = validate({**SUBJECT, "issuer": {"name": "self"}}, None, 100)
    assert p["issuer"] == {"name": "Self"}
    assert p["key_props"] == {"exportable": True, "kty": "RSA", "key_size": 2048,
                              "reuse_key": False}
    assert p["secret_props"] == {"contentType": "application/x-pkcs12"}
    assert p["x509_props"] == {"subject": "CN=unit", "ekus": list(certpolicy.DEFAULT_EKUS),
                               "key_usage": ["digitalSignature", "keyEncipherment"],
                               "validity_months": 12}
    assert p["lifetime_actions"] == [{"trigger": {"lifetime_percentage": 80},
                                      "action": {"action_type": "AutoRenew"}}]
    assert p["attributes"] == {"enabled": True, "created": 100, "updated": 100}


def test_unknown_issuer_defaults_to_email_contacts() -> None:
    p = validate(SUBJECT, None, 0)
    assert p["issuer"] == {"name": "Unknown"}
    assert p["lifetime_actions"][0]["action"] == {"action_type": "EmailContacts"}


def test_ec_defaults_and_curve_size() -> None:
    p = validate({**SUBJECT, "key_props": {"kty": "EC"}}, None, 0)
    assert p["key_props"]["crv"] == "P-256" and p["key_props"]["key_size"] == 256
    assert p["x509_props"]["key_usage"] == ["digitalSignature"]
    p = validate({**SUBJECT, "key_props": {"kty": "EC", "crv": "P-521",
                                                      "key_size": 521}}, None, 0)
    assert p["key_props"]["key_size"] == 521


def test_update_merges_sections_and_keeps_created() -> None:
    base = validate({**SUBJECT, "issuer": {"name": "Self"}}, None, 10)
    p = validate({"key_props": {"kty": "EC", "crv": "P-384"},
                             "x509_props": {"validity_months": 3}}, base, 20)
    assert p["key_props"]["kty"] == "EC" and p["key_props"]["crv"] == "P-384"
    assert "key_size" in p["key_props"] and p["key_props"]["key_size"] == 384
    assert p["x509_props"]["subject"] == "CN=unit" and p["x509_props"]["validity_months"] == 3
    assert p["issuer"] == {"name": "Self"}
    assert p["attributes"]["created"] == 10 and p["attributes"]["updated"] == 20


@pytest.mark.parametrize(("usage", "kty", "ops"), [
    (["digitalSignature"], "RSA", ["sign", "verify"]),
    (["keyEncipherment"], "RSA", ["encrypt", "decrypt", "wrapKey", "unwrapKey"]),
    (["dataEncipherment"], "RSA", ["encrypt", "decrypt"]),
    (["keyAgreement"], "RSA", []),
    (["digitalSignature", "keyEncipherment"], "EC", ["sign", "verify"]),
    (["keyCertSign", "cRLSign"], "RSA", ["sign", "verify"]),
])
def test_key_ops_follow_key_usage(usage: list[str], kty: str, ops: list[str]) -> None:
    p = validate({"x509_props": {"subject": "CN=u", "key_usage": usage},
                             "key_props": {"kty": kty}}, None, 0)
    assert certpolicy.key_ops(p) == ops


def test_request_carries_the_x509_props() -> None:
    p = validate({"x509_props": {
        "subject": "CN=r", "sans": {"dns_names": ["a.example"], "emails": ["e@example.com"],
                                    "upns": ["u@example.com"], "ipAddresses": ["10.0.0.1"]},
        "ekus": ["1.3.6.1.5.5.7.3.3"], "validity_months": 7}}, None, 0)
    req = certpolicy.request(p)
    assert req.subject == "CN=r" and req.dns_names == ("a.example",)
    assert req.emails == ("e@example.com",) and req.upns == ("u@example.com",)
    assert req.ip_addresses == ("10.0.0.1",) and req.ekus == ("1.3.6.1.5.5.7.3.3",)
    assert req.validity_months == 7


def _action(trigger: dict[str, Any], kind: str = "AutoRenew") -> dict[str, Any]:
    return {"trigger": trigger, "action": {"action_type": kind}}


@pytest.mark.parametrize("policy", [
    {"x509_props": {}},
    {**SUBJECT, "key_props": {"kty": "oct"}},
    {**SUBJECT, "key_props": {"kty": "RSA", "key_size": 1024}},
    {**SUBJECT, "key_props": {"kty": "RSA", "key_size": "2048"}},
    {**SUBJECT, "key_props": {"kty": "RSA", "crv": "P-256"}},
    {**SUBJECT, "key_props": {"kty": "EC", "crv": "P-999"}},
    {**SUBJECT, "key_props": {"kty": "EC", "crv": "P-256", "key_size": 384}},
    {**SUBJECT, "key_props": {"exportable": "yes"}},
    {**SUBJECT, "secret_props": {"contentType": "application/json"}},
    {"x509_props": {"subject": "CN=a", "validity_months": 0}},
    {"x509_props": {"subject": "CN=a", "validity_months": 1201}},
    {"x509_props": {"subject": "CN=a", "ekus": ["1.2.x"]}},
    {"x509_props": {"subject": "CN=a", "key_usage": ["signEverything"]}},
    {"x509_props": {"subject": "CN=a", "sans": {"dns_names": ["x" * 256]}}},
    {"x509_props": {"subject": "CN=a", "sans": {"dns_names": ["a"] * 101}}},
    {"x509_props": {"subject": "C" * 1025}},
    {**SUBJECT, "issuer": {"name": ""}},
    {**SUBJECT, "lifetime_actions": {}},
    {**SUBJECT, "issuer": {"name": "Self"}, "lifetime_actions": [_action({})]},
    {**SUBJECT, "issuer": {"name": "Self"},
     "lifetime_actions": [_action({"lifetime_percentage": 0})]},
    {**SUBJECT, "issuer": {"name": "Self"},
     "lifetime_actions": [_action({"days_before_expiry": 12 * 27 + 1})]},
    {**SUBJECT, "issuer": {"name": "Self"},
     "lifetime_actions": [_action({"lifetime_percentage": 10}, "Rotate")]},
    {**SUBJECT, "issuer": {"name": "Self"},
     "lifetime_actions": [_action({"lifetime_percentage": 10}, "EmailContacts"),
                          _action({"days_before_expiry": 10}, "EmailContacts")]},
    {**SUBJECT, "lifetime_actions": [_action({"lifetime_percentage": 10})]},  # Unknown issuer
], ids=lambda p: str(p)[:60])
def test_refusals(policy: dict[str, Any]) -> None:
    with pytest.raises(BadParameter):
        validate(policy, None, 0)


def test_from_certificate_prefers_what_the_certificate_says() -> None:
    p = certpolicy.from_certificate(
        {"subject": "CN=imp", "sans": {"dns_names": ["imp.example"]},
         "key_usage": ["digitalSignature"], "validity_months": 3},
        {"kty": "EC", "crv": "P-384"}, typed({"key_props": {"exportable": False}}),
        certpolicy.PEM, 5)
    assert p["key_props"] == {"exportable": False, "kty": "EC", "key_size": 384,
                              "crv": "P-384", "reuse_key": False}
    assert p["secret_props"]["contentType"] == certpolicy.PEM
    assert p["x509_props"]["ekus"] == [] and p["x509_props"]["validity_months"] == 3
    assert p["issuer"] == {"name": "Unknown"}


def test_hsm_key_types_are_not_exportable() -> None:
    """Azure allows exportable keys with RSA and EC only: an HSM key type defaults to
    exportable false, and exportable true with it is refused."""
    for kty in ("RSA-HSM", "EC-HSM"):
        p = validate({**SUBJECT, "key_props": {"kty": kty}}, None, 0)
        assert p["key_props"]["exportable"] is False and p["key_props"]["kty"] == kty
        with pytest.raises(BadParameter, match="Exportable keys are allowed only"):
            validate({**SUBJECT, "key_props": {"kty": kty, "exportable": True}}, None, 0)
        assert validate({**SUBJECT, "key_props": {"kty": kty, "exportable": None}}, None,
                        0)["key_props"]["exportable"] is False
    # an exportable software policy moved to an HSM key type becomes non-exportable ...
    base = validate({**SUBJECT, "key_props": {"kty": "RSA", "exportable": True}}, None, 0)
    moved = validate({"key_props": {"kty": "RSA-HSM"}}, base, 1)
    assert (moved["key_props"]["kty"], moved["key_props"]["exportable"]) == ("RSA-HSM", False)
    assert moved["key_props"]["key_size"] == 2048
    # ... and asking an HSM policy for exportable is refused on update too
    with pytest.raises(BadParameter):
        validate({"key_props": {"exportable": True}}, moved, 2)


def test_an_imported_key_keeps_the_hsm_key_type_asked_for() -> None:
    assert certpolicy.imported_kty("RSA", "RSA-HSM") == "RSA-HSM"
    assert certpolicy.imported_kty("EC", "RSA-HSM") == "EC-HSM"
    assert certpolicy.imported_kty("EC", "EC") == "EC"
    assert certpolicy.imported_kty("RSA", None) == "RSA"
    read_x509 = {"subject": "CN=imported", "validity_months": 12}
    p = certpolicy.from_certificate(read_x509, {"kty": "RSA", "key_size": 3072},
                                    typed({"key_props": {"kty": "RSA-HSM"}}),
                                    certpolicy.PKCS12, 0)
    assert (p["key_props"]["kty"], p["key_props"]["key_size"],
            p["key_props"]["exportable"]) == ("RSA-HSM", 3072, False)
    p = certpolicy.from_certificate(read_x509, {"kty": "EC", "crv": "P-384"}, None,
                                    certpolicy.PKCS12, 0)
    assert (p["key_props"]["kty"], p["key_props"]["exportable"]) == ("EC", True)
