"""The floor for a signature over HTTPS: a bare Starlette app under granian that does
nothing but sign, for benchmarks/accounting.py to compare the server's sign rate with.

    python benchmarks/bare_sign_app.py --port P --workers N --cert CERT.pem --key KEY.pem

One route, `POST /keys/bench/1/sign` with a JSON body {"alg": ALG, "value": DIGEST}
(DIGEST base64url): it decodes the digest, signs it using pyca/cryptography and a key made
when the worker starts (RS256: RSA-2048 PKCS#1 v1.5; ES256: P-256 ECDSA, r || s), and
answers {"kid", "value"}.
No authentication, storage, audit, metrics or request log: what is left is TLS, granian,
Starlette's request and response, JSON and the RSA operation. granian runs it as `okv
server` runs the app (ASGI, one Rust I/O thread per worker, HTTP/1.1 only, TLS 1.2+), on
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SIGN_PATH = "/keys/bench/1/sign"
KID = "https://127.0.0.1/keys/bench/1"


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def create_app() -> Starlette:
    """The app of one worker, with its own RSA-2048 and P-256 keys (made here, after the
    fork)."""
    rsa_key = rsa.generate_private_key(65537, 2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    prehashed = utils.Prehashed(hashes.SHA256())
    pkcs1, ecdsa = padding.PKCS1v15(), ec.ECDSA(prehashed)

    async def sign(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
            alg = body.get("alg")
            if alg not in ("RS256", "ES256"):
                raise ValueError("alg")
            digest = _b64url_decode(str(body["value"]))
            if len(digest) != 32:
                raise ValueError("digest")
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            return JSONResponse({"error": {"code": "BadParameter",
                                           "message": "expected RS256 or ES256 and a SHA-256 "
                                                      "digest"}},
                                status_code=400)
        if alg == "RS256":
            signature = rsa_key.sign(digest, pkcs1, prehashed)
        else:
            r, s = utils.decode_dss_signature(ec_key.sign(digest, ecdsa))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        value = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
        return JSONResponse({"kid": KID, "value": value})

    return Starlette(routes=[Route(SIGN_PATH, sign, methods=["POST"])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cert", type=Path, required=True)
    ap.add_argument("--key", type=Path, required=True)
    args = ap.parse_args()
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, RuntimeModes, SSLProtocols

    Granian(
        "bare_sign_app:create_app",
        address="127.0.0.1",
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        factory=True,
        ssl_cert=args.cert,
        ssl_key=args.key,
        ssl_protocol_min=SSLProtocols.tls12,
        log_access=False,
        runtime_mode=RuntimeModes.st,
        http=HTTPModes.http1,
        working_dir=Path(__file__).resolve().parent,
        workers_kill_timeout=5,
    ).serve()


if __name__ == "__main__":
    main()
