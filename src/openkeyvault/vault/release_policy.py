"""Key release policies (secure key release): the rules an exportable key carries, checked
against the claims of a target's attestation token before the key is released to it.

On the wire a policy is `{"contentType": "application/json; charset=utf-8", "data":
BASE64URL(policy JSON), "immutable": bool}`. The policy JSON, as Azure's grammar has it:

    {"version": "1.0.0",
     "anyOf": [                                 # or "allOf": every block must hold
       {"authority": "https://NAME.REGION.attest.azure.net",
        "allOf": [                              # or "anyOf"; exactly one of the two
          {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
          {"anyOf": [{"claim": "...", "equals": true}, ...]}]}]}

- `version` "1.0" is read as "1.0.0" (Azure stores it so); none means "1.0.0".
- Property names are read whatever their case and written back as above.
- `claim` is a dot path into the token's claims; a claim that is missing (or an array or
  object on the way) makes its condition false. `equals` is the only operator; its value
  is a string, number or boolean. A string matches a boolean or number claim that reads
  the same (`"true"` matches `true`: Azure releases on that).
- An authority block applies to a token whose issuer is its `authority`, compared as
  `access.attestation_tokens.same_issuer` does (scheme and host case, default port and a
  trailing slash do not count).

`parse` validates the wire object (BadParameter with the reason); `to_wire` gives the
normalised form the service stores and returns. The `AKV.SKR.*` errors of exportable keys
are here too, for the key operations to raise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from openkeyvault.access.attestation_tokens import normalise_issuer
from openkeyvault.crypto.encoding import b64_either_decode, b64url_encode
from openkeyvault.vault.errors import BadParameter

CONTENT_TYPE = "application/json; charset=utf-8"
VERSION = "1.0.0"
_VERSIONS = {"1.0": VERSION, "1.0.0": VERSION}
ANY_OF = "anyOf"
ALL_OF = "allOf"
MAX_POLICY_BYTES = 16 * 1024  # the decoded policy JSON
MAX_DEPTH = 16  # anyOf / allOf nested inside an authority block's own
MAX_CONDITIONS = 256  # claim conditions in the whole policy
MAX_CLAIM_CHARS = 256
MAX_AUTHORITY_CHARS = 1000
_PREFIX = "Key Release Policy: "
# Operators of Azure's grammar (and of Azure Policy) that are not supported: named in the
# refusal rather than called unknown.
_OPERATORS = ("notequals", "less", "lessorequals", "greater", "greaterorequals", "exists",
              "in", "notin", "like", "notlike", "match", "matchinsensitively", "notmatch",
              "contains", "notcontains", "containskey", "notcontainskey")
_NAMES = {name.lower(): name for name in ("version", ANY_OF, ALL_OF, "authority", "claim",
                                          "equals")}
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")

Scalar = str | int | float | bool

# ---- the AKV.SKR errors of exportable keys (400 BadParameter; the message carries the code)
EXPORTABLE_NOT_SUPPORTED = "AKV.SKR.1001"
EXPORTABLE_IMMUTABLE = "AKV.SKR.1003"
EXPORTABLE_NEEDS_POLICY = "AKV.SKR.1004"
POLICY_NEEDS_EXPORTABLE = "AKV.SKR.1005"
EXPORTABLE_NEEDS_HSM = "AKV.SKR.1006"
ATTESTATION_UNREACHABLE = "AKV.SKR.1012"
POLICY_ON_VERSIONLESS_ONLY = "AKV.SKR.1016"
POLICY_IMMUTABLE = "AKV.SKR.1020"
SKR_MESSAGES: dict[str, str] = {
    # Seen in Azure's answers (SDK test recordings and mocks): exact.
    EXPORTABLE_NOT_SUPPORTED: "The exportable attribute is only supported with premium "
                              "vaults and API version >= '7.3-preview'.",
    EXPORTABLE_NEEDS_POLICY: "Exportable keys must have release policy.",
    POLICY_NEEDS_EXPORTABLE: "Non-exportable keys must not have release policy.",
    POLICY_IMMUTABLE: "Immutable Key Release Policy cannot be modified.",
    ATTESTATION_UNREACHABLE: "The specified attestation service {authority} cannot be "
                             "reached.",
    # Known only from third-party notes quoting them: the wording is the likeliest one.
    POLICY_ON_VERSIONLESS_ONLY: "Key Release Policy can only be set on versionless key.",
    EXPORTABLE_IMMUTABLE: "The exportable attribute of an existing key cannot be modified.",
    EXPORTABLE_NEEDS_HSM: "Exportable keys must be HSM-protected (RSA-HSM, EC-HSM or "
                          "oct-HSM).",
}
# Not seen from Azure at all (neither the wording nor whether it carries a code).
POLICY_NOT_SATISFIED = ("The target's attestation token does not satisfy the key release "
                        "policy.")


def skr_error(code: str, **fields: str) -> BadParameter:
    """The BadParameter Azure answers with for `code` (one of the constants above), e.g.
    `raise skr_error(EXPORTABLE_NEEDS_POLICY)`; ATTESTATION_UNREACHABLE takes `authority`."""
    return BadParameter(f"{code}: {SKR_MESSAGES[code].format(**fields)}")


# ---- the policy ----------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimCondition:
    """`{"claim": "a.b.c", "equals": value}`."""

    claim: str
    equals: Scalar

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.claim.split("."))


@dataclass(frozen=True)
class ConditionGroup:
    """`{"anyOf": [...]}` or `{"allOf": [...]}` of conditions (claims or groups)."""

    combinator: str  # ANY_OF or ALL_OF
    conditions: tuple[Condition, ...]


Condition = ClaimCondition | ConditionGroup


@dataclass(frozen=True)
class AuthorityRule:
    """One authority block: the issuer it trusts and the conditions on that issuer's
    claims."""

    authority: str  # as written in the policy
    rule: ConditionGroup
    issuer_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "issuer_key", normalise_issuer(self.authority))


@dataclass(frozen=True)
class ReleasePolicy:
    combinator: str  # ANY_OF or ALL_OF, over the authority blocks
    authorities: tuple[AuthorityRule, ...]
    immutable: bool = False
    version: str = VERSION
    content_type: str = CONTENT_TYPE

    def document(self) -> dict[str, Any]:
        """The normalised policy JSON (as a dict, members in Azure's order)."""
        return {"version": self.version, self.combinator: [
            {"authority": a.authority, a.rule.combinator: [_condition_json(c)
                                                           for c in a.rule.conditions]}
            for a in self.authorities]}

    @property
    def data(self) -> bytes:
        """The normalised policy JSON's bytes (what `data` carries, base64url-encoded)."""
        return json.dumps(self.document(), separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")

    def to_wire(self) -> dict[str, Any]:
        """`{"contentType", "data", "immutable"}` as the service stores and returns it."""
        return {"contentType": self.content_type, "data": b64url_encode(self.data),
                "immutable": self.immutable}


def _condition_json(condition: Condition) -> dict[str, Any]:
    if isinstance(condition, ClaimCondition):
        return {"claim": condition.claim, "equals": condition.equals}
    return {condition.combinator: [_condition_json(c) for c in condition.conditions]}


# ---- parsing -------------------------------------------------------------------------
def _bad(message: str, where: str = "") -> BadParameter:
    if len(where) > 120:
        where = "..." + where[-117:]
    return BadParameter(_PREFIX + (f"{where}: " if where else "") + message)


def parse(release_policy: Any) -> ReleasePolicy:
    """The policy of a wire `release_policy` object; BadParameter says what is wrong."""
    if not isinstance(release_policy, dict):
        raise _bad("the release policy must be an object with 'data' (and optionally "
                   "'contentType' and 'immutable').")
    content_type = _content_type(release_policy.get("contentType"))
    immutable = release_policy.get("immutable")
    if immutable is None:
        immutable = False
    elif not isinstance(immutable, bool):
        raise _bad("'immutable' must be true or false.")
    document = _document(release_policy.get("data"))
    version, combinator, blocks = _top(document)
    counter = iter(range(MAX_CONDITIONS))
    authorities = tuple(_authority(block, f"{combinator}[{i}]", counter)
                        for i, block in enumerate(blocks))
    return ReleasePolicy(combinator, authorities, immutable, version, content_type)


def _content_type(value: Any) -> str:
    """`application/json`, with `charset=utf-8` or no parameter; written back as
    CONTENT_TYPE."""
    if value is None:
        return CONTENT_TYPE
    if isinstance(value, str) and len(value) <= 200:
        media, *params = (part.strip() for part in value.split(";"))
        charsets = [p.partition("=")[2].strip().strip('"').lower() for p in params
                    if p.partition("=")[0].strip().lower() == "charset"]
        if media.lower() == "application/json" and len(charsets) == len(params) <= 1 \
                and all(c in ("utf-8", "utf8") for c in charsets):
            return CONTENT_TYPE
    raise _bad(f"content type {str(value)[:100]!r} is not supported; use "
               f"'{CONTENT_TYPE}'.")


def _document(data: Any) -> dict[str, Any]:
    if data is None:
        raise _bad("missing 'data' (the base64url-encoded policy JSON).")
    if not isinstance(data, str):
        raise _bad("'data' must be a base64url string.")
    if len(data) > (MAX_POLICY_BYTES * 4 + 2) // 3 + 4:
        raise _bad(f"the policy is larger than {MAX_POLICY_BYTES} bytes.")
    try:
        raw = b64_either_decode(data)
    except ValueError:
        raise _bad("'data' is not base64url-encoded.") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise _bad(f"the policy is larger than {MAX_POLICY_BYTES} bytes.")
    try:
        doc = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_members,
                         parse_constant=_no_constant)
    except _DuplicateMember as exc:
        raise _bad(f"property '{exc.name}' appears twice.") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad("'data' does not hold a JSON document.") from None
    if not isinstance(doc, dict):
        raise _bad("the policy must be a JSON object.")
    return doc


class _DuplicateMember(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's members, known names in their canonical case; a name twice (in any
    case) is refused."""
    out: dict[str, Any] = {}
    for name, value in pairs:
        key = _NAMES.get(name.lower(), name)
        if key in out:
            raise _DuplicateMember(key[:64])
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _top(doc: dict[str, Any]) -> tuple[str, str, list[Any]]:
    raw_version = doc.get("version", VERSION)
    version = _VERSIONS.get(raw_version) if isinstance(raw_version, str) else None
    if version is None:
        raise _bad(f"'version' must be \"{VERSION}\".")
    _no_other(doc, {"version", ANY_OF, ALL_OF}, "")
    combinator = _one_combinator(doc, "", "the policy must have 'anyOf' (or 'allOf') "
                                 "listing authorities")
    return version, combinator, _non_empty_list(doc[combinator], combinator, "authorities")


def _one_combinator(obj: dict[str, Any], where: str, missing: str) -> str:
    found = [c for c in (ANY_OF, ALL_OF) if c in obj]
    if not found:
        raise _bad(missing + ".", where)
    if len(found) > 1:
        raise _bad("'anyOf' and 'allOf' are not allowed together.", where)
    return found[0]


def _non_empty_list(value: Any, where: str, what: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise _bad(f"must be a non-empty array of {what}.", where)
    return value


def _no_other(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    for name in obj:
        if name in allowed:
            continue
        if name.lower() in _OPERATORS:
            raise _bad(f"operator '{name[:40]}' is not supported; only 'equals' is.", where)
        raise _bad(f"unknown property '{name[:64]}'.", where)


def _authority(block: Any, where: str, counter: Iterator[int]) -> AuthorityRule:
    if not isinstance(block, dict):
        raise _bad("an authority block must be an object with 'authority' and 'allOf' or "
                   "'anyOf'.", where)
    _no_other(block, {"authority", ANY_OF, ALL_OF}, where)
    authority = block.get("authority")
    if not isinstance(authority, str) or not authority.strip() \
            or len(authority) > MAX_AUTHORITY_CHARS or not authority.isprintable():
        raise _bad("'authority' must be the attestation authority's issuer URL (at most "
                   f"{MAX_AUTHORITY_CHARS} characters).", where)
    combinator = _one_combinator(block, where, "an authority block must have exactly one "
                                 "of 'allOf' or 'anyOf'")
    return AuthorityRule(authority, _group(block, combinator, f"{where}.{combinator}",
                                           counter, 0))


def _group(obj: dict[str, Any], combinator: str, where: str, counter: Iterator[int],
           depth: int) -> ConditionGroup:
    if depth > MAX_DEPTH:
        raise _bad(f"conditions are nested more than {MAX_DEPTH} deep.", where)
    items = _non_empty_list(obj[combinator], where, "conditions")
    return ConditionGroup(combinator, tuple(
        _condition(item, f"{where}[{i}]", counter, depth) for i, item in enumerate(items)))


def _condition(item: Any, where: str, counter: Iterator[int], depth: int) -> Condition:
    if not isinstance(item, dict):
        raise _bad("a condition must be an object.", where)
    if "claim" in item:
        _no_other(item, {"claim", "equals"}, where)
        return _claim(item, where, counter)
    if ANY_OF in item or ALL_OF in item:
        _no_other(item, {ANY_OF, ALL_OF}, where)
        combinator = _one_combinator(item, where, "")
        return _group(item, combinator, f"{where}.{combinator}", counter, depth + 1)
    for name in item:
        if name.lower() in _OPERATORS:
            raise _bad(f"operator '{name[:40]}' is not supported; only 'equals' is.", where)
    raise _bad("a condition must be {\"claim\", \"equals\"}, {\"anyOf\"} or {\"allOf\"}.",
               where)


def _claim(item: dict[str, Any], where: str, counter: Iterator[int]) -> ClaimCondition:
    if next(counter, None) is None:
        raise _bad(f"the policy has more than {MAX_CONDITIONS} claim conditions.")
    claim = item["claim"]
    if not isinstance(claim, str) or not 0 < len(claim) <= MAX_CLAIM_CHARS \
            or "" in claim.split(".") or not claim.isprintable():
        raise _bad("'claim' must be a claim name, or a dot path to one (at most "
                   f"{MAX_CLAIM_CHARS} characters).", where)
    if "equals" not in item:
        raise _bad(f"the condition on claim '{claim}' has no 'equals'.", where)
    value = item["equals"]
    if value is None or isinstance(value, list | dict):
        raise _bad("the value of 'equals' must be a string, number or boolean (arrays, "
                   "objects and null are not supported).", where)
    return ClaimCondition(claim, value)


# ---- evaluation ------------------------------------------------------------------------
def evaluate(policy: ReleasePolicy, issuer: str, claims: Mapping[str, Any]) -> bool:
    """Whether a token of `issuer` with `claims` (both verified) satisfies the policy: an
    authority block holds when it names that issuer and its conditions hold."""
    wanted = normalise_issuer(issuer)
    results = (a.issuer_key == wanted and _holds(a.rule, claims) for a in policy.authorities)
    return any(results) if policy.combinator == ANY_OF else all(results)


def _holds(condition: Condition, claims: Mapping[str, Any]) -> bool:
    if isinstance(condition, ClaimCondition):
        found, value = _lookup(claims, condition.path)
        return found and _equals(condition.equals, value)
    results = (_holds(c, claims) for c in condition.conditions)
    return any(results) if condition.combinator == ANY_OF else all(results)


def _lookup(claims: Mapping[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    value: Any = claims
    for name in path:
        if not isinstance(value, Mapping) or name not in value:
            return False, None
        value = value[name]
    return True, value


def _equals(expected: Scalar, actual: Any) -> bool:
    """`equals`: same type and value; across types, a string equal to a boolean's
    `true`/`false` (any case) or a number's value."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        if isinstance(expected, bool) and isinstance(actual, bool):
            return expected == actual
        flag, other = (expected, actual) if isinstance(expected, bool) else (actual, expected)
        return isinstance(other, str) and other.strip().lower() == ("true" if flag else "false")
    if isinstance(expected, str) and isinstance(actual, str):
        return expected == actual
    number, other = (expected, actual) if isinstance(expected, int | float) \
        else (actual, expected)
    if not isinstance(number, int | float):
        return False
    if isinstance(other, str):
        other = _as_number(other)
    return isinstance(other, int | float) and not isinstance(other, bool) and number == other


def _as_number(text: str) -> int | float | None:
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    return int(text) if text.lstrip("-").isdigit() else float(text)
