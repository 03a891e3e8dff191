"""Secrets: set, get, update, backup, restore (the shared lifecycle is in objects.py).

Values reach storage only through the barrier, sealed under the vault's data
key with the (vault, name, version) as associated data.
"""

from __future__ import annotations

import uuid
from typing import Any

from openkeyvault.storage.barrier import BarrierError, vault_owner
from openkeyvault.storage.records import NameConflict, VersionRecord
from openkeyvault.vault import names
from openkeyvault.vault.context import Caller
from openkeyvault.vault.errors import BadParameter, Forbidden
from openkeyvault.vault.models import SecretBundle
from openkeyvault.vault.objects import Kind, ObjectService
from openkeyvault.vault.requests import NO_ATTRIBUTES, UNSET, ObjectAttributes, SecretUpdate

KIND = Kind(collection="secrets", label="Secret")


def _context(vault_id: int, name_lc: str, version: str) -> bytes:
    return f"okv/secret/{vault_id}/{name_lc}/{version}".encode()


class SecretService(ObjectService[SecretBundle]):
    kind = KIND

    def _value(self, caller: Caller, rec: VersionRecord) -> str | None:
        if rec.sealed is None or rec.key_version is None:
            return None
        v = caller.vault
        try:
            return self._barrier.open(
                vault_owner(v.id), rec.key_version,
                _context(v.id, rec.name.lower(), rec.version), rec.sealed,
            ).decode("utf-8")
        except BarrierError:
            raise BadParameter("The secret value could not be unsealed.") from None

    def _bundle(self, caller: Caller, rec: VersionRecord, with_value: bool = False
                ) -> SecretBundle:
        return SecretBundle(
            name=rec.name, version=rec.version,
            value=self._value(caller, rec) if with_value else None,
            content_type=rec.content_type, tags=rec.tags,
            attributes=self._attributes(caller, rec), deleted=self._deleted(rec),
            managed=bool(rec.props.get("managed")),
        )

    def set(self, caller: Caller, name: str, value: str, content_type: str | None = None,
            attributes: ObjectAttributes = NO_ATTRIBUTES, tags: dict[str, str] | None = None
            ) -> SecretBundle:
        names.check_object_name(name)
        self._check(caller, "SecretSet", name)
        self._refuse_certificate_name(caller, name)
        raw = value.encode("utf-8")
        if len(raw) > names.MAX_SECRET_VALUE_BYTES:
            raise BadParameter(
                f"The secret value is too large: {len(raw)} bytes; the limit is "
                f"{names.MAX_SECRET_VALUE_BYTES} bytes."
            )
        enabled, nbf, exp = attributes.initial()
        now = self._now()
        version = uuid.uuid4().hex
        key_version, sealed = self._barrier.seal(
            vault_owner(caller.vault.id), _context(caller.vault.id, name.lower(), version), raw
        )
        rec = VersionRecord(
            name=name, version=version, created=now, updated=now,
            enabled=enabled, nbf=nbf, exp=exp,
            content_type=names.check_content_type(content_type),
            tags=names.check_tags(tags, names.MAX_SECRET_TAG_CHARS),
            sealed=sealed, key_version=key_version,
        )
        try:
            self._repo.add_version(caller.vault.id, KIND.collection, rec,
                                   also=self.events.new_version(caller.vault, KIND.collection))
        except NameConflict:
            raise KIND.deleted_conflict(name) from None
        return self._bundle(caller, rec, with_value=True)

    def get(self, caller: Caller, name: str, version: str | None) -> SecretBundle:
        self._check(caller, "SecretGet", name)
        rec = self._find(caller, name, version)
        if not rec.enabled:
            raise Forbidden("Operation get is not allowed on a disabled secret.",
                            inner="SecretDisabled")
        return self._bundle(caller, rec, with_value=True)

    def update(self, caller: Caller, name: str, version: str | None,
               request: SecretUpdate) -> SecretBundle:
        """Change what the request sent: contentType, tags, enabled, nbf, exp."""
        self._check(caller, "SecretUpdate", name)
        rec = self._find(caller, name, version)
        changes: dict[str, Any] = {}
        if request.content_type is not UNSET:
            changes["content_type"] = names.check_content_type(request.content_type)
        if request.tags is not UNSET:
            changes["tags"] = names.check_tags(request.tags, names.MAX_SECRET_TAG_CHARS)
        changes.update(request.attributes.changes())
        return self._bundle(caller, self._update(caller, rec, changes))

    def backup(self, caller: Caller, name: str) -> bytes:
        self._check(caller, "SecretBackup", name)
        latest = self._find(caller, name, None)
        versions = [{
            "version": r.version, "value": self._value(caller, r), "contentType": r.content_type,
            "tags": r.tags, "enabled": r.enabled, "nbf": r.nbf, "exp": r.exp,
            "created": r.created, "updated": r.updated,
        } for r in self._all_versions(caller, name)]
        return self._backups.pack(KIND.collection, {"name": latest.name, "versions": versions})

    def restore(self, caller: Caller, blob: bytes) -> SecretBundle:
        self._check(caller, "SecretRestore")
        payload = self._backups.unpack(KIND.collection, blob)
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
        self._restore(caller, name, recs)
        return self._bundle(caller, recs[-1])
