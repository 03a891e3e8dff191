"""A managed HSM pool's security domain (securitydomain.json): its download, which
activates the pool, and the download's status; and its recovery into a new pool (the
exchange key, the upload of a restore blob, and the upload's status).

- A pool's security domain is a random 32-byte domain secret, made at the first download
  and kept sealed through the barrier under the pool's own data key (purging the pool
  destroys it with the pool's key material); the sealed value and the activation live in
  the pool's properties document under `securityDomain` (vault/activation.py).
- `POST /securitydomain/download` takes 3 to 10 wrapping keys (JWKs whose `x5c[0]` is an
  X.509 certificate with an RSA key of 2048 bits or more) and a quorum `required` of 2 to
  N; anything else is 400 BadParameter. It answers the security domain file
  (crypto/securitydomain.py: the format `az keyvault security-domain restore-blob`
  reads), the domain secret under a fresh master key shared `required` of N, one share
  encrypted to each certificate. The pool is activated when it completes, which is before
  the answer is sent: its status (`GET /securitydomain/download/pending`) is then Success.
- As on Azure, an activated pool's administrator may download again with another set of
  certificates: the same domain secret, under a new master key.
- Recovery, as Azure does it: a new pool that is not activated publishes an exchange key
  (`GET /securitydomain/upload`): an RSA key pair made at the first request, its private
  key sealed through the barrier under the pool's data key like the domain secret, its
  certificate self-signed. Offline, `az keyvault security-domain restore-blob` opens an
  old pool's file with a quorum of its private keys and wraps its data to that
  certificate (crypto/securitydomain.py: the restore blob). `POST /securitydomain/upload`
  opens the blob with the exchange private key, takes the domain secret it holds as the
  pool's and activates the pool, in one write; the exchange key is then dropped. Refused
  with 400 BadParameter, leaving the pool not activated: a blob for another exchange key,
  a damaged blob, data that does not open or holds no domain secret, and an upload before
  any exchange key; with 409 Conflict: an exchange key or an upload asked of a pool that
  is already activated. `GET /securitydomain/upload/pending` says Success once the pool
  was activated by an upload, else Failed with the last refusal's details.
- Each operation is a row of vault/operations.py (SecurityDomainBackup,
  SecurityDomainBackupStatusGet: the names of Azure's logs; SecurityDomainTransferKeyGet,
  SecurityDomainRestore, SecurityDomainRestoreStatusGet: coined after them) decided by
  the pool's local RBAC at `/` with Managed HSM's security domain data actions.
"""

from __future__ import annotations

import base64
import json
import secrets
import struct
from dataclasses import dataclass

from openkeyvault.access.authorize import Authorizer
from openkeyvault.crypto import securitydomain as sd
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.barrier import Barrier, vault_owner
from openkeyvault.storage.records import VaultRecord
from openkeyvault.storage.repository import Repository
from openkeyvault.vault import activation
from openkeyvault.vault.context import Caller, authorize_operation
from openkeyvault.vault.errors import BadParameter, Conflict, NotFound, VaultNotFound
from openkeyvault.vault.managedhsms import KIND as POOL_KIND
from openkeyvault.vault.properties import MAX_PROPERTIES_CHARS

PATH = "/"  # the security domain belongs to the whole pool
MIN_CERTIFICATES = 3
MAX_CERTIFICATES = 10
MIN_QUORUM = 2
SECRET_BYTES = 32
TAG = "pool-secret"  # the EncData item holding the domain secret
SUCCESS = "Success"  # OperationStatus
FAILED = "Failed"
DONE = "The security domain was downloaded; the managed HSM is activated."
NEVER = ("No security domain download has completed for this managed HSM: POST "
         "/securitydomain/download to activate it.")
RESTORED = "The security domain was uploaded; the managed HSM is activated."
NO_UPLOAD = "No security domain upload has completed for this managed HSM."
ALREADY = ("The managed HSM is already activated: a security domain can only be uploaded to "
           "a managed HSM that is not activated.")
NO_EXCHANGE_KEY = ("This managed HSM has no exchange key yet: GET /securitydomain/upload "
                   "(`az keyvault security-domain init-recovery`) and make the restore blob "
                   "for its certificate.")
TRANSFER = "transferKey"  # the member of `securityDomain` holding the exchange key
UPLOAD = "upload"  # ... and the last refused upload's status


@dataclass(frozen=True)
class WrappingKey:
    """One SecurityDomainJsonWebKey as the domain needs it."""

    kty: str | None
    x5c: tuple[str, ...]
    n: str | None = None
    e: str | None = None


@dataclass(frozen=True)
class OperationStatus:
    status: str
    status_details: str


def _context(vault: VaultRecord) -> bytes:
    return f"securitydomain:{vault.id}".encode()


def _transfer_context(vault: VaultRecord) -> bytes:
    return f"securitydomain-transfer:{vault.id}".encode()


def certificates(keys: list[WrappingKey], required: int) -> list[sd.WrappingCertificate]:
    """The wrapping certificates of a download request, or 400 BadParameter saying what
    is wrong."""
    if not MIN_CERTIFICATES <= len(keys) <= MAX_CERTIFICATES:
        raise BadParameter(f"The security domain download needs {MIN_CERTIFICATES} to "
                           f"{MAX_CERTIFICATES} certificates; {len(keys)} were given.")
    if not MIN_QUORUM <= required <= len(keys):
        raise BadParameter(f"The quorum 'required' must be between {MIN_QUORUM} and the "
                           f"number of certificates ({len(keys)}); {required} was given.")
    out = []
    for i, k in enumerate(keys):
        if k.kty not in ("RSA", "RSA-HSM"):
            raise BadParameter(f"Certificate {i}: kty must be RSA.")
        if not k.x5c:
            raise BadParameter(f"Certificate {i}: x5c (its X.509 certificate) is required.")
        try:
            out.append(sd.wrapping_certificate(k.x5c[0], k.n, k.e))
        except sd.WrappingKeyError as e:
            raise BadParameter(f"Certificate {i}: {e}.") from None
    if len({c.x5t_s256 for c in out}) != len(out):
        raise BadParameter("The certificates must be distinct.")
    return out


class SecurityDomainService:
    """The security domain of the pool a caller addresses, decided by `authorizer`."""

    def __init__(self, repo: Repository, barrier: Barrier, authorizer: Authorizer,
                 clock: Clock) -> None:
        self._repo = repo
        self._barrier = barrier
        self._authz = authorizer
        self._clock = clock

    def _check(self, caller: Caller, operation: str) -> None:
        if caller.vault.kind != POOL_KIND:  # a vault's host serves none (defense in depth)
            raise NotFound("The security domain belongs to managed HSMs; a vault has none.")
        authorize_operation(self._authz, caller, operation, PATH)

    def download(self, caller: Caller, keys: list[WrappingKey], required: int) -> str:
        """The security domain file for `keys` (quorum `required`); the pool is activated
        once the file is made, before it is answered."""
        self._check(caller, "SecurityDomainBackup")
        wrapping = certificates(keys, required)
        vault = caller.vault
        stored = activation.state(vault.properties).get("secret")
        if isinstance(stored, str) and activation.activated(vault.properties):
            return _file(self._open(vault, stored), wrapping, required)
        secret = secrets.token_bytes(SECRET_BYTES)
        made = _file(secret, wrapping, required)
        kept = self._activate(vault, self._seal(vault, secret))
        # Another download of a new pool won the race: its secret is the pool's.
        return made if kept is None else _file(self._open(vault, kept), wrapping, required)

    def download_status(self, caller: Caller) -> OperationStatus:
        self._check(caller, "SecurityDomainBackupStatusGet")
        if activation.activated(caller.vault.properties):
            return OperationStatus(SUCCESS, DONE)
        return OperationStatus(FAILED, NEVER)

    def transfer_key(self, caller: Caller, kid: str) -> dict[str, object]:
        """The pool's exchange key as a JWK with its certificate (made at the first
        request); 409 Conflict once the pool is activated."""
        self._check(caller, "SecurityDomainTransferKeyGet")
        vault = caller.vault
        if activation.activated(vault.properties):
            raise Conflict(ALREADY)
        found = activation.state(vault.properties).get(TRANSFER)
        if not isinstance(found, dict):
            found = self._keep_transfer_key(vault)
        return sd.transfer_jwk(base64.b64decode(found["certificate"]), kid)

    def _keep_transfer_key(self, vault: VaultRecord) -> dict[str, str]:
        """Make an exchange key and store it, unless the pool got one meanwhile (that one
        is kept and returned)."""
        private, certificate = sd.transfer_key_pair(f"{vault.name} security domain exchange")
        made = {"certificate": base64.b64encode(certificate).decode(),
                "key": self._seal(vault, private, _transfer_context(vault))}
        kept: list[dict[str, str]] = []

        def change(current: str | None) -> str:
            doc = json.loads(current) if current else {}
            member = activation.state(current)
            if member.get("activated") is True:
                raise Conflict(ALREADY)
            if isinstance(member.get(TRANSFER), dict):
                kept.append(member[TRANSFER])
                return current or "{}"
            doc[activation.MEMBER] = {**member, TRANSFER: made}
            return _dump(doc)

        if self._repo.update_vault_properties(vault.id, change,
                                              int(self._clock.now())) is None:
            raise VaultNotFound(f"The managed HSM '{vault.name}' was not found.")
        return kept[-1] if kept else made

    def upload(self, caller: Caller, blob: str) -> OperationStatus:
        """Restore a domain from a restore blob made for the pool's exchange key: its
        domain secret becomes the pool's, which is activated."""
        self._check(caller, "SecurityDomainRestore")
        vault = caller.vault
        if activation.activated(vault.properties):
            raise Conflict(ALREADY)
        exchange = activation.state(vault.properties).get(TRANSFER)
        if not isinstance(exchange, dict):
            raise self._refuse(vault, NO_EXCHANGE_KEY)
        private = self._open(vault, exchange["key"], _transfer_context(vault))
        try:
            items = sd.open_restore_blob(blob, private,
                                         base64.b64decode(exchange["certificate"]))
        except sd.RestoreBlobError as e:
            raise self._refuse(vault, str(e)) from None
        secret = _secret_of(items.get(TAG))
        if secret is None:
            raise self._refuse(vault, f"The restore blob's EncData holds no '{TAG}' item "
                                      "with a managed HSM's domain secret.")
        sealed = self._seal(vault, secret)
        now = int(self._clock.now())

        def change(current: str | None) -> str:
            doc = json.loads(current) if current else {}
            if activation.activated(current):
                raise Conflict(ALREADY)
            doc[activation.MEMBER] = {"activated": True, "activatedAt": now,
                                      "secret": sealed, "restored": True}
            return _dump(doc)

        if self._repo.update_vault_properties(vault.id, change, now) is None:
            raise VaultNotFound(f"The managed HSM '{vault.name}' was not found.")
        return OperationStatus(SUCCESS, RESTORED)

    def upload_status(self, caller: Caller) -> OperationStatus:
        self._check(caller, "SecurityDomainRestoreStatusGet")
        member = activation.state(caller.vault.properties)
        if member.get("activated") is True and member.get("restored") is True:
            return OperationStatus(SUCCESS, RESTORED)
        last = member.get(UPLOAD)
        if member.get("activated") is not True and isinstance(last, dict):
            return OperationStatus(FAILED, str(last.get("details", NO_UPLOAD)))
        return OperationStatus(FAILED, NO_UPLOAD)

    def _refuse(self, vault: VaultRecord, details: str) -> BadParameter:
        """Record a refused upload's details for its status (unless the pool was activated
        meanwhile) and return the 400 to raise."""

        def change(current: str | None) -> str:
            member = activation.state(current)
            if member.get("activated") is True:
                return current or "{}"
            doc = json.loads(current) if current else {}
            doc[activation.MEMBER] = {**member, UPLOAD: {"status": FAILED, "details": details}}
            return _dump(doc)

        self._repo.update_vault_properties(vault.id, change, int(self._clock.now()))
        return BadParameter(details)

    def _seal(self, vault: VaultRecord, secret: bytes, context: bytes | None = None) -> str:
        owner = vault_owner(vault.id)
        self._barrier.ensure_owner(owner, int(self._clock.now()))
        version, sealed = self._barrier.seal(owner, context or _context(vault), secret)
        return base64.b64encode(struct.pack(">I", version) + sealed).decode()

    def _open(self, vault: VaultRecord, stored: str, context: bytes | None = None) -> bytes:
        raw = base64.b64decode(stored)
        (version,) = struct.unpack(">I", raw[:4])
        return self._barrier.open(vault_owner(vault.id), version, context or _context(vault),
                                  raw[4:])

    def _activate(self, vault: VaultRecord, sealed: str) -> str | None:
        """Store the sealed secret and the activation in one write; when the pool already
        holds a secret (a concurrent first download), keep it and return it."""
        now = int(self._clock.now())
        earlier: list[str] = []

        def change(current: str | None) -> str:
            doc = json.loads(current) if current else {}
            kept = activation.state(current).get("secret")
            if isinstance(kept, str):
                earlier.append(kept)
            doc[activation.MEMBER] = {"activated": True, "activatedAt": now,
                                      "secret": kept if isinstance(kept, str) else sealed}
            text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
            if len(text) > MAX_PROPERTIES_CHARS:
                raise BadParameter("The managed HSM properties are too large.")
            return text

        if self._repo.update_vault_properties(vault.id, change, now) is None:
            raise VaultNotFound(f"The managed HSM '{vault.name}' was not found.")
        return earlier[-1] if earlier else None


def _dump(doc: dict[str, object]) -> str:
    text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
    if len(text) > MAX_PROPERTIES_CHARS:
        raise BadParameter("The managed HSM properties are too large.")
    return text


def _secret_of(payload: bytes | None) -> bytes | None:
    """The domain secret of the `pool-secret` item's plaintext, None when it holds none."""
    if payload is None:
        return None
    try:
        doc = json.loads(payload)
        secret = base64.b64decode(doc["secret"], validate=True) \
            if isinstance(doc, dict) and doc.get("version") == 1 else None
    except (ValueError, KeyError, TypeError):
        return None
    return secret if secret is not None and len(secret) == SECRET_BYTES else None


def _file(secret: bytes, wrapping: list[sd.WrappingCertificate], required: int) -> str:
    """The security domain file: the domain secret as its one EncData item."""
    payload = json.dumps({"version": 1, "secret": base64.b64encode(secret).decode()})
    return sd.document({TAG: payload.encode()}, wrapping, required)
