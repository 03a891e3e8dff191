"""ARM's basics on the management endpoint: what a client reads before it manages a vault.

`az login` lists subscriptions and tenants; `az keyvault list` and azure-mgmt-keyvault's
`vaults.list()` list generic resources with a `$filter`; `az keyvault create` without a
location reads its resource group; `az cloud register` reads `/metadata/endpoints`. This
module serves those paths with ARM's shapes (ids, `value`/`nextLink` lists,
`{"error": {"code", "message"}}`) and ARM's api-versions (`api/versions.py`).

The deployment is one subscription (its id is the one vault placement uses by default) in
one tenant. Subscription ids are namespaces: vaults and resource groups may be placed under
any subscription id, as the vault API allows, but only the deployment's is listed.

What each principal sees, from its role assignments (`access/control.py`):
  - the subscription: any role assignment at all (ARM shows a subscription to anyone with
    a role somewhere in it); otherwise it is 404 SubscriptionNotFound;
  - a resource group: `vaults/read` over it (GET, HEAD, list), `vaults/write` (PUT),
    `vaults/delete` (DELETE), each at the group's scope (the subscription's or the
    deployment's covers it); a refusal is 403 AuthorizationFailed and changes nothing;
  - a resource in a generic listing: `read` on that vault or pool, as the vault lists do;
  - tenants, operations: any authenticated principal; `/metadata/endpoints`: anyone.

A resource group exists when it was created by PUT (`storage/resourcegroups.py`) or holds a
live vault or managed HSM (placement creates it implicitly). DELETE of a group that holds a
live vault or pool is refused (409 ResourceGroupDeletionBlocked): delete the vaults first.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from openkeyvault.access import actions as a
from openkeyvault.access.principals import Principal
from openkeyvault.api.exchange import Accounting, Exchange
from openkeyvault.api.hosts import split_host
from openkeyvault.api.http import (
    discard_body,
    empty_response,
    json_response,
    parse_json_object,
    read_body,
)
from openkeyvault.api.versions import (
    ARM_METADATA,
    ARM_RESOURCES,
    ARM_SUBSCRIPTIONS,
    MANAGEMENT_SUPPORTED,
)
from openkeyvault.deployment import Deployment
from openkeyvault.storage.resourcegroups import ResourceGroupRecord, ResourceGroupStore
from openkeyvault.vault import operations
from openkeyvault.vault.errors import BadParameter, Conflict, Forbidden, NotFound
from openkeyvault.vault.managedhsms import KIND as MANAGED_HSM_KIND
from openkeyvault.vault.operations import Operation
from openkeyvault.vault.vaults import check_resource_group, check_subscription

METADATA_PATH = "/metadata/endpoints"
BODY_LIMIT = 64 * 1024
MAX_TAGS = 50
PAGE_LIMIT = 1000
DISPLAY_NAME = "OpenKeyVault"
RG_TYPE = "Microsoft.Resources/resourceGroups"
RG_READ = "Microsoft.Resources/subscriptions/resourceGroups/read"
RG_WRITE = "Microsoft.Resources/subscriptions/resourceGroups/write"
RG_DELETE = "Microsoft.Resources/subscriptions/resourceGroups/delete"
_LOCATION = re.compile(r"[A-Za-z0-9 ]{1,64}")
_SUB = r"/subscriptions/(?P<sub>[^/]{1,64})"
_RG = r"/resourcegroups/(?P<rg>[^/]{1,90})"
# One clause of the `$filter` the SDKs send: `resourceType eq '...'` or `name eq '...'`.
_CLAUSE = re.compile(r"\s*(resourceType|name)\s+eq\s+'((?:[^']|'')*)'\s*", re.I)
_AND = re.compile(r"\s+and\s+", re.I)
# The resource types a `$filter` may name, by the kind of vault row that holds them.
_KINDS = {"microsoft.keyvault/vaults": "vault", "microsoft.keyvault/managedhsms": MANAGED_HSM_KIND}


def _error(status: int, code: str, message: str) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status)


@dataclass(frozen=True)
class _Route:
    handler: Callable[..., Any]
    versions: Callable[[], frozenset[str]]
    operations: dict[str, Operation]  # method → its operation (vault/operations.py)

    @property
    def methods(self) -> frozenset[str]:
        return frozenset(self.operations)


@dataclass
class _Call:
    request: Request
    principal: Principal
    params: dict[str, str]
    query: dict[str, str]
    version: str


class Arm:
    """The ARM basics. The Microsoft.KeyVault api-versions serve the provider's operations
    list, and a listing's next page (azure-mgmt-keyvault asks it with its own version)."""

    def __init__(self, deployment: Deployment) -> None:
        self.d = deployment
        self.groups = ResourceGroupStore(deployment.engines)
        kv = MANAGEMENT_SUPPORTED
        self._kv = kv
        op = operations.get
        self.routes: list[tuple[re.Pattern[str], _Route]] = [
            (re.compile(p, re.I), _Route(h, v, {m: op(n) for m, n in ops.items()}))
            for p, h, v, ops in (
                ("/subscriptions", Arm._subscriptions, lambda: ARM_SUBSCRIPTIONS,
                 {"GET": "SubscriptionList"}),
                (_SUB, Arm._subscription, lambda: ARM_SUBSCRIPTIONS,
                 {"GET": "SubscriptionGet"}),
                ("/tenants", Arm._tenants, lambda: ARM_SUBSCRIPTIONS, {"GET": "TenantList"}),
                (f"{_SUB}/resourcegroups", Arm._list_groups, lambda: ARM_RESOURCES,
                 {"GET": "ResourceGroupList"}),
                (f"{_SUB}{_RG}", Arm._group, lambda: ARM_RESOURCES,
                 {"GET": "ResourceGroupGet", "HEAD": "ResourceGroupCheckExistence",
                  "PUT": "ResourceGroupPut", "DELETE": "ResourceGroupDelete"}),
                (f"{_SUB}/resources", Arm._resources, lambda: ARM_RESOURCES,
                 {"GET": "ResourceList"}),
                (f"{_SUB}{_RG}/resources", Arm._resources, lambda: ARM_RESOURCES,
                 {"GET": "ResourceList"}),
                ("/providers/Microsoft\\.KeyVault/operations", Arm._operations, lambda: kv,
                 {"GET": "ProviderOperationList"}),
            )]

    # ---- public: the cloud's description -----------------------------------------------
    @staticmethod
    def is_public(path: str) -> bool:
        # `az cloud register --endpoint-resource-manager https://HOST/` asks for
        # `//metadata/endpoints`: the base URL's slash doubled, as ARM accepts it.
        return "/" + path.strip("/").lower() == METADATA_PATH

    def metadata(self, request: Request) -> Response:
        """`/metadata/endpoints`: the deployment described as a cloud (what `az cloud
        register --endpoint-resource-manager` and ARM_CLOUD_METADATA_URL readers parse)."""
        if request.method not in ("GET", "HEAD"):
            return _error(405, "MethodNotAllowed",
                          f"The method {request.method} is not allowed on this path.")
        query = dict(parse_qsl(request.scope["query_string"].decode("latin-1")[:2048]))
        bad = self._version_error(query.get("api-version"), ARM_METADATA)
        if bad is not None:
            return bad
        host = request.headers.get("host", "localhost")
        _, port = split_host(host)
        suffix = f":{port}" if port else ""
        domain = self.d.settings.domain.lower()
        base = f"https://{host}/"
        cloud = {
            "name": DISPLAY_NAME,
            "portal": base,
            "portalEndpoint": base,
            "resourceManager": base,
            "galleryEndpoint": base,
            "graphEndpoint": base,
            # Set, so that az's role assignment lists ask it for principal names (and show
            # them as unknown when it does not answer) instead of failing.
            "microsoftGraphResourceId": base,
            "authentication": {
                "loginEndpoint": base,
                "audiences": ["https://management.core.windows.net/",
                              "https://management.azure.com/"],
                "tenant": self.d.tenant_id,
                "identityProvider": "AAD",
            },
            "suffixes": {
                "keyVaultDns": f"vault.{domain}{suffix}",
                "mhsmDns": f"managedhsm.{domain}{suffix}",
            },
        }
        body: Any = [cloud] if query["api-version"] == "2019-05-01" else cloud
        return json_response(body)

    # ---- authenticated -----------------------------------------------------------------
    def operation_of(self, method: str, path: str) -> Operation | None:
        """The operation of `method` on `path` if it is one of this module's."""
        for pattern, route in self.routes:
            if pattern.fullmatch(path) is not None:
                return route.operations.get(method)
        return None

    async def handle(self, request: Request, principal: Principal, ex: Exchange,
                     accounting: Accounting) -> Response | None:
        """The answer for one of this module's paths; None for any other path. The gates
        are asked once the api-version is known, before the handler acts (a handler
        checks the caller's authorization, then reads a body)."""
        path: str = request.scope["path"].rstrip("/")
        for pattern, route in self.routes:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            ex.operation = route.operations.get(request.method)
            if ex.operation is None:
                await discard_body(request)
                return json_response({"error": {
                    "code": "MethodNotAllowed",
                    "message": f"The method {request.method} is not allowed on this path."}},
                    405, headers={"Allow": ", ".join(sorted(route.methods))})
            query = dict(parse_qsl(request.scope["query_string"].decode("latin-1")[:4096],
                                   keep_blank_values=True))
            versions = route.versions()
            if "$skiptoken" in query:  # a next page, asked with the client's own version
                versions = versions | self._kv
            ex.api_version = query.get("api-version")
            bad = self._version_error(ex.api_version, versions)
            if bad is not None:
                await discard_body(request)
                return bad
            ex.object_id = f"https://{request.headers.get('host', 'localhost')}{path}"
            refused = accounting.admit(request.scope, ex)
            if refused is not None:
                await discard_body(request)
                return refused
            call = _Call(request, principal, m.groupdict(), query, query["api-version"])
            if inspect.iscoroutinefunction(route.handler):
                return await route.handler(self, call)  # type: ignore[no-any-return]
            return await run_in_threadpool(route.handler, self, call)
        return None

    @staticmethod
    def _version_error(version: str | None, accepted: frozenset[str]) -> Response | None:
        if version is None:
            return _error(400, "MissingApiVersionParameter",
                          "The api-version query parameter (?api-version=) is required for "
                          "all requests.")
        if version not in accepted:
            return _error(400, "InvalidApiVersionParameter",
                          f"The api-version '{version[:32]}' is invalid. The supported "
                          f"versions are '{','.join(sorted(accepted))}'.")
        return None

    # ---- subscriptions and tenants -------------------------------------------------------
    def _sees_subscription(self, principal: Principal) -> bool:
        return bool(self.d.rbac.of(principal.object_id))

    def _subscription_body(self) -> dict[str, Any]:
        sub, tenant = self.d.vaults.default_subscription(), self.d.tenant_id
        return {"id": f"/subscriptions/{sub}", "authorizationSource": "RoleBased",
                "managedByTenants": [], "subscriptionId": sub, "tenantId": tenant,
                "homeTenantId": tenant, "displayName": DISPLAY_NAME, "state": "Enabled",
                "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01",
                                         "quotaId": "PayAsYouGo_2014-09-01",
                                         "spendingLimit": "Off"},
                "tags": {}}

    def _subscriptions(self, call: _Call) -> Response:
        shown = [self._subscription_body()] if self._sees_subscription(call.principal) else []
        return json_response({"value": shown})

    def _subscription(self, call: _Call) -> Response:
        sub = check_subscription(call.params["sub"])
        if sub != self.d.vaults.default_subscription().lower() \
                or not self._sees_subscription(call.principal):
            return _error(404, "SubscriptionNotFound",
                          f"The subscription '{sub}' could not be found.")
        return json_response(self._subscription_body())

    def _tenants(self, call: _Call) -> Response:
        t = self.d.tenant_id
        return json_response({"value": [{
            "id": f"/tenants/{t}", "tenantId": t, "tenantCategory": "Home",
            "displayName": DISPLAY_NAME, "defaultDomain": self.d.settings.domain,
            "domains": [self.d.settings.domain]}]})

    # ---- resource groups ---------------------------------------------------------------
    def _all_groups(self, sub: str) -> dict[str, ResourceGroupRecord]:
        """Every group of the subscription by lower-case name: created ones, then those
        that exist only through the vaults placed in them (one grouped query)."""
        out = {g.name.lower(): g for g in self.groups.list(sub)}
        for name, location in self.d.vaults.groups_in_use(sub):
            out.setdefault(name.lower(), ResourceGroupRecord(sub, name, location))
        return out

    def _group_body(self, g: ResourceGroupRecord) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": f"/subscriptions/{g.subscription}/resourceGroups/{g.name}",
            "name": g.name, "type": RG_TYPE, "location": g.location,
            "properties": {"provisioningState": "Succeeded"}}
        if g.tags is not None:
            body["tags"] = g.tags
        return body

    def _may(self, principal: Principal, action: str, sub: str, rg: str | None) -> bool:
        return self.d.control.allowed_control(principal, action, sub, rg, None)

    def _refuse(self, principal: Principal, shown: str, sub: str, rg: str) -> Forbidden:
        return Forbidden(
            f"The client '{principal.object_id}' does not have authorization to perform "
            f"action '{shown}' over scope '/subscriptions/{sub}/resourceGroups/{rg}', or the "
            "scope is invalid.", inner="AuthorizationFailed")

    def _list_groups(self, call: _Call) -> Response:
        sub = check_subscription(call.params["sub"])
        groups = self._all_groups(sub).values()
        return json_response({"value": [
            self._group_body(g) for g in sorted(groups, key=lambda g: g.name.lower())
            if self._may(call.principal, a.VAULTS_READ, sub, g.name)]})

    async def _group(self, call: _Call) -> Response:
        sub = check_subscription(call.params["sub"])
        rg, method, p = call.params["rg"], call.request.method, call.principal
        action, shown = {"GET": (a.VAULTS_READ, RG_READ), "HEAD": (a.VAULTS_READ, RG_READ),
                         "PUT": (a.VAULTS_WRITE, RG_WRITE),
                         "DELETE": (a.VAULTS_DELETE, RG_DELETE)}[method]
        if not self._may(p, action, sub, rg):
            await discard_body(call.request)
            raise self._refuse(p, shown, sub, rg)
        if method == "PUT":
            check_resource_group(rg)
            raw = await read_body(call.request, BODY_LIMIT)
            return await run_in_threadpool(self._put_group, sub, rg, parse_json_object(raw))
        return await run_in_threadpool(self._read_or_delete_group, method, sub, rg)

    def _read_or_delete_group(self, method: str, sub: str, rg: str) -> Response:
        found = self._all_groups(sub).get(rg.lower())
        if method == "HEAD":
            return empty_response(204 if found else 404)
        if found is None:
            raise NotFound(f"Resource group '{rg[:90]}' could not be found.",
                           "ResourceGroupNotFound")
        if method == "GET":
            return json_response(self._group_body(found))
        held, more = self.d.vaults.placed_page(sub, rg, None, None, None, 5)
        if held:
            names = ", ".join(p.vault.name for p in held) + (", ..." if more else "")
            raise Conflict(f"The resource group '{found.name}' holds vaults or managed HSM "
                           f"pools ({names}); delete them first.",
                           inner="ResourceGroupDeletionBlocked")
        self.groups.delete(sub, rg)
        return empty_response(200)

    def _put_group(self, sub: str, rg: str, body: dict[str, Any]) -> Response:
        location, tags = body.get("location"), body.get("tags")
        if not isinstance(location, str) or not _LOCATION.fullmatch(location):
            raise BadParameter("The resource group's 'location' is required: letters, digits "
                               "and spaces, at most 64.", inner="LocationRequired")
        if tags is not None and (not isinstance(tags, dict) or len(tags) > MAX_TAGS or any(
                not isinstance(k, str) or not isinstance(v, str) or not 0 < len(k) <= 512
                or len(v) > 256 for k, v in tags.items())):
            raise BadParameter("Tags must be an object of at most 50 names (1-512 characters) "
                               "with string values (at most 256 characters).",
                               inner="InvalidTag")
        existing = self._all_groups(sub).get(rg.lower())
        name = existing.name if existing else rg
        record = ResourceGroupRecord(sub, name, location.replace(" ", "").lower(), tags)
        self.groups.put(record)
        return json_response(self._group_body(record), 200 if existing else 201)

    # ---- generic resources -------------------------------------------------------------
    @staticmethod
    def _filter(text: str | None) -> tuple[str | None, str | None]:
        """(resource type, name) from the `$filter` forms the SDKs send; BadParameter
        (InvalidFilterInQueryString) for anything else."""
        if text is None or not text.strip():
            return None, None
        found: dict[str, str] = {}
        for part in _AND.split(text.strip()):
            m = _CLAUSE.fullmatch(part)
            if m is None or m[1].lower() in found:
                raise BadParameter(
                    f"The $filter '{text[:200]}' is not supported: use \"resourceType eq "
                    "'TYPE'\", optionally with \"and name eq 'NAME'\".",
                    inner="InvalidFilterInQueryString")
            found[m[1].lower()] = m[2].replace("''", "'")
        return found.get("resourcetype"), found.get("name")

    def _resources(self, call: _Call) -> Response:
        """Generic resources (the vaults and pools), in name order, in keyset pages: the
        next page's `$skiptoken` is the last name shown, so a page costs the same with
        10,000 vaults before it."""
        sub = check_subscription(call.params["sub"])
        rg = call.params.get("rg")
        rtype, name = self._filter(call.query.get("$filter"))
        top = self._int(call.query, "$top", 1, PAGE_LIMIT, PAGE_LIMIT)
        after = call.query.get("$skiptoken") or None
        if rg is not None:
            check_resource_group(rg)
            if rg.lower() not in self._all_groups(sub):
                raise NotFound(f"Resource group '{rg[:90]}' could not be found.",
                               "ResourceGroupNotFound")
        kind = _KINDS.get(rtype.lower(), "") if rtype is not None else None
        placed, more = ([], False) if kind == "" else \
            self.d.vaults.placed_page(sub, rg, kind, name, after, top)
        items = []
        for p in placed:
            pool = p.vault.kind == MANAGED_HSM_KIND
            if not self.d.control.allowed_control(
                    call.principal, a.MANAGED_HSMS_READ if pool else a.VAULTS_READ, None,
                    None, p.vault.name):
                continue
            r = (self.d.managed_hsms if pool else self.d.vaults).render(p)
            item: dict[str, Any] = {k: r[k] for k in ("id", "name", "type", "location")
                                    if k in r}
            if r.get("tags") is not None:
                item["tags"] = r["tags"]
            items.append(item)
        page: dict[str, Any] = {"value": items}
        if more and placed:
            query = {k: v for k, v in call.query.items() if k != "$skiptoken"}
            query["$skiptoken"] = placed[-1].vault.name
            host = call.request.headers.get("host", "localhost")
            page["nextLink"] = f"https://{host}{call.request.scope['path']}?{urlencode(query)}"
        return json_response(page)

    @staticmethod
    def _int(query: dict[str, str], key: str, low: int, high: int, default: int) -> int:
        text = query.get(key)
        if text is None:
            return default
        if not text.isdigit() or not low <= int(text) <= high:
            raise BadParameter(f"The query parameter '{key}' must be an integer from {low} to "
                               f"{high}.", inner="InvalidQueryParameterValue")
        return int(text)

    # ---- the provider's operations -------------------------------------------------------
    def _operations(self, call: _Call) -> Response:
        ops = [(x, False) for x in sorted(a.CONTROL) if x.startswith("Microsoft.KeyVault/")]
        ops += [(x, True) for x in sorted(a.DATA) if x.startswith("Microsoft.KeyVault/")]
        return json_response({"value": [{
            "name": x, "isDataAction": data, "origin": "user,system",
            "display": {"provider": "Microsoft Key Vault",
                        "resource": x.split("/")[1],
                        "operation": x, "description": f"{x} ({DISPLAY_NAME})"}}
            for x, data in ops]})
