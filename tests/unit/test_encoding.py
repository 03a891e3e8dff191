"""Strict base64url decoding: no silently skipped characters."""

from __future__ import annotations

import pytest

from openkeyvault.crypto.encoding import b64url_decode, b64url_encode


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff\xfe", b"abc", b"abcd", bytes(range(256))])
def test_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64url_decode(text) == data
    assert b64url_decode(text + "=" * (-len(text) % 4)) == data  # padding is optional


@pytest.mark.parametrize("bad", ["AQAB!!!!", "AQ AB", "AQ+B", "AQ/B", "A", "AQAB===", "=AQAB",
                                 "AQ\nAB", "é"])
def test_refuses_characters_outside_the_alphabet(bad: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(bad)
