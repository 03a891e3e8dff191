"""The seals that protect the root key, and the description of each that storage keeps.

A deployment stores one seal description: a JSON-able dict that says how its root key is
recovered at start. It never holds the root key or a share, only what is needed to check
a recovered key (a verifier: HMAC-SHA256 under the root key of a fixed label, which
tells a wrong key from the right one and nothing else).

- `DevFileSeal` (`{"type": "devkey"}`): the key file beside the data (storage/seal.py),
  for development.
- `ShamirSeal` (`"shamir"`): the root key split into N shares, any M of which recover it
  (crypto/shamir.py). Key holders type their share in; `Unsealer` collects them.
- `KeyVaultSeal` (`"azurekeyvault"`, auto-unseal): the root key wrapped (RSA-OAEP-256) by
  an RSA key in another Key Vault (Azure's, or another OpenKeyVault), unwrapped at start
  through the Azure SDK with a credential the caller passes.

`describe` is what may be shown publicly (type, and for Shamir the counts).

A share's text is `okv-share-<seal>-<n>-<code>`: `seal` is the first 8 hex digits of the
seal id (a new id at every rekey, so shares of another deployment or of an earlier
generation are named as such), `n` the share's number (its x coordinate), and `code` the
base64url of the share's 32 bytes and a 4-byte checksum over seal, number and bytes
(SHA-256), which catches typing mistakes before a share is counted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from openkeyvault.crypto import shamir
from openkeyvault.crypto.aead import KEY_BYTES
from openkeyvault.crypto.encoding import b64url_decode, b64url_encode
from openkeyvault.storage.seal import dev_seal_root_key

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.keyvault.keys import KeyVaultKey

__all__ = [
    "AutoUnsealError", "ConflictingShare", "DevFileSeal", "ForeignShare", "KeyVaultSeal",
    "MalformedShare", "Progress", "SealDescriptionError", "ShamirSeal", "ShareRefused",
    "SharesDoNotMatch", "Unsealer", "describe", "seal_type",
]

DEVKEY = "devkey"
SHAMIR = "shamir"
AZURE_KEY_VAULT = "azurekeyvault"
WRAP_ALGORITHM = "RSA-OAEP-256"

SHARE_PREFIX = "okv-share"
_SEAL_ID_HEX = 32
_SHOWN_ID_HEX = 8  # how much of the seal id a share carries
_CHECK_BYTES = 4
_SHARE = re.compile(rf"{SHARE_PREFIX}-([0-9a-f]{{{_SHOWN_ID_HEX}}})-([1-9][0-9]{{0,2}})-"
                    r"([A-Za-z0-9_-]+)")
_VERIFIER_LABEL = b"openkeyvault seal verifier\x00"


# ---- errors ------------------------------------------------------------------------------
class SealDescriptionError(ValueError):
    """The stored seal description is not one this code can use (a deployment fault)."""


class ShareRefused(ValueError):
    """A submitted share was not counted; the message says why and what to do."""


class MalformedShare(ShareRefused):
    """Not a share, or a mistyped one (its checksum does not match)."""


class ForeignShare(ShareRefused):
    """A well-formed share of another seal: another deployment's, or from before a rekey."""


class ConflictingShare(ShareRefused):
    """A different share with the same number was already submitted."""


class SharesDoNotMatch(ShareRefused):
    """The threshold was reached but the shares do not give the root key; progress reset."""


class AutoUnsealError(Exception):
    """The Key Vault key did not give the root key back. `key_id` names the key; `retryable`
    says whether trying again later may help (vault unreachable or busy) or an operator
    must act (key disabled, deleted or another key, credential refused)."""

    def __init__(self, key_id: str, reason: str, retryable: bool = False) -> None:
        super().__init__(f"auto-unseal with key {key_id}: {reason}")
        self.key_id = key_id
        self.reason = reason
        self.retryable = retryable


# ---- the stored description --------------------------------------------------------------
def seal_type(stored: dict[str, Any]) -> str:
    """The seal's type, refusing descriptions that are not one of ours."""
    if not isinstance(stored, dict):
        raise SealDescriptionError("the stored seal description is not an object")
    kind = stored.get("type")
    if kind not in (DEVKEY, SHAMIR, AZURE_KEY_VAULT):
        raise SealDescriptionError(f"unknown seal type {str(kind)[:40]!r}")
    return str(kind)


def describe(stored: dict[str, Any]) -> dict[str, Any]:
    """What a public endpoint may show: the type, and for Shamir the counts. Nothing else
    (no key id, seal id or verifier)."""
    kind = seal_type(stored)
    if kind == SHAMIR:
        d = _ShamirDescription.load(stored)
        return {"type": kind, "threshold": d.threshold, "shares": d.shares}
    return {"type": kind}


def _verifier(root_key: bytes, context: str) -> str:
    return b64url_encode(hmac.new(root_key, _VERIFIER_LABEL + context.encode(),
                                  hashlib.sha256).digest())


def _verifies(root_key: bytes, context: str, verifier: str) -> bool:
    return hmac.compare_digest(_verifier(root_key, context).encode(), verifier.encode())


def _field(stored: dict[str, Any], name: str, kind: type) -> Any:
    value = stored.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SealDescriptionError(f"the stored seal description's {name!r} is missing or "
                                   "not valid")
    return value


def _check_root_key(root_key: bytes) -> None:
    if not isinstance(root_key, bytes) or len(root_key) != KEY_BYTES:
        raise ValueError(f"a root key is {KEY_BYTES} bytes")


# ---- dev key file ------------------------------------------------------------------------
class DevFileSeal:
    """The key file of a development deployment, described so that every deployment has a
    stored seal description."""

    @staticmethod
    def init() -> dict[str, Any]:
        return {"type": DEVKEY}

    @staticmethod
    def unseal(stored: dict[str, Any], path: Path, create: bool = False) -> bytes:
        if seal_type(stored) != DEVKEY:
            raise SealDescriptionError("the stored seal is not a dev key file seal")
        return dev_seal_root_key(path, create=create)


# ---- Shamir ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ShamirDescription:
    seal_id: str
    shares: int
    threshold: int
    verifier: str

    @property
    def shown_id(self) -> str:
        return self.seal_id[:_SHOWN_ID_HEX]

    @classmethod
    def load(cls, stored: dict[str, Any]) -> _ShamirDescription:
        if seal_type(stored) != SHAMIR:
            raise SealDescriptionError("the stored seal is not a Shamir seal")
        d = cls(_field(stored, "seal_id", str), _field(stored, "shares", int),
                _field(stored, "threshold", int), _field(stored, "verifier", str))
        if not re.fullmatch(f"[0-9a-f]{{{_SEAL_ID_HEX}}}", d.seal_id):
            raise SealDescriptionError("the stored seal id is not valid")
        if not 2 <= d.threshold <= d.shares <= shamir.MAX_SHARES:
            raise SealDescriptionError("the stored share counts are not valid")
        return d

    def stored(self) -> dict[str, Any]:
        return {"type": SHAMIR, "seal_id": self.seal_id, "shares": self.shares,
                "threshold": self.threshold, "verifier": self.verifier}


def _checksum(shown_id: str, x: int, y: bytes) -> bytes:
    data = f"{SHARE_PREFIX}\x00{shown_id}\x00".encode() + bytes([x]) + y
    return hashlib.sha256(data).digest()[:_CHECK_BYTES]


def _share_text(shown_id: str, part: bytes) -> str:
    y, x = part[:-1], part[-1]
    return f"{SHARE_PREFIX}-{shown_id}-{x}-{b64url_encode(y + _checksum(shown_id, x, y))}"


def _parse_share(text: str, seal: _ShamirDescription) -> bytes:
    """The share as a Shamir part (y || x), after checking its form, checksum and seal."""
    if not isinstance(text, str):
        raise MalformedShare("a share is text")
    compact = "".join(text.split())  # spaces and line breaks typed in are not part of it
    m = _SHARE.fullmatch(compact)
    if m is None:
        raise MalformedShare(f"this is not a share: a share reads "
                             f"{SHARE_PREFIX}-<8 hex digits>-<number>-<code>")
    shown_id, number, code = m.group(1), int(m.group(2)), m.group(3)
    try:
        raw = b64url_decode(code)
    except ValueError:
        raise MalformedShare("the share's code is mistyped (it holds a character a share "
                             "never has)") from None
    if len(raw) != KEY_BYTES + _CHECK_BYTES:
        raise MalformedShare("the share is incomplete or too long: check that it was "
                             "copied whole")
    if number > shamir.MAX_SHARES:
        raise MalformedShare(f"share numbers go up to {shamir.MAX_SHARES}: the number is "
                             "mistyped")
    y, check = raw[:KEY_BYTES], raw[KEY_BYTES:]
    if not hmac.compare_digest(check, _checksum(shown_id, number, y)):
        raise MalformedShare("the share is mistyped: its checksum does not match (check "
                             "every character; nothing was counted)")
    if not hmac.compare_digest(shown_id, seal.shown_id):
        raise ForeignShare(f"this share belongs to seal {shown_id}, not to this "
                           f"deployment's seal {seal.shown_id}: shares of another "
                           "deployment, or from before the last rekey, do not count")
    if number > seal.shares:
        raise MalformedShare(f"this seal has {seal.shares} shares; share {number} is not "
                             "one of them")
    return y + bytes([number])


@dataclass(frozen=True)
class Progress:
    """Where an unseal stands. `root_key` is set once `threshold` shares gave it;
    `duplicate` says the last share had been submitted before and was not counted again."""

    received: int
    threshold: int
    root_key: bytes | None = field(default=None, repr=False)
    duplicate: bool = False

    @property
    def done(self) -> bool:
        return self.root_key is not None


class Unsealer:
    """Collects shares until `threshold` are in, then gives the root key if they combine
    to it. Safe to share between threads; the shares are kept only in this object's
    memory, and dropped once combined or on `reset`."""

    def __init__(self, stored: dict[str, Any]) -> None:
        self._seal = _ShamirDescription.load(stored)
        self._parts: dict[int, bytearray] = {}
        self._lock = threading.Lock()

    @property
    def progress(self) -> Progress:
        with self._lock:
            return Progress(len(self._parts), self._seal.threshold)

    def reset(self) -> None:
        """Forget every share submitted so far."""
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        for part in self._parts.values():
            part[:] = bytes(len(part))
        self._parts.clear()

    def submit(self, share: str) -> Progress:
        """Count one share. Raises ShareRefused (one of its subclasses) for a share that
        does not count; only SharesDoNotMatch also resets the progress."""
        part = _parse_share(share, self._seal)
        x = part[-1]
        with self._lock:
            held = self._parts.get(x)
            if held is not None:
                if hmac.compare_digest(bytes(held), part):
                    return Progress(len(self._parts), self._seal.threshold, duplicate=True)
                raise ConflictingShare(
                    f"a different share {x} was already submitted; this one was not "
                    f"counted ({len(self._parts)} of {self._seal.threshold} received)")
            self._parts[x] = bytearray(part)
            if len(self._parts) < self._seal.threshold:
                return Progress(len(self._parts), self._seal.threshold)
            root_key = shamir.combine([bytes(p) for p in self._parts.values()])
            count = len(self._parts)
            self._clear()
        if not _verifies(root_key, self._seal.seal_id, self._seal.verifier):
            raise SharesDoNotMatch(
                f"the {count} shares submitted do not give this deployment's root key: at "
                "least one of them is wrong, and which one cannot be told from the shares. "
                "Progress was reset; submit the shares again")
        return Progress(count, self._seal.threshold, root_key)


def _check_counts(shares: int, threshold: int) -> None:
    if (not isinstance(shares, int) or not isinstance(threshold, int)
            or isinstance(shares, bool) or isinstance(threshold, bool)
            or not 2 <= threshold <= shares <= shamir.MAX_SHARES):
        raise ValueError(f"need 2 <= threshold <= shares <= {shamir.MAX_SHARES} "
                         f"(got threshold {threshold}, shares {shares})")


class ShamirSeal:
    """The root key split among N key holders, M of whom recover it."""

    @staticmethod
    def init(root_key: bytes, shares: int, threshold: int) -> tuple[dict[str, Any], list[str]]:
        """(stored description, the shares' texts, one per key holder)."""
        _check_root_key(root_key)
        _check_counts(shares, threshold)
        seal_id = secrets.token_hex(_SEAL_ID_HEX // 2)
        seal = _ShamirDescription(seal_id, shares, threshold, _verifier(root_key, seal_id))
        texts = [_share_text(seal.shown_id, p)
                 for p in shamir.split(root_key, shares, threshold)]
        return seal.stored(), texts

    @staticmethod
    def rekey(stored: dict[str, Any], old_shares: list[str], shares: int,
              threshold: int) -> tuple[dict[str, Any], list[str]]:
        """A new split of the same root key (new seal id: the old shares stop counting),
        given at least `threshold` of the old shares."""
        _check_counts(shares, threshold)  # before the key holders type their shares in
        unsealer = Unsealer(stored)
        progress = unsealer.progress
        for text in old_shares:
            progress = unsealer.submit(text)
            if progress.root_key is not None:
                return ShamirSeal.init(progress.root_key, shares, threshold)
        raise ShareRefused(f"rekeying needs {progress.threshold} different shares of the "
                           f"current seal; {progress.received} were given")


# ---- Key Vault key (auto-unseal) ---------------------------------------------------------
def _thumbprint(key: KeyVaultKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256) of an RSA key's public key."""
    n, e = getattr(key.key, "n", None), getattr(key.key, "e", None)
    if not isinstance(n, bytes) or not isinstance(e, bytes):
        raise AutoUnsealError(str(key.id), "the key vault returned no RSA public key")

    def member(value: bytes) -> str:
        return b64url_encode(value.lstrip(b"\x00") or b"\x00")
    canonical = json.dumps({"e": member(e), "kty": "RSA", "n": member(n)},
                           separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode()).digest())


def _error_detail(exc: BaseException) -> str:
    """A one-line description of an SDK error for the operator: the service's error code
    and message, never request bodies (which hold wrapped keys)."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    message = getattr(error, "message", None) or str(exc)
    line = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    return f"{code}: {line[:200]}" if code else line[:200]


def _inner_code(exc: BaseException) -> str | None:
    error = getattr(exc, "error", None)
    inner = getattr(error, "innererror", None)
    return inner.get("code") if isinstance(inner, dict) else None


# What a Key Vault's 403 inner error code means for the seal.
_KEY_REFUSALS = {
    "KeyDisabled": "the key is disabled",
    "KeyExpired": "the key has expired",
    "KeyNotYetValid": "the key is not valid yet (its activation date is ahead)",
    "KeyOperationForbidden": "the key's permitted operations (key_ops) do not include "
                             "wrapKey and unwrapKey",
}


def _raise_from_sdk(key_id: str, exc: Exception) -> NoReturn:
    """One AutoUnsealError for any failure of the Azure SDK, with what the operator should
    look at."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    detail = _error_detail(exc)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        raise AutoUnsealError(key_id, f"the key vault could not be reached ({detail})",
                              retryable=True) from None
    if isinstance(exc, ClientAuthenticationError):
        status = getattr(exc, "status_code", None)
        if status == 403:
            raise AutoUnsealError(key_id, "the credential is not permitted to use the key "
                                  f"(it needs get, wrapKey and unwrapKey) ({detail})") from None
        raise AutoUnsealError(key_id, f"the credential was not accepted ({detail})") from None
    if isinstance(exc, ResourceNotFoundError):
        raise AutoUnsealError(key_id, "the key (this version of it) does not exist in the "
                              f"vault: was it deleted? ({detail})") from None
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        refusal = _KEY_REFUSALS.get(_inner_code(exc) or "") if status == 403 else None
        if refusal is not None:
            raise AutoUnsealError(key_id, f"{refusal} ({detail})") from None
        if status == 403:
            raise AutoUnsealError(key_id, "the credential is not permitted to use the key "
                                  f"(it needs get, wrapKey and unwrapKey) ({detail})") from None
        if status == 429 or status >= 500:
            raise AutoUnsealError(key_id, f"the key vault is busy or failing ({detail})",
                                  retryable=True) from None
        raise AutoUnsealError(key_id, f"the key vault refused the request ({detail})") from None
    raise AutoUnsealError(key_id, f"the Azure SDK failed ({type(exc).__name__}: "
                          f"{detail})") from None


def _sdk(key_id: str) -> Any:
    """The Azure Key Vault keys SDK, a dependency only of this seal."""
    try:
        import azure.keyvault.keys as keys
    except ImportError:
        raise AutoUnsealError(key_id, "the Azure SDK is not installed (pip install "
                              "azure-keyvault-keys azure-identity)") from None
    return keys


def _fetch_key(key_id: str, credential: TokenCredential,
               client_options: dict[str, Any]) -> KeyVaultKey:
    """The key (one version of it), checked to be an enabled RSA key."""
    keys = _sdk(key_id)
    url = urlsplit(key_id) if isinstance(key_id, str) else None
    segments = url.path.strip("/").split("/") if url else []
    if (url is None or url.scheme != "https" or not url.netloc or url.query or url.fragment
            or len(segments) not in (2, 3) or segments[0] != "keys" or "" in segments):
        raise AutoUnsealError(str(key_id)[:200], "this is not a Key Vault key id (expected "
                              "https://VAULT/keys/NAME/VERSION)")
    ident = keys.KeyVaultKeyIdentifier(key_id)
    try:
        with keys.KeyClient(ident.vault_url, credential, **client_options) as client:
            key: KeyVaultKey = client.get_key(ident.name, ident.version)
    except Exception as exc:  # every SDK failure becomes one error type
        _raise_from_sdk(key_id, exc)
    if key.key_type not in ("RSA", "RSA-HSM"):
        kty = getattr(key.key_type, "value", key.key_type)
        raise AutoUnsealError(key_id, f"the key is not an RSA key (it is {kty})")
    if key.properties.enabled is False:
        raise AutoUnsealError(key_id, "the key is disabled")
    return key


def _unwrap(key_id: str, key: KeyVaultKey, wrapped: bytes, credential: TokenCredential,
            client_options: dict[str, Any]) -> bytes:
    from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

    try:
        with CryptographyClient(key, credential, **client_options) as crypto:
            result = crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
    except Exception as exc:
        if getattr(exc, "status_code", None) == 400:
            raise AutoUnsealError(key_id, "the key could not unwrap the root key: it is not "
                                  "the key this seal was made with") from None
        _raise_from_sdk(key_id, exc)
    return bytes(result.key)


class KeyVaultSeal:
    """The root key wrapped by an RSA key in another Key Vault. `credential` is any
    azure-core TokenCredential (ClientSecretCredential, DefaultAzureCredential, ...);
    `client_options` go to the SDK clients (e.g. `connection_verify`, `retry_total`).
    The credential needs get, wrapKey and unwrapKey on the key (the Key Vault Crypto
    Service Encryption User role)."""

    @staticmethod
    def init(root_key: bytes, key_id: str, credential: TokenCredential,
             **client_options: Any) -> dict[str, Any]:
        """The stored description. `key_id` may omit the version: the current one is
        recorded (a later version of the key would not unwrap this root key). The wrapped
        key is unwrapped once before returning, so a seal that would not open is never
        stored."""
        from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

        _check_root_key(root_key)
        key = _fetch_key(key_id, credential, client_options)
        versioned = str(key.id)
        ops = key.key_operations
        # KeyOperation is a str enum: compare by value (its str() and hash are the name's)
        if ops is not None and not all(any(op == want for op in ops)
                                       for want in ("wrapKey", "unwrapKey")):
            raise AutoUnsealError(versioned, _KEY_REFUSALS["KeyOperationForbidden"])
        # Wrapping, unlike unwrapping, needs the key inside its validity window; the vault
        # (or the SDK, wrapping locally) judges it by the wall clock, and so does this.
        now = datetime.now(UTC)
        if key.properties.expires_on is not None and key.properties.expires_on <= now:
            raise AutoUnsealError(versioned, _KEY_REFUSALS["KeyExpired"])
        if key.properties.not_before is not None and key.properties.not_before > now:
            raise AutoUnsealError(versioned, _KEY_REFUSALS["KeyNotYetValid"])
        try:
            with CryptographyClient(key, credential, **client_options) as crypto:
                wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, root_key).encrypted_key
        except Exception as exc:
            _raise_from_sdk(versioned, exc)
        if not hmac.compare_digest(
                _unwrap(versioned, key, wrapped, credential, client_options), root_key):
            raise AutoUnsealError(versioned, "the key did not unwrap what it wrapped")
        return {"type": AZURE_KEY_VAULT, "key_id": versioned, "algorithm": WRAP_ALGORITHM,
                "wrapped_key": b64url_encode(wrapped),
                "thumbprint": _thumbprint(key),
                "verifier": _verifier(root_key, AZURE_KEY_VAULT)}

    @staticmethod
    def unseal(stored: dict[str, Any], credential: TokenCredential,
               **client_options: Any) -> bytes:
        """The root key. Refused (AutoUnsealError) when the vault cannot be reached, the key
        is disabled or deleted, or it is not the key the seal was made with."""
        if seal_type(stored) != AZURE_KEY_VAULT:
            raise SealDescriptionError("the stored seal is not a Key Vault seal")
        key_id = _field(stored, "key_id", str)
        if _field(stored, "algorithm", str) != WRAP_ALGORITHM:
            raise SealDescriptionError("the stored seal's wrapping algorithm is not "
                                       f"{WRAP_ALGORITHM}")
        try:
            wrapped = b64url_decode(_field(stored, "wrapped_key", str))
        except ValueError:
            raise SealDescriptionError("the stored wrapped root key is not base64url") from None
        thumbprint = _field(stored, "thumbprint", str)
        verifier = _field(stored, "verifier", str)
        key = _fetch_key(key_id, credential, client_options)
        if not hmac.compare_digest(_thumbprint(key).encode(), thumbprint.encode()):
            raise AutoUnsealError(key_id, "the key's public key is not the one this seal was "
                                  "made with (another key answers at this id)")
        root_key = _unwrap(key_id, key, wrapped, credential, client_options)
        if len(root_key) != KEY_BYTES or not _verifies(root_key, AZURE_KEY_VAULT, verifier):
            raise AutoUnsealError(key_id, "the key unwrapped a value that is not this "
                                  "deployment's root key")
        return root_key
