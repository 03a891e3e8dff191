"""Base64url as the REST API uses it: no padding on output; strict alphabet on input."""

from __future__ import annotations

import base64
import re

_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(value: str) -> bytes:
    """Decode base64url (padding optional). ValueError on any character outside the
    alphabet, instead of silently skipping it as the standard library does."""
    if not _B64URL.fullmatch(value) or len(value.rstrip("=")) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))


def b64_either_decode(value: str) -> bytes:
    """Decode base64 in either alphabet (standard or url-safe), padding optional, as files
    made by other tools carry it (.byok blobs, JWKs). ValueError on anything else."""
    if not isinstance(value, str):
        raise ValueError("not base64")
    return b64url_decode(value.replace("+", "-").replace("/", "_"))
