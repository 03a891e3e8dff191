"""The data-plane route table: method, path, handler, body limit and the operation each
route does (vault/operations.py), whose guard (router.py) the app checks before it reads
the body."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from openkeyvault.api.certificates import certificate_routes
from openkeyvault.api.issuers import issuer_routes
from openkeyvault.api.keys import KeyRoutes
from openkeyvault.api.rbac import rbac_routes
from openkeyvault.api.router import (
    KEY_RESTORE_BODY_LIMIT,
    SECRET_RESTORE_BODY_LIMIT,
    Route,
    pattern,
)
from openkeyvault.api.secrets import SecretRoutes
from openkeyvault.deployment import Deployment
from openkeyvault.vault import operations
from openkeyvault.vault.operations import KEY_OPERATIONS

Handler = Callable[[Any], Response]


def data_plane_routes(d: Deployment) -> list[Route]:
    s = SecretRoutes(d.secrets)
    table: list[tuple[str, str, Handler, int, str]] = [
        ("GET", "/secrets", s.list, 0, "SecretList"),
        ("PUT", "/secrets/{name}", s.set, 0, "SecretSet"),
        ("DELETE", "/secrets/{name}", s.delete, 0, "SecretDelete"),
        ("GET", "/secrets/{name}/versions", s.list_versions, 0, "SecretListVersions"),
        ("POST", "/secrets/{name}/backup", s.backup, 0, "SecretBackup"),
        ("POST", "/secrets/restore", s.restore, SECRET_RESTORE_BODY_LIMIT, "SecretRestore"),
        ("GET", "/secrets/{name}/{version?}", s.get, 0, "SecretGet"),
        ("PATCH", "/secrets/{name}/{version?}", s.update, 0, "SecretUpdate"),
        ("GET", "/deletedsecrets", s.list_deleted, 0, "SecretListDeleted"),
        ("GET", "/deletedsecrets/{name}", s.get_deleted, 0, "SecretGetDeleted"),
        ("DELETE", "/deletedsecrets/{name}", s.purge, 0, "SecretPurge"),
        ("POST", "/deletedsecrets/{name}/recover", s.recover, 0, "SecretRecover"),
    ]
    routes = _routes(table)
    routes += key_routes(KeyRoutes(d.keys))
    routes += rbac_routes(d.access_control)
    routes += issuer_routes(d.issuers, d.contacts)
    routes += certificate_routes(d)
    return routes


def key_routes(k: KeyRoutes) -> list[Route]:
    """The keys routes (and random bytes) of `k`'s key service: a vault's, or a managed
    HSM pool's (api/pools.py)."""
    table: list[tuple[str, str, Handler, int, str]] = [
        ("GET", "/keys", k.list, 0, "KeyList"),
        ("POST", "/keys/{name}/create", k.create, 0, "KeyCreate"),
        ("PUT", "/keys/{name}", k.import_key, 0, "KeyImport"),
        ("DELETE", "/keys/{name}", k.delete, 0, "KeyDelete"),
        ("GET", "/keys/{name}/versions", k.list_versions, 0, "KeyListVersions"),
        ("POST", "/keys/{name}/backup", k.backup, 0, "KeyBackup"),
        ("POST", "/keys/restore", k.restore, KEY_RESTORE_BODY_LIMIT, "KeyRestore"),
        ("POST", "/keys/{name}/rotate", k.rotate, 0, "KeyRotate"),
        ("GET", "/keys/{name}/rotationpolicy", k.get_rotation_policy, 0,
         "KeyRotationPolicyGet"),
        ("PUT", "/keys/{name}/rotationpolicy", k.set_rotation_policy, 0,
         "KeyRotationPolicySet"),
        ("GET", "/keys/{name}/{version?}", k.get, 0, "KeyGet"),
        ("GET", "/keys/{name}/{version?}/attestation", k.get_attestation, 0,
         "KeyGetAttestation"),
        ("PATCH", "/keys/{name}/{version?}", k.update, 0, "KeyUpdate"),
        ("POST", "/keys/{name}/{version?}/release", k.release, 0, "KeyRelease"),
        ("GET", "/deletedkeys", k.list_deleted, 0, "KeyListDeleted"),
        ("GET", "/deletedkeys/{name}", k.get_deleted, 0, "KeyGetDeleted"),
        ("DELETE", "/deletedkeys/{name}", k.purge, 0, "KeyPurge"),
        ("POST", "/deletedkeys/{name}/recover", k.recover, 0, "KeyRecover"),
        ("POST", "/rng", k.rng, 0, "RandomBytesGet"),
    ]
    routes = _routes(table)
    routes += [Route("POST", pattern(f"/keys/{{name}}/{{version?}}/{path}"), k.operation(path),
                     inline=True, operation=op)
               for path, op in KEY_OPERATIONS.items()]
    return routes


def _routes(table: list[tuple[str, str, Handler, int, str]]) -> list[Route]:
    return [Route(m, pattern(p), h, limit, inline=(m == "GET"), operation=operations.get(op))
            for m, p, h, limit, op in table]
