"""A small path matcher that understands Key Vault's empty "latest version" segments,
and what each route needs before its body is read.

Patterns are tuples of segments: a literal, `{name}` (one non-empty segment)
or `{name?}` as the last segment (may be empty or absent: `/secrets/x/` and
`/secrets/x` both mean the latest version). Literals win over parameters.

Every route carries a guard: the authorization its operation needs, decided from
the path alone. The app checks it after routing and before reading a byte of the
body, so a caller without the permission cannot make a worker buffer and decode a
large body only to be refused. The domain checks again (defense in depth); both go
through the same decision, which is memoised, so the second check is a dict lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.responses import Response

from openkeyvault.access.actions import ROLE_MANAGEMENT
from openkeyvault.access.authorize import Authorizer
from openkeyvault.vault.context import Caller, authorize, authorize_control
from openkeyvault.vault.operations import ROLE_SCOPE, Operation

MEMO_SIZE = 4096

# Body limits. A route that takes no more than a small JSON object keeps the default
# (api/http.py DEFAULT_BODY_LIMIT, 256 KiB). A restore body is {"value": base64url(blob)},
# and a blob holds every version of one object (at most 500: vault/objects.py
# MAX_BACKUP_VERSIONS). Each limit covers the body of the largest backup this service
# makes of an object at its own limits, measured per version and times 500 (numbers in
# docs/security.md, "Request bodies"):
#   keys: RSA-4096 with 15 tags of 256+256 characters: 15.9 KB a version, 7.6 MiB;
#   secrets: a 25 KiB value, a 255-character content type, 15 tags of 512+512 characters:
#         55.3 KB a version, 26.4 MiB (plus room for JSON escapes in the values);
#   certificates: RSA-4096, 100 DNS names, 15 tags of 256+256: 54.7 KB a version, 26.1 MiB.
KEY_RESTORE_BODY_LIMIT = 10 * 1024 * 1024
SECRET_RESTORE_BODY_LIMIT = 32 * 1024 * 1024
CERTIFICATE_RESTORE_BODY_LIMIT = 32 * 1024 * 1024


class Guard(Protocol):
    """The authorization a route needs, checked from the path alone."""

    def check(self, authorizer: Authorizer, caller: Caller, params: dict[str, str]) -> None:
        """Raise Forbidden (the domain's own refusal) unless `caller` may go on."""
        ...


def _split(template: str) -> tuple[str, str | None]:
    """`/keys/{name}` → ("/keys/", "name"); `/keys` → ("/keys", None). A scope names at
    most one parameter, as its last segment."""
    head, sep, last = template.rpartition("/")
    if not last.startswith("{"):
        assert "{" not in template, template
        return template, None
    assert "{" not in head, template
    return head + sep, last.strip("{}?")


def _fill(template: str, params: dict[str, str]) -> str:
    """`/secrets/{name}` with the route's parameter."""
    prefix, param = _split(template)
    return prefix if param is None else prefix + params.get(param, "")


@dataclass(frozen=True)
class DataGuard:
    """A data action at a vault-relative scope, as the domain service checks it: `scope`
    is a path template (`/keys/{name}`, `/` for the vault itself) and `operation` the
    access-policy permission hint where the data action does not determine it."""

    action: str
    scope: str
    operation: str | None = None
    _prefix: str = field(init=False, repr=False, compare=False)
    _param: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prefix, param = _split(self.scope)  # once: the check runs on every request
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_param", param)

    def decision(self, params: dict[str, str]) -> tuple[str, str, str | None]:
        """What is decided for a request with `params`: data action, path, permission."""
        path = self._prefix if self._param is None else self._prefix + params[self._param]
        return self.action, path, self.operation

    def check(self, authorizer: Authorizer, caller: Caller, params: dict[str, str]) -> None:
        authorize(authorizer, caller, *self.decision(params))


@dataclass(frozen=True)
class RoleGuard:
    """Role management: `what` ("roleAssignments" | "roleDefinitions") and `verb`
    ("read" | "write" | "delete") name the control action (access/actions.ROLE_MANAGEMENT)
    for the vault's kind; `scope` is vault-relative, or with `deployment` the whole
    deployment (custom role definitions are shared by every vault).

    Writing an assignment also needs the role being assigned to be admitted by the
    caller's assignment condition; that role is in the body, so the guard checks the
    action without it (never stricter than the domain) and the domain checks the rest.
    """

    what: str
    verb: str
    scope: str = "/"
    deployment: bool = False

    def action(self, kind: str) -> str | None:
        return ROLE_MANAGEMENT.get((kind.lower(), self.what, self.verb))

    def resource(self, caller: Caller, params: dict[str, str]) -> str:
        if self.deployment:
            return "/"
        rel = _fill(self.scope, params)
        return f"/vaults/{caller.vault.name}" + ("" if rel == "/" else rel)

    def check(self, authorizer: Authorizer, caller: Caller, params: dict[str, str]) -> None:
        authorize_control(authorizer, caller, self.what, self.verb,
                          self.resource(caller, params))


def data_guard(op: Operation) -> DataGuard:
    """The guard of a data-plane operation: its action at its scope, with its
    access-policy hint (vault/operations.py)."""
    if op.action is None or op.scope == ROLE_SCOPE:
        raise ValueError(f"{op.name} is not decided by a data action at a vault scope")
    return DataGuard(op.action, op.scope, op.permission)


# A role-management action (the vault's) → (what, verb) of access/actions.ROLE_MANAGEMENT.
_ROLE_VERBS = {action: (what, verb) for (kind, what, verb), action in ROLE_MANAGEMENT.items()
               if kind == "vault"}


def role_guard(op: Operation, scope: str = "/", deployment: bool = False) -> RoleGuard:
    """The guard of a role-management operation at the role scope `scope` (a template);
    the action follows the vault's kind when checked (a pool's is its own)."""
    what, verb = _ROLE_VERBS[op.action or ""]
    return RoleGuard(what, verb, scope, deployment)


@dataclass(frozen=True)
class Route:
    method: str
    pattern: tuple[str, ...]
    handler: Callable[[Any], Response]
    body_limit: int = 0  # 0: the default limit
    # Run on the event loop rather than in a worker thread: CPU-bound work with no
    # storage writes (reads, crypto with a loaded key), where the thread hop costs more
    # than it frees. Writes, which wait on fsync, go to the thread pool.
    inline: bool = False
    # Checked before the body is read. Every data-plane route has one; None only for
    # routes that need no authorization. Derived from `operation` when not given.
    guard: Guard | None = None
    # What the route does (vault/operations.py): named in every Outcome and guard.
    operation: Operation | None = None

    def __post_init__(self) -> None:
        if self.guard is None and self.operation is not None:
            object.__setattr__(self, "guard", data_guard(self.operation))

    @property
    def literal_count(self) -> int:
        return sum(1 for p in self.pattern if not p.startswith("{"))


def _match(pattern: tuple[str, ...], segs: list[str]) -> dict[str, str] | None:
    optional_last = bool(pattern) and pattern[-1].endswith("?}")
    if len(segs) == len(pattern) - 1 and optional_last:
        segs = [*segs, ""]
    if len(segs) != len(pattern):
        return None
    params: dict[str, str] = {}
    for p, s in zip(pattern, segs, strict=True):
        if p.startswith("{"):
            key = p.strip("{}?")
            if not s and not p.endswith("?}"):
                return None
            params[key] = s
        elif p != s.lower():
            return None
    return params


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self._routes = sorted(routes, key=lambda r: -r.literal_count)
        # Candidates by (first segment, segment count): every pattern starts with a literal.
        self._index: dict[tuple[str, int], list[Route]] = {}
        self._memo: dict[tuple[str, str], tuple[Route, dict[str, str]] | None | bool] = {}
        for r in self._routes:
            counts = {len(r.pattern)}
            if r.pattern[-1].endswith("?}"):
                counts.add(len(r.pattern) - 1)
            for n in counts:
                self._index.setdefault((r.pattern[0], n), []).append(r)

    def _candidates(self, segs: list[str]) -> list[Route]:
        return self._index.get((segs[0].lower(), len(segs)), []) if segs else []

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None | bool:
        """(route, params); False when the path exists for another method; None when unknown.

        Answers are memoised (bounded): a service sees the same few paths over and over.
        """
        key = (method, path)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        found = self._resolve(method, path)
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[key] = found
        return found

    def _resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None | bool:
        segs = _segments(path)
        path_known = False
        for r in self._candidates(segs):
            params = _match(r.pattern, segs)
            if params is None:
                continue
            if r.method == method:
                return r, params
            path_known = True
        return False if path_known else None

    def methods(self, path: str) -> list[str]:
        """The methods some route accepts on `path`."""
        segs = _segments(path)
        return sorted({r.method for r in self._candidates(segs)
                       if _match(r.pattern, segs) is not None})


def _segments(path: str) -> list[str]:
    segs = path.split("/")[1:]
    # A client that joins the vault URL, the role scope `/` and `/providers/...` sends
    # `//providers/...` (or `//keys/providers/...`): those empty segments mean nothing.
    if len(segs) > 1 and not segs[0] and _ROLE_PROVIDER in path.lower():
        while len(segs) > 1 and not segs[0]:
            segs.pop(0)
    return segs


_ROLE_PROVIDER = "/providers/microsoft.authorization/"


def pattern(path: str) -> tuple[str, ...]:
    return tuple(path.strip("/").split("/"))
