"""The data-plane route table: method, path, handler, body limit and the guard each route's
operation needs (router.py), which the app checks before it reads the body."""

from __future__ import annotations

from openkeyvault.access import actions as a
from openkeyvault.api.certificates import certificate_routes
from openkeyvault.api.issuers import issuer_routes
from openkeyvault.api.keys import KeyRoutes
from openkeyvault.api.rbac import rbac_routes
from openkeyvault.api.router import (
    KEY_RESTORE_BODY_LIMIT,
    SECRET_RESTORE_BODY_LIMIT,
    DataGuard,
    Route,
    pattern,
)
from openkeyvault.api.secrets import SecretRoutes
from openkeyvault.deployment import Deployment
from openkeyvault.vault.keys import OPERATIONS

SECRETS, SECRET = "/secrets", "/secrets/{name}"
KEYS, KEY = "/keys", "/keys/{name}"


def data_plane_routes(d: Deployment) -> list[Route]:
    s = SecretRoutes(d.secrets)
    k = KeyRoutes(d.keys)
    g = DataGuard
    table = [
        ("GET", "/secrets", s.list, 0, g(a.SECRETS_READ_METADATA, SECRETS, "list")),
        ("PUT", "/secrets/{name}", s.set, 0, g(a.SECRETS_SET, SECRET)),
        ("DELETE", "/secrets/{name}", s.delete, 0, g(a.SECRETS_DELETE, SECRET)),
        ("GET", "/secrets/{name}/versions", s.list_versions, 0,
         g(a.SECRETS_READ_METADATA, SECRET, "list")),
        ("POST", "/secrets/{name}/backup", s.backup, 0, g(a.SECRETS_BACKUP, SECRET)),
        ("POST", "/secrets/restore", s.restore, SECRET_RESTORE_BODY_LIMIT,
         g(a.SECRETS_RESTORE, SECRETS)),
        ("GET", "/secrets/{name}/{version?}", s.get, 0, g(a.SECRETS_GET, SECRET)),
        ("PATCH", "/secrets/{name}/{version?}", s.update, 0, g(a.SECRETS_UPDATE, SECRET)),
        ("GET", "/deletedsecrets", s.list_deleted, 0,
         g(a.SECRETS_READ_METADATA, SECRETS, "list")),
        ("GET", "/deletedsecrets/{name}", s.get_deleted, 0,
         g(a.SECRETS_READ_METADATA, SECRET, "get")),
        ("DELETE", "/deletedsecrets/{name}", s.purge, 0, g(a.SECRETS_PURGE, SECRET)),
        ("POST", "/deletedsecrets/{name}/recover", s.recover, 0, g(a.SECRETS_RECOVER, SECRET)),
        ("GET", "/keys", k.list, 0, g(a.KEYS_READ, KEYS, "list")),
        ("POST", "/keys/{name}/create", k.create, 0, g(a.KEYS_CREATE, KEY)),
        ("PUT", "/keys/{name}", k.import_key, 0, g(a.KEYS_IMPORT, KEY)),
        ("DELETE", "/keys/{name}", k.delete, 0, g(a.KEYS_DELETE, KEY)),
        ("GET", "/keys/{name}/versions", k.list_versions, 0, g(a.KEYS_READ, KEY, "list")),
        ("POST", "/keys/{name}/backup", k.backup, 0, g(a.KEYS_BACKUP, KEY)),
        ("POST", "/keys/restore", k.restore, KEY_RESTORE_BODY_LIMIT, g(a.KEYS_RESTORE, KEYS)),
        ("POST", "/keys/{name}/rotate", k.rotate, 0, g(a.KEYS_ROTATE, KEY)),
        ("GET", "/keys/{name}/rotationpolicy", k.get_rotation_policy, 0,
         g(a.KEY_ROTATION_POLICIES_READ, KEY)),
        ("PUT", "/keys/{name}/rotationpolicy", k.set_rotation_policy, 0,
         g(a.KEY_ROTATION_POLICIES_WRITE, KEY)),
        ("GET", "/keys/{name}/{version?}", k.get, 0, g(a.KEYS_READ, KEY, "get")),
        ("GET", "/keys/{name}/{version?}/attestation", k.get_attestation, 0,
         g(a.KEYS_READ, KEY, "get")),
        ("PATCH", "/keys/{name}/{version?}", k.update, 0, g(a.KEYS_UPDATE, KEY)),
        ("GET", "/deletedkeys", k.list_deleted, 0, g(a.KEYS_READ, KEYS, "list")),
        ("GET", "/deletedkeys/{name}", k.get_deleted, 0, g(a.KEYS_READ, KEY, "get")),
        ("DELETE", "/deletedkeys/{name}", k.purge, 0, g(a.KEYS_PURGE, KEY)),
        ("POST", "/deletedkeys/{name}/recover", k.recover, 0, g(a.KEYS_RECOVER, KEY)),
        # Random bytes belong to the vault, not to its keys collection.
        ("POST", "/rng", k.rng, 0, g(a.RNG, "/")),
    ]
    routes = [Route(m, pattern(p), h, limit, inline=(m == "GET"), guard=guard)
              for m, p, h, limit, guard in table]
    routes += [Route("POST", pattern(f"/keys/{{name}}/{{version?}}/{op}"), k.operation(op),
                     inline=True, guard=g(action, KEY))
               for op, (action, _, _) in OPERATIONS.items()]
    routes += rbac_routes(d.access_control)
    routes += issuer_routes(d.issuers, d.contacts)
    routes += certificate_routes(d)
    return routes
