"""An Entra-shaped token service: OpenID discovery, JWKS and the v2.0 token endpoint.

Paths, per tenant: `/{tenant}/v2.0/.well-known/openid-configuration`,
`/{tenant}/discovery/v2.0/keys`, `POST /{tenant}/oauth2/v2.0/token`. The client
credentials grant is accepted with a client secret or a client assertion (a
certificate credential's signed JWT, or a trusted issuer's token for a federated
credential); errors use Entra's shape (`error`, `error_description`, `error_codes`).

Failed client-secret attempts are counted per client address and per client id
(access/attempts.py); past the allowance the answer is 429 with `Retry-After`, before
the secret is looked at. Every wrong secret gets the same 401 bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from openkeyvault.access.assertions import JWT_BEARER, AssertionRefused
from openkeyvault.access.attempts import SignInAttempts
from openkeyvault.access.network import ClientAddresses, IPAddress
from openkeyvault.access.principals import Principal
from openkeyvault.api.hosts import DEFAULT_HOSTS, split_host, valid_host
from openkeyvault.api.http import json_response
from openkeyvault.api.identity import normalized_resource
from openkeyvault.deployment import Deployment

TOKEN_BODY_LIMIT = 64 * 1024
_AADSTS = re.compile(r"AADSTS(\d+)")


def _oauth_error(status: int, error: str, description: str,
                 headers: dict[str, str] | None = None) -> Response:
    codes = [int(c) for c in _AADSTS.findall(description)[:4]]
    return json_response({"error": error, "error_description": description,
                          "error_codes": codes}, status, headers)


_INVALID_CLIENT = ("AADSTS7000215: Invalid client secret provided, or the client is unknown "
                   "or its secret has expired.")
_LOCKED_ADDRESS = ("AADSTS50053: Too many failed sign-in attempts from this client address. "
                   "Try again in {} seconds.")
_LOCKED_CLIENT = ("AADSTS50053: Too many failed sign-in attempts for this client id from "
                  "unfamiliar addresses. Try again in {} seconds.")


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
        self.addresses = ClientAddresses(deployment.settings.trusted_proxies)
        self.attempts = SignInAttempts(deployment.clock)

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
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256", "PS256", "ES256"],
            "grant_types_supported": ["client_credentials"],
            "tenant_region_scope": None,
        }
        return json_response(doc)

    def keys(self, request: Request, tenant: str, body: bytes) -> Response:
        if not self._tenant_ok(tenant):
            return self._unknown_tenant(tenant)
        return json_response({"keys": self.d.tokens.keys.jwks()})

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
        assertion = form.get("client_assertion")
        if not client_id or (secret is None and assertion is None):
            return _oauth_error(400, "invalid_request",
                                "AADSTS900144: client_id and client_secret (or "
                                "client_assertion) are required.")
        if secret is not None and assertion is not None:
            return _oauth_error(400, "invalid_request",
                                "AADSTS90014: Give either client_secret or client_assertion, "
                                "not both.")
        if assertion is not None:
            if form.get("client_assertion_type") != JWT_BEARER:
                return _oauth_error(400, "invalid_request",
                                    "AADSTS700022: The client_assertion_type must be "
                                    f"'{JWT_BEARER}'.")
            try:
                principal = self.d.assertions.authenticate(
                    client_id, assertion, self._endpoint_audiences(request, tenant))
            except AssertionRefused as refused:
                return _oauth_error(refused.status, refused.error, refused.description)
            return self._issue(principal, resource)
        assert secret is not None
        address = self._client_address(request)
        locked = self.attempts.check(client_id, address)
        if locked is not None:
            text = _LOCKED_ADDRESS if locked.address else _LOCKED_CLIENT
            return _oauth_error(429, "temporarily_unavailable",
                                text.format(locked.retry_after),
                                {"Retry-After": str(locked.retry_after)})
        found = self.d.directory.authenticate_secret(client_id, secret)
        if found is None:
            self.attempts.failed(client_id, address)
            return _oauth_error(401, "invalid_client", _INVALID_CLIENT)
        self.attempts.succeeded(client_id, address)
        return self._issue(found, resource)

    def _client_address(self, request: Request) -> IPAddress | None:
        client = request.scope.get("client")
        peer = client[0] if client else None
        forwarded = request.headers.getlist("x-forwarded-for") if self.addresses.trusted else []
        return self.addresses.resolve(peer if isinstance(peer, str) else None, forwarded)

    def _endpoint_audiences(self, request: Request, tenant: str) -> frozenset[str]:
        """What a certificate assertion's `aud` may be: this token endpoint (v2.0 or v1) or
        the issuer, on the host the client called (if it is one this deployment answers
        on), with the tenant as in the path or as the tenant id."""
        out = {self.d.tokens.issuer.lower().rstrip("/")}
        host = request.headers.get("host", "")
        name, _ = split_host(host) if valid_host(host) else ("", None)
        domain = self.d.settings.domain.lower()
        if name and (name in DEFAULT_HOSTS or name == domain or name.endswith("." + domain)):
            for t in {tenant.lower(), self.d.tenant_id.lower()}:
                base = f"https://{host.lower()}/{t}"
                out |= {f"{base}/oauth2/v2.0/token", f"{base}/oauth2/token", f"{base}/v2.0",
                        base}
        return frozenset(out)

    def _issue(self, principal: Principal, resource: str) -> Response:
        issued = self.d.tokens.issue(principal, resource)
        return json_response({"token_type": "Bearer", "expires_in": issued.expires_in,
                              "ext_expires_in": issued.expires_in,
                              "access_token": issued.access_token})
