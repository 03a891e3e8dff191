"""The management API: vaults and managed HSM pools as ARM resources (what
azure-mgmt-keyvault drives).

Answered on the deployment's bare host (`localhost:PORT`, `127.0.0.1:PORT`, the domain
itself) for paths under `/subscriptions`, `/tenants`, `/providers` and `/metadata`
(`is_management_path`); subscriptions, tenants, resource groups, generic resources and
the cloud's metadata are `api/arm.py`'s. Order:
bearer token for a management audience (401 + challenge otherwise) → api-version → route →
control-plane authorization (`access/control.py`, Azure's action names), before the body
is read: a refused body is dropped unread (bounded) → body decoded into its request model
(`api/models/management.py`; 400 InvalidRequestContent on a wrong JSON type) → domain call
(`vault/vaults.py`, `vault/managedhsms.py`) with the typed request. Errors have ARM's
shape `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from openkeyvault.access import actions as a
from openkeyvault.access.principals import Principal
from openkeyvault.api.arm import Arm
from openkeyvault.api.bearer import (
    InvalidToken,
    MissingToken,
    WouldBlock,
    authenticate,
    authenticate_blocking,
)
from openkeyvault.api.errors import arm_error
from openkeyvault.api.exchange import Accounting, Exchange, arm_id
from openkeyvault.api.hosts import DEFAULT_HOSTS, split_host
from openkeyvault.api.http import discard_body, empty_response, json_response, read_body
from openkeyvault.api.models import Model, decode
from openkeyvault.api.models.management import (
    CheckMhsmNameAvailabilityParameters,
    ManagedHsm,
    VaultAccessPolicyParameters,
    VaultCheckNameAvailabilityParameters,
    VaultCreateOrUpdateParameters,
    VaultPatchParameters,
)
from openkeyvault.api.versions import MANAGEMENT_SUPPORTED as API_VERSIONS
from openkeyvault.deployment import Deployment
from openkeyvault.vault import operations
from openkeyvault.vault.errors import BadParameter, DomainError, Forbidden
from openkeyvault.vault.operations import CALLER, RESOURCE, Operation
from openkeyvault.vault.vaults import VaultService

_CLOUD_METADATA = operations.get("CloudMetadataGet")
# Vaults in one page of a listing (ARM's `$top` for vaults goes to 1000).
PAGE_MAX = 1000

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
    put_model: builtins.type[Model]
    patch_model: builtins.type[Model]
    check_name_model: builtins.type[Model]


# ARM's top-level segments: every path under them is the management API's (ARM's 404 for
# an unknown one, never the vault's 401), except `/providers/Microsoft.Authorization/...`,
# which on the bare host is the default vault's role management (api/rbac.py).
_ARM_ROOTS = ("subscriptions", "tenants", "providers", "metadata")
_VAULT_RBAC = "providers/microsoft.authorization"


def is_management_path(path: str) -> bool:
    p = path.lower().lstrip("/")
    return p.split("/", 1)[0] in _ARM_ROOTS and not (
        p == _VAULT_RBAC or p.startswith(f"{_VAULT_RBAC}/"))


@dataclass(frozen=True)
class _Call:
    principal: Principal
    params: dict[str, str]
    body: Any  # the decoded request model, for a route that takes a body
    query: dict[str, str] = field(default_factory=dict)
    url: str = ""  # the request's URL without its query (for a listing's nextLink)


_Handler = Callable[["Management", _Call, _Kind], Response]


@dataclass(frozen=True)
class _Op:
    """One method on one path: its handler; its operation (vault/operations.py), named
    with `{}` for the kind's noun (`Vault`, `ManagedHsm`), whose action is checked before
    the body is read, on the named resource or the subscription as its scope says (a
    listing checks nothing first: it filters what it shows); the body's model (None: no
    body), picked from the kind; the resource kind."""

    handler: _Handler
    name: str
    model: Callable[[_Kind], builtins.type[Model]] | None = None
    kind: str = "vaults"
    operation: Operation | None = None


_NOUNS = {"vaults": "Vault", "managedHSMs": "ManagedHsm"}


def _ops(kind: str, **ops: _Op) -> dict[str, _Op]:
    return {m: _Op(o.handler, o.name, o.model, kind,
                   operations.get(o.name.format(_NOUNS[kind])))
            for m, o in ops.items()}


def _list(items: list[dict[str, Any]]) -> Response:
    return json_response({"value": items})


class Management:
    def __init__(self, deployment: Deployment) -> None:
        self.d = deployment
        v = deployment.vaults
        self.kinds = {
            "vaults": _Kind(v, "Microsoft.KeyVault/vaults", a.VAULTS_READ, a.VAULTS_WRITE,
                            a.VAULTS_DELETE, a.DELETED_VAULTS_READ, a.DELETED_VAULTS_PURGE,
                            a.CHECK_NAME_AVAILABILITY, 201, 200, VaultCreateOrUpdateParameters,
                            VaultPatchParameters, VaultCheckNameAvailabilityParameters),
            "managedHSMs": _Kind(deployment.managed_hsms, "Microsoft.KeyVault/managedHSMs",
                                 a.MANAGED_HSMS_READ, a.MANAGED_HSMS_WRITE,
                                 a.MANAGED_HSMS_DELETE, a.DELETED_MANAGED_HSMS_READ,
                                 a.DELETED_MANAGED_HSMS_PURGE, a.CHECK_MHSM_NAME_AVAILABILITY,
                                 200, 202, ManagedHsm, ManagedHsm,
                                 CheckMhsmNameAvailabilityParameters),
        }
        m = Management
        resource = {
            "GET": _Op(m._get, "{}Get"),
            "PUT": _Op(m._put, "{}Put", model=attrgetter("put_model")),
            "PATCH": _Op(m._patch, "{}Patch", model=attrgetter("patch_model")),
            "DELETE": _Op(m._delete, "{}Delete")}
        check_name = _Op(m._check_name, "{}CheckNameAvailability",
                         model=attrgetter("check_name_model"))
        self.routes: list[tuple[re.Pattern[str], dict[str, _Op]]] = [
            (re.compile(f"{_VAULT}/accessPolicies/(?P<op>[^/]{{1,16}})", re.I),
             _ops("vaults", PUT=_Op(m._access_policy, "VaultAccessPolicyUpdate",
                                    model=lambda _: VaultAccessPolicyParameters))),
        ]
        for kind, one, deleted, deleted_all, check in (
            ("vaults", _VAULT, _DELETED, "deletedVaults", "checkNameAvailability"),
            ("managedHSMs", _HSM, _DELETED_HSM, "deletedManagedHSMs",
             "checkMhsmNameAvailability"),
        ):
            self.routes += [
                (re.compile(one, re.I), _ops(kind, **resource)),
                (re.compile(f"{_SUB}{_RG}{_KV}/{kind}", re.I),
                 _ops(kind, GET=_Op(m._list_rg, "{}ListByResourceGroup"))),
                (re.compile(f"{_SUB}{_KV}/{kind}", re.I),
                 _ops(kind, GET=_Op(m._list_sub, "{}List"))),
                (re.compile(f"{deleted}/purge", re.I),
                 _ops(kind, POST=_Op(m._purge, "Deleted{}Purge"))),
                (re.compile(deleted, re.I), _ops(kind, GET=_Op(m._get_deleted, "Deleted{}Get"))),
                (re.compile(f"{_SUB}{_KV}/{deleted_all}", re.I),
                 _ops(kind, GET=_Op(m._list_deleted, "Deleted{}List"))),
                (re.compile(f"{_SUB}{_KV}/{check}", re.I), _ops(kind, POST=check_name)),
            ]
        self.vaults = v
        self.arm = Arm(deployment)  # subscriptions, resource groups, resources (api/arm.py)

    # ---- pipeline -----------------------------------------------------------
    @staticmethod
    def serves_host(host: str, domain: str) -> bool:
        name, _ = split_host(host)
        return name in DEFAULT_HOSTS or name == domain.lower()

    def audiences(self, host: str) -> frozenset[str]:
        return frozenset({*MANAGEMENT_AUDIENCES, f"https://{host.lower()}"})

    async def handle(self, request: Request, ex: Exchange, accounting: Accounting) -> Response:
        try:
            if Arm.is_public(request.scope["path"]):  # the cloud's description: no token
                ex.operation = _CLOUD_METADATA
                refused = accounting.admit(request.scope, ex)
                if refused is not None:
                    return refused
                return await run_in_threadpool(self.arm.metadata, request)
            return await self._handle(request, ex, accounting)
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

    async def _handle(self, request: Request, ex: Exchange, accounting: Accounting
                      ) -> Response:
        host = request.headers.get("host", "")
        try:
            authorization, audiences = request.headers.get("authorization", ""), \
                self.audiences(host)
            try:
                principal = authenticate(authorization, self.d.tokens, audiences).principal
            except WouldBlock:  # an external issuer's keys must be fetched first
                principal = (await authenticate_blocking(authorization, self.d.tokens,
                                                         audiences)).principal
        except MissingToken:
            ex.operation = self.operation_of(request)
            return self._challenge(host, "AuthenticationFailed",
                                   "Authentication failed. The 'Authorization' header is "
                                   "missing.")
        except InvalidToken as exc:
            ex.operation = self.operation_of(request)
            return self._challenge(host, "InvalidAuthenticationToken",
                                   f"The access token is invalid: {exc}")
        ex.principal = principal
        arm = await self.arm.handle(request, principal, ex, accounting)
        if arm is not None:
            return arm
        query = dict(parse_qsl(request.scope["query_string"].decode("latin-1")[:2048],
                               keep_blank_values=True))
        version = ex.api_version = query.get("api-version")
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
            params = {k: v for k, v in m.groupdict().items() if v is not None}
            kind = self.kinds[found.kind]
            op = ex.operation = found.operation
            assert op is not None
            self._addressed(ex, request, path, params, found.kind)
            if op.action is not None and op.scope != CALLER:
                try:
                    self.authorize(principal, params, op.action,
                                   params.get("name") if op.scope == RESOURCE else None)
                except Forbidden:
                    ex.rbac = False
                    await discard_body(request)
                    raise
                ex.rbac = True
            refused = accounting.admit(request.scope, ex)  # before the body is read
            if refused is not None:
                await discard_body(request)
                return refused
            body = None
            if found.model is not None:
                body = self._decode(await read_body(request, BODY_LIMIT), found.model(kind))
            call = _Call(principal, params, body, query,
                         f"https://{request.headers.get('host', 'localhost')}{path}")
            return await run_in_threadpool(found.handler, self, call, kind)
        return json_response({"error": {
            "code": "NotFound", "message": f"The path '{path[:200]}' was not found."}}, 404)

    def operation_of(self, request: Request) -> Operation | None:
        """The operation a request asks for, from its method and path alone (to name a
        refused one)."""
        path: str = request.scope["path"].rstrip("/")
        if Arm.is_public(path):
            return _CLOUD_METADATA
        found = self.arm.operation_of(request.method, path)
        if found is not None:
            return found
        for pattern, methods in self.routes:
            if pattern.fullmatch(path) is not None:
                op = methods.get(request.method)
                return op.operation if op is not None else None
        return None

    @staticmethod
    def _addressed(ex: Exchange, request: Request, path: str, params: dict[str, str],
                   kind: str) -> None:
        """What the request addresses: the resource's URI, and the vault's or pool's name
        and ARM id when the path names one."""
        ex.object_id = f"https://{request.headers.get('host', 'localhost')}{path}"
        name, sub, rg = params.get("name"), params.get("sub"), params.get("rg")
        if name is not None:
            ex.resource_name = name.lower()
            if sub is not None and rg is not None:
                ex.resource_id = arm_id(sub, rg, kind, name)

    def authorize(self, principal: Principal, params: dict[str, str], action: str,
                  vault: str | None = None) -> None:
        """Deny by default: Forbidden (AuthorizationFailed) unless `principal` may do
        `action` over the path's subscription, resource group and resource."""
        if not self.d.control.allowed_control(principal, action, params.get("sub"),
                                              params.get("rg"), vault):
            raise Forbidden(
                f"The client '{principal.object_id}' does not have authorization to "
                f"perform action '{action}' over this scope, or the scope is invalid.",
                inner="AuthorizationFailed")

    @staticmethod
    def _decode(raw: bytes, model: type[Model]) -> Any:
        """The body as the route's request model. A body that is no JSON object is ARM's
        400 InvalidRequestContent; a property of the wrong JSON type is 400 BadRequest
        (InvalidTag for a tag), as when the service refuses its value."""
        try:
            return decode(raw, model)
        except BadParameter as exc:
            m = exc.message
            code = "InvalidTag" if m.startswith("Property 'tags") \
                else "BadRequest" if m.startswith("Property '") else "InvalidRequestContent"
            raise BadParameter(m, inner=code) from None

    # ---- handlers: authorized before they run (`_Op.action`) -----------------
    def _get(self, call: _Call, k: _Kind) -> Response:
        p = call.params
        return json_response(k.service.get(p["sub"], p["rg"], p["name"]))

    def _put(self, call: _Call, k: _Kind) -> Response:
        p, body = call.params, call.body
        # (each kind's service takes its own request type)
        request: Any = body.to_create() if isinstance(body, ManagedHsm) else body.to_request()
        vault, created = k.service.create_or_update(p["sub"], p["rg"], p["name"], request)
        return json_response(vault, k.created if created else 200)

    def _patch(self, call: _Call, k: _Kind) -> Response:
        p, body = call.params, call.body
        request: Any = body.to_patch() if isinstance(body, ManagedHsm) else body.to_request()
        return json_response(k.service.update(p["sub"], p["rg"], p["name"], request))

    def _delete(self, call: _Call, k: _Kind) -> Response:
        p = call.params
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

    def _list_rg(self, call: _Call, k: _Kind) -> Response:
        return self._page(call, k, call.params["rg"])

    def _list_sub(self, call: _Call, k: _Kind) -> Response:
        return self._page(call, k, None)

    def _page(self, call: _Call, k: _Kind, group: str | None) -> Response:
        """A page of vaults (`$top`, at most PAGE_MAX; the next one through `nextLink`,
        which carries `$skiptoken`: the last name shown), of those the caller may read."""
        top = call.query.get("$top")
        if top is not None and not (top.isdigit() and 1 <= int(top) <= PAGE_MAX):
            raise BadParameter(f"The value of $top must be an integer from 1 to {PAGE_MAX}.",
                               inner="InvalidQueryParameterValue")
        size = int(top) if top is not None else PAGE_MAX
        after = call.query.get("$skiptoken") or None
        items, last = k.service.page(call.params["sub"], group, after, size)
        out: dict[str, Any] = {"value": self._readable(call, items, k.read)}
        if last is not None:
            query = {"api-version": call.query["api-version"], "$skiptoken": last}
            if top is not None:
                query["$top"] = top
            out["nextLink"] = f"{call.url}?{urlencode(query)}"
        return json_response(out)

    def _get_deleted(self, call: _Call, k: _Kind) -> Response:
        p = call.params
        return json_response(k.service.get_deleted(p["location"], p["name"], p["sub"]))

    def _list_deleted(self, call: _Call, k: _Kind) -> Response:
        return _list(self._readable(call, k.service.list_deleted(call.params["sub"]),
                                    k.deleted_read))

    def _purge(self, call: _Call, k: _Kind) -> Response:
        p = call.params
        k.service.purge_deleted(p["location"], p["name"], p["sub"])
        return empty_response(k.purge_status)

    def _check_name(self, call: _Call, k: _Kind) -> Response:
        request = call.body.to_request()
        # checkMhsmNameAvailability's body is {"name"} alone; a vault's names its type.
        kind = request.type if request.type is not None \
            else (None if k is self.kinds["vaults"] else k.type)
        if kind is None or kind.lower() != k.type.lower():
            raise BadParameter(f"The body must be {{\"name\": NAME, \"type\": "
                               f"\"{k.type}\"}}.")
        return json_response(k.service.check_name_availability(request.name[:64]))

    def _access_policy(self, call: _Call, k: _Kind) -> Response:
        p = call.params
        return json_response(k.service.update_access_policy(
            p["sub"], p["rg"], p["name"], p["op"], call.body.to_request()))
