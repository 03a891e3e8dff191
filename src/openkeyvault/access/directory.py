"""The deployment's directory: principals and their credentials.

A client secret is shown once, at creation. It is `ID~RANDOM`: the credential's id
(16 bytes, base64url) and 240 random bits. What is stored is an HMAC-SHA256 of it under
the deployment's secret key (itself kept behind the barrier), sealed by the barrier. A
check reads the one credential the secret names and computes one keyed hash, whether the
client id is unknown, a managed identity, or a principal with any number of secrets, so
neither the answer nor the work tells them apart. Secrets stored before this format
(scrypt) still work; each is re-stored as a keyed hash the first time it is used.
Certificates (public certificate and thumbprints) and federated credentials (issuer,
subject, audience) are sealed the same way, so a row edited in the database does not open.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from openkeyvault.access.principals import Principal
from openkeyvault.crypto import kdf
from openkeyvault.crypto.certinfo import CertificateError, certificate_info
from openkeyvault.crypto.encoding import b64url_decode, b64url_encode
from openkeyvault.ops.clock import Clock
from openkeyvault.storage.barrier import SYSTEM, Barrier, BarrierError
from openkeyvault.storage.identities import IdentityStore
from openkeyvault.storage.records import CredentialRecord, PrincipalRecord
from openkeyvault.storage.repository import Repository

DEFAULT_SECRET_DAYS = 365
MAX_SECRET_DAYS = 2 * 365
MAX_NAME_CHARS = 256
DEFAULT_FEDERATED_AUDIENCE = "api://AzureADTokenExchange"
MAX_FEDERATED_PER_PRINCIPAL = 20
MAX_CERTIFICATES_PER_PRINCIPAL = 20
MAX_CLAIM_CHARS = 600
# A client secret: base64url(credential id bytes) "~" base64url(240 random bits).
ID_SEPARATOR = "~"
_SECRET_ID_CHARS = 22
_SECRET_RANDOM_BYTES = 30
_SECRET_RANDOM_CHARS = 40
MAX_SECRET_CHARS = 256
# What the checks run against when the client id or the credential named is not there.
_NO_OBJECT = "00000000-0000-0000-0000-000000000000"
_NO_CREDENTIAL = "00000000-0000-0000-0000-000000000000"
_NO_CREDENTIAL_CONTEXT = b"okv/credential/none"
_B64URL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_KEYED_IDS_MAX = 100_000


class DirectoryError(ValueError):
    """A refused directory change (message safe to show)."""


@dataclass(frozen=True)
class NewSecret:
    credential_id: str
    client_secret: str
    expires: int


@dataclass(frozen=True)
class CertificateCredential:
    id: str
    object_id: str
    sha1: str  # lower-case hex thumbprints of the DER certificate
    sha256: str
    not_before: int
    expires: int
    subject: str
    public_pem: str
    algorithms: tuple[str, ...]


@dataclass(frozen=True)
class FederatedCredential:
    id: str
    object_id: str
    issuer: str
    subject: str
    audience: str


def _context(object_id: str, credential_id: str) -> bytes:
    return f"okv/credential/{object_id}/{credential_id}".encode()


def _mac_context(object_id: str, credential_id: str) -> bytes:
    return f"okv/client-secret/v2/{object_id}/{credential_id}".encode()


def _legacy_mac_context(object_id: str) -> bytes:
    """An earlier-format secret names no credential: its keyed hash is bound to the
    principal, so one hash checks it against all of the principal's upgraded secrets."""
    return f"okv/client-secret/legacy/{object_id}".encode()


def _b64url_chars(value: str) -> bool:
    return all(c in _B64URL_CHARS for c in value)


def secret_credential_id(client_secret: str) -> str | None:
    """The credential id a client secret of the current format names, else None."""
    head, sep, tail = client_secret.partition(ID_SEPARATOR)
    if not sep or len(head) != _SECRET_ID_CHARS or len(tail) != _SECRET_RANDOM_CHARS \
            or not _b64url_chars(head) or not _b64url_chars(tail):
        return None
    try:
        return str(uuid.UUID(bytes=b64url_decode(head)))
    except ValueError:
        return None


def _scrypt_matches(payload: dict[str, object], secret: str) -> bool:
    salt, digest = payload.get("salt"), payload.get("hash")
    return isinstance(salt, str) and isinstance(digest, str) and kdf.secret_matches(
        secret, b64url_decode(salt), b64url_decode(digest))


def _legacy_shape(client_secret: str) -> bool:
    """Whether a secret looks like one made before the current format (40 base64url)."""
    return len(client_secret) == _SECRET_RANDOM_CHARS and _b64url_chars(client_secret)


class Directory:
    def __init__(self, repo: Repository, barrier: Barrier, clock: Clock, tenant_id: str,
                 identities: IdentityStore | None = None, *, secret_key: bytes) -> None:
        if len(secret_key) != kdf.KEYED_HASH_KEY_BYTES:
            raise ValueError("the client secret key must be 32 bytes")
        self._repo = repo
        self._barrier = barrier
        self._clock = clock
        self.tenant_id = tenant_id
        self._identities = identities
        self._secret_key = secret_key
        self._no_credential: tuple[int, bytes] | None = None  # a sealed stand-in, made once
        self._stand_in_mac = secrets.token_bytes(32)
        # Credential ids known to hold a current-format secret (that never changes), so
        # an earlier-format attempt need not open them.
        self._keyed_ids: set[str] = set()

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
        credential = uuid.uuid4()
        while b64url_encode(credential.bytes)[0] in "-_":
            # A secret that starts with "-" reads as an option on a command line
            # (`az login -p ...`): draw another id (the id is random either way).
            credential = uuid.uuid4()
        credential_id = str(credential)
        secret = (b64url_encode(credential.bytes) + ID_SEPARATOR
                  + secrets.token_urlsafe(_SECRET_RANDOM_BYTES))
        mac = kdf.keyed_hash(self._secret_key, _mac_context(object_id, credential_id), secret)
        now = int(self._clock.now())
        payload = json.dumps({"mac": b64url_encode(mac)})
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
        return self.remove_credential(object_id, credential_id, "secret")

    def authenticate_secret(self, client_id: str, client_secret: str) -> Principal | None:
        """The principal whose unexpired secret this is, or None (never says which part failed).

        The same work whatever is wrong (unknown client id, a managed identity, another
        principal's credential, a wrong, malformed or expired secret): one principal read,
        one credential read, one barrier open and one keyed hash. Only a secret of the
        earlier format costs one scrypt per stored earlier-format secret of that principal
        not yet upgraded (see `_legacy_matches`)."""
        store = self._store()
        record = store.principal_by_client_id(client_id)
        if record is not None and record.kind != "servicePrincipal":
            record = None  # a managed identity has no secret
        secret = client_secret[:MAX_SECRET_CHARS]
        credential_id = secret_credential_id(secret)
        object_id = record.object_id if record is not None else _NO_OBJECT
        if credential_id is None and _legacy_shape(secret):
            matched = self._legacy_matches(object_id, secret)
        else:
            matched = self._keyed_matches(object_id, credential_id, secret)
        if record is None or not matched or len(client_secret) > MAX_SECRET_CHARS:
            return None
        return Principal(record.object_id, record.tenant_id, record.client_id)

    def _store(self) -> IdentityStore:
        if self._identities is None:
            raise DirectoryError("Client secrets cannot be checked here.")
        return self._identities

    def _open_payload(self, object_id: str, cred: CredentialRecord | None
                      ) -> dict[str, object] | None:
        """A credential's opened payload; without one, the sealed stand-in is opened instead
        (the same barrier work)."""
        if cred is None:
            if self._no_credential is None:
                self._no_credential = self._barrier.seal(
                    SYSTEM, _NO_CREDENTIAL_CONTEXT,
                    json.dumps({"mac": b64url_encode(self._stand_in_mac)}).encode())
            version, sealed, context = (*self._no_credential, _NO_CREDENTIAL_CONTEXT)
        else:
            version, sealed = cred.key_version, cred.sealed
            context = _context(object_id, cred.id)
        try:
            payload = json.loads(self._barrier.open(SYSTEM, version, context, sealed))
        except (BarrierError, ValueError):
            return None
        return payload if isinstance(payload, dict) and cred is not None else None

    def _keyed_matches(self, object_id: str, credential_id: str | None, secret: str) -> bool:
        cred = self._store().credential(credential_id or _NO_CREDENTIAL)
        if cred is not None and (cred.object_id != object_id or cred.kind != "secret"
                                 or cred.expires <= int(self._clock.now())):
            cred = None
        payload = self._open_payload(object_id, cred)
        expected = self._stand_in_mac
        stored = payload.get("mac") if payload is not None else None
        if isinstance(stored, str):
            try:
                expected = b64url_decode(stored)
            except ValueError:
                stored = None
        actual = kdf.keyed_hash(self._secret_key,
                                _mac_context(object_id, credential_id or _NO_CREDENTIAL), secret)
        return kdf.digests_match(actual, expected) and isinstance(stored, str)

    def _legacy_matches(self, object_id: str, secret: str) -> bool:
        """Check a secret of the earlier format (no credential id in it) against the
        principal's earlier-format secrets: one keyed hash against those already upgraded,
        and scrypt against each not yet upgraded; a match by scrypt upgrades that one."""
        mac = kdf.keyed_hash(self._secret_key, _legacy_mac_context(object_id), secret)
        now = int(self._clock.now())
        matched, opened = False, 0
        store = self._store()
        for credential_id, expires in store.secret_credentials(object_id):
            if expires <= now or credential_id in self._keyed_ids:
                continue
            cred = store.credential(credential_id)
            if cred is None or cred.object_id != object_id:
                continue
            payload = self._open_payload(object_id, cred)
            opened += 1
            if payload is None:
                continue
            if "mac" in payload:
                if len(self._keyed_ids) >= _KEYED_IDS_MAX:
                    self._keyed_ids.clear()
                self._keyed_ids.add(cred.id)
            elif isinstance(payload.get("legacy_mac"), str):
                matched |= kdf.digests_match(mac, b64url_decode(str(payload["legacy_mac"])))
            elif _scrypt_matches(payload, secret):
                matched = True
                self._upgrade(object_id, cred, mac)
        if opened == 0:
            self._open_payload(object_id, None)
        return matched

    def _upgrade(self, object_id: str, cred: CredentialRecord, mac: bytes) -> None:
        """Re-store an earlier-format secret as a keyed hash (compare-and-set: a concurrent
        upgrade of the same row by another worker wins, with the same result)."""
        version, sealed = self._barrier.seal(SYSTEM, _context(object_id, cred.id),
                                             json.dumps({"legacy_mac": b64url_encode(mac)}
                                                        ).encode())
        self._store().replace_credential_sealed(object_id, cred.id, cred.sealed, version, sealed)

    # ---- external identities ----------------------------------------------------
    def create_external(self, display_name: str, issuer_name: str,
                        subject: str) -> PrincipalRecord:
        """A principal that a trusted issuer's subject (its token's `oid`, else `sub`) acts
        as on the data plane. It has no credential of its own."""
        if self._identities is None:
            raise DirectoryError("External identities are not available here.")
        if all(i.name != issuer_name for i in self._identities.trusted_issuers()):
            raise DirectoryError(f"No trusted issuer named '{issuer_name[:64]}'.")
        _check_claim("subject", subject)
        if self._identities.external_identity(issuer_name, subject) is not None:
            raise DirectoryError("That subject of that issuer already maps to a principal.")
        record = self._new(display_name, "servicePrincipal")
        if not self._identities.add_external_identity(issuer_name, subject, record.object_id):
            self._repo.delete_principal(record.object_id)
            raise DirectoryError("That subject of that issuer already maps to a principal.")
        return record

    def external_identities(self, object_id: str) -> list[tuple[str, str]]:
        """(issuer name, subject) pairs that act as this principal."""
        if self._identities is None:
            return []
        return self._identities.external_identities_of(object_id)

    # ---- certificates and federated credentials ---------------------------------
    def _principal_of_kind(self, object_id: str, kinds: tuple[str, ...],
                           what: str) -> PrincipalRecord:
        found = self._repo.get_principal(object_id=object_id)
        if found is None:
            raise DirectoryError("No such principal.")
        if found.kind not in kinds:
            raise DirectoryError(f"This kind of principal cannot have {what}.")
        return found

    def _add_sealed(self, object_id: str, kind: str, hint: str, expires: int,
                    payload: dict[str, object]) -> str:
        credential_id = str(uuid.uuid4())
        key_version, sealed = self._barrier.seal(SYSTEM, _context(object_id, credential_id),
                                                 json.dumps(payload).encode())
        self._repo.add_credential(CredentialRecord(
            id=credential_id, object_id=object_id, kind=kind, hint=hint, expires=expires,
            created=int(self._clock.now()), sealed=sealed, key_version=key_version,
        ))
        return credential_id

    def _opened(self, object_id: str, kind: str) -> list[tuple[CredentialRecord,
                                                               dict[str, object]]]:
        out = []
        for cred in self._repo.list_credentials(object_id):
            if cred.kind != kind:
                continue
            try:
                payload = json.loads(self._barrier.open(
                    SYSTEM, cred.key_version, _context(object_id, cred.id), cred.sealed))
            except (BarrierError, ValueError):
                continue  # a row that does not open is no credential
            out.append((cred, payload))
        return out

    def add_certificate(self, object_id: str, pem: bytes,
                        days: int | None = None) -> CertificateCredential:
        """Register a certificate's public part; it expires with the certificate, or after
        `days` if that is sooner."""
        self._principal_of_kind(object_id, ("servicePrincipal",), "certificates")
        try:
            info = certificate_info(pem)
        except CertificateError as exc:
            raise DirectoryError(str(exc)) from None
        now = int(self._clock.now())
        if days is not None and not 1 <= days <= MAX_SECRET_DAYS:
            raise DirectoryError(f"A certificate's lifetime must be 1-{MAX_SECRET_DAYS} days.")
        expires = info.not_after if days is None else min(info.not_after, now + days * 86_400)
        if expires <= now:
            raise DirectoryError("The certificate has expired.")
        existing = self.certificates(object_id)
        if any(c.sha256 == info.sha256 for c in existing):
            raise DirectoryError("This certificate is already registered on the principal.")
        if len(existing) >= MAX_CERTIFICATES_PER_PRINCIPAL:
            raise DirectoryError(f"A principal has at most {MAX_CERTIFICATES_PER_PRINCIPAL} "
                                 "certificates.")
        payload: dict[str, object] = {
            "cert": info.pem, "sha1": info.sha1, "sha256": info.sha256,
            "not_before": info.not_before, "subject": info.subject,
            "public_pem": info.public_pem, "algorithms": list(info.algorithms)}
        credential_id = self._add_sealed(object_id, "certificate", info.sha1[:8], expires,
                                         payload)
        return CertificateCredential(credential_id, object_id, info.sha1, info.sha256,
                                     info.not_before, expires, info.subject, info.public_pem,
                                     info.algorithms)

    def certificates(self, object_id: str) -> list[CertificateCredential]:
        return [CertificateCredential(
            cred.id, object_id, str(p["sha1"]), str(p["sha256"]), int(str(p["not_before"])),
            cred.expires, str(p["subject"]), str(p["public_pem"]),
            tuple(str(a) for a in p["algorithms"]) if isinstance(p["algorithms"], list) else ())
            for cred, p in self._opened(object_id, "certificate")]

    def add_federated(self, object_id: str, issuer: str, subject: str,
                      audience: str = DEFAULT_FEDERATED_AUDIENCE) -> FederatedCredential:
        """Let tokens of `issuer` for `subject` and `audience` act as this principal, as
        client assertions at the token endpoint (workload identity federation)."""
        self._principal_of_kind(object_id, ("servicePrincipal", "managedIdentity"),
                                "federated credentials")
        parts = urlsplit(issuer)
        if parts.scheme != "https" or not parts.netloc or len(issuer) > MAX_CLAIM_CHARS:
            raise DirectoryError(f"The issuer must be an https URL of at most "
                                 f"{MAX_CLAIM_CHARS} characters.")
        _check_claim("subject", subject)
        _check_claim("audience", audience)
        existing = self.federated(object_id)
        if any(f.issuer == issuer and f.subject == subject for f in existing):
            raise DirectoryError("The principal already has a federated credential for this "
                                 "issuer and subject.")
        if len(existing) >= MAX_FEDERATED_PER_PRINCIPAL:
            raise DirectoryError(f"A principal has at most {MAX_FEDERATED_PER_PRINCIPAL} "
                                 "federated credentials.")
        credential_id = self._add_sealed(object_id, "federated", "", 0, {
            "issuer": issuer, "subject": subject, "audience": audience})
        return FederatedCredential(credential_id, object_id, issuer, subject, audience)

    def federated(self, object_id: str) -> list[FederatedCredential]:
        return [FederatedCredential(cred.id, object_id, str(p["issuer"]), str(p["subject"]),
                                    str(p["audience"]))
                for cred, p in self._opened(object_id, "federated")]

    def remove_credential(self, object_id: str, key: str, kind: str) -> bool:
        """Remove one credential of `kind` by its id (or, for a certificate, a thumbprint
        in hex)."""
        wanted = key.lower().replace(":", "")
        for cred in self._repo.list_credentials(object_id):
            if cred.kind != kind:
                continue
            if cred.id == key:
                return self._repo.delete_credential(object_id, cred.id)
        if kind == "certificate":
            for c in self.certificates(object_id):
                if wanted in (c.sha1, c.sha256):
                    return self._repo.delete_credential(object_id, c.id)
        return False


def _check_claim(what: str, value: str) -> None:
    if not value or len(value) > MAX_CLAIM_CHARS or not value.isprintable():
        raise DirectoryError(f"The {what} must be 1-{MAX_CLAIM_CHARS} printable characters.")
