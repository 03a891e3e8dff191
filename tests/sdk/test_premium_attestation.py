"""Key attestation of HSM keys in a Premium vault (GET /keys/{name}/{version}/attestation,
api-version 2025-07-01), checked by a verifier written here with `cryptography` alone:
the certificate chain to the attestation root, both ES384 JWS statements, and what they
say of the key, against the token itself. Tampering fails this verifier and
`okv attestation verify`; a software key has no attestation; the root is stable and is
the one `okv attestation root` publishes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.identity import DefaultAzureCredential
from azure.keyvault.keys import KeyClient, KeyVaultKey
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils

from tests.sdk.clients import unique
from tests.sdk.keys_support import b64u, b64u_decode, environment, rest, sdk_jwk, wire_key
from tests.support.okvcli import run
from tests.support.server import DevServer
from tests.support.softhsm import token_objects

pytestmark = pytest.mark.usefixtures("module_env", "sdk_env", "resolve_localhost")

API_VERSION = "2025-07-01"
PROTECTION = ("SENSITIVE", "EXTRACTABLE", "ALWAYS_SENSITIVE", "NEVER_EXTRACTABLE")


@pytest.fixture(scope="module")
def module_env(server: DevServer) -> Iterator[dict[str, str]]:
    yield from environment(server)


@pytest.fixture(scope="module")
def premium(server: DevServer, module_env: dict[str, str]) -> str:
    name = unique("attest")[:20]
    made = server.okv("vault", "create", name, "--sku", "premium")
    assert made.returncode == 0, made.stderr
    return name


@pytest.fixture
def kc(server: DevServer, premium: str) -> KeyClient:
    return KeyClient(server.vault_url(premium), DefaultAzureCredential(),
                     api_version=API_VERSION)


# --- An independent verifier: cryptography only -----------------------------------------


def _jws(value: str, signing: x509.Certificate) -> dict[str, Any]:
    """The claims of base64url(compact JWS), its ES384 signature checked with the signing
    certificate's key (InvalidSignature when it does not verify)."""
    head, payload, signature = b64u_decode(value).decode("ascii").split(".")
    header = json.loads(b64u_decode(head))
    assert header["alg"] == "ES384"
    assert header["x5t#S256"] == b64u(hashlib.sha256(
        signing.public_bytes(serialization.Encoding.DER)).digest())
    raw = b64u_decode(signature)
    assert len(raw) == 96
    public = signing.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(utils.encode_dss_signature(int.from_bytes(raw[:48], "big"),
                                             int.from_bytes(raw[48:], "big")),
                  f"{head}.{payload}".encode("ascii"), ec.ECDSA(hashes.SHA384()))
    claims: dict[str, Any] = json.loads(b64u_decode(payload))
    return claims


def verify_independently(bundle: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any],
                                                           x509.Certificate]:
    """(private key claims, public key claims, root) of a KeyBundle's attestation."""
    attestation = bundle["attributes"]["attestation"]
    assert attestation["version"] == "1.0"
    signing, root = x509.load_pem_x509_certificates(
        b64u_decode(attestation["certificatePemFile"]))
    root.verify_directly_issued_by(root)
    signing.verify_directly_issued_by(root)
    now = dt.datetime.now(dt.UTC)
    for cert, ca in ((root, True), (signing, False)):
        assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is ca
    assert signing.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert root.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value \
        .startswith("OpenKeyVault Attestation Root ")
    assert root.not_valid_after_utc - root.not_valid_before_utc > dt.timedelta(days=19 * 365)
    private = _jws(attestation["privateKeyAttestation"], signing)
    public = _jws(attestation["publicKeyAttestation"], signing)
    return private, public, root


def public_members(bundle: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in bundle["key"].items() if k not in ("kid", "kty", "key_ops")}


def private_ids(server: DevServer) -> dict[str, dict[str, object]]:
    return {str(o["id"]): o for o in token_objects(server.data_dir)
            if o["class"] == "PRIVATE_KEY"}


def attest(kc: KeyClient, key: KeyVaultKey) -> dict[str, Any]:
    reply = rest(kc, "GET", f"/keys/{key.name}/{key.properties.version}/attestation")
    assert reply.status == 200, reply.body
    body: dict[str, Any] = reply.body
    return body


def check_statements(kc: KeyClient, key: KeyVaultKey,
                     bundle: dict[str, Any], token_object: dict[str, object],
                     generated: bool) -> x509.Certificate:
    """The statements of `bundle` describe `key` as the token holds it."""
    assert bundle["key"] == wire_key(kc, key.name, key.properties.version)["key"]
    private, public, root = verify_independently(bundle)
    kid = bundle["key"]["kid"]
    assert kid == key.id
    for claims in (private, public):
        assert claims["version"] == "1.0" and claims["kid"] == kid
        assert claims["kty"] == key.key_type
        assert claims["public"] == public_members(bundle)
        assert claims["keystore"] == "pkcs11"
        assert claims["token"]["label"] == "okv-dev"
        assert claims["token"]["manufacturer"] == "SoftHSM project"
        assert claims["token"]["model"] and claims["token"]["serial"]
        assert abs(claims["iat"] - dt.datetime.now(dt.UTC).timestamp()) < 600
    assert private["key_ops"] == bundle["key"]["key_ops"]
    attributes = private["attributes"]
    assert attributes["sensitive"] is True and attributes["extractable"] is False
    assert attributes["local"] is generated and private["generated_in_hsm"] is generated
    if generated:
        assert attributes["always_sensitive"] is True
        # extractable only until its backup copy was wrapped, in the token, by the backup key
        assert attributes["never_extractable"] is False
    # what the statement says is what the token says of the object
    assert {name: attributes[name.lower()] for name in PROTECTION} == \
        {name: token_object[name] for name in PROTECTION}
    return root


def created(server: DevServer, make: Any) -> tuple[Any, dict[str, object]]:
    """make(), and the one private token object it added."""
    before = set(private_ids(server))
    key = make()
    new = {k: v for k, v in private_ids(server).items() if k not in before}
    assert len(new) == 1, new
    return key, next(iter(new.values()))


# --- The tests ----------------------------------------------------------------------------


def test_generated_rsa_hsm_key(server: DevServer, kc: KeyClient) -> None:
    key, obj = created(server, lambda: kc.create_rsa_key(unique("ar"), size=2048,
                                                         hardware_protected=True))
    bundle = attest(kc, key)
    check_statements(kc, key, bundle, obj, generated=True)
    assert set(public_members(bundle)) == {"n", "e"}


def test_generated_ec_hsm_key_and_the_sdk(server: DevServer, kc: KeyClient) -> None:
    key, obj = created(server, lambda: kc.create_ec_key(unique("ae"), curve="P-384",
                                                        hardware_protected=True))
    bundle = attest(kc, key)
    check_statements(kc, key, bundle, obj, generated=True)
    assert set(public_members(bundle)) == {"crv", "x", "y"}
    # the SDK reads the same attestation (its members decoded from base64url)
    seen = kc.get_key_attestation(key.name, key.properties.version)
    att = seen.properties.attestation
    assert att is not None and att.version == "1.0"
    assert att.certificate_pem_file == b64u_decode(
        bundle["attributes"]["attestation"]["certificatePemFile"])
    assert att.private_key_attestation is not None
    assert att.private_key_attestation.count(b".") == 2
    latest = rest(kc, "GET", f"/keys/{key.name}//attestation")  # no version: the latest
    assert latest.status == 200 and latest.body["key"]["kid"] == key.id


def test_imported_key_is_not_generated_in_the_hsm(server: DevServer, kc: KeyClient) -> None:
    private = rsa.generate_private_key(65537, 2048)
    key, obj = created(server, lambda: kc.import_key(unique("ai"), sdk_jwk(private),
                                                     hardware_protected=True))
    bundle = attest(kc, key)
    check_statements(kc, key, bundle, obj, generated=False)


def _flip(value: str, part: int) -> str:
    """base64url(compact JWS) with one byte of its payload (1) or signature (2) changed."""
    parts = b64u_decode(value).decode("ascii").split(".")
    raw = bytearray(b64u_decode(parts[part]))
    raw[len(raw) // 2] ^= 0x01
    parts[part] = b64u(bytes(raw))
    return b64u(".".join(parts).encode("ascii"))


def test_tampering_fails_both_verifiers(server: DevServer, kc: KeyClient,
                                        tmp_path: Path) -> None:
    key = kc.create_ec_key(unique("at"), curve="P-256", hardware_protected=True)
    bundle = attest(kc, key)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(bundle))
    root_pem = tmp_path / "root.pem"
    root_pem.write_text(server.okv("attestation", "root").stdout)
    ok = run("attestation", "verify", str(good), "--root", str(root_pem))
    assert ok.returncode == 0, ok.stderr
    assert "attestation valid" in ok.stdout and "generated in the HSM: yes" in ok.stdout
    assert "extractable: no" in ok.stdout
    for member in ("privateKeyAttestation", "publicKeyAttestation"):
        for part in (1, 2):
            bad = json.loads(json.dumps(bundle))
            attestation = bad["attributes"]["attestation"]
            attestation[member] = _flip(attestation[member], part)
            with pytest.raises(InvalidSignature):
                verify_independently(bad)
            path = tmp_path / "bad.json"
            path.write_text(json.dumps(bad))
            result = run("attestation", "verify", str(path))
            assert result.returncode == 1, (member, part, result.stdout)
            assert "JWS signature does not verify" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
    # the statement of another key: the kid and public key no longer match the bundle
    other = attest(kc, kc.create_ec_key(unique("at"), curve="P-256", hardware_protected=True))
    swapped = json.loads(json.dumps(bundle))
    swapped["attributes"]["attestation"] = other["attributes"]["attestation"]
    path = tmp_path / "swapped.json"
    path.write_text(json.dumps(swapped))
    result = run("attestation", "verify", str(path))
    assert result.returncode == 1 and "names another key id" in result.stderr
    # another root given
    other_root = tmp_path / "other.pem"
    foreign = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "someone else")])
    now = dt.datetime.now(dt.UTC)
    other_root.write_bytes(
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(foreign.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .sign(foreign, hashes.SHA384()).public_bytes(serialization.Encoding.PEM))
    result = run("attestation", "verify", str(good), "--root", str(other_root))
    assert result.returncode == 1 and "not the one given" in result.stderr
    unusable = run("attestation", "verify", str(tmp_path / "missing.json"))
    assert unusable.returncode == 2


def test_software_key_has_no_attestation(kc: KeyClient) -> None:
    key = kc.create_ec_key(unique("as"), curve="P-256")
    reply = rest(kc, "GET", f"/keys/{key.name}/{key.properties.version}/attestation")
    assert (reply.status, reply.code) == (400, "BadParameter")
    assert "HSM-protected keys only" in reply.body["error"]["message"]
    missing = rest(kc, "GET", f"/keys/{unique('absent')}//attestation")
    assert (missing.status, missing.code) == (404, "KeyNotFound")


def test_the_root_is_stable_and_published(server: DevServer, kc: KeyClient) -> None:
    key = kc.create_rsa_key(unique("ap"), size=2048, hardware_protected=True)
    first, second = attest(kc, key), attest(kc, key)
    pem = first["attributes"]["attestation"]["certificatePemFile"]
    assert second["attributes"]["attestation"]["certificatePemFile"] == pem
    _, _, root = verify_independently(first)
    published = server.okv("attestation", "root")
    assert published.returncode == 0, published.stderr
    assert x509.load_pem_x509_certificate(published.stdout.encode()) == root
    assert published.stdout.encode() == root.public_bytes(serialization.Encoding.PEM)
    # the attestation keys are in the token, and no key version's: never taken as orphans
    labels = [str(o["label"]) for o in token_objects(server.data_dir)]
    for suffix in ("-attestation-root", "-attestation"):  # one pair each: private, public
        assert sum(label.endswith(suffix) for label in labels) == 2, labels


def test_root_before_any_attestation(tmp_path: Path) -> None:
    """A deployment that has attested nothing yet says so (exit 2), as does a directory
    with no deployment."""
    data = tmp_path / "fresh"
    made = run("vault", "create", "fresh-vault", "--data-dir", str(data))
    assert made.returncode == 0, made.stderr
    result = run("attestation", "root", "--data-dir", str(data))
    assert result.returncode == 2 and "no attestation root yet" in result.stderr
    result = run("attestation", "root", "--data-dir", str(tmp_path / "none"))
    assert result.returncode == 2 and "no deployment" in result.stderr
