"""Every field of every Certificates request body apart from the policy's own (those are
test_certificate_policy_types.py's), sent with each JSON type it must not have, over raw
HTTPS to the real server: create, import, update, the pending operation's update, merge,
restore, issuers (set and update) and contacts.

Each must be refused with 400 BadParameter in Key Vault's error shape, naming the field,
never a 500, and must leave nothing stored: a refused create, import or issuer set leaves
the name free, a refused update, cancel or merge leaves the object or the operation as it
was, a refused contacts set leaves the contacts as they were. Unknown fields are ignored.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509

from tests.sdk.certs_support import self_signed, to_pem
from tests.security.conftest import Rest
from tests.security.test_certificates_wire import LocalCA, der_b64, std_b64
from tests.security.test_request_types import (
    ATTRIBUTE_FIELDS,
    OBJ,
    OBJ_NULL,
    SAMPLES,
    STR,
    STR_NULL,
    TAG_FIELDS,
    Api,
    named,
    put_path,
    refused,
    wrong_types,
)

BOOL = frozenset({"boolean"})
BOOL_NULL = frozenset({"boolean", "null"})
ARRAY = frozenset({"array"})
ARRAY_NULL = frozenset({"array", "null"})

SELF_POLICY = {"issuer": {"name": "Self"}, "key_props": {"kty": "EC", "crv": "P-256"},
               "x509_props": {"subject": "CN=types.example", "validity_months": 12}}
UNKNOWN_POLICY = {**SELF_POLICY, "issuer": {"name": "Unknown"}}
CERT_ATTRIBUTES = {"enabled": True, "nbf": 1, "exp": 4102444800}


def unique(prefix: str = "crt") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def cases(fields: dict[str, frozenset[str]]) -> list[tuple[str, str]]:
    return wrong_types(fields)


@pytest.fixture(scope="module")
def api(rest: Rest) -> Api:
    return Api(rest)


def absent(api: Api, name: str) -> None:
    """No certificate, no pending operation, no key or secret of that name."""
    for path in (f"/certificates/{name}", f"/certificates/{name}/pending", f"/keys/{name}",
                 f"/secrets/{name}"):
        assert api.call("GET", path).status_code == 404, path


# ---- create ---------------------------------------------------------------------------------
CREATE = {"policy": SELF_POLICY, "attributes": CERT_ATTRIBUTES, "tags": {"t": "v"},
          "preserveCertOrder": False}
CREATE_FIELDS = {"policy": OBJ_NULL, **ATTRIBUTE_FIELDS, **TAG_FIELDS,
                 "preserveCertOrder": BOOL_NULL}


@pytest.mark.parametrize(("path", "kind"), cases(CREATE_FIELDS))
def test_create_wrong_type(api: Api, path: str, kind: str) -> None:
    name = unique()
    refused(api.call("POST", f"/certificates/{name}/create",
                     put_path(CREATE, path, SAMPLES[kind])), named(path))
    absent(api, name)


def test_create_control_and_unknown_fields(api: Api) -> None:
    """The body the cases start from is accepted, with unknown members anywhere."""
    name = unique()
    body = {**CREATE, "id": {"x": [1]}, "policy": {**SELF_POLICY, "id": 5, "later": [None]},
            "attributes": {**CERT_ATTRIBUTES, "recoveryLevel": 3, "created": "x"}}
    r = api.call("POST", f"/certificates/{name}/create", body)
    assert r.status_code == 202, r.text
    got = api.ok("GET", f"/certificates/{name}")
    assert got["tags"] == {"t": "v"} and got["policy"]["issuer"]["name"] == "Self"


# ---- import ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pem() -> str:
    key, cert = self_signed("types-import")
    return to_pem(key, cert).decode()


IMPORT_FIELDS = {"value": STR, "pwd": STR_NULL, "policy": OBJ_NULL, **ATTRIBUTE_FIELDS,
                 **TAG_FIELDS, "preserveCertOrder": BOOL_NULL}


def import_body(pem: str) -> dict[str, Any]:
    return {"value": pem, "pwd": "", "policy": {"secret_props": {
        "contentType": "application/x-pem-file"}}, "attributes": CERT_ATTRIBUTES,
        "tags": {"t": "v"}, "preserveCertOrder": True}


@pytest.mark.parametrize(("path", "kind"), cases(IMPORT_FIELDS))
def test_import_wrong_type(api: Api, pem: str, path: str, kind: str) -> None:
    name = unique()
    err = refused(api.call("POST", f"/certificates/{name}/import",
                           put_path(import_body(pem), path, SAMPLES[kind])), named(path))
    assert "PRIVATE" not in err["message"]
    absent(api, name)


def test_import_required_value_and_control(api: Api, pem: str) -> None:
    name = unique()
    body = import_body(pem)
    refused(api.call("POST", f"/certificates/{name}/import",
                     {k: v for k, v in body.items() if k != "value"}), "value")
    absent(api, name)
    got = api.ok("POST", f"/certificates/{name}/import", {**body, "unknown": {"a": 1}})
    assert got["tags"] == {"t": "v"} and got["preserveCertOrder"] is True


# ---- update ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def existing(api: Api) -> Iterator[str]:
    """A certificate the update cases target; it must end as it started."""
    name = unique("upd")
    assert api.call("POST", f"/certificates/{name}/create", CREATE).status_code == 202
    before = api.ok("GET", f"/certificates/{name}")
    yield name
    assert api.ok("GET", f"/certificates/{name}") == before


UPDATE = {"policy": {"x509_props": {"validity_months": 12}}, "attributes": CERT_ATTRIBUTES,
          "tags": {"t": "v"}}
UPDATE_FIELDS = {"policy": OBJ_NULL, **ATTRIBUTE_FIELDS, **TAG_FIELDS}


@pytest.mark.parametrize(("path", "kind"), cases(UPDATE_FIELDS))
def test_update_wrong_type(api: Api, existing: str, path: str, kind: str) -> None:
    before = api.ok("GET", f"/certificates/{existing}")
    refused(api.call("PATCH", f"/certificates/{existing}",
                     put_path(UPDATE, path, SAMPLES[kind])), named(path))
    assert api.ok("GET", f"/certificates/{existing}") == before


def test_update_tells_absent_from_null(api: Api) -> None:
    name = unique()
    assert api.call("POST", f"/certificates/{name}/create", CREATE).status_code == 202
    got = api.ok("PATCH", f"/certificates/{name}", {"attributes": {"enabled": False}})
    assert got["tags"] == {"t": "v"} and got["attributes"]["enabled"] is False
    got = api.ok("PATCH", f"/certificates/{name}", {"attributes": {"enabled": None},
                                                    "other": [1]})
    assert got["tags"] == {"t": "v"} and got["attributes"]["enabled"] is False
    got = api.ok("PATCH", f"/certificates/{name}", {"tags": None})
    assert "tags" not in got


# ---- the pending operation: cancel and merge -------------------------------------------------
@pytest.fixture(scope="module")
def pending(api: Api) -> Iterator[tuple[str, x509.CertificateSigningRequest]]:
    """A certificate waiting for a merge (issuer Unknown); it must stay waiting."""
    name = unique("pend")
    r = api.call("POST", f"/certificates/{name}/create", {"policy": UNKNOWN_POLICY})
    assert r.status_code == 202, r.text
    csr = x509.load_der_x509_csr(std_b64(r.json()["csr"]))
    before = api.ok("GET", f"/certificates/{name}/pending")
    yield name, csr
    assert api.ok("GET", f"/certificates/{name}/pending") == before


def unchanged(api: Api, name: str, before: dict[str, Any]) -> None:
    assert api.ok("GET", f"/certificates/{name}/pending") == before
    assert before["status"] == "inProgress"
    assert api.call("GET", f"/certificates/{name}").status_code == 404


CANCEL_FIELDS = {"cancellation_requested": BOOL}


@pytest.mark.parametrize(("path", "kind"), cases(CANCEL_FIELDS))
def test_cancel_wrong_type(api: Api, pending: tuple[str, Any], path: str, kind: str) -> None:
    name = pending[0]
    before = api.ok("GET", f"/certificates/{name}/pending")
    refused(api.call("PATCH", f"/certificates/{name}/pending",
                     put_path({"cancellation_requested": True}, path, SAMPLES[kind])),
            named(path))
    unchanged(api, name, before)


def test_cancel_requires_the_flag(api: Api, pending: tuple[str, Any]) -> None:
    name = pending[0]
    before = api.ok("GET", f"/certificates/{name}/pending")
    refused(api.call("PATCH", f"/certificates/{name}/pending", {"other": True}),
            "cancellation_requested")
    unchanged(api, name, before)
    # false asks for nothing: the operation goes on
    got = api.ok("PATCH", f"/certificates/{name}/pending", {"cancellation_requested": False})
    assert got["status"] == "inProgress"


@pytest.fixture(scope="module")
def merge_body(pending: tuple[str, x509.CertificateSigningRequest]) -> dict[str, Any]:
    """A merge body that would succeed: the CSR signed by an outside CA."""
    ca = LocalCA()
    csr = pending[1]
    return {"x5c": [der_b64(ca.sign(csr.subject, csr.public_key())), der_b64(ca.cert)],
            "attributes": CERT_ATTRIBUTES, "tags": {"t": "v"}}


MERGE_FIELDS = {"x5c": ARRAY, "x5c.0": STR, "x5c.1": STR, **ATTRIBUTE_FIELDS, **TAG_FIELDS}


@pytest.mark.parametrize(("path", "kind"), cases(MERGE_FIELDS))
def test_merge_wrong_type(api: Api, pending: tuple[str, Any], merge_body: dict[str, Any],
                          path: str, kind: str) -> None:
    name = pending[0]
    before = api.ok("GET", f"/certificates/{name}/pending")
    refused(api.call("POST", f"/certificates/{name}/pending/merge",
                     put_path(merge_body, path, SAMPLES[kind])), named(path))
    unchanged(api, name, before)


def test_merge_required_x5c(api: Api, pending: tuple[str, Any],
                            merge_body: dict[str, Any]) -> None:
    name = pending[0]
    before = api.ok("GET", f"/certificates/{name}/pending")
    refused(api.call("POST", f"/certificates/{name}/pending/merge",
                     {k: v for k, v in merge_body.items() if k != "x5c"}), "x5c")
    refused(api.call("POST", f"/certificates/{name}/pending/merge", {"x5c": []}), "x5c")
    unchanged(api, name, before)


def test_merge_control(api: Api, merge_body: dict[str, Any]) -> None:
    """The merge body the cases start from works (on an operation of its own, with the
    same key: a second pending certificate is signed the same way)."""
    name = unique("mrg")
    r = api.call("POST", f"/certificates/{name}/create", {"policy": UNKNOWN_POLICY})
    assert r.status_code == 202, r.text
    csr = x509.load_der_x509_csr(std_b64(r.json()["csr"]))
    ca = LocalCA()
    body = {**merge_body, "x5c": [der_b64(ca.sign(csr.subject, csr.public_key())),
                                  der_b64(ca.cert)], "unknown": {"a": [1]}}
    r = api.call("POST", f"/certificates/{name}/pending/merge", body)
    assert r.status_code == 201, r.text
    assert r.json()["tags"] == {"t": "v"}


# ---- restore --------------------------------------------------------------------------------
def test_restore_wrong_types(api: Api) -> None:
    for kind in SAMPLES:
        if kind != "string":
            refused(api.call("POST", "/certificates/restore", {"value": SAMPLES[kind]}),
                    "value")
    refused(api.call("POST", "/certificates/restore", {}), "value")
    refused(api.call("POST", "/certificates/restore", {"value": "***"}), "value")


# ---- issuers --------------------------------------------------------------------------------
ISSUER = {"provider": "Test", "credentials": {"account_id": "acct", "pwd": "p4ss"},
          "org_details": {"id": "org", "admin_details": [
              {"first_name": "A", "last_name": "B", "email": "a@example.com",
               "phone": "555"}]},
          "attributes": {"enabled": True}}
ISSUER_COMMON = {
    "credentials": OBJ_NULL, "credentials.account_id": STR_NULL, "credentials.pwd": STR_NULL,
    "org_details": OBJ_NULL, "org_details.id": STR_NULL, "org_details.admin_details": ARRAY_NULL,
    "org_details.admin_details.0": OBJ,
    **{f"org_details.admin_details.0.{f}": STR_NULL
       for f in ("first_name", "last_name", "email", "phone")},
    "attributes": OBJ_NULL, "attributes.enabled": BOOL_NULL,
}
ISSUER_SET_FIELDS = {"provider": STR, **ISSUER_COMMON}
ISSUER_UPDATE_FIELDS = {"provider": STR_NULL, **ISSUER_COMMON}


@pytest.mark.parametrize(("path", "kind"), cases(ISSUER_SET_FIELDS))
def test_issuer_set_wrong_type(api: Api, path: str, kind: str) -> None:
    name = unique("iss")
    err = refused(api.call("PUT", f"/certificates/issuers/{name}",
                           put_path(ISSUER, path, SAMPLES[kind])), named(path))
    assert "p4ss" not in err["message"]
    api.absent(f"/certificates/issuers/{name}")


@pytest.fixture(scope="module")
def issuer(api: Api) -> Iterator[str]:
    name = unique("iss")
    api.ok("PUT", f"/certificates/issuers/{name}", ISSUER)
    before = api.ok("GET", f"/certificates/issuers/{name}")
    yield name
    assert api.ok("GET", f"/certificates/issuers/{name}") == before


@pytest.mark.parametrize(("path", "kind"), cases(ISSUER_UPDATE_FIELDS))
def test_issuer_update_wrong_type(api: Api, issuer: str, path: str, kind: str) -> None:
    refused(api.call("PATCH", f"/certificates/issuers/{issuer}",
                     put_path(ISSUER, path, SAMPLES[kind])), named(path))


def test_issuer_required_provider_and_unknown_fields(api: Api) -> None:
    name = unique("iss")
    refused(api.call("PUT", f"/certificates/issuers/{name}",
                     {k: v for k, v in ISSUER.items() if k != "provider"}), "provider")
    api.absent(f"/certificates/issuers/{name}")
    got = api.ok("PUT", f"/certificates/issuers/{name}",
                 {**ISSUER, "id": 5, "attributes": {"enabled": True, "created": "x"}})
    assert got["provider"] == "Test" and "pwd" not in got["credentials"]
    got = api.ok("PATCH", f"/certificates/issuers/{name}", {"provider": None, "x": [1]})
    assert got["provider"] == "Test"  # null, like absent, keeps it


# ---- contacts -------------------------------------------------------------------------------
CONTACTS = {"contacts": [{"email": "a@example.com", "name": "A", "phone": "555"}]}
CONTACTS_FIELDS = {"contacts": ARRAY_NULL, "contacts.0": OBJ, "contacts.0.email": STR_NULL,
                   "contacts.0.name": STR_NULL, "contacts.0.phone": STR_NULL}


@pytest.fixture(scope="module")
def contacts(api: Api) -> Iterator[dict[str, Any]]:
    before = api.ok("PUT", "/certificates/contacts", CONTACTS)
    yield before
    assert api.ok("GET", "/certificates/contacts") == before


@pytest.mark.parametrize(("path", "kind"), cases(CONTACTS_FIELDS))
def test_contacts_wrong_type(api: Api, contacts: dict[str, Any], path: str, kind: str) -> None:
    refused(api.call("PUT", "/certificates/contacts", put_path(CONTACTS, path, SAMPLES[kind])),
            named(path))
    assert api.ok("GET", "/certificates/contacts") == contacts


def test_contacts_unknown_fields(api: Api, contacts: dict[str, Any]) -> None:
    body = {"id": 5, "contacts": [{**CONTACTS["contacts"][0], "extra": {"a": 1}}]}
    assert api.ok("PUT", "/certificates/contacts", body) == contacts


# ---- bodies that are not JSON objects ---------------------------------------------------------
RAW_BODIES = [b"", b"[]", b'"x"', b"5", b"null", b"{", b'{"value": "\xff"}',
              b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}"]


@pytest.mark.parametrize("raw", RAW_BODIES, ids=[repr(r[:12]) for r in RAW_BODIES])
def test_bodies_that_are_not_objects(api: Api, existing: str, pending: tuple[str, Any],
                                     issuer: str, contacts: dict[str, Any],
                                     raw: bytes) -> None:
    name = unique()
    for method, path in [
        ("POST", f"/certificates/{name}/create"), ("POST", f"/certificates/{name}/import"),
        ("PATCH", f"/certificates/{existing}"), ("PATCH", f"/certificates/{existing}/policy"),
        ("PATCH", f"/certificates/{pending[0]}/pending"),
        ("POST", f"/certificates/{pending[0]}/pending/merge"),
        ("POST", "/certificates/restore"), ("PUT", f"/certificates/issuers/{name}"),
        ("PATCH", f"/certificates/issuers/{issuer}"), ("PUT", "/certificates/contacts"),
    ]:
        refused(api.rest.call(method, path, data=raw,
                              headers={"Content-Type": "application/json"}, timeout=30))
    absent(api, name)
    api.absent(f"/certificates/issuers/{name}")
