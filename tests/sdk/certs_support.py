"""Helpers shared by the Certificates SDK tests: clients, the local half of every X.509 check
(pyca/cryptography), a certificate authority made in the test, PFX/PEM files to import, and
`openssl verify` for chains.
"""

from __future__ import annotations

import base64
import calendar
import datetime as dt
import ipaddress
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.certificates import CertificateClient, KeyVaultCertificate
from azure.keyvault.secrets import KeyVaultSecret
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.server import DevServer

POLL = {"_polling_interval": 0.1}
PKCS12 = "application/x-pkcs12"
PEM = "application/x-pem-file"
UPN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH.dotted_string  # 1.3.6.1.5.5.7.3.1
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string  # 1.3.6.1.5.5.7.3.2
CODE_SIGNING = ExtendedKeyUsageOID.CODE_SIGNING.dotted_string  # 1.3.6.1.5.5.7.3.3

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521",
               "secp256k1": "P-256K"}
CURVES = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}

# Azure's subject attribute names (as in a policy's subject) → X.509 attribute OIDs.
DN = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME,
      "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "L": NameOID.LOCALITY_NAME,
      "S": NameOID.STATE_OR_PROVINCE_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME,
      "C": NameOID.COUNTRY_NAME, "E": NameOID.EMAIL_ADDRESS}

# X.509 KeyUsage attribute → Azure's KeyUsageType name
KEY_USAGE = {"digital_signature": "digitalSignature", "content_commitment": "nonRepudiation",
             "key_encipherment": "keyEncipherment", "data_encipherment": "dataEncipherment",
             "key_agreement": "keyAgreement", "key_cert_sign": "keyCertSign",
             "crl_sign": "cRLSign"}


def cert_client(server: DevServer, credential: Any, vault: str | None = None
                ) -> CertificateClient:
    if vault is None:
        return CertificateClient(server.url, credential, verify_challenge_resource=False)
    return CertificateClient(server.vault_url(vault), credential)


def refused(exc: pytest.ExceptionInfo[HttpResponseError]) -> tuple[int | None, str | None]:
    """(status, error code) of an SDK error."""
    err = exc.value.response.json()["error"]
    return exc.value.status_code, err["code"]


# ---- reading certificates --------------------------------------------------------------------
def cer(certificate: KeyVaultCertificate) -> x509.Certificate:
    assert certificate.cer is not None
    return x509.load_der_x509_certificate(bytes(certificate.cer))


def name_of(subject: str) -> list[tuple[x509.ObjectIdentifier, str]]:
    """Azure's DN text ("CN=a, O=b") as (OID, value) pairs, in order."""
    pairs = []
    for part in re.split(r",\s*", subject):
        k, _, v = part.partition("=")
        pairs.append((DN[k.strip().upper()], v.strip()))
    return pairs


def subject_pairs(cert: x509.Certificate | x509.CertificateSigningRequest
                  ) -> list[tuple[x509.ObjectIdentifier, str]]:
    """The subject in the order Azure's DN text names it: the text is an RFC 4514 string,
    which lists the relative names last-to-first (the encoded sequence holds "C" first)."""
    return [(a.oid, str(a.value)) for a in reversed(list(cert.subject))]


@dataclass(frozen=True)
class Sans:
    dns: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    upns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()


def _der_utf8(value: bytes) -> str:
    """An otherName value: [0] EXPLICIT UTF8String (or the bare UTF8String)."""
    if value[0] == 0xA0:
        value = value[2:] if value[1] < 0x80 else value[2 + (value[1] & 0x7F):]
    assert value[0] == 0x0C, value.hex()
    length, start = value[1], 2
    if length & 0x80:
        n = length & 0x7F
        length, start = int.from_bytes(value[2:2 + n], "big"), 2 + n
    return value[start:start + length].decode()


def sans_of(cert: x509.Certificate | x509.CertificateSigningRequest) -> Sans:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return Sans()
    upns = tuple(_der_utf8(o.value) for o in ext.get_values_for_type(x509.OtherName)
                 if o.type_id == UPN_OID)
    return Sans(dns=tuple(ext.get_values_for_type(x509.DNSName)),
                emails=tuple(ext.get_values_for_type(x509.RFC822Name)), upns=upns,
                ips=tuple(str(i) for i in ext.get_values_for_type(x509.IPAddress)))


def key_usage_of(cert: x509.Certificate) -> set[str]:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return set()
    names = {azure for attr, azure in KEY_USAGE.items() if getattr(ku, attr)}
    if ku.key_agreement:
        if ku.encipher_only:
            names.add("encipherOnly")
        if ku.decipher_only:
            names.add("decipherOnly")
    return names


def ekus_of(cert: x509.Certificate) -> list[str]:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []
    return [o.dotted_string for o in eku]


def add_months(when: dt.datetime, months: int) -> dt.datetime:
    month = when.month - 1 + months
    year, month = when.year + month // 12, month % 12 + 1
    day = min(when.day, calendar.monthrange(year, month)[1])
    return when.replace(year=year, month=month, day=day)


def assert_validity_months(cert: x509.Certificate, months: int) -> None:
    """notAfter is `months` calendar months after notBefore (within a day: issuers may
    back-date notBefore by a few minutes)."""
    expected = add_months(cert.not_valid_before_utc, months)
    assert abs(cert.not_valid_after_utc - expected) <= dt.timedelta(days=1), (
        cert.not_valid_before_utc, cert.not_valid_after_utc, months)


def key_description(pub: Any) -> tuple[str, int | str]:
    if isinstance(pub, rsa.RSAPublicKey):
        return "RSA", pub.key_size
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    return "EC", CURVE_NAMES[pub.curve.name]


def same_public(a: Any, b: Any) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(a.public_bytes(serialization.Encoding.DER, fmt)
                == b.public_bytes(serialization.Encoding.DER, fmt))


def sha1(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA1())  # noqa: S303 - x5t is SHA-1 by definition


# ---- what a certificate's secret holds ---------------------------------------------------------
@dataclass
class Material:
    key: PrivateKey | None
    cert: x509.Certificate | None
    chain: list[x509.Certificate]


def parse_pem(text: str) -> Material:
    blocks = re.findall(r"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", text, re.S)
    key: Any = None
    for m in re.finditer(r"-----BEGIN ([A-Z ]*PRIVATE KEY)-----.+?-----END \1-----", text, re.S):
        assert key is None, "more than one private key"
        key = serialization.load_pem_private_key(m.group(0).encode(), None)
    certs = x509.load_pem_x509_certificates(text.encode()) if "CERTIFICATE" in blocks else []
    return Material(key, certs[0] if certs else None, list(certs[1:]))


def parse_pfx(data: bytes, password: bytes | None = None) -> Material:
    p = pkcs12.load_pkcs12(data, password)
    key: Any = p.key
    certs = [c.certificate for c in p.additional_certs]
    if p.cert is None and key is None and certs:
        # no key to pair the leaf with: it is the first certificate of the bag
        return Material(None, certs[0], certs[1:])
    return Material(key, p.cert.certificate if p.cert else None, certs)


def secret_material(secret: KeyVaultSecret) -> Material:
    assert secret.value is not None
    if secret.properties.content_type == PEM:
        return parse_pem(secret.value)
    assert secret.properties.content_type == PKCS12, secret.properties.content_type
    return parse_pfx(base64.b64decode(secret.value, validate=True))


# ---- a certificate authority made in the test --------------------------------------------------
@dataclass
class Authority:
    key: PrivateKey
    cert: x509.Certificate

    @classmethod
    def make(cls, name: str = "Test Root", parent: Authority | None = None) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        issuer = parent.cert.subject if parent else subject
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(days=1))
                   .not_valid_after(now + dt.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                   .add_extension(x509.KeyUsage(
                       digital_signature=True, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                       crl_sign=True, encipher_only=False, decipher_only=False), True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                                  False))
        signer = parent.key if parent else key
        return cls(key, builder.sign(signer, hashes.SHA256()))

    def issue(self, public: Any, subject: x509.Name, *, days: int = 365,
              extensions: Sequence[x509.ExtensionType] = (),
              now: dt.datetime | None = None) -> x509.Certificate:
        now = now or dt.datetime.now(dt.UTC)
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(self.cert.subject).public_key(public)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self.key.public_key()), False))
        for ext in extensions:
            builder = builder.add_extension(ext, False)
        return builder.sign(self.key, hashes.SHA256())

    def sign_csr(self, csr: x509.CertificateSigningRequest, days: int = 365,
                 now: dt.datetime | None = None) -> x509.Certificate:
        assert csr.is_signature_valid
        extensions = [e.value for e in csr.extensions
                      if isinstance(e.value, x509.SubjectAlternativeName | x509.ExtendedKeyUsage)]
        return self.issue(csr.public_key(), csr.subject, days=days, extensions=extensions,
                          now=now)


def cn(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def leaf(ca: Authority, common_name: str, key: PrivateKey | None = None,
         dns: Sequence[str] = ()) -> tuple[PrivateKey, x509.Certificate]:
    key = key or rsa.generate_private_key(65537, 2048)
    extensions: list[x509.ExtensionType] = []
    if dns:
        extensions.append(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]))
    return key, ca.issue(key.public_key(), cn(common_name), extensions=extensions)


def self_signed(common_name: str, key: PrivateKey | None = None) -> tuple[PrivateKey,
                                                                           x509.Certificate]:
    key = key or rsa.generate_private_key(65537, 2048)
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(cn(common_name)).issuer_name(cn(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365)).sign(key, hashes.SHA256()))
    return key, cert


def to_pfx(key: PrivateKey | None, cert: x509.Certificate, chain: Sequence[x509.Certificate] = (),
           password: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password
        else serialization.NoEncryption())
    return pkcs12.serialize_key_and_certificates(b"test", key, cert, list(chain) or None, enc)


def to_pem(key: PrivateKey | None, cert: x509.Certificate,
           chain: Sequence[x509.Certificate] = ()) -> bytes:
    out = b""
    if key is not None:
        out += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    for c in (cert, *chain):
        out += c.public_bytes(serialization.Encoding.PEM)
    return out


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def openssl_verify(tmp: Path, root_pem: bytes, leaf_cert: x509.Certificate,
                   untrusted: Sequence[x509.Certificate] = ()) -> subprocess.CompletedProcess[str]:
    """`openssl verify` of the leaf against `root_pem` alone (no system roots)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "root.pem").write_bytes(root_pem)
    (tmp / "leaf.pem").write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM))
    args = ["openssl", "verify", "-no-CAfile", "-no-CApath", "-CAfile", str(tmp / "root.pem")]
    if untrusted:
        (tmp / "chain.pem").write_bytes(b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in untrusted))
        args += ["-untrusted", str(tmp / "chain.pem")]
    return subprocess.run([*args, str(tmp / "leaf.pem")], capture_output=True, text=True,
                          timeout=30)


def ip(text: str) -> str:
    return str(ipaddress.ip_address(text))
