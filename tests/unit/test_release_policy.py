"""Key release policies: the wire object validated and normalised as Azure stores it, the
grammar's refusals, evaluation against an attestation token's claims, and the AKV.SKR
errors of exportable keys."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from openkeyvault.crypto.encoding import b64url_decode, b64url_encode
from openkeyvault.vault import release_policy as rp
from openkeyvault.vault.errors import BadParameter

AUTHORITY = "https://sharedeus2.eus2.attest.azure.net/"


def _wire(policy: Any, **extra: Any) -> dict[str, Any]:
    text = policy if isinstance(policy, str) else json.dumps(policy)
    return {"data": b64url_encode(text.encode()), **extra}


def _policy(*conditions: dict[str, Any], combinator: str = "allOf",
            authority: str = AUTHORITY) -> dict[str, Any]:
    return {"version": "1.0.0",
            "anyOf": [{"authority": authority, combinator: list(conditions)}]}


def _refusal(wire: Any) -> str:
    with pytest.raises(BadParameter) as caught:
        rp.parse(wire)
    assert caught.value.message.startswith("Key Release Policy: ")
    return caught.value.message


# ---- the wire object -------------------------------------------------------------------
# A Premium vault's create answer: the request's policy (version "1.0", members in another
# order) came back normalised, with Azure's content type (SDK test recording, 2022-01).
RECORDED_REQUEST = ("eyJhbnlPZiI6W3siYWxsT2YiOlt7ImNsYWltIjoic2RrLXRlc3QiLCJlcXVhbHMiOiJ0cnVl"
                    "In1dLCJhdXRob3JpdHkiOiJodHRwczovL3Nrcl9hdHRlc3RhdGlvbi5henVyZS5uZXQvIn1d"
                    "LCJ2ZXJzaW9uIjoiMS4wIn0")
RECORDED_ANSWER = ("eyJ2ZXJzaW9uIjoiMS4wLjAiLCJhbnlPZiI6W3siYXV0aG9yaXR5IjoiaHR0cHM6Ly9za3Jf"
                   "YXR0ZXN0YXRpb24uYXp1cmUubmV0LyIsImFsbE9mIjpbeyJjbGFpbSI6InNkay10ZXN0Iiwi"
                   "ZXF1YWxzIjoidHJ1ZSJ9XX1dfQ")


def test_a_recorded_policy_comes_back_as_azure_stored_it() -> None:
    policy = rp.parse({"data": RECORDED_REQUEST, "immutable": True})
    assert policy.to_wire() == {"contentType": "application/json; charset=utf-8",
                                "data": RECORDED_ANSWER, "immutable": True}
    assert json.loads(b64url_decode(RECORDED_REQUEST))["version"] == "1.0"
    assert policy.version == "1.0.0"
    assert rp.parse(policy.to_wire()) == policy  # what is stored parses to the same


@pytest.mark.parametrize(("given", "stored"), [(None, "1.0.0"), ("1.0", "1.0.0"),
                                                ("1.0.0", "1.0.0")])
def test_the_version_is_normalised(given: str | None, stored: str) -> None:
    doc = _policy({"claim": "a", "equals": 1})
    if given is None:
        del doc["version"]
    else:
        doc["version"] = given
    policy = rp.parse(_wire(doc))
    assert policy.version == stored
    assert json.loads(policy.data)["version"] == stored
    assert json.loads(b64url_decode(policy.to_wire()["data"]))["version"] == stored


@pytest.mark.parametrize("version", ["2.0", "1", "", 1.0, None])
def test_another_version_is_refused(version: Any) -> None:
    doc = _policy({"claim": "a", "equals": 1})
    doc["version"] = version
    assert "'version' must be \"1.0.0\"" in _refusal(_wire(doc))


@pytest.mark.parametrize("content_type", [None, "application/json",
                                          "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8",
                                          'application/json; charset="utf-8"'])
def test_accepted_content_types_are_stored_as_azure_echoes_them(content_type: Any) -> None:
    wire = _wire(_policy({"claim": "a", "equals": 1}), contentType=content_type)
    assert rp.parse(wire).to_wire()["contentType"] == "application/json; charset=utf-8"


@pytest.mark.parametrize("content_type", ["text/plain", "application/json; charset=latin-1",
                                          "application/json; version=1.0", 5, ""])
def test_other_content_types_are_refused(content_type: Any) -> None:
    wire = _wire(_policy({"claim": "a", "equals": 1}), contentType=content_type)
    assert "is not supported; use 'application/json; charset=utf-8'" in _refusal(wire)


def test_immutable() -> None:
    doc = _policy({"claim": "a", "equals": 1})
    assert rp.parse(_wire(doc)).immutable is False
    assert rp.parse(_wire(doc)).to_wire()["immutable"] is False
    assert rp.parse(_wire(doc, immutable=None)).immutable is False
    assert rp.parse(_wire(doc, immutable=True)).immutable is True
    assert "'immutable' must be true or false" in _refusal(_wire(doc, immutable="yes"))


def test_data_in_standard_base64_with_padding_is_accepted() -> None:
    doc = _policy({"claim": "a", "equals": "ÿ>>?"})  # base64 of it has + and /
    text = json.dumps(doc, ensure_ascii=False).encode()
    standard = base64.b64encode(text).decode()
    assert "+" in standard or "/" in standard
    policy = rp.parse({"data": standard})
    assert policy == rp.parse(_wire(doc))
    assert "=" not in policy.to_wire()["data"]
    assert json.loads(b64url_decode(policy.to_wire()["data"])) == doc


@pytest.mark.parametrize(("wire", "says"), [
    ("a string", "must be an object with 'data'"),
    ({}, "missing 'data'"),
    ({"data": 5}, "'data' must be a base64url string"),
    ({"data": "not base64!"}, "'data' is not base64url-encoded"),
    ({"data": b64url_encode(b"{not json")}, "'data' does not hold a JSON document"),
    ({"data": b64url_encode(b"\xff\xfe")}, "'data' does not hold a JSON document"),
    ({"data": b64url_encode(b"[1, 2]")}, "the policy must be a JSON object"),
    ({"data": b64url_encode(b'{"anyOf": NaN}')}, "'data' does not hold a JSON document"),
    ({"data": "A" * 30_000}, "larger than 16384 bytes"),
    ({"data": b64url_encode(b" " * 16_385 + b"{}")}, "larger than 16384 bytes"),
])
def test_unusable_data_is_refused(wire: Any, says: str) -> None:
    assert says in _refusal(wire)


# ---- the grammar -----------------------------------------------------------------------
CLAIM = {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"}


@pytest.mark.parametrize(("doc", "says"), [
    ({"version": "1.0.0"}, "the policy must have 'anyOf' (or 'allOf') listing authorities"),
    ({"anyOf": []}, "anyOf: must be a non-empty array of authorities"),
    ({"anyOf": {"authority": AUTHORITY}}, "anyOf: must be a non-empty array of authorities"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [CLAIM]}],
      "allOf": [{"authority": AUTHORITY, "allOf": [CLAIM]}]},
     "'anyOf' and 'allOf' are not allowed together"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [CLAIM]}], "authorities": []},
     "unknown property 'authorities'"),
    ({"anyOf": ["https://x"]}, "anyOf[0]: an authority block must be an object"),
    ({"anyOf": [{"allOf": [CLAIM]}]}, "anyOf[0]: 'authority' must be the attestation "
                                      "authority's issuer URL"),
    ({"anyOf": [{"authority": "", "allOf": [CLAIM]}]}, "anyOf[0]: 'authority' must be"),
    ({"anyOf": [{"authority": 5, "allOf": [CLAIM]}]}, "anyOf[0]: 'authority' must be"),
    ({"anyOf": [{"authority": AUTHORITY}]},
     "anyOf[0]: an authority block must have exactly one of 'allOf' or 'anyOf'"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [CLAIM], "anyOf": [CLAIM]}]},
     "anyOf[0]: 'anyOf' and 'allOf' are not allowed together"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": []}]},
     "anyOf[0].allOf: must be a non-empty array of conditions"),
    ({"anyOf": [{"authority": AUTHORITY, "claim": "a", "equals": 1}]},
     "anyOf[0]: unknown property 'claim'"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [{"claim": "a", "notEquals": 1}]}]},
     "anyOf[0].allOf[0]: operator 'notEquals' is not supported; only 'equals' is."),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [CLAIM, {"claim": "a", "exists": True}]}]},
     "anyOf[0].allOf[1]: operator 'exists' is not supported; only 'equals' is."),
    ({"anyOf": [{"authority": AUTHORITY, "anyOf": [{"greaterOrEquals": 3}]}]},
     "anyOf[0].anyOf[0]: operator 'greaterOrEquals' is not supported"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [{"claim": "a", "equals": 1, "value": 1}]}]},
     "anyOf[0].allOf[0]: unknown property 'value'"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [{"claim": "a"}]}]},
     "anyOf[0].allOf[0]: the condition on claim 'a' has no 'equals'"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [{"claim": "a", "equals": [1, 2]}]}]},
     "the value of 'equals' must be a string, number or boolean (arrays, objects and null "
     "are not supported)"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [{"claim": "a", "equals": {"b": 1}}]}]},
     "the value of 'equals' must be a string, number or boolean"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [{"claim": "a", "equals": None}]}]},
     "the value of 'equals' must be a string, number or boolean"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [{"claim": "", "equals": 1}]}]},
     "'claim' must be a claim name, or a dot path to one"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [{"claim": "a..b", "equals": 1}]}]},
     "'claim' must be a claim name, or a dot path to one"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [{"claim": 7, "equals": 1}]}]},
     "'claim' must be a claim name"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [{"equals": 1}]}]},
     "anyOf[0].allOf[0]: a condition must be {\"claim\", \"equals\"}, {\"anyOf\"} or "
     "{\"allOf\"}"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": ["a == 1"]}]},
     "anyOf[0].allOf[0]: a condition must be an object"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [{"anyOf": []}]}]},
     "anyOf[0].allOf[0].anyOf: must be a non-empty array of conditions"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [{"anyOf": [CLAIM], "allOf": [CLAIM]}]}]},
     "anyOf[0].allOf[0]: 'anyOf' and 'allOf' are not allowed together"),
    ({"anyOf": [{"authority": AUTHORITY, "allOf": [{"anyOf": [CLAIM], "claimx": 1}]}]},
     "anyOf[0].allOf[0]: unknown property 'claimx'"),
])
def test_grammar_errors_are_refused_saying_where(doc: dict[str, Any], says: str) -> None:
    assert says in _refusal(_wire(doc))


def test_a_member_given_twice_in_any_case_is_refused() -> None:
    block = json.dumps([{"authority": AUTHORITY, "allOf": [{"claim": "a", "equals": 1}]}])
    text = f'{{"anyOf": {block}, "anyof": []}}'
    assert "property 'anyOf' appears twice" in _refusal(_wire(text))


def test_nesting_and_size_are_bounded() -> None:
    deep: dict[str, Any] = CLAIM
    for _ in range(rp.MAX_DEPTH):
        deep = {"anyOf": [deep]}
    assert rp.parse(_wire(_policy(deep)))  # 16 levels below the authority block
    assert f"nested more than {rp.MAX_DEPTH} deep" in _refusal(_wire(_policy({"allOf": [deep]})))
    many = [{"claim": f"c{i}", "equals": i} for i in range(rp.MAX_CONDITIONS + 1)]
    assert f"more than {rp.MAX_CONDITIONS} claim conditions" in _refusal(_wire(_policy(*many)))
    assert rp.parse(_wire(_policy(*many[:-1])))


def test_member_names_are_read_in_any_case_and_written_in_azures() -> None:
    doc = {"Version": "1.0", "ANYOF": [{"Authority": AUTHORITY, "allof": [
        {"Claim": "a", "EQUALS": 1}, {"AnyOf": [{"claim": "b", "equals": True}]}]}]}
    policy = rp.parse(_wire(doc))
    assert json.loads(policy.data) == {"version": "1.0.0", "anyOf": [{
        "authority": AUTHORITY, "allOf": [{"claim": "a", "equals": 1},
                                          {"anyOf": [{"claim": "b", "equals": True}]}]}]}


def test_the_parsed_structure() -> None:
    policy = rp.parse(_wire({"allOf": [{"authority": AUTHORITY, "anyOf": [
        {"claim": "a.b", "equals": 2.5}, {"allOf": [{"claim": "c", "equals": "d"}]}]}]}))
    assert policy.combinator == rp.ALL_OF
    (block,) = policy.authorities
    assert block.authority == AUTHORITY
    assert block.rule == rp.ConditionGroup(rp.ANY_OF, (
        rp.ClaimCondition("a.b", 2.5),
        rp.ConditionGroup(rp.ALL_OF, (rp.ClaimCondition("c", "d"),))))
    assert block.rule.conditions[0].path == ("a", "b")  # type: ignore[union-attr]


# ---- evaluation ------------------------------------------------------------------------
ISSUER = "https://sharedeus2.eus2.attest.azure.net"
CLAIMS = {
    "iss": ISSUER,
    "x-ms-attestation-type": "azurevm",
    "secureboot": True,
    "x-ms-azurevm-osversion-major": 18,
    "x-ms-isolation-tee": {"x-ms-attestation-type": "sevsnpvm",
                           "x-ms-compliance-status": "azure-compliant-cvm",
                           "x-ms-runtime": {"keys": [{"kid": "TpmEphemeralEncryptionKey"}]}},
    "x-ms-azurevm-attested-pcrs": [0, 1, 2],
}


def _evaluate(*conditions: dict[str, Any], combinator: str = "allOf",
              authority: str = AUTHORITY, issuer: str = ISSUER,
              claims: dict[str, Any] = CLAIMS) -> bool:
    policy = rp.parse(_wire(_policy(*conditions, combinator=combinator, authority=authority)))
    return rp.evaluate(policy, issuer, claims)


TEE_TYPE = {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"}
COMPLIANT = {"claim": "x-ms-isolation-tee.x-ms-compliance-status",
             "equals": "azure-compliant-cvm"}
WRONG = {"claim": "x-ms-attestation-type", "equals": "sgx"}


def test_the_confidential_vm_policy_holds() -> None:
    assert _evaluate(TEE_TYPE, COMPLIANT) is True
    assert _evaluate(TEE_TYPE, WRONG) is False
    assert _evaluate(TEE_TYPE, WRONG, combinator="anyOf") is True
    assert _evaluate(WRONG, combinator="anyOf") is False


def test_nested_anyof_and_allof() -> None:
    one_of = {"anyOf": [WRONG, {"allOf": [TEE_TYPE, COMPLIANT]}]}
    assert _evaluate(COMPLIANT, one_of) is True
    assert _evaluate(COMPLIANT, {"anyOf": [WRONG, {"allOf": [TEE_TYPE, WRONG]}]}) is False
    assert _evaluate(WRONG, {"allOf": [TEE_TYPE]}, combinator="anyOf") is True
    assert _evaluate({"allOf": [TEE_TYPE, {"anyOf": [WRONG, {"anyOf": [COMPLIANT]}]}]}) is True
    assert _evaluate({"allOf": [TEE_TYPE, {"anyOf": [WRONG, {"anyOf": [WRONG]}]}]}) is False


@pytest.mark.parametrize("claim", ["x-ms-missing", "x-ms-isolation-tee.missing",
                                   "secureboot.deeper", "x-ms-azurevm-attested-pcrs.0",
                                   "x-ms-isolation-tee.x-ms-runtime.keys.0.kid"])
def test_a_missing_claim_is_false(claim: str) -> None:
    assert _evaluate({"claim": claim, "equals": "anything"}) is False
    assert _evaluate(TEE_TYPE, {"claim": claim, "equals": 0}, combinator="anyOf") is True


def test_an_object_or_array_claim_equals_nothing() -> None:
    assert _evaluate({"claim": "x-ms-isolation-tee", "equals": "sevsnpvm"}) is False
    assert _evaluate({"claim": "x-ms-azurevm-attested-pcrs", "equals": 0}) is False


@pytest.mark.parametrize("issuer", [ISSUER, ISSUER + "/", "HTTPS://SharedEUS2.eus2.attest.azure.net",
                                    "https://sharedeus2.eus2.attest.azure.net:443/"])
def test_the_authority_matches_its_issuer_however_written(issuer: str) -> None:
    assert _evaluate(TEE_TYPE, issuer=issuer) is True


@pytest.mark.parametrize("issuer", ["https://other.eus2.attest.azure.net",
                                    "http://sharedeus2.eus2.attest.azure.net",
                                    "https://sharedeus2.eus2.attest.azure.net:8443",
                                    "https://sharedeus2.eus2.attest.azure.net/tenant"])
def test_another_issuer_is_not_the_authority(issuer: str) -> None:
    assert _evaluate(TEE_TYPE, issuer=issuer) is False


def test_a_bare_host_authority_is_its_https_url() -> None:
    assert _evaluate(TEE_TYPE, authority="sharedeus2.eus2.attest.azure.net") is True


def test_authority_blocks_any_of_and_all_of() -> None:
    other = "https://other.attest.azure.net"
    blocks = [{"authority": other, "allOf": [TEE_TYPE]},
              {"authority": AUTHORITY, "allOf": [TEE_TYPE]}]
    any_of = rp.parse(_wire({"anyOf": blocks}))
    assert rp.evaluate(any_of, ISSUER, CLAIMS) is True
    assert rp.evaluate(any_of, other, CLAIMS) is True
    assert rp.evaluate(any_of, "https://third.example", CLAIMS) is False
    # Every block must hold: with two authorities no one token can.
    assert rp.evaluate(rp.parse(_wire({"allOf": blocks})), ISSUER, CLAIMS) is False
    one = rp.parse(_wire({"allOf": blocks[1:]}))
    assert rp.evaluate(one, ISSUER, CLAIMS) is True
    assert rp.evaluate(one, ISSUER, {**CLAIMS, "x-ms-isolation-tee": {}}) is False


@pytest.mark.parametrize(("expected", "claim", "holds"), [
    ("sevsnpvm", "sevsnpvm", True),
    ("sevsnpvm", "SEVSNPVM", False),  # strings compare exactly
    ("true", True, True),  # as Azure released on: "equals": "true" for a true claim
    ("TRUE", True, True),
    ("false", False, True),
    ("false", True, False),
    (True, "true", True),
    (True, True, True),
    (True, False, False),
    (True, 1, False),
    (False, 0, False),
    ("1", True, False),
    (18, 18, True),
    (18, 18.0, True),
    ("18", 18, True),
    (18, "18", True),
    ("18.5", 18.5, True),
    ("eighteen", 18, False),
    (18, 19, False),
    ("", "", True),
])
def test_equals(expected: Any, claim: Any, holds: bool) -> None:
    assert _evaluate({"claim": "c", "equals": expected}, claims={"c": claim}) is holds


# ---- the AKV.SKR errors ----------------------------------------------------------------
@pytest.mark.parametrize(("code", "message"), [
    (rp.EXPORTABLE_NOT_SUPPORTED, "AKV.SKR.1001: The exportable attribute is only supported "
                                  "with premium vaults and API version >= '7.3-preview'."),
    (rp.EXPORTABLE_NEEDS_POLICY, "AKV.SKR.1004: Exportable keys must have release policy."),
    (rp.POLICY_NEEDS_EXPORTABLE, "AKV.SKR.1005: Non-exportable keys must not have release "
                                 "policy."),
    (rp.POLICY_IMMUTABLE, "AKV.SKR.1020: Immutable Key Release Policy cannot be modified."),
    (rp.POLICY_ON_VERSIONLESS_ONLY, "AKV.SKR.1016: Key Release Policy can only be set on "
                                    "versionless key."),
])
def test_skr_errors_carry_azures_words(code: str, message: str) -> None:
    error = rp.skr_error(code)
    assert isinstance(error, BadParameter)
    assert error.message == message
    assert str(error) == message


def test_every_skr_code_has_a_message() -> None:
    codes = [rp.EXPORTABLE_NOT_SUPPORTED, rp.EXPORTABLE_IMMUTABLE, rp.EXPORTABLE_NEEDS_POLICY,
             rp.POLICY_NEEDS_EXPORTABLE, rp.EXPORTABLE_NEEDS_HSM, rp.ATTESTATION_UNREACHABLE,
             rp.POLICY_ON_VERSIONLESS_ONLY, rp.POLICY_IMMUTABLE]
    assert sorted(codes) == sorted(rp.SKR_MESSAGES)
    assert rp.skr_error(rp.EXPORTABLE_IMMUTABLE).message.startswith("AKV.SKR.1003: ")
    assert rp.skr_error(rp.EXPORTABLE_NEEDS_HSM).message.startswith("AKV.SKR.1006: ")
    assert rp.skr_error(rp.ATTESTATION_UNREACHABLE, authority="https://a.example").message \
        == "AKV.SKR.1012: The specified attestation service https://a.example cannot be reached."
