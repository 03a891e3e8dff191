"""Two calls released at the same moment, for races at compare-and-set."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from openkeyvault.ops import requestscope


def race(a: Callable[[], Any], b: Callable[[], Any]) -> tuple[Any, Any]:
    """Run `a` and `b` in two threads released at the same moment; their results (an
    exception is returned, not raised)."""
    start = threading.Barrier(2)
    out: list[Any] = [None, None]

    def run(i: int, fn: Callable[[], Any]) -> None:
        start.wait()
        requestscope.begin()
        try:
            out[i] = fn()
        except Exception as exc:  # noqa: BLE001 - the caller asserts on it
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out[0], out[1]
