"""Domain errors. `api/errors.py` maps each class to an HTTP status and wire code."""

from __future__ import annotations


class DomainError(Exception):
    """Base class. `message` is safe to show a client; `inner` is an optional inner code."""

    inner: str | None = None

    def __init__(self, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if inner is not None:
            self.inner = inner


class BadParameter(DomainError):
    pass


class NotFound(DomainError):
    """`code` is the Key Vault code, e.g. SecretNotFound."""

    def __init__(self, message: str, code: str = "NotFound") -> None:
        super().__init__(message)
        self.code = code


class Conflict(DomainError):
    pass


class Forbidden(DomainError):
    pass


class Unauthorized(DomainError):
    pass


class VaultNotFound(DomainError):
    pass


class TooLarge(DomainError):
    pass


class Unavailable(DomainError):
    """A part of the deployment the operation needs (an HSM) cannot be reached: not the
    caller's fault; the message names no module, token or PIN."""


class BodyTimeout(DomainError):
    """The request body did not arrive in time (a client sending it too slowly)."""


class RoleAssignmentExists(Conflict):
    pass


class RoleDefinitionExists(Conflict):
    """Another role definition has the role name."""
