"""Small HTTP helpers: JSON responses, bounded body reading, the request context."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from openkeyvault.crypto.encoding import b64url_decode as _b64url_decode
from openkeyvault.crypto.encoding import b64url_encode as b64url_encode
from openkeyvault.vault.context import Caller
from openkeyvault.vault.errors import BadParameter, TooLarge

JSON_TYPE = "application/json; charset=utf-8"
DEFAULT_BODY_LIMIT = 256 * 1024
# json.loads decodes with "surrogatepass", so a `\uD800`-`\uDFFF` escape, UTF-8-encoded
# surrogate bytes (ED A0-BF) or a UTF-16/32 body (it has NUL bytes) may yield a lone
# surrogate: a str that cannot be encoded as UTF-8 downstream.
_MAY_HOLD_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]|\x00")
DRAIN_LIMIT = 4 * 1024 * 1024  # the most of a refused body read (and dropped) before the 413


# json.dumps with any non-default argument builds a new encoder per call; build it once.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


_JSON_TYPE = (b"content-type", JSON_TYPE.encode())


class JSONBytesResponse(Response):
    """A JSON response whose headers are built directly (Starlette's generic header
    handling costs as much as encoding a small body)."""

    def __init__(self, body: bytes, status: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        self.raw_headers = [(b"content-length", str(len(body)).encode()), _JSON_TYPE]
        if headers:
            self.raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                                 for k, v in headers.items()]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONBytesResponse(_ENCODER.encode(body).encode(), status, headers)


def empty_response(status: int = 204) -> Response:
    return Response(b"", status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    stream = request.stream()
    if declared is not None and declared.isdigit() and int(declared) > limit:
        if int(declared) <= DRAIN_LIMIT:
            await _discard(stream, 0)
        raise TooLarge(f"The request body is larger than the {limit}-byte limit.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            await _discard(stream, size)
            raise TooLarge(f"The request body is larger than the {limit}-byte limit.")
        chunks.append(chunk)
    return b"".join(chunks)


async def discard_body(request: Request) -> None:
    """Drop the body of a request refused before its body was read (up to DRAIN_LIMIT
    bytes), so that the client reads the refusal rather than a reset connection."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > DRAIN_LIMIT:
        return
    await _discard(request.stream(), 0)


async def _discard(stream: AsyncIterator[bytes], seen: int) -> None:
    """Read and drop the rest of a refused body, up to DRAIN_LIMIT bytes in all.

    A client usually sends its whole body before it reads the answer; a server
    that answers and closes while unread bytes are still arriving resets the
    connection, and the client sees a broken pipe instead of the 413.
    """
    async for chunk in stream:
        seen += len(chunk)
        if seen > DRAIN_LIMIT:
            return


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise BadParameter("The request body is empty; a JSON object is required.")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadParameter("The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise BadParameter("The request body must be a JSON object.")
    if _MAY_HOLD_SURROGATE.search(raw):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BadParameter(
                "The request body is not valid JSON: it holds an unpaired UTF-16 surrogate."
            ) from None
    return value


@dataclass
class Ctx:
    """One data-plane request, as handlers see it."""

    caller: Caller
    base: str  # https://host[:port], as the client addressed the vault
    path: str
    api_version: str
    query: dict[str, str]
    params: dict[str, str]
    raw_body: bytes = b""
    _json: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def body(self) -> dict[str, Any]:
        if self._json is None:
            self._json = parse_json_object(self.raw_body)
        return self._json


def b64url_decode(value: Any, field: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise BadParameter(f"'{field}' must be a non-empty base64url string.")
    try:
        return _b64url_decode(value)
    except ValueError:
        raise BadParameter(f"'{field}' is not valid base64url.") from None
