"""ISO-8601 durations as rotation policies use them (P90D, P1Y2M, PT12H, P2W).

Years count 365 days and months 30 days, so a duration is a fixed number of
seconds.
"""

from __future__ import annotations

import re

from openkeyvault.vault.errors import BadParameter

_DURATION = re.compile(
    r"P(?!$)(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+)S)?)?",
)
_SECONDS = {"y": 365 * 86400, "mo": 30 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600,
            "mi": 60, "s": 1}


def parse(value: object, field: str) -> int:
    """Seconds in an ISO-8601 duration; 400 BadParameter if it is not one."""
    if not isinstance(value, str) or len(value) > 32:
        raise BadParameter(f"'{field}' must be an ISO-8601 duration such as P90D.")
    m = _DURATION.fullmatch(value.upper())
    if m is None:
        raise BadParameter(f"'{field}' value '{value}' is not an ISO-8601 duration (e.g. P90D).")
    return sum(int(v) * _SECONDS[k] for k, v in m.groupdict().items() if v)
