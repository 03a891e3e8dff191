"""Maximal JSON instances of a Swagger 2.0 schema: every writable property present.

`variant` picks each enum's value (index modulo the enum's length), so a few variants
reach the branches that depend on an enum (an EC key and an RSA key, say). Values are
the plainest that fit the type and format; they need not be accepted by the service.
"""
from __future__ import annotations

from typing import Any

FORMATS = {"date-time": "2030-01-01T00:00:00Z", "base64url": "AQAB", "byte": "AQAB",
           "uri": "https://example.test/", "uuid": "00000000-0000-0000-0000-000000000001",
           "unixtime": 1900000000}

def maximal(schema: dict[str, Any], spec: dict[str, Any], variant: int = 0,
            depth: int = 0) -> Any:
    while "$ref" in schema:
        schema = spec["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    if depth > 8:
        return None
    if "allOf" in schema:
        out: dict[str, Any] = {}
        for part in schema["allOf"]:
            v = maximal(part, spec, variant, depth + 1)
            if isinstance(v, dict):
                out.update(v)
        v = maximal({k: x for k, x in schema.items() if k != "allOf"}, spec, variant, depth + 1)
        if isinstance(v, dict):
            out.update(v)
        return out
    if "enum" in schema:
        return schema["enum"][variant % len(schema["enum"])]
    t = schema.get("type", "object" if "properties" in schema else None)
    if t == "object":
        out = {k: maximal(v, spec, variant, depth + 1)
               for k, v in schema.get("properties", {}).items() if not v.get("readOnly")}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            out["extra"] = maximal(extra, spec, variant, depth + 1)
        return out
    if t == "array":
        return [maximal(schema.get("items", {}), spec, variant, depth + 1)]
    if t == "string":
        return FORMATS.get(schema.get("format", ""), "x")
    if t == "integer":
        if schema.get("format") == "unixtime":
            return FORMATS["unixtime"]
        return schema.get("minimum", 1)
    if t == "number":
        return 1.5
    if t == "boolean":
        return True
    return None
