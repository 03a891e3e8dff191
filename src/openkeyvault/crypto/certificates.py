"""The X.509 toolkit of the Certificates API: pure functions on `cryptography` objects.

Nothing here stores anything. Every failure caused by the caller's input raises
`CertificateInputError`, whose message is safe to show: it never echoes key material,
certificate bytes or passwords.

`x509_properties` reports every subject alternative name kind of the 2025-07-01 spec,
`ipAddresses` and `uris` included.

Encrypted PEM private keys (PKCS#8 "ENCRYPTED PRIVATE KEY" and legacy
"Proc-Type: 4,ENCRYPTED" blocks) are read when the password is given.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import datetime as dt
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID, ObjectIdentifier

from openkeyvault.crypto.jwk import CURVES, curve_name
from openkeyvault.crypto.jwk import PrivateKey as PrivateKey  # re-exported
from openkeyvault.crypto.jwk import PublicKey as PublicKey  # re-exported
from openkeyvault.crypto.pfxscan import DerError, iteration_counts

# Input limits.
MAX_INPUT_BYTES = 256 * 1024  # a decoded PFX or PEM file
MAX_SUBJECT_CHARS = 1024
MAX_PASSWORD_CHARS = 1024
MAX_CERTIFICATES = 32  # certificates in one PFX/PEM file
MAX_NAMES_PER_KIND = 100  # subject alternative names of one kind, EKUs
MAX_VALIDITY_MONTHS = 1200
MAX_PFX_ITERATIONS = 1_000_000  # MAC and PBE iteration counts a PFX may ask for
MAX_PEM_BLOCKS = 64
UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")

CONTENT_TYPE_PKCS12 = "application/x-pkcs12"
CONTENT_TYPE_PEM = "application/x-pem-file"

_PFX_UNREADABLE = (
    "The specified PKCS#12 X.509 certificate content can not be read. "
    "Please check if certificate is in valid PKCS#12 format."
)
_PEM_UNREADABLE = (
    "The specified PEM X.509 certificate content can not be read. "
    "Please check if certificate is in valid PEM format."
)


class CertificateInputError(ValueError):
    """The input is not a usable certificate, key or subject (message safe to show)."""


@dataclass(frozen=True)
class X509Request:
    """What a certificate policy's x509_props ask for."""

    subject: str  # Azure-style DN text: "CN=a, O=b, OU=c, L=..., S=..., C=..., E=..."
    dns_names: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    upns: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    key_usage: tuple[str, ...] = ()  # Azure names: digitalSignature, nonRepudiation, ...
    ekus: tuple[str, ...] = ()  # OID strings, e.g. "1.3.6.1.5.5.7.3.1"
    validity_months: int = 12
    uris: tuple[str, ...] = ()


class Loaded(NamedTuple):
    """A certificate read from PFX or PEM: its key (if any), the leaf, the chain.

    The chain holds the certificates that link the leaf to its root, in order
    (each signed by the next), then any other certificates of the file in their
    original order.
    """

    key: PrivateKey | None
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]


# ---------------------------------------------------------------------------
# Distinguished names

# Azure (.NET X500DistinguishedName) keys → OIDs. The first key listed for an OID is
# the one used when a name is written back.
_DN_KEYS: dict[str, ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "L": NameOID.LOCALITY_NAME,
    "S": NameOID.STATE_OR_PROVINCE_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "C": NameOID.COUNTRY_NAME,
    "E": NameOID.EMAIL_ADDRESS,
    "EMAIL": NameOID.EMAIL_ADDRESS,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "STREET": NameOID.STREET_ADDRESS,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "T": NameOID.TITLE,
    "TITLE": NameOID.TITLE,
    "G": NameOID.GIVEN_NAME,
    "GN": NameOID.GIVEN_NAME,
    "GIVENNAME": NameOID.GIVEN_NAME,
    "SN": NameOID.SURNAME,
    "SURNAME": NameOID.SURNAME,
    "I": NameOID.INITIALS,
    "INITIALS": NameOID.INITIALS,
    "POSTALCODE": NameOID.POSTAL_CODE,
    "UID": NameOID.USER_ID,
    "DNQUALIFIER": NameOID.DN_QUALIFIER,
}
_DN_NAMES: dict[ObjectIdentifier, str] = {}
for _key, _oid in _DN_KEYS.items():
    _DN_NAMES.setdefault(_oid, _key)

_OID_RE = re.compile(r"^[0-2](\.(0|[1-9][0-9]{0,19})){1,30}$")
_COUNTRY_RE = re.compile(r"^[A-Za-z]{2}$")
_PRINTABLE_RE = re.compile(r"^[A-Za-z0-9 '()+,\-./:=?]+$")
_ASCII_ATTRS = {NameOID.EMAIL_ADDRESS, NameOID.DOMAIN_COMPONENT}
# Upper bounds from X.520 / RFC 5280 Appendix A.
_ATTR_MAX = {
    NameOID.COMMON_NAME: 64,
    NameOID.ORGANIZATION_NAME: 64,
    NameOID.ORGANIZATIONAL_UNIT_NAME: 64,
    NameOID.LOCALITY_NAME: 128,
    NameOID.STATE_OR_PROVINCE_NAME: 128,
    NameOID.TITLE: 64,
    NameOID.SERIAL_NUMBER: 64,
    NameOID.EMAIL_ADDRESS: 255,
}
_ESCAPABLE = set(',;+"\\<>=#') | {" "}


def _is_utf8(text: str) -> bool:
    """False for text holding unpaired surrogates (JSON can carry them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _split_rdns(text: str) -> list[list[tuple[str, str]]]:
    """Splits DN text into RDNs of (key, value) pairs, honouring quotes and escapes."""
    rdns: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    key: str | None = None
    buf: list[str] = []
    quoted = False
    was_quoted = False
    i = 0
    n = len(text)

    def finish_pair() -> None:
        nonlocal key, buf, was_quoted
        if key is None:
            raw = "".join(buf).strip()
            if raw:
                raise CertificateInputError(
                    "The subject name is not valid: each part must be KEY=value."
                )
            raise CertificateInputError("The subject name is not valid: it has an empty part.")
        value = "".join(buf)
        value = value if was_quoted else value.strip()
        current.append((key, value))
        key, buf, was_quoted = None, [], False

    while i < n:
        ch = text[i]
        if quoted:
            if ch == '"':
                if i + 1 < n and text[i + 1] == '"':  # "" inside quotes is one quote
                    buf.append('"')
                    i += 2
                    continue
                quoted = False
            elif ch == "\\" and i + 1 < n:
                i += 1
                buf.append(text[i])
            else:
                buf.append(ch)
            i += 1
            continue
        if ch == "\\":
            if i + 1 >= n:
                raise CertificateInputError("The subject name is not valid: it ends with '\\'.")
            nxt = text[i + 1]
            if nxt in _ESCAPABLE:
                buf.append(nxt)
                i += 2
                continue
            pair = text[i + 1 : i + 3]
            if re.fullmatch(r"[0-9A-Fa-f]{2}", pair):
                # A hex-escaped byte sequence (RFC 4514), decoded as UTF-8 below.
                raw = bytearray()
                while i < n and text[i] == "\\" and re.fullmatch(
                    r"[0-9A-Fa-f]{2}", text[i + 1 : i + 3]
                ):
                    raw.append(int(text[i + 1 : i + 3], 16))
                    i += 3
                try:
                    buf.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise CertificateInputError(
                        "The subject name is not valid: an escaped value is not UTF-8."
                    ) from None
                continue
            raise CertificateInputError("The subject name is not valid: a bad '\\' escape.")
        if key is None and ch == "=":
            key = "".join(buf).strip()
            buf = []
            if not key:
                raise CertificateInputError("The subject name is not valid: a part has no key.")
        elif key is not None and ch == '"' and not "".join(buf).strip():
            if was_quoted:
                raise CertificateInputError("The subject name is not valid: misplaced quote.")
            buf = []
            quoted = True
            was_quoted = True
        elif ch in ",;+":
            finish_pair()
            if ch != "+":
                rdns.append(current)
                current = []
        elif was_quoted:
            if not ch.isspace():
                raise CertificateInputError(
                    "The subject name is not valid: text after a quoted value."
                )
        else:
            buf.append(ch)
        i += 1
    if quoted:
        raise CertificateInputError("The subject name is not valid: unterminated quote.")
    finish_pair()
    rdns.append(current)
    return rdns


def _name_oid(key: str) -> ObjectIdentifier:
    upper = key.upper()
    if upper in _DN_KEYS:
        return _DN_KEYS[upper]
    dotted = upper[4:] if upper.startswith("OID.") else key
    if _OID_RE.match(dotted):
        return ObjectIdentifier(dotted)
    raise CertificateInputError(
        f"The subject name is not valid: unknown attribute '{key[:32]}'."
    )


def _name_attribute(key: str, value: str) -> x509.NameAttribute[str]:
    oid = _name_oid(key)
    label = key[:32]
    if not value:
        raise CertificateInputError(f"The subject name is not valid: '{label}' has no value.")
    limit = _ATTR_MAX.get(oid, 256)
    if len(value) > limit:
        raise CertificateInputError(
            f"The subject name is not valid: '{label}' is longer than {limit} characters."
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or not _is_utf8(value):
        raise CertificateInputError(
            f"The subject name is not valid: '{label}' holds a control character or an "
            "unpaired surrogate."
        )
    if oid == NameOID.COUNTRY_NAME:
        if not _COUNTRY_RE.match(value):
            raise CertificateInputError(
                "The subject name is not valid: C must be a two-letter country code."
            )
        value = value.upper()
    elif oid in _ASCII_ATTRS and not value.isascii():
        raise CertificateInputError(f"The subject name is not valid: '{label}' must be ASCII.")
    elif oid in (NameOID.SERIAL_NUMBER, NameOID.DN_QUALIFIER) and not _PRINTABLE_RE.match(value):
        raise CertificateInputError(
            f"The subject name is not valid: '{label}' holds characters a PrintableString "
            "cannot."
        )
    try:
        return x509.NameAttribute(oid, value)
    except ValueError:
        raise CertificateInputError(
            f"The subject name is not valid: '{label}' has a value it cannot hold."
        ) from None


def parse_subject(text: str) -> x509.Name:
    """Azure's DN syntax to an X.509 name.

    RDNs are separated by ',' or ';' (and '+' joins attributes into one RDN); values
    may be quoted ("a, b") or escaped (a\\, b); keys are case-insensitive (CN, O, OU,
    L, S/ST, C, E/EMAILADDRESS, DC, STREET, SERIALNUMBER, T, G, SN, I, POSTALCODE,
    UID, DNQUALIFIER, OID.n.n or a dotted OID). The text is read most-specific first,
    as Windows and RFC 4514 write it: "CN=a, O=b" encodes O first, then CN.
    An empty (or blank) text is the empty name.
    """
    if not isinstance(text, str):
        raise CertificateInputError("The subject name must be a string.")
    if len(text) > MAX_SUBJECT_CHARS:
        raise CertificateInputError(
            f"The subject name is longer than {MAX_SUBJECT_CHARS} characters."
        )
    if not text.strip():
        return x509.Name([])
    built = []
    for rdn in _split_rdns(text):
        attributes = [_name_attribute(k, v) for k, v in rdn]
        try:
            built.append(x509.RelativeDistinguishedName(attributes))
        except ValueError:
            raise CertificateInputError(
                "The subject name is not valid: an attribute repeats within one '+' group."
            ) from None
    return x509.Name(list(reversed(built)))


def _dn_value(value: str) -> str:
    if value and (
        any(c in value for c in ',;+"\\<>=#') or value[0].isspace() or value[-1].isspace()
    ):
        return '"' + value.replace("\\", "\\\\").replace('"', '""') + '"'
    return value


def format_subject(name: x509.Name) -> str:
    """An X.509 name as Azure writes it ("CN=a, O=b"), readable by `parse_subject`."""
    parts = []
    for rdn in reversed(name.rdns):
        attrs = []
        for attr in rdn:
            key = _DN_NAMES.get(attr.oid, f"OID.{attr.oid.dotted_string}")
            value = attr.value if isinstance(attr.value, str) else attr.value.hex()
            attrs.append(f"{key}={_dn_value(value)}")
        parts.append(" + ".join(attrs))
    return ", ".join(parts)


# ---------------------------------------------------------------------------
# Extensions

_KEY_USAGES: dict[str, str] = {
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
_KEY_USAGE_BY_LOWER = {k.lower(): k for k in _KEY_USAGES}

_DNS_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_EMAIL_LOCAL_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[!-~]+$")


def _dedupe(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for v in values:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def _check_count(values: Sequence[str], what: str) -> None:
    if len(values) > MAX_NAMES_PER_KIND:
        raise CertificateInputError(f"At most {MAX_NAMES_PER_KIND} {what} are allowed.")


def _dns_name(value: str) -> str:
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    ok = (
        isinstance(value, str)
        and value.isascii()
        and 0 < len(name) <= 253
        and all(_DNS_LABEL_RE.match(lb) for lb in (labels[1:] if labels[0] == "*" else labels))
        and (labels[0] != "*" or len(labels) > 1)
    )
    if not ok:
        raise CertificateInputError(
            f"The DNS name '{value[:64]}' is not valid (ASCII labels of letters, digits and "
            "hyphens; an internationalised name must be given in its xn-- form)."
        )
    return name


def _email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    ok = bool(at) and value.isascii() and len(value) <= 254 and _EMAIL_LOCAL_RE.match(local)
    if ok:
        try:
            _dns_name(domain)
        except CertificateInputError:
            ok = False
    if not ok:
        raise CertificateInputError(f"The email address '{value[:64]}' is not valid.")
    return value


def _upn(value: str) -> x509.OtherName:
    local, at, domain = value.rpartition("@")
    if (
        not at
        or not local
        or not domain
        or len(value) > 256
        or any(c.isspace() or ord(c) < 0x20 for c in value)
        or not _is_utf8(value)
    ):
        raise CertificateInputError(
            f"The user principal name '{value[:64]}' is not valid (name@domain)."
        )
    return x509.OtherName(UPN_OID, _der_utf8(value))


def _ip(value: str) -> x509.IPAddress:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        raise CertificateInputError(f"The IP address '{value[:64]}' is not valid.") from None


def _uri(value: str) -> x509.UniformResourceIdentifier:
    if len(value) > 2048 or not _URI_RE.match(value):
        raise CertificateInputError(f"The URI '{value[:64]}' is not valid.")
    return x509.UniformResourceIdentifier(value)


def _der_utf8(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"\x0c" + _der_length(len(data)) + data


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _read_der_string(data: bytes) -> str | None:
    """The text of a DER UTF8String/IA5String/PrintableString/BMPString, else None."""
    if len(data) < 2 or data[0] not in (0x0C, 0x16, 0x13, 0x1E):
        return None
    length = data[1]
    offset = 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or len(data) < 2 + count:
            return None
        length = int.from_bytes(data[2 : 2 + count], "big")
        offset = 2 + count
    body = data[offset:]
    if len(body) != length:
        return None
    try:
        return body.decode("utf-16-be" if data[0] == 0x1E else "utf-8")
    except UnicodeDecodeError:
        return None


def _general_names(req: X509Request) -> list[x509.GeneralName]:
    for values, what in (
        (req.dns_names, "DNS names"),
        (req.emails, "email addresses"),
        (req.upns, "user principal names"),
        (req.ip_addresses, "IP addresses"),
        (req.uris, "URIs"),
    ):
        if not all(isinstance(v, str) for v in values):
            raise CertificateInputError(f"The {what} must be strings.")
        _check_count(values, what)
    names: list[x509.GeneralName] = []
    names += [x509.DNSName(_dns_name(v)) for v in _dedupe(req.dns_names)]
    names += [x509.RFC822Name(_email(v)) for v in _dedupe(req.emails)]
    names += [_upn(v) for v in _dedupe(req.upns)]
    ips = _dedupe(str(_ip(v).value) for v in req.ip_addresses)
    names += [x509.IPAddress(ipaddress.ip_address(v)) for v in ips]
    names += [_uri(v) for v in _dedupe(req.uris)]
    return names


def key_usage_extension(names: Sequence[str]) -> x509.KeyUsage | None:
    """Azure key usage names (case-insensitive) to a KeyUsage extension value, or None
    when no bit is left to set.

    Azure accepts encipherOnly/decipherOnly without keyAgreement (the policy keeps them).
    RFC 5280 (4.2.1.3) leaves their meaning undefined then, and common X.509 readers
    (pyca/cryptography among them) refuse a certificate that sets them alone, so the
    certificate leaves those two bits out and stays readable everywhere."""
    if len(names) > len(_KEY_USAGES) * 2:
        raise CertificateInputError("Too many key usages.")
    flags = dict.fromkeys(_KEY_USAGES.values(), False)
    for name in names:
        canonical = _KEY_USAGE_BY_LOWER.get(name.lower()) if isinstance(name, str) else None
        if canonical is None:
            raise CertificateInputError(
                f"Unknown key usage '{str(name)[:32]}'; use one of {', '.join(_KEY_USAGES)}."
            )
        flags[_KEY_USAGES[canonical]] = True
    if not flags["key_agreement"]:
        flags["encipher_only"] = flags["decipher_only"] = False
    if not any(flags.values()):
        return None  # RFC 5280: a KeyUsage extension sets at least one bit
    return x509.KeyUsage(**flags)


def eku_extension(oids: Sequence[str]) -> x509.ExtendedKeyUsage:
    """EKU OID strings to an ExtendedKeyUsage extension value."""
    _check_count(oids, "enhanced key usages")
    usages = []
    for value in _dedupe(oids):
        if not isinstance(value, str) or not _OID_RE.match(value):
            raise CertificateInputError(
                f"The enhanced key usage '{str(value)[:64]}' is not an OID such as "
                "1.3.6.1.5.5.7.3.1."
            )
        try:
            usages.append(ObjectIdentifier(value))
        except ValueError:
            raise CertificateInputError(
                f"The enhanced key usage '{value[:64]}' is not a valid OID."
            ) from None
    return x509.ExtendedKeyUsage(usages)


def _request_extensions(
    req: X509Request, name: x509.Name
) -> list[tuple[x509.ExtensionType, bool]]:
    exts: list[tuple[x509.ExtensionType, bool]] = []
    sans = _general_names(req)
    if not len(name) and not sans:
        raise CertificateInputError(
            "A certificate needs a subject name or at least one subject alternative name."
        )
    if sans:
        # RFC 5280 4.2.1.6: critical when the subject is empty.
        exts.append((x509.SubjectAlternativeName(sans), not len(name)))
    usage = key_usage_extension(req.key_usage) if req.key_usage else None
    if usage is not None:
        exts.append((usage, True))
    if req.ekus:
        exts.append((eku_extension(req.ekus), False))
    return exts


# ---------------------------------------------------------------------------
# Building certificates and requests


def add_months(when: dt.datetime, months: int) -> dt.datetime:
    """Calendar months later; the day is clamped to the month's end (Jan 31 + 1 = Feb 28/29)."""
    year, month0 = divmod(when.month - 1 + months, 12)
    year += when.year
    day = min(when.day, calendar.monthrange(year, month0 + 1)[1])
    return when.replace(year=year, month=month0 + 1, day=day)


def _utc(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    return now.astimezone(dt.UTC).replace(microsecond=0)


def signature_hash(key: Any) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    """The hash a key signs certificates with: SHA-256 for RSA, matched to the curve for EC."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return hashes.SHA256()
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        size = key.curve.key_size
        if key.curve.name not in {cls().name for cls, _ in CURVES.values()}:
            raise CertificateInputError("The key's elliptic curve is not supported.")
        if size > 384:
            return hashes.SHA512()
        if size > 256:
            return hashes.SHA384()
        return hashes.SHA256()
    raise CertificateInputError("The key type is not supported; use an RSA or EC key.")


def _check_key(key: Any) -> None:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return
    signature_hash(key)  # raises for anything other than a supported EC curve


def build_certificate(
    req: X509Request,
    public_key: PublicKey,
    signer: PrivateKey,
    issuer: x509.Certificate | None,
    now: dt.datetime,
    *,
    ca: bool = False,
) -> x509.Certificate:
    """Self-signed when `issuer` is None, else signed by the issuer's key `signer`.

    notBefore is `now` (to the second), notAfter `validity_months` calendar months
    later. The serial number is random; SKI is always set, AKI names the signing
    key; BasicConstraints (critical) carries `ca`; KeyUsage is critical.
    """
    builder = certificate_builder(req, public_key, issuer, now, ca=ca)
    digest = signature_hash(signer)
    if issuer is None and not key_matches_public(public_key, signer):
        raise CertificateInputError("A self-signed certificate must be signed by its own key.")
    if issuer is not None and not key_matches(issuer, signer):
        raise CertificateInputError("The signing key does not match the issuer certificate.")
    return builder.sign(signer, digest)


def certificate_builder(
    req: X509Request,
    public_key: PublicKey,
    issuer: x509.Certificate | None,
    now: dt.datetime,
    *,
    ca: bool = False,
) -> x509.CertificateBuilder:
    """What `build_certificate` signs: the complete certificate but its signature."""
    if not isinstance(req.validity_months, int) or not (
        1 <= req.validity_months <= MAX_VALIDITY_MONTHS
    ):
        raise CertificateInputError(
            f"The validity must be between 1 and {MAX_VALIDITY_MONTHS} months."
        )
    _check_key(public_key)
    name = parse_subject(req.subject)
    not_before = _utc(now)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if issuer is None else issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(add_months(not_before, req.validity_months))
    )
    for ext, critical in _request_extensions(req, name):
        builder = builder.add_extension(ext, critical=critical)
    builder = builder.add_extension(
        x509.BasicConstraints(ca=ca, path_length=None), critical=True
    )
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
    )
    if issuer is None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
    else:
        try:
            ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except x509.ExtensionNotFound:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.public_key()  # type: ignore[arg-type]
            )
    return builder.add_extension(aki, critical=False)


def build_csr(req: X509Request, private_key: PrivateKey) -> x509.CertificateSigningRequest:
    """A PKCS#10 request carrying the request's subject, SANs, key usage and EKUs."""
    return csr_builder(req).sign(private_key, signature_hash(private_key))


def csr_builder(req: X509Request) -> x509.CertificateSigningRequestBuilder:
    """What `build_csr` signs (the key's SubjectPublicKeyInfo is the signer's)."""
    name = parse_subject(req.subject)
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    for ext, critical in _request_extensions(req, name):
        builder = builder.add_extension(ext, critical=critical)
    return builder


# ---------------------------------------------------------------------------
# Keys and chains


def _public(key: Any) -> Any:
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key.public_key()
    return key


def _spki(key: Any) -> bytes | None:
    pub = _public(key)
    if not isinstance(pub, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return None
    return pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_matches_public(public_key: Any, key: Any) -> bool:
    """True when both keys (private or public) have the same public key."""
    a, b = _spki(public_key), _spki(key)
    return a is not None and a == b


def key_matches(certificate: x509.Certificate, key: Any) -> bool:
    """True when `key` (private or public) is the certificate's key."""
    try:
        cert_key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return False
    return key_matches_public(cert_key, key)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def check_chain(leaf: x509.Certificate, chain: Sequence[x509.Certificate]) -> None:
    """Each certificate is signed by the next one; CertificateInputError otherwise."""
    if len(chain) + 1 > MAX_CERTIFICATES:
        raise CertificateInputError(
            f"A chain holds at most {MAX_CERTIFICATES} certificates, the leaf included."
        )
    certs = [leaf, *chain]
    for index, (cert, issuer) in enumerate(zip(certs, certs[1:], strict=False)):
        if not _issued_by(cert, issuer):
            raise CertificateInputError(
                f"The certificate chain is not in order: certificate {index} is not signed "
                f"by certificate {index + 1}."
            )


def _order(
    leaf: x509.Certificate, others: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """The certificates linking `leaf` to its root in order, then the rest as given."""
    remaining = [c for c in others if c != leaf]
    ordered: list[x509.Certificate] = []
    current = leaf
    while remaining and not (current.issuer == current.subject and _issued_by(current, current)):
        nxt = next(
            (c for c in remaining if c.subject == current.issuer and _issued_by(current, c)),
            None,
        )
        if nxt is None:
            break
        ordered.append(nxt)
        remaining.remove(nxt)
        current = nxt
    return tuple(ordered + remaining)


def _pick_leaf(key: PrivateKey | None, certs: Sequence[x509.Certificate]) -> x509.Certificate:
    if key is not None:
        for cert in certs:
            if key_matches(cert, key):
                return cert
        raise CertificateInputError("The private key does not match any certificate given.")
    # Without a key: the certificate that issued none of the others.
    for cert in certs:
        if not any(
            other is not cert and other.issuer == cert.subject and _issued_by(other, cert)
            for other in certs
        ):
            return cert
    return certs[0]


def _check_loaded_key(key: Any) -> PrivateKey | None:
    if key is None:
        return None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertificateInputError("The private key type is not supported; use RSA or EC.")
    _check_key(key)
    return key


def _assemble(key: Any, certs: list[x509.Certificate]) -> Loaded:
    if not certs:
        raise CertificateInputError("The content holds no X.509 certificate.")
    if len(certs) > MAX_CERTIFICATES:
        raise CertificateInputError(
            f"The content holds more than {MAX_CERTIFICATES} certificates."
        )
    for cert in certs:
        try:
            cert.extensions  # noqa: B018 - parsed lazily; damaged extensions fail here
        except ValueError:
            raise CertificateInputError(
                "A certificate in the content has extensions that can not be read."
            ) from None
    private = _check_loaded_key(key)
    leaf = _pick_leaf(private, certs)
    try:
        _check_key(leaf.public_key())
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateInputError(
            "The certificate's key type is not supported; use RSA or EC."
        ) from None
    return Loaded(private, leaf, _order(leaf, certs))


def _password_bytes(password: str | None) -> bytes | None:
    if password is None:
        return None
    # OpenSSL reads passwords as C strings: a NUL would silently cut one short.
    if (
        not isinstance(password, str)
        or len(password) > MAX_PASSWORD_CHARS
        or "\x00" in password
        or not _is_utf8(password)
    ):
        raise CertificateInputError("The password is not valid.")
    return password.encode("utf-8")


def _check_size(data: bytes) -> None:
    if len(data) > MAX_INPUT_BYTES:
        raise CertificateInputError(
            f"The certificate content is larger than {MAX_INPUT_BYTES // 1024} KiB."
        )


# ---------------------------------------------------------------------------
# Reading and writing PFX and PEM


def load_pfx(data: bytes, password: str | None) -> Loaded:
    """A PKCS#12 file (DER bytes). An empty password and no password are the same."""
    _check_size(data)
    pwd = _password_bytes(password)
    try:
        counts = iteration_counts(data)
    except DerError:
        raise CertificateInputError(_PFX_UNREADABLE) from None
    if any(count > MAX_PFX_ITERATIONS for count in counts):
        raise CertificateInputError(
            f"The PKCS#12 content asks for more than {MAX_PFX_ITERATIONS:,} key derivation "
            "iterations."
        )
    attempts = [pwd] if pwd else [None, b""]
    for attempt in attempts:
        try:
            bundle = pkcs12.load_pkcs12(data, attempt)
            break
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
    else:
        raise CertificateInputError(_PFX_UNREADABLE)
    certs: list[x509.Certificate] = []
    if bundle.cert is not None:
        certs.append(bundle.cert.certificate)
    certs += [c.certificate for c in bundle.additional_certs]
    return _assemble(bundle.key, certs)


_PEM_BLOCK_RE = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]{1,40})-----[\s\S]*?-----END \1-----", re.ASCII
)
_KEY_LABELS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"ENCRYPTED PRIVATE KEY"}


def _load_pem_key(block: bytes, password: bytes | None) -> Any:
    encrypted = b"ENCRYPTED" in block.split(b"\n", 3)[0] or b"Proc-Type: 4,ENCRYPTED" in block
    if encrypted and not password:
        raise CertificateInputError(
            "The PEM private key is encrypted; give its password to import it."
        )
    try:
        return serialization.load_pem_private_key(block, password if encrypted else None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if encrypted:
            raise CertificateInputError(
                "The PEM private key can not be decrypted: the password is wrong or the "
                "key is damaged."
            ) from None
        raise CertificateInputError(_PEM_UNREADABLE) from None


_B64_TEXT_RE = re.compile(rb"[A-Za-z0-9+/=\s]+")
_NOT_A_CERTIFICATE = ("An x5c entry is not an X.509 certificate: give base64 of the DER "
                      "certificate or of its PEM text.")


def merge_certificates(data: bytes) -> list[x509.Certificate]:
    """The certificates of one decoded x5c entry of a merge, in order: DER, PEM text (one
    or more CERTIFICATE blocks), or the base64 body of a PEM block without its headers,
    which is what the SDKs send when handed PEM."""
    _check_size(data)
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        pass
    if b"-----BEGIN" in data:
        if data.count(b"-----BEGIN ") > MAX_PEM_BLOCKS:
            raise CertificateInputError(
                f"The PEM content holds more than {MAX_PEM_BLOCKS} blocks.")
        found = list(_PEM_BLOCK_RE.finditer(data))
        if not found or any(m.group(1) != b"CERTIFICATE" for m in found):
            raise CertificateInputError(_NOT_A_CERTIFICATE)
        blocks = [m.group(0) for m in found]
        if len(blocks) > MAX_CERTIFICATES:
            raise CertificateInputError(
                f"The content holds more than {MAX_CERTIFICATES} certificates.")
        try:
            return [x509.load_pem_x509_certificate(b) for b in blocks]
        except ValueError:
            raise CertificateInputError(_NOT_A_CERTIFICATE) from None
    if _B64_TEXT_RE.fullmatch(data):
        try:
            der = base64.b64decode(b"".join(data.split()), validate=True)
            return [x509.load_der_x509_certificate(der)]
        except (binascii.Error, ValueError):
            pass
    raise CertificateInputError(_NOT_A_CERTIFICATE)


def load_pem(data: bytes, password: str | None = None) -> Loaded:
    """PEM text: an optional private key, the leaf and its chain, in any order.

    The private key may be PKCS#8, PKCS#1 (RSA) or SEC1 (EC); an encrypted key is read
    with `password`. Blocks other than keys and certificates are ignored.
    """
    _check_size(data)
    if data.count(b"-----BEGIN ") > MAX_PEM_BLOCKS:
        raise CertificateInputError(f"The PEM content holds more than {MAX_PEM_BLOCKS} blocks.")
    pwd = _password_bytes(password)
    key: Any = None
    certs: list[x509.Certificate] = []
    for match in _PEM_BLOCK_RE.finditer(data):
        label, block = match.group(1), match.group(0)
        if label == b"CERTIFICATE":
            if len(certs) >= MAX_CERTIFICATES:
                raise CertificateInputError(
                    f"The content holds more than {MAX_CERTIFICATES} certificates."
                )
            try:
                certs.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                raise CertificateInputError(_PEM_UNREADABLE) from None
        elif label in _KEY_LABELS:
            if key is not None:
                raise CertificateInputError("The PEM content holds more than one private key.")
            key = _load_pem_key(block, pwd)
    if not certs:
        if key is None and b"-----BEGIN" not in data:
            raise CertificateInputError(_PEM_UNREADABLE)
        raise CertificateInputError("The content holds no X.509 certificate.")
    return _assemble(key, certs)


def _b64decode(data: bytes, unreadable: str) -> bytes:
    if len(data) > 2 * MAX_INPUT_BYTES:
        raise CertificateInputError(
            f"The certificate content is larger than {MAX_INPUT_BYTES // 1024} KiB."
        )
    compact = re.sub(rb"\s+", b"", data)
    if len(compact) > (MAX_INPUT_BYTES * 4) // 3 + 4:
        raise CertificateInputError(
            f"The certificate content is larger than {MAX_INPUT_BYTES // 1024} KiB."
        )
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise CertificateInputError(unreadable) from None


def _looks_pem(data: bytes) -> bool:
    """PEM text (perhaps after other text, as `openssl pkcs12 -nodes` writes it).

    Base64 text never holds '-', and a DER PFX starts with a SEQUENCE tag.
    """
    return not data.startswith(b"\x30") and b"-----BEGIN " in data


def load_any(data: bytes, content_type: str | None, password: str | None) -> Loaded:
    """A certificate import's `value`: base64 PFX, or PEM (as text or base64 of the text).

    `content_type` "application/x-pkcs12" reads a PFX, "application/x-pem-file" PEM;
    None detects which one the content is.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    ctype = content_type.split(";")[0].strip().lower() if content_type else None
    if ctype not in (None, CONTENT_TYPE_PKCS12, CONTENT_TYPE_PEM):
        raise CertificateInputError(
            f"The content type must be {CONTENT_TYPE_PKCS12} or {CONTENT_TYPE_PEM}."
        )
    if _looks_pem(data):
        if ctype == CONTENT_TYPE_PKCS12:
            raise CertificateInputError(
                f"The content is PEM but the content type is {CONTENT_TYPE_PKCS12}."
            )
        return load_pem(data, password)
    raw = _b64decode(data, _PEM_UNREADABLE if ctype == CONTENT_TYPE_PEM else _PFX_UNREADABLE)
    if _looks_pem(raw):
        if ctype == CONTENT_TYPE_PKCS12:
            raise CertificateInputError(
                f"The content is PEM but the content type is {CONTENT_TYPE_PKCS12}."
            )
        return load_pem(raw, password)
    if ctype == CONTENT_TYPE_PEM:
        raise CertificateInputError(_PEM_UNREADABLE)
    return load_pfx(raw, password)


def to_pfx(
    key: PrivateKey | None,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    password: str | None = None,
) -> bytes:
    """PKCS#12 bytes: AES-256-CBC PBES2 (SHA-256 HMAC) with a password, else unencrypted."""
    pwd = _password_bytes(password)
    encryption: serialization.KeySerializationEncryption
    if pwd:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(10000)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(pwd)
        )
    else:
        encryption = serialization.NoEncryption()
    return pkcs12.serialize_key_and_certificates(
        None, key, certificate, list(chain) or None, encryption
    )


def to_pem(
    key: PrivateKey | None, certificate: x509.Certificate, chain: Sequence[x509.Certificate]
) -> bytes:
    """The key (unencrypted PKCS#8), then the leaf, then the chain."""
    parts = []
    if key is not None:
        parts.append(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    parts += [c.public_bytes(serialization.Encoding.PEM) for c in (certificate, *chain)]
    return b"".join(parts)


# ---------------------------------------------------------------------------
# Reading certificates back


def thumbprint(certificate: x509.Certificate) -> bytes:
    """SHA-1 of the DER certificate (x5t)."""
    return hashlib.sha1(  # noqa: S324 - the x5t thumbprint is defined as SHA-1
        certificate.public_bytes(serialization.Encoding.DER)
    ).digest()


_MONTHS_GRACE = dt.timedelta(days=1)


def validity_months(not_before: dt.datetime, not_after: dt.datetime) -> int:
    """The fewest calendar months from `not_before` that reach `not_after` (at least 1).

    A day's grace absorbs the minutes some issuers add around a whole number of
    months (a one-year certificate backdated by an hour is 12 months, not 13).
    """
    if not_after <= not_before:
        return 0
    target = not_after - _MONTHS_GRACE
    months = (target.year - not_before.year) * 12 + target.month - not_before.month
    months = max(months - 1, 0)
    while add_months(not_before, months) < target:
        months += 1
    return max(months, 1)


def x509_properties(certificate: x509.Certificate) -> dict[str, Any]:
    """The policy's x509_props read back from a certificate (the REST field names).

    {"subject", "sans": {"dns_names", "emails", "upns", "ipAddresses", "uris"},
    "ekus", "key_usage", "validity_months"}; kinds and extensions the certificate
    lacks are left out.
    """
    try:
        exts = certificate.extensions
        props: dict[str, Any] = {"subject": format_subject(certificate.subject)}
    except ValueError:
        raise CertificateInputError(
            "The certificate's subject or extensions can not be read."
        ) from None
    try:
        san = exts.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        sans: dict[str, list[str]] = {}
        dns = san.get_values_for_type(x509.DNSName)
        emails = san.get_values_for_type(x509.RFC822Name)
        upns = [
            text
            for other in san.get_values_for_type(x509.OtherName)
            if other.type_id == UPN_OID and (text := _read_der_string(other.value)) is not None
        ]
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        for field, values in (
            ("dns_names", dns),
            ("emails", emails),
            ("upns", upns),
            ("ipAddresses", ips),
            ("uris", uris),
        ):
            if values:
                sans[field] = list(values)
        if sans:
            props["sans"] = sans
    try:
        eku = exts.get_extension_for_class(x509.ExtendedKeyUsage).value
        props["ekus"] = [oid.dotted_string for oid in eku]
    except x509.ExtensionNotFound:
        pass
    try:
        ku = exts.get_extension_for_class(x509.KeyUsage).value
        usages = []
        for azure_name, attr in _KEY_USAGES.items():
            try:
                if getattr(ku, attr):
                    usages.append(azure_name)
            except ValueError:  # encipher_only/decipher_only without key_agreement
                continue
        props["key_usage"] = usages
    except x509.ExtensionNotFound:
        pass
    props["validity_months"] = validity_months(
        certificate.not_valid_before_utc, certificate.not_valid_after_utc
    )
    return props


def key_properties(key_or_public_key: Any) -> dict[str, Any]:
    """{kty, key_size} for RSA, {kty, crv} for EC."""
    pub = _public(key_or_public_key)
    if isinstance(pub, rsa.RSAPublicKey):
        return {"kty": "RSA", "key_size": pub.key_size}
    if isinstance(pub, ec.EllipticCurvePublicKey):
        try:
            return {"kty": "EC", "crv": curve_name(pub)}
        except KeyError:
            raise CertificateInputError("The key's elliptic curve is not supported.") from None
    raise CertificateInputError("The key type is not supported; use an RSA or EC key.")
