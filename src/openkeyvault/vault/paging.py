"""Opaque continuation tokens and page-size rules for list operations."""

from __future__ import annotations

import base64
import json
from typing import Any

from openkeyvault.vault.errors import BadParameter

MAX_RESULTS = 25
MAX_TOKEN_CHARS = 1024


def page_size(maxresults: str | None) -> int:
    if maxresults is None or maxresults == "":
        return MAX_RESULTS
    n = int(maxresults) if maxresults.isascii() and maxresults.isdigit() else 0
    if not 1 <= n <= MAX_RESULTS:
        raise BadParameter(
            f"Invalid value for maxresults: '{maxresults[:20]}'. It must be an integer between "
            f"1 and {MAX_RESULTS}."
        )
    return n


def encode_token(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_token(token: str | None) -> dict[str, Any]:
    if not token:
        return {}
    if len(token) > MAX_TOKEN_CHARS:
        raise BadParameter("The $skiptoken is invalid.")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
        if isinstance(value, dict):
            return value
    except (ValueError, TypeError):
        pass
    raise BadParameter("The $skiptoken is invalid.")


def position(token: str | None, key: str, kind: type[str] | type[int]) -> Any:
    """The resume position held under `key` in a token (None for no token).

    A token that is not one of ours, or holds another list's position, is refused.
    """
    if not token:
        return None
    value = decode_token(token).get(key)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise BadParameter("The $skiptoken is invalid.")
    if isinstance(value, int) and not 0 <= value < 2**63:
        raise BadParameter("The $skiptoken is invalid.")
    return value
