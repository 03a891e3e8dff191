"""How deeply a JSON text nests, found without parsing it and only when it might matter.

`json.loads` recurses once per level: about a thousand levels raise RecursionError (a
500), and a few hundred parse but leave every later recursive walk of the value close
to the same limit. No Key Vault or ARM body nests more than a handful of levels, so a
body nesting deeper than MAX_DEPTH is refused before it is parsed.

The check must cost nothing on the hot path (a secret PUT is ~100 bytes): a body with
at most MAX_DEPTH opening brackets cannot nest deeper, and counting them is two C-speed
passes. Only a body with more brackets is scanned, with bytes operations only: escaped
backslashes and escaped quotes are dropped, so that every quote left opens or closes a
string; the text between quotes alternates outside / inside a string; the outside parts
keep only their brackets, mapped to +1 / -1; the deepest level is the largest running sum.
"""

from __future__ import annotations

import json
from itertools import accumulate

MAX_DEPTH = 64
TOO_DEEP = f"The request body nests JSON arrays and objects more than {MAX_DEPTH} levels deep."

_OPEN, _CLOSE = b"[{", b"]}"
_NOT_BRACKET = bytes(b for b in range(256) if b not in _OPEN + _CLOSE)
# As signed bytes, an opening bracket becomes +1 and a closing one -1.
_STEP = bytes(1 if b in _OPEN else 0xFF if b in _CLOSE else 0 for b in range(256))


def nesting(raw: bytes | bytearray) -> int:
    """The deepest nesting of arrays and objects in a JSON text.

    In a text that is not valid JSON, the count is right up to the first fault, which is
    as far as json.loads gets before it refuses the text.
    """
    if b"\x00" in raw:  # UTF-16 or UTF-32, which json.loads accepts: scan it as UTF-8
        try:
            raw = raw.decode(json.detect_encoding(raw), "surrogatepass").encode(
                "utf-8", "surrogatepass")
        except UnicodeError:
            return 0  # json.loads refuses it before it nests anything
    # Backslashes pair up from the left inside a string, so dropping the pairs first
    # leaves `\"` only where a quote is escaped. (Outside a string a backslash is a fault.)
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(text.split(b'"')[::2])
    steps = outside.translate(_STEP, _NOT_BRACKET)
    return max(accumulate(memoryview(steps).cast("b")), default=0)


def too_deep(raw: bytes | bytearray, limit: int = MAX_DEPTH) -> bool:
    """Whether `raw` nests arrays and objects more than `limit` levels deep."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    return nesting(raw) > limit
