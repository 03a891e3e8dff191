"""Secure key release from a Premium vault, through azure-keyvault-keys: exportable HSM
keys with a release policy, released on attestation tokens of the dev server's dev
attestation authority (`okv attestation issue`). The released object is checked by a
verifier written here (the JWS signature and its certificate chain), the released key
unwrapped here with `cryptography` alone and checked to be the vault's key; and every
refusal: a claim the policy does not accept, another authority, an expired, unsigned or
forged token, a key that is not exportable, and the rules on exportable keys and their
policies."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import (
    KeyClient,
    KeyExportEncryptionAlgorithm,
    KeyReleasePolicy,
    KeyVaultKey,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from openkeyvault.access.dev_attestation import DEV_ISSUER, DevAttestationAuthority
from openkeyvault.ops.clock import ManualClock, deployment_clock
from tests.sdk.clients import unique
from tests.sdk.keys_support import (
    digest,
    environment,
    local_sign,
    local_verify,
    operate,
    remote_verify,
)
from tests.sdk.premium_support import key_client, premium_vault
from tests.support.server import DevServer

pytestmark = pytest.mark.usefixtures("module_env", "sdk_env", "resolve_localhost")

CLAIMS = {"x-ms-isolation-tee": {"x-ms-attestation-type": "sevsnpvm",
                                 "x-ms-compliance-status": "azure-compliant-cvm"}}
POLICY = {"version": "1.0.0", "anyOf": [{"authority": DEV_ISSUER, "allOf": [
    {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
    {"claim": "x-ms-isolation-tee.x-ms-compliance-status", "equals": "azure-compliant-cvm"},
]}]}
OAEP_HASH = {"CKM_RSA_AES_KEY_WRAP": hashes.SHA1, "RSA_AES_KEY_WRAP_256": hashes.SHA256,
             "RSA_AES_KEY_WRAP_384": hashes.SHA384}
RUNTIME = rsa.generate_private_key(65537, 2048)  # the confidential workload's key


@pytest.fixture(scope="module")
def module_env(server: DevServer) -> Iterator[dict[str, str]]:
    yield from environment(server)


@pytest.fixture(scope="module")
def premium(server: DevServer, module_env: dict[str, str]) -> str:
    return premium_vault(server, "skr")


@pytest.fixture
def kc(server: DevServer, premium: str) -> KeyClient:
    return key_client(server, premium)


@pytest.fixture(scope="module")
def runtime_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runtime") / "runtime.pem"
    path.write_bytes(RUNTIME.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def token(server: DevServer, runtime_pem: Path, claims: dict[str, Any] | None = None,
          authority: DevAttestationAuthority | None = None) -> str:
    """An attestation token of the dev authority (or `authority`) for the runtime key."""
    issuer = authority or DevAttestationAuthority(
        server.data_dir, deployment_clock(server.data_dir, dev=True))
    return issuer.issue(CLAIMS if claims is None else claims, runtime_pem.read_bytes())


def policy(document: dict[str, Any] | None = None, immutable: bool = False) -> KeyReleasePolicy:
    return KeyReleasePolicy(json.dumps(document or POLICY).encode(), immutable=immutable)


def refused(e: pytest.ExceptionInfo[HttpResponseError]) -> tuple[int, str, str]:
    err = e.value.response.json()["error"]
    return e.value.status_code, err["code"], err["message"]


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verified(jws: str) -> tuple[dict[str, Any], x509.Certificate]:
    """The payload of a released key's JWS, its signature checked with the first certificate
    of its `x5c` chain, and that certificate with the chain's root (an independent
    verifier: cryptography only)."""
    header_b64, payload_b64, signature_b64 = jws.split(".")
    header = json.loads(b64url_decode(header_b64))
    assert header["alg"] == "ES384"
    leaf, root = (x509.load_der_x509_certificate(base64.b64decode(c)) for c in header["x5c"])
    assert header["x5t#S256"] == base64.urlsafe_b64encode(
        leaf.fingerprint(hashes.SHA256())).rstrip(b"=").decode()
    signature = b64url_decode(signature_b64)
    leaf_key = leaf.public_key()
    assert isinstance(leaf_key, ec.EllipticCurvePublicKey) and len(signature) == 96
    leaf_key.verify(utils.encode_dss_signature(int.from_bytes(signature[:48], "big"),
                                               int.from_bytes(signature[48:], "big")),
                    f"{header_b64}.{payload_b64}".encode(), ec.ECDSA(hashes.SHA384()))
    leaf.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    return json.loads(b64url_decode(payload_b64)), root


def unwrap_released(key_hsm: str, enc: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """The released key: the AES key decrypted with the runtime key (RSA-OAEP of `enc`),
    then the PKCS#8 key unwrapped (AES key wrap with padding). A token may pad the key
    with zero bytes before it wraps it: the key is the first DER object."""
    blob = json.loads(b64url_decode(key_hsm))
    assert blob["header"] == {"kid": runtime_kid(), "alg": "dir", "enc": enc}
    ciphertext = b64url_decode(blob["ciphertext"])
    h = OAEP_HASH[enc]()
    aes = RUNTIME.decrypt(ciphertext[:256], padding.OAEP(mgf=padding.MGF1(h), algorithm=h,
                                                         label=None))
    der = keywrap.aes_key_unwrap_with_padding(aes, ciphertext[256:])
    n = der[1]
    end = 2 + n if n < 0x80 else 2 + (n & 0x7F) + int.from_bytes(der[2:2 + (n & 0x7F)], "big")
    assert der[end:] == bytes(len(der) - end)
    key = serialization.load_der_private_key(der[:end], None)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return key


def runtime_kid() -> str:
    """The kid the dev authority gives the runtime key (its JWK thumbprint)."""
    from openkeyvault.access.dev_attestation import runtime_jwk

    return str(runtime_jwk(RUNTIME.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))["kid"])


def signs_alike(kc: KeyClient, key: KeyVaultKey,
                released: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
    """The released key signs what the vault's key verifies, and the other way round."""
    alg = "PS256" if isinstance(released, rsa.RSAPrivateKey) else "ES384"
    dg = digest(alg, b"released")
    assert remote_verify(kc, key, alg, dg, local_sign(released, alg, dg)) is True
    reply = operate(kc, key, "sign", alg, dg)
    assert local_verify(released.public_key(), alg, dg, reply.value())


@pytest.mark.parametrize("enc", [KeyExportEncryptionAlgorithm.ckm_rsa_aes_key_wrap,
                                 KeyExportEncryptionAlgorithm.rsa_aes_key_wrap_256,
                                 KeyExportEncryptionAlgorithm.rsa_aes_key_wrap_384])
def test_release_an_rsa_hsm_key(kc: KeyClient, server: DevServer, runtime_pem: Path,
                                enc: KeyExportEncryptionAlgorithm) -> None:
    name = unique("skr")
    key = kc.create_rsa_key(name, size=2048, hardware_protected=True, exportable=True,
                            release_policy=policy())
    assert key.properties.exportable is True
    stored = key.properties.release_policy
    assert stored is not None and stored.immutable is False
    assert stored.content_type == "application/json; charset=utf-8"
    assert json.loads(stored.encoded_policy) == POLICY
    nonce = uuid.uuid4().hex
    result = kc.release_key(name, token(server, runtime_pem), version=key.properties.version,
                            algorithm=enc, nonce=nonce)
    payload, root = verified(result.value)
    assert payload["request"] == {"api-version": payload["request"]["api-version"],
                                  "enc": str(enc.value), "kid": key.id, "nonce": nonce}
    released_key = payload["response"]["key"]
    assert released_key["attributes"]["exportable"] is True
    assert released_key["release_policy"]["data"] == \
        base64.urlsafe_b64encode(stored.encoded_policy).rstrip(b"=").decode()
    jwk = released_key["key"]
    assert (jwk["kid"], jwk["kty"], jwk["n"]) == (
        key.id, "RSA", base64.urlsafe_b64encode(key.key.n).rstrip(b"=").decode())
    released = unwrap_released(jwk["key_hsm"], str(enc.value))
    assert isinstance(released, rsa.RSAPrivateKey)
    assert released.public_key().public_numbers().n == int.from_bytes(key.key.n, "big")
    signs_alike(kc, key, released)
    # The chain ends at the deployment's published attestation root.
    published = server.okv("attestation", "root")
    assert published.returncode == 0, published.stderr
    assert x509.load_pem_x509_certificate(published.stdout.encode()) == root


def test_release_an_ec_hsm_key_versionless_by_the_cli_token(kc: KeyClient, server: DevServer,
                                                            runtime_pem: Path) -> None:
    name = unique("skre")
    key = kc.create_ec_key(name, curve="P-384", hardware_protected=True, exportable=True,
                           release_policy=policy())
    issued = server.okv("attestation", "issue", "--runtime-key", str(runtime_pem),
                        "--claim", "x-ms-isolation-tee=" + json.dumps(CLAIMS[
                            "x-ms-isolation-tee"]))
    assert issued.returncode == 0, issued.stderr
    result = kc.release_key(name, issued.stdout.strip())  # the latest version
    payload, _ = verified(result.value)
    jwk = payload["response"]["key"]["key"]
    assert (jwk["kid"], jwk["kty"], jwk["crv"]) == (key.id, "EC", "P-384")
    assert payload["request"]["enc"] == "CKM_RSA_AES_KEY_WRAP"
    assert "nonce" not in payload["request"]
    released = unwrap_released(jwk["key_hsm"], "CKM_RSA_AES_KEY_WRAP")
    assert isinstance(released, ec.EllipticCurvePrivateKey)
    signs_alike(kc, key, released)


def test_rotation_and_restore_keep_a_key_releasable(kc: KeyClient, server: DevServer,
                                                    runtime_pem: Path) -> None:
    name = unique("skrr")
    kc.create_rsa_key(name, size=2048, hardware_protected=True, exportable=True,
                      release_policy=policy())
    rotated = kc.rotate_key(name)
    assert rotated.properties.exportable is True
    assert json.loads(rotated.properties.release_policy.encoded_policy) == POLICY
    blob = kc.backup_key(name)
    kc.begin_delete_key(name).wait()
    kc.purge_deleted_key(name)
    restored = kc.restore_key_backup(blob)
    assert restored.properties.exportable is True
    payload, _ = verified(kc.release_key(name, token(server, runtime_pem)).value)
    released = unwrap_released(payload["response"]["key"]["key"]["key_hsm"],
                               "CKM_RSA_AES_KEY_WRAP")
    assert isinstance(released, rsa.RSAPrivateKey)
    assert released.public_key().public_numbers().n == int.from_bytes(rotated.key.n, "big")


def test_release_refusals(kc: KeyClient, server: DevServer, runtime_pem: Path,
                          tmp_path: Path) -> None:
    name = unique("skrx")
    kc.create_rsa_key(name, size=2048, hardware_protected=True, exportable=True,
                      release_policy=policy())

    def release(target: str) -> tuple[int, str, str]:
        with pytest.raises(HttpResponseError) as e:
            kc.release_key(name, target)
        return refused(e)

    # A claim the policy does not accept; a claim missing.
    for claims in ({"x-ms-isolation-tee": {**CLAIMS["x-ms-isolation-tee"],
                                           "x-ms-attestation-type": "sgx"}},
                   {"x-ms-isolation-tee": {"x-ms-attestation-type": "sevsnpvm"}}):
        assert release(token(server, runtime_pem, claims)) == (
            403, "Forbidden",
            "The target's attestation token does not satisfy the key release policy.")
    # Another authority's key under the same issuer: not the key the server trusts.
    forger = DevAttestationAuthority(tmp_path)
    status, code, message = release(token(server, runtime_pem, authority=forger))
    assert (status, code) == (400, "BadParameter")
    assert message.startswith("The target's attestation token is not valid")
    # Expired: issued by the right key a day ago, for an hour.
    clock = deployment_clock(server.data_dir, dev=True)
    old = DevAttestationAuthority(server.data_dir, ManualClock(clock.now() - 86_400))
    status, code, message = release(old.issue(CLAIMS, runtime_pem.read_bytes(), 3600))
    assert (status, code) == (400, "BadParameter") and "expired" in message
    # Unsigned (alg none), and a signature taken from another token.
    good = token(server, runtime_pem)
    header, body, signature = good.split(".")
    unsigned = base64.urlsafe_b64encode(json.dumps(
        {"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    for bad in (f"{unsigned}.{body}.", f"{header}.{body}." + signature[::-1], "not a token"):
        status, code, message = release(bad)
        assert (status, code) == (400, "BadParameter"), message
        assert message.startswith("The target's attestation token is not valid")
    # A key that is not exportable.
    plain = unique("skrn")
    kc.create_rsa_key(plain, size=2048, hardware_protected=True)
    with pytest.raises(HttpResponseError) as e:
        kc.release_key(plain, good)
    assert refused(e)[:2] == (400, "BadParameter")
    assert "not exportable" in refused(e)[2]
    # An unknown key wrapping.
    status, code, message = release_raw(kc, name, {"target": good, "enc": "RSA-OAEP"})
    assert (status, code) == (400, "BadParameter") and "enc" in message
    # A policy naming another authority is not satisfied by the dev authority's token.
    other = unique("skro")
    kc.create_rsa_key(other, size=2048, hardware_protected=True, exportable=True,
                      release_policy=policy({**POLICY, "anyOf": [
                          {**POLICY["anyOf"][0], "authority": "https://sharedeus.eus.attest"
                                                               ".azure.net"}]}))
    with pytest.raises(HttpResponseError) as e:
        kc.release_key(other, good)
    assert refused(e)[0] == 403


def release_raw(kc: KeyClient, name: str, body: dict[str, Any]) -> tuple[int, str, str]:
    from tests.sdk.keys_support import rest

    reply = rest(kc, "POST", f"/keys/{name}//release", body)
    err = reply.body["error"]
    return reply.status, err["code"], err["message"]


def test_exportable_key_rules(kc: KeyClient, server: DevServer) -> None:
    def create(**kwargs: Any) -> tuple[int, str, str]:
        with pytest.raises(HttpResponseError) as e:
            kc.create_rsa_key(unique("skrv"), size=2048, **kwargs)
        return refused(e)

    assert create(hardware_protected=True, exportable=True) == (
        400, "BadParameter", "AKV.SKR.1004: Exportable keys must have release policy.")
    assert create(hardware_protected=True, release_policy=policy()) == (
        400, "BadParameter", "AKV.SKR.1005: Non-exportable keys must not have release policy.")
    assert create(exportable=True, release_policy=policy())[2].startswith("AKV.SKR.1006")
    bad = create(hardware_protected=True, exportable=True,
                 release_policy=policy({"version": "1.0.0", "anyOf": [{
                     "authority": DEV_ISSUER,
                     "allOf": [{"claim": "a", "exists": True}]}]}))
    assert bad[:2] == (400, "BadParameter") and "only 'equals'" in bad[2]
    standard = unique("skrstd")[:20]
    assert server.okv("vault", "create", standard).returncode == 0
    with pytest.raises(HttpResponseError) as e:
        key_client(server, standard).create_rsa_key(unique("k"), exportable=True,
                                                    release_policy=policy())
    assert refused(e) == (400, "BadParameter", "AKV.SKR.1001: The exportable attribute is "
                          "only supported with premium vaults and API version >= "
                          "'7.3-preview'.")

    # A mutable policy changes; once immutable it does not; exportable does not change.
    name = unique("skru")
    key = kc.create_rsa_key(name, size=2048, hardware_protected=True, exportable=True,
                            release_policy=policy())
    changed = {**POLICY, "anyOf": [{**POLICY["anyOf"][0], "allOf": POLICY["anyOf"][0][
        "allOf"][:1]}]}
    updated = kc.update_key_properties(name, key.properties.version,
                                       release_policy=policy(changed, immutable=True))
    assert json.loads(updated.properties.release_policy.encoded_policy) == changed
    assert updated.properties.release_policy.immutable is True
    with pytest.raises(HttpResponseError) as e:
        kc.update_key_properties(name, key.properties.version, release_policy=policy())
    assert refused(e) == (400, "BadParameter",
                          "AKV.SKR.1020: Immutable Key Release Policy cannot be modified.")
    reply = rest_patch(kc, name, key.properties.version, {"attributes": {"exportable": False}})
    assert reply[0] == 400 and reply[2].startswith("AKV.SKR.1003")
    # A later version keeps the policy when it gives none.
    again = kc.create_rsa_key(name, size=2048, hardware_protected=True, exportable=True)
    assert json.loads(again.properties.release_policy.encoded_policy) == changed


def rest_patch(kc: KeyClient, name: str, version: str,
               body: dict[str, Any]) -> tuple[int, str, str]:
    from tests.sdk.keys_support import rest

    reply = rest(kc, "PATCH", f"/keys/{name}/{version}", body)
    err = reply.body.get("error", {})
    return reply.status, err.get("code", ""), err.get("message", "")
