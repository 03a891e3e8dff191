"""A certificate's management policy: Azure's validation rules, the stored (wire) shape,
and what the policy means for the key, the secret and the X.509 request.

The stored policy is the wire JSON of `CertificatePolicy` without `id` (rendered at
the edge), with every default filled in.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from openkeyvault.crypto.certificates import CertificateInputError, X509Request, parse_subject
from openkeyvault.vault.certrequests import CertificatePolicy, sent
from openkeyvault.vault.errors import BadParameter

T = TypeVar("T")

PKCS12 = "application/x-pkcs12"
PEM = "application/x-pem-file"
CONTENT_TYPES = (PKCS12, PEM)
KEY_TYPES = ("RSA", "RSA-HSM", "EC", "EC-HSM")
RSA_SIZES = (2048, 3072, 4096)
CURVE_BITS = {"P-256": 256, "P-384": 384, "P-521": 521, "P-256K": 256}
KEY_USAGES = ("digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment",
              "keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly")
_USAGE_BY_LOWER = {u.lower(): u for u in KEY_USAGES}
ACTIONS = ("AutoRenew", "EmailContacts")
MAX_VALIDITY_MONTHS = 1200
MAX_SUBJECT_CHARS = 1024
MAX_SANS = 100
MAX_SAN_CHARS = 255
MAX_EKUS = 32
MAX_PLATFORM_USAGE_CHARS = 256
MAX_PLATFORM_METADATA_CHARS = 8192
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]{0,9})){1,30}")
SELF = "Self"
UNKNOWN = "Unknown"
DEFAULT_RENEW_PERCENT = 80
DEFAULT_EKUS = ("1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2")  # serverAuth, clientAuth
HSM_EXPORTABLE = ("Exportable keys are allowed only with key types RSA and EC: the private "
                  "key of an RSA-HSM or EC-HSM key never leaves the HSM. Set "
                  "key_props.exportable to false.")

# X.509 key usage → the key operations of the certificate's key (RSA; EC keeps sign/verify).
_USAGE_OPS: dict[str, tuple[str, ...]] = {
    "digitalSignature": ("sign", "verify"),
    "nonRepudiation": ("sign", "verify"),
    "keyCertSign": ("sign", "verify"),
    "cRLSign": ("sign", "verify"),
    "keyEncipherment": ("wrapKey", "unwrapKey", "encrypt", "decrypt"),
    "dataEncipherment": ("encrypt", "decrypt"),
}
_OPS_ORDER = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")


# The request models (api/models/certificates.py) give every field its JSON type; the rules
# below check what the values mean. A field sent as null resets it to its default.
def _obj(value: dict[str, Any] | None) -> dict[str, Any]:
    return value or {}


def _default(value: T | None, default: T) -> T:
    return default if value is None else value


def _strings(value: list[str] | None, field: str, limit: int,
             chars: int = MAX_SAN_CHARS) -> list[str]:
    if value is None:
        return []
    if len(value) > limit:
        raise BadParameter(f"{field} holds more than {limit} entries.")
    for v in value:
        if not v or len(v) > chars:
            raise BadParameter(f"Each entry of {field} must be 1 to {chars} characters long.")
    return list(value)


def key_props(raw: dict[str, Any] | None, base: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    given = _obj(raw)
    base = dict(base or {})
    given_kty = given.get("kty")
    if given_kty is not None and given_kty[:2] != str(base.get("kty", ""))[:2]:
        base.pop("key_size", None)  # another key family: the old size or curve is moot
        base.pop("crv", None)
    p = {**base, **given}
    kty = _default(p.get("kty"), "RSA")
    if kty not in KEY_TYPES:
        raise BadParameter(f"The key type '{str(kty)[:16]}' is not supported for certificates; "
                           f"use one of {', '.join(KEY_TYPES)}.")
    out: dict[str, Any] = {"exportable": _exportable(kty, given, p), "kty": kty}
    size, crv = p.get("key_size"), p.get("crv")
    if kty.startswith("RSA"):
        if crv is not None:
            raise BadParameter("key_props.crv is only for EC keys.")
        size = 2048 if size is None else size
        if size not in RSA_SIZES:
            raise BadParameter(f"key_props.key_size must be one of "
                               f"{', '.join(map(str, RSA_SIZES))} for RSA keys.")
        out["key_size"] = size
    else:
        crv = "P-256" if crv is None else crv
        if crv not in CURVE_BITS:
            raise BadParameter(f"key_props.crv must be one of {', '.join(CURVE_BITS)}.")
        if size is not None and size != CURVE_BITS[crv]:
            raise BadParameter(f"key_props.key_size {size} does not match the curve {crv}.")
        out["key_size"] = CURVE_BITS[crv]
        out["crv"] = crv
    out["reuse_key"] = _default(p.get("reuse_key"), False)
    return out


def _exportable(kty: str, given: dict[str, Any], merged: dict[str, Any]) -> bool:
    """`exportable`: true by default for RSA and EC. HSM keys are non-exportable (Azure:
    "Exportable keys are allowed only with RSA and EC"): false unless this request asks
    for true, which is refused."""
    if not kty.endswith("-HSM"):
        return bool(_default(merged.get("exportable"), True))
    if given.get("exportable") is True:
        raise BadParameter(HSM_EXPORTABLE)
    return False


def imported_kty(key_kty: str, asked: object) -> str:
    """An imported key's kty: its family (RSA or EC), HSM-protected when the policy asks for
    an HSM key type."""
    return f"{key_kty}-HSM" if isinstance(asked, str) and asked.endswith("-HSM") else key_kty


def secret_props(raw: dict[str, Any] | None, base: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    p = {**(base or {}), **_obj(raw)}
    ct = _default(p.get("contentType"), PKCS12)
    if ct not in CONTENT_TYPES:
        raise BadParameter(f"secret_props.contentType must be {PKCS12} or {PEM}.")
    return {"contentType": ct}


def _sans(raw: dict[str, Any] | None) -> dict[str, list[str]]:
    s = _obj(raw)
    out = {k: _strings(s.get(k), f"x509_props.sans.{k}", MAX_SANS)
           for k in ("emails", "dns_names", "upns", "ipAddresses", "uris")}
    if sum(len(v) for v in out.values()) > MAX_SANS:
        raise BadParameter(f"A certificate holds at most {MAX_SANS} subject alternative names.")
    return {k: v for k, v in out.items() if v}


def x509_props(raw: dict[str, Any] | None, base: dict[str, Any] | None = None, *,
               kty: str = "RSA", platform_managed: bool = False) -> dict[str, Any]:
    p = {**(base or {}), **_obj(raw)}
    subject = p.get("subject")
    if subject is not None and len(subject) > MAX_SUBJECT_CHARS:
        raise BadParameter(f"x509_props.subject must be a string of at most "
                           f"{MAX_SUBJECT_CHARS} characters.")
    sans = _sans(p.get("sans"))
    if not subject and not sans and not platform_managed:
        raise BadParameter("The certificate policy must specify a subject or subject "
                           "alternative names (x509_props.subject or x509_props.sans).")
    if subject:
        try:
            parse_subject(subject)
        except CertificateInputError as exc:
            raise BadParameter(f"x509_props.subject is not a valid distinguished name: {exc}") \
                from None
    # Azure fills server and client authentication when a policy names no EKUs.
    ekus = _strings(p.get("ekus"), "x509_props.ekus", MAX_EKUS, 128) \
        if p.get("ekus") is not None else list(DEFAULT_EKUS)
    for e in ekus:
        if not _OID.fullmatch(e):
            raise BadParameter(f"x509_props.ekus entry '{e[:64]}' is not an object identifier.")
    usage_in = _strings(p.get("key_usage"), "x509_props.key_usage", len(KEY_USAGES), 32)
    usage: list[str] = []
    for u in usage_in:
        name = _USAGE_BY_LOWER.get(u.lower())
        if name is None:
            raise BadParameter(f"x509_props.key_usage entry '{u[:32]}' is not valid; use "
                               f"{', '.join(KEY_USAGES)}.")
        if name not in usage:
            usage.append(name)
    if not usage:
        usage = ["digitalSignature", "keyEncipherment"] if kty.startswith("RSA") \
            else ["digitalSignature"]
    months = _default(p.get("validity_months"), 12)
    if not 1 <= months <= MAX_VALIDITY_MONTHS:
        raise BadParameter(f"x509_props.validity_months must be between 1 and "
                           f"{MAX_VALIDITY_MONTHS}.")
    out: dict[str, Any] = {"subject": subject or ""}
    if sans:
        out["sans"] = sans
    out.update(ekus=ekus, key_usage=usage, validity_months=months)
    return out


def platform_managed(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """`platformManaged` (api-version 2026-04-01): the platform manages the certificate for
    the user. Its `certificateUsage` is required; `metadata` is free-form JSON, kept as
    sent. Such a policy may name no subject and no SANs (the SDKs allow it too)."""
    if raw is None:
        return None
    usage = raw.get("certificateUsage")
    if not usage or len(usage) > MAX_PLATFORM_USAGE_CHARS:
        raise BadParameter(f"platformManaged.certificateUsage must be a string of 1 to "
                           f"{MAX_PLATFORM_USAGE_CHARS} characters.")
    out: dict[str, Any] = {"certificateUsage": usage}
    metadata = raw.get("metadata")
    if metadata is not None:
        if len(json.dumps(metadata, separators=(",", ":"))) > MAX_PLATFORM_METADATA_CHARS:
            raise BadParameter(f"platformManaged.metadata must be at most "
                               f"{MAX_PLATFORM_METADATA_CHARS} characters of JSON.")
        out["metadata"] = metadata
    return out


def issuer(raw: dict[str, Any] | None, base: dict[str, Any] | None = None) -> dict[str, Any]:
    p = {**(base or {}), **_obj(raw)}
    name = _default(p.get("name"), UNKNOWN)
    if not name or len(name) > 127:
        raise BadParameter("issuer.name must be a non-empty string of at most 127 characters.")
    if name.lower() == "self":
        name = SELF
    elif name.lower() == "unknown":
        name = UNKNOWN
    out: dict[str, Any] = {"name": name}
    cty = p.get("cty")
    if cty is not None:
        if len(cty) > 64:
            raise BadParameter("issuer.cty must be a string of at most 64 characters.")
        out["cty"] = cty
    if p.get("cert_transparency") is not None:
        out["cert_transparency"] = p["cert_transparency"]
    return out


def lifetime_actions(raw: list[dict[str, Any]] | None, months: int, issuer_name: str
                     ) -> list[dict[str, Any]]:
    if raw is None:
        action = "EmailContacts" if issuer_name == UNKNOWN else "AutoRenew"
        return [{"trigger": {"lifetime_percentage": DEFAULT_RENEW_PERCENT},
                 "action": {"action_type": action}}]
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in raw:
        if item.get("trigger") is None or item.get("action") is None:
            raise BadParameter("Each lifetime action needs a 'trigger' and an 'action'.")
        action_type = item["action"].get("action_type")
        kind = {a.lower(): a for a in ACTIONS}.get((action_type or "").lower())
        if kind is None:
            raise BadParameter("A lifetime action's action_type must be AutoRenew or "
                               "EmailContacts.")
        if kind in seen:
            raise BadParameter(f"A certificate policy may hold at most one {kind} action.")
        seen.add(kind)
        if kind == "AutoRenew" and issuer_name == UNKNOWN:
            raise BadParameter("AutoRenew is not supported for certificates whose issuer is "
                               "Unknown; use EmailContacts.")
        trig = item["trigger"]
        pct, days = trig.get("lifetime_percentage"), trig.get("days_before_expiry")
        if (pct is None) == (days is None):
            raise BadParameter("A trigger needs exactly one of lifetime_percentage and "
                               "days_before_expiry.")
        if pct is not None:
            if not 1 <= pct <= 99:
                raise BadParameter("trigger.lifetime_percentage must be between 1 and 99.")
            trigger: dict[str, int] = {"lifetime_percentage": pct}
        else:
            assert days is not None
            if not 1 <= days <= months * 27:
                raise BadParameter(f"trigger.days_before_expiry must be between 1 and "
                                   f"{months * 27} (validity_months × 27).")
            trigger = {"days_before_expiry": days}
        out.append({"trigger": trigger, "action": {"action_type": kind}})
    return out


def validate(given: CertificatePolicy | None, base: dict[str, Any] | None = None,
             now: int = 0, require_x509: bool = True) -> dict[str, Any]:
    """The stored policy for a request's policy, merged section by section over `base`
    (the stored policy, for updates)."""
    return merge(sent(given), base, now, require_x509)


def merge(body: dict[str, Any], base: dict[str, Any] | None = None, now: int = 0,
          require_x509: bool = True) -> dict[str, Any]:
    """`validate` over the sections given as the stored policy names them (a request's
    `sent()` fields, or what a certificate says): every rule is checked here."""
    base = base or {}
    kp = key_props(body.get("key_props"), base.get("key_props"))
    sp = secret_props(body.get("secret_props"), base.get("secret_props"))
    pm = platform_managed(body.get("platformManaged", base.get("platformManaged")))
    if require_x509 or "x509_props" in body or base.get("x509_props"):
        xp = x509_props(body.get("x509_props"), base.get("x509_props"), kty=kp["kty"],
                        platform_managed=pm is not None)
    else:
        xp = {}
    iss = issuer(body.get("issuer"), base.get("issuer"))
    months = xp.get("validity_months", 12)
    raw_actions = body.get("lifetime_actions", base.get("lifetime_actions"))
    la = lifetime_actions(raw_actions, months, iss["name"])
    attrs = _obj(body.get("attributes"))
    old_attrs = base.get("attributes") or {}
    enabled = _default(attrs.get("enabled"), old_attrs.get("enabled", True))
    out = {
        "key_props": kp, "secret_props": sp, "x509_props": xp, "lifetime_actions": la,
        "issuer": iss,
        "attributes": {"enabled": enabled, "created": old_attrs.get("created", now),
                       "updated": now},
    }
    if pm is not None:
        out["platformManaged"] = pm
    return out


def key_ops(policy: dict[str, Any]) -> list[str]:
    """The certificate key's operations, from the policy's key usage."""
    rsa = policy["key_props"]["kty"].startswith("RSA")
    ops: set[str] = set()
    for u in policy["x509_props"].get("key_usage", []):
        ops.update(_USAGE_OPS.get(u, ()))
    if not rsa:
        ops &= {"sign", "verify"}
    return [o for o in _OPS_ORDER if o in ops]


def request(policy: dict[str, Any], name: str | None = None) -> X509Request:
    """The X.509 request of a policy; a platform-managed policy without a subject or SANs
    gets `CN=<certificate name>` (a certificate needs a name)."""
    xp = policy["x509_props"]
    sans = xp.get("sans", {})
    subject = xp.get("subject", "")
    if not subject and not sans and name and policy.get("platformManaged"):
        subject = f"CN={name}"
    return X509Request(
        subject=subject,
        dns_names=tuple(sans.get("dns_names", ())),
        emails=tuple(sans.get("emails", ())),
        upns=tuple(sans.get("upns", ())),
        ip_addresses=tuple(sans.get("ipAddresses", ())),
        uris=tuple(sans.get("uris", ())),
        key_usage=tuple(xp.get("key_usage", ())),
        ekus=tuple(xp.get("ekus", ())),
        validity_months=int(xp.get("validity_months", 12)),
    )


def from_certificate(x509_read: dict[str, Any], key_read: dict[str, Any],
                     given: CertificatePolicy | None, content_type: str, now: int
                     ) -> dict[str, Any]:
    """An import's policy: what the request gave, the rest read from the certificate."""
    body = sent(given)
    kp = _obj(body.get("key_props"))
    asked = kp.get("kty")
    for k in ("kty", "key_size", "crv"):
        if key_read.get(k) is not None:
            kp[k] = key_read[k]
    if "kty" in key_read:
        kp["kty"] = imported_kty(key_read["kty"], asked)
    if str(kp.get("kty", "")).startswith("RSA"):
        kp.pop("crv", None)
    body["key_props"] = kp
    body["secret_props"] = {**_obj(body.get("secret_props")), "contentType": content_type}
    xp = {k: v for k, v in x509_read.items() if v not in (None, [], {}, "")}
    body["x509_props"] = {**xp, **_obj(body.get("x509_props"))}
    body["x509_props"].setdefault("ekus", x509_read.get("ekus") or [])
    months = body["x509_props"].get("validity_months")
    if months is not None:
        body["x509_props"]["validity_months"] = max(1, min(MAX_VALIDITY_MONTHS, months))
    if body.get("issuer") is None:
        body["issuer"] = {"name": UNKNOWN}
    return merge(body, None, now)
