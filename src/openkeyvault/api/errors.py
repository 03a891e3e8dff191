"""The one table from domain errors to HTTP status and Key Vault error code.

Faults of the deployment (the storage error family) map here too: never a 4xx, a
fixed message that names no file or key, and one log line per fault instead of a
traceback per request.
"""

from __future__ import annotations

import logging

from openkeyvault.ops.logs import Intervals
from openkeyvault.storage import errors as s
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
    e.BodyTimeout: (408, "RequestTimeout"),
    e.Unavailable: (503, "ServiceUnavailable"),
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
    e.BodyTimeout: "RequestTimeout",
    e.Unavailable: "ServiceUnavailable",
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


# Storage faults: class → (status, wire code, Retry-After seconds or None, client message).
# Most specific class first; a client never learns paths, owners or key material.
FAULTS: dict[type[s.StorageError], tuple[int, str, int | None, str]] = {
    s.StorageFull: (503, "ServiceUnavailable", 30,
                    "The service's storage is full. Retry later."),
    s.StorageUnavailable: (503, "ServiceUnavailable", 10,
                           "The service's storage is unavailable. Retry later."),
    s.KeyMaterialMissing: (500, "InternalServerError", None,
                           "The key material protecting this vault's objects is unavailable "
                           "on the server."),
}
_OTHER_FAULT = (500, "InternalServerError", None, "The server hit an unexpected error.")


def storage_fault(exc: BaseException) -> s.StorageError | None:
    """The storage fault behind `exc`: `exc` itself, or one it was raised from or while
    handling (a domain error raised while a lower layer failed is that failure, not a
    fault of the request)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        fault = s.storage_fault_of(current)
        if fault is not None:
            return fault
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def map_fault(fault: s.StorageError) -> tuple[int, dict[str, object], dict[str, str]]:
    """(status, body, headers) for a storage fault."""
    status, code, retry_after, message = next(
        (FAULTS[c] for c in type(fault).__mro__ if c in FAULTS), _OTHER_FAULT)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return status, error_body(code, message), headers


class FaultLog:
    """One log line per fault, then silence for a while: a full disk under load is one
    line a minute, not a traceback per request; a missing key is one line an hour per
    owner, naming it (and the vault the request addressed). Per process."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0,
                 key_interval: float = 3600.0) -> None:
        self._log = logger
        self._interval = interval
        self._key_interval = key_interval  # a lost key stays lost: remind hourly
        self._due = Intervals()

    def report(self, fault: s.StorageError, vault: str | None = None) -> bool:
        """Log `fault` unless it was logged within the interval; whether it was."""
        interval = self._interval
        if isinstance(fault, s.KeyMaterialMissing):
            key, interval = fault.owner, self._key_interval
            where = f"vault '{vault}' ({fault.owner})" if vault else fault.owner
            line = (f"{where}: {fault}; its objects cannot be opened until the keyring file "
                    "is restored from backup")
        else:
            key, line = type(fault).__name__, f"storage fault: {fault}"
        if not self._due.due(key, interval):
            return False
        self._log.error("%s", line)
        return True


FAULT_LOG = FaultLog(logging.getLogger("openkeyvault.storage"))
