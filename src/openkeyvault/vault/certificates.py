"""Certificates: create (self-signed, by the deployment's CA, or through a CSR and merge),
import, get, list, update, policy, the pending operation, delete/recover/purge,
backup/restore, and the lifetime actions the scheduler runs.

A certificate version is three objects with one name and one version: the certificate
(collection "certificates": the DER certificate, its chain and thumbprint in `props`),
its key (collection "keys", `managed`, the private key sealed as the keys service seals
it) and its secret (collection "secrets", `managed`, the PFX or PEM sealed as secrets
are). The keys and secrets services show them but refuse to change them. The
certificate object's state (`objects.policy`) holds {"policy": the stored policy,
"pending": the certificate operation or None}; an operation waiting for a merge keeps
its private key sealed inside the state until the version is made.

A key of type RSA-HSM or EC-HSM (a Premium vault, a deployment with an HSM keystore) is
made and kept in the HSM and signs the request and a self-signed certificate there
(vault/certkeys.py); the key version records that keystore, so the keys API serves it
from the HSM. Such a key is never exportable: its secret holds the certificate chain only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from openkeyvault.access.authorize import Authorizer
from openkeyvault.crypto import certificate_keys as ck
from openkeyvault.crypto import certificates as x5
from openkeyvault.keystore.base import KeyStore
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.barrier import Barrier, BarrierError, vault_owner
from openkeyvault.storage.records import EventRecord, NameConflict, VaultRecord, VersionRecord
from openkeyvault.storage.repository import Repository
from openkeyvault.vault import certpolicy, keytypes, names, paging
from openkeyvault.vault.backup import BackupCodec
from openkeyvault.vault.certkeys import SOFTWARE, CertificateKey, CertificateKeys
from openkeyvault.vault.certrequests import (
    CertificateCreate,
    CertificateImport,
    CertificateMerge,
    CertificatePolicy,
    CertificateUpdate,
    sent,
)
from openkeyvault.vault.context import Caller
from openkeyvault.vault.errors import BadParameter, Conflict, DomainError, Forbidden, NotFound
from openkeyvault.vault.keys import _context as key_context
from openkeyvault.vault.keystore_faults import cache_prefix as key_prefix
from openkeyvault.vault.lifecycle import recovery_level
from openkeyvault.vault.models import Attributes, DeletedInfo, Page
from openkeyvault.vault.objects import Kind, ObjectService
from openkeyvault.vault.requests import ObjectAttributes, Unset
from openkeyvault.vault.secrets import _context as secret_context

KIND = Kind(collection="certificates", label="Certificate")
LINKED = ("certificates", "keys", "secrets")
MAX_TAG_CHARS = 256
MAX_IMPORT_CHARS = 64 * 1024
MAX_PASSWORD_CHARS = 1024
MAX_MERGE_CERTS = 10
IN_PROGRESS = "inProgress"
COMPLETED = "completed"
CANCELLED = "cancelled"
FAILED = "failed"
PENDING_DETAILS = ("Pending certificate created. Certificate request is in progress. This "
                   "may take some time based on the issuer provider. Please check again later.")
# Azure's words when the issuer is Unknown: nothing is in progress until the client merges.
MERGE_DETAILS = "Pending certificate created. Please Perform Merge to complete the request."

log = logging.getLogger("openkeyvault.certificates")


@dataclass(frozen=True)
class CertificateBundle:
    name: str
    version: str
    cer: bytes
    x5t: bytes
    content_type: str | None
    attributes: Attributes
    policy: dict[str, Any] | None
    tags: dict[str, str] | None = None
    deleted: DeletedInfo | None = None
    preserve_order: bool | None = None


@dataclass(frozen=True)
class CertificateOperation:
    name: str
    status: str
    issuer: dict[str, Any]
    request_id: str
    cancellation_requested: bool = False
    csr: bytes | None = None
    status_details: str | None = None
    error: dict[str, str] | None = None
    target_version: str | None = None
    preserve_order: bool | None = None


@dataclass(frozen=True)
class PolicyBundle:
    name: str
    policy: dict[str, Any]


@dataclass
class _Made:
    """A new version's key and certificate, before it is stored."""

    key: CertificateKey
    certificate: Any
    chain: tuple[Any, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    csr: str | None = None


def _std_b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Paths of their own under /certificates: a certificate of such a name could not be addressed.
RESERVED_NAMES = frozenset({"issuers", "contacts"})


def _check_certificate_name(name: str) -> str:
    names.check_object_name(name)
    if name.lower() in RESERVED_NAMES:
        raise BadParameter(f"The certificate name '{name}' is reserved: "
                           f"/certificates/{name.lower()} addresses the vault's certificate "
                           f"{name.lower()}.")
    return name


class CertificateService(ObjectService[CertificateBundle]):
    kind = KIND

    def __init__(self, repo: Repository, barrier: Barrier, authorizer: Authorizer,
                 clock: Clock, backups: BackupCodec, issuers: Any = None,
                 ca: Any = None, keystores: dict[str, KeyStore] | None = None) -> None:
        """`keystores`: the keys service's, by name (none: software keys only)."""
        super().__init__(repo, barrier, authorizer, clock, backups)
        self._issuers = issuers  # IssuerService, or None: only Self and Unknown
        self._ca = ca  # CertificateAuthority, or None: no built-in issuer
        self._keys = CertificateKeys(keystores or {})

    # ---- reading ----------------------------------------------------------------
    def _state(self, vault_id: int, name: str, deleted: bool = False) -> dict[str, Any]:
        obj = self._repo.get_object(vault_id, KIND.collection, name.lower())
        if obj is None or obj[1] != deleted:
            return {}
        return obj[2] or {}

    def _bundle(self, caller: Caller, rec: VersionRecord,
                policy: dict[str, Any] | None = None) -> CertificateBundle:
        p = rec.props
        return CertificateBundle(
            name=rec.name, version=rec.version, cer=base64.b64decode(p["cer"]),
            x5t=base64.b64decode(p["x5t"]), content_type=p.get("contentType"),
            attributes=self._attributes(caller, rec), policy=policy, tags=rec.tags,
            deleted=self._deleted(rec), preserve_order=p.get("preserveCertOrder"),
        )

    def _full(self, caller: Caller, rec: VersionRecord) -> CertificateBundle:
        state = self._state(caller.vault.id, rec.name, deleted=rec.deleted_date is not None)
        return self._bundle(caller, rec, state.get("policy"))

    def get(self, caller: Caller, name: str, version: str | None) -> CertificateBundle:
        self._check(caller, "CertificateGet", name)
        return self._full(caller, self._find(caller, name, version))

    def get_deleted(self, caller: Caller, name: str) -> CertificateBundle:
        self._check(caller, "CertificateGetDeleted", name)
        rec = None
        if names.OBJECT_NAME.fullmatch(name):
            rec = self._repo.get_version(caller.vault.id, KIND.collection, name.lower(), None,
                                         deleted=True)
        if rec is None:
            raise KIND.deleted_not_found(name[:127])
        return self._full(caller, rec)

    # ---- lifecycle of the three objects -------------------------------------------------
    def delete(self, caller: Caller, name: str) -> CertificateBundle:
        self._check(caller, "CertificateDelete", name)
        rec = self._find(caller, name, None)
        now = self._now()
        purge_at = now + caller.vault.retention_days * 86_400
        if not self._repo.soft_delete_linked(caller.vault.id, LINKED, name.lower(), now,
                                             purge_at):
            raise KIND.not_found(name)
        rec.deleted_date, rec.scheduled_purge_date = now, purge_at
        return self._full(caller, rec)

    def recover(self, caller: Caller, name: str) -> CertificateBundle:
        self._check(caller, "CertificateRecover", name)
        if not names.OBJECT_NAME.fullmatch(name) or not self._repo.recover_linked(
                caller.vault.id, LINKED, name.lower()):
            raise KIND.deleted_not_found(name[:127])
        return self._full(caller, self._find(caller, name, None))

    def purge(self, caller: Caller, name: str) -> None:
        self._check(caller, "CertificatePurge", name)
        if caller.vault.purge_protection:
            raise Forbidden(
                'Operation "purge" is not allowed because purge protection is enabled for this '
                "vault. Key Vault service will automatically purge it after the retention period "
                f"has passed. Vault: {caller.vault.name};location=local"
            )
        held = self._held_keys(caller.vault, name) if names.OBJECT_NAME.fullmatch(name) \
            else []
        if not names.OBJECT_NAME.fullmatch(name) or not self._repo.purge_linked(
                caller.vault.id, LINKED, name.lower()):
            raise KIND.deleted_not_found(name[:127])
        # purged key material is gone for good: the HSM's objects of every version (and of
        # an operation still waiting for a merge) are destroyed once the purge is stored
        owner = key_prefix(caller.vault.id, name.lower())
        self._keys.destroy(held, owner)
        self._keys.forget(owner)

    def _held_keys(self, vault: VaultRecord, name: str) -> list[CertificateKey]:
        """The keys of a soft-deleted certificate that an HSM holds: each key version's,
        and a pending operation's. One that cannot be read is logged and left to the
        hsm-orphans job."""
        out = []
        for rec in self._repo.all_versions(vault.id, "keys", name.lower(), deleted=True):
            if rec.props.get("keystore", SOFTWARE) == SOFTWARE:
                continue
            try:
                out.append(self._keys.loaded(rec.props, self._key_blob(vault, rec)))
            except (BadParameter, ValueError, KeyError):
                log.error("certificates: the key of certificate %s version %s in vault %s "
                          "could not be read to be destroyed", name, rec.version, vault.name)
        pending = self._pending_key(vault, name, self._state(vault.id, name, deleted=True)
                                    .get("pending"), strict=False)
        return out + ([pending] if pending is not None and pending.held else [])

    # ---- policy -------------------------------------------------------------------------
    def get_policy(self, caller: Caller, name: str) -> PolicyBundle:
        self._check(caller, "CertificatePolicyGet", name)
        state = self._live_state(caller, name)
        return PolicyBundle(name, state["policy"])

    def _live_state(self, caller: Caller, name: str) -> dict[str, Any]:
        if not names.OBJECT_NAME.fullmatch(name):
            raise KIND.not_found(name[:127])
        obj = self._repo.get_object(caller.vault.id, KIND.collection, name.lower())
        if obj is None or obj[1] or not obj[2] or obj[2].get("policy") is None:
            raise KIND.not_found(name)
        return obj[2]

    def update_policy(self, caller: Caller, name: str, given: CertificatePolicy
                      ) -> PolicyBundle:
        self._check(caller, "CertificatePolicyUpdate", name)
        state = self._live_state(caller, name)
        policy = self._checked_policy(caller, given, state["policy"])
        self._replace_state(caller, name, state, {**state, "policy": policy})
        obj = self._repo.get_object(caller.vault.id, KIND.collection, name.lower())
        return PolicyBundle(obj[0] if obj else name, policy)

    def _replace_state(self, caller: Caller, name: str, old: dict[str, Any],
                       new: dict[str, Any]) -> None:
        """Store `new` if the state is still `old` (a concurrent change wins, and this
        request is refused)."""
        if not self._repo.set_linked_state(caller.vault.id, KIND.collection, name.lower(), new,
                                           lambda cur: (cur or {}) == old):
            raise Conflict(f"Certificate {name} changed while this request was applied; "
                           "try again.")

    def _checked_policy(self, caller: Caller, given: CertificatePolicy,
                        base: dict[str, Any] | None) -> dict[str, Any]:
        policy = certpolicy.validate(given, base, self._now())
        kty = policy["key_props"]["kty"]
        keytypes.check_kty(kty, caller.vault.sku)
        self._keys.check(kty)
        self._resolve(caller.vault, policy["issuer"]["name"])
        return policy

    def _resolve(self, vault: VaultRecord, issuer_name: str) -> tuple[str, str]:
        """(kind, name): "self", "unknown", "builtin" or "external"."""
        if issuer_name == certpolicy.SELF:
            return "self", issuer_name
        if issuer_name == certpolicy.UNKNOWN:
            return "unknown", issuer_name
        if self._issuers is None:
            raise BadParameter(f"The issuer {issuer_name} was not found in this vault.")
        resolved = self._issuers.resolve(vault, issuer_name)
        return resolved.kind, resolved.name

    # ---- create, pending, merge -------------------------------------------------------
    def create(self, caller: Caller, name: str, request: CertificateCreate
               ) -> CertificateOperation:
        _check_certificate_name(name)
        self._check(caller, "CertificateCreate", name)
        vid = caller.vault.id
        obj = self._repo.get_object(vid, KIND.collection, name.lower())
        self._check_name_free(vid, name, obj)
        state = (obj[2] if obj else None) or {}
        given = request.policy
        if given is None and state.get("policy") is None:
            raise BadParameter("The certificate policy is required to create a certificate.")
        policy = self._checked_policy(caller, given, None) if given is not None \
            else state["policy"]
        enabled, tags = self._attrs_tags(request.attributes, request.tags)
        pending = state.get("pending")
        if pending and pending.get("status") == IN_PROGRESS:
            raise self._in_progress(name)
        kind, _ = self._resolve(caller.vault, policy["issuer"]["name"])
        extra = {"enabled": enabled, "tags": tags, "preserveCertOrder": request.preserve_order}
        key, fresh = self._key_for(caller.vault, name, policy)
        owner = key_prefix(vid, name.lower())
        request_id = uuid.uuid4().hex
        with _discarded_if_refused(self._keys, key if fresh else None, owner):
            csr = _std_b64(ck.csr_der(self._keys.csr(certpolicy.request(policy, name), key,
                                                     owner)))
            if kind in ("self", "builtin"):
                made = self._issue(kind, policy, key, name, owner)
                made.extra = extra
                made.csr = csr
                self._store_version(caller.vault, name, policy, made, state,
                                    request_id=request_id)
                # The version exists now, but the answer says inProgress: the SDKs' pollers
                # fetch the certificate only after a poll of the operation reports it
                # completed (a first answer that is already final leaves them with nothing).
                return self._operation(name, {
                    "status": IN_PROGRESS, "status_details": PENDING_DETAILS,
                    "issuer": policy["issuer"], "request_id": request_id,
                    "cancellation_requested": False, "csr": csr})
            # unknown or external: the operation waits for a merge with the CSR
            op = self._await_merge(caller.vault, name, policy, kind, key, request_id, csr,
                                   extra)
        return self._operation(name, op)

    def _await_merge(self, vault: VaultRecord, name: str, policy: dict[str, Any], kind: str,
                     key: CertificateKey, request_id: str, csr: str, extra: dict[str, Any]
                     ) -> dict[str, Any]:
        """Store the operation that waits for a merge, with its key sealed inside (and the
        key's public record, which names an HSM key's objects so they are kept)."""
        vid = vault.id
        key_version, sealed = self._barrier.seal(vault_owner(vid), self._pending_aad(
            vid, name, request_id), key.blob)
        details = MERGE_DETAILS if kind == "unknown" else PENDING_DETAILS
        op = {
            "status": IN_PROGRESS, "status_details": details,
            "issuer": policy["issuer"], "request_id": request_id,
            "cancellation_requested": False, "csr": csr,
            "sealed_key": _std_b64(sealed), "key_version": key_version,
            "key": key.stored_props(), "extra": extra, "created": self._now(),
        }
        try:
            stored = self._repo.add_linked(
                vid, name, LINKED, {}, {"policy": policy, "pending": op},
                expect_state=lambda cur: (((cur or {}).get("pending") or {}).get("status")
                                          != IN_PROGRESS))
        except NameConflict as e:
            raise self._conflict(name, e) from None
        if not stored:
            raise self._in_progress(name)
        return op

    @staticmethod
    def _in_progress(name: str) -> Conflict:
        return Conflict(f"There is a pending certificate operation for certificate {name}; "
                        "delete it or wait until it completes.")

    @staticmethod
    def _pending_aad(vault_id: int, name: str, request_id: str) -> bytes:
        return f"okv/certificate-pending/{vault_id}/{name.lower()}/{request_id}".encode()

    def _check_name_free(self, vault_id: int, name: str,
                         obj: tuple[str, bool, dict[str, Any] | None] | None) -> None:
        if obj is not None and obj[1]:
            raise KIND.deleted_conflict(name)
        if obj is None:
            for col, label in (("keys", "Key"), ("secrets", "Secret")):
                other = self._repo.get_object(vault_id, col, name.lower())
                if other is not None:
                    raise Conflict(f"The name {name} is in use by a {label.lower()}; a "
                                   "certificate needs a name that no key or secret uses.")

    def _conflict(self, name: str, e: NameConflict) -> Conflict:
        if e.deleted:
            return KIND.deleted_conflict(name)
        return Conflict(f"The name {name} is in use by a key or secret; a certificate needs a "
                        "name that no key or secret uses.")

    @staticmethod
    def _attrs_tags(attributes: ObjectAttributes | None, tags: dict[str, str] | None
                    ) -> tuple[bool, dict[str, str] | None]:
        """(enabled, tags) of a new version: enabled unless the client said false (the
        validity comes from the certificate, not from nbf and exp)."""
        enabled = attributes.enabled if attributes is not None else None
        return (enabled if isinstance(enabled, bool) else True,
                names.check_tags(tags, MAX_TAG_CHARS))

    def _key_for(self, vault: VaultRecord, name: str, policy: dict[str, Any]
                 ) -> tuple[CertificateKey, bool]:
        """(key, made now): the latest version's key when the policy reuses keys and it
        still fits the policy's key type, size and curve (an HSM key stays in the HSM);
        else a new key, made in the HSM for an HSM key type."""
        kp = policy["key_props"]
        if kp.get("reuse_key"):
            latest = self._repo.get_version(vault.id, "keys", name.lower(), None)
            if latest is not None and latest.props.get("managed") and \
                    latest.props.get("kty") == kp["kty"]:
                key = self._keys.loaded(latest.props, self._key_blob(vault, latest))
                if key.size == kp["key_size"] and \
                        latest.props["public"].get("crv") == kp.get("crv"):
                    return key, False
        return self._keys.generate(kp["kty"], kp.get("key_size"), kp.get("crv")), True

    def _key_blob(self, vault: VaultRecord, rec: VersionRecord) -> bytes:
        if rec.sealed is None or rec.key_version is None:
            raise BadParameter("The key has no material.")
        try:
            return self._barrier.open(vault_owner(vault.id), rec.key_version,
                                      key_context(vault.id, rec.name.lower(), rec.version),
                                      rec.sealed)
        except BarrierError:
            raise BadParameter("The key material could not be unsealed.") from None

    def _issue(self, kind: str, policy: dict[str, Any], key: CertificateKey, name: str,
               owner: str) -> _Made:
        """The certificate of a new version: self-signed by its key (in the HSM for an HSM
        key), or issued by the built-in CA for its public key."""
        req = certpolicy.request(policy, name)
        now = dt.datetime.fromtimestamp(self._clock.now(), dt.UTC)
        if kind == "self":
            return _Made(key, self._keys.self_signed(req, key, now, owner))
        if self._ca is None:
            raise BadParameter("This deployment has no built-in certificate authority.")
        try:
            leaf, chain = self._ca.issue(req, key.public, now)
        except x5.CertificateInputError as exc:
            raise BadParameter(str(exc)) from None
        return _Made(key, leaf, tuple(chain))

    def _store_version(self, vault: VaultRecord, name: str, policy: dict[str, Any],
                       made: _Made, state: dict[str, Any], request_id: str | None = None,
                       expect_latest: str | None = None, tags_default: Any = None,
                       expect_pending: str | None = None, operation: bool = True
                       ) -> str | None:
        """Store the three objects of a new version and mark the operation completed; the
        version (None when `expect_latest` no longer holds, or the operation
        `expect_pending` is no longer in progress). An import (`operation` False) leaves
        no operation behind."""
        vid = vault.id
        version = uuid.uuid4().hex
        now = self._now()
        key = made.key
        cert = made.certificate
        nbf, exp = ck.validity(cert)
        enabled = made.extra.get("enabled", True)
        tags = made.extra.get("tags", tags_default)
        der = ck.cert_der(cert)
        content_type = policy["secret_props"]["contentType"]
        exportable = policy["key_props"]["exportable"]
        private = key.private if exportable else None  # an HSM key has none
        try:
            if content_type == certpolicy.PEM:
                value = x5.to_pem(private, cert, made.chain).decode()
            else:
                value = _std_b64(x5.to_pfx(private, cert, made.chain))
        except x5.CertificateInputError as exc:
            raise BadParameter(str(exc)) from None
        name_lc = name.lower()
        kv, ksealed = self._barrier.seal(vault_owner(vid), key_context(vid, name_lc, version),
                                         key.blob)
        sv, ssealed = self._barrier.seal(vault_owner(vid),
                                         secret_context(vid, name_lc, version), value.encode())
        common = {"name": name, "version": version, "created": now, "updated": now,
                  "enabled": enabled, "nbf": nbf, "exp": exp, "tags": tags}
        props: dict[str, Any] = {"cer": _std_b64(der),
                                 "x5t": _std_b64(x5.thumbprint(cert)),
                                 "chain": [_std_b64(ck.cert_der(c)) for c in made.chain],
                                 "contentType": content_type}
        if made.extra.get("preserveCertOrder") is not None:
            props["preserveCertOrder"] = made.extra["preserveCertOrder"]
        items = {
            "certificates": VersionRecord(**common, props=props),
            "keys": VersionRecord(**common, sealed=ksealed, key_version=kv, props={
                **key.stored_props(), "key_ops": certpolicy.key_ops(policy), "managed": True}),
            "secrets": VersionRecord(**common, sealed=ssealed, key_version=sv,
                                     content_type=content_type, props={"managed": True}),
        }
        op = {"status": COMPLETED, "status_details": None, "issuer": policy["issuer"],
              "request_id": request_id or uuid.uuid4().hex,
              "cancellation_requested": False, "target": version,
              "csr": made.csr or ((state.get("pending") or {}).get("csr")
                                  if request_id and (state.get("pending") or {}).get(
                                      "request_id") == request_id else None)}
        try:
            ok = self._repo.add_linked(
                vid, name, LINKED, items, {"policy": policy, "pending": op if operation else None},
                expect_latest,
                None if expect_pending is None else lambda cur: bool(
                    cur and (cur.get("pending") or {}).get("request_id") == expect_pending
                    and cur["pending"].get("status") == IN_PROGRESS),
                also=self.events.new_version(vault, KIND.collection))
        except NameConflict as e:
            raise self._conflict(name, e) from None
        return version if ok else None

    def _operation(self, name: str, op: dict[str, Any]) -> CertificateOperation:
        csr = op.get("csr")
        return CertificateOperation(
            name=name, status=op["status"], issuer=op["issuer"], request_id=op["request_id"],
            cancellation_requested=bool(op.get("cancellation_requested")),
            csr=base64.b64decode(csr) if csr else None,
            status_details=op.get("status_details"), error=op.get("error"),
            target_version=op.get("target"),
            preserve_order=(op.get("extra") or {}).get("preserveCertOrder"),
        )

    def _pending(self, caller: Caller, name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        if not names.OBJECT_NAME.fullmatch(name):
            raise self._no_pending(name[:127])
        obj = self._repo.get_object(caller.vault.id, KIND.collection, name.lower())
        if obj is None or obj[1] or not obj[2] or not obj[2].get("pending"):
            raise self._no_pending(name)
        return obj[0], obj[2], obj[2]["pending"]

    @staticmethod
    def _no_pending(name: str) -> NotFound:
        return NotFound(f"Pending certificate not found: {name}", code="PendingCertificateNotFound")

    def get_operation(self, caller: Caller, name: str) -> CertificateOperation:
        self._check(caller, "CertificatePendingGet", name)
        stored, _, op = self._pending(caller, name)
        return self._operation(stored, op)

    def cancel_operation(self, caller: Caller, name: str, flag: bool
                         ) -> CertificateOperation:
        """CertificateOperationUpdateParameter: `flag` is its cancellation_requested."""
        self._check(caller, "CertificatePendingUpdate", name)
        stored, state, op = self._pending(caller, name)
        if not flag or op["status"] != IN_PROGRESS:
            return self._operation(stored, op)  # nothing left to cancel
        new_op = {k: v for k, v in op.items() if k not in ("sealed_key", "key_version", "key")}
        new_op.update(status=CANCELLED, cancellation_requested=True,
                      status_details="The certificate operation was cancelled.")
        rid = op["request_id"]
        key = self._pending_key(caller.vault, name, op, strict=False)
        if not self._repo.set_linked_state(
                caller.vault.id, KIND.collection, name.lower(), {**state, "pending": new_op},
                lambda cur: bool(cur and (cur.get("pending") or {}).get("request_id") == rid
                                 and cur["pending"].get("status") == IN_PROGRESS)):
            raise Conflict("The certificate operation changed while it was being cancelled.")
        self._drop_pending_key(caller.vault, name, key)
        return self._operation(stored, new_op)

    def delete_operation(self, caller: Caller, name: str) -> CertificateOperation:
        self._check(caller, "CertificatePendingDelete", name)
        stored, state, op = self._pending(caller, name)
        rid = op["request_id"]
        new_state = {**state, "pending": None}
        if self._repo.get_version(caller.vault.id, KIND.collection, name.lower(), None) is None:
            new_state["policy"] = None  # a certificate that never had a version goes away
        key = self._pending_key(caller.vault, name, op, strict=False)
        if not self._repo.set_linked_state(
                caller.vault.id, KIND.collection, name.lower(), new_state,
                lambda cur: bool(cur and (cur.get("pending") or {}).get("request_id") == rid)):
            raise self._no_pending(name)
        self._drop_pending_key(caller.vault, name, key)
        return self._operation(stored, op)

    def _pending_key(self, vault: VaultRecord, name: str, op: dict[str, Any] | None,
                     strict: bool = True) -> CertificateKey | None:
        """The key an operation waiting for a merge holds sealed (None: it holds none).
        Not `strict` (the key is only to be destroyed): None when it cannot be read."""
        if not op or not op.get("sealed_key"):
            return None
        try:
            blob = self._barrier.open(vault_owner(vault.id), int(op["key_version"]),
                                      self._pending_aad(vault.id, name, op["request_id"]),
                                      base64.b64decode(op["sealed_key"]))
            return self._keys.loaded(op.get("key") or {}, blob)
        except (BarrierError, ValueError, KeyError):
            if strict:
                raise BadParameter("The pending key could not be unsealed.") from None
            log.error("certificates: the pending key of certificate %s in vault %s could "
                      "not be read; the hsm-orphans job removes it if it is held in an HSM",
                      name, vault.name)
            return None

    def _drop_pending_key(self, vault: VaultRecord, name: str,
                          key: CertificateKey | None) -> None:
        """Destroy the HSM key of an operation that was cancelled or deleted (a software
        key went with the state)."""
        if key is not None and key.held:
            self._keys.destroy([key], key_prefix(vault.id, name.lower()))

    def merge(self, caller: Caller, name: str, request: CertificateMerge
              ) -> CertificateBundle:
        self._check(caller, "CertificatePendingMerge", name)
        stored, state, op = self._pending(caller, name)
        if op["status"] != IN_PROGRESS or not op.get("sealed_key"):
            raise BadParameter(f"The certificate operation of {stored} is {op['status']}; "
                               "only an operation in progress can be merged.")
        x5c = request.x5c
        if not x5c or len(x5c) > MAX_MERGE_CERTS:
            raise BadParameter(f"x5c must be a list of 1 to {MAX_MERGE_CERTS} base64 "
                               "certificates.")
        try:
            certs = [c for entry in x5c for c in x5.merge_certificates(_b64(entry, "x5c"))]
        except x5.CertificateInputError as exc:
            raise BadParameter(str(exc)) from None
        if len(certs) > MAX_MERGE_CERTS:
            raise BadParameter(f"x5c must hold 1 to {MAX_MERGE_CERTS} certificates.")
        key = self._pending_key(caller.vault, name, op)
        assert key is not None
        if not x5.key_matches(certs[0], key.public):
            raise BadParameter("Public key from x509 certificate and key of this instance "
                               "doesn't match")
        try:
            x5.check_chain(certs[0], certs[1:])
        except x5.CertificateInputError as exc:
            raise BadParameter(str(exc)) from None
        enabled, tags = self._attrs_tags(request.attributes, request.tags)
        extra = dict(op.get("extra") or {})
        if request.attributes is not None:
            extra["enabled"] = enabled
        if request.tags is not None:
            extra["tags"] = tags
        made = _Made(key, certs[0], tuple(certs[1:]), extra)
        version = self._store_version(caller.vault, stored, state["policy"], made, state,
                                      request_id=op["request_id"],
                                      expect_pending=op["request_id"])
        if version is None:
            raise Conflict("The certificate operation changed while it was being merged.")
        rec = self._find(caller, name, version)
        return self._full(caller, rec)

    # ---- import -----------------------------------------------------------------------
    def import_certificate(self, caller: Caller, name: str, request: CertificateImport
                           ) -> CertificateBundle:
        _check_certificate_name(name)
        self._check(caller, "CertificateImport", name)
        vid = caller.vault.id
        obj = self._repo.get_object(vid, KIND.collection, name.lower())
        self._check_name_free(vid, name, obj)
        state = (obj[2] if obj else None) or {}
        if (state.get("pending") or {}).get("status") == IN_PROGRESS:
            raise Conflict(f"There is a pending certificate operation for certificate {name}; "
                           "delete it before importing.")
        value = request.value
        if not value:
            raise BadParameter("The request body must contain the certificate as 'value'.")
        if len(value) > MAX_IMPORT_CHARS:
            raise BadParameter(f"The certificate is too large: at most {MAX_IMPORT_CHARS} "
                               "characters are accepted.")
        pwd = request.pwd
        if pwd is not None and len(pwd) > MAX_PASSWORD_CHARS:
            raise BadParameter(f"pwd must be at most {MAX_PASSWORD_CHARS} characters long.")
        given = request.policy
        ct_given = (sent(given).get("secret_props") or {}).get("contentType")
        loaded = _load(value, ct_given, pwd or None)
        if loaded.key is None:
            raise BadParameter("Private key is not specified in the specified X.509 "
                               "certificate content. Please specify the private key in the "
                               "X.509 certificate content.")
        if not x5.key_matches(loaded.certificate, loaded.key):
            raise BadParameter("The private key does not match the certificate's public key.")
        content_type = ct_given if ct_given in certpolicy.CONTENT_TYPES else (
            certpolicy.PEM if _looks_pem(value) else certpolicy.PKCS12)
        try:
            read_x509 = x5.x509_properties(loaded.certificate)
            read_key = x5.key_properties(loaded.key)
        except x5.CertificateInputError as exc:
            raise BadParameter(str(exc)) from None
        base_policy = state.get("policy") if given is None else None
        if base_policy is not None:
            policy = certpolicy.merge({"x509_props": read_x509}, base_policy, self._now())
            read_key["kty"] = certpolicy.imported_kty(read_key["kty"],
                                                      base_policy["key_props"]["kty"])
            policy["key_props"].update({k: v for k, v in read_key.items() if v is not None})
        else:
            policy = certpolicy.from_certificate(read_x509, read_key, given, content_type,
                                                 self._now())
        kty = policy["key_props"]["kty"]
        keytypes.check_kty(kty, caller.vault.sku)
        self._keys.check(kty)
        enabled, tags = self._attrs_tags(request.attributes, request.tags)
        extra = {"enabled": enabled, "tags": tags, "preserveCertOrder": request.preserve_order}
        # an HSM key type: the key is created in the HSM; storage keeps only its blob
        key = self._keys.import_key(kty, loaded.key)
        made = _Made(key, loaded.certificate, tuple(loaded.chain), extra)
        with _discarded_if_refused(self._keys, key, key_prefix(vid, name.lower())):
            version = self._store_version(caller.vault, name, policy, made, state,
                                          operation=False)
        assert version is not None
        return self._full(caller, self._find(caller, name, version))

    # ---- update -----------------------------------------------------------------------
    def update(self, caller: Caller, name: str, version: str | None,
               request: CertificateUpdate) -> CertificateBundle:
        """CertificateUpdateParameters: `enabled` (null keeps it), tags (null clears them)
        and the policy; nbf and exp are the certificate's and cannot change."""
        self._check(caller, "CertificateUpdate", name)
        rec = self._find(caller, name, version)
        changes: dict[str, Any] = {}
        if isinstance(request.attributes.enabled, bool):
            changes["enabled"] = request.attributes.enabled
        if not isinstance(request.tags, Unset):
            changes["tags"] = names.check_tags(request.tags, MAX_TAG_CHARS)
        state: dict[str, Any] = {}
        new_state = None
        if request.policy is not None:
            state = self._live_state(caller, name)
            new_state = {**state, "policy": self._checked_policy(caller, request.policy,
                                                                 state["policy"])}
        # every input is checked before anything changes
        if new_state is not None:
            self._replace_state(caller, name, state, new_state)
        if changes:
            changes["updated"] = self._now()
            for col in LINKED:
                self._repo.update_version(caller.vault.id, col, name.lower(), rec.version,
                                          changes)
            for k, v in changes.items():
                setattr(rec, k, v)
        return self._full(caller, rec)

    # ---- backup / restore ----------------------------------------------------------------
    def backup(self, caller: Caller, name: str) -> bytes:
        self._check(caller, "CertificateBackup", name)
        latest = self._find(caller, name, None)
        vid, name_lc = caller.vault.id, name.lower()
        state = self._state(vid, name)
        state = {"policy": state.get("policy"), "pending": None}
        groups: dict[str, list[dict[str, Any]]] = {}
        for col in LINKED:
            out = []
            for r in self._repo.all_versions(vid, col, name_lc):
                item: dict[str, Any] = {
                    "version": r.version, "props": r.props, "tags": r.tags,
                    "enabled": r.enabled, "nbf": r.nbf, "exp": r.exp, "created": r.created,
                    "updated": r.updated, "contentType": r.content_type,
                }
                if col == "keys":  # an HSM key: its copy wrapped in the HSM
                    item["blob"] = _std_b64(self._keys.backup_blob(
                        r.props, self._key_blob(caller.vault, r), key_prefix(vid, name_lc)))
                elif col == "secrets":
                    item["value"] = self._secret_value(caller.vault, r)
                out.append(item)
            groups[col] = out
        if len(groups["certificates"]) > 500:
            raise BadParameter(f"Certificate {latest.name} has more than 500 versions and "
                               "cannot be backed up.")
        return self._backups.pack(KIND.collection, {"name": latest.name, "state": state,
                                                    "groups": groups})

    def _secret_value(self, vault: VaultRecord, rec: VersionRecord) -> str:
        if rec.sealed is None or rec.key_version is None:
            raise BadParameter("The secret has no value.")
        try:
            return self._barrier.open(vault_owner(vault.id), rec.key_version,
                                      secret_context(vault.id, rec.name.lower(), rec.version),
                                      rec.sealed).decode()
        except BarrierError:
            raise BadParameter("The secret value could not be unsealed.") from None

    def restore(self, caller: Caller, blob: bytes) -> CertificateBundle:
        """The backup's versions; an HSM key's copy is unwrapped in the HSM into new
        objects, destroyed again when the restore is refused."""
        self._check(caller, "CertificateRestore")
        payload = self._backups.unpack(KIND.collection, blob)
        name = str(payload.get("name", ""))
        _check_certificate_name(name)
        vid, name_lc = caller.vault.id, name.lower()
        groups = []
        made: list[CertificateKey] = []
        try:
            for col in LINKED:
                recs = []
                for v in payload["groups"].get(col, []):
                    props = v["props"]
                    sealed = key_version = None
                    if col == "keys":
                        keytypes.check_kty(props["kty"], caller.vault.sku)
                        material = base64.b64decode(v["blob"])
                        if props.get("keystore", SOFTWARE) != SOFTWARE:
                            key = self._keys.restore(props, material)
                            made.append(key)
                            props = {**props, **key.stored_props()}  # its new handle
                            material = key.blob
                        key_version, sealed = self._barrier.seal(
                            vault_owner(vid), key_context(vid, name_lc, v["version"]),
                            material)
                    elif col == "secrets":
                        key_version, sealed = self._barrier.seal(
                            vault_owner(vid), secret_context(vid, name_lc, v["version"]),
                            v["value"].encode())
                    recs.append(VersionRecord(
                        name=name, version=v["version"], created=v["created"],
                        updated=v["updated"], enabled=v["enabled"], nbf=v["nbf"],
                        exp=v["exp"], content_type=v.get("contentType"), tags=v["tags"],
                        props=props, sealed=sealed, key_version=key_version))
                groups.append((col, recs, payload["state"] if col == "certificates"
                               else None))
            if not groups[0][1]:
                raise BadParameter("The backup blob holds no versions.")
            try:
                self._repo.restore_linked(vid, name, groups)
            except NameConflict as e:
                raise (KIND.deleted_conflict(name) if e.deleted
                       else KIND.exists_conflict(name)) from None
        except BaseException:
            self._keys.destroy(made, key_prefix(vid, name_lc))
            raise
        return self._full(caller, self._find(caller, name, None))

    # ---- lists --------------------------------------------------------------------------
    def list_certificates(self, caller: Caller, maxresults: str | None, token: str | None,
                          include_pending: str | None) -> Page:
        """The latest version of each certificate; with `include_pending`, certificates whose
        first version is still a pending operation too (they have no thumbprint yet)."""
        flag = (include_pending or "false").lower()
        if flag not in ("true", "false"):
            raise BadParameter("includePending must be true or false.")
        if flag == "false":
            return self.list(caller, maxresults, token)
        self._check(caller, "CertificateList")
        size = paging.page_size(maxresults)
        after = paging.position(token, "a", str)
        vid = caller.vault.id
        rows: list[tuple[str, Any]] = [
            (r.name.lower(), self._bundle(caller, r))
            for r in self._repo.list_latest(vid, KIND.collection, False, after, size + 1)]
        rows += [(n.lower(), self._pending_item(caller, n, state or {}))
                 for n, state in self._repo.list_versionless(vid, KIND.collection, after,
                                                             size + 1)]
        rows.sort(key=lambda r: r[0])
        more = len(rows) > size
        rows = rows[:size]
        nxt = paging.encode_token({"a": rows[-1][0]}) if more else None
        return Page([b for _, b in rows], nxt)

    def _pending_item(self, caller: Caller, name: str, state: dict[str, Any]
                      ) -> CertificateBundle:
        op = state.get("pending") or {}
        created = int(op.get("created") or 0)
        v = caller.vault
        attrs = Attributes(enabled=bool((op.get("extra") or {}).get("enabled", True)),
                           created=created, updated=created,
                           recovery_level=recovery_level(v.retention_days, v.purge_protection),
                           recoverable_days=v.retention_days)
        return CertificateBundle(name=name, version="", cer=b"", x5t=b"", content_type=None,
                                 attributes=attrs, policy=None,
                                 tags=(op.get("extra") or {}).get("tags"))

    # ---- lifetime actions (scheduler) --------------------------------------------------------
    def run_lifetime_actions(self) -> int:
        """Renew certificates whose AutoRenew trigger has passed; record EmailContacts
        notices. Every worker runs it: a renewal is stored only if the version it renews is
        still the latest, and a notice is recorded once per version."""
        done = 0
        now = self._now()
        for row in self._repo.objects_with_policy(KIND.collection):
            try:
                done += self._run_actions(row.vault, row.policy or {}, row.latest, now)
            except Exception:  # one certificate that cannot renew must not hold up the others
                log.exception("The lifetime actions of certificate %s in vault %s could not "
                              "run.", row.latest.name, row.vault.name)
        return done

    def _run_actions(self, vault: VaultRecord, state: dict[str, Any], latest: VersionRecord,
                     now: int) -> int:
        policy = state.get("policy")
        if not policy or latest.exp is None or latest.nbf is None:
            return 0
        if (state.get("pending") or {}).get("status") == IN_PROGRESS:
            return 0
        done = 0
        for action in policy.get("lifetime_actions", []):
            trig = action["trigger"]
            if "lifetime_percentage" in trig:
                due = latest.nbf + (latest.exp - latest.nbf) * trig["lifetime_percentage"] // 100
            else:
                due = latest.exp - trig["days_before_expiry"] * 86_400
            if now < due:
                continue
            kind = action["action"]["action_type"]
            if kind == "EmailContacts":
                if self._repo.add_event_once(EventRecord(vault.id, "CertificateNearExpiry",
                                                         latest.name, latest.version, now)):
                    done += 1
                continue
            if self._renew(vault, policy, state, latest):
                self._repo.add_event_once(EventRecord(vault.id, "CertificateRenewed",
                                                      latest.name, latest.version, now))
                done += 1
        return done

    def _renew(self, vault: VaultRecord, policy: dict[str, Any], state: dict[str, Any],
               latest: VersionRecord) -> bool:
        try:
            kind, _ = self._resolve(vault, policy["issuer"]["name"])
        except BadParameter:
            return False
        if kind not in ("self", "builtin"):
            return False
        key, fresh = self._key_for(vault, latest.name, policy)
        owner = key_prefix(vault.id, latest.name.lower())
        with _discarded_if_refused(self._keys, key if fresh else None, owner):
            made = self._issue(kind, policy, key, latest.name, owner)
            made.extra = {"enabled": True, "tags": latest.tags}
            renewed = self._store_version(vault, latest.name, policy, made, state,
                                          expect_latest=latest.version) is not None
        if not renewed and fresh:  # another worker renewed it first
            self._keys.destroy([key], owner)
        return renewed


@contextlib.contextmanager
def _discarded_if_refused(keys: CertificateKeys, key: CertificateKey | None, owner: str
                          ) -> Iterator[None]:
    """Destroy `key` (an HSM key made for this request) when the request is refused with
    a domain error: nothing was stored then. Any other failure leaves it in place (it may
    have been stored); the hsm-orphans job destroys it if no version names it."""
    try:
        yield
    except DomainError:
        if key is not None:
            keys.destroy([key], owner)
        raise


def _b64(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            raise BadParameter(f"'{field}' is not valid base64.") from None


def _looks_pem(value: str) -> bool:
    if "-----BEGIN" in value:
        return True
    try:
        return b"-----BEGIN" in base64.b64decode(value, validate=True)[:4096]
    except (binascii.Error, ValueError):
        return False


def _load(value: str, content_type: str | None, password: str | None) -> Any:
    """The import's value: PEM text, base64 PEM, or base64 PFX."""
    try:
        if "-----BEGIN" in value:
            return x5.load_pem(value.encode(), password=password)
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadParameter("The specified PEM X.509 certificate content is in an "
                               "unexpected format. Please check if certificate is in valid "
                               "PEM format.") from None
        if b"-----BEGIN" in raw[:4096] or content_type == certpolicy.PEM:
            return x5.load_pem(raw, password=password)
        return x5.load_pfx(raw, password)
    except x5.CertificateInputError as exc:
        raise BadParameter(str(exc)) from None

