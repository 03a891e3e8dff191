"""What secrets, keys and certificates share: lookup, listing, soft delete, recover, purge.

A concrete service names its `Kind` (collection, wording, data actions) and
turns stored versions into its bundle type; the lifecycle lives here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from openkeyvault.access.authorize import Authorizer
from openkeyvault.ops.clock import Clock
from openkeyvault.ops.events import NO_EVENTS, EventPublisher
from openkeyvault.storage.barrier import Barrier
from openkeyvault.storage.records import NameConflict, VersionRecord
from openkeyvault.storage.repository import Repository
from openkeyvault.vault import names, paging
from openkeyvault.vault.backup import BackupCodec
from openkeyvault.vault.context import Caller, authorize_operation
from openkeyvault.vault.errors import BadParameter, Conflict, Forbidden, NotFound
from openkeyvault.vault.lifecycle import DAY, recovery_level
from openkeyvault.vault.models import Attributes, DeletedInfo, Page

B = TypeVar("B")

MAX_BACKUP_VERSIONS = 500


@dataclass(frozen=True)
class Kind:
    collection: str  # "secrets"
    label: str  # "Secret"

    @property
    def not_found_code(self) -> str:
        return f"{self.label}NotFound"

    def not_found(self, name: str, version: str | None = None) -> NotFound:
        ident = f"{name}/{version}" if version else name
        word = self.label.lower()
        return NotFound(
            f"A {word} with (name/id) {ident} was not found in this key vault. If you recently "
            f"deleted this {word} you may be able to recover it using the correct recovery "
            "command.",
            code=self.not_found_code,
        )

    def deleted_not_found(self, name: str) -> NotFound:
        return NotFound(f"Deleted {self.label} not found: {name}", code=self.not_found_code)

    def deleted_conflict(self, name: str) -> Conflict:
        word = self.label.lower()
        return Conflict(
            f"{self.label} {name} is currently in a deleted but recoverable state, and its name "
            f"cannot be reused; in this state, the {word} can only be recovered or purged.",
            inner="ObjectIsDeletedButRecoverable",
        )

    def exists_conflict(self, name: str) -> Conflict:
        return Conflict(
            f"{self.label} {name} already exists in this vault; restore needs a name that is "
            "not in use."
        )


class ObjectService(Generic[B]):
    kind: Kind
    events: EventPublisher = NO_EVENTS  # told of each new version (ops/events.py)

    def __init__(self, repo: Repository, barrier: Barrier, authorizer: Authorizer,
                 clock: Clock, backups: BackupCodec) -> None:
        self._repo = repo
        self._barrier = barrier
        self._authz = authorizer
        self._clock = clock
        self._backups = backups

    # ---- for subclasses -------------------------------------------------------
    def _bundle(self, caller: Caller, rec: VersionRecord) -> B:
        raise NotImplementedError

    def _now(self) -> int:
        return int(self._clock.now())

    def _check(self, caller: Caller, operation: str, name: str | None = None) -> None:
        """Deny by default: the caller needs what `operation` needs (the row of that name in
        vault/operations.py, whose data action and access-policy permission the route's
        guard checked already: decided once per request), at the object or the
        collection."""
        path = f"/{self.kind.collection}/{name}" if name else f"/{self.kind.collection}"
        authorize_operation(self._authz, caller, operation, path)

    def _attributes(self, caller: Caller, rec: VersionRecord) -> Attributes:
        v = caller.vault
        return Attributes(
            enabled=rec.enabled, created=rec.created, updated=rec.updated, nbf=rec.nbf,
            exp=rec.exp, recovery_level=recovery_level(v.retention_days, v.purge_protection),
            recoverable_days=v.retention_days,
        )

    @staticmethod
    def _deleted(rec: VersionRecord) -> DeletedInfo | None:
        if rec.deleted_date is None or rec.scheduled_purge_date is None:
            return None
        return DeletedInfo(rec.deleted_date, rec.scheduled_purge_date)

    def _find(self, caller: Caller, name: str, version: str | None) -> VersionRecord:
        """The live version (latest when `version` is empty), or the kind's 404."""
        if not names.OBJECT_NAME.fullmatch(name) or (version and len(version) > 64):
            raise self.kind.not_found(name[:127], (version or "")[:64] or None)
        rec = self._repo.get_version(caller.vault.id, self.kind.collection, name.lower(),
                                     version or None)
        if rec is None:
            raise self.kind.not_found(name, version)
        return rec

    def _all_versions(self, caller: Caller, name: str) -> list[VersionRecord]:
        recs = self._repo.all_versions(caller.vault.id, self.kind.collection, name.lower())
        if len(recs) > MAX_BACKUP_VERSIONS:
            raise BadParameter(
                f"{self.kind.label} {recs[-1].name} has more than {MAX_BACKUP_VERSIONS} versions "
                "and cannot be backed up."
            )
        return recs

    # ---- shared operations ------------------------------------------------------
    def list(self, caller: Caller, maxresults: str | None, token: str | None) -> Page:
        self._check(caller, f"{self.kind.label}List")
        return self._list_latest(caller, False, maxresults, token)

    def list_deleted(self, caller: Caller, maxresults: str | None, token: str | None) -> Page:
        self._check(caller, f"{self.kind.label}ListDeleted")
        return self._list_latest(caller, True, maxresults, token)

    def _list_latest(self, caller: Caller, deleted: bool, maxresults: str | None,
                     token: str | None) -> Page:
        size = paging.page_size(maxresults)
        after = paging.position(token, "a", str)
        rows = self._repo.list_latest(caller.vault.id, self.kind.collection, deleted, after,
                                      size + 1)
        more = len(rows) > size
        rows = rows[:size]
        nxt = paging.encode_token({"a": rows[-1].name.lower()}) if more else None
        return Page([self._bundle(caller, r) for r in rows], nxt)

    def list_versions(self, caller: Caller, name: str, maxresults: str | None,
                      token: str | None) -> Page:
        self._check(caller, f"{self.kind.label}ListVersions", name)
        size = paging.page_size(maxresults)
        after = paging.position(token, "s", int)
        rows = self._repo.list_versions(caller.vault.id, self.kind.collection, name.lower(),
                                        after, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        nxt = paging.encode_token({"s": rows[-1].seq}) if more else None
        return Page([self._bundle(caller, r) for r in rows], nxt)

    def delete(self, caller: Caller, name: str) -> B:
        self._check(caller, f"{self.kind.label}Delete", name)
        rec = self._find(caller, name, None)
        self._refuse_managed(rec, "delete")
        now = self._now()
        purge_at = now + caller.vault.retention_days * DAY
        if not self._repo.soft_delete(caller.vault.id, self.kind.collection, name.lower(), now,
                                      purge_at):
            raise self.kind.not_found(name)
        self._on_removed(caller, name)
        rec.deleted_date, rec.scheduled_purge_date = now, purge_at
        return self._bundle(caller, rec)

    def get_deleted(self, caller: Caller, name: str) -> B:
        self._check(caller, f"{self.kind.label}GetDeleted", name)
        rec = None
        if names.OBJECT_NAME.fullmatch(name):
            rec = self._repo.get_version(caller.vault.id, self.kind.collection, name.lower(),
                                         None, deleted=True)
        if rec is None:
            raise self.kind.deleted_not_found(name[:127])
        return self._bundle(caller, rec)

    def recover(self, caller: Caller, name: str) -> B:
        self._check(caller, f"{self.kind.label}Recover", name)
        self._refuse_managed(self._managed_latest(caller, name, True), "recover")
        if not names.OBJECT_NAME.fullmatch(name) or not self._repo.recover(
            caller.vault.id, self.kind.collection, name.lower()
        ):
            raise self.kind.deleted_not_found(name[:127])
        return self._bundle(caller, self._find(caller, name, None))

    def purge(self, caller: Caller, name: str) -> None:
        self._check(caller, f"{self.kind.label}Purge", name)
        if caller.vault.purge_protection:
            raise Forbidden(
                'Operation "purge" is not allowed because purge protection is enabled for this '
                "vault. Key Vault service will automatically purge it after the retention period "
                f"has passed. Vault: {caller.vault.name};location=local"
            )
        self._refuse_managed(self._managed_latest(caller, name, True), "purge")
        if not names.OBJECT_NAME.fullmatch(name) or not self._repo.purge(
            caller.vault.id, self.kind.collection, name.lower()
        ):
            raise self.kind.deleted_not_found(name[:127])
        self._on_removed(caller, name)

    def _update(self, caller: Caller, rec: VersionRecord, changes: dict[str, Any]
                ) -> VersionRecord:
        """Apply attribute changes to one version (stamping `updated`); the updated record."""
        self._refuse_managed(rec, "update")
        changes["updated"] = self._now()
        if not self._repo.update_version(caller.vault.id, self.kind.collection,
                                         rec.name.lower(), rec.version, changes):
            raise self.kind.not_found(rec.name, rec.version)
        for k, v in changes.items():
            setattr(rec, k, v)
        return rec

    def _restore(self, caller: Caller, name: str, recs: Sequence[VersionRecord],
                 policy: dict[str, Any] | None = None) -> None:
        """Store restored versions under `name`, refusing a name that is in use."""
        if not recs:
            raise BadParameter("The backup blob holds no versions.")
        self._refuse_certificate_name(caller, name)
        try:
            self._repo.restore(caller.vault.id, self.kind.collection, name, recs, policy)
        except NameConflict as e:
            raise (self.kind.deleted_conflict(name) if e.deleted
                   else self.kind.exists_conflict(name)) from None

    # ---- objects a certificate manages (its key and its secret) ------------------------
    def _refuse_managed(self, rec: VersionRecord | None, verb: str) -> None:
        """A certificate's key or secret changes only through the certificate."""
        if rec is not None and rec.props.get("managed"):
            raise Forbidden(
                f"{self.kind.label} {rec.name} is managed by certificate {rec.name}; operation "
                f"{verb} is not allowed on it. Use the certificate to change it."
            )

    def _refuse_certificate_name(self, caller: Caller, name: str) -> None:
        """A certificate's name is not free for a standalone key or secret."""
        if self._repo.get_object(caller.vault.id, "certificates", name.lower()) is not None:
            raise Conflict(
                f"The name {name} is in use by certificate {name}; its "
                f"{self.kind.label.lower()} is managed through the certificate."
            )

    def _managed_latest(self, caller: Caller, name: str, deleted: bool) -> VersionRecord | None:
        if not names.OBJECT_NAME.fullmatch(name):
            return None
        return self._repo.get_version(caller.vault.id, self.kind.collection, name.lower(),
                                      None, deleted=deleted)

    def _on_removed(self, caller: Caller, name: str) -> None:
        """Hook: drop anything cached for the object (keys drop loaded key material)."""
