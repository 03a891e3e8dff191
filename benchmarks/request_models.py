"""Decode + validate of request bodies: the request models against plain `json.loads`.

Usage: python benchmarks/request_models.py [--number 20000] [--repeat 7]

Times, in one process, for a SecretSetParameters body, a KeySignParameters body and a
CertificateCreateParameters body (a full policy, as the SDKs send one):

  json.loads           the reference (what the handlers did before, with no checks at all)
  hand-written         json.loads plus isinstance checks of every field (and, for sign,
                       the base64url decode of `value`), as the code did before
  msgspec (models)     openkeyvault.api.models.decode + the typed request the domain gets
                       (with the base64url decode): what the server runs now
  msgspec (bare)       a msgspec.json.Decoder of the model alone
  pydantic v2          strict BaseModel.model_validate_json (if pydantic is installed)
  models + policy rules  (certificate only) the model, then vault/certpolicy.validate: the
                       policy's rules of meaning and defaults, as the service runs them

The "bare" and "pydantic" rows only decode and check types; compare them with each
other to choose a library, and "models" with "hand-written" for the cost on the server.

and prints microseconds per body (best of --repeat batches, a shared machine is noisy)
and the ratio to json.loads measured in the same run. CPU only: no server, no I/O.
"""

from __future__ import annotations

import argparse
import base64
import json
import timeit
from collections.abc import Callable
from typing import Annotated, Any

from openkeyvault.api.models import decode
from openkeyvault.api.models.certificates import CertificateCreateParameters
from openkeyvault.api.models.common import attributes
from openkeyvault.api.models.keys import KeySignParameters
from openkeyvault.api.models.secrets import SecretSetParameters
from openkeyvault.vault import certpolicy

SECRET_SET = json.dumps({
    "value": "s" * 32, "contentType": "text/plain", "tags": {"env": "prod", "team": "payments"},
    "attributes": {"enabled": True, "exp": 1900000000},
}).encode()
CERT_CREATE = json.dumps({
    "policy": {
        "key_props": {"exportable": True, "kty": "RSA", "key_size": 2048, "reuse_key": False},
        "secret_props": {"contentType": "application/x-pkcs12"},
        "x509_props": {"subject": "CN=www.example.com",
                       "sans": {"dns_names": ["www.example.com", "example.com"]},
                       "ekus": ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"],
                       "key_usage": ["digitalSignature", "keyEncipherment"],
                       "validity_months": 12},
        "lifetime_actions": [{"trigger": {"lifetime_percentage": 80},
                              "action": {"action_type": "AutoRenew"}}],
        "issuer": {"name": "Self"}, "attributes": {"enabled": True},
    },
    "attributes": {"enabled": True}, "tags": {"env": "prod"},
}).encode()
KEY_SIGN = json.dumps({
    "alg": "ES256", "value": base64.urlsafe_b64encode(b"\x01" * 32).rstrip(b"=").decode(),
}).encode()


# ---- hand-written checks, as the handlers and services did them ------------------------------
def _time(v: Any) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                          or not 0 <= v < 253402300800):
        raise ValueError


def hand_secret(raw: bytes) -> Any:
    b = json.loads(raw)
    if not isinstance(b, dict) or not isinstance(b.get("value"), str):
        raise ValueError
    ct = b.get("contentType")
    if ct is not None and not isinstance(ct, str):
        raise ValueError
    tags = b.get("tags")
    if tags is not None and (not isinstance(tags, dict)
                             or not all(isinstance(v, str) for v in tags.values())):
        raise ValueError
    a = b.get("attributes")
    if a is not None:
        if not isinstance(a, dict):
            raise ValueError
        if a.get("enabled") is not None and not isinstance(a["enabled"], bool):
            raise ValueError
        _time(a.get("nbf"))
        _time(a.get("exp"))
    return b


def hand_sign(raw: bytes) -> Any:
    b = json.loads(raw)
    if not isinstance(b, dict) or not isinstance(b.get("alg"), str) \
            or not isinstance(b.get("value"), str):
        raise ValueError
    v = b["value"]
    return b["alg"], base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))


# ---- pydantic v2, strict, the same shapes ---------------------------------------------------
def pydantic_models() -> tuple[Callable[[bytes], Any], Callable[[bytes], Any]] | None:
    try:
        from pydantic import BaseModel, ConfigDict, Field
    except ImportError:
        return None
    time_t = Annotated[int, Field(ge=0, lt=253402300800)] | \
        Annotated[float, Field(ge=0, lt=253402300800)]

    class Strict(BaseModel):
        model_config = ConfigDict(strict=True, extra="ignore")

    class Attrs(Strict):
        enabled: bool | None = None
        nbf: time_t | None = None
        exp: time_t | None = None

    class SecretSet(Strict):
        value: str
        contentType: str | None = None  # noqa: N815 (the wire name)
        tags: dict[str, str] | None = None
        attributes: Attrs | None = None

    class Sign(Strict):
        alg: str
        value: str

    return SecretSet.model_validate_json, Sign.model_validate_json


def best(fn: Callable[[], Any], number: int, repeat: int) -> float:
    """Microseconds per call, best of `repeat` batches."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--number", type=int, default=20000, help="calls per batch (20000)")
    ap.add_argument("--repeat", type=int, default=7, help="batches; the best counts (7)")
    args = ap.parse_args()
    if args.number < 1 or args.repeat < 1:
        ap.error("number and repeat must be positive")

    import msgspec
    bare_secret = msgspec.json.Decoder(SecretSetParameters)
    bare_sign = msgspec.json.Decoder(KeySignParameters)
    bare_cert = msgspec.json.Decoder(CertificateCreateParameters)

    def cert_rules() -> Any:
        request = decode(CERT_CREATE, CertificateCreateParameters).to_request()
        return certpolicy.validate(request.policy, None, 0)

    def models_secret() -> Any:
        p = decode(SECRET_SET, SecretSetParameters)
        return p.value, p.content_type, attributes(p.attributes), p.tags

    pyd = pydantic_models()
    bodies: dict[str, dict[str, Callable[[], Any]]] = {
        f"SecretSetParameters ({len(SECRET_SET)} B)": {
            "json.loads": lambda: json.loads(SECRET_SET),
            "hand-written": lambda: hand_secret(SECRET_SET),
            "msgspec (models)": models_secret,
            "msgspec (bare)": lambda: bare_secret.decode(SECRET_SET),
            **({"pydantic v2": lambda: pyd[0](SECRET_SET)} if pyd else {}),
        },
        f"KeySignParameters ({len(KEY_SIGN)} B)": {
            "json.loads": lambda: json.loads(KEY_SIGN),
            "hand-written": lambda: hand_sign(KEY_SIGN),
            "msgspec (models)": lambda: decode(KEY_SIGN, KeySignParameters).to_request(),
            "msgspec (bare)": lambda: bare_sign.decode(KEY_SIGN),
            **({"pydantic v2": lambda: pyd[1](KEY_SIGN)} if pyd else {}),
        },
        f"CertificateCreateParameters ({len(CERT_CREATE)} B)": {
            "json.loads": lambda: json.loads(CERT_CREATE),
            "msgspec (models)":
                lambda: decode(CERT_CREATE, CertificateCreateParameters).to_request(),
            "msgspec (bare)": lambda: bare_cert.decode(CERT_CREATE),
            "models + policy rules": cert_rules,
        },
    }
    print(f"decode + validate, best of {args.repeat} x {args.number} calls "
          f"(msgspec {msgspec.__version__}"
          + (f", pydantic {__import__('pydantic').VERSION}" if pyd else ", no pydantic") + ")")
    for body, variants in bodies.items():
        print(f"\n  {body:<34} {'us/body':>9} {'vs json.loads':>14}")
        ref = best(variants["json.loads"], args.number, args.repeat)
        for label, fn in variants.items():
            t = ref if label == "json.loads" else best(fn, args.number, args.repeat)
            print(f"  {label:<34} {t:9.2f} {t / ref:13.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
