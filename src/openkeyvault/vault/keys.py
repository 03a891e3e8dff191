"""Keys: create, import, get, update, backup, restore, rotate, rotation policy, and the
cryptographic operations, which run inside the service (private keys never leave it).

Key material goes to storage only as the keystore's blob sealed by the barrier
with (vault, name, version) as associated data.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from openkeyvault.access import attestation_tokens
from openkeyvault.access.attestation_tokens import Authority
from openkeyvault.access.authorize import Authorizer
from openkeyvault.crypto import transfer
from openkeyvault.crypto.encoding import b64url_encode
from openkeyvault.keystore.base import (
    KeyRef,
    KeySpec,
    KeyStore,
    KeyStoreUnavailable,
    PlainKey,
    StoredKey,
    WrappedKey,
)
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.barrier import Barrier, BarrierError, vault_owner
from openkeyvault.storage.records import (
    EventRecord,
    NameConflict,
    PolicyRow,
    VaultRecord,
    VersionRecord,
)
from openkeyvault.storage.repository import Repository
from openkeyvault.vault import byok, durations, keytypes, names
from openkeyvault.vault import release_policy as rp
from openkeyvault.vault.attestation import Attestor
from openkeyvault.vault.backup import BackupCodec
from openkeyvault.vault.context import Caller, authorize_operation
from openkeyvault.vault.errors import BadParameter, Forbidden, Unavailable
from openkeyvault.vault.keystore_faults import cache_prefix, keystore_faults
from openkeyvault.vault.managedhsms import KIND as POOL_KIND
from openkeyvault.vault.models import KeyBundle, KeyOperationResult, RotationPolicy
from openkeyvault.vault.objects import Kind, ObjectService
from openkeyvault.vault.requests import (
    UNSET,
    KeyCreate,
    KeyImport,
    KeyOperation,
    KeyRelease,
    KeyReleasePolicy,
    KeyRotationPolicy,
    KeyUpdate,
    ObjectAttributes,
)

KIND = Kind(collection="keys", label="Key")
MAX_KEY_TAG_CHARS = 256
DEFAULT_AES_SIZE = 256
NOT_EXPORTABLE = ("The key is not exportable: only a key created exportable, with a release "
                  "policy, can be released.")
MAX_OPERATION_BYTES = 64 * 1024
DAY = 86_400

# operation (as in the path) → (its row of vault/operations.py, key_ops entry, refused
# outside the nbf/exp window)
OPERATIONS: dict[str, tuple[str, str, bool]] = {
    "encrypt": ("KeyEncrypt", "encrypt", True),
    "decrypt": ("KeyDecrypt", "decrypt", False),
    "wrapkey": ("KeyWrap", "wrapKey", True),
    "unwrapkey": ("KeyUnwrap", "unwrapKey", False),
    "sign": ("KeySign", "sign", True),
    "verify": ("KeyVerify", "verify", False),
}

# A key an HSM holds that no key version names (purged by retention or with its vault,
# or made just before a crash kept it from being stored) is destroyed once scans at
# least this many seconds apart have both found it unnamed (OKV_HSM_ORPHAN_GRACE).
ORPHAN_GRACE_ENV = "OKV_HSM_ORPHAN_GRACE"
DEFAULT_ORPHAN_GRACE = 600.0

DEFAULT_NOTIFY = {"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}
MIN_ROTATE_AFTER_CREATE = 7 * DAY
MIN_BEFORE_EXPIRY = 7 * DAY
MIN_EXPIRY_TIME = 28 * DAY

log = logging.getLogger("openkeyvault.keys")


def _context(vault_id: int, name_lc: str, version: str) -> bytes:
    return f"okv/key/{vault_id}/{name_lc}/{version}".encode()


class KeyService(ObjectService[KeyBundle]):
    kind = KIND

    def __init__(self, repo: Repository, barrier: Barrier, authorizer: Authorizer,
                 clock: Clock, backups: BackupCodec, keystores: dict[str, KeyStore],
                 attestor: Attestor | None = None,
                 authorities: Callable[[], Sequence[Authority]] | None = None) -> None:
        """`keystores` by name: each version is served by the one whose name it records;
        new keys go to the first whose hardware protection matches the key type's.
        `attestor` signs the attestations of HSM keys and released keys (none: they are
        refused); `authorities` gives the attestation authorities a key may be released
        on (asked on each release: their key files may have been rewritten)."""
        super().__init__(repo, barrier, authorizer, clock, backups)
        self._keystores = keystores
        self._attestor = attestor
        self._authorities = authorities
        self._orphans: dict[tuple[str, str], float] = {}  # (keystore, handle) → first seen
        self._last_scan = float("-inf")
        self._makers = {hardware: next((k for k in keystores.values()
                                        if k.capabilities().hardware is hardware), None)
                        for hardware in (False, True)}
        # (vault id, name, version) → (kty, size): a version's type never changes, and
        # its version id is never given to another key (key_type).
        self._types: dict[tuple[int, str, str], tuple[str, int | None]] = {}

    def with_authorizer(self, authorizer: Authorizer) -> KeyService:
        """This service deciding with `authorizer` (a managed HSM pool's local RBAC),
        sharing its keystores, attestor and caches."""
        other = copy.copy(self)
        other._authz = authorizer
        return other

    # ---- helpers ------------------------------------------------------------------
    def _bundle(self, caller: Caller, rec: VersionRecord) -> KeyBundle:
        p = rec.props
        return KeyBundle(
            name=rec.name, version=rec.version, kty=p["kty"], key_ops=list(p["key_ops"]),
            public=p["public"], attributes=self._attributes(caller, rec), tags=rec.tags,
            deleted=self._deleted(rec), managed=bool(p.get("managed")),
            exportable=bool(p.get("exportable")), release_policy=p.get("release_policy"),
        )

    def _keystore(self, hardware: bool) -> KeyStore:
        """The keystore new keys of a type with this protection are made in."""
        store = self._makers[hardware]
        if store is None:
            raise BadParameter(
                "HSM-protected key types need an HSM keystore, and none is configured for this "
                "deployment."
            )
        return store

    def _serving(self, rec: VersionRecord) -> KeyStore:
        """The keystore that holds this version: the one it was made in."""
        return self._named(rec.props.get("keystore", "software"))

    def _named(self, name: str) -> KeyStore:
        store = self._keystores.get(name)
        if store is None:
            log.error("keys: a key version is held by keystore '%s', which this deployment "
                      "does not configure", name)
            raise Unavailable("The keystore holding this key is not available on the server.")
        return store

    def _ref(self, vault: VaultRecord, rec: VersionRecord) -> KeyRef:
        name_lc = rec.name.lower()

        def blob() -> bytes:
            if rec.sealed is None or rec.key_version is None:
                raise BadParameter("The key has no material.")
            try:
                return self._barrier.open(vault_owner(vault.id), rec.key_version,
                                          _context(vault.id, name_lc, rec.version), rec.sealed)
            except BarrierError:
                raise BadParameter("The key material could not be unsealed.") from None

        return KeyRef(f"{cache_prefix(vault.id, name_lc)}{rec.version}",
                      keytypes.KTY[rec.props["kty"]][0], blob)

    def _new_version(self, vault: VaultRecord, name: str, kty: str, stored: StoredKey,
                     key_ops: list[str], keystore: str, enabled: bool, nbf: int | None,
                     exp: int | None, tags: dict[str, str] | None, now: int,
                     release: dict[str, Any] | None = None) -> VersionRecord:
        """`release`: an exportable key's release policy (wire form)."""
        version = uuid.uuid4().hex
        key_version, sealed = self._barrier.seal(
            vault_owner(vault.id), _context(vault.id, name.lower(), version), stored.blob
        )
        return VersionRecord(
            name=name, version=version, created=now, updated=now, enabled=enabled, nbf=nbf,
            exp=exp, tags=tags, sealed=sealed, key_version=key_version,
            props={"kty": kty, "key_ops": key_ops, "public": stored.public, "size": stored.size,
                   "keystore": keystore,
                   **({"handle": stored.handle} if stored.handle is not None else {}),
                   **({"exportable": True, "release_policy": release} if release else {})},
        )

    def _store(self, vault: VaultRecord, rec: VersionRecord,
               expect_latest: str | None = None) -> bool:
        try:
            return self._repo.add_version(vault.id, KIND.collection, rec, expect_latest,
                                          also=self.events.new_version(vault, KIND.collection))
        except NameConflict:
            raise KIND.deleted_conflict(rec.name) from None

    def _release_policy(self, caller: Caller, name: str, hardware: bool,
                        attributes: ObjectAttributes,
                        given: KeyReleasePolicy | None) -> dict[str, Any] | None:
        """A new version's release policy (wire form), None for a key that is not
        exportable. Exportable keys are HSM keys of a Premium vault; the first version
        needs a policy, a later one keeps the latest version's unless it gives its own."""
        if not attributes.exportable:
            if given is not None:
                raise rp.skr_error(rp.POLICY_NEEDS_EXPORTABLE)
            return None
        if _accepting(caller.vault) not in ("premium", "managedhsm"):
            raise rp.skr_error(rp.EXPORTABLE_NOT_SUPPORTED)
        if not hardware:
            raise rp.skr_error(rp.EXPORTABLE_NEEDS_HSM)
        if given is not None:
            return _parsed_policy(given).to_wire()
        latest = self._repo.get_version(caller.vault.id, KIND.collection, name.lower(), None)
        if latest is not None and latest.props.get("release_policy") is not None:
            policy: dict[str, Any] = latest.props["release_policy"]
            return policy
        raise rp.skr_error(rp.EXPORTABLE_NEEDS_POLICY)

    # ---- create / import ---------------------------------------------------------------
    def create(self, caller: Caller, name: str, request: KeyCreate) -> KeyBundle:
        names.check_object_name(name)
        self._check(caller, "KeyCreate", name)
        kty, family, hardware = self._kty(caller, request.kty)
        spec = self._spec(family, request)
        key_ops = keytypes.check_key_ops(request.key_ops, family,
                                         exchange=hardware and family == "RSA")
        release = self._release_policy(caller, name, hardware, request.attributes,
                                       request.release_policy)
        spec = dataclasses.replace(spec, exportable=release is not None)
        return self._add_key(caller, name, kty, hardware, key_ops, request.attributes,
                             request.tags, release, lambda store: store.generate(spec), "")

    def _kty(self, caller: Caller, kty: str | None, hsm: bool = False) -> tuple[str, str, bool]:
        kty, family, hardware = keytypes.check_kty(kty, _accepting(caller.vault), hsm)
        if family == "oct" and (_accepting(caller.vault) != "managedhsm"
                                or "oct" not in self._keystore(hardware).capabilities()
                                .families):
            raise BadParameter("Symmetric (oct) keys are not available in this vault.")
        return kty, family, hardware

    def _add_key(self, caller: Caller, name: str, kty: str, hardware: bool,
                 key_ops: list[str], attributes: ObjectAttributes,
                 tags_in: dict[str, str] | None, release: dict[str, Any] | None,
                 make: Callable[[KeyStore], StoredKey], error_prefix: str) -> KeyBundle:
        """What create and import share once the key type, operations and release policy
        are checked."""
        self._refuse_certificate_name(caller, name)
        enabled, nbf, exp = attributes.initial()
        tags = names.check_tags(tags_in, MAX_KEY_TAG_CHARS)
        store = self._keystore(hardware)
        with keystore_faults(error_prefix):
            stored = make(store)
        rec = self._new_version(caller.vault, name, kty, stored, key_ops, store.name, enabled,
                                nbf, exp, tags, self._now(), release)
        self._store(caller.vault, rec)
        return self._bundle(caller, rec)

    @staticmethod
    def _spec(family: str, request: KeyCreate) -> KeySpec:
        if family == "oct":
            if request.crv is not None or request.public_exponent is not None:
                raise BadParameter("oct keys take a key_size (128, 192 or 256), not crv or "
                                   "public_exponent.")
            return KeySpec("oct", size=request.key_size or DEFAULT_AES_SIZE)
        if family == "RSA":
            if request.crv is not None:
                raise BadParameter("crv is only for EC keys.")
            size = request.key_size
            exponent = request.public_exponent
            return KeySpec("RSA", size=keytypes.DEFAULT_RSA_SIZE if size is None else size,
                           public_exponent=65537 if exponent is None else exponent)
        if request.key_size is not None and request.crv is None:
            raise BadParameter("EC keys take a curve (crv), not key_size.")
        return KeySpec("EC", curve=request.crv or keytypes.DEFAULT_CURVE)

    def import_key(self, caller: Caller, name: str, request: KeyImport) -> KeyBundle:
        names.check_object_name(name)
        self._check(caller, "KeyImport", name)
        jwk = request.key
        kty, family, hardware = self._kty(caller, jwk.kty, bool(request.hsm))
        key_ops = keytypes.check_key_ops(jwk.key_ops, family)
        release = self._release_policy(caller, name, hardware, request.attributes,
                                       request.release_policy)
        material: PlainKey | WrappedKey
        if jwk.key_hsm is not None:
            if not hardware:
                raise BadParameter("key_hsm (a bring-your-own-key transfer blob) imports "
                                   "into an HSM: use kty RSA-HSM or EC-HSM.")
            material = dataclasses.replace(self._transfer_blob(caller, jwk.key_hsm, family),
                                           exportable=release is not None)
        else:
            material = PlainKey(jwk.members(), family, exportable=release is not None)
        return self._add_key(caller, name, kty, hardware, key_ops, request.attributes,
                             request.tags, release, lambda store: store.import_key(material),
                             "The key could not be imported: ")

    def _transfer_blob(self, caller: Caller, key_hsm: str, family: str) -> WrappedKey:
        """The wrapped key of a .byok transfer blob, with its key-exchange key: an RSA-HSM
        key of this vault whose key_ops are exactly ['import'] (byok.py reads the blob)."""
        blob = byok.parse(key_hsm)
        kek = self._find_kek(caller, blob.kid)
        return WrappedKey(self._ref(caller.vault, kek), blob.enc, blob.ciphertext, family)

    def _find_kek(self, caller: Caller, kid: str) -> VersionRecord:
        name, version = byok.kek_name(kid, caller.vault.name)
        rec = None
        if names.OBJECT_NAME.fullmatch(name) and len(version) <= 64:
            rec = self._repo.get_version(caller.vault.id, KIND.collection, name.lower(),
                                         version)
        if rec is None:
            raise BadParameter(f"The key-exchange key '{kid[:200]}' is not a key of this "
                               "vault.")
        if rec.props.get("kty") != "RSA-HSM" or rec.props.get("key_ops") != \
                keytypes.EXCHANGE_OPS or not self._held_outside(rec):
            raise BadParameter("The key-exchange key must be an RSA-HSM key of this vault "
                               "whose key_ops are exactly ['import'].")
        if not rec.enabled:
            raise Forbidden("The key-exchange key is disabled.", inner="KeyDisabled")
        now = self._now()
        if (rec.exp is not None and now >= rec.exp) or (rec.nbf is not None and now < rec.nbf):
            raise Forbidden("The key-exchange key is expired or not yet valid.")
        return rec

    # ---- read / update ------------------------------------------------------------------
    def get(self, caller: Caller, name: str, version: str | None) -> KeyBundle:
        self._check(caller, "KeyGet", name)
        return self._bundle(caller, self._find(caller, name, version))

    def get_attestation(self, caller: Caller, name: str, version: str | None,
                        key_id: Callable[[str, str], str]) -> KeyBundle:
        """GetKeyAttestation: the key version with `attributes.attestation`, statements
        signed by the deployment's attestation key in the HSM (vault/attestation.py) about
        the key as the token holds it; `key_id(name, version)` is its kid as the API
        shows it. A software key has none: it is looked up all the same (access checked,
        KeyNotFound for a missing one), so the refusal speaks of a key that exists."""
        self._check(caller, "KeyGetAttestation", name)
        rec = self._find(caller, name, version)
        if not keytypes.KTY[rec.props["kty"]][1]:
            raise BadParameter(
                "Key attestation is available for HSM-protected keys only (RSA-HSM and "
                "EC-HSM keys of a Premium vault); this key is software-protected.")
        if self._attestor is None:
            raise BadParameter("Key attestation is not available on this deployment.")
        store = self._serving(rec)
        bundle = self._bundle(caller, rec)
        with keystore_faults("The key could not be attested: "):
            attested = self._attestor.attest(store, self._ref(caller.vault, rec),
                                             key_id(rec.name, rec.version), bundle)
        return dataclasses.replace(bundle, attestation=attested)

    def update(self, caller: Caller, name: str, version: str | None,
               request: KeyUpdate) -> KeyBundle:
        self._check(caller, "KeyUpdate", name)
        rec = self._find(caller, name, version)
        changes = request.attributes.changes()
        if request.tags is not UNSET:
            changes["tags"] = names.check_tags(request.tags, MAX_KEY_TAG_CHARS)
        if request.key_ops is not None:
            family = keytypes.KTY[rec.props["kty"]][0]
            exchange = rec.props["key_ops"] == keytypes.EXCHANGE_OPS
            key_ops = keytypes.check_key_ops(request.key_ops, family, exchange=exchange)
            if exchange and key_ops != keytypes.EXCHANGE_OPS:
                raise BadParameter("A key-exchange key's key_ops stay exactly ['import'].")
            changes["props"] = {**rec.props, "key_ops": key_ops}
        exportable = bool(rec.props.get("exportable"))
        if request.attributes.exportable is not None and \
                request.attributes.exportable != exportable:
            raise rp.skr_error(rp.EXPORTABLE_IMMUTABLE)
        if request.release_policy is not None:
            changes["props"] = {**changes.get("props", rec.props),
                                "release_policy": self._changed_policy(rec,
                                                                       request.release_policy)}
        return self._bundle(caller, self._update(caller, rec, changes))

    @staticmethod
    def _changed_policy(rec: VersionRecord, given: KeyReleasePolicy) -> dict[str, Any]:
        """An update's release policy: only an exportable key's, and only while its
        policy is mutable. A policy without `data` changes `immutable` only."""
        current = rec.props.get("release_policy")
        if not rec.props.get("exportable") or current is None:
            raise rp.skr_error(rp.POLICY_NEEDS_EXPORTABLE)
        if current.get("immutable"):
            raise rp.skr_error(rp.POLICY_IMMUTABLE)
        if given.data is None:
            given = dataclasses.replace(given, data=current["data"],
                                        content_type=given.content_type
                                        or current["contentType"])
        return _parsed_policy(given).to_wire()

    def key_type(self, vault_id: int, name: str, version: str | None
                 ) -> tuple[str, int | None] | None:
        """(kty, size) of the key version an operation names, None when there is none: what
        the operation weighs against its throttling limit and which meter it counts on. No
        authorization (asked once the route's guard has passed; nothing of the key leaves).
        A named version's type is kept once read (it is the same for as long as the
        version exists); the latest version is read each time (memoised)."""
        if version:
            known = self._types.get((vault_id, name.lower(), version))
            if known is not None:
                return known
        if not names.OBJECT_NAME.fullmatch(name) or (version and len(version) > 64):
            return None
        rec = self._repo.get_version(vault_id, self.kind.collection, name.lower(),
                                     version or None)
        if rec is None or not rec.props or "kty" not in rec.props:
            return None
        size = rec.props.get("size")
        found = str(rec.props["kty"]), size if isinstance(size, int) else None
        if version:
            if len(self._types) >= 4096:
                self._types.clear()
            self._types[vault_id, name.lower(), version] = found
        return found

    # ---- cryptographic operations ----------------------------------------------------------
    def operate(self, caller: Caller, name: str, version: str | None, operation: str,
                request: KeyOperation) -> KeyOperationResult | bool:
        """encrypt, decrypt, wrapkey, unwrapkey, sign (→ bytes) and verify (→ bool)."""
        row, key_op, windowed = OPERATIONS[operation]
        self._check(caller, row, name)
        rec = self._find(caller, name, version)
        verb = key_op if operation not in ("wrapkey", "unwrapkey") else operation
        if not rec.enabled:
            raise Forbidden(f"Operation {verb} is not allowed on a disabled key.",
                            inner="KeyDisabled")
        family = keytypes.KTY[rec.props["kty"]][0]
        if key_op not in keytypes.FAMILY_OPS[family]:
            raise BadParameter(f"Operation {verb} is not supported by {family} keys.")
        if key_op not in rec.props["key_ops"]:
            raise Forbidden(f"Operation {verb} is not permitted on this key.",
                            inner="KeyOperationForbidden")
        if windowed:
            now = self._now()
            if rec.exp is not None and now >= rec.exp:
                raise Forbidden(f"Operation {verb} is not allowed on an expired key.",
                                inner="KeyExpired")
            if rec.nbf is not None and now < rec.nbf:
                raise Forbidden(f"Operation {verb} is not allowed on a key that is not yet "
                                "valid.", inner="KeyNotYetValid")
        alg = request.alg
        if not alg:
            raise BadParameter("The request must name an algorithm ('alg').")
        value = _bounded(request.value, "value")
        store = self._serving(rec)
        ref = self._ref(caller.vault, rec)
        if family == "oct" and operation in ("encrypt", "decrypt") and \
                not alg.endswith("KW"):
            return self._symmetric(rec, store, ref, operation, alg, value, request)
        with keystore_faults():
            if operation == "verify":
                if request.digest is None:
                    raise BadParameter("A verify request needs the 'digest'.")
                digest = _bounded(request.digest, "digest")
                return store.verify(ref, alg, digest, value)
            if operation == "sign":
                out = store.sign(ref, alg, value)
            elif operation == "encrypt":
                out = store.encrypt(ref, alg, value)
            elif operation == "wrapkey":
                out = store.wrap(ref, alg, value)
            elif operation == "unwrapkey":
                out = store.unwrap(ref, alg, value)
            else:
                out = store.decrypt(ref, alg, value)
        return KeyOperationResult(rec.name, rec.version, out)

    @staticmethod
    def _symmetric(rec: VersionRecord, store: KeyStore, ref: KeyRef, operation: str,
                   alg: str, value: bytes, request: KeyOperation) -> KeyOperationResult:
        """AES encrypt / decrypt with an oct key: the iv, aad and tag travel beside the
        value (an AES-GCM encryption's iv is made by the keystore and answered)."""
        iv = None if request.iv is None else _bounded(request.iv, "iv")
        aad = None if request.aad is None else _bounded(request.aad, "aad")
        with keystore_faults():
            if operation == "encrypt":
                made = store.encrypt_symmetric(ref, alg, value, iv, aad)
                return KeyOperationResult(rec.name, rec.version, made.ciphertext, made.iv,
                                          made.tag, aad if made.tag is not None else None)
            tag = None if request.tag is None else _bounded(request.tag, "tag")
            return KeyOperationResult(rec.name, rec.version,
                                      store.decrypt_symmetric(ref, alg, value, iv, aad, tag))

    # ---- secure key release ----------------------------------------------------------------
    def release(self, caller: Caller, name: str, version: str | None, request: KeyRelease,
                claims: Callable[[KeyBundle, str, str], dict[str, Any]]) -> str:
        """Release an exportable key to the target its attestation token describes: the
        token is verified against the trusted authorities, the version's release policy
        evaluated on its claims, and the key exported by its keystore wrapped to the
        token's runtime key. The answer is `claims(bundle, key_hsm, enc)` (what the API
        shows) signed by the deployment's attestation signing key (vault/attestation.py)."""
        self._check(caller, "KeyRelease", name)
        rec = self._find(caller, name, version)
        policy = rec.props.get("release_policy")
        if not rec.props.get("exportable") or policy is None:
            raise BadParameter(NOT_EXPORTABLE)
        if not rec.enabled:
            raise Forbidden("Operation release is not allowed on a disabled key.",
                            inner="KeyDisabled")
        enc = request.enc or transfer.ENC
        if enc not in transfer.WRAPPINGS:
            raise BadParameter(f"The key wrapping (enc) '{enc[:40]}' is not supported; use "
                               f"one of {', '.join(transfer.WRAPPINGS)}.")
        if self._attestor is None:
            raise BadParameter("Key release is not available on this deployment.")
        try:
            target = attestation_tokens.verify(
                request.target, self._authorities() if self._authorities else (),
                float(self._now()))
        except attestation_tokens.AttestationTokenError as exc:
            raise BadParameter(f"The target's attestation token is not valid: {exc}") \
                from None
        if not rp.evaluate(rp.parse(policy), target.issuer, target.claims):
            raise Forbidden(rp.POLICY_NOT_SATISFIED)
        store = self._serving(rec)
        with keystore_faults("The key could not be released: "):
            wrapped = store.export(self._ref(caller.vault, rec), target.runtime_key.jwk, enc)
            key_hsm = b64url_encode(json.dumps({
                "schema_version": "1.0",
                "header": {"kid": target.runtime_key.kid, "alg": "dir", "enc": enc},
                "ciphertext": b64url_encode(wrapped), "generator": "OpenKeyVault",
            }, separators=(",", ":")).encode())
            return self._attestor.sign_release(store, claims(self._bundle(caller, rec),
                                                             key_hsm, enc))

    def random_bytes(self, caller: Caller, count: int) -> bytes:
        # Random bytes belong to the vault, not to its keys collection: only an assignment on
        # the vault (or above) covers them.
        authorize_operation(self._authz, caller, "RandomBytesGet", "/")
        if not 1 <= count <= 128:
            raise BadParameter("count must be an integer from 1 to 128.")
        return os.urandom(count)

    # ---- backup / restore ------------------------------------------------------------------
    def backup(self, caller: Caller, name: str) -> bytes:
        """Every version's blob as its keystore backs it up: the sealed key material of a
        software key, an HSM key's copy wrapped by the deployment's backup key in the HSM
        (refused for a key made without one)."""
        self._check(caller, "KeyBackup", name)
        latest = self._find(caller, name, None)
        versions = []
        for r in self._all_versions(caller, name):
            with keystore_faults("The key cannot be backed up: "):
                blob = self._serving(r).backup_blob(self._ref(caller.vault, r))
            versions.append({
                "version": r.version, "props": r.props, "blob": base64.b64encode(blob).decode(),
                "tags": r.tags, "enabled": r.enabled, "nbf": r.nbf, "exp": r.exp,
                "created": r.created, "updated": r.updated,
            })
        policy = self._repo.get_policy(caller.vault.id, KIND.collection, name.lower())
        return self._backups.pack(KIND.collection, {"name": latest.name, "versions": versions,
                                                    "policy": policy})

    def restore(self, caller: Caller, blob: bytes) -> KeyBundle:
        """The versions of a backup, each made live again by the keystore that backed it
        up (an HSM unwraps its copy into new objects, destroyed again if the restore
        fails)."""
        self._check(caller, "KeyRestore")
        payload = self._backups.unpack(KIND.collection, blob)
        name = str(payload.get("name", ""))
        names.check_object_name(name)
        vault = caller.vault
        recs: list[VersionRecord] = []
        made: list[tuple[KeyStore, KeyRef]] = []
        try:
            for v in payload.get("versions", []):
                props = dict(v["props"])
                kty = props["kty"]
                keytypes.check_kty(kty, _accepting(vault))
                store = self._named(props.get("keystore", "software"))
                family = keytypes.KTY[kty][0]
                with keystore_faults("The key cannot be restored: "):
                    stored = store.restore_key(family, base64.b64decode(v["blob"]),
                                               props["public"])
                made.append((store, KeyRef(f"restore/{uuid.uuid4().hex}", family,
                                           _constant(stored.blob))))
                props.pop("handle", None)
                if stored.handle is not None:
                    props["handle"] = stored.handle
                key_version, sealed = self._barrier.seal(
                    vault_owner(vault.id), _context(vault.id, name.lower(), v["version"]),
                    stored.blob)
                recs.append(VersionRecord(
                    name=name, version=v["version"], created=v["created"],
                    updated=v["updated"], enabled=v["enabled"], nbf=v["nbf"], exp=v["exp"],
                    tags=v["tags"], props=props, sealed=sealed, key_version=key_version,
                ))
            self._restore(caller, name, recs, payload.get("policy"))
        except BaseException:
            for store, ref in made:
                if store.capabilities().hardware:
                    with contextlib.suppress(ValueError, KeyStoreUnavailable):
                        store.destroy(ref)
            raise
        return self._bundle(caller, recs[-1])

    def _on_removed(self, caller: Caller, name: str) -> None:
        for store in self._keystores.values():
            store.forget(cache_prefix(caller.vault.id, name.lower()))

    def _held_outside(self, rec: VersionRecord) -> bool:
        """Whether the version's key lives in a keystore outside storage (an HSM)."""
        store = self._keystores.get(rec.props.get("keystore", "software"))
        return store is not None and store.capabilities().hardware

    def destroy_orphans(self) -> int:
        """Destroy the keys HSM keystores hold that no key version names any more, once
        two scans at least the grace apart found each unnamed (a scheduled job: a purge
        by retention or of a whole vault removes the rows only). Returns how many."""
        grace = orphan_grace()
        now = time.monotonic()
        if now - self._last_scan < grace / 2:
            return 0
        self._last_scan = now
        destroyed = 0
        unnamed: set[tuple[str, str]] = set()
        for store in self._keystores.values():
            if not store.capabilities().hardware:
                continue
            try:
                held = store.held()  # first: a key stored after this is named below
            except KeyStoreUnavailable as exc:
                log.warning("keys: the HSM could not be searched for keys to destroy (the "
                            "next run tries again): %s", exc)
                continue
            named = self._repo.key_handles(store.name)
            unnamed |= {(store.name, h) for h in held - named}
        for found in list(self._orphans):
            if found not in unnamed:
                del self._orphans[found]  # named again, or gone
        for name, handle in unnamed:
            first = self._orphans.setdefault((name, handle), now)
            if now - first >= grace:
                self._keystores[name].destroy_held(handle)
                del self._orphans[name, handle]
                destroyed += 1
                log.info("keys: destroyed an HSM key no key version names (keystore '%s', "
                         "handle %s)", name, handle)
        return destroyed

    def close(self) -> None:
        """Close the keystores' sessions (a deployment closing)."""
        for store in self._keystores.values():
            store.close()

    def purge(self, caller: Caller, name: str) -> None:
        """Purge, then destroy each version's key in a keystore that holds it outside
        storage (an HSM's token objects): purged key material is gone for good. The
        versions are read first: a destroy that fails is logged, and the object is
        purged all the same (it can no longer be named)."""
        held = []
        if names.OBJECT_NAME.fullmatch(name):
            held = [(self._keystores[rec.props["keystore"]], self._ref(caller.vault, rec))
                    for rec in self._repo.all_versions(caller.vault.id, KIND.collection,
                                                       name.lower(), deleted=True)
                    if self._held_outside(rec)]
        super().purge(caller, name)
        for store, ref in held:
            try:
                store.destroy(ref)
            except (ValueError, KeyStoreUnavailable) as exc:
                log.error("keys: a purged key version could not be destroyed in keystore "
                          "'%s': %s", store.name, exc)

    # ---- rotation -------------------------------------------------------------------------
    def rotate(self, caller: Caller, name: str) -> KeyBundle:
        self._check(caller, "KeyRotate", name)
        latest = self._find(caller, name, None)
        self._refuse_managed(latest, "rotate")
        policy = self._repo.get_policy(caller.vault.id, KIND.collection, name.lower())
        rec = self._rotate(caller.vault, latest, policy)
        assert rec is not None
        return self._bundle(caller, rec)

    def _rotate(self, vault: VaultRecord, latest: VersionRecord, policy: dict[str, Any] | None,
                scheduled: bool = False) -> VersionRecord | None:
        """A new version like `latest`. `scheduled`: only if `latest` is still the latest
        version when it is stored (None otherwise)."""
        p = latest.props
        family, hardware = keytypes.KTY[p["kty"]]
        spec = (KeySpec("RSA", size=p["size"],
                        public_exponent=int.from_bytes(
                            base64.urlsafe_b64decode(p["public"]["e"] + "=="), "big"))
                if family == "RSA" else KeySpec("oct", size=p["size"]) if family == "oct"
                else KeySpec("EC", curve=p["public"]["crv"]))
        spec = dataclasses.replace(spec, exportable=bool(p.get("exportable")))
        store = self._keystore(hardware)
        with keystore_faults():
            stored = store.generate(spec)
        now = self._now()
        expiry = (policy or {}).get("attributes", {}).get("expiryTime")
        exp = now + durations.parse(expiry, "expiryTime") if expiry else None
        rec = self._new_version(vault, latest.name, p["kty"], stored, list(p["key_ops"]),
                                store.name, True, None, exp, latest.tags, now,
                                p.get("release_policy") if p.get("exportable") else None)
        if not self._store(vault, rec, latest.version if scheduled else None):
            return None
        return rec

    def get_rotation_policy(self, caller: Caller, name: str) -> RotationPolicy:
        self._check(caller, "KeyRotationPolicyGet", name)
        self._find(caller, name, None)
        stored = self._repo.get_policy(caller.vault.id, KIND.collection, name.lower())
        if stored is None:
            return RotationPolicy(name, [DEFAULT_NOTIFY], None, None, None)
        return _policy(name, stored)

    def set_rotation_policy(self, caller: Caller, name: str,
                            request: KeyRotationPolicy) -> RotationPolicy:
        self._check(caller, "KeyRotationPolicySet", name)
        latest = self._find(caller, name, None)
        self._refuse_managed(latest, "setRotationPolicy")
        actions_in, expiry = _validate_policy(request)
        now = self._now()
        old = self._repo.get_policy(caller.vault.id, KIND.collection, name.lower())
        stored = {
            "lifetimeActions": actions_in,
            "attributes": {"expiryTime": expiry, "created": (old or {}).get(
                "attributes", {}).get("created", now), "updated": now},
        }
        if not self._repo.set_policy(caller.vault.id, KIND.collection, name.lower(), stored):
            raise KIND.not_found(latest.name)
        return _policy(latest.name, stored)

    def run_policies(self) -> int:
        """Scheduler job: rotate keys whose policy says so; record near-expiry notices."""
        done = 0
        now = self._now()
        for row in self._repo.objects_with_policy(KIND.collection):
            try:
                done += self._run_policy(row, now)
            except Exception:  # one key that cannot be rotated must not hold up the others
                log.exception("The rotation policy of key %s in vault %s could not run.",
                              row.latest.name, row.vault.name)
        return done

    def _run_policy(self, row: PolicyRow, now: int) -> int:
        done = 0
        latest = row.latest
        # A key without a policy still gets Azure's default notice 30 days before expiry.
        policy = row.policy if row.policy is not None else {"lifetimeActions": [DEFAULT_NOTIFY]}
        for action in policy.get("lifetimeActions", []):
            trigger = action["trigger"]
            if "timeAfterCreate" in trigger:
                due = latest.created + durations.parse(trigger["timeAfterCreate"], "trigger")
            elif latest.exp is not None:
                due = latest.exp - durations.parse(trigger["timeBeforeExpiry"], "trigger")
            else:
                continue
            if now < due:
                continue
            if action["action"]["type"] == "Rotate":
                # Every worker runs this job: the new version is added only if `latest` is
                # still the latest, so workers that read the same due version rotate it once
                # between them.
                if self._rotate(row.vault, latest, policy, scheduled=True):
                    self._repo.add_event_once(EventRecord(row.vault.id, "KeyRotated",
                                                          latest.name, latest.version, now))
                    done += 1
                break
            if self._repo.add_event_once(EventRecord(row.vault.id, "KeyNearExpiry",
                                                     latest.name, latest.version, now)):
                done += 1
        return done


def _accepting(vault: VaultRecord) -> str:
    """What decides the key types a vault takes (keytypes.ACCEPTED): its SKU, or
    "managedhsm" for a managed HSM pool."""
    return "managedhsm" if vault.kind == POOL_KIND else vault.sku


def _parsed_policy(given: KeyReleasePolicy) -> rp.ReleasePolicy:
    return rp.parse({"contentType": given.content_type, "data": given.data,
                     "immutable": given.immutable})


def _constant(value: bytes) -> Callable[[], bytes]:
    return lambda: value


def orphan_grace() -> float:
    """OKV_HSM_ORPHAN_GRACE seconds (0.1 to 86400), else the default."""
    try:
        value = float(os.environ.get(ORPHAN_GRACE_ENV, DEFAULT_ORPHAN_GRACE))
    except ValueError:
        return DEFAULT_ORPHAN_GRACE
    return value if 0.1 <= value <= 86_400 else DEFAULT_ORPHAN_GRACE


def _bounded(value: bytes, field: str) -> bytes:
    if len(value) > MAX_OPERATION_BYTES:
        raise BadParameter(f"'{field}' is too large.")
    return value


def _policy(name: str, stored: dict[str, Any]) -> RotationPolicy:
    attrs = stored.get("attributes", {})
    return RotationPolicy(name, stored["lifetimeActions"], attrs.get("expiryTime"),
                          attrs.get("created"), attrs.get("updated"))


def _validate_policy(request: KeyRotationPolicy) -> tuple[list[dict[str, Any]], str | None]:
    """Azure's rules for a rotation policy; returns (lifetime actions, expiryTime)."""
    expiry = request.expiry_time
    expiry_s = None
    if expiry is not None:
        expiry_s = durations.parse(expiry, "expiryTime")
        if expiry_s < MIN_EXPIRY_TIME:
            raise BadParameter("expiryTime must be at least 28 days (P28D).")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in request.lifetime_actions:
        if item.trigger is None or not item.has_action:
            raise BadParameter("Each lifetime action needs a 'trigger' and an 'action'.")
        kind = (item.action or "").lower()
        if kind not in ("rotate", "notify"):
            raise BadParameter("A lifetime action's type must be Rotate or Notify.")
        kind = "Rotate" if kind == "rotate" else "Notify"
        if kind in seen:
            raise BadParameter(f"A policy may hold at most one {kind} action.")
        seen.add(kind)
        after, before = item.trigger.time_after_create, item.trigger.time_before_expiry
        if (after is None) == (before is None):
            raise BadParameter(
                "A trigger needs exactly one of timeAfterCreate and timeBeforeExpiry."
            )
        if after is not None:
            if kind == "Notify":
                raise BadParameter("A Notify action takes timeBeforeExpiry only.")
            if durations.parse(after, "timeAfterCreate") < MIN_ROTATE_AFTER_CREATE:
                raise BadParameter("timeAfterCreate must be at least 7 days (P7D).")
            if expiry_s is not None and durations.parse(after, "timeAfterCreate") > \
                    expiry_s - MIN_BEFORE_EXPIRY:
                raise BadParameter("timeAfterCreate must end at least 7 days before expiryTime.")
            trigger = {"timeAfterCreate": str(after).upper()}
        else:
            if expiry_s is None:
                raise BadParameter("timeBeforeExpiry needs the policy's expiryTime.")
            if durations.parse(before, "timeBeforeExpiry") < MIN_BEFORE_EXPIRY:
                raise BadParameter("timeBeforeExpiry must be at least 7 days (P7D).")
            if durations.parse(before, "timeBeforeExpiry") > expiry_s - MIN_BEFORE_EXPIRY:
                raise BadParameter("timeBeforeExpiry must leave at least 7 days after creation.")
            trigger = {"timeBeforeExpiry": str(before).upper()}
        out.append({"trigger": trigger, "action": {"type": kind}})
    if "Notify" not in seen:
        out.append(DEFAULT_NOTIFY)
    return out, str(expiry).upper() if expiry is not None else None
