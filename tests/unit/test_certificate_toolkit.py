"""crypto/certificates.py: the X.509 toolkit of the Certificates API, directly.

Certificates, requests and PFX files made here are read back field by field with
cryptography's parser and checked by the `openssl` command line (verify, req -verify,
pkcs12, x509 -text) as an outside reference. Every refusal checks the exact error type
and that its message never echoes the password or key material.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtensionOID, NameOID, ObjectIdentifier

from openkeyvault.crypto import certificates as certs
from openkeyvault.crypto import pfxscan
from openkeyvault.crypto.certificates import (
    CertificateInputError,
    Loaded,
    X509Request,
    build_certificate,
    build_csr,
    check_chain,
    key_matches,
    key_properties,
    load_any,
    load_pem,
    load_pfx,
    parse_subject,
    thumbprint,
    to_pem,
    to_pfx,
    x509_properties,
)

NOW = dt.datetime(2026, 3, 14, 15, 9, 26, tzinfo=dt.UTC)
PFX_MESSAGE = (
    "The specified PKCS#12 X.509 certificate content can not be read. "
    "Please check if certificate is in valid PKCS#12 format."
)
PASSWORD = "correct horse battery staple"
KEY_USAGES = {
    "digitalSignature": "digital_signature",
    "nonRepudiation": "content_commitment",
    "keyEncipherment": "key_encipherment",
    "dataEncipherment": "data_encipherment",
    "keyAgreement": "key_agreement",
    "keyCertSign": "key_cert_sign",
    "cRLSign": "crl_sign",
    "encipherOnly": "encipher_only",
    "decipherOnly": "decipher_only",
}
EKUS = {
    "1.3.6.1.5.5.7.3.1": "TLS Web Server Authentication",
    "1.3.6.1.5.5.7.3.2": "TLS Web Client Authentication",
    "1.3.6.1.5.5.7.3.3": "Code Signing",
    "1.3.6.1.5.5.7.3.4": "E-mail Protection",
    "1.3.6.1.5.5.7.3.8": "Time Stamping",
    "1.3.6.1.5.5.7.3.9": "OCSP Signing",
    "1.3.6.1.4.1.311.20.2.2": "Microsoft Smartcard Login",
    "1.3.6.1.4.1.311.10.3.12": "1.3.6.1.4.1.311.10.3.12",
    "2.5.29.37.0": "Any Extended Key Usage",
}
KEY_SPECS = ["RSA-2048", "RSA-3072", "RSA-4096", "P-256", "P-384", "P-521", "P-256K"]
CURVE_CLASSES: dict[str, Callable[[], ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
    "P-256K": ec.SECP256K1,
}
EXPECTED_HASH = {
    "RSA-2048": "sha256",
    "RSA-3072": "sha256",
    "RSA-4096": "sha256",
    "P-256": "sha256",
    "P-384": "sha384",
    "P-521": "sha512",
    "P-256K": "sha256",
}

OPENSSL = shutil.which("openssl")
if OPENSSL is None:  # the machine the tests run on has it; fail loudly rather than skip
    raise RuntimeError("these tests need the openssl command line")


def openssl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], input=stdin, capture_output=True, check=False)


_KEYS: dict[str, certs.PrivateKey] = {}


def key_for(spec: str, slot: int = 0) -> certs.PrivateKey:
    """One cached key per (spec, slot): RSA generation is slow."""
    name = f"{spec}#{slot}"
    if name not in _KEYS:
        if spec.startswith("RSA-"):
            _KEYS[name] = rsa.generate_private_key(65537, int(spec[4:]))
        else:
            _KEYS[name] = ec.generate_private_key(CURVE_CLASSES[spec]())
    return _KEYS[name]


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write(path: Path, *items: x509.Certificate) -> str:
    path.write_bytes(b"".join(pem(c) for c in items))
    return str(path)


def ext(cert: x509.Certificate | x509.CertificateSigningRequest, cls: type) -> x509.Extension[Any]:
    return cert.extensions.get_extension_for_class(cls)


def self_signed(spec: str = "P-256", **fields: object) -> tuple[certs.PrivateKey, x509.Certificate]:
    key = key_for(spec)
    req = X509Request(**{"subject": "CN=self.example", **fields})  # type: ignore[arg-type]
    return key, build_certificate(req, key.public_key(), key, None, NOW)


class Pki(NamedTuple):
    root: x509.Certificate
    inter: x509.Certificate
    leaf: x509.Certificate
    root_key: certs.PrivateKey
    inter_key: certs.PrivateKey
    leaf_key: certs.PrivateKey


@pytest.fixture(scope="module")
def pki() -> Pki:
    """root (P-384) → intermediate (RSA-2048) → leaf (P-256), all built by the toolkit."""
    root_key, inter_key, leaf_key = key_for("P-384", 1), key_for("RSA-2048", 1), key_for("P-256", 1)
    ca_usage = ("keyCertSign", "cRLSign", "digitalSignature")
    root = build_certificate(
        X509Request("CN=Test Root, O=OpenKeyVault Tests, C=US", key_usage=ca_usage,
                    validity_months=120),
        root_key.public_key(), root_key, None, NOW, ca=True,
    )
    inter = build_certificate(
        X509Request("CN=Test Intermediate, O=OpenKeyVault Tests", key_usage=ca_usage,
                    validity_months=60),
        inter_key.public_key(), root_key, root, NOW, ca=True,
    )
    leaf = build_certificate(
        X509Request(
            "CN=www.example.com, O=Example", dns_names=("www.example.com",),
            key_usage=("digitalSignature", "keyAgreement"), ekus=("1.3.6.1.5.5.7.3.1",),
        ),
        leaf_key.public_key(), inter_key, inter, NOW,
    )
    return Pki(root, inter, leaf, root_key, inter_key, leaf_key)


def refused(call: object, *args: object, match: str | None = None, **kwargs: object) -> str:
    with pytest.raises(CertificateInputError) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    assert type(info.value) is CertificateInputError
    message = str(info.value)
    if match is not None:
        assert match in message, message
    return message


# ---------------------------------------------------------------------------
# parse_subject


def attrs(name: x509.Name) -> list[tuple[str, str]]:
    """(OID, value) in DER order."""
    return [(a.oid.dotted_string, str(a.value)) for a in name]


def test_subject_every_key_is_read_most_specific_first() -> None:
    name = parse_subject(
        "CN=www.contoso.com, OU=Web, O=Contoso Ltd, L=Redmond, S=Washington, C=US, "
        "E=admin@contoso.com, DC=contoso, STREET=1 Microsoft Way, SERIALNUMBER=A-123, "
        "T=Admin, G=Ada, SN=Lovelace, I=AL, POSTALCODE=98052, UID=ada, DNQUALIFIER=q1"
    )
    expected = [
        (NameOID.COMMON_NAME, "www.contoso.com"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "Web"),
        (NameOID.ORGANIZATION_NAME, "Contoso Ltd"),
        (NameOID.LOCALITY_NAME, "Redmond"),
        (NameOID.STATE_OR_PROVINCE_NAME, "Washington"),
        (NameOID.COUNTRY_NAME, "US"),
        (NameOID.EMAIL_ADDRESS, "admin@contoso.com"),
        (NameOID.DOMAIN_COMPONENT, "contoso"),
        (NameOID.STREET_ADDRESS, "1 Microsoft Way"),
        (NameOID.SERIAL_NUMBER, "A-123"),
        (NameOID.TITLE, "Admin"),
        (NameOID.GIVEN_NAME, "Ada"),
        (NameOID.SURNAME, "Lovelace"),
        (NameOID.INITIALS, "AL"),
        (NameOID.POSTAL_CODE, "98052"),
        (NameOID.USER_ID, "ada"),
        (NameOID.DN_QUALIFIER, "q1"),
    ]
    # DER order is the reverse of the text (RFC 4514 / Windows convention).
    assert attrs(name) == [(oid.dotted_string, v) for oid, v in reversed(expected)]
    assert all(len(rdn) == 1 for rdn in name.rdns)
    der = name.public_bytes()
    assert b"\x13\x02US" in der  # C as PrintableString
    assert b"\x16\x11admin@contoso.com" in der  # E as IA5String
    assert b"\x16\x07contoso" in der  # DC as IA5String
    assert b"\x0c\x0fwww.contoso.com" in der  # CN as UTF8String


def test_subject_aliases_semicolons_case_and_oids() -> None:
    name = parse_subject(
        "cn=a; st=b;emailAddress=x@y.z ; Email=p@q.r; OID.2.5.4.10=Org; 2.5.4.11=U"
    )
    assert attrs(name) == [
        ("2.5.4.11", "U"),
        ("2.5.4.10", "Org"),
        ("1.2.840.113549.1.9.1", "p@q.r"),
        ("1.2.840.113549.1.9.1", "x@y.z"),
        ("2.5.4.8", "b"),
        ("2.5.4.3", "a"),
    ]


def test_subject_quotes_escapes_and_multivalued_rdn() -> None:
    name = parse_subject(
        'CN="Contoso, Inc.", O="say ""hi""", OU=a\\,b\\;c, L=\\4C\\C3\\BCbeck, '
        'S=  padded  , C=us, CN=x + UID=y'
    )
    assert [rdn for rdn in name.rdns][0] == x509.RelativeDistinguishedName(
        [x509.NameAttribute(NameOID.COMMON_NAME, "x"), x509.NameAttribute(NameOID.USER_ID, "y")]
    )
    assert attrs(name)[2:] == [
        ("2.5.4.6", "US"),
        ("2.5.4.8", "padded"),
        ("2.5.4.7", "Lübeck"),
        ("2.5.4.11", "a,b;c"),
        ("2.5.4.10", 'say "hi"'),
        ("2.5.4.3", "Contoso, Inc."),
    ]
    quoted_space = parse_subject('CN=" keep " , O = "x" ;OU=y')
    assert attrs(quoted_space) == [("2.5.4.11", "y"), ("2.5.4.10", "x"), ("2.5.4.3", " keep ")]


def test_subject_round_trips_through_the_azure_text_form() -> None:
    text = 'CN="Contoso, Inc.", OU=Web + UID=w1, O="say "" hi", S=WA, C=US, E=a@b.c, SERIALNUMBER=9'
    name = parse_subject(text)
    written = certs.format_subject(name)
    assert written == text
    assert parse_subject(written) == name
    assert [a.value for a in name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ['say " hi']
    backslash = parse_subject('CN=a\\\\b, O="x\\\\y"')
    assert [a.value for a in backslash] == ["x\\y", "a\\b"]
    assert certs.format_subject(backslash) == 'CN="a\\\\b", O="x\\\\y"'
    assert parse_subject(certs.format_subject(backslash)) == backslash
    unknown = x509.Name([x509.NameAttribute(ObjectIdentifier("1.2.3.4"), "v")])
    assert certs.format_subject(unknown) == "OID.1.2.3.4=v"
    assert parse_subject("OID.1.2.3.4=v") == unknown


@pytest.mark.parametrize("blank", ["", "   "])
def test_subject_blank_is_the_empty_name(blank: str) -> None:
    assert parse_subject(blank) == x509.Name([])


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("=a", "no key"),
        ("CN=a, =b", "no key"),
        ("CN=", "'CN' has no value"),
        ("CN=a, O=", "'O' has no value"),
        ("CN=a,,O=b", "empty part"),
        ("CN=a,", "empty part"),
        ("CN", "KEY=value"),
        ("CN=a, XX=b", "unknown attribute 'XX'"),
        ("OID.1.2.x=a", "unknown attribute"),
        ("C=USA", "two-letter country code"),
        ("C=1A", "two-letter country code"),
        ("CN=\"open", "unterminated quote"),
        ("CN=\"a\"b", "text after a quoted value"),
        ("CN=a\\", "ends with"),
        ("CN=a\\q", "bad '\\' escape"),
        ("CN=\\FF\\FE", "not UTF-8"),
        ("CN=" + "a" * 65, "longer than 64"),
        ("CN=a\x00b", "control character"),
        ("E=jürgen@example.com", "must be ASCII"),
        ("SERIALNUMBER=a_b", "PrintableString"),
        ("CN=a + CN=a", "repeats within one '+' group"),
        ("CN=a\ud800b", "unpaired surrogate"),
    ],
)
def test_subject_refusals(text: str, fragment: str) -> None:
    refused(parse_subject, text, match=fragment)


def test_subject_length_limit() -> None:
    parts = ["OU=" + "u" * 60] * 16  # 16 × 63 + 15 × 2 = 1038
    text = ", ".join(parts)
    assert len(text) > 1024
    refused(parse_subject, text, match="longer than 1024 characters")
    fits = ", ".join(["OU=" + "u" * 60] * 15 + ["OU=" + "u" * (1024 - 15 * 65 - 3)])
    assert len(fits) == 1024
    assert len(parse_subject(fits).rdns) == 16
    refused(parse_subject, 42, match="must be a string")


# ---------------------------------------------------------------------------
# build_certificate


@pytest.mark.parametrize("spec", KEY_SPECS)
def test_self_signed_for_every_key_type(spec: str, tmp_path: Path) -> None:
    key = key_for(spec)
    req = X509Request("CN=self.example, O=Example, C=GB", validity_months=12)
    cert = build_certificate(req, key.public_key(), key, None, NOW)

    assert cert.version == x509.Version.v3
    assert cert.subject == cert.issuer == parse_subject("CN=self.example, O=Example, C=GB")
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == EXPECTED_HASH[spec]
    if spec.startswith("RSA"):
        assert cert.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.11"
    assert key_matches(cert, key)
    assert cert.not_valid_before_utc == NOW.replace(microsecond=0)
    assert cert.not_valid_after_utc == dt.datetime(2027, 3, 14, 15, 9, 26, tzinfo=dt.UTC)
    assert cert.serial_number > 0 and cert.serial_number.bit_length() > 64
    cert.verify_directly_issued_by(cert)

    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ski = ext(cert, x509.SubjectKeyIdentifier)
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = ext(cert, x509.AuthorityKeyIdentifier)
    assert aki.value.key_identifier == ski.value.digest
    with pytest.raises(x509.ExtensionNotFound):
        ext(cert, x509.SubjectAlternativeName)

    path = write(tmp_path / "self.pem", cert)
    result = openssl("verify", "-attime", str(int(NOW.timestamp()) + 60), "-CAfile", path, path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(b": OK")


def test_chain_root_intermediate_leaf_verifies_with_openssl(
    pki: Pki, tmp_path: Path
) -> None:
    root, inter, leaf = pki.root, pki.inter, pki.leaf
    assert inter.issuer == root.subject and leaf.issuer == inter.subject
    assert ext(root, x509.BasicConstraints).value.ca is True
    assert ext(inter, x509.BasicConstraints).value.ca is True
    assert ext(leaf, x509.BasicConstraints).value.ca is False
    # AKI of each certificate is the SKI of its issuer.
    for cert, issuer in ((inter, root), (leaf, inter)):
        aki = ext(cert, x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == ext(issuer, x509.SubjectKeyIdentifier).value.digest
    assert leaf.signature_hash_algorithm is not None and inter.signature_hash_algorithm is not None
    assert leaf.signature_hash_algorithm.name == "sha256"  # signed by the RSA intermediate
    assert inter.signature_hash_algorithm.name == "sha384"  # signed by the P-384 root
    check_chain(leaf, [inter, root])

    at = str(int(NOW.timestamp()) + 60)
    result = openssl(
        "verify", "-attime", at, "-purpose", "sslserver",
        "-CAfile", write(tmp_path / "root.pem", root),
        "-untrusted", write(tmp_path / "inter.pem", inter),
        write(tmp_path / "leaf.pem", leaf),
    )
    assert result.returncode == 0, result.stderr
    # Without the intermediate the chain does not verify.
    broken = openssl(
        "verify", "-attime", at, "-CAfile", str(tmp_path / "root.pem"), str(tmp_path / "leaf.pem")
    )
    assert broken.returncode != 0
    # Outside the validity window it does not verify either.
    late = openssl(
        "verify", "-attime", str(int(NOW.timestamp()) + 400 * 86400),
        "-CAfile", str(tmp_path / "root.pem"), "-untrusted", str(tmp_path / "inter.pem"),
        str(tmp_path / "leaf.pem"),
    )
    assert late.returncode != 0 and b"expired" in late.stdout + late.stderr


def test_issuer_without_ski_gets_aki_from_its_public_key() -> None:
    ca_key = key_for("P-256", 2)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bare ca")])
    bare = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(ca_key.public_key()).serial_number(7)
        .not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = key_for("P-256")
    leaf = build_certificate(X509Request("CN=leaf"), leaf_key.public_key(), ca_key, bare, NOW)
    aki = ext(leaf, x509.AuthorityKeyIdentifier).value
    assert aki == x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    leaf.verify_directly_issued_by(bare)


def test_every_san_kind(tmp_path: Path) -> None:
    _, cert = self_signed(
        dns_names=("www.example.com", "*.api.example.com", "under_score.example", "trailing.dot."),
        emails=("ops@example.com", "first.last+tag@sub.example.org"),
        upns=("ada@corp.example", "jürgen@corp.example"),
        ip_addresses=("192.0.2.10", "2001:db8::1", "::ffff:192.0.2.1"),
        uris=("https://example.com/path?q=1", "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"),
    )
    san = ext(cert, x509.SubjectAlternativeName)
    assert san.critical is False
    value = san.value
    assert value.get_values_for_type(x509.DNSName) == [
        "www.example.com", "*.api.example.com", "under_score.example", "trailing.dot",
    ]
    assert value.get_values_for_type(x509.RFC822Name) == [
        "ops@example.com", "first.last+tag@sub.example.org",
    ]
    others = value.get_values_for_type(x509.OtherName)
    assert [o.type_id.dotted_string for o in others] == ["1.3.6.1.4.1.311.20.2.3"] * 2
    # The UPN value is a DER UTF8String.
    assert others[0].value == b"\x0c\x10ada@corp.example"
    assert others[1].value == b"\x0c\x14" + "jürgen@corp.example".encode()
    assert [str(ip) for ip in value.get_values_for_type(x509.IPAddress)] == [
        "192.0.2.10", "2001:db8::1", "::ffff:c000:201",
    ]
    assert value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "https://example.com/path?q=1", "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
    ]
    text = openssl("x509", "-noout", "-ext", "subjectAltName", "-in", write(tmp_path / "c", cert))
    assert text.returncode == 0, text.stderr
    out = text.stdout.decode()
    for item in (
        "DNS:www.example.com", "DNS:*.api.example.com", "email:ops@example.com",
        "othername: UPN::ada@corp.example", "IP Address:192.0.2.10",
        "IP Address:2001:DB8:0:0:0:0:0:1",
        "URI:https://example.com/path?q=1",
    ):
        assert item in out, (item, out)
    assert x509_properties(cert)["sans"] == {
        "dns_names": [
            "www.example.com", "*.api.example.com", "under_score.example", "trailing.dot",
        ],
        "emails": ["ops@example.com", "first.last+tag@sub.example.org"],
        "upns": ["ada@corp.example", "jürgen@corp.example"],
        "ipAddresses": ["192.0.2.10", "2001:db8::1", "::ffff:c000:201"],
        "uris": ["https://example.com/path?q=1", "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"],
    }


def test_duplicate_sans_and_ekus_are_written_once() -> None:
    _, cert = self_signed(
        dns_names=("a.example", "a.example"), ip_addresses=("10.0.0.1", "10.0.0.1"),
        ekus=("1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.1"), key_usage=("digitalSignature",) * 2,
    )
    props = x509_properties(cert)
    assert props["sans"] == {"dns_names": ["a.example"], "ipAddresses": ["10.0.0.1"]}
    assert props["ekus"] == ["1.3.6.1.5.5.7.3.1"]
    assert props["key_usage"] == ["digitalSignature"]


def test_empty_subject_needs_sans_and_marks_them_critical() -> None:
    _, cert = self_signed(subject="", dns_names=("only.example",))
    assert cert.subject == x509.Name([])
    assert ext(cert, x509.SubjectAlternativeName).critical is True
    key = key_for("P-256")
    message = refused(
        build_certificate, X509Request(""), key.public_key(), key, None, NOW,
        match="subject name or at least one subject alternative name",
    )
    assert message
    refused(build_csr, X509Request("  "), key, match="subject alternative name")


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("dns_names", "has space.example", "DNS name"),
        ("dns_names", "-lead.example", "DNS name"),
        ("dns_names", "trail-.example", "DNS name"),
        ("dns_names", "a..b", "DNS name"),
        ("dns_names", "x" * 64 + ".example", "DNS name"),
        ("dns_names", ("a" * 60 + ".") * 5 + "example", "DNS name"),
        ("dns_names", "bücher.example", "xn--"),
        ("dns_names", "*", "DNS name"),
        ("dns_names", "a.*.example", "DNS name"),
        ("dns_names", "", "DNS name"),
        ("emails", "no-at-sign", "email address"),
        ("emails", "a@b@c.example", "email address"),
        ("emails", "a b@c.example", "email address"),
        ("emails", "a@-bad.example", "email address"),
        ("emails", "jürgen@example.com", "email address"),
        ("upns", "no-at-sign", "user principal name"),
        ("upns", "@corp", "user principal name"),
        ("upns", "a b@corp", "user principal name"),
        ("upns", "a@", "user principal name"),
        ("upns", "a\udc00@corp", "user principal name"),
        ("ip_addresses", "256.1.1.1", "IP address"),
        ("ip_addresses", "1.2.3", "IP address"),
        ("ip_addresses", "fe80::zz", "IP address"),
        ("ip_addresses", "example.com", "IP address"),
        ("uris", "no scheme", "URI"),
        ("uris", "http://a b", "URI"),
        ("uris", "relative/path", "URI"),
    ],
)
def test_invalid_sans_are_refused(field: str, value: str, fragment: str) -> None:
    key = key_for("P-256")
    req = X509Request("CN=x", **{field: (value,)})  # type: ignore[arg-type]
    refused(build_certificate, req, key.public_key(), key, None, NOW, match=fragment)
    refused(build_csr, req, key, match=fragment)


def test_too_many_sans_of_one_kind() -> None:
    key = key_for("P-256")
    names = tuple(f"h{i}.example" for i in range(101))
    refused(build_csr, X509Request("CN=x", dns_names=names), key, match="At most 100 DNS names")
    csr = build_csr(X509Request("CN=x", dns_names=names[:100]), key)
    assert len(ext(csr, x509.SubjectAlternativeName).value) == 100
    ekus = tuple(f"1.2.3.{i}" for i in range(101))
    refused(build_csr, X509Request("CN=x", ekus=ekus), key, match="At most 100 enhanced key")


@pytest.mark.parametrize("name", sorted(KEY_USAGES))
def test_each_key_usage(name: str) -> None:
    usage = (name, "keyAgreement") if name in ("encipherOnly", "decipherOnly") else (name,)
    _, cert = self_signed(key_usage=usage)
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical is True
    for azure_name, attr in KEY_USAGES.items():
        if attr in ("encipher_only", "decipher_only") and not ku.value.key_agreement:
            continue
        assert getattr(ku.value, attr) is (azure_name in usage), azure_name
    assert sorted(x509_properties(cert)["key_usage"]) == sorted(usage)


def test_all_key_usages_at_once_and_names_are_case_insensitive() -> None:
    _, cert = self_signed(key_usage=tuple(n.upper() for n in KEY_USAGES))
    ku = ext(cert, x509.KeyUsage).value
    assert all(getattr(ku, attr) for attr in KEY_USAGES.values())
    assert x509_properties(cert)["key_usage"] == list(KEY_USAGES)


@pytest.mark.parametrize(
    ("usage", "fragment"),
    [
        (("signature",), "Unknown key usage 'signature'"),
        (("",), "Unknown key usage"),
    ],
)
def test_key_usage_refusals(usage: tuple[str, ...], fragment: str) -> None:
    key = key_for("P-256")
    refused(build_certificate, X509Request("CN=x", key_usage=usage), key.public_key(), key,
            None, NOW, match=fragment)


@pytest.mark.parametrize(("usage", "kept"), [
    (("decipherOnly", "digitalSignature"), ["digitalSignature"]),
    (("encipherOnly", "keyEncipherment", "nonRepudiation"), ["nonRepudiation",
                                                            "keyEncipherment"]),
    (("encipherOnly",), None),
    (("decipherOnly", "encipherOnly"), None),
])
def test_encipher_and_decipher_only_without_key_agreement_are_left_out(
        usage: tuple[str, ...], kept: list[str] | None, tmp_path: Path) -> None:
    """Azure accepts them; RFC 5280 leaves them undefined without keyAgreement, so the
    certificate carries the other bits (or no KeyUsage at all) and stays readable."""
    _, cert = self_signed(key_usage=usage)
    if kept is None:
        with pytest.raises(x509.ExtensionNotFound):
            cert.extensions.get_extension_for_class(x509.KeyUsage)
        return
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical is True and ku.value.key_agreement is False
    assert x509_properties(cert)["key_usage"] == kept
    text = openssl("x509", "-noout", "-ext", "keyUsage", "-in", write(tmp_path / "c", cert))
    assert "Only" not in text.stdout.decode()


def test_every_eku(tmp_path: Path) -> None:
    oids = (*EKUS, "1.2.3.4.5.6")
    _, cert = self_signed(ekus=oids)
    eku = ext(cert, x509.ExtendedKeyUsage)
    assert eku.critical is False
    assert [o.dotted_string for o in eku.value] == list(oids)
    assert x509_properties(cert)["ekus"] == list(oids)
    text = openssl("x509", "-noout", "-ext", "extendedKeyUsage", "-in", write(tmp_path / "c", cert))
    for label in EKUS.values():
        assert label in text.stdout.decode(), label


@pytest.mark.parametrize("oid", ["serverAuth", "1.", "1..2", "3.1", "1.2.03", "", "1"])
def test_invalid_eku_refused(oid: str) -> None:
    key = key_for("P-256")
    refused(build_csr, X509Request("CN=x", ekus=(oid,)), key, match="enhanced key usage")


@pytest.mark.parametrize(
    ("start", "months", "end"),
    [
        ((2024, 1, 31), 1, (2024, 2, 29)),  # leap year month end
        ((2023, 1, 31), 1, (2023, 2, 28)),
        ((2024, 2, 29), 12, (2025, 2, 28)),
        ((2024, 2, 29), 48, (2028, 2, 29)),
        ((2024, 3, 31), 1, (2024, 4, 30)),
        ((2024, 12, 15), 1, (2025, 1, 15)),
        ((2024, 8, 31), 18, (2026, 2, 28)),
        ((2024, 5, 1), 1200, (2124, 5, 1)),
    ],
)
def test_validity_in_calendar_months(
    start: tuple[int, int, int], months: int, end: tuple[int, int, int]
) -> None:
    now = dt.datetime(*start, 23, 59, 59, 999999, tzinfo=dt.UTC)
    key = key_for("P-256")
    cert = build_certificate(
        X509Request("CN=x", validity_months=months), key.public_key(), key, None, now
    )
    assert cert.not_valid_before_utc == dt.datetime(*start, 23, 59, 59, tzinfo=dt.UTC)
    assert cert.not_valid_after_utc == dt.datetime(*end, 23, 59, 59, tzinfo=dt.UTC)
    assert x509_properties(cert)["validity_months"] == months


def test_now_in_another_zone_or_naive_is_taken_as_utc() -> None:
    key = key_for("P-256")
    req = X509Request("CN=x", validity_months=1)
    plus2 = dt.timezone(dt.timedelta(hours=2))
    zoned = build_certificate(req, key.public_key(), key, None,
                              dt.datetime(2026, 1, 1, 1, 0, tzinfo=plus2))
    assert zoned.not_valid_before_utc == dt.datetime(2025, 12, 31, 23, 0, tzinfo=dt.UTC)
    assert zoned.not_valid_after_utc == dt.datetime(2026, 1, 31, 23, 0, tzinfo=dt.UTC)
    naive = build_certificate(req, key.public_key(), key, None, dt.datetime(2026, 1, 1, 1, 0))
    assert naive.not_valid_before_utc == dt.datetime(2026, 1, 1, 1, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("months", [0, -1, 1201])
def test_validity_out_of_range(months: int) -> None:
    key = key_for("P-256")
    refused(build_certificate, X509Request("CN=x", validity_months=months), key.public_key(),
            key, None, NOW, match="between 1 and 1200 months")


def test_signer_must_match_subject_or_issuer(pki: Pki) -> None:
    key, other = key_for("P-256"), key_for("P-384")
    refused(build_certificate, X509Request("CN=x"), key.public_key(), other, None, NOW,
            match="signed by its own key")
    refused(build_certificate, X509Request("CN=x"), key.public_key(), other, pki.root, NOW,
            match="does not match the issuer certificate")


def test_unsupported_key_types_refused() -> None:
    small_curve = ec.generate_private_key(ec.SECP224R1())
    refused(build_certificate, X509Request("CN=x"), small_curve.public_key(), small_curve,
            None, NOW, match="curve is not supported")
    ed = ed25519.Ed25519PrivateKey.generate()
    refused(build_certificate, X509Request("CN=x"), ed.public_key(), ed, None, NOW,
            match="key type is not supported")
    refused(build_csr, X509Request("CN=x"), ed, match="key type is not supported")


# ---------------------------------------------------------------------------
# build_csr


@pytest.mark.parametrize("spec", KEY_SPECS)
def test_csr_for_every_key_type(spec: str) -> None:
    key = key_for(spec)
    req = X509Request(
        "CN=csr.example, O=Example, C=DE", dns_names=("csr.example",), emails=("a@csr.example",),
        upns=("u@corp",), ip_addresses=("10.1.2.3",), key_usage=("digitalSignature",),
        ekus=("1.3.6.1.5.5.7.3.2",),
    )
    csr = build_csr(req, key)
    assert csr.is_signature_valid
    assert csr.subject == parse_subject("CN=csr.example, O=Example, C=DE")
    assert csr.signature_hash_algorithm is not None
    assert csr.signature_hash_algorithm.name == EXPECTED_HASH[spec]
    assert key_matches_public(csr.public_key(), key)
    kinds = [type(n) for n in ext(csr, x509.SubjectAlternativeName).value]
    assert kinds == [x509.DNSName, x509.RFC822Name, x509.OtherName, x509.IPAddress]
    ku = ext(csr, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_encipherment
    assert [o.dotted_string for o in ext(csr, x509.ExtendedKeyUsage).value] == ["1.3.6.1.5.5.7.3.2"]
    assert {e.oid for e in csr.extensions} == {
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
    }
    result = openssl("req", "-verify", "-noout", stdin=csr.public_bytes(serialization.Encoding.PEM))
    assert result.returncode == 0, result.stderr
    assert b"verify OK" in result.stdout + result.stderr


def key_matches_public(public_key: object, key: certs.PrivateKey) -> bool:
    return bool(certs.key_matches_public(public_key, key))


def test_csr_subject_refusal_is_a_certificate_input_error() -> None:
    refused(build_csr, X509Request("CN=a, C=XYZ"), key_for("P-256"), match="country code")


# ---------------------------------------------------------------------------
# to_pfx / load_pfx


def test_pfx_without_password_round_trips_and_is_unencrypted(
    pki: Pki, tmp_path: Path
) -> None:
    leaf, inter, root, key = pki.leaf, pki.inter, pki.root, pki.leaf_key
    data = to_pfx(key, leaf, [inter, root])
    for password in (None, ""):
        loaded = load_pfx(data, password)
        assert isinstance(loaded, Loaded)
        assert loaded.certificate == leaf
        assert loaded.chain == (inter, root)
        assert loaded.key is not None and key_matches(leaf, loaded.key)
    # The SDKs read Azure's password-less PFX secret with no password.
    bundle = pkcs12.load_key_and_certificates(data, None)
    assert bundle[1] == leaf
    path = tmp_path / "plain.pfx"
    path.write_bytes(data)
    info = openssl("pkcs12", "-info", "-in", str(path), "-passin", "pass:", "-noenc")
    assert info.returncode == 0, info.stderr
    out = info.stdout + info.stderr
    assert b"Shrouded Keybag" not in out and b"PKCS7 Encrypted data" not in out
    assert b"-----BEGIN PRIVATE KEY-----" in out


def test_pfx_with_password_uses_aes256_pbes2(pki: Pki, tmp_path: Path) -> None:
    leaf, inter, key = pki.leaf, pki.inter, pki.leaf_key
    data = to_pfx(key, leaf, [inter], PASSWORD)
    path = tmp_path / "enc.pfx"
    path.write_bytes(data)
    info = openssl("pkcs12", "-info", "-in", str(path), "-passin", f"pass:{PASSWORD}", "-noenc")
    assert info.returncode == 0, info.stderr
    out = (info.stdout + info.stderr).decode()
    assert "MAC: sha256" in out
    assert "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC" in out
    assert "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC" in out
    wrong = openssl("pkcs12", "-info", "-in", str(path), "-passin", "pass:nope", "-noenc")
    assert wrong.returncode != 0
    loaded = load_pfx(data, PASSWORD)
    assert loaded.certificate == leaf and loaded.chain == (inter,)
    assert key_matches(leaf, loaded.key)


@pytest.mark.parametrize("password", [None, "", "wrong", PASSWORD + "x"])
def test_pfx_wrong_or_missing_password(pki: Pki, password: str | None) -> None:
    data = to_pfx(pki.leaf_key, pki.leaf, [], PASSWORD)
    message = refused(load_pfx, data, password)
    assert message == PFX_MESSAGE


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: b"",
        lambda d: b"not a pfx at all",
        lambda d: d[: len(d) // 2],
        lambda d: d[:-1],
        lambda d: d[:40] + bytes([d[40] ^ 0xFF]) + d[41:],
        lambda d: bytes(range(256)) * 4,
    ],
    ids=["empty", "garbage", "half", "minus-one", "flipped-byte", "bytes"],
)
def test_pfx_damaged(pki: Pki, mangle: object) -> None:
    data = to_pfx(pki.leaf_key, pki.leaf, [], PASSWORD)
    assert refused(load_pfx, mangle(data), PASSWORD) == PFX_MESSAGE  # type: ignore[operator]


def test_pfx_made_by_openssl_modern_and_legacy(tmp_path: Path) -> None:
    key, cert = self_signed("RSA-2048")
    key_path = tmp_path / "k.pem"
    key_path.write_bytes(pkcs8(key))
    cert_path = write(tmp_path / "c.pem", cert)
    for flags in ([], ["-legacy"]):
        out = tmp_path / f"o{len(flags)}.pfx"
        made = openssl("pkcs12", "-export", *flags, "-inkey", str(key_path), "-in", cert_path,
                       "-out", str(out), "-passout", "pass:s3cret")
        assert made.returncode == 0, made.stderr
        loaded = load_pfx(out.read_bytes(), "s3cret")
        assert loaded.certificate == cert and loaded.chain == ()
        assert key_matches(cert, loaded.key)
        assert refused(load_pfx, out.read_bytes(), "S3cret") == PFX_MESSAGE


def test_pfx_chain_in_any_order_is_ordered_leaf_to_root(pki: Pki) -> None:
    leaf, inter, root = pki.leaf, pki.inter, pki.root
    unrelated = self_signed("P-384")[1]
    data = pkcs12.serialize_key_and_certificates(
        None, pki.leaf_key, leaf, [root, unrelated, inter],
        serialization.NoEncryption(),
    )
    loaded = load_pfx(data, None)
    assert loaded.certificate == leaf
    assert loaded.chain == (inter, root, unrelated)
    check_chain(loaded.certificate, loaded.chain[:2])


def test_pfx_leaf_is_the_certificate_matching_the_key(pki: Pki) -> None:
    # The key's certificate sits among the "additional" certificates.
    data = pkcs12.serialize_key_and_certificates(
        None, None, None, [pki.root, pki.leaf, pki.inter], serialization.NoEncryption()
    )
    loaded = load_pfx(data, None)
    assert loaded.key is None
    assert loaded.certificate == pki.leaf  # issued none of the others
    assert loaded.chain == (pki.inter, pki.root)


def test_pfx_key_that_matches_no_certificate(pki: Pki, tmp_path: Path) -> None:
    other = key_for("P-256", 3)
    key_path = tmp_path / "k.pem"
    key_path.write_bytes(pkcs8(other))
    out = tmp_path / "m.pfx"
    made = openssl("pkcs12", "-export", "-inkey", str(key_path), "-nocerts", "-out", str(out),
                   "-passout", "pass:pw")
    assert made.returncode == 0, made.stderr
    refused(load_pfx, out.read_bytes(), "pw", match="holds no X.509 certificate")
    # A PEM file with the same key and an unrelated certificate.
    content = key_path.read_bytes() + pem(pki.leaf)
    message = refused(load_pem, content, match="does not match any certificate")
    assert "PRIVATE" not in message


def test_pfx_oversize_is_refused_before_parsing() -> None:
    refused(load_pfx, b"\x30" * (256 * 1024 + 1), None, match="larger than 256 KiB")
    refused(load_pem, b"-" * (256 * 1024 + 1), match="larger than 256 KiB")


def test_pfx_password_limit(pki: Pki) -> None:
    data = to_pfx(pki.leaf_key, pki.leaf, [])
    for bad in ("p" * 1025, "pw\x00tail", "pw\ud800"):
        assert refused(load_pfx, data, bad) == "The password is not valid."
        assert refused(load_pem, to_pem(pki.leaf_key, pki.leaf, []), bad) == (
            "The password is not valid."
        )
        assert refused(to_pfx, pki.leaf_key, pki.leaf, [], bad) == "The password is not valid."
    assert load_pfx(to_pfx(pki.leaf_key, pki.leaf, [], "p" * 1024), "p" * 1024).certificate == (
        pki.leaf
    )


def test_pfx_unsupported_key_type(tmp_path: Path) -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(ed.public_key()).serial_number(1)
        .not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1))
        .sign(ed, None)
    )
    data = pkcs12.serialize_key_and_certificates(None, ed, cert, None, serialization.NoEncryption())
    refused(load_pfx, data, None, match="private key type is not supported")


# ---------------------------------------------------------------------------
# to_pem / load_pem


def pkcs8(key: certs.PrivateKey, password: str | None = None,
          fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode()) if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, enc)


def test_to_pem_order_and_round_trip(pki: Pki) -> None:
    leaf, inter, root, key = pki.leaf, pki.inter, pki.root, pki.leaf_key
    text = to_pem(key, leaf, [inter, root])
    labels = [line for line in text.decode().splitlines() if line.startswith("-----BEGIN")]
    assert labels == ["-----BEGIN PRIVATE KEY-----"] + ["-----BEGIN CERTIFICATE-----"] * 3
    assert text.index(pem(leaf)) < text.index(pem(inter)) < text.index(pem(root))
    loaded = load_pem(text)
    assert loaded.certificate == leaf and loaded.chain == (inter, root)
    assert key_matches(leaf, loaded.key)
    assert to_pem(None, leaf, []) == pem(leaf)


def test_pem_in_any_order_with_every_key_format(pki: Pki) -> None:
    leaf, inter, root = pki.leaf, pki.inter, pki.root
    ec_key = pki.leaf_key
    for key_pem in (
        pkcs8(ec_key),
        pkcs8(ec_key, fmt=serialization.PrivateFormat.TraditionalOpenSSL),
    ):
        content = pem(root) + b"\n# comment\n" + key_pem + pem(inter) + pem(leaf)
        loaded = load_pem(content)
        assert loaded.certificate == leaf and loaded.chain == (inter, root)
        assert key_matches(leaf, loaded.key)
    rsa_key, rsa_cert = self_signed("RSA-2048")
    pkcs1 = pkcs8(rsa_key, fmt=serialization.PrivateFormat.TraditionalOpenSSL)
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    loaded = load_pem(pem(rsa_cert) + pkcs1)
    assert loaded.certificate == rsa_cert and key_matches(rsa_cert, loaded.key)
    assert loaded.chain == ()


def test_pem_certificates_only(pki: Pki) -> None:
    loaded = load_pem(pem(pki.inter) + pem(pki.leaf) + pem(pki.root))
    assert loaded.key is None
    assert loaded.certificate == pki.leaf
    assert loaded.chain == (pki.inter, pki.root)


def test_pem_encrypted_keys_need_their_password() -> None:
    key, cert = self_signed("P-384")
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        content = pkcs8(key, PASSWORD, fmt) + pem(cert)
        header = content.split(b"\n")[0] + content.split(b"\n")[1]
        assert b"ENCRYPTED" in header
        loaded = load_pem(content, PASSWORD)
        assert key_matches(cert, loaded.key)
        assert load_any(content, "application/x-pem-file", PASSWORD).certificate == cert
        for missing in (None, ""):
            refused(load_pem, content, missing, match="encrypted; give its password")
        message = refused(load_pem, content, "Tr0ub4dor&3", match="can not be decrypted")
        assert "Tr0ub4dor" not in message and PASSWORD not in message
    # A password given for an unencrypted key is not needed and does no harm.
    assert load_pem(pkcs8(key) + pem(cert), "unused").certificate == cert


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "can not be read"),
        (b"hello world", "can not be read"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "can not be read"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB", "no X.509 certificate"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "can not be read"),
    ],
)
def test_pem_damaged(content: bytes, fragment: str) -> None:
    refused(load_pem, content, match=fragment)


def test_pem_truncated_and_key_only(pki: Pki) -> None:
    full = pkcs8(pki.leaf_key) + pem(pki.leaf)
    refused(load_pem, full[: len(full) - 40], match="no X.509 certificate")
    refused(load_pem, pkcs8(pki.leaf_key), match="no X.509 certificate")
    two_keys = pkcs8(pki.leaf_key) + pkcs8(pki.leaf_key) + pem(pki.leaf)
    refused(load_pem, two_keys, match="more than one private key")


def test_pem_mismatched_key(pki: Pki) -> None:
    content = pkcs8(key_for("RSA-2048", 2)) + pem(pki.leaf) + pem(pki.inter)
    message = refused(load_pem, content, match="does not match any certificate")
    assert "BEGIN" not in message


def test_pem_unsupported_curve_and_too_many_certificates(pki: Pki) -> None:
    small = ec.generate_private_key(ec.SECP224R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p224")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(small.public_key()).serial_number(1)
        .not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1))
        .sign(small, hashes.SHA256())
    )
    refused(load_pem, pkcs8(small) + pem(cert), match="curve is not supported")
    refused(load_pem, pem(pki.root) * 33, match="more than 32 certificates")
    assert load_pem(pem(pki.root) * 2).certificate == pki.root


# ---------------------------------------------------------------------------
# load_any


def test_load_any_per_content_type(pki: Pki) -> None:
    leaf, inter, key = pki.leaf, pki.inter, pki.leaf_key
    pfx = to_pfx(key, leaf, [inter], PASSWORD)
    pfx_b64 = base64.b64encode(pfx)
    pem_text = to_pem(key, leaf, [inter])
    wrapped = b"\n".join(pfx_b64[i : i + 64] for i in range(0, len(pfx_b64), 64))
    for data, ctype, password in (
        (pfx_b64, "application/x-pkcs12", PASSWORD),
        (pfx_b64, None, PASSWORD),
        (wrapped, "application/x-pkcs12", PASSWORD),
        (pfx_b64.decode(), "Application/X-PKCS12; charset=utf-8", PASSWORD),
        (pem_text, "application/x-pem-file", None),
        (pem_text, None, None),
        (base64.b64encode(pem_text), "application/x-pem-file", None),  # as the Python SDK sends it
        (base64.b64encode(pem_text), None, None),
    ):
        loaded = load_any(data, ctype, password)  # type: ignore[arg-type]
        assert loaded.certificate == leaf and loaded.chain == (inter,), ctype
        assert key_matches(leaf, loaded.key)


def test_load_any_refusals(pki: Pki) -> None:
    leaf, key = pki.leaf, pki.leaf_key
    pfx_b64 = base64.b64encode(to_pfx(key, leaf, []))
    pem_text = to_pem(key, leaf, [])
    refused(load_any, pem_text, "application/x-pkcs12", None, match="content is PEM")
    refused(load_any, base64.b64encode(pem_text), "application/x-pkcs12", None,
            match="content is PEM")
    refused(load_any, pfx_b64, "application/x-pem-file", None, match="valid PEM format")
    refused(load_any, pfx_b64, "text/plain", None, match="content type must be")
    assert refused(load_any, b"%%% not base64 %%%", None, None) == PFX_MESSAGE
    assert refused(load_any, pfx_b64[:-3], "application/x-pkcs12", None) == PFX_MESSAGE
    refused(load_any, b"QUJD" * (90 * 1024), None, None, match="larger than 256 KiB")


# ---------------------------------------------------------------------------
# key_matches / check_chain / thumbprint / x509_properties / key_properties


def test_key_matches(pki: Pki) -> None:
    leaf, key = pki.leaf, pki.leaf_key
    assert key_matches(leaf, key)
    assert key_matches(leaf, key.public_key())
    assert not key_matches(leaf, key_for("P-256", 4))
    assert not key_matches(leaf, key_for("RSA-2048"))
    assert not key_matches(leaf, None)
    assert not key_matches(leaf, b"bytes")


def test_check_chain(pki: Pki) -> None:
    leaf, inter, root = pki.leaf, pki.inter, pki.root
    check_chain(leaf, [inter, root])
    check_chain(leaf, [inter])
    check_chain(leaf, [])
    check_chain(root, [root])  # self-signed root followed by itself
    refused(check_chain, leaf, [root, inter], match="certificate 0 is not signed by certificate 1")
    refused(check_chain, leaf, [inter, self_signed()[1]],
            match="certificate 1 is not signed by certificate 2")
    refused(check_chain, inter, [leaf], match="certificate 0 is not signed")
    refused(check_chain, leaf, [inter] * 32, match="at most 32 certificates")


def test_check_chain_same_name_other_key(pki: Pki) -> None:
    """An impostor issuer with the right name but another key is refused."""
    impostor_key = key_for("P-384", 5)
    impostor = build_certificate(
        X509Request("CN=Test Intermediate, O=OpenKeyVault Tests"), impostor_key.public_key(),
        impostor_key, None, NOW, ca=True,
    )
    assert impostor.subject == pki.inter.subject
    refused(check_chain, pki.leaf, [impostor], match="not signed")


def test_thumbprint(pki: Pki, tmp_path: Path) -> None:
    leaf = pki.leaf
    digest = thumbprint(leaf)
    assert len(digest) == 20
    assert digest == hashlib.sha1(leaf.public_bytes(serialization.Encoding.DER)).digest()
    result = openssl("x509", "-noout", "-fingerprint", "-sha1", "-in", write(tmp_path / "l", leaf))
    assert result.stdout.decode().strip().split("=", 1)[1].replace(":", "") == digest.hex().upper()


def test_x509_properties_of_a_built_certificate() -> None:
    _, cert = self_signed(
        subject="CN=props.example, O=Contoso, C=US", dns_names=("props.example",),
        key_usage=("digitalSignature", "keyEncipherment"), ekus=("1.3.6.1.5.5.7.3.1",),
        validity_months=24,
    )
    assert x509_properties(cert) == {
        "subject": "CN=props.example, O=Contoso, C=US",
        "sans": {"dns_names": ["props.example"]},
        "ekus": ["1.3.6.1.5.5.7.3.1"],
        "key_usage": ["digitalSignature", "keyEncipherment"],
        "validity_months": 24,
    }


def test_x509_properties_of_an_openssl_certificate(tmp_path: Path) -> None:
    key, cert_path = tmp_path / "k.pem", tmp_path / "c.pem"
    made = openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-noenc",
        "-keyout", str(key), "-out", str(cert_path), "-days", "365",
        "-subj", "/C=US/ST=WA/L=Redmond/O=Contoso, Ltd/CN=www.contoso.com",
        "-addext", "subjectAltName=DNS:www.contoso.com,IP:10.0.0.1,email:a@contoso.com,"
                   "otherName:1.3.6.1.4.1.311.20.2.3;UTF8:upn@contoso.com",
        "-addext", "keyUsage=critical,digitalSignature,keyAgreement",
        "-addext", "extendedKeyUsage=serverAuth,clientAuth",
    )
    assert made.returncode == 0, made.stderr
    loaded = load_pem(key.read_bytes() + cert_path.read_bytes())
    props = x509_properties(loaded.certificate)
    assert props == {
        "subject": 'CN=www.contoso.com, O="Contoso, Ltd", L=Redmond, S=WA, C=US',
        "sans": {
            "dns_names": ["www.contoso.com"], "emails": ["a@contoso.com"],
            "upns": ["upn@contoso.com"], "ipAddresses": ["10.0.0.1"],
        },
        "ekus": ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"],
        "key_usage": ["digitalSignature", "keyAgreement"],
        "validity_months": 12,
    }
    assert parse_subject(props["subject"]) == loaded.certificate.subject
    assert key_properties(loaded.key) == {"kty": "EC", "crv": "P-256"}


def test_x509_properties_without_extensions() -> None:
    key = key_for("P-256")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bare")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=45))
        .sign(key, hashes.SHA256())
    )
    assert x509_properties(cert) == {"subject": "CN=bare", "validity_months": 2}


@pytest.mark.parametrize("spec", KEY_SPECS)
def test_key_properties(spec: str) -> None:
    key = key_for(spec)
    expected = (
        {"kty": "RSA", "key_size": int(spec[4:])} if spec.startswith("RSA")
        else {"kty": "EC", "crv": spec}
    )
    assert key_properties(key) == expected
    assert key_properties(key.public_key()) == expected


def test_key_properties_refusals() -> None:
    refused(key_properties, ed25519.Ed25519PrivateKey.generate(), match="key type is not supported")
    refused(key_properties, ec.generate_private_key(ec.SECP224R1()), match="curve is not supported")
    refused(key_properties, None, match="key type is not supported")


def test_messages_never_echo_secrets(pki: Pki) -> None:
    """Every refusal of a file carrying a key says nothing of the key or the password."""
    key = pki.leaf_key
    key_pem = pkcs8(key)
    key_body = b"".join(key_pem.splitlines()[1:-1]).decode()
    inputs: Sequence[tuple[object, tuple[object, ...]]] = [
        (load_pem, (pkcs8(key, PASSWORD) + pem(pki.leaf), "bad-" + PASSWORD)),
        (load_pem, (key_pem,)),
        (load_pem, (pkcs8(key_for("P-256", 6)) + pem(pki.leaf),)),
        (load_pfx, (to_pfx(key, pki.leaf, [], PASSWORD), PASSWORD[::-1])),
        (load_any, (base64.b64encode(key_pem), None, PASSWORD)),
    ]
    for call, args in inputs:
        message = refused(call, *args)
        assert PASSWORD not in message and PASSWORD[::-1] not in message
        assert key_body[:24] not in message and "PRIVATE KEY" not in message


# ---------------------------------------------------------------------------
# Hostile and unusual files


def test_pfx_iteration_counts_are_read_before_opening(tmp_path: Path) -> None:
    key, cert = self_signed()
    assert pfxscan.iteration_counts(to_pfx(key, cert, [])) == [2048]  # the MAC only
    assert pfxscan.iteration_counts(to_pfx(key, cert, [cert], PASSWORD)) == [2048, 10000, 10000]
    key_path, cert_path = tmp_path / "k.pem", write(tmp_path / "c.pem", cert)
    key_path.write_bytes(pkcs8(key))
    for flags in ([], ["-legacy"]):
        out = tmp_path / f"o{len(flags)}.pfx"
        made = openssl("pkcs12", "-export", *flags, "-iter", "4096", "-inkey", str(key_path),
                       "-in", cert_path, "-out", str(out), "-passout", "pass:pw")
        assert made.returncode == 0, made.stderr
        assert pfxscan.iteration_counts(out.read_bytes()) == [4096, 4096, 4096]


def test_pfx_asking_for_too_many_iterations_is_refused() -> None:
    key, cert = self_signed()
    heavy = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(1_000_001)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .build(b"pw")
    )
    data = pkcs12.serialize_key_and_certificates(None, key, cert, None, heavy)
    assert max(pfxscan.iteration_counts(data)) == 1_000_001
    refused(load_pfx, data, "pw", match="more than 1,000,000 key derivation iterations")
    refused(load_any, base64.b64encode(data), None, "pw", match="key derivation iterations")


def der(tag: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes([tag, len(body)]) + body


def test_pfx_scan_reads_ber_indefinite_lengths() -> None:
    pbkdf2 = der(0x06, bytes.fromhex("2a864886f70d01050c"))
    params = der(0x30, der(0x04, b"salt5678") + der(0x02, (5000).to_bytes(2, "big")))
    alg = der(0x30, pbkdf2 + params)
    ber = b"\x30\x80" + der(0x02, b"\x03") + b"\x30\x80" + alg + b"\x00\x00" + b"\x00\x00"
    assert pfxscan.iteration_counts(ber) == [5000]
    # The same count inside an OCTET STRING that is itself DER, and in a BER
    # constructed OCTET STRING split in two pieces.
    wrapped = der(0x30, der(0x02, b"\x03") + der(0x30, der(0x04, alg)))
    assert pfxscan.iteration_counts(wrapped) == [5000]
    split = der(0x30, der(0x02, b"\x03") + der(0x24, der(0x04, alg[:5]) + der(0x04, alg[5:])))
    assert pfxscan.iteration_counts(split) == [5000]


@pytest.mark.parametrize(
    "data",
    [b"", b"\x30", b"\x30\x05\x02\x01", b"\x04\x00", b"\x30\x80\x02\x01\x03",
     b"\x30\x84\xff\xff\xff\xff"],
    ids=["empty", "tag-only", "truncated", "not-a-sequence", "no-end-of-contents", "huge-length"],
)
def test_pfx_scan_refuses_malformed(data: bytes) -> None:
    with pytest.raises(pfxscan.DerError):
        pfxscan.iteration_counts(data)
    assert refused(load_pfx, data, None) == PFX_MESSAGE


def test_pfx_scan_refuses_deep_nesting() -> None:
    body = b"\x05\x00"
    for _ in range(100):
        body = b"\x30\x80" + body + b"\x00\x00"
    data = b"\x30\x80\x02\x01\x03" + body + b"\x00\x00"
    with pytest.raises(pfxscan.DerLimitError):
        pfxscan.iteration_counts(data)
    assert refused(load_pfx, data, None) == PFX_MESSAGE


def test_openssl_pkcs12_text_output_imports_as_pem(tmp_path: Path) -> None:
    """`openssl pkcs12 -nodes` writes 'Bag Attributes' lines around the PEM blocks."""
    key, cert = self_signed("RSA-2048")
    pfx = tmp_path / "in.pfx"
    pfx.write_bytes(to_pfx(key, cert, [], "pw"))
    dumped = openssl("pkcs12", "-in", str(pfx), "-passin", "pass:pw", "-noenc")
    assert dumped.returncode == 0, dumped.stderr
    assert dumped.stdout.startswith(b"Bag Attributes")
    for data in (dumped.stdout, base64.b64encode(dumped.stdout)):
        for ctype in (None, "application/x-pem-file"):
            loaded = load_any(data, ctype, None)
            assert loaded.certificate == cert and key_matches(cert, loaded.key)


def test_pem_with_crlf_line_ends(pki: Pki) -> None:
    content = (pkcs8(pki.leaf_key) + pem(pki.leaf) + pem(pki.inter)).replace(b"\n", b"\r\n")
    loaded = load_pem(content)
    assert loaded.certificate == pki.leaf and loaded.chain == (pki.inter,)


def test_pem_block_count_limit() -> None:
    refused(load_pem, b"-----BEGIN X-----\n" * 65, match="more than 64 blocks")


def test_certificate_with_damaged_extensions_is_refused() -> None:
    key, cert = self_signed(dns_names=("bad.example",))
    raw = cert.public_bytes(serialization.Encoding.DER)
    at = raw.index(b"\x82\x0bbad.example")
    damaged = x509.load_der_x509_certificate(raw[:at] + b"\x84" + raw[at + 1 :])
    refused(load_pem, pem(damaged), match="extensions that can not be read")
    refused(x509_properties, damaged, match="can not be read")


def test_certificate_only_with_unsupported_key_type() -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(ed.public_key()).serial_number(1)
        .not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1))
        .sign(ed, None)
    )
    refused(load_pem, pem(cert), match="certificate's key type is not supported")


@pytest.mark.parametrize(
    ("not_before", "not_after", "months"),
    [
        ((2025, 1, 1, 0, 0), (2025, 4, 1, 0, 0), 3),  # 90 days
        ((2025, 1, 1, 0, 0), (2025, 4, 2, 0, 0), 3),  # 91 days: within a day's grace
        ((2025, 1, 1, 0, 0), (2025, 4, 2, 0, 1), 4),
        ((2025, 1, 1, 0, 0), (2026, 2, 2, 0, 0), 13),  # 397 days
        ((2024, 12, 31, 23, 0), (2026, 1, 1, 0, 0), 12),  # backdated by an hour
        ((2025, 1, 1, 0, 0), (2025, 1, 1, 1, 0), 1),  # under a month is one month
        ((2025, 1, 1, 0, 0), (2025, 1, 1, 0, 0), 0),
        ((2025, 1, 2, 0, 0), (2025, 1, 1, 0, 0), 0),
    ],
)
def test_validity_months_read_back(
    not_before: tuple[int, int, int, int, int], not_after: tuple[int, int, int, int, int],
    months: int,
) -> None:
    start = dt.datetime(*not_before, tzinfo=dt.UTC)
    end = dt.datetime(*not_after, tzinfo=dt.UTC)
    assert certs.validity_months(start, end) == months
