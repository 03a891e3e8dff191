"""JSON nesting is measured without parsing, and bounded wherever a request body is parsed."""

from __future__ import annotations

import json

import pytest

from openkeyvault.api.http import parse_json_object
from openkeyvault.api.jsondepth import MAX_DEPTH, TOO_DEEP, nesting, too_deep
from openkeyvault.vault.errors import BadParameter


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(("text", "depth"), [
    (b"{}", 1),
    (b'{"a": [1, {"b": [[]]}]}', 5),
    (b'{"a": "]]]]", "b": [[["\\"[["]]]}', 4),  # brackets and escaped quotes in strings
    (b'["\\\\", [[]]]', 3),  # an escaped backslash does not escape the closing quote
    (b'["\\\\\\"[[[[", []]', 2),
    (b'"no brackets"', 0),
    (b"[]]]]", 1),
    (nested(1000), 1000),
])
def test_nesting(text: bytes, depth: int) -> None:
    assert nesting(text) == depth
    assert nesting(bytearray(text)) == depth


def _depth(value: object) -> int:
    """The nesting of a parsed value, for reference."""
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@pytest.mark.parametrize("value", [
    {"a": [{"b": "x]\\\"[", "c": ["\\\\", '"', {"d": [[["[{"]]]}]}] * 3},
    {"value": "{\"json\": [\"in a secret\"]}" * 40, "tags": {"k": "]}" * 40}},
    [[["\\"], "\\\"", [{"x": "\\\\\""}]]] * 30,
])
def test_nesting_matches_the_parser(value: object) -> None:
    text = json.dumps(value).encode()
    assert nesting(text) == _depth(json.loads(text))


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32"])
def test_nesting_of_utf16_and_utf32_text(encoding: str) -> None:
    """json.loads accepts these encodings; an escaped quote in them must not hide brackets."""
    text = ('["\\"", ' + "[" * 500 + "]" * 500 + "]").encode(encoding)
    assert nesting(text) == 501


def test_too_deep_bound() -> None:
    assert not too_deep(nested(MAX_DEPTH))
    assert too_deep(nested(MAX_DEPTH + 1))
    # Many brackets side by side are wide, not deep.
    assert not too_deep(b"[" + b"[]," * 1000 + b"[]]")
    # Brackets inside a string do not nest.
    assert not too_deep(json.dumps({"value": "[" * 5000}).encode())


def test_unterminated_string_text_is_scanned_in_one_pass() -> None:
    """Many escaped quotes after an unterminated string: linear work, same answer."""
    text = b"[" * 70 + b'"' + b'\\"' * 100_000 + b"\\"
    assert nesting(text) == 70


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 100_000])
def test_parse_json_object_refuses_deep_bodies(depth: int) -> None:
    body = b'{"value": ' + nested(depth) + b"}"
    with pytest.raises(BadParameter) as caught:
        parse_json_object(body)
    assert caught.value.message == TOO_DEEP


def test_parse_json_object_accepts_its_limit() -> None:
    body = b'{"value": ' + nested(MAX_DEPTH - 1) + b"}"
    assert parse_json_object(body)["value"] is not None


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
def test_typed_models_refuse_deep_bodies_in_the_same_words(depth: int) -> None:
    from openkeyvault.api.models.wire import Model, decode

    class Body(Model):
        value: object = None

    with pytest.raises(BadParameter) as caught:
        decode(b'{"value": ' + nested(depth) + b"}", Body)
    assert caught.value.message == TOO_DEEP
