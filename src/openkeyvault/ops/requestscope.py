"""Which request the current code runs for: a number that changes with every request,
and the vault it addresses.

Set by the API pipeline; it follows the request into worker threads (context
variables are copied into them). Storage uses it to do a freshness check once
per request rather than once per query, and to read the generation of the request's
vault's objects in that same check.
"""

from __future__ import annotations

import itertools
from contextvars import ContextVar

_counter = itertools.count(1)
current: ContextVar[int] = ContextVar("okv_request", default=0)
vault: ContextVar[str | None] = ContextVar("okv_request_vault", default=None)
# The generations read for this request by the pipeline (storage/freshness.py), if it did.
fresh: ContextVar[dict[str, int] | None] = ContextVar("okv_request_fresh", default=None)


def begin() -> None:
    """Mark the start of a new request in the current context."""
    current.set(next(_counter))
    vault.set(None)
    fresh.set(None)


def addresses(name: str | None) -> None:
    """The request addresses the vault or pool `name` (its lower-case name); said before
    its first read of storage, so the freshness check covers that vault's objects too."""
    vault.set(name)
