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


# The management API (ARM) speaks ARM's codes: a domain error's `inner` code when it has
# one (VaultAlreadyExists, ConflictError, VaultNameNotValid...), else the class default.
ARM_CODES: dict[type[e.DomainError], str] = {
    e.BadParameter: "BadRequest",
    e.Unauthorized: "AuthenticationFailed",
    e.Forbidden: "AuthorizationFailed",
    e.NotFound: "ResourceNotFound",
    e.VaultNotFound: "ResourceNotFound",
    e.Conflict: "Conflict",
    e.TooLarge: "RequestEntityTooLarge",
}


def arm_error(exc: e.DomainError) -> tuple[int, dict[str, object]]:
    """(status, ARM error body {"error": {"code", "message"}}) for a domain error."""
    status, _ = map_error(exc)
    code = next((ARM_CODES[c] for c in type(exc).__mro__ if c in ARM_CODES),
                "InternalServerError")
    if isinstance(exc, e.NotFound) and exc.code != "NotFound":
        code = exc.code
    elif exc.inner:
        code = exc.inner
    return status, {"error": {"code": code, "message": exc.message}}
