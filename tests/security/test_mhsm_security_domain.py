"""A managed HSM pool's security domain download and activation, on the real dev server,
through the SDK's pipeline at the pool's own host (KeyClient.send_request: its challenge
authentication; azure-keyvault-securitydomain is exercised by az in
tests/cli/test_azure_cli.py).

Checked: a new pool refuses key operations until activated and the management API says
`NotActivated`; a download with three certificates and quorum 2 answers 202 with the
status URL, the status is then Success, the pool `Active` and its keys usable; the file
read here with independent code (cryptography only): each share decrypts with its own
certificate's private key, any two shares recombine to the same master key, which opens
the domain's data, and one share does not; a second download with other certificates
holds the same domain under a new master key; the refusals (too few or too many
certificates, a quorum out of range, a key that is not RSA 2048+, no certificate), each
leaving the pool not activated; and who may download (the administrator only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import struct
from typing import Any

import pytest
from azure.core.rest import HttpRequest
from azure.identity import ManagedIdentityCredential
from azure.keyvault.keys import KeyClient
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from openkeyvault.deployment import Deployment
from tests.security.test_mhsm_rbac import (
    CRYPTO_USER,
    DEFINITION_ID,
    client,
    make_pool,
    management,
    new_principal,
    refused,
)
from tests.support.securitydomain import (
    certificate,
    download_body,
    wrapping_jwk,
    wrapping_keys,
)
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("sdk_env", "resolve_localhost")

API = {"api-version": "7.5"}


@pytest.fixture
def pool(server: DevServer, deployment: Deployment) -> str:
    """A new pool: the dev identity its administrator and Managed HSM Crypto User."""
    url = make_pool(server, deployment, deployment.dev_principal.object_id)
    client(url).create_role_assignment("/", DEFINITION_ID + CRYPTO_USER,
                                       deployment.dev_principal.object_id)
    return url


def send(url: str, method: str, path: str, body: Any = None, credential: Any = None) -> Any:
    kc = KeyClient(url, credential or ManagedIdentityCredential())
    return kc.send_request(HttpRequest(method, path, params=API, json=body))


def activation_status(server: DevServer, url: str) -> str:
    name = url.split("//")[1].split(".")[0]
    hsm = management(server).managed_hsms.get("rg1", name)
    status = hsm.properties.security_domain_properties.activation_status
    return str(getattr(status, "value", status))


def b64u_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


# ---- reading the file, independently of the server's code -----------------------------
def jwe_decrypt(compact: str, cek: bytes) -> bytes | None:
    """A256CBC-HS512 (RFC 7518 §5.2.5); None when the tag does not verify."""
    header, _, iv, ct, tag = compact.split(".")
    assert json.loads(b64u_decode(header))["enc"] == "A256CBC-HS512"
    iv_b, ct_b = b64u_decode(iv), b64u_decode(ct)
    aad = header.encode()
    mac = hmac.new(cek[:32], aad + iv_b + ct_b + struct.pack(">Q", len(aad) * 8),
                   hashlib.sha512).digest()[:32]
    if not hmac.compare_digest(mac, b64u_decode(tag)):
        return None
    d = Cipher(algorithms.AES(cek[32:]), modes.CBC(iv_b)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(d.update(ct_b) + d.finalize()) + unpadder.finalize()


def share_of(compact: str, key: rsa.RSAPrivateKey) -> bytes:
    header = json.loads(b64u_decode(compact.split(".")[0]))
    assert header["alg"] == "RSA-OAEP-256"
    cek = key.decrypt(b64u_decode(compact.split(".")[1]), asym.OAEP(
        mgf=asym.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    out = jwe_decrypt(compact, cek)
    assert out is not None
    return out


def recombine(shares: list[bytes]) -> bytes:
    """Lagrange interpolation at 0 over GF(257) of shares made of little-endian uint16s
    `x << 9 | y`; the bytes of the result (a value of 256 shows as 0)."""
    points = [[(w >> 9, w & 0x1FF) for (w,) in struct.iter_unpack("<H", s)] for s in shares]
    out = bytearray()
    for column in zip(*points, strict=True):
        secret = 0
        for i, (xi, yi) in enumerate(column):
            num = den = 1
            for j, (xj, _) in enumerate(column):
                if i != j:
                    num, den = num * xj % 257, den * (xj - xi) % 257
            secret = (secret + yi * num * pow(den, -1, 257)) % 257
        out.append(secret % 256)
    return bytes(out)


def kdf(key: bytes, label: str) -> bytes:
    """SP 800-108 counter mode, HMAC-SHA512, 512 bits, empty context."""
    return hmac.new(key, struct.pack(">I", 1) + label.encode() + b"\x00"
                    + struct.pack(">I", 512), hashlib.sha512).digest()


def open_domain(document: dict[str, Any], master: bytes) -> list[bytes | None]:
    return [jwe_decrypt(d["compact_jwe"], kdf(master, d["tag"]))
            for d in document["EncData"]["data"]]


def x5t_s256(cert: Any) -> str:
    der = cert.public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def read(document: dict[str, Any], pairs: Any) -> tuple[bytes, list[bytes]]:
    """(the master key any two shares give, each share), checking every pair agrees."""
    shared = document["SharedKeys"]
    assert shared["key_algorithm"] == "shamir_share"
    by_thumbprint = {s["x5t_256"]: s["enc_key"] for s in shared["enc_shares"]}
    assert len(by_thumbprint) == len(pairs)
    shares = [share_of(by_thumbprint[x5t_s256(cert)], key) for key, cert in pairs]
    masters = {recombine(list(two)) for two in itertools.combinations(shares, 2)}
    assert len(masters) == 1
    return masters.pop(), shares


# ---- the tests -------------------------------------------------------------------------
def test_download_activates_the_pool(server: DevServer, pool: str) -> None:
    kc = KeyClient(pool, ManagedIdentityCredential())
    e = refused(lambda: kc.create_rsa_key("before", hardware_protected=True), 403,
                "Forbidden")
    assert "not activated" in str(e.message)
    assert activation_status(server, pool) == "NotActivated"
    before = send(pool, "GET", "/securitydomain/download/pending").json()
    assert before["status"] == "Failed"

    r = send(pool, "POST", "/securitydomain/download", download_body(required=2))
    assert r.status_code == 202, r.text()
    assert r.headers["Azure-AsyncOperation"] == \
        f"{pool.rstrip('/')}/securitydomain/download/pending?api-version=7.5"
    assert int(r.headers["Retry-After"]) >= 1
    status = send(pool, "GET", "/securitydomain/download/pending").json()
    assert status["status"] == "Success" and status["status_details"]
    assert activation_status(server, pool) == "Active"
    key = kc.create_rsa_key("after", hardware_protected=True)
    assert key.key_type == "RSA-HSM"

    document = json.loads(r.json()["value"])
    assert document["SharedKeys"]["required"] == 2
    assert document["EncData"]["kdf"] == "sp108_kdf"
    pairs = wrapping_keys()
    master, shares = read(document, pairs)
    assert len(master) == 32
    opened = open_domain(document, master)
    assert opened and all(o is not None for o in opened)
    # One share alone interpolates to itself: not the master key, and it opens nothing.
    for one in shares:
        alone = recombine([one])
        assert alone != master
        assert open_domain(document, alone) == [None] * len(opened)
    # A share does not decrypt with another certificate's private key.
    wrong = document["SharedKeys"]["enc_shares"]
    other = next(s for s in wrong if s["x5t_256"] != x5t_s256(pairs[0][1]))
    with pytest.raises(ValueError):
        share_of(other["enc_key"], pairs[0][0])

    # Downloaded again with another set (4 certificates, quorum 3): the same domain under
    # a new master key; three shares recombine it, two do not.
    more = wrapping_keys(4)
    again = send(pool, "POST", "/securitydomain/download",
                 download_body([c for _, c in more], required=3))
    assert again.status_code == 202, again.text()
    document2 = json.loads(again.json()["value"])
    assert document2["SharedKeys"]["required"] == 3
    by_thumbprint = {s["x5t_256"]: s["enc_key"] for s in document2["SharedKeys"]["enc_shares"]}
    shares2 = [share_of(by_thumbprint[x5t_s256(c)], k) for k, c in more]
    masters = {recombine(list(three)) for three in itertools.combinations(shares2, 3)}
    assert len(masters) == 1
    master2 = masters.pop()
    assert master2 != master
    assert open_domain(document2, master2) == opened
    assert recombine(shares2[:2]) != master2
    assert activation_status(server, pool) == "Active"


def _ec_jwk() -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    return wrapping_jwk(certificate(key))


def _small_rsa_jwk() -> dict[str, Any]:
    key = rsa.generate_private_key(65537, 1024)
    jwk = wrapping_jwk(certificate(key))
    return jwk


def test_refusals_leave_the_pool_not_activated(server: DevServer, pool: str) -> None:
    certs = [c for _, c in wrapping_keys()]
    three = download_body(certs)["certificates"]
    eleven = [wrapping_jwk(c) for _, c in wrapping_keys(11)]
    no_x5c = {k: v for k, v in three[0].items() if k != "x5c"}
    wrong_n = {**three[0], "n": three[1]["n"]}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"certificates": three[:2], "required": 2}, "3 to 10 certificates"),
        ({"certificates": eleven, "required": 2}, "3 to 10 certificates"),
        ({"certificates": three, "required": 1}, "quorum"),
        ({"certificates": three, "required": 4}, "quorum"),
        ({"certificates": [_ec_jwk(), *three[1:]], "required": 2}, "kty must be RSA"),
        ({"certificates": [{**_ec_jwk(), "kty": "RSA"}, *three[1:]], "required": 2},
         "not an RSA key"),
        ({"certificates": [_small_rsa_jwk(), *three[1:]], "required": 2}, "1024 bits"),
        ({"certificates": [no_x5c, *three[1:]], "required": 2}, "x5c"),
        ({"certificates": [{**three[0], "x5c": ["bm90IGEgY2VydA=="]}, *three[1:]],
          "required": 2}, "not a base64 DER X.509 certificate"),
        ({"certificates": [wrong_n, *three[1:]], "required": 2}, "'n'"),
        ({"certificates": [three[0], three[0], three[1]], "required": 2}, "distinct"),
        ({"required": 2}, ""),
    ]
    for body, words in cases:
        r = send(pool, "POST", "/securitydomain/download", body)
        assert r.status_code == 400, (words, r.text())
        error = r.json()["error"]
        assert error["code"] == "BadParameter", r.text()
        assert words in error["message"], (words, error["message"])
    assert activation_status(server, pool) == "NotActivated"
    assert send(pool, "GET", "/securitydomain/download/pending").json()["status"] == "Failed"


def test_only_the_administrator_downloads(server: DevServer, deployment: Deployment,
                                          pool: str) -> None:
    oid, credential = new_principal(server)
    # No role at all, then Crypto User (keys, but no security domain action).
    for assign in (False, True):
        if assign:
            client(pool).create_role_assignment("/", DEFINITION_ID + CRYPTO_USER, oid)
        r = send(pool, "POST", "/securitydomain/download", download_body(),
                 credential=credential)
        assert r.status_code == 403, r.text()
        assert r.json()["error"]["code"] == "Forbidden"
        r = send(pool, "GET", "/securitydomain/download/pending", credential=credential)
        assert r.status_code == 403, r.text()
    assert activation_status(server, pool) == "NotActivated"
    # Not activated: even an allowed key reader is refused, after its role is checked.
    r = send(pool, "GET", "/keys", credential=credential)
    assert r.status_code == 403 and "not activated" in r.json()["error"]["message"]
