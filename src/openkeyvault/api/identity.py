"""Managed identity token endpoints (App Service style and IMDS style).

App Service style (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`) requires the
`X-IDENTITY-HEADER` secret, compared in constant time. IMDS style
(`/metadata/identity/oauth2/token`, header `Metadata: true`) carries no secret,
as on an Azure VM, where only the machine itself reaches it. So it is served only
by a development server, only to callers on this machine (the socket peer is a
loopback address; a request that went through a proxy is refused), and only while
the server listens on a loopback address, unless `--imds` turns it on for another
bind address. Its refusals have IMDS's error shape (`error`, `error_description`).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from openkeyvault.access.principals import Principal
from openkeyvault.api.errors import error_body
from openkeyvault.api.http import json_response
from openkeyvault.config import Settings
from openkeyvault.deployment import Deployment

MSI_PATHS = frozenset({"/msi/token", "/msi/token/"})
IMDS_PATH = "/metadata/identity/oauth2/token"
IMDS_PATHS = frozenset({IMDS_PATH, IMDS_PATH + "/"})
# A request carrying one of these came through a proxy: its socket peer is not its client.
_PROXY_HEADERS = (b"x-forwarded-for", b"forwarded", b"x-real-ip")


def is_loopback(address: str | None) -> bool:
    """Whether `address` (an IP literal or `localhost`) names this machine's loopback."""
    if not address:
        return False
    if address.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def imds_enabled(settings: Settings) -> bool:
    """IMDS is on in dev mode: by default only on a loopback bind, or as `--imds` says."""
    if not settings.dev:
        return False
    return is_loopback(settings.host) if settings.imds is None else settings.imds


def imds_notice(settings: Settings) -> str | None:
    """The start-up line about the IMDS endpoint, when it is not simply on for loopback."""
    if not settings.dev:
        return None
    if is_loopback(settings.host):
        return None if imds_enabled(settings) else \
            f"IMDS token endpoint {IMDS_PATH} is off (--no-imds)."
    where = settings.host or "all addresses"
    if imds_enabled(settings):
        return (f"IMDS token endpoint {IMDS_PATH} is on (--imds) although the server listens "
                f"on {where}: it answers only callers on this machine (loopback addresses).")
    return (f"IMDS token endpoint {IMDS_PATH} is off: the server listens on {where}, not a "
            "loopback address; pass --imds to serve it to callers on this machine.")


def _imds_error(code: str, description: str, status: int) -> Response:
    return json_response({"error": code, "error_description": description}, status)


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


def _key_vault_error(code: str, message: str, status: int) -> Response:
    return json_response(error_body(code, message), status)


def _issue(request: Request, d: Deployment,
           refuse: Callable[[str, str, int], Response] = _key_vault_error) -> Response:
    resource = normalized_resource(request.query_params.get("resource"))
    if resource is None:
        return refuse("invalid_request", "A valid 'resource' query parameter is required.", 400)
    principal = _requested_identity(request, d)
    if principal is None:
        return refuse("invalid_request", "No managed identity matches the requested identity.",
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
        return _imds_error("not_found", "IMDS tokens are served in dev mode only.", 404)
    if not imds_enabled(d.settings):
        why = "it was started with --no-imds" if d.settings.imds is False else \
            "it listens on a non-loopback address and was not started with --imds"
        return _imds_error("access_denied", f"The IMDS token endpoint is off on this server: "
                           f"{why}.", 403)
    peer = request.scope.get("client")
    if not is_loopback(peer[0] if peer else None):
        return _imds_error("access_denied", "IMDS tokens are served only to callers on this "
                           "machine (a loopback address).", 403)
    if any(k in _PROXY_HEADERS for k, _ in request.scope["headers"]):
        return _imds_error("access_denied", "IMDS tokens are not served through a proxy: the "
                           "request carries a forwarding header.", 403)
    if request.headers.get("metadata", "").lower() != "true":
        return _imds_error("invalid_request", "Required metadata header not specified", 400)
    return _issue(request, d, _imds_error)
