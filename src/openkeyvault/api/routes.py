"""The data-plane route table."""

from __future__ import annotations

from openkeyvault.api.certificates import certificate_routes
from openkeyvault.api.issuers import issuer_routes
from openkeyvault.api.keys import KeyRoutes
from openkeyvault.api.rbac import rbac_routes
from openkeyvault.api.router import Route, pattern
from openkeyvault.api.secrets import RESTORE_BODY_LIMIT, SecretRoutes
from openkeyvault.deployment import Deployment
from openkeyvault.vault.keys import OPERATIONS


def data_plane_routes(d: Deployment) -> list[Route]:
    s = SecretRoutes(d.secrets)
    k = KeyRoutes(d.keys)
    table = [
        ("GET", "/secrets", s.list, 0),
        ("PUT", "/secrets/{name}", s.set, 0),
        ("DELETE", "/secrets/{name}", s.delete, 0),
        ("GET", "/secrets/{name}/versions", s.list_versions, 0),
        ("POST", "/secrets/{name}/backup", s.backup, 0),
        ("POST", "/secrets/restore", s.restore, RESTORE_BODY_LIMIT),
        ("GET", "/secrets/{name}/{version?}", s.get, 0),
        ("PATCH", "/secrets/{name}/{version?}", s.update, 0),
        ("GET", "/deletedsecrets", s.list_deleted, 0),
        ("GET", "/deletedsecrets/{name}", s.get_deleted, 0),
        ("DELETE", "/deletedsecrets/{name}", s.purge, 0),
        ("POST", "/deletedsecrets/{name}/recover", s.recover, 0),
        ("GET", "/keys", k.list, 0),
        ("POST", "/keys/{name}/create", k.create, 0),
        ("PUT", "/keys/{name}", k.import_key, 0),
        ("DELETE", "/keys/{name}", k.delete, 0),
        ("GET", "/keys/{name}/versions", k.list_versions, 0),
        ("POST", "/keys/{name}/backup", k.backup, 0),
        ("POST", "/keys/restore", k.restore, RESTORE_BODY_LIMIT),
        ("POST", "/keys/{name}/rotate", k.rotate, 0),
        ("GET", "/keys/{name}/rotationpolicy", k.get_rotation_policy, 0),
        ("PUT", "/keys/{name}/rotationpolicy", k.set_rotation_policy, 0),
        ("GET", "/keys/{name}/{version?}", k.get, 0),
        ("PATCH", "/keys/{name}/{version?}", k.update, 0),
        ("GET", "/deletedkeys", k.list_deleted, 0),
        ("GET", "/deletedkeys/{name}", k.get_deleted, 0),
        ("DELETE", "/deletedkeys/{name}", k.purge, 0),
        ("POST", "/deletedkeys/{name}/recover", k.recover, 0),
        ("POST", "/rng", k.rng, 0),
    ]
    routes = [Route(m, pattern(p), h, limit, inline=(m == "GET")) for m, p, h, limit in table]
    routes += [Route("POST", pattern(f"/keys/{{name}}/{{version?}}/{op}"), k.operation(op),
                     inline=True) for op in OPERATIONS]
    routes += rbac_routes(d.access_control)
    routes += issuer_routes(d.issuers, d.contacts)
    routes += certificate_routes(d)
    return routes
