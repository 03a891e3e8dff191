"""Secrets: set, get, list, update, soft delete, recover, purge, backup, restore.

Every operation is authorize → act. Values reach storage only through the
barrier, sealed under the vault's data key with the (vault, name, version)
as associated data.
"""

from __future__ import annotations

import uuid
from typing import Any

from openkeyvault.access import actions
from openkeyvault.access.authorize import Authorizer
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.barrier import Barrier, BarrierError, vault_owner
from openkeyvault.storage.records import NameConflict, VersionRecord
from openkeyvault.storage.repository import Repository
from openkeyvault.vault import names, paging
from openkeyvault.vault.backup import BackupCodec
from openkeyvault.vault.context import Caller, authorize
from openkeyvault.vault.errors import BadParameter, Conflict, Forbidden, NotFound
from openkeyvault.vault.lifecycle import DAY, recovery_level
from openkeyvault.vault.models import Attributes, DeletedInfo, Page, SecretBundle

COLLECTION = "secrets"
MAX_BACKUP_VERSIONS = 500


def _context(vault_id: int, name_lc: str, version: str) -> bytes:
    return f"okv/secret/{vault_id}/{name_lc}/{version}".encode()


def _not_found(name: str, version: str | None = None) -> NotFound:
    ident = f"{name}/{version}" if version else name
    return NotFound(
        f"A secret with (name/id) {ident} was not found in this key vault. If you recently "
        "deleted this secret you may be able to recover it using the correct recovery command.",
        code="SecretNotFound",
    )


def _deleted_not_found(name: str) -> NotFound:
    return NotFound(f"Deleted Secret not found: {name}", code="SecretNotFound")


def _deleted_conflict(name: str) -> Conflict:
    return Conflict(
        f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be "
        "reused; in this state, the secret can only be recovered or purged.",
        inner="ObjectIsDeletedButRecoverable",
    )


class SecretService:
    def __init__(self, repo: Repository, barrier: Barrier, authorizer: Authorizer,
                 clock: Clock, backups: BackupCodec) -> None:
        self._repo = repo
        self._barrier = barrier
        self._authz = authorizer
        self._clock = clock
        self._backups = backups

    # ---- helpers ------------------------------------------------------------
    def _now(self) -> int:
        return int(self._clock.now())

    def _bundle(self, caller: Caller, rec: VersionRecord, with_value: bool = False) -> SecretBundle:
        v = caller.vault
        value = None
        if with_value and rec.sealed is not None and rec.key_version is not None:
            try:
                value = self._barrier.open(
                    vault_owner(v.id), rec.key_version,
                    _context(v.id, rec.name.lower(), rec.version), rec.sealed,
                ).decode("utf-8")
            except BarrierError:
                raise BadParameter("The secret value could not be unsealed.") from None
        deleted = None
        if rec.deleted_date is not None and rec.scheduled_purge_date is not None:
            deleted = DeletedInfo(rec.deleted_date, rec.scheduled_purge_date)
        return SecretBundle(
            name=rec.name,
            version=rec.version,
            value=value,
            content_type=rec.content_type,
            tags=rec.tags,
            attributes=Attributes(
                enabled=rec.enabled, created=rec.created, updated=rec.updated,
                nbf=rec.nbf, exp=rec.exp,
                recovery_level=recovery_level(v.retention_days, v.purge_protection),
                recoverable_days=v.retention_days,
            ),
            deleted=deleted,
        )

    def _check(self, caller: Caller, action: str, name: str | None = None) -> None:
        authorize(self._authz, caller, action, f"/secrets/{name}" if name else "/secrets")

    # ---- operations -----------------------------------------------------------
    def set(self, caller: Caller, name: str, value: Any, content_type: Any = None,
            attributes: dict[str, Any] | None = None, tags: Any = None) -> SecretBundle:
        names.check_object_name(name)
        self._check(caller, actions.SECRETS_SET, name)
        if not isinstance(value, str):
            raise BadParameter("The secret value must be a string.")
        raw = value.encode("utf-8")
        if len(raw) > names.MAX_SECRET_VALUE_BYTES:
            raise BadParameter(
                f"The secret value is too large: {len(raw)} bytes; the limit is "
                f"{names.MAX_SECRET_VALUE_BYTES} bytes."
            )
        attributes = attributes or {}
        enabled = names.check_bool(attributes.get("enabled"), "enabled")
        now = self._now()
        version = uuid.uuid4().hex
        key_version, sealed = self._barrier.seal(
            vault_owner(caller.vault.id), _context(caller.vault.id, name.lower(), version), raw
        )
        rec = VersionRecord(
            name=name, version=version, created=now, updated=now,
            enabled=True if enabled is None else enabled,
            nbf=names.check_time(attributes.get("nbf"), "nbf"),
            exp=names.check_time(attributes.get("exp"), "exp"),
            content_type=names.check_content_type(content_type),
            tags=names.check_tags(tags, names.MAX_SECRET_TAG_CHARS),
            sealed=sealed, key_version=key_version,
        )
        try:
            self._repo.add_version(caller.vault.id, COLLECTION, rec)
        except NameConflict:
            raise _deleted_conflict(name) from None
        return self._bundle(caller, rec, with_value=True)

    def get(self, caller: Caller, name: str, version: str | None) -> SecretBundle:
        self._check(caller, actions.SECRETS_GET, name)
        rec = self._find(caller, name, version)
        if not rec.enabled:
            raise Forbidden("Operation get is not allowed on a disabled secret.",
                            inner="SecretDisabled")
        return self._bundle(caller, rec, with_value=True)

    def _find(self, caller: Caller, name: str, version: str | None) -> VersionRecord:
        if not names.OBJECT_NAME.fullmatch(name) or (version and len(version) > 64):
            raise _not_found(name[:127], version)
        rec = self._repo.get_version(caller.vault.id, COLLECTION, name.lower(), version or None)
        if rec is None:
            raise _not_found(name, version)
        return rec

    def update(self, caller: Caller, name: str, version: str | None,
               content_type: Any = None, attributes: dict[str, Any] | None = None,
               tags: Any = None, sent: frozenset[str] = frozenset()) -> SecretBundle:
        """Update the fields named in `sent` ("contentType", "tags", "enabled", "nbf", "exp")."""
        self._check(caller, actions.SECRETS_UPDATE, name)
        rec = self._find(caller, name, version)
        attributes = attributes or {}
        changes: dict[str, Any] = {}
        if "contentType" in sent:
            changes["content_type"] = names.check_content_type(content_type)
        if "tags" in sent:
            changes["tags"] = names.check_tags(tags, names.MAX_SECRET_TAG_CHARS)
        if "enabled" in sent and attributes.get("enabled") is not None:
            changes["enabled"] = names.check_bool(attributes["enabled"], "enabled")
        for f in ("nbf", "exp"):
            if f in sent:
                changes[f] = names.check_time(attributes.get(f), f)
        changes["updated"] = self._now()
        if not self._repo.update_version(caller.vault.id, COLLECTION, name.lower(), rec.version,
                                         changes):
            raise _not_found(name, version)
        for k, v in changes.items():
            setattr(rec, k, v)
        return self._bundle(caller, rec)

    def list(self, caller: Caller, maxresults: str | None, token: str | None) -> Page:
        self._check(caller, actions.SECRETS_READ_METADATA)
        return self._list_latest(caller, deleted=False, maxresults=maxresults, token=token)

    def list_deleted(self, caller: Caller, maxresults: str | None, token: str | None) -> Page:
        self._check(caller, actions.SECRETS_READ_METADATA)
        return self._list_latest(caller, deleted=True, maxresults=maxresults, token=token)

    def _list_latest(self, caller: Caller, deleted: bool, maxresults: str | None,
                     token: str | None) -> Page:
        size = paging.page_size(maxresults)
        after = paging.position(token, "a", str)
        rows = self._repo.list_latest(caller.vault.id, COLLECTION, deleted, after, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        nxt = paging.encode_token({"a": rows[-1].name.lower()}) if more else None
        return Page([self._bundle(caller, r) for r in rows], nxt)

    def list_versions(self, caller: Caller, name: str, maxresults: str | None,
                      token: str | None) -> Page:
        self._check(caller, actions.SECRETS_READ_METADATA, name)
        size = paging.page_size(maxresults)
        after = paging.position(token, "s", int)
        rows = self._repo.list_versions(caller.vault.id, COLLECTION, name.lower(), after, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        nxt = paging.encode_token({"s": rows[-1].seq}) if more else None
        return Page([self._bundle(caller, r) for r in rows], nxt)

    def delete(self, caller: Caller, name: str) -> SecretBundle:
        self._check(caller, actions.SECRETS_DELETE, name)
        rec = self._find(caller, name, None)
        now = self._now()
        purge_at = now + caller.vault.retention_days * DAY
        if not self._repo.soft_delete(caller.vault.id, COLLECTION, name.lower(), now, purge_at):
            raise _not_found(name)
        rec.deleted_date, rec.scheduled_purge_date = now, purge_at
        return self._bundle(caller, rec)

    def get_deleted(self, caller: Caller, name: str) -> SecretBundle:
        self._check(caller, actions.SECRETS_READ_METADATA, name)
        rec = None
        if names.OBJECT_NAME.fullmatch(name):
            rec = self._repo.get_version(caller.vault.id, COLLECTION, name.lower(), None,
                                         deleted=True)
        if rec is None:
            raise _deleted_not_found(name[:127])
        return self._bundle(caller, rec)

    def recover(self, caller: Caller, name: str) -> SecretBundle:
        self._check(caller, actions.SECRETS_RECOVER, name)
        if not names.OBJECT_NAME.fullmatch(name) or not self._repo.recover(
            caller.vault.id, COLLECTION, name.lower()
        ):
            raise _deleted_not_found(name[:127])
        return self._bundle(caller, self._find(caller, name, None))

    def purge(self, caller: Caller, name: str) -> None:
        self._check(caller, actions.SECRETS_PURGE, name)
        if caller.vault.purge_protection:
            raise Forbidden(
                'Operation "purge" is not allowed because purge protection is enabled for this '
                "vault. Key Vault service will automatically purge it after the retention period "
                f"has passed. Vault: {caller.vault.name};location=local"
            )
        if not names.OBJECT_NAME.fullmatch(name) or not self._repo.purge(
            caller.vault.id, COLLECTION, name.lower()
        ):
            raise _deleted_not_found(name[:127])

    def backup(self, caller: Caller, name: str) -> bytes:
        self._check(caller, actions.SECRETS_BACKUP, name)
        latest = self._find(caller, name, None)
        recs = self._repo.all_versions(caller.vault.id, COLLECTION, name.lower())
        if len(recs) > MAX_BACKUP_VERSIONS:
            raise BadParameter(
                f"Secret {latest.name} has more than {MAX_BACKUP_VERSIONS} versions and cannot "
                "be backed up."
            )
        versions = []
        for r in recs:
            b = self._bundle(caller, r, with_value=True)
            versions.append({
                "version": r.version, "value": b.value, "contentType": r.content_type,
                "tags": r.tags, "enabled": r.enabled, "nbf": r.nbf, "exp": r.exp,
                "created": r.created, "updated": r.updated,
            })
        return self._backups.pack(COLLECTION, {"name": latest.name, "versions": versions})

    def restore(self, caller: Caller, blob: bytes) -> SecretBundle:
        self._check(caller, actions.SECRETS_RESTORE)
        payload = self._backups.unpack(COLLECTION, blob)
        name = str(payload.get("name", ""))
        names.check_object_name(name)
        vid = caller.vault.id
        recs = []
        for v in payload.get("versions", []):
            key_version, sealed = self._barrier.seal(
                vault_owner(vid), _context(vid, name.lower(), v["version"]),
                v["value"].encode("utf-8"),
            )
            recs.append(VersionRecord(
                name=name, version=v["version"], created=v["created"], updated=v["updated"],
                enabled=v["enabled"], nbf=v["nbf"], exp=v["exp"], content_type=v["contentType"],
                tags=v["tags"], sealed=sealed, key_version=key_version,
            ))
        if not recs:
            raise BadParameter("The backup blob holds no versions.")
        try:
            self._repo.restore(vid, COLLECTION, name, recs)
        except NameConflict as e:
            if e.deleted:
                raise _deleted_conflict(name) from None
            raise Conflict(
                f"Secret {name} already exists in this vault; restore needs a name that is not "
                "in use.",
            ) from None
        return self._bundle(caller, recs[-1])
