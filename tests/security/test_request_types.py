"""Every field of every Secrets and Keys request body, sent with each JSON type it must not
have, an unknown enum value or a number out of range, over raw HTTPS to the real server.

Each must be refused with 400 BadParameter in Key Vault's error shape, never a 500, and
must leave nothing stored: a refused create leaves the name free, a refused update or
policy leaves the object exactly as it was. Unknown fields are ignored, as Azure does.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from tests.security.conftest import Rest, b64url

# One sample of each JSON type.
SAMPLES: dict[str, Any] = {
    "string": "x", "integer": 7, "float": 1.5, "boolean": True, "null": None,
    "object": {"a": "b"}, "array": ["x"],
}
STR = frozenset({"string"})
STR_NULL = frozenset({"string", "null"})
BOOL_NULL = frozenset({"boolean", "null"})
INT_NULL = frozenset({"integer", "null"})
TIME = frozenset({"integer", "float", "null"})  # unix seconds; null clears (PATCH)
OBJ = frozenset({"object"})
OBJ_NULL = frozenset({"object", "null"})
ARRAY_NULL = frozenset({"array", "null"})
INT = frozenset({"integer"})

ATTRIBUTE_FIELDS = {"attributes": OBJ_NULL, "attributes.enabled": BOOL_NULL,
                    "attributes.nbf": TIME, "attributes.exp": TIME}
TAG_FIELDS = {"tags": OBJ_NULL, "tags.t": STR}
RELEASE_POLICY_FIELDS = {"release_policy.contentType": STR_NULL,
                         "release_policy.immutable": BOOL_NULL,
                         "release_policy.data": STR_NULL}
OUT_OF_RANGE_TIMES = [-1, -0.5, 253402300800, 10**30, 1e300]


def unique(prefix: str = "rt") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def b64(data: bytes) -> str:
    return b64url(data)


def put_path(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with the member at dotted `path` (list indexes as numbers) set."""
    out = copy.deepcopy(body)
    parts = path.split(".")
    node: Any = out
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def wrong_types(fields: dict[str, frozenset[str]]) -> list[tuple[str, str]]:
    """(path, JSON type) for every type a field must not have."""
    return [(path, kind) for path, allowed in fields.items() for kind in SAMPLES
            if kind not in allowed]


def named(path: str) -> str:
    """The word a refusal must name: the field (a tag's value names `tags`, an array
    item names its array)."""
    parts = [p for p in path.split(".") if not p.isdigit()]
    return "tags" if parts[0] == "tags" and len(parts) > 1 else parts[-1]


def refused(r: requests.Response, field: str | None = None) -> dict[str, Any]:
    """400 BadParameter in Key Vault's error shape (naming `field` when given)."""
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["error"], body
    err = body["error"]
    assert set(err) <= {"code", "message", "innererror"}
    assert err["code"] == "BadParameter", err
    assert isinstance(err["message"], str) and err["message"]
    if field is not None:
        assert field in err["message"], err
    return err


@dataclass
class Api:
    rest: Rest

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        data = None if body is None else json.dumps(body).encode()
        return self.rest.call(method, path, data=data,
                              headers={"Content-Type": "application/json"}, timeout=30)

    def ok(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        r = self.call(method, path, body)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def absent(self, path: str) -> None:
        r = self.call("GET", path)
        assert r.status_code == 404, r.text


@pytest.fixture(scope="module")
def api(rest: Rest) -> Api:
    return Api(rest)


# ---- secrets ---------------------------------------------------------------------------------
SECRET_SET = {"value": "v", "contentType": "text/plain", "tags": {"t": "v"},
              "attributes": {"enabled": True, "nbf": 1, "exp": 4102444800}}
SECRET_SET_FIELDS = {"value": STR, "contentType": STR_NULL, **TAG_FIELDS, **ATTRIBUTE_FIELDS}
SECRET_UPDATE_FIELDS = {"contentType": STR_NULL, **TAG_FIELDS, **ATTRIBUTE_FIELDS}


@pytest.fixture(scope="module")
def secret(api: Api) -> Iterator[str]:
    name = unique("sec")
    api.ok("PUT", f"/secrets/{name}", SECRET_SET)
    before = api.ok("GET", f"/secrets/{name}")
    yield name
    assert api.ok("GET", f"/secrets/{name}") == before


@pytest.mark.parametrize(("path", "kind"), wrong_types(SECRET_SET_FIELDS))
def test_secret_set_wrong_type(api: Api, path: str, kind: str) -> None:
    name = unique()
    refused(api.call("PUT", f"/secrets/{name}", put_path(SECRET_SET, path, SAMPLES[kind])),
            named(path))
    api.absent(f"/secrets/{name}")


@pytest.mark.parametrize(("path", "kind"), wrong_types(SECRET_UPDATE_FIELDS))
def test_secret_update_wrong_type(api: Api, secret: str, path: str, kind: str) -> None:
    body = {k: v for k, v in SECRET_SET.items() if k != "value"}
    refused(api.call("PATCH", f"/secrets/{secret}", put_path(body, path, SAMPLES[kind])),
            named(path))


@pytest.mark.parametrize("field", ["nbf", "exp"])
@pytest.mark.parametrize("value", OUT_OF_RANGE_TIMES)
def test_secret_times_out_of_range(api: Api, secret: str, field: str, value: float) -> None:
    name = unique()
    refused(api.call("PUT", f"/secrets/{name}", {"value": "v", "attributes": {field: value}}),
            field)
    api.absent(f"/secrets/{name}")
    refused(api.call("PATCH", f"/secrets/{secret}", {"attributes": {field: value}}), field)


def test_secret_required_value_and_body_shape(api: Api, secret: str) -> None:
    for body in ({}, {"contentType": "text/plain"}, [], "x", 5, None):
        name = unique()
        refused(api.call("PUT", f"/secrets/{name}", body))
        api.absent(f"/secrets/{name}")
    for body in ([], "x", 5, None):
        refused(api.call("PATCH", f"/secrets/{secret}", body))


def test_secret_unknown_fields_are_ignored(api: Api) -> None:
    name = unique()
    body = {**SECRET_SET, "id": {"nested": [1, 2]}, "kid": 5, "managed": "yes",
            "attributes": {**SECRET_SET["attributes"], "created": "x", "recoveryLevel": 1,
                           "future": {"a": [None]}}}
    got = api.ok("PUT", f"/secrets/{name}", body)
    assert got["value"] == "v" and got["tags"] == {"t": "v"}
    assert got["contentType"] == "text/plain" and got["attributes"]["exp"] == 4102444800
    patched = api.ok("PATCH", f"/secrets/{name}", {"unknown": [1], "tags": {"u": "1"}})
    assert patched["tags"] == {"u": "1"}


def test_secret_patch_tells_absent_from_null(api: Api) -> None:
    name = unique()
    api.ok("PUT", f"/secrets/{name}", SECRET_SET)
    got = api.ok("PATCH", f"/secrets/{name}", {"attributes": {"enabled": False}})
    assert got["contentType"] == "text/plain" and got["tags"] == {"t": "v"}
    assert got["attributes"]["exp"] == 4102444800 and got["attributes"]["nbf"] == 1
    got = api.ok("PATCH", f"/secrets/{name}",
                 {"contentType": None, "tags": None, "attributes": {"exp": None,
                                                                     "enabled": None}})
    assert "contentType" not in got and "tags" not in got
    assert "exp" not in got["attributes"] and got["attributes"]["nbf"] == 1
    assert got["attributes"]["enabled"] is False  # enabled: null changes nothing


def test_secret_restore_wrong_types(api: Api) -> None:
    name = unique()
    api.ok("PUT", f"/secrets/{name}", {"value": "v"})
    blob = api.ok("POST", f"/secrets/{name}/backup")["value"]
    api.ok("DELETE", f"/secrets/{name}")
    assert api.call("DELETE", f"/deletedsecrets/{name}").status_code == 204
    for kind in SAMPLES:
        if kind != "string":
            refused(api.call("POST", "/secrets/restore", {"value": SAMPLES[kind]}), "value")
    refused(api.call("POST", "/secrets/restore", {}), "value")
    refused(api.call("POST", "/secrets/restore", {"value": blob + "*"}))
    api.absent(f"/secrets/{name}")
    assert api.ok("POST", "/secrets/restore", {"value": blob, "extra": [1]})["id"].split(
        "/")[4] == name


# ---- keys: create, import, update ----------------------------------------------------------
KEY_CREATE_EC = {"kty": "EC", "crv": "P-256", "key_ops": ["sign", "verify"],
                 "attributes": {"enabled": True, "nbf": 1, "exp": 4102444800,
                                "exportable": False},
                 "tags": {"t": "v"}}
KEY_CREATE_RSA = {"kty": "RSA", "key_size": 2048, "public_exponent": 65537}
KEY_CREATE_EC_FIELDS = {
    "kty": STR, "crv": STR_NULL, "key_ops": ARRAY_NULL, "key_ops.0": STR,
    **ATTRIBUTE_FIELDS, "attributes.exportable": BOOL_NULL, **TAG_FIELDS,
    "release_policy": OBJ_NULL,
}
KEY_CREATE_RSA_FIELDS = {"key_size": INT_NULL, "public_exponent": INT_NULL}
KEY_CREATE_CASES = ([(KEY_CREATE_EC, p, k) for p, k in wrong_types(KEY_CREATE_EC_FIELDS)]
                    + [(KEY_CREATE_RSA, p, k) for p, k in wrong_types(KEY_CREATE_RSA_FIELDS)]
                    + [({**KEY_CREATE_EC, "release_policy": {"data": b64(b"{}")}}, p, k)
                       for p, k in wrong_types(RELEASE_POLICY_FIELDS)])


@pytest.mark.parametrize(("base", "path", "kind"), KEY_CREATE_CASES,
                         ids=[f"{p}-{k}" for _, p, k in KEY_CREATE_CASES])
def test_key_create_wrong_type(api: Api, base: dict[str, Any], path: str, kind: str) -> None:
    name = unique()
    refused(api.call("POST", f"/keys/{name}/create", put_path(base, path, SAMPLES[kind])),
            named(path))
    api.absent(f"/keys/{name}")


@pytest.mark.parametrize(("path", "value"), [
    ("kty", "FOO"), ("kty", "rsa"), ("kty", ""), ("crv", "P-192"), ("crv", "p-256"),
    ("key_ops.0", "frobnicate"), ("key_ops.0", "Sign"), ("key_ops.0", "encrypt"),
])
def test_key_create_unknown_enum_values(api: Api, path: str, value: Any) -> None:
    name = unique()
    refused(api.call("POST", f"/keys/{name}/create", put_path(KEY_CREATE_EC, path, value)))
    api.absent(f"/keys/{name}")


@pytest.mark.parametrize(("path", "value"), [
    ("key_size", -1), ("key_size", 2**31), ("key_size", 2**64), ("key_size", 0),
    ("public_exponent", -3), ("public_exponent", 2**31), ("public_exponent", 2**70),
    ("key_size", 2048.0),
])
def test_key_create_numbers_out_of_range(api: Api, path: str, value: Any) -> None:
    name = unique()
    refused(api.call("POST", f"/keys/{name}/create", put_path(KEY_CREATE_RSA, path, value)))
    api.absent(f"/keys/{name}")


@pytest.mark.parametrize("field", ["nbf", "exp"])
@pytest.mark.parametrize("value", OUT_OF_RANGE_TIMES)
def test_key_times_out_of_range(api: Api, ec_key: str, field: str, value: float) -> None:
    name = unique()
    refused(api.call("POST", f"/keys/{name}/create",
                     {"kty": "EC", "attributes": {field: value}}), field)
    api.absent(f"/keys/{name}")
    refused(api.call("PATCH", f"/keys/{ec_key}", {"attributes": {field: value}}), field)


def _ec_jwk() -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    n = key.private_numbers()
    return {"kty": "EC", "crv": "P-256", "key_ops": ["sign", "verify"],
            "x": b64(n.public_numbers.x.to_bytes(32, "big")),
            "y": b64(n.public_numbers.y.to_bytes(32, "big")),
            "d": b64(n.private_value.to_bytes(32, "big"))}


KEY_IMPORT = {"key": _ec_jwk(), "Hsm": False,
              "attributes": {"enabled": True, "nbf": 1, "exp": 4102444800},
              "tags": {"t": "v"}}
KEY_IMPORT_FIELDS = {
    "key": OBJ, "key.kty": STR_NULL, "key.crv": STR_NULL, "key.x": STR_NULL,
    "key.y": STR_NULL, "key.d": STR_NULL, "key.key_ops": ARRAY_NULL, "key.key_ops.0": STR,
    "key.kid": STR_NULL, "key.n": STR_NULL, "key.e": STR_NULL, "key.key_hsm": STR_NULL,
    "Hsm": BOOL_NULL, **ATTRIBUTE_FIELDS, "attributes.exportable": BOOL_NULL, **TAG_FIELDS,
    "release_policy": OBJ_NULL,
}


@pytest.mark.parametrize(("path", "kind"), wrong_types(KEY_IMPORT_FIELDS))
def test_key_import_wrong_type(api: Api, path: str, kind: str) -> None:
    name = unique()
    r = api.call("PUT", f"/keys/{name}", put_path(KEY_IMPORT, path, SAMPLES[kind]))
    err = refused(r, named(path))
    assert KEY_IMPORT["key"]["d"] not in err["message"]
    api.absent(f"/keys/{name}")


@pytest.mark.parametrize(("path", "value"), [
    ("key.kty", "FOO"), ("key.kty", "oct"), ("key.crv", "P-192"),
    ("key.key_ops.0", "frobnicate"), ("key.key_ops.0", "encrypt"),
])
def test_key_import_unknown_enum_values(api: Api, path: str, value: Any) -> None:
    name = unique()
    refused(api.call("PUT", f"/keys/{name}", put_path(KEY_IMPORT, path, value)))
    api.absent(f"/keys/{name}")


def test_key_import_and_create_ignore_unknown_fields(api: Api) -> None:
    name = unique()
    body = {**KEY_IMPORT, "key": {**KEY_IMPORT["key"], "x5c": [["deep"]], "alg": 5},
            "extra": {"a": [1, {"b": None}]}}
    got = api.ok("PUT", f"/keys/{name}", body)
    assert got["key"]["kty"] == "EC" and got["tags"] == {"t": "v"}
    name = unique()
    got = api.ok("POST", f"/keys/{name}/create", {**KEY_CREATE_EC, "curve": 5, "size": "x"})
    assert got["key"]["crv"] == "P-256"


@pytest.fixture(scope="module")
def ec_key(api: Api) -> Iterator[str]:
    name = unique("eck")
    api.ok("POST", f"/keys/{name}/create", KEY_CREATE_EC)
    before = api.ok("GET", f"/keys/{name}")
    yield name
    assert api.ok("GET", f"/keys/{name}") == before


KEY_UPDATE = {"key_ops": ["sign"], "attributes": {"enabled": True, "nbf": 1, "exp": 4102444800},
              "tags": {"t": "v"}}
KEY_UPDATE_FIELDS = {"key_ops": ARRAY_NULL, "key_ops.0": STR, **ATTRIBUTE_FIELDS,
                     "attributes.exportable": BOOL_NULL, **TAG_FIELDS,
                     "release_policy": OBJ_NULL}
KEY_UPDATE_CASES = ([(KEY_UPDATE, p, k) for p, k in wrong_types(KEY_UPDATE_FIELDS)]
                    + [({"release_policy": {"data": b64(b"{}")}}, p, k)
                       for p, k in wrong_types(RELEASE_POLICY_FIELDS)])


@pytest.mark.parametrize(("base", "path", "kind"), KEY_UPDATE_CASES,
                         ids=[f"{p}-{k}" for _, p, k in KEY_UPDATE_CASES])
def test_key_update_wrong_type(api: Api, ec_key: str, base: dict[str, Any], path: str,
                               kind: str) -> None:
    refused(api.call("PATCH", f"/keys/{ec_key}", put_path(base, path, SAMPLES[kind])),
            named(path))


@pytest.mark.parametrize("value", ["frobnicate", "encrypt", "SIGN", ""])
def test_key_update_unknown_key_ops(api: Api, ec_key: str, value: str) -> None:
    refused(api.call("PATCH", f"/keys/{ec_key}", {"key_ops": [value]}))


def test_key_patch_tells_absent_from_null(api: Api) -> None:
    name = unique()
    api.ok("POST", f"/keys/{name}/create", KEY_CREATE_EC)
    got = api.ok("PATCH", f"/keys/{name}", {"attributes": {"enabled": False}})
    assert got["tags"] == {"t": "v"} and got["key"]["key_ops"] == ["sign", "verify"]
    assert got["attributes"]["exp"] == 4102444800
    got = api.ok("PATCH", f"/keys/{name}",
                 {"tags": None, "key_ops": None, "attributes": {"nbf": None}})
    assert "tags" not in got and got["key"]["key_ops"] == ["sign", "verify"]
    assert "nbf" not in got["attributes"] and got["attributes"]["exp"] == 4102444800


# ---- keys: cryptographic operations, random bytes ----------------------------------------------
@pytest.fixture(scope="module")
def rsa_key(api: Api) -> Iterator[str]:
    name = unique("rsak")
    api.ok("POST", f"/keys/{name}/create", KEY_CREATE_RSA)
    before = api.ok("GET", f"/keys/{name}")
    yield name
    assert api.ok("GET", f"/keys/{name}") == before


DIGEST = b64(b"\x01" * 32)
OPERATIONS: dict[str, tuple[dict[str, Any], dict[str, frozenset[str]]]] = {
    "sign": ({"alg": "RS256", "value": DIGEST}, {"alg": STR, "value": STR}),
    "verify": ({"alg": "RS256", "digest": DIGEST, "value": b64(b"\x02" * 256)},
               {"alg": STR, "digest": STR, "value": STR}),
    **{op: ({"alg": "RSA-OAEP", "value": b64(b"\x03" * (256 if op.startswith(("de", "un"))
                                                         else 16))},
            {"alg": STR, "value": STR, "iv": STR_NULL, "aad": STR_NULL, "tag": STR_NULL})
       for op in ("encrypt", "decrypt", "wrapkey", "unwrapkey")},
}
OPERATION_CASES = [(op, path, kind) for op, (_, fields) in OPERATIONS.items()
                   for path, kind in wrong_types(fields)]


@pytest.mark.parametrize(("op", "path", "kind"), OPERATION_CASES)
def test_key_operation_wrong_type(api: Api, rsa_key: str, op: str, path: str,
                                  kind: str) -> None:
    base = OPERATIONS[op][0]
    refused(api.call("POST", f"/keys/{rsa_key}//{op}", put_path(base, path, SAMPLES[kind])),
            named(path))


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_key_operation_missing_fields_unknown_alg_and_bad_base64(api: Api, rsa_key: str,
                                                                 op: str) -> None:
    base = OPERATIONS[op][0]
    for field in OPERATIONS[op][1]:
        if field in base:
            refused(api.call("POST", f"/keys/{rsa_key}//{op}",
                             {k: v for k, v in base.items() if k != field}), field)
    for alg in ("XX256", "rs256", "", "ES256K-FOO"):
        refused(api.call("POST", f"/keys/{rsa_key}//{op}", {**base, "alg": alg}))
    for bad in ("***", "a", "AAAA=A", "AA AA"):
        refused(api.call("POST", f"/keys/{rsa_key}//{op}", {**base, "value": bad}), "value")


def test_key_operation_ignores_unknown_fields(api: Api, rsa_key: str) -> None:
    body = {**OPERATIONS["sign"][0], "kid": {"x": 1}, "more": [[[]]]}
    assert set(api.ok("POST", f"/keys/{rsa_key}//sign", body)) == {"kid", "value"}


@pytest.mark.parametrize("count", [*(v for k, v in SAMPLES.items() if k != "integer"),
                                   0, -1, 129, 2**63, 2**80, 16.0])
def test_random_bytes_wrong_type_or_range(api: Api, count: Any) -> None:
    refused(api.call("POST", "/rng", {"count": count}), "count")


def test_random_bytes_required_count(api: Api) -> None:
    refused(api.call("POST", "/rng", {}), "count")
    assert len(api.ok("POST", "/rng", {"count": 8, "other": "x"})["value"]) == 11


# ---- keys: rotation policy, restore ---------------------------------------------------------
POLICY = {"lifetimeActions": [{"trigger": {"timeAfterCreate": "P90D"},
                               "action": {"type": "Rotate"}}],
          "attributes": {"expiryTime": "P1Y"}}
POLICY_FIELDS = {
    "lifetimeActions": ARRAY_NULL, "lifetimeActions.0": OBJ,
    "lifetimeActions.0.trigger": OBJ_NULL, "lifetimeActions.0.trigger.timeAfterCreate": STR_NULL,
    "lifetimeActions.0.action": OBJ_NULL, "lifetimeActions.0.action.type": STR_NULL,
    "attributes": OBJ_NULL, "attributes.expiryTime": STR_NULL,
}


@pytest.fixture(scope="module")
def policy_key(api: Api) -> Iterator[str]:
    name = unique("pol")
    api.ok("POST", f"/keys/{name}/create", {"kty": "EC"})
    api.ok("PUT", f"/keys/{name}/rotationpolicy", POLICY)
    before = api.ok("GET", f"/keys/{name}/rotationpolicy")
    yield name
    assert api.ok("GET", f"/keys/{name}/rotationpolicy") == before


@pytest.mark.parametrize(("path", "kind"), wrong_types(POLICY_FIELDS))
def test_rotation_policy_wrong_type(api: Api, policy_key: str, path: str, kind: str) -> None:
    refused(api.call("PUT", f"/keys/{policy_key}/rotationpolicy",
                     put_path(POLICY, path, SAMPLES[kind])), named(path))


@pytest.mark.parametrize(("path", "value"), [
    ("lifetimeActions.0.action.type", "Frobnicate"), ("lifetimeActions.0.action.type", ""),
    ("lifetimeActions.0.trigger.timeAfterCreate", "90 days"),
    ("attributes.expiryTime", "forever"),
])
def test_rotation_policy_unknown_values(api: Api, policy_key: str, path: str,
                                        value: Any) -> None:
    refused(api.call("PUT", f"/keys/{policy_key}/rotationpolicy",
                     put_path(POLICY, path, value)))


def test_key_restore_wrong_types(api: Api) -> None:
    name = unique()
    api.ok("POST", f"/keys/{name}/create", {"kty": "EC"})
    blob = api.ok("POST", f"/keys/{name}/backup")["value"]
    api.ok("DELETE", f"/keys/{name}")
    assert api.call("DELETE", f"/deletedkeys/{name}").status_code == 204
    for kind in SAMPLES:
        if kind != "string":
            refused(api.call("POST", "/keys/restore", {"value": SAMPLES[kind]}), "value")
    refused(api.call("POST", "/keys/restore", {}), "value")
    api.absent(f"/keys/{name}")
    assert api.ok("POST", "/keys/restore", {"value": blob, "x": {}})["key"]["kid"].split(
        "/")[4] == name


# ---- bodies that are not JSON objects at all ---------------------------------------------------
BODY_ROUTES: list[tuple[str, Callable[[str], str]]] = [
    ("PUT", lambda n: f"/secrets/{n}"), ("PATCH", lambda n: f"/secrets/{n}"),
    ("POST", lambda n: f"/keys/{n}/create"), ("PUT", lambda n: f"/keys/{n}"),
    ("PATCH", lambda n: f"/keys/{n}"), ("PUT", lambda n: f"/keys/{n}/rotationpolicy"),
    ("POST", lambda n: f"/keys/{n}//sign"), ("POST", lambda n: "/rng"),
    ("POST", lambda n: "/secrets/restore"), ("POST", lambda n: "/keys/restore"),
]
RAW_BODIES = [b"", b"  ", b"[]", b'"x"', b"5", b"null", b"{", b'{"value": "\\ud800"}',
              b'{"value": "\xff"}', b'{"value": "v", "deep": ' + b"[" * 100 + b"]" * 100 + b"}",
              b'{"value": "v", "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}"]


@pytest.mark.parametrize("raw", RAW_BODIES, ids=[repr(r[:20]) for r in RAW_BODIES])
def test_bodies_that_are_not_objects(api: Api, secret: str, ec_key: str, raw: bytes) -> None:
    """Not JSON, not an object, a lone surrogate, bytes that are not UTF-8, and nesting
    deeper than any Key Vault body (an unknown member holding it changes nothing)."""
    for method, path in BODY_ROUTES:
        name = unique()
        for target in (name, secret, ec_key):
            refused(api.rest.call(method, path(target), data=raw,
                                  headers={"Content-Type": "application/json"}, timeout=30))
        api.absent(f"/secrets/{name}")
        api.absent(f"/keys/{name}")
