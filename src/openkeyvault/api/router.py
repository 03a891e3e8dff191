"""A small path matcher that understands Key Vault's empty "latest version" segments.

Patterns are tuples of segments: a literal, `{name}` (one non-empty segment)
or `{name?}` as the last segment (may be empty or absent: `/secrets/x/` and
`/secrets/x` both mean the latest version). Literals win over parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

MEMO_SIZE = 4096


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
