"""All SQL lives here. One round trip per read, one transaction per write."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from openkeyvault.storage.db import Engines
from openkeyvault.storage.readcache import ACCESS, BARRIER, IDENTITIES, OBJECTS, VAULTS
from openkeyvault.storage.records import (
    CredentialRecord,
    EventRecord,
    NameConflict,
    PolicyRow,
    PrincipalRecord,
    RoleAssignmentRecord,
    RoleDefinitionRecord,
    VaultRecord,
    VersionRecord,
)
from openkeyvault.storage.schema import (
    data_keys,
    events,
    meta,
    objects,
    principal_credentials,
    principals,
    role_assignments,
    role_definitions,
    vault_placement,
    vault_properties,
    vaults,
    versions,
)
from openkeyvault.storage.store import Store, Transaction, insert_ignore

_VERSION_COLS = (
    objects.c.name,
    versions.c.version,
    versions.c.created,
    versions.c.updated,
    versions.c.enabled,
    versions.c.nbf,
    versions.c.exp,
    versions.c.content_type,
    versions.c.tags,
    versions.c.props,
    versions.c.sealed,
    versions.c.key_version,
    versions.c.seq,
    objects.c.deleted_date,
    objects.c.scheduled_purge_date,
)


_PARSED: dict[str, dict[str, Any]] = {}  # JSON text of a version's props or tags → parsed
_PARSED_LIMIT = 1024


def _parsed(text: str) -> dict[str, Any]:
    """The JSON object `text`, parsed once per text (a key's props hold its public JWK,
    read on every operation): each caller gets its own copy of the top level."""
    found = _PARSED.get(text)
    if found is None:
        found = json.loads(text)
        if len(_PARSED) >= _PARSED_LIMIT:
            _PARSED.clear()
        _PARSED[text] = found
    return dict(found)


def _version(row: Row[Any, *tuple[Any, ...]]) -> VersionRecord:
    return VersionRecord(
        name=row.name,
        version=row.version,
        created=row.created,
        updated=row.updated,
        enabled=bool(row.enabled),
        nbf=row.nbf,
        exp=row.exp,
        content_type=row.content_type,
        tags=_parsed(row.tags) if row.tags is not None else None,
        props=_parsed(row.props) if row.props else {},
        sealed=row.sealed,
        key_version=row.key_version,
        seq=row.seq,
        deleted_date=row.deleted_date,
        scheduled_purge_date=row.scheduled_purge_date,
    )


def _vault(row: Row[Any, *tuple[Any, ...]]) -> VaultRecord:
    return VaultRecord(
        id=row.id,
        name=row.name,
        kind=row.kind,
        sku=row.sku,
        retention_days=row.retention_days,
        purge_protection=bool(row.purge_protection),
        created=row.created,
        properties=row.properties,
    )


def _version_values(object_id: int, v: VersionRecord) -> dict[str, Any]:
    return {
        "object_id": object_id,
        "version": v.version,
        "created": v.created,
        "updated": v.updated,
        "enabled": v.enabled,
        "nbf": v.nbf,
        "exp": v.exp,
        "content_type": v.content_type,
        "tags": json.dumps(v.tags) if v.tags is not None else None,
        "props": json.dumps(v.props) if v.props else None,
        "sealed": v.sealed,
        "key_version": v.key_version,
    }


_newer = versions.alias("newer")
_latest_seq = (
    select(func.max(_newer.c.seq))
    .where(_newer.c.object_id == versions.c.object_id)
    .correlate(versions)
    .scalar_subquery()
)


_ASSIGNMENTS_OF = select(role_assignments).where(
    role_assignments.c.principal_id == bindparam("principal_id"))
_ROLE_DEFINITIONS = select(role_definitions).order_by(role_definitions.c.id)


def _assignment_taken(r: RoleAssignmentRecord, named: RoleAssignmentRecord | None,
                      of_principal: Callable[[], Iterable[RoleAssignmentRecord]]
                      ) -> tuple[str, RoleAssignmentRecord] | None:
    """Why `r` cannot be added: its name holds the same ("same") or other content
    ("name_taken"), or another name holds its content ("duplicate"); None if neither."""
    if named is not None:
        return ("same" if _same_assignment(named, r) else "name_taken"), named
    for existing in of_principal():
        if _same_assignment(existing, r):
            return "duplicate", existing
    return None


def _role_definition(row: Any) -> RoleDefinitionRecord:
    return RoleDefinitionRecord(row.id, row.role_name, row.description,
                                tuple(json.loads(row.permissions)),
                                tuple(json.loads(row.assignable_scopes)), row.created)


def _same_assignment(a: RoleAssignmentRecord, b: RoleAssignmentRecord) -> bool:
    return (a.principal_id == b.principal_id and a.scope.lower() == b.scope.lower()
            and a.role_definition_id.lower() == b.role_definition_id.lower())

# Hot-path statements are built once; executions then hit SQLAlchemy's compiled cache
# without rebuilding expression trees per request.
# A vault comes with its access-governing properties (one query, memoised with it).
# A soft-deleted vault (see storage/placement.py) is not found: its host answers like a
# missing vault's.
_LIVE_VAULTS = select(vaults, vault_properties.c.properties).select_from(
    vaults.outerjoin(vault_properties, vault_properties.c.vault_id == vaults.c.id)
    .outerjoin(vault_placement, vault_placement.c.vault_id == vaults.c.id)
).where(vault_placement.c.deleted_date.is_(None))
_GET_VAULT = _LIVE_VAULTS.where(vaults.c.name == bindparam("name"))
# A deleted vault's objects are frozen: no scheduled purge, rotation or renewal touches them.
_DELETED_VAULT_IDS = select(vault_placement.c.vault_id).where(
    vault_placement.c.deleted_date.is_not(None))


def _version_statement(latest: bool, deleted: bool) -> Any:
    q = (
        select(*_VERSION_COLS)
        .select_from(versions.join(objects, versions.c.object_id == objects.c.id))
        .where(objects.c.vault_id == bindparam("vault_id"),
               objects.c.collection == bindparam("collection"),
               objects.c.name_lc == bindparam("name_lc"))
        .where(objects.c.deleted_date.is_not(None) if deleted
               else objects.c.deleted_date.is_(None))
    )
    if latest:
        return q.order_by(versions.c.seq.desc()).limit(1)
    return q.where(versions.c.version == bindparam("version"))


_DATA_KEY = select(data_keys.c.version, data_keys.c.wrapped).where(
    data_keys.c.owner == bindparam("owner"), data_keys.c.version == bindparam("version"))
_NEWEST_DATA_KEY = (select(data_keys.c.version, data_keys.c.wrapped)
                    .where(data_keys.c.owner == bindparam("owner"))
                    .order_by(data_keys.c.version.desc()).limit(1))

_RACE_RETRIES = 8
# What a version's write transaction also does (the transaction, the version added).
Also = Callable[[Transaction, VersionRecord], None]
# What a vault's write transaction also does.
AlsoVault = Callable[[Transaction], None]


class _Raced(Exception):
    """A row this transaction found absent was created by a concurrent one meanwhile."""


class _Declined(Exception):
    """An expectation failed: roll back what the transaction did so far."""


_GET_VERSION = {(latest, deleted): _version_statement(latest, deleted)
                for latest in (True, False) for deleted in (True, False)}


class Repository(Store):
    def __init__(self, engines: Engines) -> None:
        super().__init__(engines)
        self._local = threading.local()  # per-thread memo of decoded role definitions

    # ---- meta -------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._r.connect() as c:
            return c.execute(select(meta.c.value).where(meta.c.key == key)).scalar()

    def set_meta_if_absent(self, key: str, value: str) -> str:
        """Store `value` unless the key exists; return the stored value. (Nothing is
        written when it exists: a read-only database still starts.)"""
        have = self.get_meta(key)
        if have is not None:
            return have
        with self._write() as c:
            insert_ignore(c, meta, {"key": key, "value": value})
            return str(c.execute(select(meta.c.value).where(meta.c.key == key)).scalar())

    def set_meta(self, key: str, value: str) -> None:
        """Store `value` under `key`, replacing what is there."""
        with self._write() as c:
            if not insert_ignore(c, meta, {"key": key, "value": value}):
                c.execute(update(meta).where(meta.c.key == key).values(value=value))

    # ---- data keys --------------------------------------------------------
    def data_key(self, owner: str, version: int | None = None) -> tuple[int, bytes] | None:
        # One indexed read (a vault's first use in a process, and each vault's KEK at
        # start-up): through the fast reader, one round trip on PostgreSQL.
        if version is None:
            row = self._first(_NEWEST_DATA_KEY, {"owner": owner})
        else:
            row = self._first(_DATA_KEY, {"owner": owner, "version": version})
        return (row.version, row.wrapped) if row else None

    def newest_data_keys(self) -> dict[str, tuple[int, bytes]]:
        """Every owner's newest data key, (version, wrapped) by owner, in one query (the
        start-up check of every vault's key-encryption key reads them all)."""
        newer = data_keys.alias("newer")
        q = select(data_keys.c.owner, data_keys.c.version, data_keys.c.wrapped).where(
            ~select(newer.c.version).where(newer.c.owner == data_keys.c.owner,
                                           newer.c.version > data_keys.c.version).exists())
        with self._r.connect() as c:
            return {r.owner: (r.version, r.wrapped) for r in c.execute(q)}

    def add_data_key_if_absent(self, owner: str, wrapped_for: Any, now: int) -> None:
        """Insert version 1 of `owner`'s data key (wrapped by `wrapped_for(version)`) if none."""
        with self._write() as c:
            have = c.execute(
                select(data_keys.c.version).where(data_keys.c.owner == owner).limit(1)
            ).first()
            if have is None:
                insert_ignore(c, data_keys, {"owner": owner, "version": 1,
                                             "wrapped": wrapped_for(1), "created": now})

    def add_data_key_version(self, owner: str, wrapped_for: Callable[[int], bytes],
                             rewrap: Callable[[int, bytes], bytes | None], now: int) -> int:
        """Add the next version of `owner`'s data key (wrapped by `wrapped_for(version)`),
        replace the wrapping of earlier versions where `rewrap(version, wrapped)` gives a new
        one, and bump the barrier generation — one transaction. Returns the new version."""
        with self._write(BARRIER) as c:  # the generation row first: adders queue on it
            rows = c.execute(select(data_keys.c.version, data_keys.c.wrapped)
                             .where(data_keys.c.owner == owner)).all()
            for row in rows:
                rewrapped = rewrap(row.version, row.wrapped)
                if rewrapped is not None:
                    c.execute(update(data_keys).where(data_keys.c.owner == owner,
                                                      data_keys.c.version == row.version)
                              .values(wrapped=rewrapped))
            version = max((r.version for r in rows), default=0) + 1
            c.execute(insert(data_keys).values(owner=owner, version=version,
                                               wrapped=wrapped_for(version), created=now))
            return version

    def drop_data_keys(self, owner: str) -> None:
        """Delete every data key of `owner` and bump the barrier generation (one transaction)."""
        with self._write(BARRIER) as c:
            c.execute(delete(data_keys).where(data_keys.c.owner == owner))

    def barrier_generation(self) -> int:
        """Moves whenever a data key is destroyed or added after the first: worker processes
        drop their unwrapped data keys when they see it change (checked once per request)."""
        return self.generation(BARRIER)

    # ---- vaults -----------------------------------------------------------
    def create_vault(self, name: str, kind: str, sku: str, retention_days: int,
                     purge_protection: bool, now: int) -> VaultRecord:
        try:
            with self._write(VAULTS) as c:
                c.execute(
                    insert(vaults).values(
                        name=name, kind=kind, sku=sku, retention_days=retention_days,
                        purge_protection=purge_protection, created=now,
                    )
                )
        except IntegrityError:
            raise NameConflict(deleted=False) from None
        vault = self.get_vault(name)
        assert vault is not None
        return vault

    def get_vault(self, name: str) -> VaultRecord | None:
        row = self._first_cached((VAULTS,), _GET_VAULT, {"name": name})
        return _vault(row) if row else None

    def list_vaults(self) -> list[VaultRecord]:
        with self._r.connect() as c:
            return [_vault(r) for r in c.execute(_LIVE_VAULTS.order_by(vaults.c.name))]

    def update_vault_properties(self, vault_id: int, change: Callable[[str | None], str],
                                now: int, also: AlsoVault | None = None
                                ) -> str | None:
        """Replace a vault's properties with `change(current)`, read and written in one
        write transaction (concurrent changes queue, none is lost); None if no such vault.
        `also` is called in it last (what must commit with the change)."""
        with self._write(VAULTS) as c:
            if c.execute(select(vaults.c.id).where(vaults.c.id == vault_id)).first() is None:
                return None
            current = c.execute(select(vault_properties.c.properties)
                                .where(vault_properties.c.vault_id == vault_id)).scalar()
            text = change(current)
            if current is None:
                c.execute(insert(vault_properties).values(vault_id=vault_id, properties=text,
                                                          updated=now))
            else:
                c.execute(update(vault_properties).where(vault_properties.c.vault_id == vault_id)
                          .values(properties=text, updated=now))
            if also is not None:
                also(c)
            return text

    # ---- objects and versions ---------------------------------------------
    def _object_where(self, vault_id: int, collection: str, name_lc: str) -> Any:
        return and_(
            objects.c.vault_id == vault_id,
            objects.c.collection == collection,
            objects.c.name_lc == name_lc,
        )

    def get_version(self, vault_id: int, collection: str, name_lc: str,
                    version: str | None, deleted: bool = False) -> VersionRecord | None:
        """A version (latest when None) of a live object, or of a deleted one with `deleted`."""
        q = _GET_VERSION[(version is None, deleted)]
        params = {"vault_id": vault_id, "collection": collection, "name_lc": name_lc,
                  "version": version}
        # Sealed rows may be memoised where a commit anywhere empties the memo (SQLite).
        row = self._first_cached((OBJECTS,), q, params)
        return _version(row) if row else None

    def add_version(self, vault_id: int, collection: str, v: VersionRecord,
                    expect_latest: str | None = None, also: Also | None = None) -> bool:
        """Add a version, creating the object if new. NameConflict(deleted=True) if soft-deleted.

        With `expect_latest`, add it only if that is still the object's latest version
        (compare-and-set inside the write transaction); False when it is not. `also` is
        called with the transaction and the version once it is added: what must commit
        with it (the events it causes, ops/events.py).
        """
        name_lc = v.name.lower()
        with self._write() as c:
            row = self._lock_object(c, vault_id, collection, name_lc)
            if row is None:
                if expect_latest is not None:
                    return False
                # Created here or, a moment ago, by a concurrent writer: locked either way.
                insert_ignore(c, objects, {"vault_id": vault_id, "collection": collection,
                                           "name": v.name, "name_lc": name_lc})
                row = self._lock_object(c, vault_id, collection, name_lc)
                assert row is not None
            if row.deleted_date is not None:
                raise NameConflict(deleted=True)
            if expect_latest is not None and self._latest(c, row.id) != expect_latest:
                return False
            v.name = row.name
            c.execute(insert(versions).values(**_version_values(row.id, v)))
            if also is not None:
                also(c, v)
        return True

    def _lock_object(self, c: Connection, vault_id: int, collection: str, name_lc: str
                     ) -> Any:
        """An object's row, locked until the transaction ends (writers of one object queue
        here; SQLite's writers queue on the database anyway)."""
        return c.execute(
            select(objects.c.id, objects.c.name, objects.c.deleted_date, objects.c.policy)
            .where(self._object_where(vault_id, collection, name_lc)).with_for_update()
        ).first()

    @staticmethod
    def _latest(c: Connection, object_id: int) -> str | None:
        return c.execute(select(versions.c.version).where(versions.c.object_id == object_id)
                         .order_by(versions.c.seq.desc()).limit(1)).scalar()

    def update_version(self, vault_id: int, collection: str, name_lc: str, version: str,
                       changes: dict[str, Any]) -> bool:
        """Update attribute columns of one live version; False if there is no such version."""
        values = dict(changes)
        if "tags" in values:
            values["tags"] = json.dumps(values["tags"]) if values["tags"] is not None else None
        if "props" in values:
            values["props"] = json.dumps(values["props"]) if values["props"] else None
        live = select(objects.c.id).where(
            self._object_where(vault_id, collection, name_lc), objects.c.deleted_date.is_(None)
        ).scalar_subquery()
        with self._write() as c:
            res = c.execute(
                update(versions)
                .where(versions.c.object_id == live, versions.c.version == version)
                .values(**values)
            )
            return res.rowcount == 1

    def list_latest(self, vault_id: int, collection: str, deleted: bool, after: str | None,
                    limit: int) -> list[VersionRecord]:
        """The latest version of each live (or deleted) object, ordered by name."""
        q = (
            select(*_VERSION_COLS, objects.c.name_lc)
            .select_from(versions.join(objects, versions.c.object_id == objects.c.id))
            .where(objects.c.vault_id == vault_id, objects.c.collection == collection)
            .where(objects.c.deleted_date.is_not(None) if deleted
                   else objects.c.deleted_date.is_(None))
            .where(versions.c.seq == _latest_seq)
            .order_by(objects.c.name_lc)
            .limit(limit)
        )
        if after is not None:
            q = q.where(objects.c.name_lc > after)
        with self._r.connect() as c:
            return [_version(r) for r in c.execute(q)]

    def list_versions(self, vault_id: int, collection: str, name_lc: str, after_seq: int | None,
                      limit: int, *, deleted: bool = False) -> list[VersionRecord]:
        # The object's id first (a scalar subquery): the page is then read in seq order
        # from ix_versions_object_seq and stops at `limit`, however many versions there are
        # (with a plain join PostgreSQL reads and sorts them all).
        object_id = select(objects.c.id).where(
            self._object_where(vault_id, collection, name_lc),
            objects.c.deleted_date.is_not(None) if deleted
            else objects.c.deleted_date.is_(None)).scalar_subquery()
        q = (
            select(*_VERSION_COLS)
            .select_from(versions.join(objects, versions.c.object_id == objects.c.id))
            .where(versions.c.object_id == object_id)
            .order_by(versions.c.seq)
            .limit(limit)
        )
        if after_seq is not None:
            q = q.where(versions.c.seq > after_seq)
        with self._r.connect() as c:
            return [_version(r) for r in c.execute(q)]

    def all_versions(self, vault_id: int, collection: str, name_lc: str, *,
                     deleted: bool = False) -> list[VersionRecord]:
        """Every version of a live object (a soft-deleted one with `deleted`), oldest
        first (for backup, and for a purge to destroy HSM key material)."""
        return self.list_versions(vault_id, collection, name_lc, None, 1_000_000,
                                  deleted=deleted)

    def key_handles(self, keystore: str) -> set[str]:
        """The handles (props "handle") of every key version, live or soft-deleted, in
        any vault, that keystore `keystore` holds, and of the keys certificate operations
        waiting for a merge hold there: what an HSM must keep."""
        marker = json.dumps({"keystore": keystore})[1:-1]  # as json.dumps writes props
        q = (select(versions.c.props)
             .select_from(versions.join(objects, versions.c.object_id == objects.c.id))
             .where(objects.c.collection == "keys",
                    versions.c.props.contains(marker, autoescape=True)))
        # a certificate operation waiting for a merge holds its key in its state's "pending"
        pending = (select(objects.c.policy)
                   .where(objects.c.collection == "certificates",
                          objects.c.policy.contains(marker, autoescape=True)))
        with self._r.connect() as c:
            found = (_parsed(text) for (text,) in c.execute(q))
            out = {str(p["handle"]) for p in found
                   if p.get("keystore") == keystore and p.get("handle")}
            for (text,) in c.execute(pending):
                key = (json.loads(text).get("pending") or {}).get("key") or {}
                if key.get("keystore") == keystore and key.get("handle"):
                    out.add(str(key["handle"]))
            return out

    def soft_delete(self, vault_id: int, collection: str, name_lc: str, now: int,
                    purge_at: int) -> bool:
        with self._write() as c:
            res = c.execute(
                update(objects)
                .where(self._object_where(vault_id, collection, name_lc),
                       objects.c.deleted_date.is_(None))
                .values(deleted_date=now, scheduled_purge_date=purge_at)
            )
            return res.rowcount == 1

    def recover(self, vault_id: int, collection: str, name_lc: str) -> bool:
        with self._write() as c:
            res = c.execute(
                update(objects)
                .where(self._object_where(vault_id, collection, name_lc),
                       objects.c.deleted_date.is_not(None))
                .values(deleted_date=None, scheduled_purge_date=None)
            )
            return res.rowcount == 1

    def purge(self, vault_id: int, collection: str, name_lc: str) -> bool:
        """Remove a soft-deleted object and all its versions."""
        with self._write() as c:
            row = self._lock_object(c, vault_id, collection, name_lc)
            if row is None or row.deleted_date is None:
                return False
            self._remove(c, [row.id])
            return True

    def purge_expired(self, now: int) -> int:
        """Remove every soft-deleted object whose scheduled purge date has passed."""
        with self._write() as c:
            # Locked, and re-checked by PostgreSQL after any wait: one recovered meanwhile stays.
            ids = list(c.execute(
                select(objects.c.id).where(objects.c.scheduled_purge_date.is_not(None),
                                           objects.c.scheduled_purge_date <= now,
                                           objects.c.vault_id.not_in(_DELETED_VAULT_IDS))
                .with_for_update()
            ).scalars())
            self._remove(c, ids)
            return len(ids)

    @staticmethod
    def _remove(c: Any, ids: Sequence[int]) -> None:
        if ids:
            c.execute(delete(versions).where(versions.c.object_id.in_(ids)))
            c.execute(delete(objects).where(objects.c.id.in_(ids)))

    # ---- policies -------------------------------------------------------------
    def get_policy(self, vault_id: int, collection: str, name_lc: str) -> dict[str, Any] | None:
        with self._r.connect() as c:
            raw = c.execute(
                select(objects.c.policy).where(self._object_where(vault_id, collection, name_lc),
                                               objects.c.deleted_date.is_(None))
            ).scalar()
        return json.loads(raw) if raw else None

    def set_policy(self, vault_id: int, collection: str, name_lc: str,
                   policy: dict[str, Any]) -> bool:
        with self._write() as c:
            res = c.execute(
                update(objects)
                .where(self._object_where(vault_id, collection, name_lc),
                       objects.c.deleted_date.is_(None))
                .values(policy=json.dumps(policy))
            )
            return res.rowcount == 1

    def objects_with_policy(self, collection: str) -> list[PolicyRow]:
        """Every live object of `collection` that has a policy or whose latest version
        expires, with its latest version (policy None: the object has no stored policy)."""
        q = (
            select(*_VERSION_COLS, objects.c.policy, *[c.label(f"v_{c.name}")
                                                       for c in vaults.c])
            .select_from(versions.join(objects, versions.c.object_id == objects.c.id)
                         .join(vaults, objects.c.vault_id == vaults.c.id))
            .where(objects.c.collection == collection,
                   objects.c.policy.is_not(None) | versions.c.exp.is_not(None),
                   objects.c.deleted_date.is_(None), versions.c.seq == _latest_seq,
                   objects.c.vault_id.not_in(_DELETED_VAULT_IDS))
        )
        with self._r.connect() as c:
            rows = c.execute(q).all()
        out = []
        for r in rows:
            vault = VaultRecord(id=r.v_id, name=r.v_name, kind=r.v_kind, sku=r.v_sku,
                                retention_days=r.v_retention_days,
                                purge_protection=bool(r.v_purge_protection), created=r.v_created)
            out.append(PolicyRow(vault, json.loads(r.policy) if r.policy else None,
                                 _version(r)))
        return out

    # ---- events -----------------------------------------------------------------
    def add_event_once(self, e: EventRecord) -> bool:
        """Record an event unless the same (vault, type, object, version) was recorded."""
        with self._write() as c:
            return insert_ignore(c, events, {"vault_id": e.vault_id, "type": e.type,
                                             "object_name": e.object_name,
                                             "version": e.version, "time": e.time})

    def list_events(self, vault_id: int | None = None) -> list[EventRecord]:
        q = select(events).order_by(events.c.id)
        if vault_id is not None:
            q = q.where(events.c.vault_id == vault_id)
        with self._r.connect() as c:
            return [EventRecord(r.vault_id, r.type, r.object_name, r.version, r.time)
                    for r in c.execute(q)]

    def restore(self, vault_id: int, collection: str, name: str,
                records: Iterable[VersionRecord], policy: dict[str, Any] | None = None) -> None:
        """Recreate an object with its versions. NameConflict if the name is taken."""
        self.restore_linked(vault_id, name, [(collection, list(records), policy)])

    # ---- linked objects (a certificate with its key and secret) ---------------------
    # The first collection named is the owner: its object carries the state (policy JSON)
    # and decides whether the others' objects of the same name belong to it.
    def get_object(self, vault_id: int, collection: str, name_lc: str
                   ) -> tuple[str, bool, dict[str, Any] | None] | None:
        """(name, deleted, policy) of an object, with or without versions; None if absent."""
        with self._r.connect() as c:
            row = c.execute(select(objects.c.name, objects.c.deleted_date, objects.c.policy)
                            .where(self._object_where(vault_id, collection, name_lc))).first()
        if row is None:
            return None
        return row.name, row.deleted_date is not None, json.loads(row.policy) if row.policy \
            else None

    def list_versionless(self, vault_id: int, collection: str, after: str | None,
                         limit: int) -> list[tuple[str, dict[str, Any] | None]]:
        """(name, state) of live objects that have no version yet, ordered by name."""
        has = select(versions.c.seq).where(versions.c.object_id == objects.c.id).exists()
        q = (select(objects.c.name, objects.c.policy)
             .where(objects.c.vault_id == vault_id, objects.c.collection == collection,
                    objects.c.deleted_date.is_(None), ~has)
             .order_by(objects.c.name_lc).limit(limit))
        if after is not None:
            q = q.where(objects.c.name_lc > after)
        with self._r.connect() as c:
            return [(r.name, json.loads(r.policy) if r.policy else None) for r in c.execute(q)]

    def add_linked(self, vault_id: int, name: str, collections: Sequence[str],
                   items: dict[str, VersionRecord], state: dict[str, Any] | None,
                   expect_latest: str | None = None,
                   expect_state: Callable[[dict[str, Any] | None], bool] | None = None,
                   also: Also | None = None) -> bool:
        """In one transaction: add `items` (collection → version, all named `name`) and set
        the owner's state. NameConflict(deleted=True) if any object is soft-deleted,
        NameConflict(deleted=False) if another collection holds the name while the owner
        does not. With `expect_latest`, only if that is still the owner's latest version;
        with `expect_state`, only if it holds for the owner's current state. `also`: as
        for add_version, with the owner's version."""
        name_lc = name.lower()
        for _ in range(_RACE_RETRIES):
            try:
                return self._add_linked(vault_id, name, name_lc, collections, items, state,
                                        expect_latest, expect_state, also)
            except _Raced:
                continue  # a concurrent writer created one of the objects: decide again
            except _Declined:
                return False
        raise NameConflict(deleted=False)

    def _add_linked(self, vault_id: int, name: str, name_lc: str, collections: Sequence[str],
                    items: dict[str, VersionRecord], state: dict[str, Any] | None,
                    expect_latest: str | None,
                    expect_state: Callable[[dict[str, Any] | None], bool] | None,
                    also: Also | None) -> bool:
        owner = collections[0]
        with self._write() as c:
            # The owner's row first (created here when absent, so that a concurrent creator
            # of the same name waits on it), then the others: one order for every writer.
            owner_row = self._lock_object(c, vault_id, owner, name_lc)
            created = owner_row is None
            if created:
                if not insert_ignore(c, objects, {"vault_id": vault_id, "collection": owner,
                                                  "name": name, "name_lc": name_lc}):
                    raise _Raced
                owner_row = self._lock_object(c, vault_id, owner, name_lc)
            assert owner_row is not None
            rows = {col: self._lock_object(c, vault_id, col, name_lc)
                    for col in collections[1:]}
            if any(r is not None and r.deleted_date is not None
                   for r in (owner_row, *rows.values())):
                raise NameConflict(deleted=True)
            if created and any(r is not None for r in rows.values()):
                raise NameConflict(deleted=False)  # (rolls back the owner's row)
            state_now = None if created or not owner_row.policy else json.loads(
                owner_row.policy)
            if expect_state is not None and not expect_state(state_now):
                raise _Declined
            if expect_latest is not None and (
                    None if created else self._latest(c, owner_row.id)) != expect_latest:
                raise _Declined
            rows[owner] = owner_row
            stored_name = owner_row.name
            for col in collections:
                row = rows[col]
                if row is None and col in items:
                    if not insert_ignore(c, objects, {"vault_id": vault_id, "collection": col,
                                                      "name": stored_name, "name_lc": name_lc}):
                        raise _Raced  # decided on its absence: roll back and decide again
                    object_id = c.execute(select(objects.c.id).where(
                        self._object_where(vault_id, col, name_lc))).scalar_one()
                elif row is not None:
                    object_id = row.id
                else:
                    continue
                if col in items:
                    items[col].name = stored_name
                    c.execute(insert(versions).values(**_version_values(object_id,
                                                                        items[col])))
                if col == owner and state is not None:
                    c.execute(update(objects).where(objects.c.id == object_id)
                              .values(policy=json.dumps(state)))
            if also is not None and owner in items:
                also(c, items[owner])
        return True

    def set_linked_state(self, vault_id: int, collection: str, name_lc: str,
                         state: dict[str, Any], expect: Callable[[dict[str, Any] | None], bool]
                         ) -> bool:
        """Replace a live object's state if `expect(current state)` holds, in one write
        transaction (compare-and-set); an object without versions whose new state has no
        `policy` is removed. False if absent, deleted or the expectation fails."""
        with self._write() as c:
            row = self._lock_object(c, vault_id, collection, name_lc)
            if row is None or row.deleted_date is not None or not expect(
                    json.loads(row.policy) if row.policy else None):
                return False
            has_versions = c.execute(select(versions.c.seq).where(
                versions.c.object_id == row.id).limit(1)).first() is not None
            if not has_versions and state.get("policy") is None:
                self._remove(c, [row.id])
            else:
                c.execute(update(objects).where(objects.c.id == row.id)
                          .values(policy=json.dumps(state)))
            return True

    def _linked_ids(self, c: Connection, vault_id: int, collections: Sequence[str],
                    name_lc: str, deleted: bool) -> list[int] | None:
        """Object ids of the linked objects in the given state; None unless the owner is."""
        ids = []
        for i, col in enumerate(collections):
            row = self._lock_object(c, vault_id, col, name_lc)
            ok = row is not None and (row.deleted_date is not None) == deleted
            if i == 0 and not ok:
                return None
            if ok:
                assert row is not None
                ids.append(row.id)
        return ids

    def soft_delete_linked(self, vault_id: int, collections: Sequence[str], name_lc: str,
                           now: int, purge_at: int) -> bool:
        with self._write() as c:
            ids = self._linked_ids(c, vault_id, collections, name_lc, deleted=False)
            if ids is None:
                return False
            c.execute(update(objects).where(objects.c.id.in_(ids))
                      .values(deleted_date=now, scheduled_purge_date=purge_at))
            return True

    def recover_linked(self, vault_id: int, collections: Sequence[str], name_lc: str) -> bool:
        with self._write() as c:
            ids = self._linked_ids(c, vault_id, collections, name_lc, deleted=True)
            if ids is None:
                return False
            c.execute(update(objects).where(objects.c.id.in_(ids))
                      .values(deleted_date=None, scheduled_purge_date=None))
            return True

    def purge_linked(self, vault_id: int, collections: Sequence[str], name_lc: str) -> bool:
        with self._write() as c:
            ids = self._linked_ids(c, vault_id, collections, name_lc, deleted=True)
            if ids is None:
                return False
            self._remove(c, ids)
            return True

    def restore_linked(self, vault_id: int, name: str,
                       groups: Sequence[tuple[str, Sequence[VersionRecord],
                                              dict[str, Any] | None]]) -> None:
        """Recreate linked objects with their versions in one transaction; NameConflict if
        any name is taken."""
        name_lc = name.lower()
        with self._write() as c:
            for col, recs, policy in groups:
                # The name's uniqueness is the database's: a concurrent restore of the same
                # name inserts nothing here, and everything rolls back.
                if not insert_ignore(c, objects, {
                        "vault_id": vault_id, "collection": col, "name": name,
                        "name_lc": name_lc, "policy": json.dumps(policy) if policy else None}):
                    row = c.execute(select(objects.c.deleted_date).where(
                        self._object_where(vault_id, col, name_lc))).first()
                    raise NameConflict(deleted=row is not None and row.deleted_date is not None)
                object_id = c.execute(select(objects.c.id).where(
                    self._object_where(vault_id, col, name_lc))).scalar_one()
                for v in recs:
                    c.execute(insert(versions).values(**_version_values(object_id, v)))

    # ---- principals -----------------------------------------------------------
    def add_principal(self, p: PrincipalRecord, if_absent: bool = False) -> None:
        if if_absent and self.get_principal(object_id=p.object_id) is not None:
            return  # nothing written: a read-only database still starts
        with self._write(IDENTITIES) as c:
            if if_absent:
                insert_ignore(c, principals, p.__dict__)
            else:
                c.execute(insert(principals).values(**p.__dict__))

    def get_principal(self, *, object_id: str | None = None,
                      client_id: str | None = None) -> PrincipalRecord | None:
        q = select(principals)
        q = q.where(principals.c.object_id == object_id) if object_id is not None \
            else q.where(principals.c.client_id == client_id)
        with self._r.connect() as c:
            row = c.execute(q).first()
        return PrincipalRecord(**row._mapping) if row else None

    def list_principals(self) -> list[PrincipalRecord]:
        with self._r.connect() as c:
            return [PrincipalRecord(**r._mapping)
                    for r in c.execute(select(principals).order_by(principals.c.display_name))]

    def delete_principal(self, object_id: str) -> bool:
        with self._write(IDENTITIES) as c:
            c.execute(delete(principal_credentials)
                      .where(principal_credentials.c.object_id == object_id))
            return c.execute(delete(principals)
                             .where(principals.c.object_id == object_id)).rowcount == 1

    def add_credential(self, cred: CredentialRecord) -> None:
        with self._write(IDENTITIES) as c:
            c.execute(insert(principal_credentials).values(**cred.__dict__))

    def list_credentials(self, object_id: str) -> list[CredentialRecord]:
        with self._r.connect() as c:
            return [CredentialRecord(**r._mapping) for r in c.execute(
                select(principal_credentials)
                .where(principal_credentials.c.object_id == object_id)
                .order_by(principal_credentials.c.created))]

    def delete_credential(self, object_id: str, credential_id: str) -> bool:
        with self._write(IDENTITIES) as c:
            return c.execute(delete(principal_credentials).where(
                principal_credentials.c.object_id == object_id,
                principal_credentials.c.id == credential_id)).rowcount == 1

    # ---- role assignments -------------------------------------------------------
    def add_role_assignment(self, r: RoleAssignmentRecord) -> None:
        with self._write(ACCESS) as c:
            c.execute(insert(role_assignments).values(**r.__dict__))

    def role_assignments(self, principal_id: str | None = None) -> list[RoleAssignmentRecord]:
        """Assignments (of one principal, on the hot path memoised while nothing changed)."""
        if principal_id is not None:
            rows = self._all_cached((ACCESS,), _ASSIGNMENTS_OF, {"principal_id": principal_id})
            return [RoleAssignmentRecord(*r) for r in rows]
        q = select(role_assignments).order_by(role_assignments.c.created)
        if principal_id is not None:
            q = q.where(role_assignments.c.principal_id == principal_id)
        with self._r.connect() as c:
            return [RoleAssignmentRecord(**r._mapping) for r in c.execute(q)]

    def delete_role_assignment(self, assignment_id: str) -> bool:
        with self._write(ACCESS) as c:
            return c.execute(delete(role_assignments)
                             .where(role_assignments.c.id == assignment_id)).rowcount == 1

    def get_role_assignment(self, assignment_id: str) -> RoleAssignmentRecord | None:
        with self._r.connect() as c:
            row = c.execute(select(role_assignments)
                            .where(role_assignments.c.id == assignment_id)).first()
        return RoleAssignmentRecord(**row._mapping) if row else None

    def create_role_assignment(self, r: RoleAssignmentRecord, custom_role: bool
                               ) -> tuple[str, RoleAssignmentRecord | None]:
        """Add `r` unless its name or its content (principal, role, scope) is taken, in one
        write transaction. Returns ("created", r), ("same", existing) when the name holds the
        same content, ("name_taken", existing), ("duplicate", existing) when another name
        holds the content, or ("no_definition", None) when `custom_role` and no stored
        definition has that id (so a concurrent definition delete cannot leave it dangling)."""
        # An assignment never changes: one found by its name answers without a write (the
        # start-up's idempotent assignments then leave a read-only database alone).
        taken = _assignment_taken(r, self.get_role_assignment(r.id),
                                  lambda: self.role_assignments(r.principal_id))
        if taken is not None:
            return taken
        with self._write(ACCESS) as c:  # the generation row first: creators queue on it
            row = c.execute(select(role_assignments)
                            .where(role_assignments.c.id == r.id)).first()
            taken = _assignment_taken(
                r, RoleAssignmentRecord(**row._mapping) if row is not None else None,
                lambda: [RoleAssignmentRecord(**x._mapping) for x in c.execute(
                    select(role_assignments)
                    .where(role_assignments.c.principal_id == r.principal_id))])
            if taken is not None:
                return taken
            if custom_role and c.execute(
                    select(role_definitions.c.id)
                    .where(role_definitions.c.id == r.role_definition_id)).first() is None:
                return "no_definition", None
            c.execute(insert(role_assignments).values(**r.__dict__))
            return "created", r

    # ---- custom role definitions --------------------------------------------------
    def role_definitions(self) -> tuple[RoleDefinitionRecord, ...]:
        """Every custom role definition (on the hot path: memoised while nothing changed)."""
        rows = self._all_cached((ACCESS,), _ROLE_DEFINITIONS, {})
        hit: tuple[Any, tuple[RoleDefinitionRecord, ...]] | None = getattr(
            self._local, "definitions", None)
        if hit is not None and hit[0] is rows:
            return hit[1]
        records = tuple(_role_definition(r) for r in rows)
        self._local.definitions = (rows, records)
        return records

    def put_role_definition(self, d: RoleDefinitionRecord, max_count: int
                            ) -> tuple[str, RoleDefinitionRecord | None]:
        """Create or replace a custom role definition in one write transaction (an update
        keeps `created`). Returns ("created" | "updated", stored), ("limit", None) when
        `max_count` definitions exist, or ("name_taken", other) when another definition has
        the role name (case-insensitive)."""
        with self._write(ACCESS) as c:
            rows = [_role_definition(r) for r in c.execute(select(role_definitions))]
            other = next((r for r in rows if r.id != d.id and d.role_name
                          and r.role_name.lower() == d.role_name.lower()), None)
            if other is not None:
                return "name_taken", other
            current = next((r for r in rows if r.id == d.id), None)
            values = {"role_name": d.role_name, "description": d.description,
                      "permissions": json.dumps(list(d.permissions)),
                      "assignable_scopes": json.dumps(list(d.assignable_scopes))}
            if current is None:
                if len(rows) >= max_count:
                    return "limit", None
                c.execute(insert(role_definitions).values(id=d.id, created=d.created, **values))
                return "created", d
            c.execute(update(role_definitions).where(role_definitions.c.id == d.id)
                      .values(**values))
            return "updated", RoleDefinitionRecord(d.id, d.role_name, d.description,
                                                   d.permissions, d.assignable_scopes,
                                                   current.created)

    def delete_role_definition(self, definition_id: str
                               ) -> tuple[str, RoleDefinitionRecord | None]:
        """Delete a custom role definition unless an assignment uses it, in one write
        transaction: ("deleted", record), ("missing", None) or ("assigned", record)."""
        with self._write(ACCESS) as c:
            row = c.execute(select(role_definitions)
                            .where(role_definitions.c.id == definition_id)).first()
            if row is None:
                return "missing", None
            record = _role_definition(row)
            if c.execute(select(role_assignments.c.id).where(
                    func.lower(role_assignments.c.role_definition_id) == definition_id.lower()
            ).limit(1)).first() is not None:
                return "assigned", record
            c.execute(delete(role_definitions).where(role_definitions.c.id == definition_id))
            return "deleted", record
