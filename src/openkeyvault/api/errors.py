"""The one table from domain errors to HTTP status and Key Vault error code."""

from __future__ import annotations

from openkeyvault.vault import errors as e

# class → (status, wire code); NotFound carries its own code (SecretNotFound, ...).
STATUS: dict[type[e.DomainError], tuple[int, str]] = {
    e.BadParameter: (400, "BadParameter"),
    e.Unauthorized: (401, "Unauthorized"),
    e.Forbidden: (403, "Forbidden"),
    e.NotFound: (404, "NotFound"),
    e.VaultNotFound: (404, "VaultNotFound"),
    e.Conflict: (409, "Conflict"),
    e.RoleAssignmentExists: (409, "RoleAssignmentExists"),
    e.RoleDefinitionExists: (409, "RoleDefinitionWithSameNameExists"),
    e.TooLarge: (413, "RequestEntityTooLarge"),
}


def error_body(code: str, message: str, inner: str | None = None) -> dict[str, object]:
    err: dict[str, object] = {"code": code, "message": message}
    if inner:
        err["innererror"] = {"code": inner}
    return {"error": err}


def map_error(exc: e.DomainError) -> tuple[int, dict[str, object]]:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            status, code = STATUS[cls]
            break
    else:
        status, code = 500, "InternalServerError"
    if isinstance(exc, e.NotFound):
        code = exc.code
    return status, error_body(code, exc.message, exc.inner)
