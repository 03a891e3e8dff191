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

Recovery into a new pool: pool A activated by a download (three certificates, quorum 2);
pool B, new, publishes its exchange key (`GET /securitydomain/upload`); the restore blob
is built here with independent code from A's file and two of the three private keys (as
`az keyvault security-domain restore-blob` does) and uploaded to B, which becomes Active,
its upload status Success, and its domain secret A's (B's domain downloaded with new
certificates and opened here). Refused with 400, each leaving B not activated: a blob for
another pool's exchange key, a damaged blob, data that does not open, no exchange key
yet; with 409: an upload or an exchange key asked of an activated pool. Who may (the
administrator only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
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
from cryptography.x509 import load_der_x509_certificate

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


# ---- recovery into a new pool -------------------------------------------------------------
def jwe_encrypt(cek: bytes, header: dict[str, str], plaintext: bytes,
                encrypted_key: bytes = b"") -> str:
    """A compact A256CBC-HS512 JWE (RFC 7518 §5.2.5)."""
    protected = base64.urlsafe_b64encode(json.dumps(
        {**header, "enc": "A256CBC-HS512"}).encode()).rstrip(b"=").decode()
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    e = Cipher(algorithms.AES(cek[32:]), modes.CBC(iv)).encryptor()
    ct = e.update(padder.update(plaintext) + padder.finalize()) + e.finalize()
    aad = protected.encode()
    tag = hmac.new(cek[:32], aad + iv + ct + struct.pack(">Q", len(aad) * 8),
                   hashlib.sha512).digest()[:32]
    return ".".join([protected, *(base64.urlsafe_b64encode(p).rstrip(b"=").decode()
                                  for p in (encrypted_key, iv, ct, tag))])


def transfer_certificate(url: str) -> Any:
    """The pool's exchange certificate, from `GET /securitydomain/upload`."""
    r = send(url, "GET", "/securitydomain/upload")
    assert r.status_code == 200, r.text()
    body = r.json()
    assert body["key_format"] == "jwk"
    jwk = json.loads(body["transfer_key"])  # a JSON string, as the Azure CLI reads it
    assert jwk["kty"] == "RSA" and jwk["alg"] == "RSA-OAEP-256"
    cert = load_der_x509_certificate(base64.b64decode(jwk["x5c"][0]))
    numbers = cert.public_key().public_numbers()
    assert int.from_bytes(b64u_decode(jwk["n"]), "big") == numbers.n
    assert jwk["x5t#S256"] == x5t_s256(cert)
    return cert


def restore_blob(document: dict[str, Any], pairs: Any, exchange: Any) -> dict[str, Any]:
    """What `az keyvault security-domain restore-blob` makes: the file's data opened with
    the master key the shares of `pairs` give, encrypted again under a new random master
    key, which is wrapped to the exchange certificate."""
    by_thumbprint = {s["x5t_256"]: s["enc_key"] for s in document["SharedKeys"]["enc_shares"]}
    old = recombine([share_of(by_thumbprint[x5t_s256(c)], k) for k, c in pairs])
    new = os.urandom(32)
    data = []
    for item in document["EncData"]["data"]:
        plaintext = jwe_decrypt(item["compact_jwe"], kdf(old, item["tag"]))
        assert plaintext is not None
        data.append({"compact_jwe": jwe_encrypt(kdf(new, item["tag"]),
                                                {"alg": "dir", "kid": item["tag"]}, plaintext),
                     "tag": item["tag"]})
    cek = os.urandom(64)
    wrapped = exchange.public_key().encrypt(cek, asym.OAEP(
        mgf=asym.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    return {"EncData": {"data": data, "kdf": "sp108_kdf"},
            "WrappedKey": {"enc_key": jwe_encrypt(cek, {"alg": "RSA-OAEP-256",
                                                        "kid": "not used"}, new, wrapped),
                           "x5t_256": x5t_s256(exchange)}}


def domain_secret(url: str, pairs: Any) -> bytes:
    """The pool's domain secret: its domain downloaded with `pairs`' certificates and
    opened here."""
    r = send(url, "POST", "/securitydomain/download",
             download_body([c for _, c in pairs], required=2))
    assert r.status_code == 202, r.text()
    document = json.loads(r.json()["value"])
    by_thumbprint = {s["x5t_256"]: s["enc_key"] for s in document["SharedKeys"]["enc_shares"]}
    master = recombine([share_of(by_thumbprint[x5t_s256(c)], k) for k, c in pairs[:2]])
    (payload,) = open_domain(document, master)
    assert payload is not None
    return base64.b64decode(json.loads(payload)["secret"])


def upload(url: str, blob: Any, credential: Any = None) -> Any:
    value = blob if isinstance(blob, str) else json.dumps(blob)
    return send(url, "POST", "/securitydomain/upload", {"value": value},
                credential=credential)


def test_recovery_into_a_new_pool(server: DevServer, deployment: Deployment,
                                  pool: str) -> None:
    a = pool
    document = json.loads(send(a, "POST", "/securitydomain/download",
                               download_body(required=2)).json()["value"])
    pairs = wrapping_keys()
    b = make_pool(server, deployment, deployment.dev_principal.object_id)
    client(b).create_role_assignment("/", DEFINITION_ID + CRYPTO_USER,
                                     deployment.dev_principal.object_id)
    assert activation_status(server, b) == "NotActivated"
    status = send(b, "GET", "/securitydomain/upload/pending").json()
    assert status["status"] == "Failed" and "No security domain upload" in \
        status["status_details"]
    # Without an exchange key yet, nothing can be uploaded.
    r = upload(b, restore_blob(document, pairs[:2], pairs[0][1]))
    assert r.status_code == 400 and "no exchange key" in r.json()["error"]["message"]

    exchange = transfer_certificate(b)
    assert x5t_s256(transfer_certificate(b)) == x5t_s256(exchange)  # one per pool
    other = make_pool(server, deployment, deployment.dev_principal.object_id)
    foreign = transfer_certificate(other)
    assert x5t_s256(foreign) != x5t_s256(exchange)

    good = restore_blob(document, [pairs[0], pairs[2]], exchange)
    damaged_key = json.loads(json.dumps(good))
    parts = damaged_key["WrappedKey"]["enc_key"].split(".")
    parts[1] = parts[1][:10] + ("A" if parts[1][10] != "A" else "B") + parts[1][11:]
    damaged_key["WrappedKey"]["enc_key"] = ".".join(parts)
    damaged_data = json.loads(json.dumps(good))
    item = damaged_data["EncData"]["data"][0]
    parts = item["compact_jwe"].split(".")
    parts[4] = parts[4][:5] + ("A" if parts[4][5] != "A" else "B") + parts[4][6:]
    item["compact_jwe"] = ".".join(parts)
    # The data under another master key than the one wrapped: it does not open.
    mismatched = restore_blob(document, pairs[1:], exchange)
    mismatched["WrappedKey"] = good["WrappedKey"]
    # A blob whose data holds no domain secret.
    empty = {"EncData": {"data": [], "kdf": "sp108_kdf"}, "WrappedKey": good["WrappedKey"]}
    wrong_tag = json.loads(json.dumps(good))
    wrong_tag["EncData"]["data"][0]["tag"] = "other"
    cases: list[tuple[Any, str]] = [
        (restore_blob(document, pairs[:2], foreign), "not made for this managed HSM's"),
        (damaged_key, "WrappedKey is damaged"),
        (damaged_data, "does not open"),
        (mismatched, "does not open"),
        (wrong_tag, "does not open"),
        (empty, "holds no 'pool-secret'"),
        ("not json", "not JSON"),
        ({"EncData": good["EncData"]}, "no WrappedKey"),
    ]
    for blob, words in cases:
        r = upload(b, blob)
        assert r.status_code == 400, (words, r.text())
        error = r.json()["error"]
        assert error["code"] == "BadParameter" and words in error["message"], \
            (words, error["message"])
        status = send(b, "GET", "/securitydomain/upload/pending").json()
        assert status == {"status": "Failed", "status_details": error["message"]}
        assert activation_status(server, b) == "NotActivated"
    r = send(b, "POST", "/securitydomain/upload", {"values": "x"})
    assert r.status_code == 400, r.text()

    r = upload(b, good)
    assert r.status_code == 202, r.text()
    assert r.json()["status"] == "Success"
    assert r.headers["Azure-AsyncOperation"] == \
        f"{b.rstrip('/')}/securitydomain/upload/pending?api-version=7.5"
    assert send(b, "GET", "/securitydomain/upload/pending").json()["status"] == "Success"
    assert activation_status(server, b) == "Active"
    kc = KeyClient(b, ManagedIdentityCredential())
    assert kc.create_rsa_key("restored", hardware_protected=True).key_type == "RSA-HSM"
    # B's domain secret is A's: both downloaded again with new certificates and opened.
    fresh = wrapping_keys(4)
    assert domain_secret(b, list(fresh[:3])) == domain_secret(a, list(fresh[1:]))

    # An activated pool takes no upload and publishes no exchange key (409), whoever
    # made it Active.
    for url in (a, b):
        r = upload(url, good)
        assert (r.status_code, r.json()["error"]["code"]) == (409, "Conflict"), r.text()
        assert "already activated" in r.json()["error"]["message"]
        r = send(url, "GET", "/securitydomain/upload")
        assert r.status_code == 409, r.text()
    assert send(a, "GET", "/securitydomain/upload/pending").json()["status"] == "Failed"
    assert send(b, "GET", "/securitydomain/upload/pending").json()["status"] == "Success"


def test_only_the_administrator_restores(server: DevServer, pool: str) -> None:
    oid, credential = new_principal(server)
    client(pool).create_role_assignment("/", DEFINITION_ID + CRYPTO_USER, oid)
    for method, path, body in (("GET", "/securitydomain/upload", None),
                               ("POST", "/securitydomain/upload", {"value": "{}"}),
                               ("GET", "/securitydomain/upload/pending", None)):
        r = send(pool, method, path, body, credential=credential)
        assert r.status_code == 403, (path, r.text())
        assert r.json()["error"]["code"] == "Forbidden"
    assert activation_status(server, pool) == "NotActivated"
