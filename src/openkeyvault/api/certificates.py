"""Certificates routes: wire JSON → request model → CertificateService call → wire JSON
(issuers and contacts have their own module)."""

from __future__ import annotations

import base64
from typing import Any

from starlette.responses import Response

from openkeyvault.api import render
from openkeyvault.api.http import Ctx, json_response
from openkeyvault.api.models import decode_body
from openkeyvault.api.models.certificates import (
    CertificateCreateParameters,
    CertificateImportParameters,
    CertificateMergeParameters,
    CertificateOperationUpdateParameter,
    CertificatePolicy,
    CertificateRestoreParameters,
    CertificateUpdateParameters,
)
from openkeyvault.api.objects import ObjectRoutes
from openkeyvault.api.router import CERTIFICATE_RESTORE_BODY_LIMIT, Route, pattern
from openkeyvault.crypto.encoding import b64url_encode
from openkeyvault.vault import operations
from openkeyvault.vault.certificates import (
    CertificateBundle,
    CertificateOperation,
    CertificateService,
    PolicyBundle,
)

IMPORT_BODY_LIMIT = 256 * 1024


def _std(data: bytes) -> str:
    return base64.b64encode(data).decode()


def policy(base: str, p: PolicyBundle) -> dict[str, Any]:
    stored = p.policy
    out: dict[str, Any] = {"id": f"{base}/certificates/{p.name}/policy"}
    for k in ("key_props", "secret_props", "x509_props", "lifetime_actions", "issuer",
              "attributes", "platformManaged"):
        if stored.get(k) is not None:
            out[k] = stored[k]
    return out


def certificate(base: str, b: CertificateBundle, *, versioned: bool = True,
                item: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if b.deleted is not None:
        out.update(recoveryId=f"{base}/deletedcertificates/{b.name}",
                   deletedDate=b.deleted.deleted_date,
                   scheduledPurgeDate=b.deleted.scheduled_purge_date)
    suffix = f"{b.name}/{b.version}" if versioned else b.name
    out["id"] = f"{base}/certificates/{suffix}"
    if not item:
        out["kid"] = f"{base}/keys/{b.name}/{b.version}"
        out["sid"] = f"{base}/secrets/{b.name}/{b.version}"
    if b.x5t:
        out["x5t"] = b64url_encode(b.x5t)
    if not item:
        out["cer"] = _std(b.cer)
        if b.content_type is not None:
            out["contentType"] = b.content_type
    out["attributes"] = render.attributes(b.attributes)
    if b.tags is not None:
        out["tags"] = b.tags
    if not item and b.policy is not None:
        out["policy"] = policy(base, PolicyBundle(b.name, b.policy))
    if not item and b.preserve_order is not None:
        out["preserveCertOrder"] = b.preserve_order
    return out


def operation(base: str, op: CertificateOperation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": f"{base}/certificates/{op.name}/pending",
        "issuer": op.issuer,
    }
    if op.csr is not None:
        out["csr"] = _std(op.csr)
    out["cancellation_requested"] = op.cancellation_requested
    out["status"] = op.status
    if op.status_details is not None:
        out["status_details"] = op.status_details
    if op.error is not None:
        out["error"] = op.error
    if op.target_version is not None:
        out["target"] = f"{base}/certificates/{op.name}"
    if op.preserve_order is not None:
        out["preserveCertOrder"] = op.preserve_order
    out["request_id"] = op.request_id
    return out


class CertificateRoutes(ObjectRoutes):
    s: CertificateService
    restore_model = CertificateRestoreParameters

    def __init__(self, service: CertificateService) -> None:
        self.s = service

    def bundle(self, base: str, b: Any) -> dict[str, Any]:
        return certificate(base, b)

    def item(self, base: str, b: Any, versioned: bool) -> dict[str, Any]:
        return certificate(base, b, versioned=versioned, item=True)

    def list(self, ctx: Ctx) -> Response:
        p = self.s.list_certificates(ctx.caller, ctx.query.get("maxresults"),
                                     ctx.query.get("$skiptoken"),
                                     ctx.query.get("includePending"))
        pending = ctx.query.get("includePending")
        return self._list(ctx, p, versioned=False,
                          keep={"includePending": pending} if pending else None)

    def create(self, ctx: Ctx) -> Response:
        p = decode_body(ctx, CertificateCreateParameters)
        op = self.s.create(ctx.caller, ctx.params["name"], p.to_request())
        return json_response(operation(ctx.base, op), status=202)

    def import_certificate(self, ctx: Ctx) -> Response:
        p = decode_body(ctx, CertificateImportParameters)
        b = self.s.import_certificate(ctx.caller, ctx.params["name"], p.to_request())
        return json_response(certificate(ctx.base, b))

    def get(self, ctx: Ctx) -> Response:
        b = self.s.get(ctx.caller, ctx.params["name"], ctx.params.get("version"))
        return json_response(certificate(ctx.base, b))

    def update(self, ctx: Ctx) -> Response:
        p = decode_body(ctx, CertificateUpdateParameters)
        b = self.s.update(ctx.caller, ctx.params["name"], ctx.params.get("version"),
                          p.to_request())
        return json_response(certificate(ctx.base, b))

    def get_policy(self, ctx: Ctx) -> Response:
        return json_response(policy(ctx.base, self.s.get_policy(ctx.caller,
                                                                ctx.params["name"])))

    def update_policy(self, ctx: Ctx) -> Response:
        given = decode_body(ctx, CertificatePolicy)
        p = self.s.update_policy(ctx.caller, ctx.params["name"], given.to_request())
        return json_response(policy(ctx.base, p))

    def get_operation(self, ctx: Ctx) -> Response:
        op = self.s.get_operation(ctx.caller, ctx.params["name"])
        return json_response(operation(ctx.base, op))

    def cancel_operation(self, ctx: Ctx) -> Response:
        p = decode_body(ctx, CertificateOperationUpdateParameter)
        op = self.s.cancel_operation(ctx.caller, ctx.params["name"], p.cancellation_requested)
        return json_response(operation(ctx.base, op))

    def delete_operation(self, ctx: Ctx) -> Response:
        op = self.s.delete_operation(ctx.caller, ctx.params["name"])
        return json_response(operation(ctx.base, op))

    def merge(self, ctx: Ctx) -> Response:
        p = decode_body(ctx, CertificateMergeParameters)
        b = self.s.merge(ctx.caller, ctx.params["name"], p.to_request())
        return json_response(certificate(ctx.base, b), status=201)


def certificate_routes(d: Any) -> list[Route]:
    c = CertificateRoutes(d.certificates)
    table = [
        ("GET", "/certificates", c.list, 0, "CertificateList"),
        ("POST", "/certificates/{name}/create", c.create, 0, "CertificateCreate"),
        ("POST", "/certificates/{name}/import", c.import_certificate, IMPORT_BODY_LIMIT,
         "CertificateImport"),
        ("DELETE", "/certificates/{name}", c.delete, 0, "CertificateDelete"),
        ("GET", "/certificates/{name}/versions", c.list_versions, 0, "CertificateListVersions"),
        ("GET", "/certificates/{name}/policy", c.get_policy, 0, "CertificatePolicyGet"),
        ("PATCH", "/certificates/{name}/policy", c.update_policy, 0, "CertificatePolicyUpdate"),
        ("GET", "/certificates/{name}/pending", c.get_operation, 0, "CertificatePendingGet"),
        ("PATCH", "/certificates/{name}/pending", c.cancel_operation, 0,
         "CertificatePendingUpdate"),
        ("DELETE", "/certificates/{name}/pending", c.delete_operation, 0,
         "CertificatePendingDelete"),
        ("POST", "/certificates/{name}/pending/merge", c.merge, IMPORT_BODY_LIMIT,
         "CertificatePendingMerge"),
        ("POST", "/certificates/{name}/backup", c.backup, 0, "CertificateBackup"),
        ("POST", "/certificates/restore", c.restore, CERTIFICATE_RESTORE_BODY_LIMIT,
         "CertificateRestore"),
        ("GET", "/certificates/{name}/{version?}", c.get, 0, "CertificateGet"),
        ("PATCH", "/certificates/{name}/{version?}", c.update, 0, "CertificateUpdate"),
        ("GET", "/deletedcertificates", c.list_deleted, 0, "CertificateListDeleted"),
        ("GET", "/deletedcertificates/{name}", c.get_deleted, 0, "CertificateGetDeleted"),
        ("DELETE", "/deletedcertificates/{name}", c.purge, 0, "CertificatePurge"),
        ("POST", "/deletedcertificates/{name}/recover", c.recover, 0, "CertificateRecover"),
    ]
    return [Route(m, pattern(p), h, limit, inline=(m == "GET"), operation=operations.get(op))
            for m, p, h, limit, op in table]
