"""Storage for a vault's certificate issuers and certificate contacts.

One round trip per read, one transaction per write; read-modify-write changes (replace,
update, delete-and-return) happen inside one write transaction, so concurrent workers
queue and none is lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from openkeyvault.storage.db import Engines
from openkeyvault.storage.records import IssuerRecord
from openkeyvault.storage.schema import certificate_contacts, certificate_issuers
from openkeyvault.storage.store import Store

_I = certificate_issuers


def _issuer(row: Any) -> IssuerRecord:
    return IssuerRecord(
        name=row.name, provider=row.provider, enabled=bool(row.enabled), created=row.created,
        updated=row.updated, account_id=row.account_id, sealed=row.sealed,
        key_version=row.key_version,
        org_details=json.loads(row.org_details) if row.org_details else None,
    )


def _values(rec: IssuerRecord) -> dict[str, Any]:
    return {
        "name": rec.name, "provider": rec.provider, "enabled": rec.enabled,
        "created": rec.created, "updated": rec.updated, "account_id": rec.account_id,
        "sealed": rec.sealed, "key_version": rec.key_version,
        "org_details": json.dumps(rec.org_details) if rec.org_details is not None else None,
    }


class CertificateIssuerStore(Store):
    def __init__(self, engines: Engines) -> None:
        super().__init__(engines)

    @staticmethod
    def _where(vault_id: int, name_lc: str) -> Any:
        return (_I.c.vault_id == vault_id) & (_I.c.name_lc == name_lc)

    # ---- issuers ------------------------------------------------------------------
    def get(self, vault_id: int, name_lc: str) -> IssuerRecord | None:
        with self._r.connect() as c:
            row = c.execute(select(_I).where(self._where(vault_id, name_lc))).first()
        return _issuer(row) if row else None

    def list_issuers(self, vault_id: int, after: str | None, limit: int) -> list[IssuerRecord]:
        """Issuers ordered by lower-case name, after `after` (a lower-case name)."""
        q = select(_I).where(_I.c.vault_id == vault_id).order_by(_I.c.name_lc).limit(limit)
        if after is not None:
            q = q.where(_I.c.name_lc > after)
        with self._r.connect() as c:
            return [_issuer(r) for r in c.execute(q)]

    def put(self, vault_id: int, rec: IssuerRecord, max_count: int
            ) -> tuple[str, IssuerRecord | None]:
        """Create or replace an issuer (a replacement keeps the stored name's spelling and
        `created`): ("created" | "replaced", stored), or ("limit", None) when the vault
        already has `max_count` issuers and this one is new."""
        name_lc = rec.name.lower()
        with self._write() as c:
            row = c.execute(select(_I).where(self._where(vault_id, name_lc))).first()
            if row is None:
                count = c.execute(select(func.count()).select_from(_I)
                                  .where(_I.c.vault_id == vault_id)).scalar() or 0
                if count >= max_count:
                    return "limit", None
                c.execute(insert(_I).values(vault_id=vault_id, name_lc=name_lc, **_values(rec)))
                return "created", rec
            stored = IssuerRecord(**{**rec.__dict__, "name": row.name, "created": row.created})
            c.execute(update(_I).where(self._where(vault_id, name_lc)).values(**_values(stored)))
            return "replaced", stored

    def change(self, vault_id: int, name_lc: str,
               fn: Callable[[IssuerRecord], IssuerRecord]) -> IssuerRecord | None:
        """Replace an issuer with `fn(current)` in one write transaction; None if absent."""
        with self._write() as c:
            row = c.execute(select(_I).where(self._where(vault_id, name_lc))).first()
            if row is None:
                return None
            new = fn(_issuer(row))
            c.execute(update(_I).where(self._where(vault_id, name_lc)).values(**_values(new)))
            return new

    def delete(self, vault_id: int, name_lc: str) -> IssuerRecord | None:
        """Remove an issuer and return it as it was; None if absent."""
        with self._write() as c:
            row = c.execute(select(_I).where(self._where(vault_id, name_lc))).first()
            if row is None:
                return None
            c.execute(delete(_I).where(self._where(vault_id, name_lc)))
            return _issuer(row)

    # ---- contacts -----------------------------------------------------------------
    def get_contacts(self, vault_id: int) -> list[dict[str, str]] | None:
        with self._r.connect() as c:
            raw = c.execute(select(certificate_contacts.c.contacts)
                            .where(certificate_contacts.c.vault_id == vault_id)).scalar()
        return json.loads(raw) if raw else None

    def set_contacts(self, vault_id: int, contacts: list[dict[str, str]], now: int) -> None:
        text = json.dumps(contacts)
        with self._write() as c:
            done = c.execute(update(certificate_contacts)
                             .where(certificate_contacts.c.vault_id == vault_id)
                             .values(contacts=text, updated=now)).rowcount
            if not done:
                c.execute(insert(certificate_contacts).values(vault_id=vault_id, contacts=text,
                                                              updated=now))

    def delete_contacts(self, vault_id: int) -> list[dict[str, str]] | None:
        """Remove the vault's contacts and return them as they were; None if there were none."""
        with self._write() as c:
            raw = c.execute(select(certificate_contacts.c.contacts)
                            .where(certificate_contacts.c.vault_id == vault_id)).scalar()
            if raw is None:
                return None
            c.execute(delete(certificate_contacts)
                      .where(certificate_contacts.c.vault_id == vault_id))
            return list(json.loads(raw))
