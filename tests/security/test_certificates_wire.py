"""The Certificates API on the wire: status codes, body shapes, the three objects of a
version, and every refusal (status, error code, and that nothing changed)."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from openkeyvault.access.principals import Principal
from openkeyvault.config import Settings
from openkeyvault.deployment import Deployment
from openkeyvault.ops.clock import ManualClock
from tests.security.conftest import Rest, b64url_decode, resource
from tests.support.server import DevServer

SELF = {"issuer": {"name": "Self"}, "x509_props": {"subject": "CN=wire.example.com"}}
DAY = 86_400


def unique(prefix: str = "wc") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def std_b64(text: str) -> bytes:
    """Standard, padded base64 (refuses URL-safe or unpadded text)."""
    assert len(text) % 4 == 0 and "-" not in text and "_" not in text, text[:40]
    return base64.b64decode(text, validate=True)


def create(rest: Rest, name: str, policy: dict[str, Any] | None = None,
           **extra: Any) -> dict[str, Any]:
    r = rest.call("POST", f"/certificates/{name}/create",
                  json={"policy": policy or SELF, **extra})
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["code"] == code, err
    return err


def absent(rest: Rest, name: str) -> None:
    """No certificate, no pending operation, no key and no secret of that name."""
    for path, code in ((f"/certificates/{name}", "CertificateNotFound"),
                       (f"/certificates/{name}/pending", "PendingCertificateNotFound"),
                       (f"/keys/{name}", "KeyNotFound"), (f"/secrets/{name}", "SecretNotFound")):
        error(rest.call("GET", path), 404, code)


def versions(rest: Rest, collection: str, name: str) -> list[str]:
    r = rest.call("GET", f"/{collection}/{name}/versions")
    assert r.status_code == 200, r.text
    return sorted((i.get("id") or i["kid"]).rsplit("/", 1)[1] for i in r.json()["value"])


class LocalCA:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Wire Test Root")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=1))
                     .not_valid_after(now + dt.timedelta(days=365))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))

    def sign(self, subject: x509.Name, public: Any, days: int = 90) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
                .public_key(public).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=1))
                .not_valid_after(now + dt.timedelta(days=days))
                .sign(self.key, hashes.SHA256()))


def der_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


# ---- create (Self) and the three objects ---------------------------------------------------

def test_self_signed_create_answers_202_then_completes(rest: Rest, server: DevServer) -> None:
    name = unique()
    op = create(rest, name, tags={"team": "wire"})
    assert op["id"] == f"{server.url}/certificates/{name}/pending"
    assert op["status"] == "inProgress" and op["issuer"] == {"name": "Self"}
    assert op["cancellation_requested"] is False and op["request_id"]
    csr = x509.load_der_x509_csr(std_b64(op["csr"]))
    assert csr.is_signature_valid
    done = rest.call("GET", f"/certificates/{name}/pending").json()
    assert done["status"] == "completed"
    assert done["target"] == f"{server.url}/certificates/{name}"
    assert done["request_id"] == op["request_id"]

    cert = rest.call("GET", f"/certificates/{name}").json()
    version = cert["id"].rsplit("/", 1)[1]
    assert cert["id"] == f"{server.url}/certificates/{name}/{version}"
    assert cert["kid"] == f"{server.url}/keys/{name}/{version}"
    assert cert["sid"] == f"{server.url}/secrets/{name}/{version}"
    leaf = x509.load_der_x509_certificate(std_b64(cert["cer"]))
    assert b64url_decode(cert["x5t"]) == leaf.fingerprint(hashes.SHA1())
    assert cert["attributes"]["nbf"] == int(leaf.not_valid_before_utc.timestamp())
    assert cert["attributes"]["exp"] == int(leaf.not_valid_after_utc.timestamp())
    assert cert["tags"] == {"team": "wire"} and cert["contentType"] == "application/x-pkcs12"
    assert cert["policy"]["id"] == f"{server.url}/certificates/{name}/policy"

    key = rest.call("GET", f"/keys/{name}").json()
    assert key["key"]["kid"] == cert["kid"] and key["managed"] is True
    assert key["key"]["key_ops"] == ["encrypt", "decrypt", "sign", "verify", "wrapKey",
                                     "unwrapKey"]
    assert "d" not in key["key"]
    secret = rest.call("GET", f"/secrets/{name}").json()
    assert secret["id"] == cert["sid"] and secret["kid"] == cert["kid"]
    assert secret["managed"] is True and secret["contentType"] == "application/x-pkcs12"
    pkey, pcert, _ = pkcs12.load_key_and_certificates(base64.b64decode(secret["value"]), None)
    assert pcert == leaf and pkey is not None


def test_ec_key_usage_decides_key_ops(rest: Rest) -> None:
    name = unique()
    create(rest, name, {**SELF, "key_props": {"kty": "EC", "crv": "P-384"},
                        "x509_props": {"subject": "CN=ec", "key_usage": ["digitalSignature"]},
                        "secret_props": {"contentType": "application/x-pem-file"}})
    key = rest.call("GET", f"/keys/{name}").json()["key"]
    assert key["kty"] == "EC" and key["crv"] == "P-384" and key["key_ops"] == ["sign", "verify"]
    secret = rest.call("GET", f"/secrets/{name}").json()
    assert secret["contentType"] == "application/x-pem-file"
    assert secret["value"].startswith("-----BEGIN PRIVATE KEY-----")


def test_list_and_versions(rest: Rest, server: DevServer) -> None:
    name = unique()
    create(rest, name)
    create(rest, name)
    assert len(versions(rest, "certificates", name)) == 2
    assert versions(rest, "keys", name) == versions(rest, "certificates", name)
    assert versions(rest, "secrets", name) == versions(rest, "certificates", name)
    items = rest.call("GET", "/certificates?maxresults=25").json()
    seen = []
    page = items
    while True:
        seen += [i for i in page["value"] if i["id"] == f"{server.url}/certificates/{name}"]
        if not page.get("nextLink"):
            break
        page = rest.session.get(page["nextLink"], headers={
            "Authorization": f"Bearer {rest.token}"}).json()
    assert len(seen) == 1 and "x5t" in seen[0] and "cer" not in seen[0]


# ---- refusals of a certificate's key and secret ---------------------------------------------

def test_managed_key_and_secret_refuse_changes(rest: Rest) -> None:
    name = unique()
    create(rest, name)
    version = versions(rest, "keys", name)[0]
    error(rest.call("DELETE", f"/keys/{name}"), 403, "Forbidden")
    error(rest.call("DELETE", f"/secrets/{name}"), 403, "Forbidden")
    error(rest.call("PATCH", f"/keys/{name}/{version}", json={"attributes": {"enabled": False}}),
          403, "Forbidden")
    error(rest.call("PATCH", f"/secrets/{name}/{version}", json={"contentType": "x"}),
          403, "Forbidden")
    error(rest.call("POST", f"/keys/{name}/rotate"), 403, "Forbidden")
    error(rest.call("PUT", f"/secrets/{name}", json={"value": "x"}), 409, "Conflict")
    error(rest.call("POST", f"/keys/{name}/create", json={"kty": "EC"}), 409, "Conflict")
    # nothing changed
    assert versions(rest, "keys", name) == [version]
    assert versions(rest, "secrets", name) == [version]
    assert rest.call("GET", f"/keys/{name}").json()["attributes"]["enabled"] is True
    assert rest.call("GET", f"/secrets/{name}").json()["contentType"] == "application/x-pkcs12"


def test_certificate_on_a_standalone_name_is_a_conflict(rest: Rest) -> None:
    name = unique()
    assert rest.call("PUT", f"/secrets/{name}", json={"value": "v"}).status_code == 200
    error(rest.call("POST", f"/certificates/{name}/create", json={"policy": SELF}),
          409, "Conflict")
    error(rest.call("GET", f"/certificates/{name}"), 404, "CertificateNotFound")
    assert rest.call("GET", f"/secrets/{name}").json()["value"] == "v"
    assert len(versions(rest, "secrets", name)) == 1
    other = unique()
    assert rest.call("POST", f"/keys/{other}/create", json={"kty": "EC"}).status_code == 200
    error(rest.call("POST", f"/certificates/{other}/create", json={"policy": SELF}),
          409, "Conflict")
    assert len(versions(rest, "keys", other)) == 1


# ---- policy validation ---------------------------------------------------------------------

BAD_POLICIES: dict[str, dict[str, Any]] = {
    "no subject or sans": {"issuer": {"name": "Self"}, "x509_props": {}},
    "ec with rsa size": {**SELF, "key_props": {"kty": "EC", "key_size": 2048}},
    "rsa with a curve": {**SELF, "key_props": {"kty": "RSA", "crv": "P-256"}},
    "rsa 1024": {**SELF, "key_props": {"kty": "RSA", "key_size": 1024}},
    "oct": {**SELF, "key_props": {"kty": "oct"}},
    "validity 0": {"issuer": {"name": "Self"},
                   "x509_props": {"subject": "CN=a", "validity_months": 0}},
    "validity 1201": {"issuer": {"name": "Self"},
                      "x509_props": {"subject": "CN=a", "validity_months": 1201}},
    "content type": {**SELF, "secret_props": {"contentType": "text/plain"}},
    "eku": {"issuer": {"name": "Self"}, "x509_props": {"subject": "CN=a", "ekus": ["tls"]}},
    "key usage": {"issuer": {"name": "Self"},
                  "x509_props": {"subject": "CN=a", "key_usage": ["everything"]}},
    "percentage 100": {**SELF, "lifetime_actions": [
        {"trigger": {"lifetime_percentage": 100}, "action": {"action_type": "AutoRenew"}}]},
    "two triggers": {**SELF, "lifetime_actions": [
        {"trigger": {"lifetime_percentage": 50, "days_before_expiry": 3},
         "action": {"action_type": "AutoRenew"}}]},
    "days past validity": {**SELF, "lifetime_actions": [
        {"trigger": {"days_before_expiry": 12 * 27 + 1}, "action": {"action_type": "AutoRenew"}}]},
    "two autorenew": {**SELF, "lifetime_actions": [
        {"trigger": {"lifetime_percentage": 50}, "action": {"action_type": "AutoRenew"}},
        {"trigger": {"lifetime_percentage": 60}, "action": {"action_type": "AutoRenew"}}]},
    "autorenew unknown": {"issuer": {"name": "Unknown"}, "x509_props": {"subject": "CN=a"},
                          "lifetime_actions": [{"trigger": {"lifetime_percentage": 50},
                                                "action": {"action_type": "AutoRenew"}}]},
    "unconfigured issuer": {"issuer": {"name": "NoSuchIssuer"},
                            "x509_props": {"subject": "CN=a"}},
    "bad subject": {"issuer": {"name": "Self"}, "x509_props": {"subject": "not a dn"}},
}


@pytest.mark.parametrize("case", sorted(BAD_POLICIES))
def test_policy_refusals(rest: Rest, case: str) -> None:
    name = unique()
    error(rest.call("POST", f"/certificates/{name}/create",
                    json={"policy": BAD_POLICIES[case]}), 400, "BadParameter")
    absent(rest, name)


def test_create_without_policy_and_bad_bodies(rest: Rest) -> None:
    name = unique()
    error(rest.call("POST", f"/certificates/{name}/create", json={}), 400, "BadParameter")
    error(rest.call("POST", f"/certificates/{name}/create",
                    json={"policy": SELF, "tags": {"t": 1}}), 400, "BadParameter")
    error(rest.call("POST", "/certificates/bad_name/create", json={"policy": SELF}),
          400, "BadParameter")
    error(rest.call("GET", "/certificates?includePending=maybe"), 400, "BadParameter")
    absent(rest, name)


def test_policy_update_merges_and_validates(rest: Rest) -> None:
    name = unique()
    create(rest, name)
    r = rest.call("PATCH", f"/certificates/{name}/policy",
                  json={"key_props": {"kty": "EC", "crv": "P-256"},
                        "x509_props": {"validity_months": 24}})
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["key_props"]["kty"] == "EC" and p["key_props"]["crv"] == "P-256"
    assert p["x509_props"]["subject"] == "CN=wire.example.com"
    assert p["x509_props"]["validity_months"] == 24
    error(rest.call("PATCH", f"/certificates/{name}/policy",
                    json={"x509_props": {"validity_months": 5000}}), 400, "BadParameter")
    assert rest.call("GET", f"/certificates/{name}/policy").json() == p
    error(rest.call("GET", f"/certificates/{unique()}/policy"), 404, "CertificateNotFound")


# ---- Unknown issuer: pending, cancel, merge ---------------------------------------------------

UNKNOWN = {"issuer": {"name": "Unknown"}, "x509_props": {"subject": "CN=pending.example.com"}}


def test_pending_merge_flow(rest: Rest, server: DevServer) -> None:
    name = unique()
    op = create(rest, name, UNKNOWN)
    assert op["status"] == "inProgress" and op["issuer"] == {"name": "Unknown"}
    csr = x509.load_der_x509_csr(std_b64(op["csr"]))
    error(rest.call("GET", f"/certificates/{name}"), 404, "CertificateNotFound")
    listed = rest.call("GET", "/certificates?includePending=true&maxresults=25").json()
    names = set()
    page = listed
    while True:
        names |= {i["id"].rsplit("/", 1)[1] for i in page["value"]}
        if not page.get("nextLink"):
            break
        page = rest.session.get(page["nextLink"], headers={
            "Authorization": f"Bearer {rest.token}"}).json()
    assert name in names
    # a second create while one is in progress
    error(rest.call("POST", f"/certificates/{name}/create", json={"policy": UNKNOWN}),
          409, "Conflict")

    ca = LocalCA()
    wrong = ca.sign(csr.subject, rsa.generate_private_key(65537, 2048).public_key())
    error(rest.call("POST", f"/certificates/{name}/pending/merge",
                    json={"x5c": [der_b64(wrong)]}), 400, "BadParameter")
    error(rest.call("POST", f"/certificates/{name}/pending/merge", json={"x5c": ["***"]}),
          400, "BadParameter")
    error(rest.call("POST", f"/certificates/{name}/pending/merge", json={"x5c": []}),
          400, "BadParameter")
    assert rest.call("GET", f"/certificates/{name}/pending").json()["status"] == "inProgress"
    error(rest.call("GET", f"/certificates/{name}"), 404, "CertificateNotFound")

    signed = ca.sign(csr.subject, csr.public_key())
    r = rest.call("POST", f"/certificates/{name}/pending/merge",
                  json={"x5c": [der_b64(signed), der_b64(ca.cert)]})
    assert r.status_code == 201, r.text
    merged = r.json()
    assert x509.load_der_x509_certificate(std_b64(merged["cer"])) == signed
    done = rest.call("GET", f"/certificates/{name}/pending").json()
    assert done["status"] == "completed" and done["target"].endswith(f"/certificates/{name}")
    secret = rest.call("GET", f"/secrets/{name}").json()
    key, cert, chain = pkcs12.load_key_and_certificates(base64.b64decode(secret["value"]), None)
    assert cert == signed and chain == [ca.cert] and key is not None
    assert key.public_key().public_numbers() == csr.public_key().public_numbers()  # type: ignore[union-attr]


def test_cancel_then_delete_pending(rest: Rest) -> None:
    name = unique()
    create(rest, name, UNKNOWN)
    error(rest.call("PATCH", f"/certificates/{name}/pending",
                    json={"cancellation_requested": "yes"}), 400, "BadParameter")
    r = rest.call("PATCH", f"/certificates/{name}/pending", json={"cancellation_requested": True})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["cancellation_requested"] is True
    assert rest.call("GET", f"/certificates/{name}/pending").json()["status"] == "cancelled"
    error(rest.call("POST", f"/certificates/{name}/pending/merge", json={"x5c": ["AAAA"]}),
          400, "BadParameter")
    r = rest.call("DELETE", f"/certificates/{name}/pending")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    absent(rest, name)
    error(rest.call("DELETE", f"/certificates/{name}/pending"), 404,
          "PendingCertificateNotFound")
    # the name is free again
    create(rest, name)


# ---- import --------------------------------------------------------------------------------

def _pfx(key: Any, cert: x509.Certificate, password: bytes | None) -> str:
    enc = serialization.BestAvailableEncryption(password) if password \
        else serialization.NoEncryption()
    return base64.b64encode(pkcs12.serialize_key_and_certificates(None, key, cert, None, enc)
                            ).decode()


@pytest.fixture(scope="module")
def material() -> tuple[Any, x509.Certificate]:
    ca = LocalCA()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imported.example.com")])
    return key, ca.sign(name, key.public_key())


def test_import_reads_attributes_from_the_certificate(
        rest: Rest, material: tuple[Any, x509.Certificate]) -> None:
    key, cert = material
    name = unique()
    r = rest.call("POST", f"/certificates/{name}/import",
                  json={"value": _pfx(key, cert, b"pw"), "pwd": "pw"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["attributes"]["exp"] == int(cert.not_valid_after_utc.timestamp())
    assert body["attributes"]["nbf"] == int(cert.not_valid_before_utc.timestamp())
    assert body["policy"]["key_props"]["kty"] == "EC"
    assert body["policy"]["issuer"]["name"] == "Unknown"
    assert body["policy"]["x509_props"]["subject"] == "CN=imported.example.com"
    assert rest.call("GET", f"/keys/{name}").json()["key"]["crv"] == "P-256"
    error(rest.call("GET", f"/certificates/{name}/pending"), 404, "PendingCertificateNotFound")


@pytest.mark.parametrize("case", ["malformed", "wrong password", "no key", "other key",
                                  "not a string"])
def test_import_refusals(rest: Rest, material: tuple[Any, x509.Certificate], case: str) -> None:
    key, cert = material
    name = unique()
    other = ec.generate_private_key(ec.SECP256R1())
    body: dict[str, Any] = {
        "malformed": {"value": base64.b64encode(b"not a certificate").decode()},
        "wrong password": {"value": _pfx(key, cert, b"right"), "pwd": "wrong"},
        "no key": {"value": base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)
                                             ).decode()},
        "other key": {"value": (other.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM)
        ).decode(), "policy": {"secret_props": {"contentType": "application/x-pem-file"}}},
        "not a string": {"value": 12},
    }[case]
    err = error(rest.call("POST", f"/certificates/{name}/import", json=body), 400,
                "BadParameter")
    assert "right" not in err["message"] and "PRIVATE" not in err["message"]
    absent(rest, name)


# ---- delete, recover, purge, backup, restore ----------------------------------------------------

def test_delete_recover_purge_move_all_three(rest: Rest, server: DevServer) -> None:
    name = unique()
    create(rest, name)
    r = rest.call("DELETE", f"/certificates/{name}")
    assert r.status_code == 200, r.text
    deleted = r.json()
    assert deleted["recoveryId"] == f"{server.url}/deletedcertificates/{name}"
    assert deleted["scheduledPurgeDate"] > deleted["deletedDate"]
    absent(rest, name)
    assert rest.call("GET", f"/deletedcertificates/{name}").status_code == 200
    # the key and the secret can be neither recovered nor purged on their own
    error(rest.call("POST", f"/deletedkeys/{name}/recover"), 403, "Forbidden")
    error(rest.call("DELETE", f"/deletedsecrets/{name}"), 403, "Forbidden")
    error(rest.call("POST", f"/certificates/{name}/create", json={"policy": SELF}),
          409, "Conflict")
    r = rest.call("POST", f"/deletedcertificates/{name}/recover")
    assert r.status_code == 200, r.text
    for path in (f"/certificates/{name}", f"/keys/{name}", f"/secrets/{name}"):
        assert rest.call("GET", path).status_code == 200
    assert rest.call("DELETE", f"/certificates/{name}").status_code == 200
    assert rest.call("DELETE", f"/deletedcertificates/{name}").status_code == 204
    for path in (f"/deletedcertificates/{name}", f"/deletedkeys/{name}",
                 f"/deletedsecrets/{name}"):
        assert rest.call("GET", path).status_code == 404
    error(rest.call("DELETE", f"/deletedcertificates/{name}"), 404, "CertificateNotFound")


def test_backup_and_restore(rest: Rest) -> None:
    name = unique()
    create(rest, name)
    before = rest.call("GET", f"/certificates/{name}").json()
    secret = rest.call("GET", f"/secrets/{name}").json()["value"]
    blob = rest.call("POST", f"/certificates/{name}/backup").json()["value"]
    error(rest.call("POST", "/certificates/restore", json={"value": blob}), 409, "Conflict")
    error(rest.call("POST", "/keys/restore", json={"value": blob}), 400, "BadParameter")
    assert rest.call("DELETE", f"/certificates/{name}").status_code == 200
    assert rest.call("DELETE", f"/deletedcertificates/{name}").status_code == 204
    r = rest.call("POST", "/certificates/restore", json={"value": blob})
    assert r.status_code == 200, r.text
    after = r.json()
    assert after["id"] == before["id"] and after["cer"] == before["cer"]
    assert after["policy"] == before["policy"]
    assert rest.call("GET", f"/secrets/{name}").json()["value"] == secret
    assert rest.call("GET", f"/keys/{name}").json()["managed"] is True


def test_update_applies_to_the_version(rest: Rest) -> None:
    name = unique()
    create(rest, name)
    version = versions(rest, "certificates", name)[0]
    r = rest.call("PATCH", f"/certificates/{name}/{version}",
                  json={"attributes": {"enabled": False}, "tags": {"a": "b"}})
    assert r.status_code == 200, r.text
    assert r.json()["attributes"]["enabled"] is False and r.json()["tags"] == {"a": "b"}
    assert rest.call("GET", f"/keys/{name}").json()["attributes"]["enabled"] is False
    error(rest.call("PATCH", f"/certificates/{name}/{version}",
                    json={"attributes": {"enabled": "no"}}), 400, "BadParameter")
    assert rest.call("GET", f"/certificates/{name}").json()["attributes"]["enabled"] is False


# ---- lifetime actions on the injectable clock ----------------------------------------------------

@pytest.fixture
def at_server(server: DevServer) -> Iterator[Any]:
    opened: list[Deployment] = []

    def open_at(now: float) -> Deployment:
        d = Deployment.open(Settings(data_dir=server.data_dir, port=server.port),
                            clock=ManualClock(now))
        opened.append(d)
        return d

    yield open_at
    for d in opened:
        d.close()


def test_auto_renew_runs_once_across_workers(rest: Rest, server: DevServer,
                                             at_server: Any) -> None:
    name = unique()
    policy = {"issuer": {"name": "Self"},
              "x509_props": {"subject": "CN=renew", "validity_months": 1},
              "key_props": {"kty": "EC", "reuse_key": True},
              "lifetime_actions": [{"trigger": {"days_before_expiry": 10},
                                    "action": {"action_type": "AutoRenew"}},
                                   {"trigger": {"lifetime_percentage": 50},
                                    "action": {"action_type": "EmailContacts"}}]}
    create(rest, name, policy)
    first = rest.call("GET", f"/certificates/{name}").json()
    exp = first["attributes"]["exp"]
    early = at_server(exp - 20 * DAY)
    early.certificates.run_lifetime_actions()
    assert len(versions(rest, "certificates", name)) == 1
    one, two = at_server(exp - 5 * DAY), at_server(exp - 5 * DAY)
    seen = [r for r in two.repo.objects_with_policy("certificates") if r.latest.name == name]
    one.certificates.run_lifetime_actions()
    two.repo.objects_with_policy = lambda collection: seen  # type: ignore[method-assign]
    two.certificates.run_lifetime_actions()
    renewed = versions(rest, "certificates", name)
    assert len(renewed) == 2
    assert versions(rest, "keys", name) == renewed == versions(rest, "secrets", name)
    latest = rest.call("GET", f"/certificates/{name}").json()
    assert latest["id"] != first["id"]
    old_key = rest.call("GET", f"/keys/{name}/{first['id'].rsplit('/', 1)[1]}").json()["key"]
    new_key = rest.call("GET", f"/keys/{name}").json()["key"]
    assert (old_key["x"], old_key["y"]) == (new_key["x"], new_key["y"])  # reuse_key
    events = [(e.type, e.version) for e in one.repo.list_events() if e.object_name == name]
    version = first["id"].rsplit("/", 1)[1]
    assert events.count(("CertificateRenewed", version)) == 1
    assert events.count(("CertificateNearExpiry", version)) == 1


def test_update_with_a_bad_policy_changes_nothing(rest: Rest) -> None:
    name = unique()
    create(rest, name)
    before = rest.call("GET", f"/certificates/{name}").json()
    error(rest.call("PATCH", f"/certificates/{name}/",
                    json={"attributes": {"enabled": False}, "tags": {"x": "y"},
                          "policy": {"key_props": {"kty": "RSA", "key_size": 1000}}}),
          400, "BadParameter")
    assert rest.call("GET", f"/certificates/{name}").json() == before


def test_cancelling_a_completed_operation_changes_nothing(rest: Rest) -> None:
    name = unique()
    create(rest, name)
    done = rest.call("GET", f"/certificates/{name}/pending").json()
    r = rest.call("PATCH", f"/certificates/{name}/pending", json={"cancellation_requested": True})
    assert r.status_code == 200 and r.json() == done
    assert rest.call("GET", f"/certificates/{name}/pending").json() == done


# ---- authorization: a principal without a role -------------------------------------------------

@pytest.fixture(scope="module")
def stranger(server: DevServer, deployment: Deployment) -> str:
    record, _ = deployment.directory.create(f"stranger-{uuid.uuid4().hex[:8]}")
    who = Principal(record.object_id, record.tenant_id, record.client_id)
    return deployment.tokens.issue(who, resource(server)).access_token


def test_every_operation_is_authorized_first(rest: Rest, stranger: str) -> None:
    name = unique()
    create(rest, name)
    pending = unique()
    create(rest, pending, UNKNOWN)
    version = versions(rest, "certificates", name)[0]
    before = rest.call("GET", f"/certificates/{name}").json()
    blob = rest.call("POST", f"/certificates/{name}/backup").json()["value"]
    fresh = unique()
    calls = [
        ("POST", f"/certificates/{fresh}/create", {"policy": SELF}),
        ("POST", f"/certificates/{fresh}/import", {"value": "AAAA"}),
        ("GET", f"/certificates/{name}", None),
        ("GET", f"/certificates/{name}/{version}", None),
        ("GET", "/certificates", None),
        ("GET", f"/certificates/{name}/versions", None),
        ("PATCH", f"/certificates/{name}/{version}", {"attributes": {"enabled": False}}),
        ("GET", f"/certificates/{name}/policy", None),
        ("PATCH", f"/certificates/{name}/policy", {"x509_props": {"validity_months": 2}}),
        ("GET", f"/certificates/{pending}/pending", None),
        ("PATCH", f"/certificates/{pending}/pending", {"cancellation_requested": True}),
        ("DELETE", f"/certificates/{pending}/pending", None),
        ("POST", f"/certificates/{pending}/pending/merge", {"x5c": ["AAAA"]}),
        ("DELETE", f"/certificates/{name}", None),
        ("POST", f"/certificates/{name}/backup", None),
        ("POST", "/certificates/restore", {"value": blob}),
        ("GET", "/deletedcertificates", None),
        ("GET", f"/deletedcertificates/{name}", None),
        ("POST", f"/deletedcertificates/{name}/recover", None),
        ("DELETE", f"/deletedcertificates/{name}", None),
    ]
    for method, path, body in calls:
        r = rest.call(method, path, token=stranger, json=body)
        err = error(r, 403, "Forbidden")
        assert err["innererror"]["code"] == "ForbiddenByRbac", (method, path)
    assert rest.call("GET", f"/certificates/{name}").json() == before
    assert rest.call("GET", f"/certificates/{pending}/pending").json()["status"] == "inProgress"
    absent(rest, fresh)


@pytest.mark.parametrize("name", ["issuers", "contacts", "Issuers"])
def test_issuers_and_contacts_are_not_certificate_names(rest: Rest, name: str) -> None:
    """/certificates/issuers and /certificates/contacts belong to the vault's issuers and
    contacts: creating or importing a certificate of that name is refused, and those
    collections are left as they were."""
    before = rest.call("GET", "/certificates/issuers").json()
    error(rest.call("POST", f"/certificates/{name}/create", json={"policy": SELF}),
          400, "BadParameter")
    error(rest.call("POST", f"/certificates/{name}/import", json={"value": "AAAA"}),
          400, "BadParameter")
    assert rest.call("GET", "/certificates/issuers").json() == before
    # A certificate of that name would have made a key and a secret of that name.
    error(rest.call("GET", f"/keys/{name}"), 404, "KeyNotFound")
    error(rest.call("GET", f"/secrets/{name}"), 404, "SecretNotFound")


def test_include_pending_carries_over_to_the_next_page(rest: Rest) -> None:
    """The next link of a list with includePending keeps it, so later pages list pending
    certificates too (the SDK follows nextLink as it is)."""
    for _ in range(2):
        create(rest, unique(), UNKNOWN)
    first = rest.call("GET", "/certificates?includePending=true&maxresults=1").json()
    assert len(first["value"]) == 1
    assert "includePending=true" in first["nextLink"], first["nextLink"]
    plain = rest.call("GET", "/certificates?maxresults=1").json()
    assert plain["nextLink"] is None or "includePending" not in plain["nextLink"]
