"""Managed identity token endpoints (App Service style and IMDS style).

App Service style (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`) requires the
`X-IDENTITY-HEADER` secret, compared in constant time. IMDS style
(`/metadata/identity/oauth2/token`, header `Metadata: true`) carries no secret,
as on an Azure VM, so it is served only by a development server.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from openkeyvault.access.principals import Principal
from openkeyvault.api.errors import error_body
from openkeyvault.api.http import json_response
from openkeyvault.deployment import Deployment

MSI_PATHS = frozenset({"/msi/token", "/msi/token/"})
IMDS_PATHS = frozenset({"/metadata/identity/oauth2/token", "/metadata/identity/oauth2/token/"})


def normalized_resource(raw: str | None) -> str | None:
    """A token audience from a `resource` (or `scope` ending in /.default); None if invalid."""
    if not raw or len(raw) > 512:
        return None
    if raw.endswith("/.default"):
        raw = raw[: -len("/.default")]
    parts = urlsplit(raw)
    if parts.scheme not in ("https", "http", "api") or not parts.netloc:
        return None
    return raw.rstrip("/")


def _token_response(d: Deployment, principal: Principal, resource: str) -> Response:
    t = d.tokens.issue(principal, resource)
    return json_response({
        "access_token": t.access_token,
        "expires_in": str(t.expires_in),
        "expires_on": str(t.expires_on),
        "ext_expires_in": str(t.expires_in),
        "not_before": str(t.expires_on - t.expires_in),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": principal.app_id,
    })


_SELECTORS = ("client_id", "object_id", "principal_id", "mi_res_id", "msi_res_id")


def _requested_identity(request: Request, d: Deployment) -> Principal | None:
    """The managed identity the caller names (client_id, object_id or resource id, whose
    last segment is the identity's name), or the dev identity when none is named."""
    asked = {k: v for k in _SELECTORS if (v := request.query_params.get(k))}
    if not asked:
        return d.dev_principal
    if len(asked) > 1:
        return None
    key, value = next(iter(asked.items()))
    if key == "client_id":
        record = d.directory.lookup(client_id=value)
    elif key in ("object_id", "principal_id"):
        record = d.directory.lookup(object_id=value)
    else:  # an Azure resource id: .../userAssignedIdentities/NAME
        record = d.directory.lookup(name=value.rstrip("/").rsplit("/", 1)[-1])
    if record is None or record.kind != "managedIdentity":
        return None
    return Principal(record.object_id, record.tenant_id, record.client_id)


def _issue(request: Request, d: Deployment) -> Response:
    resource = normalized_resource(request.query_params.get("resource"))
    if resource is None:
        return json_response(error_body("invalid_request",
                                        "A valid 'resource' query parameter is required."), 400)
    principal = _requested_identity(request, d)
    if principal is None:
        return json_response(error_body("invalid_request",
                                        "No managed identity matches the requested identity."),
                             400)
    return _token_response(d, principal, resource)


def app_service_token(request: Request, d: Deployment) -> Response:
    given = request.headers.get("x-identity-header", "")
    if not hmac.compare_digest(given.encode(), d.identity_header.encode()):
        return json_response(error_body("Unauthorized",
                                        "The X-IDENTITY-HEADER header is missing or wrong."), 401)
    return _issue(request, d)


def imds_token(request: Request, d: Deployment) -> Response:
    if not d.settings.dev:
        return json_response(error_body("NotFound", "IMDS tokens are served in dev mode only."),
                             404)
    if request.headers.get("metadata", "").lower() != "true":
        return json_response(error_body("invalid_request",
                                        "Required metadata header not specified"), 400)
    return _issue(request, d)
