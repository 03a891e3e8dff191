"""Waiting for an outcome, bounded by a generous deadline (never a timing assertion)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(outcome: Callable[[], Any], what: str, deadline: float = 90.0) -> Any:
    """Poll `outcome` until it is truthy; fail naming `what` after `deadline` seconds."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = outcome()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")
