"""Machinery for the authorization matrix: real principals, their SDK clients, the objects
every operation needs, and one runner per data-plane operation.

The expected decisions are not here: they are written out in
test_authorization_matrix.py from Azure's role definitions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.certificates import (
    CertificateClient,
    CertificateContact,
    CertificatePolicy,
    KeyVaultCertificate,
)
from azure.keyvault.keys import (
    KeyClient,
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
)
from azure.keyvault.keys.crypto import (
    CryptographyClient,
    EncryptionAlgorithm,
    KeyWrapAlgorithm,
    SignatureAlgorithm,
)
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import NoEncryption, pkcs12
from cryptography.x509.oid import NameOID

from openkeyvault.deployment import Deployment
from tests.sdk.keys_support import b64u, b64u_decode, local_encrypt, public_key, sdk_jwk
from tests.support.server import DevServer

POLL = {"_polling_interval": 0.05}
SECRET_VALUE = "matrix-secret-value"
PLAINTEXT = b"matrix plaintext"
WRAPPED_KEY = bytes(range(32))
DIGEST = hashlib.sha256(b"matrix").digest()
# certificates: a small self-signed EC policy (fast to issue), the vault's contacts
CERT_POLICY = CertificatePolicy(issuer_name="Self", subject="CN=matrix", key_type="EC",
                                key_curve_name="P-256", key_usage=["digitalSignature"])
CONTACTS = [CertificateContact(email="matrix@example.com", name="Matrix")]
ISSUER_PROVIDER = "Test"


def pfx_to_import() -> bytes:
    """A self-signed EC certificate with its key, as a PFX without a password."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "matrix-import")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    return pkcs12.serialize_key_and_certificates(b"m", key, cert, None, NoEncryption())


class CachedCredential:
    """One token per principal, fetched once from the real token endpoint and reused by every
    client of that principal."""

    def __init__(self, inner: TokenCredential) -> None:
        self._inner = inner
        self._token: AccessToken | None = None

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        if self._token is None or self._token.expires_on < time.time() + 300:
            self._token = self._inner.get_token(*scopes, **kwargs)
        return self._token


@dataclass
class Actor:
    """One principal's SDK clients (one transport shared by everyone: pooled connections)."""

    secrets: SecretClient
    keys: KeyClient
    certificates: CertificateClient
    credential: TokenCredential
    crypto_key_id: str
    transport: RequestsTransport
    _crypto: CryptographyClient | None = None

    @classmethod
    def build(cls, server: DevServer, credential: TokenCredential, transport: RequestsTransport,
              crypto_key_id: str = "") -> Actor:
        common: dict[str, Any] = {"verify_challenge_resource": False, "transport": transport}
        return cls(SecretClient(server.url, credential, **common),
                   KeyClient(server.url, credential, **common),
                   CertificateClient(server.url, credential, **common), credential,
                   crypto_key_id, transport)

    @property
    def crypto(self) -> CryptographyClient:
        """A client for the target key's first version (made on first use)."""
        if self._crypto is None:
            self._crypto = CryptographyClient(self.crypto_key_id, self.credential,
                                              verify_challenge_resource=False,
                                              transport=self.transport)
        return self._crypto


@dataclass
class Cell:
    """One call of the matrix: who, which operation, on which object."""

    world: World
    actor: Actor
    op: str
    collection: str
    name: str  # the object the call addresses (unused by collection-wide operations)
    index: int  # unique per cell: makes every write distinguishable
    blob: bytes = b""  # restore: the backup to restore


@dataclass
class World:
    """Everything the matrix works on, prepared with the dev identity (Key Vault Administrator).

    Same names in both collections, so an assignment on one secret must not cover the key of
    the same name: `target` (the object of every object-level operation), `other` (another
    object of the collection), `gone` (soft-deleted), `restorable` (backed up, then purged).
    Consuming operations that Azure allows get `fresh` objects of their own.
    """

    server: DevServer
    deployment: Deployment
    run: str
    transport: RequestsTransport
    admin: Actor
    key_v0: str = ""  # the target key's first version (RSA 2048): every crypto call uses it
    ciphertext: bytes = b""
    wrapped: bytes = b""
    signature: bytes = b""
    blobs: dict[str, bytes] = field(default_factory=dict)  # collection → restorable's backup
    pfx: bytes = b""  # a certificate to import
    fresh: dict[tuple[str, str, str], str] = field(default_factory=dict)  # cell → object
    fresh_blobs: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    actors: dict[tuple[str | None, str, str], Actor] = field(default_factory=dict)
    _cleanup: list[Callable[[], object]] = field(default_factory=list)
    _state: dict[tuple[str, str], object] = field(default_factory=dict)

    # ---- names -----------------------------------------------------------------------------
    def name(self, role: str) -> str:
        return f"azm{self.run}-{role}"

    @property
    def target(self) -> str:
        return self.name("target")

    @property
    def other(self) -> str:
        return self.name("other")

    @property
    def gone(self) -> str:
        return self.name("gone")

    @property
    def restorable(self) -> str:
        return self.name("restorable")

    def named(self, role: str, collection: str) -> str:
        """`target`, `other`, `gone`, `restorable` of a collection: certificates have names
        of their own (a certificate cannot share its name with a secret or a key)."""
        return self.name(f"cert-{role}" if collection == "certificates" else role)

    @property
    def issuer(self) -> str:
        """The certificate issuer every issuer operation addresses."""
        return self.name("issuer")

    # ---- admin helpers -----------------------------------------------------------------------
    def make(self, collection: str, name: str) -> None:
        if collection == "secrets":
            self.admin.secrets.set_secret(name, SECRET_VALUE)
        elif collection == "keys":
            self.admin.keys.create_ec_key(name, curve="P-256")
        else:
            made = self.admin.certificates.begin_create_certificate(name, CERT_POLICY,
                                                                     **POLL).result()
            assert isinstance(made, KeyVaultCertificate), made

    def delete(self, collection: str, name: str) -> None:
        if collection == "secrets":
            self.admin.secrets.begin_delete_secret(name, **POLL).wait()
        elif collection == "keys":
            self.admin.keys.begin_delete_key(name, **POLL).wait()
        else:
            self.admin.certificates.begin_delete_certificate(name, **POLL).wait()

    def purge(self, collection: str, name: str) -> None:
        if collection == "secrets":
            self.admin.secrets.purge_deleted_secret(name)
        elif collection == "keys":
            self.admin.keys.purge_deleted_key(name)
        else:
            self.admin.certificates.purge_deleted_certificate(name)

    def recover(self, collection: str, name: str) -> None:
        if collection == "secrets":
            self.admin.secrets.begin_recover_deleted_secret(name, **POLL).wait()
        elif collection == "keys":
            self.admin.keys.begin_recover_deleted_key(name, **POLL).wait()
        else:
            self.admin.certificates.begin_recover_deleted_certificate(name, **POLL).wait()

    def backup(self, collection: str, name: str) -> bytes:
        if collection == "secrets":
            return self.admin.secrets.backup_secret(name)
        if collection == "keys":
            return self.admin.keys.backup_key(name)
        return self.admin.certificates.backup_certificate(name)

    def make_issuer(self, name: str) -> None:
        self.admin.certificates.create_issuer(name, provider=ISSUER_PROVIDER)

    def backed_up_then_purged(self, collection: str, name: str) -> bytes:
        self.make(collection, name)
        blob = self.backup(collection, name)
        self.delete(collection, name)
        self.purge(collection, name)
        return blob

    # ---- what the admin sees (for "nothing changed") -------------------------------------------
    def latest(self, collection: str, name: str) -> tuple[Any, ...] | None:
        """The live object's latest version, its last update and its tags (None: no live
        object of that name)."""
        try:
            if collection == "secrets":
                props: Any = self.admin.secrets.get_secret(name).properties
            elif collection == "keys":
                props = self.admin.keys.get_key(name).properties
            else:
                props = self.admin.certificates.get_certificate(name).properties
        except ResourceNotFoundError:
            return None
        return props.version, props.enabled, props.updated_on, tuple(sorted(
            (props.tags or {}).items()))

    def deleted(self, collection: str, name: str) -> tuple[Any, ...] | None:
        """The deleted object of that name (its latest version and deletion date), or None."""
        try:
            if collection == "secrets":
                found: Any = self.admin.secrets.get_deleted_secret(name)
            elif collection == "keys":
                found = self.admin.keys.get_deleted_key(name)
            else:
                cert = self.admin.certificates.get_deleted_certificate(name)
                return cert.properties.version, cert.deleted_on
        except ResourceNotFoundError:
            return None
        return found.properties.version, found.deleted_date

    def policy(self, collection: str, name: str) -> tuple[Any, ...]:
        if collection == "certificates":
            c = self.admin.certificates.get_certificate_policy(name)
            return c.subject, c.validity_in_months, c.updated_on
        p = self.admin.keys.get_key_rotation_policy(name)
        return (p.expires_in, p.updated_on, tuple(
            (a.action, a.time_after_create, a.time_before_expiry) for a in p.lifetime_actions))

    def issuers(self) -> tuple[Any, ...]:
        """Every issuer of the vault with its provider and enabled flag."""
        found = []
        for props in self.admin.certificates.list_properties_of_issuers():
            issuer = self.admin.certificates.get_issuer(props.name)
            found.append((issuer.name, issuer.provider, issuer.enabled, issuer.updated_on))
        return tuple(sorted(found))

    def contacts(self) -> tuple[Any, ...] | None:
        try:
            listed = self.admin.certificates.get_contacts()
        except ResourceNotFoundError:
            return None
        return tuple((c.email, c.name, c.phone) for c in listed)

    def reset_contacts(self) -> None:
        self.admin.certificates.set_contacts(CONTACTS)

    def state(self, probe: str, collection: str) -> object:
        """The admin's view of what `probe` covers, fetched now: the target's latest version
        (a write adds a version or updates it; a delete removes it), its rotation policy,
        the soft-deleted object (recover and purge remove it), or the purged name (restore
        brings it back)."""
        if probe == "target":
            return self.latest(collection, self.named("target", collection))
        if probe == "policy":
            return self.policy(collection, self.named("target", collection))
        if probe == "gone":
            return self.deleted(collection, self.named("gone", collection))
        if probe == "issuers":
            return self.issuers()
        if probe == "contacts":
            return self.contacts()
        return self.latest(collection, self.named("restorable", collection))

    def known_state(self, probe: str, collection: str) -> object:
        """The last state seen (fetched when unknown)."""
        if (probe, collection) not in self._state:
            self._state[probe, collection] = self.state(probe, collection)
        return self._state[probe, collection]

    def remember(self, probe: str, collection: str, value: object) -> None:
        self._state[probe, collection] = value

    def forget(self, collection: str) -> None:
        for k in [k for k in self._state if k[1] == collection]:
            del self._state[k]

    # ---- principals ---------------------------------------------------------------------------
    def principal(self, label: str, assignments: Iterable[tuple[str, str]]) -> tuple[str, Any]:
        """A service principal holding `assignments` ((role GUID, scope) pairs): its object id
        and a credential for it that goes to the real token endpoint."""
        record, secret = self.deployment.directory.create(f"azm{self.run}-{label}")
        self._cleanup.append(functools.partial(self.deployment.directory.delete,
                                               record.object_id))
        for role, scope in assignments:
            assigned = self.deployment.rbac.assign(record.object_id, role, scope)
            self._cleanup.append(functools.partial(self.deployment.rbac.remove, assigned.id))
        credential = ClientSecretCredential(
            record.tenant_id, record.client_id, secret.client_secret,
            authority=self.server.url, disable_instance_discovery=True,
            connection_verify=self.server.ca,
        )
        return record.object_id, credential

    def add_actors(self, wanted: Iterable[tuple[tuple[str | None, str, str], str,
                                                list[tuple[str, str]]]]) -> None:
        """One principal per entry (key, label, assignments), each with its token already
        fetched; a few at a time, since both ends hash the client secret."""
        scope = f"https://vault.localhost:{self.server.port}/.default"

        def add(entry: tuple[tuple[str | None, str, str], str, list[tuple[str, str]]]) -> None:
            key, label, assignments = entry
            credential = CachedCredential(self.principal(label, assignments)[1])
            credential.get_token(scope)
            self.actors[key] = Actor.build(self.server, credential, self.transport, self.key_v0)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(add, wanted))

    def close(self) -> None:
        for undo in reversed(self._cleanup):
            with contextlib.suppress(Exception):  # best effort: the server goes away anyway
                undo()


def open_world(server: DevServer, deployment: Deployment) -> World:
    """The admin's clients and the shared objects (targets, deleted, backed up)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = server.ca
    transport = RequestsTransport(session=session, session_owner=False,
                                  connection_verify=server.ca)
    admin = Actor.build(server, ManagedIdentityCredential(), transport)
    world = World(server, deployment, uuid.uuid4().hex[:6], transport, admin)
    for collection in ("secrets", "keys", "certificates"):
        world.make(collection, world.named("other", collection))
        gone = world.named("gone", collection)
        world.make(collection, gone)
        world.delete(collection, gone)
        world.blobs[collection] = world.backed_up_then_purged(
            collection, world.named("restorable", collection))
    world.make("certificates", world.named("target", "certificates"))
    world.make_issuer(world.issuer)
    world.reset_contacts()
    world.pfx = pfx_to_import()
    admin.secrets.set_secret(world.target, SECRET_VALUE)
    key = admin.keys.create_rsa_key(world.target, size=2048)
    assert key.id is not None and key.key is not None
    world.key_v0 = key.id
    pub = public_key(key.key)
    world.ciphertext = local_encrypt(pub, "RSA-OAEP-256", PLAINTEXT)
    world.wrapped = local_encrypt(pub, "RSA-OAEP-256", WRAPPED_KEY)
    admin.crypto_key_id = key.id
    world.signature = admin.crypto.sign(SignatureAlgorithm.rs256, DIGEST).signature
    admin.keys.update_key_rotation_policy(world.target, KeyRotationPolicy(
        expires_in="P90D", lifetime_actions=[KeyRotationLifetimeAction(
            KeyRotationPolicyAction.notify, time_before_expiry="P30D")]))
    return world


# ---- one runner per operation ------------------------------------------------------------------
def _post(client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A call through the client's own pipeline (its credential and api-version), for the
    operations the SDK would otherwise do locally with the public key."""
    response = client.send_request(HttpRequest("POST", path, json=body))
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def _first_page(pager: Any) -> list[Any]:
    return list(next(pager.by_page()))


def _v0(cell: Cell) -> tuple[str, str]:
    name, version = cell.world.key_v0.rstrip("/").split("/")[-2:]
    return name, version


def _secrets(cell: Cell) -> SecretClient:
    return cell.actor.secrets


def _keys(cell: Cell) -> KeyClient:
    return cell.actor.keys


def _secret_get(cell: Cell) -> None:
    assert _secrets(cell).get_secret(cell.name).value == SECRET_VALUE


def _secret_list(cell: Cell) -> None:
    assert all(p.name for p in _first_page(_secrets(cell).list_properties_of_secrets()))


def _secret_list_versions(cell: Cell) -> None:
    found = list(_secrets(cell).list_properties_of_secret_versions(cell.name))
    assert found and {p.name for p in found} == {cell.name}


def _secret_list_deleted(cell: Cell) -> None:
    assert all(p.name for p in _first_page(_secrets(cell).list_deleted_secrets()))


def _secret_get_deleted(cell: Cell) -> None:
    assert _secrets(cell).get_deleted_secret(cell.name).name == cell.name


def _secret_set(cell: Cell) -> None:
    assert _secrets(cell).set_secret(cell.name, SECRET_VALUE).name == cell.name


def _secret_update(cell: Cell) -> None:
    tags = {"cell": str(cell.index)}
    assert _secrets(cell).update_secret_properties(cell.name, tags=tags).tags == tags


def _secret_delete(cell: Cell) -> None:
    deleted = _secrets(cell).begin_delete_secret(cell.name, **POLL).result()
    assert deleted.name == cell.name and deleted.deleted_date is not None


def _secret_recover(cell: Cell) -> None:
    assert _secrets(cell).begin_recover_deleted_secret(cell.name, **POLL).result().name \
        == cell.name


def _secret_purge(cell: Cell) -> None:
    _secrets(cell).purge_deleted_secret(cell.name)
    assert cell.world.deleted("secrets", cell.name) is None


def _secret_backup(cell: Cell) -> None:
    assert len(_secrets(cell).backup_secret(cell.name)) > 0


def _secret_restore(cell: Cell) -> None:
    assert _secrets(cell).restore_secret_backup(cell.blob).name == cell.name


def _key_get(cell: Cell) -> None:
    assert _keys(cell).get_key(cell.name).name == cell.name


def _key_list(cell: Cell) -> None:
    assert all(p.name for p in _first_page(_keys(cell).list_properties_of_keys()))


def _key_list_versions(cell: Cell) -> None:
    found = list(_keys(cell).list_properties_of_key_versions(cell.name))
    assert found and {p.name for p in found} == {cell.name}


def _key_list_deleted(cell: Cell) -> None:
    assert all(p.name for p in _first_page(_keys(cell).list_deleted_keys()))


def _key_get_deleted(cell: Cell) -> None:
    assert _keys(cell).get_deleted_key(cell.name).name == cell.name


def _key_create(cell: Cell) -> None:
    assert _keys(cell).create_ec_key(cell.name, curve="P-256").name == cell.name


def _key_import(cell: Cell) -> None:
    jwk = sdk_jwk(ec.generate_private_key(ec.SECP256R1()))
    assert _keys(cell).import_key(cell.name, jwk).name == cell.name


def _key_update(cell: Cell) -> None:
    tags = {"cell": str(cell.index)}
    assert _keys(cell).update_key_properties(cell.name, tags=tags).properties.tags == tags


def _key_delete(cell: Cell) -> None:
    deleted = _keys(cell).begin_delete_key(cell.name, **POLL).result()
    assert deleted.name == cell.name and deleted.deleted_date is not None


def _key_recover(cell: Cell) -> None:
    assert _keys(cell).begin_recover_deleted_key(cell.name, **POLL).result().name == cell.name


def _key_purge(cell: Cell) -> None:
    _keys(cell).purge_deleted_key(cell.name)
    assert cell.world.deleted("keys", cell.name) is None


def _key_backup(cell: Cell) -> None:
    assert len(_keys(cell).backup_key(cell.name)) > 0


def _key_restore(cell: Cell) -> None:
    assert _keys(cell).restore_key_backup(cell.blob).name == cell.name


def _key_encrypt(cell: Cell) -> None:
    name, version = _v0(cell)
    out = _post(cell.actor.crypto, f"/keys/{name}/{version}/encrypt",
                {"alg": "RSA-OAEP-256", "value": b64u(PLAINTEXT)})
    assert len(b64u_decode(out["value"])) == 256


def _key_decrypt(cell: Cell) -> None:
    result = cell.actor.crypto.decrypt(EncryptionAlgorithm.rsa_oaep_256, cell.world.ciphertext)
    assert result.plaintext == PLAINTEXT


def _key_wrap(cell: Cell) -> None:
    name, version = _v0(cell)
    out = _post(cell.actor.crypto, f"/keys/{name}/{version}/wrapkey",
                {"alg": "RSA-OAEP-256", "value": b64u(WRAPPED_KEY)})
    assert len(b64u_decode(out["value"])) == 256


def _key_unwrap(cell: Cell) -> None:
    result = cell.actor.crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, cell.world.wrapped)
    assert result.key == WRAPPED_KEY


def _key_sign(cell: Cell) -> None:
    assert len(cell.actor.crypto.sign(SignatureAlgorithm.rs256, DIGEST).signature) == 256


def _key_verify(cell: Cell) -> None:
    name, version = _v0(cell)
    out = _post(cell.actor.crypto, f"/keys/{name}/{version}/verify",
                {"alg": "RS256", "digest": b64u(DIGEST), "value": b64u(cell.world.signature)})
    assert out["value"] is True


def _key_release(cell: Cell) -> None:
    """The target key is not exportable: a caller the role lets through is told so (400),
    after the authorization; a refused one gets the matrix's 403."""
    name, version = _v0(cell)
    response = cell.actor.crypto.send_request(HttpRequest(
        "POST", f"/keys/{name}/{version}/release", json={"target": "a.b.c"}))
    if response.status_code == 403:
        response.raise_for_status()
    assert response.status_code == 400, response.text()
    assert "not exportable" in response.json()["error"]["message"]


def _key_rotate(cell: Cell) -> None:
    assert _keys(cell).rotate_key(cell.name).name == cell.name


def _key_get_rotation_policy(cell: Cell) -> None:
    assert _keys(cell).get_key_rotation_policy(cell.name).lifetime_actions


def _key_set_rotation_policy(cell: Cell) -> None:
    expires = f"P{100 + cell.index}D"
    policy = KeyRotationPolicy(expires_in=expires, lifetime_actions=[KeyRotationLifetimeAction(
        KeyRotationPolicyAction.notify, time_before_expiry="P30D")])
    assert _keys(cell).update_key_rotation_policy(cell.name, policy).expires_in == expires


def _key_random_bytes(cell: Cell) -> None:
    assert len(_keys(cell).get_random_bytes(16)) == 16


def _certs(cell: Cell) -> CertificateClient:
    return cell.actor.certificates


def _cert_get(cell: Cell) -> None:
    assert _certs(cell).get_certificate(cell.name).name == cell.name


def _cert_list(cell: Cell) -> None:
    assert all(p.name for p in _first_page(_certs(cell).list_properties_of_certificates()))


def _cert_versions(cell: Cell) -> None:
    found = list(_certs(cell).list_properties_of_certificate_versions(cell.name))
    assert found and {p.name for p in found} == {cell.name}


def _cert_create(cell: Cell) -> None:
    made = _certs(cell).begin_create_certificate(cell.name, CERT_POLICY, **POLL).result()
    assert isinstance(made, KeyVaultCertificate) and made.name == cell.name


def _cert_import(cell: Cell) -> None:
    assert _certs(cell).import_certificate(cell.name, cell.world.pfx).name == cell.name


def _cert_update(cell: Cell) -> None:
    tags = {"cell": str(cell.index)}
    assert _certs(cell).update_certificate_properties(cell.name, tags=tags).properties.tags \
        == tags


def _cert_policy_get(cell: Cell) -> None:
    assert _certs(cell).get_certificate_policy(cell.name).subject


def _cert_policy_set(cell: Cell) -> None:
    subject = f"CN=cell-{cell.index}"
    policy = CertificatePolicy(issuer_name="Self", subject=subject, key_type="EC",
                               key_curve_name="P-256")
    assert _certs(cell).update_certificate_policy(cell.name, policy).subject == subject


def _cert_delete(cell: Cell) -> None:
    deleted = _certs(cell).begin_delete_certificate(cell.name, **POLL).result()
    assert deleted.name == cell.name and deleted.deleted_on is not None


def _cert_get_deleted(cell: Cell) -> None:
    assert _certs(cell).get_deleted_certificate(cell.name).name == cell.name


def _cert_list_deleted(cell: Cell) -> None:
    assert all(p.name for p in _first_page(_certs(cell).list_deleted_certificates()))


def _cert_recover(cell: Cell) -> None:
    assert _certs(cell).begin_recover_deleted_certificate(cell.name, **POLL).result().name \
        == cell.name


def _cert_purge(cell: Cell) -> None:
    _certs(cell).purge_deleted_certificate(cell.name)
    assert cell.world.deleted("certificates", cell.name) is None


def _cert_backup(cell: Cell) -> None:
    assert len(_certs(cell).backup_certificate(cell.name)) > 0


def _cert_restore(cell: Cell) -> None:
    assert _certs(cell).restore_certificate_backup(cell.blob).name == cell.name


def _cert_get_issuer(cell: Cell) -> None:
    assert _certs(cell).get_issuer(cell.world.issuer).provider == ISSUER_PROVIDER


def _cert_list_issuers(cell: Cell) -> None:
    assert all(p.name for p in _first_page(_certs(cell).list_properties_of_issuers()))


def _cert_set_issuer(cell: Cell) -> None:
    name = cell.world.name(f"iss-{cell.index}")
    assert _certs(cell).create_issuer(name, provider=ISSUER_PROVIDER).name == name


def _cert_delete_issuer(cell: Cell) -> None:
    # `cell.name` is a fresh issuer of its own when Azure allows the call, else the shared one
    assert _certs(cell).delete_issuer(cell.name).name == cell.name


def _cert_get_contacts(cell: Cell) -> None:
    assert [c.email for c in _certs(cell).get_contacts()] == [CONTACTS[0].email]


def _cert_set_contacts(cell: Cell) -> None:
    email = f"cell-{cell.index}@example.com"
    try:
        saved = _certs(cell).set_contacts([CertificateContact(email=email)])
        assert [c.email for c in saved] == [email]
    finally:
        if cell.world.contacts() != tuple((c.email, c.name, c.phone) for c in CONTACTS):
            cell.world.reset_contacts()  # every other cell sees the world's contacts


def _cert_delete_contacts(cell: Cell) -> None:
    try:
        deleted = _certs(cell).delete_contacts()
        assert [c.email for c in deleted] == [CONTACTS[0].email]
    finally:
        if cell.world.contacts() is None:
            cell.world.reset_contacts()


RUNNERS: dict[str, Callable[[Cell], None]] = {
    "secrets.get": _secret_get,
    "secrets.list": _secret_list,
    "secrets.list_versions": _secret_list_versions,
    "secrets.list_deleted": _secret_list_deleted,
    "secrets.get_deleted": _secret_get_deleted,
    "secrets.set": _secret_set,
    "secrets.update": _secret_update,
    "secrets.delete": _secret_delete,
    "secrets.recover": _secret_recover,
    "secrets.purge": _secret_purge,
    "secrets.backup": _secret_backup,
    "secrets.restore": _secret_restore,
    "keys.get": _key_get,
    "keys.list": _key_list,
    "keys.list_versions": _key_list_versions,
    "keys.list_deleted": _key_list_deleted,
    "keys.get_deleted": _key_get_deleted,
    "keys.create": _key_create,
    "keys.import": _key_import,
    "keys.update": _key_update,
    "keys.delete": _key_delete,
    "keys.recover": _key_recover,
    "keys.purge": _key_purge,
    "keys.backup": _key_backup,
    "keys.restore": _key_restore,
    "keys.encrypt": _key_encrypt,
    "keys.decrypt": _key_decrypt,
    "keys.wrap": _key_wrap,
    "keys.unwrap": _key_unwrap,
    "keys.sign": _key_sign,
    "keys.verify": _key_verify,
    "keys.release": _key_release,
    "keys.rotate": _key_rotate,
    "keys.get_rotation_policy": _key_get_rotation_policy,
    "keys.set_rotation_policy": _key_set_rotation_policy,
    "keys.random_bytes": _key_random_bytes,
    "certificates.get": _cert_get,
    "certificates.list": _cert_list,
    "certificates.versions": _cert_versions,
    "certificates.create": _cert_create,
    "certificates.import": _cert_import,
    "certificates.update": _cert_update,
    "certificates.policy_get": _cert_policy_get,
    "certificates.policy_set": _cert_policy_set,
    "certificates.delete": _cert_delete,
    "certificates.get_deleted": _cert_get_deleted,
    "certificates.list_deleted": _cert_list_deleted,
    "certificates.recover": _cert_recover,
    "certificates.purge": _cert_purge,
    "certificates.backup": _cert_backup,
    "certificates.restore": _cert_restore,
    "certificates.get_issuer": _cert_get_issuer,
    "certificates.list_issuers": _cert_list_issuers,
    "certificates.set_issuer": _cert_set_issuer,
    "certificates.delete_issuer": _cert_delete_issuer,
    "certificates.get_contacts": _cert_get_contacts,
    "certificates.set_contacts": _cert_set_contacts,
    "certificates.delete_contacts": _cert_delete_contacts,
}


def refusal(error: HttpResponseError) -> tuple[int | None, str | None, str | None, str]:
    """(status, error code, inner error code, body text) of a refused call."""
    text = error.response.text() if error.response is not None else ""
    try:
        body = json.loads(text).get("error") or {}
    except ValueError:
        body = {}
    inner = body.get("innererror") or {}
    return error.status_code, body.get("code"), inner.get("code"), text
