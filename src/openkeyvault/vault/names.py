"""Input rules and limits for object names, tags and attributes."""

from __future__ import annotations

import re
from typing import Any

from openkeyvault.vault.errors import BadParameter

OBJECT_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")
VERSION = re.compile(r"[0-9a-fA-F]{32}")
VAULT_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]")

MAX_TAGS = 15
MAX_SECRET_TAG_CHARS = 512
MAX_SECRET_VALUE_BYTES = 25 * 1024
MAX_CONTENT_TYPE_CHARS = 255


def check_object_name(name: str) -> str:
    if not OBJECT_NAME.fullmatch(name):
        raise BadParameter(
            f"The request URI contains an invalid name: {name[:127]}. Object names must be "
            "1-127 characters long and contain only 0-9, a-z, A-Z and -."
        )
    return name


def check_vault_name(name: str) -> str:
    if not VAULT_NAME.fullmatch(name) or "--" in name:
        raise BadParameter(
            f"The vault name '{name[:40]}' is invalid. A vault's name must be between 3-24 "
            "alphanumeric characters. The name must begin with a letter, end with a letter or "
            "digit, and not contain consecutive hyphens."
        )
    return name.lower()


def check_tags(tags: Any, max_chars: int) -> dict[str, str] | None:
    if tags is None:
        return None
    if not isinstance(tags, dict):
        raise BadParameter("Tags must be an object of string names to string values.")
    if len(tags) > MAX_TAGS:
        raise BadParameter(f"Too many tags: at most {MAX_TAGS} are allowed, {len(tags)} given.")
    for k, v in tags.items():
        if not isinstance(v, str):
            raise BadParameter(f"The value of tag '{k[:64]}' must be a string.")
        if len(k) > max_chars or len(v) > max_chars:
            raise BadParameter(
                f"Tag names and values are limited to {max_chars} characters (tag '{k[:64]}')."
            )
        if not k:
            raise BadParameter("Tag names must not be empty.")
    return dict(tags)


def check_time(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadParameter(f"Attribute '{field}' must be a number of seconds since 1970-01-01.")
    if not 0 <= value < 253402300800:  # year 10000
        raise BadParameter(f"Attribute '{field}' is out of range.")
    return int(value)


def check_bool(value: Any, field: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise BadParameter(f"Attribute '{field}' must be true or false.")
    return value


def check_content_type(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_CONTENT_TYPE_CHARS:
        raise BadParameter(
            f"contentType must be a string of at most {MAX_CONTENT_TYPE_CHARS} characters."
        )
    return value
