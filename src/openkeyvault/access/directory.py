"""The deployment's directory: service principals and their client secrets.

A client secret is shown once, at creation. What is stored is its scrypt hash
and salt, sealed by the barrier; checking a secret is constant-time.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass

from openkeyvault.access.principals import Principal
from openkeyvault.crypto.encoding import b64url_decode, b64url_encode
from openkeyvault.crypto.kdf import hash_secret, secret_matches
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.barrier import SYSTEM, Barrier, BarrierError
from openkeyvault.storage.records import CredentialRecord, PrincipalRecord
from openkeyvault.storage.repository import Repository

DEFAULT_SECRET_DAYS = 365
MAX_SECRET_DAYS = 2 * 365
MAX_NAME_CHARS = 256


class DirectoryError(ValueError):
    """A refused directory change (message safe to show)."""


@dataclass(frozen=True)
class NewSecret:
    credential_id: str
    client_secret: str
    expires: int


def _context(object_id: str, credential_id: str) -> bytes:
    return f"okv/credential/{object_id}/{credential_id}".encode()


class Directory:
    def __init__(self, repo: Repository, barrier: Barrier, clock: Clock, tenant_id: str) -> None:
        self._repo = repo
        self._barrier = barrier
        self._clock = clock
        self.tenant_id = tenant_id

    def create(self, display_name: str, days: int = DEFAULT_SECRET_DAYS
               ) -> tuple[PrincipalRecord, NewSecret]:
        """A service principal and its first client secret."""
        record = self._new(display_name, "servicePrincipal")
        return record, self.add_secret(record.object_id, days)

    def create_managed_identity(self, display_name: str) -> PrincipalRecord:
        """A managed identity: no secret; tokens come from the managed-identity endpoints of
        this deployment for the identity the caller names."""
        return self._new(display_name, "managedIdentity")

    def _new(self, display_name: str, kind: str) -> PrincipalRecord:
        if not display_name or len(display_name) > MAX_NAME_CHARS:
            raise DirectoryError(f"A principal's name must be 1-{MAX_NAME_CHARS} characters.")
        if any(p.display_name == display_name for p in self._repo.list_principals()):
            raise DirectoryError(f"A principal named '{display_name}' already exists.")
        record = PrincipalRecord(
            object_id=str(uuid.uuid4()), client_id=str(uuid.uuid4()), tenant_id=self.tenant_id,
            display_name=display_name, kind=kind, created=int(self._clock.now()),
        )
        self._repo.add_principal(record)
        return record

    def lookup(self, *, client_id: str | None = None, object_id: str | None = None,
               name: str | None = None) -> PrincipalRecord | None:
        """A principal by exactly one kind of identifier."""
        if client_id is not None:
            return self._repo.get_principal(client_id=client_id)
        if object_id is not None:
            return self._repo.get_principal(object_id=object_id)
        named = [p for p in self._repo.list_principals() if p.display_name == name]
        return named[0] if len(named) == 1 else None

    def find(self, key: str) -> PrincipalRecord | None:
        """A principal by object id, client id or (unique) display name."""
        found = self._repo.get_principal(object_id=key) or self._repo.get_principal(client_id=key)
        if found is not None:
            return found
        named = [p for p in self._repo.list_principals() if p.display_name == key]
        return named[0] if len(named) == 1 else None

    def principals(self) -> list[PrincipalRecord]:
        return self._repo.list_principals()

    def delete(self, object_id: str) -> bool:
        return self._repo.delete_principal(object_id)

    def add_secret(self, object_id: str, days: int = DEFAULT_SECRET_DAYS) -> NewSecret:
        if not 1 <= days <= MAX_SECRET_DAYS:
            raise DirectoryError(f"A secret's lifetime must be 1-{MAX_SECRET_DAYS} days.")
        found = self._repo.get_principal(object_id=object_id)
        if found is None:
            raise DirectoryError("No such principal.")
        if found.kind != "servicePrincipal":
            raise DirectoryError("Only service principals have client secrets.")
        secret = secrets.token_urlsafe(30)
        salt, digest = hash_secret(secret)
        credential_id = str(uuid.uuid4())
        now = int(self._clock.now())
        payload = json.dumps({"salt": b64url_encode(salt), "hash": b64url_encode(digest)})
        key_version, sealed = self._barrier.seal(SYSTEM, _context(object_id, credential_id),
                                                 payload.encode())
        expires = now + days * 86_400
        self._repo.add_credential(CredentialRecord(
            id=credential_id, object_id=object_id, kind="secret", hint=secret[:3],
            expires=expires, created=now, sealed=sealed, key_version=key_version,
        ))
        return NewSecret(credential_id, secret, expires)

    def credentials(self, object_id: str) -> list[CredentialRecord]:
        return self._repo.list_credentials(object_id)

    def remove_secret(self, object_id: str, credential_id: str) -> bool:
        return self._repo.delete_credential(object_id, credential_id)

    def authenticate_secret(self, client_id: str, client_secret: str) -> Principal | None:
        """The principal whose unexpired secret this is, or None (never says which part failed)."""
        record = self._repo.get_principal(client_id=client_id)
        if record is None or len(client_secret) > 256:
            hash_secret(client_secret[:256])  # same cost either way
            return None
        now = int(self._clock.now())
        matched = False
        for cred in self._repo.list_credentials(record.object_id):
            if cred.kind != "secret" or cred.expires <= now:
                continue
            try:
                stored = json.loads(self._barrier.open(
                    SYSTEM, cred.key_version, _context(record.object_id, cred.id), cred.sealed))
            except BarrierError:
                continue
            if secret_matches(client_secret, b64url_decode(stored["salt"]),
                              b64url_decode(stored["hash"])):
                matched = True
        if not matched:
            return None
        return Principal(record.object_id, record.tenant_id, record.client_id)
