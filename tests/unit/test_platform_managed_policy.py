"""`platformManaged` in a certificate policy (api-version 2026-04-01): read from the wire,
checked, kept across updates unless reset with null, and what it changes (no subject needed;
the certificate is then named after itself)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from openkeyvault.api.models import decode
from openkeyvault.api.models.certificates import CertificatePolicy
from openkeyvault.vault import certpolicy
from openkeyvault.vault.errors import BadParameter

MANAGED = {"certificateUsage": "ServerAuthentication", "metadata": {"a": [1, {"b": None}]}}


def validate(policy: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    typed = decode(json.dumps(policy).encode(), CertificatePolicy).to_request()
    return certpolicy.validate(typed, base, 100)


def test_kept_as_sent_and_no_subject_needed() -> None:
    stored = validate({"issuer": {"name": "Self"}, "platformManaged": MANAGED})
    assert stored["platformManaged"] == MANAGED
    assert stored["x509_props"]["subject"] == ""
    assert certpolicy.request(stored, "web-cert").subject == "CN=web-cert"


def test_a_given_subject_is_used() -> None:
    stored = validate({"x509_props": {"subject": "CN=given"}, "platformManaged": MANAGED})
    assert certpolicy.request(stored, "web-cert").subject == "CN=given"


def test_without_it_a_subject_is_still_required() -> None:
    with pytest.raises(BadParameter, match="subject"):
        validate({"issuer": {"name": "Self"}})


def test_updates_keep_it_and_null_resets_it() -> None:
    stored = validate({"x509_props": {"subject": "CN=x"}, "platformManaged": MANAGED})
    kept = validate({"issuer": {"name": "Self"}}, stored)
    assert kept["platformManaged"] == MANAGED
    reset = validate({"platformManaged": None}, stored)
    assert "platformManaged" not in reset
    with pytest.raises(BadParameter, match="subject"):
        validate({"platformManaged": None, "x509_props": {"subject": None}}, stored)


@pytest.mark.parametrize("managed", [
    {}, {"certificateUsage": ""}, {"certificateUsage": "x" * 257},
    {"certificateUsage": "u", "metadata": {"big": "x" * 9000}},
])
def test_refusals(managed: dict[str, Any]) -> None:
    with pytest.raises(BadParameter, match="platformManaged"):
        validate({"x509_props": {"subject": "CN=x"}, "platformManaged": managed})
