"""Every field of a certificate policy, sent with every wrong JSON type, through every request
that takes a policy: always a 400 BadParameter naming the field, never a 500, nothing changed.

The field list below is written from the wire format (certificates.json in the REST spec),
not from the server's request model; one test checks that the two agree, so a field the
server learns to read is a field this test must learn to send.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import msgspec.inspect as mi
import pytest

from openkeyvault.api.models.certificates import CertificatePolicy
from tests.sdk.certs_support import self_signed, to_pem
from tests.security.conftest import Rest

OBJECT, ARRAY, STRING, INTEGER, BOOLEAN, STRINGS = (
    "object", "array", "string", "integer", "boolean", "array of strings")

Path = tuple[str | int, ...]

FIELDS: dict[Path, str] = {
    (): OBJECT,  # the policy itself
    ("key_props",): OBJECT,
    ("key_props", "kty"): STRING,
    ("key_props", "key_size"): INTEGER,
    ("key_props", "crv"): STRING,
    ("key_props", "exportable"): BOOLEAN,
    ("key_props", "reuse_key"): BOOLEAN,
    ("secret_props",): OBJECT,
    ("secret_props", "contentType"): STRING,
    ("x509_props",): OBJECT,
    ("x509_props", "subject"): STRING,
    ("x509_props", "sans"): OBJECT,
    ("x509_props", "sans", "emails"): STRINGS,
    ("x509_props", "sans", "dns_names"): STRINGS,
    ("x509_props", "sans", "upns"): STRINGS,
    ("x509_props", "sans", "ipAddresses"): STRINGS,
    ("x509_props", "sans", "uris"): STRINGS,
    ("x509_props", "ekus"): STRINGS,
    ("x509_props", "key_usage"): STRINGS,
    ("x509_props", "validity_months"): INTEGER,
    ("issuer",): OBJECT,
    ("issuer", "name"): STRING,
    ("issuer", "cty"): STRING,
    ("issuer", "cert_transparency"): BOOLEAN,
    ("lifetime_actions",): ARRAY,
    ("lifetime_actions", 0): OBJECT,
    ("lifetime_actions", 0, "trigger"): OBJECT,
    ("lifetime_actions", 0, "trigger", "lifetime_percentage"): INTEGER,
    ("lifetime_actions", 0, "trigger", "days_before_expiry"): INTEGER,
    ("lifetime_actions", 0, "action"): OBJECT,
    ("lifetime_actions", 0, "action", "action_type"): STRING,
    ("attributes",): OBJECT,
    ("attributes", "enabled"): BOOLEAN,
    ("platformManaged",): OBJECT,
    ("platformManaged", "certificateUsage"): STRING,
    ("platformManaged", "metadata"): OBJECT,
}

# For each expected type, values of every other JSON type (null means "not given", so it is
# wrong only where an array holds it).
WRONG: dict[str, list[Any]] = {
    OBJECT: ["x", 7, 1.5, True, False, [], [{}]],
    ARRAY: ["x", 7, True, {}, {"trigger": {}}],
    STRING: [7, 1.5, True, {}, {"x": "y"}, [], ["x"]],
    INTEGER: ["12", 1.5, True, {}, [], [12]],
    BOOLEAN: ["true", 1, 0, {}, [], [True]],
    STRINGS: ["x", 7, True, {}, [7], [None], [{}], [[]], [True], ["ok", 7]],
}

CASES = [(path, value) for path, kind in FIELDS.items()
         for value in WRONG[kind] + ([None] if path and isinstance(path[-1], int) else [])]


def case_id(path: Path, value: Any) -> str:
    where = ".".join(str(p) for p in path) or "policy"
    return f"{where}={type(value).__name__}:{str(value)[:12]}"


def valid_policy() -> dict[str, Any]:
    return {
        "key_props": {"exportable": True, "kty": "RSA", "key_size": 2048, "reuse_key": False},
        "secret_props": {"contentType": "application/x-pkcs12"},
        "x509_props": {"subject": "CN=types", "sans": {"dns_names": ["types.example"]},
                       "ekus": ["1.3.6.1.5.5.7.3.1"], "key_usage": ["digitalSignature"],
                       "validity_months": 12},
        "issuer": {"name": "Self"},
        "lifetime_actions": [{"trigger": {"lifetime_percentage": 80},
                              "action": {"action_type": "AutoRenew"}}],
        "attributes": {"enabled": True},
        "platformManaged": {"certificateUsage": "ServerAuthentication",
                            "metadata": {"k": "v"}},
    }


def with_value(path: Path, value: Any) -> Any:
    if not path:
        return value
    policy: Any = copy.deepcopy(valid_policy())
    node = policy
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return policy


@pytest.fixture(scope="module")
def existing(rest: Rest) -> str:
    """A certificate whose policy the update requests target."""
    name = f"types-{uuid.uuid4().hex[:8]}"
    r = rest.call("POST", f"/certificates/{name}/create", json={"policy": valid_policy()})
    assert r.status_code == 202, r.text
    assert rest.call("GET", f"/certificates/{name}").status_code == 200
    return name


@pytest.fixture(scope="module")
def pem() -> str:
    key, cert = self_signed("types-import")
    return to_pem(key, cert).decode()


def send(rest: Rest, how: str, policy: Any, existing: str, pem: str) -> Any:
    if how == "create":
        return rest.call("POST", "/certificates/types-create/create", json={"policy": policy})
    if how == "update policy":
        return rest.call("PATCH", f"/certificates/{existing}/policy", json=policy)
    if how == "update certificate":
        return rest.call("PATCH", f"/certificates/{existing}/", json={"policy": policy})
    assert how == "import"
    return rest.call("POST", "/certificates/types-import/import",
                     json={"value": pem, "policy": policy})


HOW = ["create", "update policy", "update certificate", "import"]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize(("path", "value"), CASES, ids=[case_id(*c) for c in CASES])
def test_a_wrong_type_is_a_400(rest: Rest, existing: str, pem: str, how: str, path: Path,
                               value: Any) -> None:
    r = send(rest, how, with_value(path, value), existing, pem)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "BadParameter"
    named = [p for p in path if isinstance(p, str)]
    if named:
        assert named[-1] in error["message"], error["message"]


@pytest.mark.parametrize("how", HOW)
def test_the_valid_policy_is_accepted(rest: Rest, existing: str, pem: str, how: str) -> None:
    """The control: the policy every case above starts from is itself accepted."""
    r = send(rest, how, valid_policy(), existing, pem)
    assert r.status_code in (200, 201, 202), r.text


def test_refusals_changed_nothing(rest: Rest, existing: str, pem: str) -> None:
    before = rest.call("GET", f"/certificates/{existing}/policy").json()
    for path, value in CASES[::7]:
        for how in ("update policy", "update certificate"):
            assert send(rest, how, with_value(path, value), existing, pem).status_code == 400
    assert rest.call("GET", f"/certificates/{existing}/policy").json() == before


def _server_fields(t: Any, path: Path = ()) -> dict[Path, str]:
    """The fields the server's request model declares, in this file's terms."""
    if isinstance(t, mi.UnionType):  # T | None: the one JSON type it takes besides null
        t = next(x for x in t.types if not isinstance(x, mi.NoneType))
    if isinstance(t, mi.StructType):
        out = {path: OBJECT}
        for f in t.fields:
            out.update(_server_fields(f.type, (*path, f.encode_name)))
        return out
    if isinstance(t, mi.ListType):
        if isinstance(t.item_type, mi.StrType):
            return {path: STRINGS}
        return {path: ARRAY, **_server_fields(t.item_type, (*path, 0))}
    kinds = {mi.StrType: STRING, mi.IntType: INTEGER, mi.BoolType: BOOLEAN,
             mi.DictType: OBJECT}  # a free-form object (platformManaged.metadata)
    return {path: kinds[type(t)]}


def test_this_list_covers_every_field_the_server_reads() -> None:
    """The policy's attributes also carry nbf and exp (CertificateAttributes), which the
    policy does not keep: they are the attribute tests' concern."""
    fields = _server_fields(mi.type_info(CertificatePolicy))
    assert {p: k for p, k in fields.items()
            if p not in (("attributes", "nbf"), ("attributes", "exp"))} == FIELDS
