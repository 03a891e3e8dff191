"""Small HTTP helpers: JSON responses, bounded body reading, the request context."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from openkeyvault.api.jsondepth import TOO_DEEP, too_deep
from openkeyvault.crypto.encoding import b64url_decode as _b64url_decode
from openkeyvault.crypto.encoding import b64url_encode as b64url_encode
from openkeyvault.vault.context import Caller
from openkeyvault.vault.errors import BadParameter, BodyTimeout, TooLarge

JSON_TYPE = "application/json; charset=utf-8"
DEFAULT_BODY_LIMIT = 256 * 1024
# json.loads decodes with "surrogatepass", so a `\uD800`-`\uDFFF` escape, UTF-8-encoded
# surrogate bytes (ED A0-BF) or a UTF-16/32 body (it has NUL bytes) may yield a lone
# surrogate: a str that cannot be encoded as UTF-8 downstream.
_MAY_HOLD_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]|\x00")
DRAIN_LIMIT = 4 * 1024 * 1024  # the most of a refused body read (and dropped) before the 413
# A body must arrive within BODY_SECONDS plus one second per BODY_RATE bytes: a client
# that trickles its body holds a request (and a worker's attention) no longer than that.
BODY_SECONDS = 10.0
BODY_RATE = 64 * 1024
_BODY_METHODS = frozenset({"PUT", "POST", "PATCH"})
_BLANK = re.compile(rb"\s*")


# msgspec's encoder writes the same JSON as json.dumps (compact, UTF-8 rather than \u
# escapes) in a tenth of the time; the json module's is kept for what it cannot encode (a
# lone surrogate, which it escapes; a type it does not know, which json refuses too).
_FAST = msgspec.json.Encoder()
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


def json_bytes(body: Any) -> bytes:
    """`body` as compact JSON."""
    try:
        return _FAST.encode(body)
    except (UnicodeEncodeError, TypeError):
        return _ENCODER.encode(body).encode()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONBytesResponse(json_bytes(body), status, headers)


def empty_response(status: int = 204) -> Response:
    return Response(b"", status_code=status)


def declared_length(request: Request) -> int | None:
    """The Content-Length the client declared (the first, as `request.headers` reads it),
    or None (absent, malformed: chunked). Read from the raw headers: building Starlette's
    Headers for it would cost more than the rest."""
    for name, value in request.scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body as bytes, at most `limit` bytes (TooLarge beyond it)."""
    raw = await read_body_buffer(request, limit)
    return raw if isinstance(raw, bytes) else bytes(raw)


async def read_body_buffer(request: Request, limit: int) -> bytes | bytearray:
    """The whole body, at most `limit` bytes (TooLarge beyond it), without copies.

    A declared Content-Length within the limit is read into one buffer of exactly that
    size: no list of chunks and no join, so a body costs its own size once, not twice.
    A body without one (chunked) is gathered chunk by chunk up to the limit.
    """
    declared = declared_length(request)
    if declared is not None and declared > limit:
        if declared <= DRAIN_LIMIT:
            await _discard(request.stream(), 0)
        raise TooLarge(f"The request body is larger than the {limit}-byte limit.")
    seconds = body_deadline(limit if declared is None else declared)
    task = asyncio.current_task()
    assert task is not None  # (an ASGI request runs in a task)
    _DEADLINES.watch(task, seconds)
    try:
        return await _read(request, declared, limit)
    except asyncio.CancelledError:
        if not _DEADLINES.cut(task):
            raise  # cancelled by someone else (the client went away)
        raise BodyTimeout(f"The request body did not arrive within {seconds:.0f} seconds."
                          ) from None
    finally:
        _DEADLINES.forget(task)


class Deadlines:
    """The deadlines of the bodies a worker is reading, kept by one timer that looks every
    `tick` seconds, instead of a timer per body (asyncio.timeout costs a request several
    microseconds). A read past its deadline has its task cancelled, which `cut` then tells
    from any other cancellation; deadlines are met to within `tick` (they are 10 s and
    more)."""

    def __init__(self, tick: float = 1.0) -> None:
        self._tick = tick
        self._due: dict[asyncio.Task[Any], float] = {}
        self._cut: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, task: asyncio.Task[Any], seconds: float) -> None:
        loop = task.get_loop()
        if loop is not self._loop:  # another event loop (a test's): the timer starts over
            self._loop, self._timer = loop, None
            self._due = {t: d for t, d in self._due.items() if t.get_loop() is loop}
        self._due[task] = loop.time() + seconds
        if self._timer is None:
            self._timer = loop.call_later(self._tick, self._look, loop)

    def forget(self, task: asyncio.Task[Any]) -> None:
        self._due.pop(task, None)
        self._cut.discard(task)

    def cut(self, task: asyncio.Task[Any]) -> bool:
        """Whether this was the task's deadline (its cancellation is then taken back)."""
        if task not in self._cut:
            return False
        task.uncancel()
        return True

    def _look(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            return  # (a loop given up for another)
        now = loop.time()
        for task, due in list(self._due.items()):
            if due <= now:
                del self._due[task]
                self._cut.add(task)
                task.cancel()
        self._timer = loop.call_later(self._tick, self._look, loop) if self._due else None


_DEADLINES = Deadlines()


def body_deadline(size: int) -> float:
    """Seconds a body of `size` bytes may take to arrive."""
    return BODY_SECONDS + size / BODY_RATE


async def _read(request: Request, declared: int | None, limit: int) -> bytes | bytearray:
    if declared is not None:
        if declared > _ONE_MESSAGE:
            return await _read_declared(request, declared)
        # A small body comes in one message, read here without the stream's generator.
        message = await request.receive()
        body: bytes = message.get("body", b"")
        if message["type"] == "http.request" and not message.get("more_body", False) \
                and len(body) == declared:
            return body
        return await _read_declared(request, declared, message)
    chunks: list[bytes] = []
    size = 0
    stream = request.stream()
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            await _discard(stream, size)
            raise TooLarge(f"The request body is larger than the {limit}-byte limit.")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_ONE_MESSAGE = 64 * 1024  # a declared body this small is looked for in the first message


async def _read_declared(request: Request, declared: int, first: Any = None) -> bytearray:
    """A body of `declared` bytes into one buffer of that size (after `first`, its first
    message, when that was read already)."""
    buf = bytearray(declared)
    size = 0
    more = True
    if first is not None:
        if first["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk: bytes = first.get("body", b"")
        if len(chunk) > declared:
            raise BadParameter("The request body is longer than its Content-Length.")
        buf[:len(chunk)] = chunk
        size = len(chunk)
        more = first.get("more_body", False)
    if more:  # (after the last message the stream would wait for the client to go)
        stream = request.stream()
        async for chunk in stream:
            end = size + len(chunk)
            if end > declared:
                await _discard(stream, end)
                raise BadParameter("The request body is longer than its Content-Length.")
            buf[size:end] = chunk
            size = end
    if size != declared:
        raise BadParameter("The request body is shorter than its Content-Length.")
    return buf


async def discard_body(request: Request) -> None:
    """Drop the body of a request refused before its body was read (up to DRAIN_LIMIT
    bytes), so that the client reads the refusal rather than a reset connection. A body
    declared larger than that is not read at all: the server answers and the connection
    closes, which costs the client its connection rather than this worker its time."""
    if request.method not in _BODY_METHODS:
        return
    declared = declared_length(request)
    if declared == 0 or (declared is not None and declared > DRAIN_LIMIT):
        return
    await _discard(request.stream(), 0)


async def _discard(stream: AsyncIterator[bytes], seen: int) -> None:
    """Read and drop the rest of a refused body, up to DRAIN_LIMIT bytes in all.

    A client usually sends its whole body before it reads the answer; a server
    that answers and closes while unread bytes are still arriving resets the
    connection, and the client sees a broken pipe instead of the 413. A body still
    arriving after BODY_SECONDS is left unread: the connection closes instead.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(BODY_SECONDS):
            async for chunk in stream:
                seen += len(chunk)
                if seen > DRAIN_LIMIT:
                    return


def parse_json_object(raw: bytes | bytearray) -> dict[str, Any]:
    """The body's JSON object. Its size is bounded by the body limit read_body applied,
    its nesting by api/jsondepth.py (checked before parsing)."""
    if _BLANK.fullmatch(raw):  # (no stripped copy of a large body)
        raise BadParameter("The request body is empty; a JSON object is required.")
    if too_deep(raw):
        raise BadParameter(TOO_DEEP)
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadParameter("The request body is not valid JSON.") from None
    except RecursionError:  # (too_deep should have caught it first)
        raise BadParameter(TOO_DEEP) from None
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
    raw_body: bytes | bytearray = b""
    _json: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def body(self) -> dict[str, Any]:
        if self._json is None:
            self._json = parse_json_object(self.raw_body)
            self.raw_body = b""  # parsed: the bytes need not stay alive while the call runs
        return self._json


_B64_SLICE = 1024 * 1024  # characters decoded at a time (a multiple of 4)


def b64url_decode(value: Any, field: str) -> bytes:
    """Decode a base64url field. A large value (a restore blob) is decoded slice by slice:
    decoding it whole makes three full-size copies of the text (padded, ASCII-encoded,
    translated) on the way to the bytes."""
    if not isinstance(value, str) or not value:
        raise BadParameter(f"'{field}' must be a non-empty base64url string.")
    try:
        if len(value) <= _B64_SLICE:
            return _b64url_decode(value)
        if value.find("=", 0, len(value) - 2) != -1:  # padding only at the very end
            raise ValueError("not base64url")
        return b"".join(_b64url_decode(value[i:i + _B64_SLICE])
                        for i in range(0, len(value), _B64_SLICE))
    except ValueError:
        raise BadParameter(f"'{field}' is not valid base64url.") from None
