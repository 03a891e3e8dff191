"""Which request the current code runs for: a number that changes with every request.

Set by the API pipeline; it follows the request into worker threads (context
variables are copied into them). Storage uses it to do a freshness check once
per request rather than once per query.
"""

from __future__ import annotations

import itertools
from contextvars import ContextVar

_counter = itertools.count(1)
current: ContextVar[int] = ContextVar("okv_request", default=0)


def begin() -> None:
    """Mark the start of a new request in the current context."""
    current.set(next(_counter))
