"""Certificate issuer and contacts routes: wire JSON → request model → IssuerService /
ContactService call → wire JSON, and the issuing CA's root certificate at GET /ca.pem."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from openkeyvault.api import render
from openkeyvault.api.http import Ctx, json_response
from openkeyvault.api.models import decode_body
from openkeyvault.api.models.issuers import (
    CertificateIssuerSetParameters,
    CertificateIssuerUpdateParameters,
    Contacts,
)
from openkeyvault.api.router import Route, pattern
from openkeyvault.crypto.authority import CertificateAuthority
from openkeyvault.vault import operations
from openkeyvault.vault.contacts import Contact, ContactService
from openkeyvault.vault.issuers import IssuerBundle, IssuerService
from openkeyvault.vault.operations import CONTACTS as CONTACTS_PATH

CA_PATH = "/ca.pem"
PEM_TYPE = "application/x-pem-file"


def issuer_id(base: str, name: str) -> str:
    return f"{base}/certificates/issuers/{name}"


def issuer(base: str, b: IssuerBundle) -> dict[str, Any]:
    """IssuerBundle; the password is never part of it."""
    out: dict[str, Any] = {"id": issuer_id(base, b.name), "provider": b.provider}
    if b.account_id is not None:
        out["credentials"] = {"account_id": b.account_id}
    if b.org_details:
        out["org_details"] = b.org_details
    out["attributes"] = {"enabled": b.enabled, "created": b.created, "updated": b.updated}
    return out


def contacts(base: str, items: list[Contact]) -> dict[str, Any]:
    return {"id": f"{base}/certificates/contacts", "contacts": [c.to_dict() for c in items]}


class IssuerRoutes:
    def __init__(self, service: IssuerService) -> None:
        self.s = service

    def list(self, ctx: Ctx) -> Response:
        page = self.s.list(ctx.caller, ctx.query.get("maxresults"), ctx.query.get("$skiptoken"))
        items = [{"id": issuer_id(ctx.base, b.name), "provider": b.provider}
                 for b in page.items]
        return json_response(render.page(ctx.base, ctx.path, ctx.api_version,
                                         ctx.query.get("maxresults"), page, items))

    def get(self, ctx: Ctx) -> Response:
        return json_response(issuer(ctx.base, self.s.get(ctx.caller, ctx.params["name"])))

    def set(self, ctx: Ctx) -> Response:
        p = decode_body(ctx, CertificateIssuerSetParameters)
        b = self.s.set(ctx.caller, ctx.params["name"], p.to_request())
        return json_response(issuer(ctx.base, b))

    def update(self, ctx: Ctx) -> Response:
        p = decode_body(ctx, CertificateIssuerUpdateParameters)
        b = self.s.update(ctx.caller, ctx.params["name"], p.to_request())
        return json_response(issuer(ctx.base, b))

    def delete(self, ctx: Ctx) -> Response:
        return json_response(issuer(ctx.base, self.s.delete(ctx.caller, ctx.params["name"])))


class ContactRoutes:
    def __init__(self, service: ContactService) -> None:
        self.s = service

    def get(self, ctx: Ctx) -> Response:
        return json_response(contacts(ctx.base, self.s.get(ctx.caller)))

    def set(self, ctx: Ctx) -> Response:
        given = decode_body(ctx, Contacts).to_request()
        return json_response(contacts(ctx.base, self.s.set(ctx.caller, given)))

    def delete(self, ctx: Ctx) -> Response:
        return json_response(contacts(ctx.base, self.s.delete(ctx.caller)))


def ca_pem(ca: CertificateAuthority) -> Response:
    """The issuing CA's root certificate (public; no authentication)."""
    return Response(ca.root_pem(), media_type=PEM_TYPE,
                    headers={"Content-Disposition": 'attachment; filename="ca.pem"'})


def issuer_routes(issuers: IssuerService, contact_service: ContactService) -> list[Route]:
    """/certificates/issuers[/{name}] and /certificates/contacts. Their literal segments
    make them win over the /certificates/{name}/... patterns."""
    i, c = IssuerRoutes(issuers), ContactRoutes(contact_service)
    table = [
        ("GET", "/certificates/issuers", i.list, "CertificateIssuersList"),
        ("GET", "/certificates/issuers/{name}", i.get, "CertificateIssuerGet"),
        ("PUT", "/certificates/issuers/{name}", i.set, "CertificateIssuerSet"),
        ("PATCH", "/certificates/issuers/{name}", i.update, "CertificateIssuerUpdate"),
        ("DELETE", "/certificates/issuers/{name}", i.delete, "CertificateIssuerDelete"),
        ("GET", CONTACTS_PATH, c.get, "CertificateContactsGet"),
        ("PUT", CONTACTS_PATH, c.set, "CertificateContactsSet"),
        ("DELETE", CONTACTS_PATH, c.delete, "CertificateContactsDelete"),
    ]
    return [Route(m, pattern(p), h, inline=(m == "GET"), operation=operations.get(op))
            for m, p, h, op in table]
