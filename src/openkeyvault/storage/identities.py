"""Storage for the token service's trust: signing keys, trusted issuers, external identities,
used client assertions, and the principal checks on the token hot path.

Reads on the hot path (is this principal still there, which signing keys verify, which
issuers are trusted) are memoised by the FastReader until anything is written anywhere,
so a change made by the CLI or another worker applies from the next request. The reads
that check a client secret are not memoised (see "client secrets on the token path").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from openkeyvault.storage.db import Engines
from openkeyvault.storage.readcache import IDENTITIES
from openkeyvault.storage.records import (
    CredentialRecord,
    PrincipalRecord,
    SigningKeyRecord,
    TrustedIssuerRecord,
)
from openkeyvault.storage.schema import (
    external_identities,
    principal_credentials,
    principals,
    token_signing_keys,
    trusted_issuers,
    used_assertions,
)
from openkeyvault.storage.store import Store

_PRINCIPAL_EXISTS = select(principals.c.object_id).where(
    principals.c.object_id == bindparam("object_id"))
_SIGNING_KEYS = select(token_signing_keys.c.kid, token_signing_keys.c.created,
                       token_signing_keys.c.retired, token_signing_keys.c.public_jwk
                       ).order_by(token_signing_keys.c.created, token_signing_keys.c.kid)
_TRUSTED_ISSUERS = select(trusted_issuers).order_by(trusted_issuers.c.name)
_PRINCIPAL_BY_CLIENT_ID = select(principals).where(
    principals.c.client_id == bindparam("client_id"))
_CREDENTIAL = select(principal_credentials).where(
    principal_credentials.c.id == bindparam("credential_id"))
_SECRETS_OF = select(principal_credentials.c.id, principal_credentials.c.expires).where(
    principal_credentials.c.object_id == bindparam("object_id"),
    principal_credentials.c.kind == "secret").order_by(principal_credentials.c.created)
_EXTERNAL_IDENTITY = select(external_identities.c.object_id).where(
    external_identities.c.issuer_name == bindparam("issuer_name"),
    external_identities.c.subject == bindparam("subject"))


class IssuerConflict(Exception):
    """An issuer with that name or issuer URL is already trusted."""


class IdentityStore(Store):
    def __init__(self, engines: Engines) -> None:
        super().__init__(engines)
        # Records converted from the memoised rows, reused while the rows are the same object
        # (the memo hands out the same tuple until storage changes).
        self._converted: dict[int, tuple[tuple[Any, ...], tuple[Any, ...]]] = {}

    def _records(self, statement: Any, convert: Any) -> tuple[Any, ...]:
        rows = self._memo_all(statement, {})
        hit = self._converted.get(id(statement))
        if hit is not None and hit[0] is rows:
            return hit[1]
        records = tuple(convert(r) for r in rows)
        self._converted[id(statement)] = (rows, records)
        return records

    def _memo_all(self, statement: Any, params: dict[str, Any]) -> tuple[Any, ...]:
        return self._all_cached((IDENTITIES,), statement, params)

    def _memo_first(self, statement: Any, params: dict[str, Any]) -> Any:
        return self._first_cached((IDENTITIES,), statement, params)

    # ---- principals on the hot path ---------------------------------------------
    def principal_exists(self, object_id: str) -> bool:
        return self._memo_first(_PRINCIPAL_EXISTS, {"object_id": object_id}) is not None

    # ---- client secrets on the token path ---------------------------------------
    # Not memoised: a flood of distinct client ids must not churn the hot-path memo.

    def principal_by_client_id(self, client_id: str) -> PrincipalRecord | None:
        row = self._first(_PRINCIPAL_BY_CLIENT_ID, {"client_id": client_id})
        return PrincipalRecord(**row._asdict()) if row is not None else None

    def credential(self, credential_id: str) -> CredentialRecord | None:
        row = self._first(_CREDENTIAL, {"credential_id": credential_id})
        return CredentialRecord(**row._asdict()) if row is not None else None

    def secret_credentials(self, object_id: str) -> list[tuple[str, int]]:
        """(id, expires) of a principal's client secrets, oldest first."""
        return [(r.id, r.expires)
                for r in self._all(_SECRETS_OF, {"object_id": object_id})]

    def replace_credential_sealed(self, object_id: str, credential_id: str, old: bytes,
                                  key_version: int, sealed: bytes) -> bool:
        """Swap a credential's sealed payload if it is still `old` (compare-and-set)."""
        with self._write(IDENTITIES) as c:
            return c.execute(update(principal_credentials).where(
                principal_credentials.c.object_id == object_id,
                principal_credentials.c.id == credential_id,
                principal_credentials.c.sealed == old,
            ).values(sealed=sealed, key_version=key_version)).rowcount == 1

    # ---- signing keys -----------------------------------------------------------
    def signing_keys(self) -> tuple[SigningKeyRecord, ...]:
        """Every stored signing key, oldest first (memoised while storage is unchanged)."""
        return self._records(
            _SIGNING_KEYS, lambda r: SigningKeyRecord(r.kid, r.created, r.retired, r.public_jwk))

    def signing_key_sealed(self, kid: str) -> tuple[int, bytes] | None:
        """(barrier key version, sealed private key) of one signing key."""
        with self._r.connect() as c:
            row = c.execute(select(token_signing_keys.c.key_version, token_signing_keys.c.sealed)
                            .where(token_signing_keys.c.kid == kid)).first()
        return (row.key_version, row.sealed) if row else None

    def add_signing_key(self, record: SigningKeyRecord, key_version: int, sealed: bytes, *,
                        if_none: bool = False, if_current_created_before: int | None = None,
                        drop_retired: bool = False) -> bool:
        """Make `record` the current key and retire the previous one, in one transaction.

        `if_none`: only if there is no key at all. `if_current_created_before`: only if the
        current key was created before that time (so that several workers rotating on a
        schedule rotate once). `drop_retired`: delete every other key at once.
        """
        with self._write(IDENTITIES) as c:
            current = c.execute(select(token_signing_keys.c.kid, token_signing_keys.c.created)
                                .where(token_signing_keys.c.retired.is_(None))).all()
            if if_none and (current or c.execute(
                    select(token_signing_keys.c.kid).limit(1)).first() is not None):
                return False
            if if_current_created_before is not None and any(
                    r.created >= if_current_created_before for r in current):
                return False
            if drop_retired:
                c.execute(delete(token_signing_keys))
            else:
                c.execute(update(token_signing_keys)
                          .where(token_signing_keys.c.retired.is_(None))
                          .values(retired=record.created))
            c.execute(insert(token_signing_keys).values(
                kid=record.kid, created=record.created, retired=None,
                public_jwk=record.public_jwk, sealed=sealed, key_version=key_version))
        return True

    def delete_signing_keys_retired_before(self, when: int) -> int:
        with self._write(IDENTITIES) as c:
            return c.execute(delete(token_signing_keys).where(
                token_signing_keys.c.retired.is_not(None),
                token_signing_keys.c.retired < when)).rowcount

    # ---- trusted issuers ----------------------------------------------------------
    def trusted_issuers(self) -> tuple[TrustedIssuerRecord, ...]:
        return self._records(_TRUSTED_ISSUERS, lambda r: TrustedIssuerRecord(
            r.name, r.issuer, r.jwks_url, r.jwks_file, r.audience, r.created))

    def add_trusted_issuer(self, record: TrustedIssuerRecord) -> None:
        try:
            with self._write(IDENTITIES) as c:
                c.execute(insert(trusted_issuers).values(**record.__dict__))
        except IntegrityError:
            raise IssuerConflict() from None

    def delete_trusted_issuer(self, name: str) -> bool:
        """Remove an issuer and the external identities mapped through it."""
        with self._write(IDENTITIES) as c:
            c.execute(delete(external_identities)
                      .where(external_identities.c.issuer_name == name))
            return c.execute(delete(trusted_issuers)
                             .where(trusted_issuers.c.name == name)).rowcount == 1

    # ---- external identities ----------------------------------------------------
    def add_external_identity(self, issuer_name: str, subject: str, object_id: str) -> bool:
        """Map an issuer's subject to a principal; False if that subject is mapped already."""
        try:
            with self._write(IDENTITIES) as c:
                c.execute(insert(external_identities).values(
                    issuer_name=issuer_name, subject=subject, object_id=object_id))
        except IntegrityError:
            return False
        return True

    def external_identity(self, issuer_name: str, subject: str) -> str | None:
        """The object id an issuer's subject maps to (memoised)."""
        row = self._memo_first(_EXTERNAL_IDENTITY, {"issuer_name": issuer_name, "subject": subject})
        return row.object_id if row is not None else None

    def external_identities_of(self, object_id: str) -> list[tuple[str, str]]:
        with self._r.connect() as c:
            return [(r.issuer_name, r.subject) for r in c.execute(
                select(external_identities.c.issuer_name, external_identities.c.subject)
                .where(external_identities.c.object_id == object_id))]

    # ---- used client assertions -------------------------------------------------
    def use_assertion(self, client_id: str, jti: str, expires: int, now: int) -> bool:
        """Record a client assertion id; False if it was already used (and not yet expired)."""
        try:
            with self._write() as c:
                c.execute(delete(used_assertions).where(
                    used_assertions.c.client_id == client_id, used_assertions.c.jti == jti,
                    used_assertions.c.expires < now))
                c.execute(insert(used_assertions).values(client_id=client_id, jti=jti,
                                                         expires=expires))
        except IntegrityError:
            return False
        return True

    def purge_used_assertions(self, now: int) -> int:
        with self._write() as c:
            return c.execute(delete(used_assertions)
                             .where(used_assertions.c.expires < now)).rowcount
