"""The api-versions the data plane accepts: one table."""

from __future__ import annotations

SUPPORTED = frozenset(
    {"7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01", "2026-04-01"}
)
LATEST = "2026-04-01"
