"""Reading a request body (api/http.py `read_body_buffer`) from the ASGI messages a server
sends: a small declared body in one message, one in several, a chunked one; a body that
does not match its Content-Length, one over the limit, and a client that went away are
each refused as such. (HTTP servers frame bodies by their Content-Length, so a mismatch
cannot be made over a socket: the messages are given here directly.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request

from openkeyvault.api.http import read_body_buffer
from openkeyvault.vault.errors import BadParameter, TooLarge


def _read(messages: list[dict[str, Any]], length: int | None, limit: int = 1 << 20
          ) -> tuple[bytes | None, list[dict[str, Any]]]:
    """The body read from `messages` (the rest: what was left unread)."""
    left = list(messages)

    async def receive() -> dict[str, Any]:
        if not left:
            await asyncio.sleep(3600)  # a server waits for the client to go away
        return left.pop(0)

    headers = [] if length is None else [(b"content-length", str(length).encode())]
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers,
             "query_string": b""}

    async def run() -> bytes | None:
        body = await asyncio.wait_for(read_body_buffer(Request(scope, receive), limit), 5)
        return bytes(body)
    return asyncio.run(run()), left


def _part(body: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


def test_a_body_in_one_message() -> None:
    assert _read([_part(b'{"a":1}')], 7) == (b'{"a":1}', [])
    assert _read([_part(b"")], 0) == (b"", [])


def test_a_body_in_several_messages() -> None:
    parts = [_part(b"ab", True), _part(b"", True), _part(b"cd", True), _part(b"e")]
    assert _read(parts, 5) == (b"abcde", [])
    assert _read(parts, None) == (b"abcde", [])  # chunked: no length declared
    big = [_part(b"x" * 70_000, True), _part(b"y" * 10)]  # over the one-message size
    assert _read(big, 70_010)[0] == b"x" * 70_000 + b"y" * 10


@pytest.mark.parametrize(("parts", "length", "word"), [
    ([_part(b"abcdef")], 5, "longer"),
    ([_part(b"abc")], 5, "shorter"),
    ([_part(b"abc", True), _part(b"def")], 5, "longer"),
    ([_part(b"ab", True), _part(b"c")], 5, "shorter"),
])
def test_a_body_that_is_not_its_content_length_is_refused(
        parts: list[dict[str, Any]], length: int, word: str) -> None:
    with pytest.raises(BadParameter, match=f"body is {word} than its Content-Length"):
        _read(parts, length)


def test_a_body_over_the_limit_is_refused() -> None:
    with pytest.raises(TooLarge):
        _read([_part(b"x" * 11)], 11, limit=10)
    with pytest.raises(TooLarge):  # chunked: refused once past the limit
        _read([_part(b"x" * 6, True), _part(b"x" * 6)], None, limit=10)


def test_a_client_that_went_away_is_told_apart() -> None:
    with pytest.raises(ClientDisconnect):
        _read([{"type": "http.disconnect"}], 5)
    with pytest.raises(ClientDisconnect):
        _read([_part(b"ab", True), {"type": "http.disconnect"}], 5)
