"""The management API: vaults and managed HSM pools as ARM resources (what
azure-mgmt-keyvault drives).

Answered on the deployment's bare host (`localhost:PORT`, `127.0.0.1:PORT`, the domain
itself) for paths under `/subscriptions/` and `/providers/Microsoft.KeyVault/`. Order:
bearer token for a management audience (401 + challenge otherwise) → api-version → route →
control-plane authorization (`access/control.py`, Azure's action names) → domain call
(`vault/vaults.py`). Errors have ARM's shape `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from openkeyvault.access import actions as a
from openkeyvault.access.principals import Principal
from openkeyvault.access.tokens import InvalidToken, WouldBlock
from openkeyvault.api.errors import arm_error
from openkeyvault.api.hosts import DEFAULT_HOSTS, split_host
from openkeyvault.api.http import empty_response, json_response, parse_json_object, read_body
from openkeyvault.deployment import Deployment
from openkeyvault.vault.errors import BadParameter, DomainError, Forbidden
from openkeyvault.vault.vaults import VaultService

# The api-versions of Microsoft.KeyVault the management API accepts (azure-mgmt-keyvault
# 14.x sends 2026-05-15).
API_VERSIONS = frozenset({
    "2019-09-01", "2021-10-01", "2022-07-01", "2022-11-01", "2023-02-01", "2023-07-01",
    "2024-11-01", "2024-12-01-preview", "2025-05-01", "2026-05-15",
})
MANAGEMENT_AUDIENCES = ("https://management.azure.com", "https://management.core.windows.net")
BODY_LIMIT = 1024 * 1024
_SUB = r"/subscriptions/(?P<sub>[^/]{1,64})"
_RG = r"/resourceGroups/(?P<rg>[^/]{1,90})"
_KV = r"/providers/Microsoft\.KeyVault"
_VAULT = rf"{_SUB}{_RG}{_KV}/vaults/(?P<name>[^/]{{1,64}})"
_DELETED = rf"{_SUB}{_KV}/locations/(?P<location>[^/]{{1,64}})/deletedVaults/(?P<name>[^/]{{1,64}})"
_HSM = rf"{_SUB}{_RG}{_KV}/managedHSMs/(?P<name>[^/]{{1,64}})"
_DELETED_HSM = (rf"{_SUB}{_KV}/locations/(?P<location>[^/]{{1,64}})"
                rf"/deletedManagedHSMs/(?P<name>[^/]{{1,64}})")


@dataclass(frozen=True)
class _Kind:
    """A resource type served by the same handlers: its service and Azure's actions."""

    service: VaultService
    type: str
    read: str
    write: str
    delete: str
    deleted_read: str
    purge: str
    check_name: str
    created: int  # the status of a PUT that creates (the SDKs' LRO accept 200 for pools)
    purge_status: int


def is_management_path(path: str) -> bool:
    p = path.lower()
    return p.startswith("/subscriptions/") or p.startswith("/providers/microsoft.keyvault/")


@dataclass(frozen=True)
class _Call:
    principal: Principal
    params: dict[str, str]
    body: dict[str, Any] | None


_Handler = Callable[["Management", _Call], Response]


def _on(kind: str, fn: Callable[[Management, _Call, _Kind], Response]) -> _Handler:
    return lambda m, call: fn(m, call, m.kinds[kind])


def _list(items: list[dict[str, Any]]) -> Response:
    return json_response({"value": items})


class Management:
    def __init__(self, deployment: Deployment) -> None:
        self.d = deployment
        v = deployment.vaults
        self.kinds = {
            "vaults": _Kind(v, "Microsoft.KeyVault/vaults", a.VAULTS_READ, a.VAULTS_WRITE,
                            a.VAULTS_DELETE, a.DELETED_VAULTS_READ, a.DELETED_VAULTS_PURGE,
                            a.CHECK_NAME_AVAILABILITY, 201, 200),
            "managedHSMs": _Kind(deployment.managed_hsms, "Microsoft.KeyVault/managedHSMs",
                                 a.MANAGED_HSMS_READ, a.MANAGED_HSMS_WRITE,
                                 a.MANAGED_HSMS_DELETE, a.DELETED_MANAGED_HSMS_READ,
                                 a.DELETED_MANAGED_HSMS_PURGE, a.CHECK_MHSM_NAME_AVAILABILITY,
                                 200, 202),
        }
        h = "managedHSMs"
        self.routes: list[tuple[re.Pattern[str], dict[str, tuple[_Handler, bool]]]] = [
            (re.compile(f"{_VAULT}/accessPolicies/(?P<op>[^/]{{1,16}})", re.I),
             {"PUT": (Management._access_policy, True)}),
            (re.compile(_VAULT, re.I), {
                "GET": (Management._get, False), "PUT": (Management._put, True),
                "PATCH": (Management._patch, True), "DELETE": (Management._delete, False)}),
            (re.compile(f"{_SUB}{_RG}{_KV}/vaults", re.I), {"GET": (Management._list_rg, False)}),
            (re.compile(f"{_SUB}{_KV}/vaults", re.I), {"GET": (Management._list_sub, False)}),
            (re.compile(f"{_DELETED}/purge", re.I), {"POST": (Management._purge, False)}),
            (re.compile(_DELETED, re.I), {"GET": (Management._get_deleted, False)}),
            (re.compile(f"{_SUB}{_KV}/deletedVaults", re.I),
             {"GET": (Management._list_deleted, False)}),
            (re.compile(f"{_SUB}{_KV}/checkNameAvailability", re.I),
             {"POST": (Management._check_name, True)}),
            (re.compile(_HSM, re.I), {
                "GET": (_on(h, Management._get), False), "PUT": (_on(h, Management._put), True),
                "PATCH": (_on(h, Management._patch), True),
                "DELETE": (_on(h, Management._delete), False)}),
            (re.compile(f"{_SUB}{_RG}{_KV}/managedHSMs", re.I),
             {"GET": (_on(h, Management._list_rg), False)}),
            (re.compile(f"{_SUB}{_KV}/managedHSMs", re.I),
             {"GET": (_on(h, Management._list_sub), False)}),
            (re.compile(f"{_DELETED_HSM}/purge", re.I),
             {"POST": (_on(h, Management._purge), False)}),
            (re.compile(_DELETED_HSM, re.I), {"GET": (_on(h, Management._get_deleted), False)}),
            (re.compile(f"{_SUB}{_KV}/deletedManagedHSMs", re.I),
             {"GET": (_on(h, Management._list_deleted), False)}),
            (re.compile(f"{_SUB}{_KV}/checkMhsmNameAvailability", re.I),
             {"POST": (_on(h, Management._check_name), True)}),
        ]
        self.vaults = v

    # ---- pipeline -----------------------------------------------------------
    @staticmethod
    def serves_host(host: str, domain: str) -> bool:
        name, _ = split_host(host)
        return name in DEFAULT_HOSTS or name == domain.lower()

    def audiences(self, host: str) -> frozenset[str]:
        return frozenset({*MANAGEMENT_AUDIENCES, f"https://{host.lower()}"})

    async def handle(self, request: Request) -> Response:
        try:
            return await self._handle(request)
        except DomainError as exc:
            status, body = arm_error(exc)
            return json_response(body, status)

    def _challenge(self, host: str, code: str, message: str) -> Response:
        authority = f"https://{host}/{self.d.tenant_id}"
        return json_response(
            {"error": {"code": code, "message": message}}, 401,
            headers={"WWW-Authenticate":
                     f'Bearer authorization_uri="{authority}", error="invalid_token", '
                     f'error_description="{message}"'})

    async def _handle(self, request: Request) -> Response:
        host = request.headers.get("host", "")
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._challenge(host, "AuthenticationFailed",
                                   "Authentication failed. The 'Authorization' header is "
                                   "missing.")
        token, audiences = token.strip(), self.audiences(host)
        try:
            try:
                principal = self.d.tokens.verify(token, audiences)
            except WouldBlock:
                principal = await run_in_threadpool(
                    lambda: self.d.tokens.verify(token, audiences, may_block=True))
        except InvalidToken as exc:
            return self._challenge(host, "InvalidAuthenticationToken",
                                   f"The access token is invalid: {exc}")
        query = dict(parse_qsl(request.scope["query_string"].decode("latin-1")[:2048],
                               keep_blank_values=True))
        version = query.get("api-version")
        if version is None:
            return json_response({"error": {
                "code": "MissingApiVersionParameter",
                "message": "The api-version query parameter (?api-version=) is required for "
                           "all requests."}}, 400)
        if version not in API_VERSIONS:
            return json_response({"error": {
                "code": "InvalidApiVersionParameter",
                "message": f"The api-version '{version[:32]}' is invalid. The supported "
                           f"versions are '{','.join(sorted(API_VERSIONS))}'."}}, 400)
        path: str = request.scope["path"].rstrip("/")
        for pattern, methods in self.routes:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            found = methods.get(request.method)
            if found is None:
                return json_response({"error": {
                    "code": "MethodNotAllowed",
                    "message": f"The method {request.method} is not allowed on this "
                               "path."}}, 405, headers={"Allow": ", ".join(methods)})
            handler, has_body = found
            body = None
            if has_body:
                raw = await read_body(request, BODY_LIMIT)
                try:
                    body = parse_json_object(raw)
                except BadParameter as exc:
                    raise BadParameter(exc.message, inner="InvalidRequestContent") from None
            call = _Call(principal, {k: v for k, v in m.groupdict().items() if v is not None},
                         body)
            return await run_in_threadpool(handler, self, call)
        return json_response({"error": {
            "code": "NotFound", "message": f"The path '{path[:200]}' was not found."}}, 404)

    def _allow(self, call: _Call, action: str, vault: str | None = None) -> None:
        p = call.params
        if not self.d.control.allowed_control(call.principal, action, p.get("sub"),
                                              p.get("rg"), vault):
            raise Forbidden(
                f"The client '{call.principal.object_id}' does not have authorization to "
                f"perform action '{action}' over this scope, or the scope is invalid.",
                inner="AuthorizationFailed")

    # ---- handlers (vaults by default; managed HSMs through `_on`) ------------
    def _vaults(self) -> _Kind:
        return self.kinds["vaults"]

    def _get(self, call: _Call, k: _Kind | None = None) -> Response:
        k, p = k or self._vaults(), call.params
        self._allow(call, k.read, p["name"])
        return json_response(k.service.get(p["sub"], p["rg"], p["name"]))

    def _put(self, call: _Call, k: _Kind | None = None) -> Response:
        k, p = k or self._vaults(), call.params
        self._allow(call, k.write, p["name"])
        assert call.body is not None
        vault, created = k.service.create_or_update(p["sub"], p["rg"], p["name"], call.body)
        return json_response(vault, k.created if created else 200)

    def _patch(self, call: _Call, k: _Kind | None = None) -> Response:
        k, p = k or self._vaults(), call.params
        self._allow(call, k.write, p["name"])
        assert call.body is not None
        return json_response(k.service.update(p["sub"], p["rg"], p["name"], call.body))

    def _delete(self, call: _Call, k: _Kind | None = None) -> Response:
        k, p = k or self._vaults(), call.params
        self._allow(call, k.delete, p["name"])
        try:
            k.service.delete(p["sub"], p["rg"], p["name"])
        except DomainError as exc:
            if arm_error(exc)[0] == 404:
                return empty_response(204)
            raise
        return empty_response(200)

    def _readable(self, call: _Call, items: list[dict[str, Any]], action: str
                  ) -> list[dict[str, Any]]:
        return [v for v in items if self.d.control.allowed_control(
            call.principal, action, None, None, v["name"])]

    def _list_rg(self, call: _Call, k: _Kind | None = None) -> Response:
        k, p = k or self._vaults(), call.params
        return _list(self._readable(call, k.service.list(p["sub"], p["rg"]), k.read))

    def _list_sub(self, call: _Call, k: _Kind | None = None) -> Response:
        k = k or self._vaults()
        return _list(self._readable(call, k.service.list(call.params["sub"], None), k.read))

    def _get_deleted(self, call: _Call, k: _Kind | None = None) -> Response:
        k, p = k or self._vaults(), call.params
        self._allow(call, k.deleted_read, p["name"])
        return json_response(k.service.get_deleted(p["location"], p["name"], p["sub"]))

    def _list_deleted(self, call: _Call, k: _Kind | None = None) -> Response:
        k = k or self._vaults()
        return _list(self._readable(call, k.service.list_deleted(call.params["sub"]),
                                    k.deleted_read))

    def _purge(self, call: _Call, k: _Kind | None = None) -> Response:
        k, p = k or self._vaults(), call.params
        self._allow(call, k.purge, p["name"])
        k.service.purge_deleted(p["location"], p["name"], p["sub"])
        return empty_response(k.purge_status)

    def _check_name(self, call: _Call, k: _Kind | None = None) -> Response:
        k = k or self._vaults()
        self._allow(call, k.check_name)
        assert call.body is not None
        # checkMhsmNameAvailability's body is {"name"} alone; a vault's names its type.
        name = call.body.get("name")
        kind = call.body.get("type", None if k is self._vaults() else k.type)
        if not isinstance(name, str) or not isinstance(kind, str) \
                or kind.lower() != k.type.lower():
            raise BadParameter(f"The body must be {{\"name\": NAME, \"type\": "
                               f"\"{k.type}\"}}.")
        return json_response(k.service.check_name_availability(name[:64]))

    def _access_policy(self, call: _Call) -> Response:
        p = call.params
        self._allow(call, a.VAULTS_ACCESS_POLICIES_WRITE, p["name"])
        assert call.body is not None
        return json_response(self.vaults.update_access_policy(
            p["sub"], p["rg"], p["name"], p["op"], call.body))
