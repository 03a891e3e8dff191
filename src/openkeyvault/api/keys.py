"""Keys routes: wire JSON → request model → KeyService call → wire JSON."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from openkeyvault.api import render
from openkeyvault.api.http import Ctx, b64url_encode, json_response
from openkeyvault.api.models import decode_body
from openkeyvault.api.models.keys import (
    GetRandomBytesRequest,
    KeyCreateParameters,
    KeyImportParameters,
    KeyOperationsParameters,
    KeyReleaseParameters,
    KeyRestoreParameters,
    KeyRotationPolicy,
    KeySignParameters,
    KeyUpdateParameters,
    KeyVerifyParameters,
)
from openkeyvault.api.objects import ObjectRoutes
from openkeyvault.vault.keys import KeyService
from openkeyvault.vault.models import KeyBundle, KeyOperationResult

# operation (as in the path) → its body's model
OPERATION_MODELS: dict[str, type[KeyOperationsParameters | KeySignParameters |
                                 KeyVerifyParameters]] = {
    "encrypt": KeyOperationsParameters,
    "decrypt": KeyOperationsParameters,
    "wrapkey": KeyOperationsParameters,
    "unwrapkey": KeyOperationsParameters,
    "sign": KeySignParameters,
    "verify": KeyVerifyParameters,
}


class KeyRoutes(ObjectRoutes):
    restore_model = KeyRestoreParameters

    def __init__(self, service: KeyService) -> None:
        self.s = service

    def bundle(self, base: str, b: Any) -> dict[str, Any]:
        return render.key(base, b)

    def item(self, base: str, b: Any, versioned: bool) -> dict[str, Any]:
        return render.key_item(base, b, versioned=versioned)

    def create(self, ctx: Ctx) -> Response:
        p = decode_body(ctx, KeyCreateParameters)
        return json_response(render.key(ctx.base, self.s.create(ctx.caller, ctx.params["name"],
                                                                p.to_request())))

    def import_key(self, ctx: Ctx) -> Response:
        p = decode_body(ctx, KeyImportParameters)
        b = self.s.import_key(ctx.caller, ctx.params["name"], p.to_request())
        return json_response(render.key(ctx.base, b))

    def get(self, ctx: Ctx) -> Response:
        b = self.s.get(ctx.caller, ctx.params["name"], ctx.params.get("version"))
        return json_response(render.key(ctx.base, b))

    def get_attestation(self, ctx: Ctx) -> Response:
        b = self.s.get_attestation(ctx.caller, ctx.params["name"], ctx.params.get("version"),
                                   lambda name, version: render.key_id(ctx.base, name, version))
        return json_response(render.key(ctx.base, b))

    def update(self, ctx: Ctx) -> Response:
        p = decode_body(ctx, KeyUpdateParameters)
        b = self.s.update(ctx.caller, ctx.params["name"], ctx.params.get("version"),
                          p.to_request())
        return json_response(render.key(ctx.base, b))

    def release(self, ctx: Ctx) -> Response:
        """The signed object holding the released key: its payload is {"request": what was
        asked, "response": {"key": the KeyBundle, its JWK with `key_hsm` (the private key
        wrapped to the target's runtime key) and kty without "-HSM"}}."""
        request = decode_body(ctx, KeyReleaseParameters).to_request()

        def claims(b: KeyBundle, key_hsm: str, enc: str) -> dict[str, Any]:
            bundle = render.key(ctx.base, b)
            jwk = bundle["key"]
            jwk["kty"] = jwk["kty"].removesuffix("-HSM")
            jwk["key_hsm"] = key_hsm
            asked: dict[str, Any] = {"api-version": ctx.api_version, "enc": enc,
                                     "kid": jwk["kid"]}
            if request.nonce is not None:
                asked["nonce"] = request.nonce
            return {"request": asked, "response": {"key": bundle}}

        value = self.s.release(ctx.caller, ctx.params["name"], ctx.params.get("version"),
                               request, claims)
        return json_response({"value": value})

    def rotate(self, ctx: Ctx) -> Response:
        return json_response(render.key(ctx.base, self.s.rotate(ctx.caller, ctx.params["name"])))

    def get_rotation_policy(self, ctx: Ctx) -> Response:
        p = self.s.get_rotation_policy(ctx.caller, ctx.params["name"])
        return json_response(render.rotation_policy(ctx.base, p))

    def set_rotation_policy(self, ctx: Ctx) -> Response:
        body = decode_body(ctx, KeyRotationPolicy)
        p = self.s.set_rotation_policy(ctx.caller, ctx.params["name"], body.to_request())
        return json_response(render.rotation_policy(ctx.base, p))

    def operation(self, op: str) -> Any:
        model = OPERATION_MODELS[op]

        def handler(ctx: Ctx) -> Response:
            request = decode_body(ctx, model).to_request()
            result = self.s.operate(ctx.caller, ctx.params["name"], ctx.params.get("version"),
                                    op, request)
            if isinstance(result, bool):
                return json_response({"value": result})
            assert isinstance(result, KeyOperationResult)
            out = {"kid": f"{ctx.base}/keys/{result.name}/{result.version}",
                   "value": b64url_encode(result.value)}
            for member in ("iv", "tag", "aad"):
                extra = getattr(result, member)
                if extra is not None:
                    out[member] = b64url_encode(extra)
            return json_response(out)
        return handler

    def rng(self, ctx: Ctx) -> Response:
        count = decode_body(ctx, GetRandomBytesRequest).count
        return json_response({"value": b64url_encode(self.s.random_bytes(ctx.caller, count))})
