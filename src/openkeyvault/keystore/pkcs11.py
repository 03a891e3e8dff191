"""The PKCS#11 KeyStore: RSA, EC and AES (oct) keys generated and held in a PKCS#11 token
(a hardware security module, or SoftHSM2 for development and tests); private-key and
secret-key operations run in the token and the key never leaves it.

Keys are token objects named by a random 16-byte CKA_ID (CKA_LABEL `<prefix>-<id hex>`):
an RSA or EC key a private and a public object, an AES key one CKO_SECRET_KEY object
(CKK_AES, usable to encrypt, decrypt, wrap and unwrap only). The private or secret object
is SENSITIVE and not EXTRACTABLE. The blob the vault layer seals names the objects and
carries the key's backup copy: `{"v": 1, "id": <hex CKA_ID>, "family": "RSA" | "EC" |
"oct", "ir": <base64>, "bits": <int>, "kcv": <hex>, "bk": <hex CKA_ID of the backup key>,
"wrapped": <base64>}`, where `ir` (RSA only) is the RSA key's implicit-rejection secret
(see `pkcs1_v15_decode`), `bits` and `kcv` (oct only) the AES key's size and key check
value (see `_check_value`), and `wrapped` the key wrapped in the token by the deployment's
backup key (see "Backup copies" below); `"exportable": true` marks a key whose private or
secret object stays EXTRACTABLE, for `export` (secure key release). The public-key
operations (verify, encrypt, wrap) run on the host with the public key read from the
token, through `crypto/algorithms.py` like the software backend.

AES keys: encrypt_symmetric and decrypt_symmetric run AES-GCM (CKM_AES_GCM, a 12-byte iv
drawn from the token's random generator, a 16-byte tag), AES-CBC (CKM_AES_CBC) and AES-CBC
with padding (CKM_AES_CBC_PAD) in the token, and wrap and unwrap RFC 3394 key wrap
(CKM_AES_KEY_WRAP). SoftHSM2 2.6 does not take CKM_AES_KEY_WRAP in C_Encrypt and C_Decrypt,
so the bytes to wrap become a session secret key for C_WrapKey, and C_UnwrapKey makes a
readable session secret key of the unwrapped bytes (both destroyed at once); a token that
does take it is used so. SoftHSM2 sets neither CKA_VALUE_LEN nor CKA_CHECK_VALUE on a key
it unwraps: the blob keeps the key's size, and the check value is computed in the token.

SoftHSM2 2.6 pads a key with zero bytes to a multiple of 8 before it wraps it with
CKM_AES_KEY_WRAP_PAD: what a standard unwrapping gives back is the PKCS#8 key followed by
up to 7 zero bytes (OpenSSL's d2i functions read past them; a strict DER parser needs the
first object only). Its own unwrapping accepts them, so backup copies restore as made.

Key attestation: `attest` reads the token's facts about a key (its private object's
protection attributes, CKA_LOCAL among them), and `attestation_signer` holds the
deployment's attestation keys, EC P-384 pairs generated in the token and labelled
`<prefix>-attestation-root` and `<prefix>-attestation`: never a key version's label, so
`held()` never lists them.

Two decryptions are finished on the host, on the output of the raw RSA operation done in
the token (CKM_RSA_X_509): RSA-OAEP-256, because SoftHSM2 refuses OAEP with SHA-256, and
RSA1_5, because a token answers a bad padding with an error, and that error is the oracle
of Bleichenbacher's attack; the host answers with implicit rejection instead, as OpenSSL
does. `Capabilities.host_steps` records both.

Processes and threads. A PKCS#11 module is initialized once per process and reads its
environment then (SoftHSM2: SOFTHSM2_CONF), so the loaded library is kept per module path
for the whole process, and a keystore asking for the same module with another environment
is refused. Nothing is loaded until first use. PKCS#11 state must not be used across
fork: a child process initializes the library again and opens its own sessions on first
use. python-pkcs11 is not safe for concurrent use from several threads, so one lock
serializes every PKCS#11 call in the process. That costs little: a worker process serves
requests on one event-loop thread, and the server uses every core by running several
worker processes, each with its own library, login and sessions.

Login belongs to the application, not to one session, and closing a session opened with
the PIN logs every session out. So the process logs in to a token once, with a session it
keeps open, and each keystore works in its own session opened without the PIN.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pkcs11
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11.constants import DEFAULT, Attribute, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    DeviceRemoved,
    FunctionNotSupported,
    KeyHandleInvalid,
    MechanismInvalid,
    MultipleObjectsReturned,
    MultipleTokensReturned,
    NoSuchKey,
    NoSuchToken,
    ObjectHandleInvalid,
    PKCS11Error,
    SessionClosed,
    SessionHandleInvalid,
    TokenNotPresent,
    UserAlreadyLoggedIn,
    UserNotLoggedIn,
)
from pkcs11.mechanisms import MGF, GCMParams, KeyType, Mechanism

from openkeyvault.crypto import algorithms, ecrecover, transfer
from openkeyvault.crypto.algorithms import (
    AES_SIZES,
    CBCPAD,
    GCM,
    AlgorithmError,
    DecryptionError,
    SignAlg,
)
from openkeyvault.crypto.ecrecover import RecoveryError
from openkeyvault.crypto.jwk import (
    CURVES,
    RSA_SIZES,
    JwkError,
    PrivateKey,
    PublicKey,
    b64u_decode,
    curve_name,
    private_from_jwk,
    public_from_jwk,
    public_jwk,
)
from openkeyvault.crypto.rsapadding import (
    implicit_rejection_kdk,
    oaep_sha256_decode,
    pkcs1_v15_decode,
)
from openkeyvault.keystore import pkcs11_templates, symmetric
from openkeyvault.keystore.base import (
    EC,
    OCT,
    RSA,
    AttestationSigner,
    Capabilities,
    KeyRef,
    KeySpec,
    KeyStoreError,
    KeyStoreUnavailable,
    MetaStore,
    PlainKey,
    StoredKey,
    SymmetricResult,
    WrappedKey,
)

log = logging.getLogger("openkeyvault.keystore")

CACHE_SIZE = 4096
ID_BYTES = 16
IR_BYTES = 32
KCV_BYTES = 3  # an AES key check value: the first bytes of AES-ECB of a zero block

_T = TypeVar("_T")

_BAD_BLOB = "Stored key material has an unexpected type."

# DER of the named-curve EC parameters (an OBJECT IDENTIFIER), Key Vault curve name → OID.
EC_PARAMS: dict[str, bytes] = {
    "P-256": bytes.fromhex("06082a8648ce3d030107"),  # secp256r1, 1.2.840.10045.3.1.7
    "P-256K": bytes.fromhex("06052b8104000a"),  # secp256k1, 1.3.132.0.10
    "P-384": bytes.fromhex("06052b81040022"),  # secp384r1, 1.3.132.0.34
    "P-521": bytes.fromhex("06052b81040023"),  # secp521r1, 1.3.132.0.35
}
_CURVE_BY_PARAMS = {der: crv for crv, der in EC_PARAMS.items()}

# RSASSA-PKCS1-v1_5 signs DigestInfo(hash OID, digest); CKM_RSA_PKCS takes the DigestInfo
# built by the caller. These are its DER prefixes (RFC 8017 §9.2, note 1), with the hash
# and MGF1 mechanisms PSS names for the same hash.
_HASHES: dict[type[hashes.HashAlgorithm], tuple[bytes, Mechanism, MGF]] = {
    hashes.SHA256: (bytes.fromhex("3031300d060960864801650304020105000420"),
                    Mechanism.SHA256, MGF.SHA256),
    hashes.SHA384: (bytes.fromhex("3041300d060960864801650304020205000430"),
                    Mechanism.SHA384, MGF.SHA384),
    hashes.SHA512: (bytes.fromhex("3051300d060960864801650304020305000440"),
                    Mechanism.SHA512, MGF.SHA512),
}
_OAEP_SHA1 = (Mechanism.SHA_1, MGF.SHA1, None)

_RSA_CAPABILITIES = (MechanismFlag.SIGN | MechanismFlag.VERIFY | MechanismFlag.ENCRYPT
                     | MechanismFlag.DECRYPT | MechanismFlag.WRAP | MechanismFlag.UNWRAP)
_EC_CAPABILITIES = MechanismFlag.SIGN | MechanismFlag.VERIFY
_PRIVATE_TEMPLATE: dict[Attribute, Any] = {
    Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False, Attribute.DERIVE: False,
}
_PUBLIC_TEMPLATE: dict[Attribute, Any] = {Attribute.TOKEN: True, Attribute.PRIVATE: False}
# python-pkcs11 sets every capability attribute on an unwrapped key; a private key may not
# carry the public-key ones, so they are left out (DEFAULT drops an attribute).
_UNSET_CAPABILITIES: dict[Attribute, Any] = {
    Attribute.ENCRYPT: DEFAULT, Attribute.VERIFY: DEFAULT, Attribute.WRAP: DEFAULT,
    Attribute.DECRYPT: DEFAULT, Attribute.UNWRAP: DEFAULT,
}
# An AES key: a token object, sensitive, usable to encrypt, decrypt, wrap and unwrap only.
_AES_CAPABILITIES = (MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT | MechanismFlag.WRAP
                     | MechanismFlag.UNWRAP)
_SECRET_TEMPLATE: dict[Attribute, Any] = {
    Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False, Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
    Attribute.WRAP: True, Attribute.UNWRAP: True, Attribute.SIGN: False,
    Attribute.VERIFY: False, Attribute.DERIVE: False,
}
# The classes of a key version's objects, and the class holding each family's key material.
_KEY_OBJECTS = (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY, ObjectClass.SECRET_KEY)
_KEY_CLASS = {RSA: ObjectClass.PRIVATE_KEY, EC: ObjectClass.PRIVATE_KEY,
              OCT: ObjectClass.SECRET_KEY}
AES_SIZE = "An AES key must be 128, 192 or 256 bits (16, 24 or 32 bytes)."
_UNWRAP_FAILED = ("The wrapped key could not be unwrapped with the key-exchange key: it is "
                  "damaged, wrapped to another key, or not a key of the given type and size.")

# Errors after which the session cannot be trusted: the keystore drops its session and
# cache, and the next call starts again.
_SESSION_LOST: tuple[type[PKCS11Error], ...] = (
    SessionClosed, SessionHandleInvalid, DeviceRemoved, TokenNotPresent, UserNotLoggedIn,
)
# A cached object handle no longer names an object (destroyed by another process).
_HANDLE_STALE: tuple[type[PKCS11Error], ...] = (KeyHandleInvalid, ObjectHandleInvalid)
_KEY_GONE = "The key is not in the PKCS#11 token."


class _Missing(KeyStoreError):
    """An object the keystore looked for is not in the token (as this process sees it)."""

# The private object's attributes an attestation reports (CKA_LOCAL: generated in the token).
_ATTESTED: dict[str, Attribute] = {
    "SENSITIVE": Attribute.SENSITIVE, "EXTRACTABLE": Attribute.EXTRACTABLE,
    "ALWAYS_SENSITIVE": Attribute.ALWAYS_SENSITIVE,
    "NEVER_EXTRACTABLE": Attribute.NEVER_EXTRACTABLE, "LOCAL": Attribute.LOCAL,
}
# Backup keys: what follows the prefix in their CKA_LABEL, the `meta` key naming them (+ the
# token label), and the template every key they unwrap must match (CKA_UNWRAP_TEMPLATE),
# for keys made non-exportable and exportable.
BACKUP_LABELS = {False: "backup", True: "backup-exportable"}
BACKUP_META = "hsm_backup_key_"
_BACKUP_UNWRAP: dict[bool, dict[Attribute, bool]] = {
    False: {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
    True: {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True},
}
NOT_EXPORTABLE = "The key is not exportable."
NO_BACKUP_COPY = ("This HSM key was made without a backup copy (before key backup was "
                  "available, or on a token that refuses unwrap templates), so it cannot be "
                  "backed up.")
_BACKUP_KEY_GONE = ("The backup was made with an HSM backup key the token does not hold: it "
                    "can be restored only in the deployment and token that made it.")
_RESTORE_FAILED = ("The backed-up key could not be unwrapped in the HSM with the deployment's "
                   "backup key: the backup is damaged or from another token.")

# Attestation key role → what follows the prefix in its CKA_LABEL.
ATTESTATION_LABELS = {"root": "attestation-root", "signing": "attestation"}
_ATTESTATION_CURVE = "P-384"

HOST_STEPS = {
    "RSA-OAEP-256": "The token does the raw RSA decryption (CKM_RSA_X_509) and the host "
                    "decodes OAEP with SHA-256: SoftHSM2 refuses CKM_RSA_PKCS_OAEP with "
                    "SHA-256.",
    "RSA1_5": "The token does the raw RSA decryption (CKM_RSA_X_509) and the host decodes "
              "PKCS#1 v1.5 with implicit rejection: a bad padding yields a pseudo-random "
              "plaintext instead of a token error, so there is no padding oracle.",
    "export": "The token wraps the exportable key with a fresh AES-256 session key "
              "(CKM_AES_KEY_WRAP_PAD); the host encrypts that AES key to the target's RSA "
              "key with RSA-OAEP (SHA-1, SHA-256 or SHA-384): SoftHSM2 has OAEP with "
              "SHA-1 only. The AES key is on the host for that encryption; the private "
              "key never is.",
}


CAPABILITIES = Capabilities(
    hardware=True, families=frozenset({RSA, EC, OCT}), rsa_sizes=RSA_SIZES,
    curves=tuple(CURVES), sign=frozenset(algorithms.SIGN),
    encrypt=frozenset(algorithms.ENCRYPT), aes_sizes=AES_SIZES,
    symmetric=frozenset(algorithms.AES), export=True, host_steps=HOST_STEPS,
)
_BACKED_UP = dataclasses.replace(CAPABILITIES, backup=True)


# --- The library, shared by the whole process ------------------------------------------

_LOCK = threading.RLock()


def _new_lock_in_child() -> None:
    # A thread of the parent may have held the lock at fork; the child has only one thread.
    global _LOCK
    _LOCK = threading.RLock()


os.register_at_fork(after_in_child=_new_lock_in_child)


@dataclass
class _Login:
    session: Any  # the session that logged in; kept open, closing it would log out all
    pin_mac: bytes  # so a second keystore on the token must know the same PIN


@dataclass
class _Module:
    lib: Any  # pkcs11.lib
    environment: dict[str, str]
    pid: int  # the process that initialized it
    logins: dict[str, _Login] = field(default_factory=dict)  # token label → login
    epoch: int = 0  # counts re-initializations: sessions of an older epoch are gone
    reloaded: float = float("-inf")  # time.monotonic() of the last one
    changed: bool = False  # this process made or destroyed an object since then


# SoftHSM2's file store can miss a key another process made: a process that stores a
# change of its own right after takes the other's step of the token's generation counter
# for its own, and does not read the token's directory again until the counter moves
# once more. A key that is not found is therefore looked for once more after the library
# is initialized again (which reads the token afresh): whenever this process has changed
# the token since the last time (only then can its view be stale), else at most this
# often per process (a key that is really gone costs no more).
RELOAD_INTERVAL = 1.0


_MODULES: dict[str, _Module] = {}
_PIN_KEY = secrets.token_bytes(32)


def _module(path: str, environment: dict[str, str]) -> _Module:
    """The loaded, initialized module at `path` (call with `_LOCK` held)."""
    loaded = _MODULES.get(path)
    if loaded is None:
        os.environ.update(environment)
        try:
            lib = pkcs11.lib(path)
        except (PKCS11Error, OSError) as exc:
            raise KeyStoreUnavailable(
                f"The PKCS#11 module {path} could not be loaded: {str(exc) or type(exc).__name__}"
            ) from None
        loaded = _MODULES[path] = _Module(lib, dict(environment), os.getpid())
    elif loaded.environment != environment:
        raise KeyStoreUnavailable(
            f"The PKCS#11 module {path} is already loaded in this process with another "
            "environment; a module is initialized once per process, so every keystore "
            "using it must give the same environment."
        )
    if loaded.pid != os.getpid():
        _initialize_in_child(loaded)
    return loaded


def _reinitialize(loaded: _Module, when: str) -> None:
    """C_Finalize and C_Initialize: every session and login of the process is gone."""
    loaded.logins.clear()
    with contextlib.suppress(PKCS11Error):
        loaded.lib.finalize()
    try:
        loaded.lib.initialize()
    except PKCS11Error as exc:
        raise KeyStoreUnavailable(
            f"The PKCS#11 module could not be initialized {when} ({type(exc).__name__})."
        ) from None


def _initialize_in_child(loaded: _Module) -> None:
    """After fork, forget the parent's logins (their sessions belong to the parent and are
    not closed from here) and initialize the library again for this process."""
    _reinitialize(loaded, "after fork")
    loaded.pid = os.getpid()


def _reload(loaded: _Module) -> bool:
    """Initialize the library again (call with `_LOCK` held): keystores open new sessions
    (their epoch is stale). False when this process changed nothing in the token since the
    last reload, and that was under RELOAD_INTERVAL ago."""
    now = time.monotonic()
    if not loaded.changed and now - loaded.reloaded < RELOAD_INTERVAL:
        return False
    loaded.reloaded, loaded.changed = now, False
    _reinitialize(loaded, "again")
    loaded.epoch += 1
    return True


def _token(loaded: _Module, label: str) -> Any:
    try:
        return loaded.lib.get_token(token_label=label)
    except NoSuchToken:
        raise KeyStoreUnavailable(f"There is no PKCS#11 token labelled '{label}'.") from None
    except MultipleTokensReturned:
        raise KeyStoreUnavailable(
            f"More than one PKCS#11 token is labelled '{label}'."
        ) from None
    except PKCS11Error as exc:
        raise KeyStoreUnavailable(
            f"The PKCS#11 token '{label}' could not be reached ({type(exc).__name__})."
        ) from None


def _log_in(loaded: _Module, token: Any, label: str, pin: Callable[[], str]) -> None:
    """Log the process in to the token once; later keystores must give the same PIN."""
    try:
        value = pin()
    except KeyStoreUnavailable:
        raise  # the PIN source's own message, written to be shown
    except Exception:  # anything else: say only that it failed, it may quote the PIN
        raise KeyStoreUnavailable("The PKCS#11 PIN could not be read.") from None
    mac = hmac.new(_PIN_KEY, value.encode(), hashlib.sha256).digest()
    login = loaded.logins.get(label)
    if login is not None:
        if not hmac.compare_digest(login.pin_mac, mac):
            raise KeyStoreUnavailable(f"Login to the PKCS#11 token '{label}' failed.")
        return
    try:
        session = token.open(rw=True, user_pin=value)
    except UserAlreadyLoggedIn:
        session = None  # other code in this process logged in, and keeps the login
    except PKCS11Error as exc:
        raise KeyStoreUnavailable(
            f"Login to the PKCS#11 token '{label}' failed ({type(exc).__name__})."
        ) from None
    loaded.logins[label] = _Login(session, mac)


# --- Blobs and key objects -------------------------------------------------------------


@dataclass(frozen=True)
class _Secret:
    """What the blob records of an AES key: its size, and its check value (the token sets
    neither on a key it unwraps)."""

    bits: int
    kcv: bytes


@dataclass(frozen=True)
class _Blob:
    key_id: bytes
    family: str
    ir: bytes  # RSA only (empty for EC and oct)
    backup: _Wrapped | None = None  # the key wrapped by a deployment backup key
    exportable: bool = False  # the private object stays extractable, for `export`
    secret: _Secret | None = None  # oct only


@dataclass(frozen=True)
class _Wrapped:
    backup_id: bytes  # the CKA_ID of the backup key that wrapped it
    wrapped: bytes  # CKM_AES_KEY_WRAP_PAD of the private key (PKCS#8) or the AES key


# The members a blob has for each family, besides v, id and family.
_BLOB_MEMBERS: dict[str, set[str]] = {RSA: {"ir"}, EC: set(), OCT: {"bits", "kcv"}}


def _blob(key_id: bytes, family: str, ir: bytes, backup: _Wrapped | None = None,
          exportable: bool = False, secret: _Secret | None = None) -> bytes:
    doc: dict[str, Any] = {"v": 1, "id": key_id.hex(), "family": family}
    if family == RSA:
        doc["ir"] = base64.b64encode(ir).decode()
    if family == OCT:
        assert secret is not None
        doc["bits"], doc["kcv"] = secret.bits, secret.kcv.hex()
    if exportable:
        doc["exportable"] = True
    if backup is not None:
        doc["bk"] = backup.backup_id.hex()
        doc["wrapped"] = base64.b64encode(backup.wrapped).decode()
    return json.dumps(doc, separators=(",", ":")).encode()


def _parse_blob(raw: bytes, family: str) -> _Blob:
    """The blob's fields, checked strictly; a blob of another shape or family is refused."""
    try:
        doc = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        raise KeyStoreError(_BAD_BLOB) from None
    if not isinstance(doc, dict) or doc.get("family") != family or family not in _BLOB_MEMBERS:
        raise KeyStoreError(_BAD_BLOB)
    keys = {"v", "id", "family", *_BLOB_MEMBERS[family]}
    if "wrapped" in doc:
        keys |= {"bk", "wrapped"}
    if "exportable" in doc:
        keys.add("exportable")
        if doc["exportable"] is not True:
            raise KeyStoreError(_BAD_BLOB)
    version, key_id = doc.get("v"), doc.get("id")
    if (set(doc) != keys or type(version) is not int or version != 1
            or not isinstance(key_id, str) or not _is_id(key_id)):
        raise KeyStoreError(_BAD_BLOB)
    backup = None
    if "wrapped" in doc:
        if not _is_id(doc["bk"]) or not isinstance(doc["wrapped"], str):
            raise KeyStoreError(_BAD_BLOB)
        try:
            backup = _Wrapped(bytes.fromhex(doc["bk"]),
                              base64.b64decode(doc["wrapped"], validate=True))
        except ValueError:
            raise KeyStoreError(_BAD_BLOB) from None
    return _Blob(bytes.fromhex(key_id), family, _ir(doc["ir"]) if family == RSA else b"",
                 backup, "exportable" in doc,
                 _secret(doc["bits"], doc["kcv"]) if family == OCT else None)


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{32}", value) is not None


def _secret(bits: Any, kcv: Any) -> _Secret:
    if type(bits) is not int or bits not in AES_SIZES or not isinstance(kcv, str) \
            or re.fullmatch(f"[0-9a-f]{{{2 * KCV_BYTES}}}", kcv) is None:
        raise KeyStoreError(_BAD_BLOB)
    return _Secret(bits, bytes.fromhex(kcv))


def _ir(value: Any) -> bytes:
    if not isinstance(value, str):
        raise KeyStoreError(_BAD_BLOB)
    try:
        ir = base64.b64decode(value, validate=True)
    except ValueError:
        raise KeyStoreError(_BAD_BLOB) from None
    if len(ir) != IR_BYTES:
        raise KeyStoreError(_BAD_BLOB)
    return ir


@dataclass(frozen=True)
class _Key:
    """A loaded key: the token's private object (an AES key's secret object: a handle, no
    key material) and the public key rebuilt on the host (None for oct)."""

    private: Any
    public: PublicKey | None
    family: str
    ir: bytes
    length: int  # RSA modulus length in bytes (0 for EC and oct)
    key_id: bytes  # the CKA_ID of its objects
    exportable: bool = False
    bits: int = 0  # AES key bits (oct)


def _uint(n: int, size: int | None = None) -> bytes:
    return n.to_bytes(size or max(1, (n.bit_length() + 7) // 8), "big")


def _octet_string(data: bytes) -> bytes:
    """DER OCTET STRING around `data` (CKA_EC_POINT holds the point wrapped in one)."""
    n = len(data)
    return bytes([0x04, n]) + data if n < 0x80 else bytes([0x04, 0x81, n]) + data


def _ec_point(value: bytes, size: int) -> bytes:
    """The uncompressed point from CKA_EC_POINT: a DER OCTET STRING around 04||x||y, or,
    from tokens that follow older readings of the standard, the bare point."""
    if len(value) == 1 + 2 * size:
        return value
    if len(value) > 3 and value[0] == 0x04:
        if value[1] < 0x80 and len(value) == 2 + value[1]:
            return value[2:]
        if value[1] == 0x81 and len(value) == 3 + value[2]:
            return value[3:]
    raise KeyStoreError("The PKCS#11 token returned a malformed EC public key.")


def _public_key(obj: Any, family: str) -> PublicKey:
    """The cryptography public key of a token public-key object."""
    if obj.key_type != (KeyType.RSA if family == RSA else KeyType.EC):
        raise KeyStoreError(_BAD_BLOB)
    if family == RSA:
        n = int.from_bytes(obj[Attribute.MODULUS], "big")
        e = int.from_bytes(obj[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    crv = _CURVE_BY_PARAMS.get(bytes(obj[Attribute.EC_PARAMS]))
    if crv is None:
        raise KeyStoreError("The key in the PKCS#11 token is on an unsupported curve.")
    curve_cls, size = CURVES[crv]
    point = _ec_point(bytes(obj[Attribute.EC_POINT]), size)
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve_cls(), point)
    except ValueError:
        raise KeyStoreError("The PKCS#11 token returned a malformed EC public key.") from None


def _private_uses(family: str) -> dict[Attribute, Any]:
    """The capability attributes of a private key object of the family."""
    return {Attribute.SIGN: True,
            **({Attribute.DECRYPT: True, Attribute.UNWRAP: True} if family == RSA else {})}


def _wrapped_by_session_key(session: Any, key: _Key) -> tuple[bytes, bytes]:
    """(AES key, the private key wrapped by it): a session AES-256 key made for this one
    wrapping, readable (not sensitive) and destroyed at once."""
    aes = session.generate_key(KeyType.AES, 256, store=False,
                               capabilities=MechanismFlag.WRAP,
                               template={Attribute.SENSITIVE: False,
                                         Attribute.EXTRACTABLE: True})
    try:
        wrapped = bytes(aes.wrap_key(key.private, mechanism=Mechanism.AES_KEY_WRAP_PAD))
        return bytes(aes[Attribute.VALUE]), wrapped
    finally:
        aes.destroy()


def _check_value(secret: Any) -> bytes:
    """An AES key's check value, computed in the token: the first 3 bytes of AES-ECB of a
    zero block (how PKCS#11 defines CKA_CHECK_VALUE, which SoftHSM2 gives for keys it
    generates or creates but not for keys it unwraps). It fails in the token for a key of
    no AES key size."""
    return bytes(secret.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))[:KCV_BYTES]


def _secret_facts(secret: Any, bits: int) -> _Secret:
    """The size and check value of a new AES key object that should be `bits` long: a
    token that reports another CKA_VALUE_LEN (SoftHSM2 reports 0 for a key it unwrapped),
    or cannot use the key as an AES key, refuses."""
    reported = int(secret[Attribute.VALUE_LEN])
    if reported and reported * 8 != bits:
        raise KeyStoreError(AES_SIZE)
    return _Secret(bits, _check_value(secret))


def _asymmetric(key: _Key, alg: str) -> PublicKey:
    """The key's public key, for an RSA or EC algorithm; AlgorithmError for an oct key."""
    if key.public is not None:
        return key.public
    spec = algorithms.AES.get(alg)
    if spec is not None and spec.wraps:
        raise AlgorithmError(f"Algorithm {alg} wraps keys: use it to wrap and unwrap keys.")
    if spec is not None:
        raise AlgorithmError(f"Algorithm {alg} takes an iv and gives a tag: it is used by the "
                             "symmetric encrypt and decrypt operations.")
    if alg in algorithms.ENCRYPT:
        raise AlgorithmError(f"Algorithm {alg} needs an RSA key.")
    raise AlgorithmError(f"Algorithm '{alg[:32]}' cannot be used with an oct key.")


def _signed_text(private: Any, crv: str, text: bytes) -> tuple[bytes, bytes]:
    """(digest, r||s): the token's EC private object signs the curve's hash of `text`."""
    h = hashes.Hash(ecrecover.HASHES[crv]())
    h.update(text)
    digest = h.finalize()
    return digest, _ecdsa_raw(private.sign(digest, mechanism=Mechanism.ECDSA), CURVES[crv][1])


def _key_size(public: PublicKey) -> int:
    return public.key_size if isinstance(public, rsa.RSAPublicKey) else public.curve.key_size


def _public_template(public: PublicKey) -> dict[Attribute, Any]:
    """The C_CreateObject attributes of a public key object: its numbers and uses."""
    if isinstance(public, rsa.RSAPublicKey):
        nums = public.public_numbers()
        return {Attribute.KEY_TYPE: KeyType.RSA, Attribute.MODULUS: _uint(nums.n),
                Attribute.PUBLIC_EXPONENT: _uint(nums.e), Attribute.VERIFY: True,
                Attribute.ENCRYPT: True, Attribute.WRAP: True}
    crv = curve_name(public)
    size = CURVES[crv][1]
    pn = public.public_numbers()
    point = b"\x04" + _uint(pn.x, size) + _uint(pn.y, size)
    return {Attribute.KEY_TYPE: KeyType.EC, Attribute.EC_PARAMS: EC_PARAMS[crv],
            Attribute.VERIFY: True, Attribute.EC_POINT: _octet_string(point)}


def _import_templates(key: PrivateKey) -> tuple[dict[Attribute, Any], dict[Attribute, Any]]:
    """C_CreateObject templates (private, public) holding the key's numbers."""
    public = _public_template(key.public_key())
    if isinstance(key, rsa.RSAPrivateKey):
        nums = key.private_numbers()
        private = {
            Attribute.KEY_TYPE: KeyType.RSA, Attribute.MODULUS: public[Attribute.MODULUS],
            Attribute.PUBLIC_EXPONENT: public[Attribute.PUBLIC_EXPONENT],
            Attribute.PRIVATE_EXPONENT: _uint(nums.d), Attribute.PRIME_1: _uint(nums.p),
            Attribute.PRIME_2: _uint(nums.q), Attribute.EXPONENT_1: _uint(nums.dmp1),
            Attribute.EXPONENT_2: _uint(nums.dmq1), Attribute.COEFFICIENT: _uint(nums.iqmp),
            **_private_uses(RSA),
        }
        return private, public
    private = {Attribute.KEY_TYPE: KeyType.EC, Attribute.EC_PARAMS: public[Attribute.EC_PARAMS],
               Attribute.VALUE: _uint(key.private_numbers().private_value,
                                      CURVES[curve_name(key)][1]),
               **_private_uses(EC)}
    return private, public


def _rsa_sign_request(spec: SignAlg, digest: bytes) -> tuple[bytes, Mechanism, Any]:
    """What CKM_RSA_PKCS or CKM_RSA_PKCS_PSS signs for a digest, and the mechanism."""
    prefix, hash_mechanism, mgf = _HASHES[spec.hash]
    if spec.pss:
        return digest, Mechanism.RSA_PKCS_PSS, (hash_mechanism, mgf, spec.digest_size)
    return prefix + digest, Mechanism.RSA_PKCS, None


def _ecdsa_raw(signature: bytes, size: int) -> bytes:
    """r||s with each half `size` bytes, as JWS wants it (a token may return shorter
    halves when r or s has leading zero bytes)."""
    half = len(signature) // 2
    if len(signature) % 2 or half > size or half == 0:
        raise KeyStoreUnavailable("The PKCS#11 token returned a malformed ECDSA signature.")
    return signature[:half].rjust(size, b"\0") + signature[half:].rjust(size, b"\0")


# --- The keystore ----------------------------------------------------------------------


class Pkcs11KeyStore:
    """Keys in the token labelled `token_label` of the PKCS#11 module at `module`, logged
    in with the user PIN `pin` returns (read when a session is first opened, never kept).
    `environment` is set in os.environ before the module is loaded (e.g. SOFTHSM2_CONF);
    `label_prefix` starts the CKA_LABEL of the keys made here. With `meta` (where the
    deployment keeps the CKA_ID of its backup keys), each key made carries a backup copy
    wrapped by a backup key in the token (see `_wrap_copy`)."""

    name = "pkcs11"

    def __init__(self, module: str, token_label: str, pin: Callable[[], str], *,
                 environment: dict[str, str] | None = None, label_prefix: str = "okv",
                 cache_size: int = CACHE_SIZE, meta: MetaStore | None = None) -> None:
        self._module_path = module
        self._token_label = token_label
        self._pin = pin
        self._environment = dict(environment or {})
        self._prefix = label_prefix
        self._cache: OrderedDict[str, _Key] = OrderedDict()
        self._size = cache_size
        self._session: Any = None
        self._pid = os.getpid()
        self._epoch = 0
        self._token_facts: dict[str, str] = {}
        self._meta = meta
        self._backup_ids: dict[bool, bytes] = {}  # exportable → the backup key's CKA_ID
        self._no_backup: set[bool] = set()  # kinds the token would not make a backup key for
        # Whether the token takes CKM_AES_KEY_WRAP in C_Encrypt/C_Decrypt (None: not tried).
        self._kw_as_data: bool | None = None

    def capabilities(self) -> Capabilities:
        return CAPABILITIES if self._meta is None else _BACKED_UP

    # Sessions, errors and the cache (all called with _LOCK held).

    def _open(self) -> Any:
        """This keystore's session, opened (and the library loaded, the process logged in)
        on first use, and again in a child process after fork."""
        if self._pid != os.getpid():
            self._session = None  # the parent's: not closed from here
            self._cache.clear()
            self._pid = os.getpid()
        loaded = _module(self._module_path, self._environment)
        if self._epoch != loaded.epoch:  # the library was initialized again: all is gone
            self._session = None
            self._cache.clear()
            self._epoch = loaded.epoch
        if self._session is None:
            token = _token(loaded, self._token_label)
            _log_in(loaded, token, self._token_label, self._pin)
            try:
                self._session = token.open(rw=True,
                                           attribute_mapper=pkcs11_templates.mapper())
            except PKCS11Error as exc:
                raise KeyStoreUnavailable(
                    f"No session could be opened on the PKCS#11 token '{self._token_label}' "
                    f"({type(exc).__name__})."
                ) from None
            self._token_facts = _token_facts(token)
        return self._session

    def _after_error(self, exc: PKCS11Error) -> None:
        """Forget what a token error showed to be stale: the cached handles, or the session
        (and, logged out, the process's login), so the next call starts again."""
        if isinstance(exc, _HANDLE_STALE):
            self._cache.clear()
        elif isinstance(exc, _SESSION_LOST):
            self._session = None
            self._cache.clear()
            if isinstance(exc, UserNotLoggedIn):
                _MODULES[self._module_path].logins.pop(self._token_label, None)

    def _call(self, fn: Callable[[], _T],
              refused: Callable[[], Exception] | None = None) -> _T:
        """Run a token call. Its failures become KeyStoreUnavailable (the token or session
        is gone) or KeyStoreError (the key is gone, or the token refused), named by the
        error class only; `refused` makes the error of a refusal instead (a decryption's
        DecryptionError)."""
        try:
            return fn()
        except PKCS11Error as exc:
            self._after_error(exc)
            if isinstance(exc, _HANDLE_STALE):
                raise KeyStoreError(_KEY_GONE) from None
            if isinstance(exc, _SESSION_LOST):
                raise KeyStoreUnavailable(
                    f"The PKCS#11 token could not be used ({type(exc).__name__})."
                ) from None
            if refused is not None:
                raise refused() from None
            raise KeyStoreError(
                f"The PKCS#11 token refused the operation ({type(exc).__name__})."
            ) from None

    def _changing(self) -> Any:
        """This keystore's session, for a call that makes or destroys objects (its own
        change may hide another process's from this one: see RELOAD_INTERVAL)."""
        session = self._open()
        _MODULES[self._module_path].changed = True
        return session

    def _found(self, find: Callable[[Any], _T]) -> _T:
        """`find(session)`; when what it looks for is missing, once more after the library
        is initialized again (RELOAD_INTERVAL: a key another process made may not be seen
        yet). Call with `_LOCK` held."""
        session = self._open()
        try:
            return self._call(lambda: find(session))
        except _Missing:
            if not _reload(_MODULES[self._module_path]):
                raise
        session = self._open()
        return self._call(lambda: find(session))

    def _key(self, ref: KeyRef) -> _Key:
        """The loaded key, from the cache or the token. `ref.blob()` runs with the lock
        held; the lock is reentrant, so a blob source may use this keystore itself."""
        self._open()
        key = self._cache.get(ref.cache_id)
        if key is not None:
            return key
        blob = _parse_blob(ref.blob(), ref.family)
        key = self._found(lambda session: self._load(session, blob))
        self._cache[ref.cache_id] = key
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return key

    @staticmethod
    def _load(session: Any, blob: _Blob) -> _Key:
        if blob.secret is not None:
            secret = _key_object(session, ObjectClass.SECRET_KEY, blob.key_id)
            if secret.key_type != KeyType.AES:
                raise KeyStoreError(_BAD_BLOB)
            return _Key(secret, None, OCT, b"", 0, blob.key_id, blob.exportable,
                        blob.secret.bits)
        private = _key_object(session, ObjectClass.PRIVATE_KEY, blob.key_id)
        public = _public_key(_key_object(session, ObjectClass.PUBLIC_KEY, blob.key_id),
                             blob.family)
        length = (public.key_size + 7) // 8 if isinstance(public, rsa.RSAPublicKey) else 0
        return _Key(private, public, blob.family, blob.ir, length, blob.key_id,
                    blob.exportable)

    def _public(self, ref: KeyRef, alg: str) -> PublicKey:
        with _LOCK:
            return _asymmetric(self._key(ref), alg)

    def forget(self, cache_id_prefix: str) -> None:
        with _LOCK:
            for k in [k for k in self._cache if k.startswith(cache_id_prefix)]:
                del self._cache[k]

    def close(self) -> None:
        """Close this keystore's session (the library stays loaded, the process logged
        in); the next call opens a new one."""
        with _LOCK:
            session, self._session = self._session, None
            self._cache.clear()
            if session is not None and self._pid == os.getpid():
                with contextlib.suppress(PKCS11Error):
                    session.close()

    # Making and removing keys.

    def _label(self, key_id: bytes) -> str:
        return f"{self._prefix}-{key_id.hex()}"

    def _stored(self, key_id: bytes, family: str, key: PublicKey | _Secret,
                backup: _Wrapped | None, exportable: bool,
                ir: bytes | None = None) -> StoredKey:
        """The StoredKey of a key now in the token: an RSA key gets a fresh implicit-rejection
        secret, unless `ir` carries one over (a restored key)."""
        if isinstance(key, _Secret):
            return StoredKey({}, _blob(key_id, OCT, b"", backup, exportable, key), key.bits,
                             handle=key_id.hex())
        if ir is None:
            ir = secrets.token_bytes(IR_BYTES) if family == RSA else b""
        return StoredKey(public_jwk(key), _blob(key_id, family, ir, backup, exportable),
                         _key_size(key), handle=key_id.hex())

    def generate(self, spec: KeySpec) -> StoredKey:
        if spec.family == OCT:
            if spec.size not in AES_SIZES:
                raise KeyStoreError(AES_SIZE)
            return self._generate_secret(spec.size, spec.exportable)
        if spec.family == RSA:
            if spec.size not in RSA_SIZES:
                raise KeyStoreError(
                    f"RSA key size must be one of {', '.join(map(str, RSA_SIZES))}."
                )
            if spec.public_exponent not in (3, 65537):
                raise KeyStoreError("The RSA public exponent must be 3 or 65537.")
            return self._generate(RSA, spec.size, {
                Attribute.PUBLIC_EXPONENT: _uint(spec.public_exponent)}, spec.exportable)
        if spec.curve not in CURVES:
            raise KeyStoreError(f"Unsupported curve; use one of {', '.join(CURVES)}.")
        return self._generate(EC, None, {Attribute.EC_PARAMS: EC_PARAMS[spec.curve]},
                              spec.exportable)

    def _generate(self, family: str, bits: int | None, params: dict[Attribute, Any],
                  exportable: bool) -> StoredKey:
        key_id = secrets.token_bytes(ID_BYTES)
        with _LOCK:
            backup_id = self._backup_key(exportable)
            session = self._changing()
            public_obj = self._call(lambda: self._generate_pair(
                session, family, bits, params, key_id, exportable or backup_id is not None))
            with self._or_destroyed(session, key_id):
                public = self._call(lambda: _public_key(public_obj, family))
                backup = self._wrap_copy(session, key_id, backup_id, exportable, family)
        return self._stored(key_id, family, public, backup, exportable)

    def _generate_secret(self, bits: int, exportable: bool) -> StoredKey:
        """C_GenerateKey of an AES token key (CKA_LOCAL), with its backup copy."""
        key_id = secrets.token_bytes(ID_BYTES)
        with _LOCK:
            backup_id = self._backup_key(exportable)
            session = self._changing()
            secret = self._call(lambda: session.generate_key(
                KeyType.AES, bits, store=True, id=key_id, label=self._label(key_id),
                capabilities=_AES_CAPABILITIES, template={
                    **_SECRET_TEMPLATE,
                    Attribute.EXTRACTABLE: exportable or backup_id is not None}))
            return self._finish_secret(session, secret, key_id, bits, backup_id, exportable)

    def _finish_secret(self, session: Any, secret: Any, key_id: bytes, bits: int,
                       backup_id: bytes | None, exportable: bool) -> StoredKey:
        """A new AES key object's check value and backup copy; on failure the object is
        destroyed (with `_LOCK` held)."""
        with self._or_destroyed(session, key_id):
            facts = self._call(lambda: _secret_facts(secret, bits))
            backup = self._wrap_copy(session, key_id, backup_id, exportable, OCT)
        return self._stored(key_id, OCT, facts, backup, exportable)

    def _generate_pair(self, session: Any, family: str, bits: int | None,
                       params: dict[Attribute, Any], key_id: bytes, extractable: bool) -> Any:
        """C_GenerateKeyPair in the token; the public object. The private object is made
        extractable only to be wrapped by a backup key at once (`_wrap_copy`)."""
        common: dict[str, Any] = {
            "store": True, "id": key_id, "label": self._label(key_id),
            "private_template": {**_PRIVATE_TEMPLATE, Attribute.EXTRACTABLE: extractable},
        }
        if family == RSA:
            public, _ = session.generate_keypair(
                KeyType.RSA, bits, capabilities=_RSA_CAPABILITIES,
                public_template={**_PUBLIC_TEMPLATE, **params}, **common)
        else:
            domain = session.create_domain_parameters(KeyType.EC, params, local=True)
            public, _ = domain.generate_keypair(
                capabilities=_EC_CAPABILITIES, public_template=_PUBLIC_TEMPLATE, **common)
        return public

    def import_key(self, material: PlainKey | WrappedKey) -> StoredKey:
        """Create the token objects of a key given in the clear (the Python key object is
        dropped as soon as its numbers are in the templates), or unwrap one inside the
        token (`WrappedKey`, bring-your-own-key)."""
        if isinstance(material, WrappedKey):
            return self._import_wrapped(material)
        if material.family == OCT:
            return self._import_secret(material)
        try:
            key = private_from_jwk(material.jwk, material.family)
        except JwkError as exc:
            raise KeyStoreError(str(exc)) from None
        private, public_attrs = _import_templates(key)
        public = key.public_key()
        del key
        key_id = secrets.token_bytes(ID_BYTES)
        names = {Attribute.ID: key_id, Attribute.LABEL: self._label(key_id)}
        private.update({**_PRIVATE_TEMPLATE, **names, Attribute.CLASS: ObjectClass.PRIVATE_KEY})
        public_attrs.update({**_PUBLIC_TEMPLATE, **names,
                             Attribute.CLASS: ObjectClass.PUBLIC_KEY})
        exportable = material.exportable
        with _LOCK:
            backup_id = self._backup_key(exportable)
            private[Attribute.EXTRACTABLE] = exportable or backup_id is not None
            session = self._changing()
            self._call(lambda: self._create_pair(session, private, public_attrs))
            with self._or_destroyed(session, key_id):
                backup = self._wrap_copy(session, key_id, backup_id, exportable,
                                         material.family)
        return self._stored(key_id, material.family, public, backup, exportable)

    def _import_secret(self, material: PlainKey) -> StoredKey:
        """C_CreateObject of an AES key given in the clear (JWK `k`: 16, 24 or 32 bytes),
        with its backup copy."""
        if "k" not in material.jwk:
            raise KeyStoreError("The JWK has no key material ('k').")
        try:
            value = b64u_decode(material.jwk["k"], "k")
        except JwkError as exc:
            raise KeyStoreError(str(exc)) from None
        bits = len(value) * 8
        if bits not in AES_SIZES:
            raise KeyStoreError(AES_SIZE)
        key_id = secrets.token_bytes(ID_BYTES)
        exportable = material.exportable
        with _LOCK:
            backup_id = self._backup_key(exportable)
            template = {**_SECRET_TEMPLATE, Attribute.CLASS: ObjectClass.SECRET_KEY,
                        Attribute.KEY_TYPE: KeyType.AES, Attribute.VALUE: value,
                        Attribute.ID: key_id, Attribute.LABEL: self._label(key_id),
                        Attribute.EXTRACTABLE: exportable or backup_id is not None}
            session = self._changing()
            secret = self._call(lambda: session.create_object(template))
            return self._finish_secret(session, secret, key_id, bits, backup_id, exportable)

    def _import_wrapped(self, material: WrappedKey) -> StoredKey:
        """CKM_RSA_AES_KEY_WRAP in two token steps, so the key never exists on the host:
        the KEK's private key unwraps the ephemeral AES key (CKM_RSA_PKCS_OAEP, SHA-1) into
        a session object, which unwraps the PKCS#8 key or the AES key (CKM_AES_KEY_WRAP_PAD)
        into a sensitive, non-extractable token object. The public object is then made
        from the private object's public attributes (RSA) or recovered from two signatures
        the new key makes (EC: a token gives no public point for an unwrapped EC key)."""
        if material.alg != "CKM_RSA_AES_KEY_WRAP":
            raise KeyStoreError(f"Unsupported key wrapping '{material.alg[:32]}'; use "
                                "CKM_RSA_AES_KEY_WRAP.")
        if material.family not in _KEY_CLASS:
            raise KeyStoreError(f"Key type family '{material.family}' cannot be imported.")
        key_id = secrets.token_bytes(ID_BYTES)
        exportable = material.exportable
        with _LOCK:
            backup_id = self._backup_key(exportable)
            kek = self._key(material.kek)  # finding it may open a new session
            session = self._changing()
            if kek.family != RSA or len(material.blob) <= kek.length:
                raise KeyStoreError(_UNWRAP_FAILED)
            wrapped_aes, wrapped_key = material.blob[:kek.length], material.blob[kek.length:]
            try:
                made = self._call(lambda: self._unwrap_target(
                    session, kek, wrapped_aes, wrapped_key, material.family, key_id,
                    exportable or backup_id is not None))
            except (KeyStoreError, RecoveryError):
                with contextlib.suppress(PKCS11Error):
                    self._destroy_objects(session, key_id)
                raise KeyStoreError(_UNWRAP_FAILED) from None
            with self._or_destroyed(session, key_id):
                backup = self._wrap_copy(session, key_id, backup_id, exportable,
                                         material.family)
        return self._stored(key_id, material.family, made, backup, exportable)

    def _unwrap_target(self, session: Any, kek: _Key, wrapped_aes: bytes, wrapped_key: bytes,
                       family: str, key_id: bytes, extractable: bool) -> PublicKey | _Secret:
        """The target key unwrapped into token objects: its public key, or an AES key's
        size and check value. An AES key wrapped with padding is 8 bytes longer than the
        key rounded up to 8 bytes: 24, 32 or 40 bytes for the three sizes; a shorter key
        in those is no AES key, which the check value refuses."""
        bits = (len(wrapped_key) - 8) * 8 if family == OCT else 0
        if family == OCT and bits not in AES_SIZES:
            raise KeyStoreError(_UNWRAP_FAILED)
        aes = kek.private.unwrap_key(
            ObjectClass.SECRET_KEY, KeyType.AES, wrapped_aes,
            mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=_OAEP_SHA1, store=False,
            capabilities=MechanismFlag.UNWRAP,
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
        try:
            if family == OCT:
                secret = aes.unwrap_key(
                    ObjectClass.SECRET_KEY, KeyType.AES, wrapped_key,
                    mechanism=Mechanism.AES_KEY_WRAP_PAD, store=True, id=key_id,
                    label=self._label(key_id), capabilities=_AES_CAPABILITIES,
                    template={**_SECRET_TEMPLATE, Attribute.EXTRACTABLE: extractable})
                return _secret_facts(secret, bits)
            private = aes.unwrap_key(
                ObjectClass.PRIVATE_KEY, KeyType.RSA if family == RSA else KeyType.EC,
                wrapped_key, mechanism=Mechanism.AES_KEY_WRAP_PAD, store=True, id=key_id,
                label=self._label(key_id), template={
                    **_UNSET_CAPABILITIES, **_PRIVATE_TEMPLATE,
                    Attribute.EXTRACTABLE: extractable, **_private_uses(family)})
        finally:
            aes.destroy()
        public: PublicKey
        if family == RSA:
            modulus = bytes(private[Attribute.MODULUS])
            if len(modulus) * 8 not in RSA_SIZES:
                raise KeyStoreError(_UNWRAP_FAILED)
            public = rsa.RSAPublicNumbers(
                int.from_bytes(private[Attribute.PUBLIC_EXPONENT], "big"),
                int.from_bytes(modulus, "big")).public_key()
        else:
            crv = _CURVE_BY_PARAMS.get(bytes(private[Attribute.EC_PARAMS]))
            if crv is None:
                raise KeyStoreError(_UNWRAP_FAILED)
            signed = [_signed_text(private, crv, text) for text in (
                b"okv: recover the public key (1)", b"okv: recover the public key (2)")]
            public = ecrecover.recover(crv, signed)
        session.create_object(self._public_object_template(key_id, public))
        return public

    def _public_object_template(self, key_id: bytes, public: PublicKey) -> dict[Attribute, Any]:
        return {**_public_template(public), **_PUBLIC_TEMPLATE, Attribute.ID: key_id,
                Attribute.LABEL: self._label(key_id), Attribute.CLASS: ObjectClass.PUBLIC_KEY}

    @staticmethod
    def _create_pair(session: Any, private: dict[Attribute, Any],
                     public: dict[Attribute, Any]) -> None:
        created = session.create_object(private)
        try:
            session.create_object(public)
        except PKCS11Error:
            with contextlib.suppress(PKCS11Error):
                created.destroy()
            raise

    def destroy(self, ref: KeyRef) -> None:
        """Destroy the token's private and public objects (an AES key's secret object) with
        the key's CKA_ID (none left is not an error) and forget the key."""
        blob = _parse_blob(ref.blob(), ref.family)
        with _LOCK:
            session = self._changing()
            self._call(lambda: self._destroy_objects(session, blob.key_id))
            self._cache.pop(ref.cache_id, None)

    @contextlib.contextmanager
    def _or_destroyed(self, session: Any, key_id: bytes) -> Iterator[None]:
        """A step on objects just made with `key_id`: if it fails, they are destroyed (no
        stored key version would ever name them). Call with `_LOCK` held."""
        try:
            yield
        except (KeyStoreError, KeyStoreUnavailable):
            with contextlib.suppress(PKCS11Error):
                self._destroy_objects(session, key_id)
            raise

    @staticmethod
    def _destroy_objects(session: Any, key_id: bytes, label: str | None = None) -> None:
        for cls in _KEY_OBJECTS:
            found: dict[Attribute, Any] = {Attribute.CLASS: cls, Attribute.ID: key_id}
            if label is not None:
                found[Attribute.LABEL] = label
            for obj in list(session.get_objects(found)):
                obj.destroy()

    def held(self) -> frozenset[str]:
        """The CKA_IDs (hex) of the key objects labelled as this keystore labels the keys
        it makes for key versions: exactly `<prefix>-<32 hex digits>`. Its other objects
        (the attestation keys, `<prefix>-attestation...`) are never listed, so the orphan
        clean-up never takes them."""
        label = re.compile(re.escape(self._prefix) + r"-[0-9a-f]{32}")
        with _LOCK:
            session = self._open()
            return self._call(lambda: frozenset(
                obj[Attribute.ID].hex()
                for cls in _KEY_OBJECTS
                for obj in session.get_objects({Attribute.CLASS: cls})
                if label.fullmatch(str(obj[Attribute.LABEL]))))

    def destroy_held(self, handle: str) -> None:
        """Destroy the objects with this CKA_ID (hex) that carry this keystore's label."""
        if not _is_id(handle):
            raise KeyStoreError("Not a key handle of this keystore.")
        key_id = bytes.fromhex(handle)
        with _LOCK:
            session = self._changing()
            self._call(lambda: self._destroy_objects(session, key_id, self._label(key_id)))
            self._cache.clear()  # rare (a clean-up job): no need to find the one entry

    # Backup copies. A key is made extractable, wrapped at once (CKM_AES_KEY_WRAP_PAD) by
    # the deployment's backup key, an AES-256 key made in the token that can only wrap and
    # unwrap, and then made non-extractable for good (CKA_EXTRACTABLE can only go from true
    # to false): the key stays CKA_LOCAL and ALWAYS_SENSITIVE, and its private material
    # exists outside the token only wrapped. The backup key's CKA_UNWRAP_TEMPLATE makes
    # every key it unwraps sensitive and non-extractable, so a copy cannot be unwrapped into
    # a key the token would reveal, even by a holder of the PIN. A token that refuses the
    # template gets no backup key: its keys are then made never-extractable, without a copy.

    def _backup_key(self, exportable: bool = False) -> bytes | None:
        """The CKA_ID of the deployment's backup key for keys of this kind, made on first
        use and found in the token (once more after a reload); None when keys are made
        without a copy. Call with _LOCK held, before taking the session for the change."""
        if self._meta is None or exportable in self._no_backup:
            return None
        key_id = self._backup_ids.get(exportable)
        if key_id is None:
            made: list[str] = []

            def make() -> str:
                made.append(self._make_backup_key(exportable))
                return made[0]

            try:
                stored = self._meta(f"{BACKUP_META}{self._token_label}"
                                    f"{'_exportable' if exportable else ''}", make)
            except KeyStoreError as exc:
                log.warning("keystore: the PKCS#11 token would not make a backup key (%s); "
                            "its keys are made without a backup copy", exc)
                self._no_backup.add(exportable)
                return None
            if made and stored != made[0]:  # another process stored its key first
                with contextlib.suppress(KeyStoreError):
                    self._destroy_backup_key(bytes.fromhex(made[0]), exportable)
            key_id = self._backup_ids[exportable] = bytes.fromhex(stored)
        try:
            self._found(lambda session: self._backup_object(session, key_id, exportable))
        except _Missing:
            raise KeyStoreUnavailable("The deployment's HSM backup key is not in the PKCS#11 "
                                      "token.") from None
        return key_id

    def _make_backup_key(self, exportable: bool) -> str:
        key_id = secrets.token_bytes(ID_BYTES)
        with _LOCK:
            session = self._changing()
            self._call(lambda: session.generate_key(
                KeyType.AES, 256, store=True, id=key_id,
                label=f"{self._prefix}-{BACKUP_LABELS[exportable]}",
                capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP, template={
                    Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.UNWRAP_TEMPLATE: _BACKUP_UNWRAP[exportable]}))
        return key_id.hex()

    def _destroy_backup_key(self, key_id: bytes, exportable: bool) -> None:
        with _LOCK:
            session = self._changing()
            self._call(lambda: [obj.destroy() for obj in session.get_objects({
                Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.ID: key_id,
                Attribute.LABEL: f"{self._prefix}-{BACKUP_LABELS[exportable]}"})])

    def _backup_object(self, session: Any, key_id: bytes, exportable: bool) -> Any:
        try:
            return session.get_key(object_class=ObjectClass.SECRET_KEY, id=key_id,
                                   label=f"{self._prefix}-{BACKUP_LABELS[exportable]}")
        except NoSuchKey:
            raise _Missing(_BACKUP_KEY_GONE) from None
        except MultipleObjectsReturned:
            raise KeyStoreError("The PKCS#11 token holds more than one backup key with this "
                                "id.") from None

    def _wrap_copy(self, session: Any, key_id: bytes, backup_id: bytes | None,
                   exportable: bool, family: str) -> _Wrapped | None:
        """The new key's private (or secret) object wrapped by the backup key, then (unless
        it is an exportable key) made non-extractable; None without a backup key."""
        if backup_id is None:
            return None

        def wrap() -> _Wrapped:
            private = _key_object(session, _KEY_CLASS[family], key_id)
            backup = self._backup_object(session, backup_id, exportable)
            wrapped = bytes(backup.wrap_key(private, mechanism=Mechanism.AES_KEY_WRAP_PAD))
            if not exportable:
                private[Attribute.EXTRACTABLE] = False
                if private[Attribute.EXTRACTABLE]:
                    raise KeyStoreError("The PKCS#11 token kept the key extractable.")
            return _Wrapped(backup_id, wrapped)

        try:
            return self._call(wrap)
        except _Missing:
            raise KeyStoreUnavailable("The deployment's HSM backup key is not in the PKCS#11 "
                                      "token.") from None

    def backup_blob(self, ref: KeyRef) -> bytes:
        """The stored blob, which carries the key's wrapped copy (a key without one is
        refused)."""
        blob = ref.blob()
        if _parse_blob(blob, ref.family).backup is None:
            raise KeyStoreError(NO_BACKUP_COPY)
        return blob

    def restore_key(self, family: str, blob: bytes, public: dict[str, Any]) -> StoredKey:
        """The backup's wrapped copy unwrapped by the backup key that made it, into new
        token objects (a new CKA_ID: the key it was copied from may still be held), checked
        against the stored public key."""
        parsed = _parse_blob(blob, family)
        if parsed.backup is None:
            raise KeyStoreError(NO_BACKUP_COPY)
        copy = parsed.backup
        expected: PublicKey | _Secret
        if parsed.secret is not None:  # an AES key: no public members; its check value
            if any(name != "kty" for name in public):
                raise KeyStoreError(_BAD_BLOB)
            expected = parsed.secret
        else:
            try:
                expected = public_from_jwk({"kty": family, **public}, family)
            except JwkError:
                raise KeyStoreError(_BAD_BLOB) from None
        key_id = secrets.token_bytes(ID_BYTES)
        exportable = parsed.exportable
        with _LOCK:
            self._found(lambda session: self._backup_object(session, copy.backup_id,
                                                            exportable))
            session = self._changing()
            try:
                self._call(lambda: self._unwrap_copy(session, copy, family, key_id, expected,
                                                     exportable))
            except (KeyStoreError, KeyStoreUnavailable) as exc:
                with contextlib.suppress(PKCS11Error):
                    self._destroy_objects(session, key_id)
                if isinstance(exc, KeyStoreUnavailable) or str(exc) == _BACKUP_KEY_GONE:
                    raise
                raise KeyStoreError(_RESTORE_FAILED) from None
        return self._stored(key_id, family, expected, copy, exportable, parsed.ir)

    def _unwrap_copy(self, session: Any, copy: _Wrapped, family: str, key_id: bytes,
                     expected: PublicKey | _Secret, exportable: bool) -> None:
        backup = self._backup_object(session, copy.backup_id, exportable)
        if isinstance(expected, _Secret):
            # A wrapped AES key is 8 bytes longer than the key; the check value is the key's.
            if (len(copy.wrapped) - 8) * 8 != expected.bits:
                raise KeyStoreError(_RESTORE_FAILED)
            secret = backup.unwrap_key(
                ObjectClass.SECRET_KEY, KeyType.AES, copy.wrapped,
                mechanism=Mechanism.AES_KEY_WRAP_PAD, store=True, id=key_id,
                label=self._label(key_id), capabilities=_AES_CAPABILITIES,
                template={**_SECRET_TEMPLATE, **_BACKUP_UNWRAP[exportable]})
            if not hmac.compare_digest(_secret_facts(secret, expected.bits).kcv,
                                       expected.kcv):
                raise KeyStoreError(_RESTORE_FAILED)
            return
        private = backup.unwrap_key(
            ObjectClass.PRIVATE_KEY, KeyType.RSA if family == RSA else KeyType.EC,
            copy.wrapped, mechanism=Mechanism.AES_KEY_WRAP_PAD, store=True, id=key_id,
            label=self._label(key_id),
            template={**_UNSET_CAPABILITIES, **_PRIVATE_TEMPLATE, **_private_uses(family),
                      **_BACKUP_UNWRAP[exportable]})
        session.create_object(self._public_object_template(key_id, expected))
        if isinstance(expected, rsa.RSAPublicKey):
            matches = int.from_bytes(private[Attribute.MODULUS], "big") == \
                expected.public_numbers().n
        else:
            crv = curve_name(expected)
            digest, signature = _signed_text(private, crv, b"okv: check the restored key")
            alg = next(name for name, spec in algorithms.SIGN.items() if spec.curve == crv)
            matches = algorithms.verify(expected, alg, digest, signature)
        if not matches:
            raise KeyStoreError(_RESTORE_FAILED)

    def export(self, ref: KeyRef, wrapping: dict[str, Any], alg: str) -> bytes:
        """An exportable key wrapped inside the token (CKM_AES_KEY_WRAP_PAD) by a fresh
        AES-256 session key; that key, read out of the token, is encrypted on the host to
        `wrapping` with the RSA-OAEP of `alg` and dropped (SoftHSM2 has no OAEP with SHA-256
        or SHA-384: HOST_STEPS). The private key is never in host memory."""
        if alg not in transfer.WRAPPINGS:
            raise KeyStoreError(f"Unsupported key wrapping '{alg[:32]}'; use one of "
                                f"{', '.join(transfer.WRAPPINGS)}.")
        try:
            target = public_from_jwk({"kty": RSA, **wrapping}, RSA)
        except JwkError as exc:
            raise KeyStoreError(f"The wrapping key is not a usable RSA public key: {exc}") \
                from None
        if not isinstance(target, rsa.RSAPublicKey) or target.key_size not in RSA_SIZES:
            raise KeyStoreError("The wrapping key must be an RSA key of "
                                f"{', '.join(map(str, RSA_SIZES))} bits.")
        with _LOCK:
            key = self._key(ref)  # first: finding it may open a new session
            if not key.exportable:
                raise KeyStoreError(NOT_EXPORTABLE)
            session = self._open()
            aes, wrapped = self._call(lambda: _wrapped_by_session_key(session, key))
        try:
            return transfer.encrypt_transfer_key(target, alg, aes) + wrapped
        except transfer.TransferError as exc:
            raise KeyStoreError(str(exc)) from None

    # Attestation.

    def attest(self, ref: KeyRef) -> dict[str, Any]:
        """The token's facts about the key, read now: the protection attributes of its
        private object and the public key of its public object."""
        with _LOCK:
            key = self._key(ref)  # first: finding it may open a new session
            session = self._open()
            return self._call(lambda: {
                "keystore": self.name, "token": dict(self._token_facts),
                "attributes": {name.lower(): bool(key.private[attribute])
                               for name, attribute in _ATTESTED.items()},
                "public": {} if key.public is None else public_jwk(_public_object(session, key)),
            })

    def attestation_signer(self) -> AttestationSigner:
        return _AttestationKeys(self)

    # Key operations.

    def sign(self, ref: KeyRef, alg: str, digest: bytes) -> bytes:
        """Sign a digest in the token. ECDSA signatures are raw r||s, as JWS defines them."""
        with _LOCK:
            key = self._key(ref)
            public = _asymmetric(key, alg)
            spec = algorithms.sign_spec(alg, public, digest)
            if isinstance(public, rsa.RSAPublicKey):
                data, mechanism, param = _rsa_sign_request(spec, digest)
                signature: bytes = self._call(lambda: key.private.sign(
                    data, mechanism=mechanism, mechanism_param=param))
                return signature.rjust(key.length, b"\0")
            raw: bytes = self._call(lambda: key.private.sign(digest, mechanism=Mechanism.ECDSA))
        return _ecdsa_raw(raw, CURVES[curve_name(public)][1])

    def verify(self, ref: KeyRef, alg: str, digest: bytes, signature: bytes) -> bool:
        return algorithms.verify(self._public(ref, alg), alg, digest, signature)

    def encrypt(self, ref: KeyRef, alg: str, plaintext: bytes) -> bytes:
        return algorithms.encrypt(self._public(ref, alg), alg, plaintext)

    def decrypt(self, ref: KeyRef, alg: str, ciphertext: bytes) -> bytes:
        """Decrypt in the token (RSA-OAEP), or do the raw RSA step in the token and decode
        the padding on the host (RSA-OAEP-256, RSA1_5: see `HOST_STEPS`)."""
        with _LOCK:
            key = self._key(ref)
            _asymmetric(key, alg)
            algorithms.encrypt_spec(alg, key.family)
            if len(ciphertext) != key.length:
                raise DecryptionError()
            if alg == "RSA-OAEP":
                return self._decrypt(key, ciphertext, Mechanism.RSA_PKCS_OAEP, _OAEP_SHA1)
            assert isinstance(key.public, rsa.RSAPublicKey)
            if int.from_bytes(ciphertext, "big") >= key.public.public_numbers().n:
                raise DecryptionError()
            em = self._decrypt(key, ciphertext, Mechanism.RSA_X_509, None).rjust(key.length,
                                                                                  b"\0")
        if alg == "RSA-OAEP-256":
            return oaep_sha256_decode(em)
        return pkcs1_v15_decode(em, implicit_rejection_kdk(key.ir, ciphertext))

    def _decrypt(self, key: _Key, ciphertext: bytes, mechanism: Mechanism, param: Any) -> bytes:
        """C_Decrypt; every failure is the one DecryptionError (with the lock held)."""
        try:
            plaintext: bytes = key.private.decrypt(ciphertext, mechanism=mechanism,
                                                   mechanism_param=param)
        except PKCS11Error as exc:
            self._after_error(exc)
            raise DecryptionError() from None
        if len(plaintext) > key.length:
            raise DecryptionError()
        return plaintext

    def wrap(self, ref: KeyRef, alg: str, key: bytes) -> bytes:
        """RSA encryption of the key (on the host), or with an oct key AES key wrap in the
        token (`_key_wrap`)."""
        if ref.family != OCT:
            return self.encrypt(ref, alg, key)
        with _LOCK:
            secret = self._key(ref)
            spec = algorithms.aes_spec(alg, secret.family, secret.bits, wrap=True)
            symmetric.check_wrap(alg, spec, key)
            return self._call(lambda: self._key_wrap(secret, key))

    def unwrap(self, ref: KeyRef, alg: str, wrapped: bytes) -> bytes:
        if ref.family != OCT:
            return self.decrypt(ref, alg, wrapped)
        with _LOCK:
            secret = self._key(ref)
            spec = algorithms.aes_spec(alg, secret.family, secret.bits, wrap=True)
            symmetric.check_unwrap(spec, wrapped)
            key = self._call(lambda: self._key_unwrap(secret, wrapped), DecryptionError)
        if len(key) != len(wrapped) - 8:
            raise DecryptionError()
        return key

    def _key_wrap(self, secret: _Key, key: bytes) -> bytes:
        """RFC 3394 AES key wrap in the token: C_Encrypt with CKM_AES_KEY_WRAP where the
        token takes it; else (SoftHSM2) the bytes are made a session secret key (an object
        of this process only, never stored) that C_WrapKey wraps, destroyed at once."""
        if self._kw_as_data is not False:
            try:
                wrapped = bytes(secret.private.encrypt(key, mechanism=Mechanism.AES_KEY_WRAP))
                self._kw_as_data = True
                return wrapped
            except (MechanismInvalid, FunctionNotSupported):
                self._kw_as_data = False
        session = self._open()
        temporary = session.create_object({
            Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
            Attribute.TOKEN: False, Attribute.PRIVATE: True, Attribute.VALUE: key,
            Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
        try:
            return bytes(secret.private.wrap_key(temporary, mechanism=Mechanism.AES_KEY_WRAP))
        finally:
            temporary.destroy()

    def _key_unwrap(self, secret: _Key, wrapped: bytes) -> bytes:
        """RFC 3394 AES key unwrap in the token: C_Decrypt with CKM_AES_KEY_WRAP where the
        token takes it; else (SoftHSM2) C_UnwrapKey into a session generic secret key, not
        sensitive and extractable, whose value is read and which is destroyed at once."""
        if self._kw_as_data is not False:
            try:
                key = bytes(secret.private.decrypt(wrapped, mechanism=Mechanism.AES_KEY_WRAP))
                self._kw_as_data = True
                return key
            except (MechanismInvalid, FunctionNotSupported):
                self._kw_as_data = False
        temporary = secret.private.unwrap_key(
            ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, wrapped,
            mechanism=Mechanism.AES_KEY_WRAP, store=False, capabilities=0,
            template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
        try:
            return bytes(temporary[Attribute.VALUE])
        finally:
            temporary.destroy()

    def encrypt_symmetric(self, ref: KeyRef, alg: str, plaintext: bytes,
                          iv: bytes | None = None,
                          aad: bytes | None = None) -> SymmetricResult:
        """AES-GCM (a fresh 12-byte iv from the token's random generator, the 16-byte tag
        apart), AES-CBC or AES-CBC with padding (the caller's iv) in the token."""
        iv, aad = iv or None, aad or None
        with _LOCK:
            key = self._key(ref)
            spec = algorithms.aes_spec(alg, key.family, key.bits, wrap=False)
            symmetric.check_encrypt(alg, spec, plaintext, iv, aad)
            if spec.mode == GCM:
                session = self._open()
                nonce: bytes = self._call(lambda: session.generate_random(8 * spec.iv_bytes))
                param: Any = GCMParams(nonce, aad, 8 * spec.tag_bytes)
                out = self._call(lambda: bytes(key.private.encrypt(
                    plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=param)))
                if len(nonce) != spec.iv_bytes or \
                        len(out) != len(plaintext) + spec.tag_bytes:
                    raise KeyStoreUnavailable("The PKCS#11 token returned a malformed AES-GCM "
                                              "ciphertext.")
                return SymmetricResult(out[:len(plaintext)], nonce, out[len(plaintext):])
            mechanism = Mechanism.AES_CBC_PAD if spec.mode == CBCPAD else Mechanism.AES_CBC
            out = self._call(lambda: bytes(key.private.encrypt(
                plaintext, mechanism=mechanism, mechanism_param=iv)))
            return SymmetricResult(out, iv, None)

    def decrypt_symmetric(self, ref: KeyRef, alg: str, ciphertext: bytes,
                          iv: bytes | None = None, aad: bytes | None = None,
                          tag: bytes | None = None) -> bytes:
        """Decrypt in the token (CKM_AES_GCM checks the tag); every failure is the one
        DecryptionError, a bad CBC padding among them."""
        iv, aad, tag = iv or None, aad or None, tag or None
        with _LOCK:
            key = self._key(ref)
            spec = algorithms.aes_spec(alg, key.family, key.bits, wrap=False)
            symmetric.check_decrypt(alg, spec, ciphertext, iv, aad, tag)
            assert iv is not None
            param: Any = iv
            mechanism = Mechanism.AES_CBC_PAD if spec.mode == CBCPAD else Mechanism.AES_CBC
            data = ciphertext
            if spec.mode == GCM:
                assert tag is not None
                param = GCMParams(iv, aad, 8 * spec.tag_bytes)
                mechanism, data = Mechanism.AES_GCM, ciphertext + tag
            plaintext = self._call(lambda: bytes(key.private.decrypt(
                data, mechanism=mechanism, mechanism_param=param)), DecryptionError)
        if len(plaintext) > len(ciphertext):
            raise DecryptionError()
        return plaintext


def _key_object(session: Any, cls: ObjectClass, key_id: bytes) -> Any:
    """The token's one object of class `cls` with this CKA_ID."""
    try:
        return session.get_key(object_class=cls, id=key_id)
    except NoSuchKey:
        raise _Missing(_KEY_GONE) from None
    except MultipleObjectsReturned:
        raise KeyStoreError("The PKCS#11 token holds more than one key with this id.") \
            from None


def _public_object(session: Any, key: _Key) -> PublicKey:
    """The public key of the key's public object, read from the token now."""
    return _public_key(_key_object(session, ObjectClass.PUBLIC_KEY, key.key_id), key.family)


def _token_facts(token: Any) -> dict[str, str]:
    """The token's label, manufacturer, model and serial number, as it reports them."""
    serial = token.serial
    if isinstance(serial, bytes):
        serial = serial.decode("ascii", "replace")
    return {"label": str(token.label).strip(), "manufacturer": str(token.manufacturer_id).strip(),
            "model": str(token.model).strip(), "serial": str(serial).strip()}


class _AttestationKeys:
    """The deployment's attestation keys in a Pkcs11KeyStore's token: EC P-384 key pairs
    generated in the token, the private object sensitive and not extractable, labelled
    `<prefix>-attestation-root` and `<prefix>-attestation` (never a key version's label,
    so `held()` does not list them) and named by their random CKA_ID (hex)."""

    def __init__(self, store: Pkcs11KeyStore) -> None:
        self._store = store

    def _label(self, role: str) -> str:
        suffix = ATTESTATION_LABELS.get(role)
        if suffix is None:
            raise KeyStoreError("Not an attestation key role.")
        return f"{self._store._prefix}-{suffix}"

    def _find(self, session: Any, role: str, handle: str, cls: ObjectClass) -> Any:
        if not _is_id(handle):
            raise KeyStoreError("Not an attestation key handle.")
        try:
            return session.get_key(object_class=cls, id=bytes.fromhex(handle),
                                   label=self._label(role))
        except NoSuchKey:
            raise _Missing("The attestation key is not in the PKCS#11 token.") from None
        except MultipleObjectsReturned:
            raise KeyStoreError("The PKCS#11 token holds more than one attestation key with "
                                "this id.") from None

    def generate(self, role: str) -> str:
        label = self._label(role)
        key_id = secrets.token_bytes(ID_BYTES)
        store = self._store
        with _LOCK:
            session = store._changing()

            def make() -> None:
                domain = session.create_domain_parameters(
                    KeyType.EC, {Attribute.EC_PARAMS: EC_PARAMS[_ATTESTATION_CURVE]},
                    local=True)
                domain.generate_keypair(
                    store=True, id=key_id, label=label, capabilities=_EC_CAPABILITIES,
                    private_template=_PRIVATE_TEMPLATE, public_template=_PUBLIC_TEMPLATE)

            store._call(make)
        return key_id.hex()

    def public(self, role: str, handle: str) -> ec.EllipticCurvePublicKey:
        store = self._store
        with _LOCK:
            public = store._found(lambda session: _public_key(
                self._find(session, role, handle, ObjectClass.PUBLIC_KEY), EC))
        if not isinstance(public, ec.EllipticCurvePublicKey) or \
                curve_name(public) != _ATTESTATION_CURVE:
            raise KeyStoreError("The attestation key is not an EC P-384 key.")
        return public

    def sign(self, role: str, handle: str, digest: bytes) -> bytes:
        store = self._store
        with _LOCK:
            raw: bytes = store._found(lambda session: self._find(
                session, role, handle, ObjectClass.PRIVATE_KEY).sign(
                    digest, mechanism=Mechanism.ECDSA))
        return _ecdsa_raw(raw, CURVES[_ATTESTATION_CURVE][1])

    def destroy(self, role: str, handle: str) -> None:
        if not _is_id(handle):
            raise KeyStoreError("Not an attestation key handle.")
        store = self._store
        with _LOCK:
            session = store._changing()
            store._call(lambda: store._destroy_objects(session, bytes.fromhex(handle),
                                                       self._label(role)))
