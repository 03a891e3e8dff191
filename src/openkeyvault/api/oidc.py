"""An Entra-shaped token service: OpenID discovery, JWKS and the v2.0 token endpoint.

Paths, per tenant: `/{tenant}/v2.0/.well-known/openid-configuration`,
`/{tenant}/discovery/v2.0/keys`, `POST /{tenant}/oauth2/v2.0/token`. Client
credentials by client secret are accepted; errors use OAuth 2.0's shape
(`error`, `error_description`), as Entra does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from openkeyvault.api.http import json_response
from openkeyvault.api.identity import normalized_resource
from openkeyvault.deployment import Deployment

TOKEN_BODY_LIMIT = 64 * 1024


def _oauth_error(status: int, error: str, description: str) -> Response:
    return json_response({"error": error, "error_description": description}, status)


def route(path: str) -> tuple[str, str] | None:
    """(tenant, endpoint) for a token-service path, else None."""
    segs = path.strip("/").split("/")
    if len(segs) == 4 and segs[1:] == ["v2.0", ".well-known", "openid-configuration"]:
        return segs[0], "openid-configuration"
    if len(segs) == 4 and segs[1:] == ["discovery", "v2.0", "keys"]:
        return segs[0], "keys"
    if len(segs) == 4 and segs[1:] == ["oauth2", "v2.0", "token"]:
        return segs[0], "token"
    return None


class TokenEndpoints:
    def __init__(self, deployment: Deployment) -> None:
        self.d = deployment

    def handler(self, endpoint: str) -> Callable[[Request, str, bytes], Response]:
        return {"openid-configuration": self.configuration, "keys": self.keys,
                "token": self.token}[endpoint]

    def _tenant_ok(self, tenant: str) -> bool:
        return tenant.lower() == self.d.tenant_id.lower()

    def _unknown_tenant(self, tenant: str) -> Response:
        return _oauth_error(400, "invalid_request",
                            f"AADSTS90002: Tenant '{tenant[:64]}' not found.")

    def configuration(self, request: Request, tenant: str, body: bytes) -> Response:
        if not self._tenant_ok(tenant):
            return self._unknown_tenant(tenant)
        base = f"https://{request.headers.get('host', 'localhost')}/{self.d.tenant_id}"
        doc: dict[str, Any] = {
            "issuer": self.d.tokens.issuer,
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "token id_token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "grant_types_supported": ["client_credentials"],
            "tenant_region_scope": None,
        }
        return json_response(doc)

    def keys(self, request: Request, tenant: str, body: bytes) -> Response:
        if not self._tenant_ok(tenant):
            return self._unknown_tenant(tenant)
        return json_response({"keys": [self.d.tokens.jwk]})

    def token(self, request: Request, tenant: str, body: bytes) -> Response:
        if request.method != "POST":
            return _oauth_error(405, "invalid_request", "The token endpoint takes POST.")
        if not self._tenant_ok(tenant):
            return self._unknown_tenant(tenant)
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            return _oauth_error(400, "invalid_request", "The request body is not a valid form.")
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type",
                                "AADSTS70003: Only the client_credentials grant is supported.")
        scope = form.get("scope", "")
        resource = normalized_resource(scope) if scope.endswith("/.default") else None
        if resource is None:
            return _oauth_error(400, "invalid_scope",
                                "AADSTS70011: The scope must be a resource followed by "
                                "'/.default'.")
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        if not client_id or secret is None:
            return _oauth_error(400, "invalid_request",
                                "AADSTS900144: client_id and client_secret are required.")
        principal = self.d.directory.authenticate_secret(client_id, secret)
        if principal is None:
            return _oauth_error(401, "invalid_client",
                                "AADSTS7000215: Invalid client secret provided, or the client "
                                "is unknown or its secret has expired.")
        issued = self.d.tokens.issue(principal, resource)
        return json_response({"token_type": "Bearer", "expires_in": issued.expires_in,
                              "ext_expires_in": issued.expires_in,
                              "access_token": issued.access_token})
