"""A managed HSM pool's security domain routes (securitydomain.json): wire JSON → request
model → SecurityDomainService call → wire JSON.

`POST /securitydomain/download` (body CertificateInfoObject) answers 202 with the
security domain `{"value": "<file>"}`, `Azure-AsyncOperation` naming the status URL and
`Retry-After`; `GET /securitydomain/download/pending` answers SecurityDomainOperationStatus
`{"status", "status_details"}`.

`GET /securitydomain/upload` answers TransferKey `{"key_format": "jwk", "transfer_key":
"<JWK as a JSON string>"}`: the spec types `transfer_key` as an object, but the Azure CLI
(`init-recovery`) reads it with `json.loads`, so the service sends the JWK as a string.
`POST /securitydomain/upload` (body SecurityDomainObject `{"value": "<restore blob>"}`)
answers 202 with SecurityDomainOperationStatus and the same headers, naming
`/securitydomain/upload/pending`. Served on a pool's host only (api/pools.py).
"""

from __future__ import annotations

import json

from starlette.responses import Response

from openkeyvault.api.http import Ctx, json_response
from openkeyvault.api.models import decode_body
from openkeyvault.api.models.securitydomain import (
    CertificateInfoObject,
    SecurityDomainObject,
)
from openkeyvault.api.models.wire import UNSET, UnsetType
from openkeyvault.api.router import Route, pattern
from openkeyvault.vault import operations
from openkeyvault.vault.securitydomain import SecurityDomainService, WrappingKey

STATUS_PATH = "/securitydomain/download/pending"
UPLOAD_PATH = "/securitydomain/upload"
UPLOAD_STATUS_PATH = "/securitydomain/upload/pending"
RETRY_AFTER_SECONDS = 1  # the download is complete when answered: one short poll


def _opt(value: object) -> str | None:
    return None if value is UNSET else str(value)


class SecurityDomainRoutes:
    def __init__(self, service: SecurityDomainService) -> None:
        self.s = service

    def download(self, ctx: Ctx) -> Response:
        p = decode_body(ctx, CertificateInfoObject)
        keys = [WrappingKey(_opt(k.kty), () if isinstance(k.x5c, UnsetType) else tuple(k.x5c),
                            _opt(k.n), _opt(k.e)) for k in p.certificates]
        value = self.s.download(ctx.caller, keys, p.required)
        status = f"{ctx.base}{STATUS_PATH}?api-version={ctx.api_version}"
        return json_response({"value": value}, 202,
                             {"Azure-AsyncOperation": status,
                              "Retry-After": str(RETRY_AFTER_SECONDS)})

    def download_status(self, ctx: Ctx) -> Response:
        s = self.s.download_status(ctx.caller)
        return json_response({"status": s.status, "status_details": s.status_details})

    def transfer_key(self, ctx: Ctx) -> Response:
        jwk = self.s.transfer_key(ctx.caller, f"{ctx.base}/securitydomain/transferkey")
        return json_response({"key_format": "jwk",
                              "transfer_key": json.dumps(jwk, separators=(",", ":"))})

    def upload(self, ctx: Ctx) -> Response:
        p = decode_body(ctx, SecurityDomainObject)
        s = self.s.upload(ctx.caller, p.value)
        status = f"{ctx.base}{UPLOAD_STATUS_PATH}?api-version={ctx.api_version}"
        return json_response({"status": s.status, "status_details": s.status_details}, 202,
                             {"Azure-AsyncOperation": status,
                              "Retry-After": str(RETRY_AFTER_SECONDS)})

    def upload_status(self, ctx: Ctx) -> Response:
        s = self.s.upload_status(ctx.caller)
        return json_response({"status": s.status, "status_details": s.status_details})


def security_domain_routes(service: SecurityDomainService) -> list[Route]:
    """The security domain routes, each naming its row (vault/operations.py); api/pools.py
    gives them the pool's guard."""
    h = SecurityDomainRoutes(service)
    op = operations.get
    return [
        Route("POST", pattern("/securitydomain/download"), h.download,
              operation=op("SecurityDomainBackup")),
        Route("GET", pattern(STATUS_PATH), h.download_status, inline=True,
              operation=op("SecurityDomainBackupStatusGet")),
        Route("GET", pattern(UPLOAD_PATH), h.transfer_key,
              operation=op("SecurityDomainTransferKeyGet")),
        Route("POST", pattern(UPLOAD_PATH), h.upload, operation=op("SecurityDomainRestore")),
        Route("GET", pattern(UPLOAD_STATUS_PATH), h.upload_status, inline=True,
              operation=op("SecurityDomainRestoreStatusGet")),
    ]
