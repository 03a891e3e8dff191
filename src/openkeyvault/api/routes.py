"""The data-plane route table."""

from __future__ import annotations

from openkeyvault.api.router import Route, pattern
from openkeyvault.api.secrets import RESTORE_BODY_LIMIT, SecretRoutes
from openkeyvault.deployment import Deployment


def data_plane_routes(d: Deployment) -> list[Route]:
    s = SecretRoutes(d.secrets)
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
    ]
    return [Route(m, pattern(p), h, limit) for m, p, h, limit in table]
