"""Certificate issuers, contacts and the built-in CA's root over raw HTTPS: who may do what
(RBAC and access policies), input refusals, the issuer password kept write-only and sealed.

Every test works on a vault of its own, reached with its Host header; every refusal is
checked for its status and code, and for having changed nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509

from openkeyvault.access.principals import Principal
from openkeyvault.deployment import Deployment
from openkeyvault.vault.contacts import MAX_CONTACTS
from openkeyvault.vault.controlrequests import AccessPolicy, Permissions, VaultSettings
from openkeyvault.vault.issuers import MAX_ISSUERS
from tests.security.conftest import Rest, resource
from tests.security.test_at_rest import assert_absent, database_files
from tests.support.server import DevServer

HELP = "https://go.microsoft.com/fwlink/?linkid=2125287"
ISSUER = {"provider": "DigiCert", "credentials": {"account_id": "acct", "pwd": "x"},
          "org_details": {"id": "org", "admin_details": [
              {"first_name": "Ada", "last_name": "Admin", "email": "ada@example.com",
               "phone": "555"}]},
          "attributes": {"enabled": True}}
CONTACTS = {"contacts": [{"email": "ops@example.com", "name": "Ops", "phone": "1"}]}

Call = Callable[..., requests.Response]


def new_vault(d: Deployment) -> str:
    return str(d.vaults.create(f"ci{uuid.uuid4().hex[:10]}").name)


def on(rest: Rest, server: DevServer, vault: str, token: str | None = "dev") -> Call:
    """Raw calls to `vault` (by Host header) with `token`."""
    host = {"Host": f"{vault}.vault.localhost:{server.port}"}

    def call(method: str, path: str, **kw: Any) -> requests.Response:
        return rest.call(method, path, token=token, headers=host, **kw)

    return call


def principal_token(d: Deployment, server: DevServer, role: str | None = None
                    ) -> tuple[Principal, str]:
    record, _ = d.directory.create(f"ci-{uuid.uuid4().hex[:8]}")
    p = Principal(record.object_id, record.tenant_id, record.client_id)
    if role is not None:
        d.rbac.assign(p.object_id, role, "/")
    return p, d.tokens.issue(p, resource(server)).access_token


def error(r: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["code"] == code, err
    return err


def forbidden_by_rbac(r: requests.Response, action: str) -> None:
    err = error(r, 403, "Forbidden")
    assert err["innererror"] == {"code": "ForbiddenByRbac"}
    assert f"Action: 'Microsoft.KeyVault/vaults/{action}'" in err["message"]


def state(call: Call) -> tuple[list[Any], Any, Any]:
    """What the vault holds (as the dev identity sees it): issuers, one issuer, contacts."""
    issuers = call("GET", "/certificates/issuers").json()["value"]
    one = call("GET", "/certificates/issuers/kept")
    contacts = call("GET", "/certificates/contacts")
    return issuers, (one.status_code, one.json()), (contacts.status_code, contacts.json())


@pytest.fixture
def vault(deployment: Deployment, rest: Rest, server: DevServer) -> str:
    """A vault holding issuer `kept` and one contact."""
    name = new_vault(deployment)
    call = on(rest, server, name)
    assert call("PUT", "/certificates/issuers/kept", json=ISSUER).status_code == 200
    assert call("PUT", "/certificates/contacts", json=CONTACTS).status_code == 200
    return name


# ---- wire shapes -------------------------------------------------------------------------
def test_issuer_bundle_shape(rest: Rest, server: DevServer, vault: str) -> None:
    call = on(rest, server, vault)
    body = call("GET", "/certificates/issuers/kept").json()
    base = f"https://{vault}.vault.localhost:{server.port}"
    attrs = body.pop("attributes")
    assert body == {"id": f"{base}/certificates/issuers/kept", "provider": "DigiCert",
                    "credentials": {"account_id": "acct"},
                    "org_details": ISSUER["org_details"]}
    assert set(attrs) == {"enabled", "created", "updated"} and attrs["enabled"] is True
    listed = call("GET", "/certificates/issuers").json()
    assert listed == {"value": [{"id": f"{base}/certificates/issuers/kept",
                                 "provider": "DigiCert"}], "nextLink": None}
    contacts = call("GET", "/certificates/contacts").json()
    assert contacts == {"id": f"{base}/certificates/contacts", **CONTACTS}


def test_paging_follows_next_links(rest: Rest, server: DevServer, deployment: Deployment
                                   ) -> None:
    call = on(rest, server, new_vault(deployment))
    for i in range(5):
        assert call("PUT", f"/certificates/issuers/p{i}", json={"provider": "T"}).ok
    seen, path, query = [], "/certificates/issuers", "api-version=7.5&maxresults=2"
    while True:
        page = call("GET", path, query=query).json()
        assert len(page["value"]) <= 2
        seen += [i["id"].rsplit("/", 1)[1] for i in page["value"]]
        if not page["nextLink"]:
            break
        path, _, query = page["nextLink"].split(str(server.port), 1)[1].partition("?")
    assert seen == [f"p{i}" for i in range(5)]
    error(call("GET", "/certificates/issuers", query="api-version=7.5&maxresults=26"),
          400, "BadParameter")
    error(call("GET", "/certificates/issuers", query="api-version=7.5&$skiptoken=bogus"),
          400, "BadParameter")


# ---- RBAC ----------------------------------------------------------------------------------
def test_no_role_refused_everything_and_nothing_changes(
        rest: Rest, server: DevServer, deployment: Deployment, vault: str) -> None:
    admin = on(rest, server, vault)
    before = state(admin)
    _, token = principal_token(deployment, server)
    call = on(rest, server, vault, token)
    forbidden_by_rbac(call("GET", "/certificates/issuers"), "certificatecas/read")
    forbidden_by_rbac(call("GET", "/certificates/issuers/kept"), "certificatecas/read")
    forbidden_by_rbac(call("PUT", "/certificates/issuers/new", json={"provider": "X"}),
                      "certificatecas/write")
    forbidden_by_rbac(call("PUT", "/certificates/issuers/kept", json={"provider": "X"}),
                      "certificatecas/write")
    forbidden_by_rbac(call("PATCH", "/certificates/issuers/kept",
                           json={"attributes": {"enabled": False}}), "certificatecas/write")
    forbidden_by_rbac(call("DELETE", "/certificates/issuers/kept"), "certificatecas/delete")
    forbidden_by_rbac(call("GET", "/certificates/contacts"), "certificates/read")
    forbidden_by_rbac(call("PUT", "/certificates/contacts",
                           json={"contacts": [{"email": "evil@example.com"}]}),
                      "certificatecontacts/write")
    forbidden_by_rbac(call("DELETE", "/certificates/contacts"), "certificatecontacts/write")
    assert state(admin) == before
    assert admin("GET", "/certificates/issuers/new").status_code == 404


def test_certificate_user_reads_contacts_only(rest: Rest, server: DevServer,
                                              deployment: Deployment, vault: str) -> None:
    admin = on(rest, server, vault)
    before = state(admin)
    _, token = principal_token(deployment, server, "Key Vault Certificate User")
    call = on(rest, server, vault, token)
    assert call("GET", "/certificates/contacts").json()["contacts"] == CONTACTS["contacts"]
    forbidden_by_rbac(call("PUT", "/certificates/contacts", json=CONTACTS),
                      "certificatecontacts/write")
    forbidden_by_rbac(call("DELETE", "/certificates/contacts"), "certificatecontacts/write")
    forbidden_by_rbac(call("GET", "/certificates/issuers"), "certificatecas/read")
    forbidden_by_rbac(call("PUT", "/certificates/issuers/kept", json={"provider": "X"}),
                      "certificatecas/write")
    assert state(admin) == before


def test_certificates_officer_manages_issuers_and_contacts(
        rest: Rest, server: DevServer, deployment: Deployment, vault: str) -> None:
    _, token = principal_token(deployment, server, "Key Vault Certificates Officer")
    call = on(rest, server, vault, token)
    assert call("PUT", "/certificates/issuers/mine", json={"provider": "OpenKeyVault"}).ok
    assert call("PATCH", "/certificates/issuers/mine",
                json={"attributes": {"enabled": False}}).json()["attributes"]["enabled"] is False
    assert [i["provider"] for i in call("GET", "/certificates/issuers").json()["value"]] == \
        ["DigiCert", "OpenKeyVault"]
    assert call("DELETE", "/certificates/issuers/mine").json()["provider"] == "OpenKeyVault"
    assert call("PUT", "/certificates/contacts",
                json={"contacts": [{"email": "o@example.com"}]}).ok
    assert call("DELETE", "/certificates/contacts").json()["contacts"] == \
        [{"email": "o@example.com"}]


# ---- access policies -------------------------------------------------------------------------
def access_denied(r: requests.Response, server: DevServer, vault: str, p: Principal,
                  missing: str) -> None:
    err = error(r, 403, "Forbidden")
    assert err["innererror"] == {"code": "AccessDenied"}
    issuer = f"https://localhost:{server.port}/{p.tenant_id}/v2.0"
    assert err["message"] == (
        f"The user, group or application 'appid={p.app_id};oid={p.object_id};iss={issuer}' "
        f"does not have {missing} permission on key vault '{vault};location=local'. "
        f"For help resolving this issue, please see {HELP}")


def test_access_policy_permissions(rest: Rest, server: DevServer, deployment: Deployment,
                                   vault: str) -> None:
    admin = on(rest, server, vault)
    perms = {"getter": ["getissuers"], "lister": ["listissuers"], "setter": ["setissuers"],
             "manager": ["manageissuers", "managecontacts"], "contacts": ["managecontacts"],
             "reader": ["get", "list"]}
    who = {k: principal_token(deployment, server) for k in perms}
    before = state(admin)
    props = deployment.vault_properties
    props.replace(vault, VaultSettings(enable_rbac_authorization=False, access_policies=[
        AccessPolicy(tenant_id=who[k][0].tenant_id, object_id=who[k][0].object_id,
                     permissions=Permissions(certificates=v)) for k, v in perms.items()]))
    c = {k: on(rest, server, vault, t) for k, (_, t) in who.items()}
    p = {k: pt[0] for k, pt in who.items()}

    assert c["getter"]("GET", "/certificates/issuers/kept").json()["provider"] == "DigiCert"
    access_denied(c["getter"]("GET", "/certificates/issuers"), server, vault, p["getter"],
                  "certificates listissuers")
    assert [i["provider"] for i in c["lister"]("GET", "/certificates/issuers").json()["value"]] \
        == ["DigiCert"]
    access_denied(c["lister"]("GET", "/certificates/issuers/kept"), server, vault,
                  p["lister"], "certificates getissuers")
    access_denied(c["setter"]("DELETE", "/certificates/issuers/kept"), server, vault,
                  p["setter"], "certificates deleteissuers")
    access_denied(c["getter"]("PUT", "/certificates/issuers/kept", json={"provider": "X"}),
                  server, vault, p["getter"], "certificates setissuers")
    for k in ("reader", "getter"):
        access_denied(c[k]("GET", "/certificates/contacts"), server, vault, p[k],
                      "certificates managecontacts")
        access_denied(c[k]("PUT", "/certificates/contacts", json=CONTACTS), server, vault,
                      p[k], "certificates managecontacts")
    assert state(c["manager"]) == before

    assert c["contacts"]("GET", "/certificates/contacts").json()["contacts"] == \
        CONTACTS["contacts"]
    assert c["setter"]("PATCH", "/certificates/issuers/kept",
                       json={"provider": "GlobalSign"}).json()["provider"] == "GlobalSign"
    m = c["manager"]
    assert m("GET", "/certificates/issuers/kept").json()["provider"] == "GlobalSign"
    assert m("DELETE", "/certificates/issuers/kept").ok
    assert m("GET", "/certificates/issuers").json()["value"] == []
    assert c["contacts"]("DELETE", "/certificates/contacts").ok


# ---- input refusals --------------------------------------------------------------------------
BAD_ISSUERS: dict[str, tuple[str, Any]] = {
    "reserved Self": ("Self", {"provider": "X"}),
    "reserved unknown": ("UNKNOWN", {"provider": "X"}),
    "bad name": ("bad_name", {"provider": "X"}),
    "long name": ("n" * 128, {"provider": "X"}),
    "no provider": ("new", {}),
    "empty provider": ("new", {"provider": ""}),
    "provider not a string": ("new", {"provider": 7}),
    "long provider": ("new", {"provider": "p" * 129}),
    "control chars": ("new", {"provider": "a\nb"}),
    "credentials not an object": ("new", {"provider": "X", "credentials": "pw"}),
    "long account": ("new", {"provider": "X", "credentials": {"account_id": "a" * 257}}),
    "long password": ("new", {"provider": "X", "credentials": {"pwd": "p" * 1025}}),
    "password not a string": ("new", {"provider": "X", "credentials": {"pwd": 5}}),
    "org not an object": ("new", {"provider": "X", "org_details": []}),
    "admins not a list": ("new", {"provider": "X", "org_details": {"admin_details": {}}}),
    "too many admins": ("new", {"provider": "X", "org_details": {
        "admin_details": [{"first_name": "a"}] * 21}}),
    "bad admin email": ("new", {"provider": "X", "org_details": {
        "admin_details": [{"email": "nobody"}]}}),
    "enabled not a bool": ("new", {"provider": "X", "attributes": {"enabled": "yes"}}),
    "attributes not an object": ("new", {"provider": "X", "attributes": [True]}),
}


@pytest.mark.parametrize("case", list(BAD_ISSUERS))
def test_bad_issuer_refused_and_nothing_stored(case: str, rest: Rest, server: DevServer,
                                               vault: str) -> None:
    call = on(rest, server, vault)
    before = state(call)
    name, body = BAD_ISSUERS[case]
    err = error(call("PUT", f"/certificates/issuers/{name}", json=body), 400, "BadParameter")
    assert "p" * 200 not in err["message"]
    assert state(call) == before


def test_bad_patch_refused_and_nothing_changes(rest: Rest, server: DevServer,
                                               vault: str) -> None:
    call = on(rest, server, vault)
    before = state(call)
    for body in ({"provider": ""}, {"credentials": {"pwd": ""}}, {"attributes": {"enabled": 1}},
                 {"org_details": {"admin_details": [{"email": "x@"}]}}):
        error(call("PATCH", "/certificates/issuers/kept", json=body), 400, "BadParameter")
    error(call("PATCH", "/certificates/issuers/kept", data=b"{not json"), 400, "BadParameter")
    error(call("PATCH", "/certificates/issuers/missing", json={"provider": "X"}),
          404, "CertificateIssuerNotFound")
    error(call("DELETE", "/certificates/issuers/missing"), 404, "CertificateIssuerNotFound")
    error(call("GET", "/certificates/issuers/Self"), 404, "CertificateIssuerNotFound")
    assert state(call) == before


BAD_CONTACTS: dict[str, Any] = {
    "none": {},
    "empty": {"contacts": []},
    "not a list": {"contacts": {"email": "a@example.com"}},
    "no email": {"contacts": [{"name": "A"}]},
    "bad email": {"contacts": [{"email": "a@b"}]},
    "long name": {"contacts": [{"email": "a@example.com", "name": "n" * 257}]},
    "long phone": {"contacts": [{"email": "a@example.com", "phone": "1" * 65}]},
    "entry not an object": {"contacts": ["a@example.com"]},
    "too many": {"contacts": [{"email": f"c{i}@example.com"} for i in range(MAX_CONTACTS + 1)]},
}


@pytest.mark.parametrize("case", list(BAD_CONTACTS))
def test_bad_contacts_refused_and_nothing_changes(case: str, rest: Rest, server: DevServer,
                                                  vault: str) -> None:
    call = on(rest, server, vault)
    before = state(call)
    error(call("PUT", "/certificates/contacts", json=BAD_CONTACTS[case]), 400, "BadParameter")
    assert state(call) == before


def test_at_most_max_issuers(rest: Rest, server: DevServer, deployment: Deployment) -> None:
    call = on(rest, server, new_vault(deployment))
    for i in range(MAX_ISSUERS):
        assert call("PUT", f"/certificates/issuers/i{i:03d}", json={"provider": "T"}).ok
    err = error(call("PUT", "/certificates/issuers/one-more", json={"provider": "T"}),
                400, "BadParameter")
    assert str(MAX_ISSUERS) in err["message"]
    error(call("GET", "/certificates/issuers/one-more"), 404, "CertificateIssuerNotFound")
    # replacing an existing one is still allowed
    assert call("PUT", "/certificates/issuers/i000", json={"provider": "U"}).json()[
        "provider"] == "U"


def test_body_size_limit(rest: Rest, server: DevServer, vault: str) -> None:
    call = on(rest, server, vault)
    before = state(call)
    huge = json.dumps({"provider": "X", "credentials": {"pwd": "p" * 300_000}})
    error(call("PUT", "/certificates/issuers/huge", data=huge), 413, "RequestEntityTooLarge")
    assert state(call) == before


# ---- the password: write-only, sealed at rest -------------------------------------------------
def test_password_never_returned_nor_stored_in_clear(rest: Rest, server: DevServer,
                                                     deployment: Deployment) -> None:
    vault = new_vault(deployment)
    call = on(rest, server, vault)
    pw = f"ISSUER-PW-{uuid.uuid4().hex}"
    pw2 = f"ISSUER-PW2-{uuid.uuid4().hex}"
    answers = [call("PUT", "/certificates/issuers/pw",
                    json={"provider": "T", "credentials": {"account_id": "a", "pwd": pw}})]
    answers.append(call("PATCH", "/certificates/issuers/pw", json={"credentials": {"pwd": pw2}}))
    answers += [call("GET", "/certificates/issuers/pw"), call("GET", "/certificates/issuers"),
                call("DELETE", "/certificates/issuers/pw")]
    for r in answers:
        assert r.ok, r.text
        assert pw not in r.text and pw2 not in r.text and "pwd" not in r.text
    assert answers[1].json()["credentials"] == {"account_id": "a"}  # account kept by PATCH
    call("PUT", "/certificates/issuers/kept-pw",
         json={"provider": "T", "credentials": {"pwd": pw2}})
    everything = b"".join(database_files(server.data_dir).values())
    for value in (pw, pw2):
        assert_absent(everything, value, "the database files")
    assert_absent(server.log().encode(), pw2, "the server log")


# ---- the built-in CA's root ------------------------------------------------------------------
def test_ca_pem_is_public_and_matches_the_cli(rest: Rest, server: DevServer) -> None:
    r = rest.session.get(f"{server.url}/ca.pem")  # no Authorization header
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-pem-file")
    root = x509.load_pem_x509_certificate(r.content)
    assert root.subject == root.issuer
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    shown = server.okv("ca", "show")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.encode() == r.content
    # the same root on a vault host, and it is not the TLS development CA
    again = rest.session.get(f"{server.url}/ca.pem",
                             headers={"Host": f"dev.vault.localhost:{server.port}"})
    assert again.content == r.content
    tls_ca = x509.load_pem_x509_certificate(Path(server.ca).read_bytes())
    assert tls_ca.subject != root.subject


def test_ca_pem_refuses_other_methods(rest: Rest, server: DevServer) -> None:
    before = rest.session.get(f"{server.url}/ca.pem").content
    r = rest.session.post(f"{server.url}/ca.pem", data=b"-----BEGIN CERTIFICATE-----")
    error(r, 405, "MethodNotAllowed")
    assert rest.session.get(f"{server.url}/ca.pem").content == before
