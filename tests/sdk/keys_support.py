"""Helpers shared by the Keys SDK tests: clients, raw calls through the SDK pipeline, and
the local half of every cryptographic check (pyca/cryptography from the returned JWK).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from azure.core.rest import HttpRequest
from azure.keyvault.keys import JsonWebKey, KeyClient, KeyVaultKey
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from tests.support.server import DevServer

POLL = {"_polling_interval": 0.2}

# Variables that would make the SDK's credentials pick another source.
CREDENTIAL_ENV = (
    "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
    "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS", "IDENTITY_ENDPOINT", "IDENTITY_HEADER",
)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

CURVES: dict[str, tuple[type[ec.EllipticCurve], int, str]] = {
    # Key Vault name → (curve, coordinate bytes, the one signature algorithm)
    "P-256": (ec.SECP256R1, 32, "ES256"),
    "P-256K": (ec.SECP256K1, 32, "ES256K"),
    "P-384": (ec.SECP384R1, 48, "ES384"),
    "P-521": (ec.SECP521R1, 66, "ES512"),
}
RSA_SIGN = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
RSA_ENCRYPT = ("RSA1_5", "RSA-OAEP", "RSA-OAEP-256")
RSA_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
EC_OPS = ["sign", "verify"]
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "key_hsm"}

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "RS256": hashes.SHA256, "RS384": hashes.SHA384, "RS512": hashes.SHA512,
    "PS256": hashes.SHA256, "PS384": hashes.SHA384, "PS512": hashes.SHA512,
    "ES256": hashes.SHA256, "ES256K": hashes.SHA256, "ES384": hashes.SHA384,
    "ES512": hashes.SHA512,
}
# bytes of padding overhead per encryption algorithm (PKCS#1 v1.5, OAEP-SHA1, OAEP-SHA256)
OVERHEAD = {"RSA1_5": 11, "RSA-OAEP": 42, "RSA-OAEP-256": 66}


def environment(server: DevServer) -> Iterator[dict[str, str]]:
    """dev.env in os.environ (for a module-scoped fixture: module-scoped clients and keys are
    made before any function-scoped `sdk_env` runs)."""
    mp = pytest.MonkeyPatch()
    for k in CREDENTIAL_ENV:
        mp.delenv(k, raising=False)
    for k, v in server.env.items():
        mp.setenv(k, v)
    yield dict(server.env)
    mp.undo()


# ---- bytes ----------------------------------------------------------------------------
def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def uint(n: int, size: int | None = None) -> bytes:
    return n.to_bytes(size or (n.bit_length() + 7) // 8, "big")


# ---- raw calls through the SDK pipeline (auth, CA, api-version as the SDK does them) -------
@dataclass
class Reply:
    status: int
    body: Any

    @property
    def code(self) -> str | None:
        return (self.body.get("error") or {}).get("code") if isinstance(self.body, dict) \
            else None

    @property
    def inner(self) -> str | None:
        err = self.body.get("error") or {} if isinstance(self.body, dict) else {}
        return (err.get("innererror") or {}).get("code")

    def value(self) -> bytes:
        assert self.status == 200, (self.status, self.body)
        return b64u_decode(self.body["value"])


def rest(client: Any, method: str, path: str, body: Any = None) -> Reply:
    """One request through the client's own pipeline (challenge auth, token, api-version)."""
    request = HttpRequest(method, path, json=body) if body is not None else \
        HttpRequest(method, path)
    response = client.send_request(request)
    data = response.json() if response.content else None
    return Reply(response.status_code, data)


def operate(client: KeyClient, key: KeyVaultKey, op: str, alg: str, value: bytes,
            **extra: bytes) -> Reply:
    """POST /keys/{name}/{version}/{op}: always done by the service, never locally."""
    body = {"alg": alg, "value": b64u(value), **{k: b64u(v) for k, v in extra.items()}}
    return rest(client, "POST", f"/keys/{key.name}/{key.properties.version}/{op}", body)


def remote_verify(client: KeyClient, key: KeyVaultKey, alg: str, digest: bytes,
                  signature: bytes) -> bool:
    reply = operate(client, key, "verify", alg, signature, digest=digest)
    assert reply.status == 200, reply.body
    assert set(reply.body) == {"value"}
    result = reply.body["value"]
    assert isinstance(result, bool)
    return result


def wire_key(client: KeyClient, name: str, version: str = "") -> dict[str, Any]:
    reply = rest(client, "GET", f"/keys/{name}/{version}")
    assert reply.status == 200, reply.body
    body: dict[str, Any] = reply.body
    return body


# ---- local cryptography ------------------------------------------------------------------
def digest(alg: str, data: bytes) -> bytes:
    h = hashes.Hash(HASHES[alg]())
    h.update(data)
    return h.finalize()


def public_key(jwk: JsonWebKey) -> PublicKey:
    """The public key from the SDK's JsonWebKey (bytes members)."""
    if jwk.kty in ("RSA", "RSA-HSM"):
        return rsa.RSAPublicNumbers(int.from_bytes(jwk.e, "big"),
                                    int.from_bytes(jwk.n, "big")).public_key()
    curve = CURVES[jwk.crv][0]()
    return ec.EllipticCurvePublicNumbers(int.from_bytes(jwk.x, "big"),
                                         int.from_bytes(jwk.y, "big"), curve).public_key()


def _rsa_padding(alg: str) -> padding.AsymmetricPadding:
    if alg in ("RSA-OAEP", "RSA-OAEP-256"):
        h: hashes.HashAlgorithm = hashes.SHA1() if alg == "RSA-OAEP" else hashes.SHA256()
        return padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None)
    if alg.startswith("PS"):
        h = HASHES[alg]()
        return padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
    assert alg == "RSA1_5" or alg in ("RS256", "RS384", "RS512"), alg
    return padding.PKCS1v15()


def local_verify(pub: PublicKey, alg: str, dgst: bytes, signature: bytes) -> bool:
    prehashed = utils.Prehashed(HASHES[alg]())
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            pub.verify(signature, dgst, _rsa_padding(alg), prehashed)
        else:
            size = len(signature) // 2
            assert size == CURVES[curve_of(pub)][1], "ECDSA signature is not raw r||s"
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            pub.verify(utils.encode_dss_signature(r, s), dgst, ec.ECDSA(prehashed))
    except InvalidSignature:
        return False
    return True


def local_sign(key: PrivateKey, alg: str, dgst: bytes) -> bytes:
    prehashed = utils.Prehashed(HASHES[alg]())
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(dgst, _rsa_padding(alg), prehashed)
    r, s = utils.decode_dss_signature(key.sign(dgst, ec.ECDSA(prehashed)))
    size = CURVES[curve_of(key)][1]
    return uint(r, size) + uint(s, size)


def local_encrypt(pub: PublicKey, alg: str, plaintext: bytes) -> bytes:
    assert isinstance(pub, rsa.RSAPublicKey)
    return pub.encrypt(plaintext, _rsa_padding(alg))


def local_decrypt(key: PrivateKey, alg: str, ciphertext: bytes) -> bytes:
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.decrypt(ciphertext, _rsa_padding(alg))


def curve_of(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    return next(name for name, (cls, _, _) in CURVES.items() if key.curve.name == cls.name)


def max_plaintext(pub: PublicKey, alg: str) -> int:
    assert isinstance(pub, rsa.RSAPublicKey)
    return pub.key_size // 8 - OVERHEAD[alg]


def private_jwk(key: PrivateKey, *, crt: bool = True) -> dict[str, str]:
    """A private JWK in wire form (base64url without padding); `crt=False` keeps only n, e, d."""
    if isinstance(key, rsa.RSAPrivateKey):
        pn = key.private_numbers()
        jwk = {"kty": "RSA", "n": b64u(uint(pn.public_numbers.n)),
               "e": b64u(uint(pn.public_numbers.e)), "d": b64u(uint(pn.d))}
        if crt:
            jwk.update(p=b64u(uint(pn.p)), q=b64u(uint(pn.q)), dp=b64u(uint(pn.dmp1)),
                       dq=b64u(uint(pn.dmq1)), qi=b64u(uint(pn.iqmp)))
        return jwk
    crv = curve_of(key)
    size = CURVES[crv][1]
    en = key.private_numbers()
    return {"kty": "EC", "crv": crv, "x": b64u(uint(en.public_numbers.x, size)),
            "y": b64u(uint(en.public_numbers.y, size)), "d": b64u(uint(en.private_value, size))}


def sdk_jwk(key: PrivateKey, *, crt: bool = True, **extra: Any) -> JsonWebKey:
    """The same JWK as the SDK's model (bytes members)."""
    fields: dict[str, Any] = {}
    for k, v in private_jwk(key, crt=crt).items():
        fields[k] = v if k in ("kty", "crv") else b64u_decode(v)
    return JsonWebKey(**fields, **extra)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
