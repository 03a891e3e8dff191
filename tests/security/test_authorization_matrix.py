"""Every Azure built-in Key Vault data-plane role × every data-plane operation on secrets,
keys and certificates × every assignment scope: the call succeeds exactly when Azure's role
allows it.

The expectation is written out below from Azure's role definitions (built-in roles, Security
category) and Azure's operation → data action mapping; it is deliberately not read from
the service's own role table. Each cell is a real principal with one role assignment,
authenticated through the token endpoint with ClientSecretCredential, calling through the
official SDK clients. A refusal must be 403 Forbidden / ForbiddenByRbac and change nothing
the dev identity can see.

Scopes: `vault` (/vaults/dev), `collection` (/vaults/dev/secrets, /vaults/dev/keys or
/vaults/dev/certificates: the collection of the operation), `object` (the object the call
addresses), `other` (another object of the same collection), and a principal with no
assignment at all. Issuers and contacts are vault-wide: no object assignment covers them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from azure.core.exceptions import HttpResponseError

from openkeyvault.deployment import Deployment
from openkeyvault.vault import operations
from tests.sdk.keys_support import environment
from tests.security.matrix_support import RUNNERS, SECRET_VALUE, Cell, World, open_world, refusal
from tests.support.server import DevServer

# ---- Azure's built-in data-plane roles (name → GUID) --------------------------------------------
ROLES: dict[str, str] = {
    "Key Vault Administrator": "00482a5a-887f-4fb3-b363-3b7fe8e74483",
    "Key Vault Certificates Officer": "a4417e6f-fecd-4de8-b567-7b0420556985",
    "Key Vault Certificate User": "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba",
    "Key Vault Crypto Officer": "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
    "Key Vault Crypto Service Encryption User": "e147488a-f6f5-4113-8e2d-b22465e65bf6",
    "Key Vault Crypto Service Release User": "08bbd89e-9f13-488c-ac41-acfcb10c90ab",
    "Key Vault Crypto User": "12338af0-0e69-4776-bea7-57ae8d297424",
    "Key Vault Data Access Administrator": "8b54135c-b56d-4d72-a534-26097cfdc8d8",
    "Key Vault Reader": "21090545-7ca7-4776-b22c-e363652d74d2",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
}

# ---- operations: (collection, where Azure evaluates the call, Azure's data action) -------------
# `collection`: the call names no object (listing, restore, issuers, contacts), so only an
# assignment on the collection or the vault covers it; `vault`: only the vault; `object`:
# the object named.
VAULT, COLLECTION, OBJECT = "vault", "collection", "object"
OPERATIONS: dict[str, tuple[str, str, str]] = {
    "secrets.get": ("secrets", OBJECT, "secrets/getSecret/action"),
    "secrets.list": ("secrets", COLLECTION, "secrets/readMetadata/action"),
    "secrets.list_versions": ("secrets", OBJECT, "secrets/readMetadata/action"),
    "secrets.list_deleted": ("secrets", COLLECTION, "secrets/readMetadata/action"),
    "secrets.get_deleted": ("secrets", OBJECT, "secrets/readMetadata/action"),
    "secrets.set": ("secrets", OBJECT, "secrets/setSecret/action"),
    "secrets.update": ("secrets", OBJECT, "secrets/update/action"),
    "secrets.delete": ("secrets", OBJECT, "secrets/delete"),
    "secrets.recover": ("secrets", OBJECT, "secrets/recover/action"),
    "secrets.purge": ("secrets", OBJECT, "secrets/purge/action"),
    "secrets.backup": ("secrets", OBJECT, "secrets/backup/action"),
    "secrets.restore": ("secrets", COLLECTION, "secrets/restore/action"),
    "keys.get": ("keys", OBJECT, "keys/read"),
    "keys.list": ("keys", COLLECTION, "keys/read"),
    "keys.list_versions": ("keys", OBJECT, "keys/read"),
    "keys.list_deleted": ("keys", COLLECTION, "keys/read"),
    "keys.get_deleted": ("keys", OBJECT, "keys/read"),
    "keys.create": ("keys", OBJECT, "keys/create/action"),
    "keys.import": ("keys", OBJECT, "keys/import/action"),
    "keys.update": ("keys", OBJECT, "keys/update/action"),
    "keys.delete": ("keys", OBJECT, "keys/delete"),
    "keys.recover": ("keys", OBJECT, "keys/recover/action"),
    "keys.purge": ("keys", OBJECT, "keys/purge/action"),
    "keys.backup": ("keys", OBJECT, "keys/backup/action"),
    "keys.restore": ("keys", COLLECTION, "keys/restore/action"),
    "keys.encrypt": ("keys", OBJECT, "keys/encrypt/action"),
    "keys.decrypt": ("keys", OBJECT, "keys/decrypt/action"),
    "keys.wrap": ("keys", OBJECT, "keys/wrap/action"),
    "keys.unwrap": ("keys", OBJECT, "keys/unwrap/action"),
    "keys.sign": ("keys", OBJECT, "keys/sign/action"),
    "keys.verify": ("keys", OBJECT, "keys/verify/action"),
    "keys.rotate": ("keys", OBJECT, "keys/rotate/action"),
    "keys.get_rotation_policy": ("keys", OBJECT, "keyrotationpolicies/read"),
    "keys.set_rotation_policy": ("keys", OBJECT, "keyrotationpolicies/write"),
    # Azure serves random bytes on Managed HSM only (managedHsm/rng/action); a vault here
    # serves it under the vault's namespace, so only `vaults/*` grants it.
    "keys.random_bytes": ("keys", VAULT, "rng/action"),
    "keys.release": ("keys", OBJECT, "keys/release/action"),
    "certificates.get": ("certificates", OBJECT, "certificates/read"),
    "certificates.list": ("certificates", COLLECTION, "certificates/read"),
    "certificates.versions": ("certificates", OBJECT, "certificates/read"),
    "certificates.create": ("certificates", OBJECT, "certificates/create/action"),
    "certificates.import": ("certificates", OBJECT, "certificates/import/action"),
    "certificates.update": ("certificates", OBJECT, "certificates/update/action"),
    "certificates.policy_get": ("certificates", OBJECT, "certificates/read"),
    "certificates.policy_set": ("certificates", OBJECT, "certificates/update/action"),
    "certificates.delete": ("certificates", OBJECT, "certificates/delete"),
    "certificates.get_deleted": ("certificates", OBJECT, "certificates/read"),
    "certificates.list_deleted": ("certificates", COLLECTION, "certificates/read"),
    "certificates.recover": ("certificates", OBJECT, "certificates/recover/action"),
    "certificates.purge": ("certificates", OBJECT, "certificates/purge/action"),
    "certificates.backup": ("certificates", OBJECT, "certificates/backup/action"),
    "certificates.restore": ("certificates", COLLECTION, "certificates/restore/action"),
    # issuers and contacts are vault-wide settings under /certificates/issuers and
    # /certificates/contacts; Azure has no read action for contacts (certificates/read)
    "certificates.get_issuer": ("certificates", COLLECTION, "certificatecas/read"),
    "certificates.list_issuers": ("certificates", COLLECTION, "certificatecas/read"),
    "certificates.set_issuer": ("certificates", COLLECTION, "certificatecas/write"),
    "certificates.delete_issuer": ("certificates", COLLECTION, "certificatecas/delete"),
    "certificates.get_contacts": ("certificates", COLLECTION, "certificates/read"),
    "certificates.set_contacts": ("certificates", COLLECTION, "certificatecontacts/write"),
    "certificates.delete_contacts": ("certificates", COLLECTION, "certificatecontacts/write"),
}

# Azure's operationName of each operation above: how the matrix finds its row of the service's
# operations table (vault/operations.py), which must agree with what is written here.
AZURE_NAMES: dict[str, str] = {
    "secrets.get": "SecretGet", "secrets.list": "SecretList",
    "secrets.list_versions": "SecretListVersions", "secrets.list_deleted": "SecretListDeleted",
    "secrets.get_deleted": "SecretGetDeleted", "secrets.set": "SecretSet",
    "secrets.update": "SecretUpdate", "secrets.delete": "SecretDelete",
    "secrets.recover": "SecretRecover", "secrets.purge": "SecretPurge",
    "secrets.backup": "SecretBackup", "secrets.restore": "SecretRestore",
    "keys.get": "KeyGet", "keys.list": "KeyList", "keys.list_versions": "KeyListVersions",
    "keys.list_deleted": "KeyListDeleted", "keys.get_deleted": "KeyGetDeleted",
    "keys.create": "KeyCreate", "keys.import": "KeyImport", "keys.update": "KeyUpdate",
    "keys.delete": "KeyDelete", "keys.recover": "KeyRecover", "keys.purge": "KeyPurge",
    "keys.backup": "KeyBackup", "keys.restore": "KeyRestore", "keys.encrypt": "KeyEncrypt",
    "keys.decrypt": "KeyDecrypt", "keys.wrap": "KeyWrap", "keys.unwrap": "KeyUnwrap",
    "keys.sign": "KeySign", "keys.verify": "KeyVerify", "keys.rotate": "KeyRotate",
    "keys.get_rotation_policy": "KeyRotationPolicyGet",
    "keys.set_rotation_policy": "KeyRotationPolicySet", "keys.random_bytes": "RandomBytesGet",
    "keys.release": "KeyRelease",
    "certificates.get": "CertificateGet", "certificates.list": "CertificateList",
    "certificates.versions": "CertificateListVersions",
    "certificates.create": "CertificateCreate", "certificates.import": "CertificateImport",
    "certificates.update": "CertificateUpdate", "certificates.policy_get": "CertificatePolicyGet",
    "certificates.policy_set": "CertificatePolicyUpdate",
    "certificates.delete": "CertificateDelete",
    "certificates.get_deleted": "CertificateGetDeleted",
    "certificates.list_deleted": "CertificateListDeleted",
    "certificates.recover": "CertificateRecover", "certificates.purge": "CertificatePurge",
    "certificates.backup": "CertificateBackup", "certificates.restore": "CertificateRestore",
    "certificates.get_issuer": "CertificateIssuerGet",
    "certificates.list_issuers": "CertificateIssuersList",
    "certificates.set_issuer": "CertificateIssuerSet",
    "certificates.delete_issuer": "CertificateIssuerDelete",
    "certificates.get_contacts": "CertificateContactsGet",
    "certificates.set_contacts": "CertificateContactsSet",
    "certificates.delete_contacts": "CertificateContactsDelete",
}
# Operations of the table the matrix does not call, each guarded exactly as one it does.
NOT_CALLED: dict[str, str] = {
    "KeyGetAttestation": "KeyGet",
    "CertificatePendingGet": "CertificatePolicyGet",
    "CertificatePendingUpdate": "CertificateUpdate",
    "CertificatePendingDelete": "CertificateDelete",
    "CertificatePendingMerge": "CertificateCreate",
    "CertificateIssuerUpdate": "CertificateIssuerSet",
}

# ---- which operations each role allows (written from the roles' dataActions) --------------------
READ_SECRET_METADATA = frozenset({  # secrets/readMetadata/action
    "secrets.list", "secrets.list_versions", "secrets.list_deleted", "secrets.get_deleted"})
READ_KEYS = frozenset({  # keys/read
    "keys.get", "keys.list", "keys.list_versions", "keys.list_deleted", "keys.get_deleted"})
READ_CERTIFICATES = frozenset({  # certificates/read
    "certificates.get", "certificates.list", "certificates.versions", "certificates.policy_get",
    "certificates.get_deleted", "certificates.list_deleted", "certificates.get_contacts"})
READ_ISSUERS = frozenset({"certificates.get_issuer", "certificates.list_issuers"})
CERTIFICATES = frozenset(op for op in OPERATIONS if op.startswith("certificates."))

ALLOWED: dict[str, frozenset[str]] = {
    # Microsoft.KeyVault/vaults/*
    "Key Vault Administrator": frozenset(OPERATIONS),
    # certificatecas/*, certificates/*, certificatecontacts/write
    "Key Vault Certificates Officer": CERTIFICATES,
    # certificates/read, secrets/getSecret/action, secrets/readMetadata/action, keys/read
    "Key Vault Certificate User": frozenset({"secrets.get"}) | READ_SECRET_METADATA | READ_KEYS
    | READ_CERTIFICATES,
    # keys/*, keyrotationpolicies/*
    "Key Vault Crypto Officer": READ_KEYS | frozenset({
        "keys.create", "keys.import", "keys.update", "keys.delete", "keys.recover",
        "keys.purge", "keys.backup", "keys.restore", "keys.encrypt", "keys.decrypt",
        "keys.wrap", "keys.unwrap", "keys.sign", "keys.verify", "keys.rotate",
        "keys.get_rotation_policy", "keys.set_rotation_policy", "keys.release"}),
    # keys/read, keys/wrap/action, keys/unwrap/action
    "Key Vault Crypto Service Encryption User": READ_KEYS | frozenset({
        "keys.wrap", "keys.unwrap"}),
    # keys/release/action
    "Key Vault Crypto Service Release User": frozenset({"keys.release"}),
    # keys/read, update, backup, encrypt, decrypt, wrap, unwrap, sign, verify
    "Key Vault Crypto User": READ_KEYS | frozenset({
        "keys.update", "keys.backup", "keys.encrypt", "keys.decrypt", "keys.wrap",
        "keys.unwrap", "keys.sign", "keys.verify"}),
    # no data actions
    "Key Vault Data Access Administrator": frozenset(),
    # vaults/*/read (keys/read, keyrotationpolicies/read, certificates/read,
    # certificatecas/read), secrets/readMetadata/action
    "Key Vault Reader": READ_SECRET_METADATA | READ_KEYS | READ_CERTIFICATES | READ_ISSUERS
    | frozenset({"keys.get_rotation_policy"}),
    # secrets/*
    "Key Vault Secrets Officer": READ_SECRET_METADATA | frozenset({
        "secrets.get", "secrets.set", "secrets.update", "secrets.delete", "secrets.recover",
        "secrets.purge", "secrets.backup", "secrets.restore"}),
    # secrets/getSecret/action, secrets/readMetadata/action
    "Key Vault Secrets User": READ_SECRET_METADATA | frozenset({"secrets.get"}),
}

SCOPES = ("vault", "collection", "object", "other")
COLLECTIONS = ("secrets", "keys", "certificates")
NOBODY = "no-assignment"

# operations that use up their object when they succeed: each allowed cell gets its own
CONSUMING = frozenset({"delete", "recover", "purge", "restore", "delete_issuer"})
# what the dev identity looks at to see that a refused write changed nothing
PROBES = {
    "secrets.set": "target", "secrets.update": "target", "secrets.delete": "target",
    "secrets.recover": "gone", "secrets.purge": "gone", "secrets.restore": "restorable",
    "keys.create": "target", "keys.import": "target", "keys.update": "target",
    "keys.delete": "target", "keys.rotate": "target", "keys.set_rotation_policy": "policy",
    "keys.recover": "gone", "keys.purge": "gone", "keys.restore": "restorable",
    "certificates.create": "target", "certificates.import": "target",
    "certificates.update": "target", "certificates.delete": "target",
    "certificates.policy_set": "policy", "certificates.recover": "gone",
    "certificates.purge": "gone", "certificates.restore": "restorable",
    "certificates.set_issuer": "issuers", "certificates.delete_issuer": "issuers",
    "certificates.set_contacts": "contacts", "certificates.delete_contacts": "contacts",
}


def slug(role: str | None) -> str:
    return NOBODY if role is None else role.removeprefix("Key Vault ").lower().replace(" ", "-")


@dataclass(frozen=True)
class Spec:
    role: str | None  # None: a principal with no assignment
    scope: str
    op: str

    @property
    def id(self) -> str:
        return f"{slug(self.role)}|{self.scope}|{self.op}"

    @property
    def collection(self) -> str:
        return OPERATIONS[self.op][0]

    @property
    def verb(self) -> str:
        return self.op.split(".", 1)[1]

    @property
    def actor(self) -> tuple[str | None, str, str]:
        return (self.role, self.scope, self.collection if self.scope in ("collection", "object")
                else "*")

    def azure_allows(self) -> bool:
        if self.role is None or self.op not in ALLOWED[self.role]:
            return False
        level = OPERATIONS[self.op][1]
        return {"vault": True, "collection": level != VAULT, "object": level == OBJECT,
                "other": False}[self.scope]


CELLS = [Spec(role, scope, op) for role in ROLES for scope in SCOPES for op in OPERATIONS] + \
    [Spec(None, NOBODY, op) for op in OPERATIONS]
INDEX = {spec: i for i, spec in enumerate(CELLS)}


def test_the_table_covers_every_role_and_operation() -> None:
    assert set(ALLOWED) == set(ROLES)
    for role, ops in ALLOWED.items():
        assert ops <= set(OPERATIONS), role
    assert set(RUNNERS) == set(OPERATIONS)
    assert {op for op in PROBES} <= set(OPERATIONS)


def test_the_matrix_covers_the_operations_table() -> None:
    """Every vault data-plane operation of the service's table is a row of the matrix (or
    guarded exactly as one), and the table's action and scope are those written above.
    The rows only a managed HSM pool serves (its settings) are no vault's."""
    table = {op.name: op for op in operations.TABLE
             if op.plane == operations.DATA and op.scope != operations.ROLE_SCOPE
             and op.name not in operations.POOL_ONLY}
    assert set(AZURE_NAMES) == set(OPERATIONS)
    assert set(AZURE_NAMES.values()) | set(NOT_CALLED) == set(table)
    for key, name in AZURE_NAMES.items():
        collection, level, action = OPERATIONS[key]
        op = table[name]
        assert op.action == f"Microsoft.KeyVault/vaults/{action}", key
        scope = VAULT if op.scope == "/" else OBJECT if op.scope == f"/{collection}/{{name}}" \
            else COLLECTION
        assert scope == level, key
        assert op.scope.startswith(f"/{collection}") or op.scope == "/", key
    for name, like in NOT_CALLED.items():
        assert (table[name].action, table[name].scope) == (table[like].action,
                                                            table[like].scope), name


# ---- the world every cell runs in ---------------------------------------------------------------
def _prepare(world: World) -> None:
    """Fresh objects for the consuming cells Azure allows, then one principal per
    (role, scope, collection) and their tokens."""
    for spec in CELLS:
        if spec.verb not in CONSUMING or not spec.azure_allows():
            continue
        name = world.name(f"{spec.verb.replace('_', '-')}-{len(world.fresh)}")
        key = (str(spec.role), spec.scope, spec.op)
        if spec.verb == "restore":
            world.fresh_blobs[key] = world.backed_up_then_purged(spec.collection, name)
        elif spec.verb == "delete_issuer":
            world.make_issuer(name)
        else:
            world.make(spec.collection, name)
            if spec.verb != "delete":
                world.delete(spec.collection, name)
        world.fresh[key] = name
    wanted: list[tuple[tuple[str | None, str, str], str, list[tuple[str, str]]]] = []
    for role, guid in ROLES.items():
        label = slug(role)
        wanted.append(((role, "vault", "*"), f"{label}-vault", [(guid, "/vaults/dev")]))
        # one principal for both collections: no call on `other` is made, so nothing its
        # two assignments could grant together goes unseen
        wanted.append(((role, "other", "*"), f"{label}-other",
                       [(guid, f"/vaults/dev/{c}/{world.named('other', c)}")
                        for c in COLLECTIONS]))
        for c in COLLECTIONS:
            mine = [n for (r, s, op), n in world.fresh.items()
                    if r == role and s == "object" and OPERATIONS[op][0] == c]
            objects = [world.named(o, c) for o in ("target", "gone", "restorable")] + mine
            wanted.append(((role, "collection", c), f"{label}-{c}",
                           [(guid, f"/vaults/dev/{c}")]))
            wanted.append(((role, "object", c), f"{label}-{c}-object",
                           [(guid, f"/vaults/dev/{c}/{n}") for n in objects]))
    wanted.append(((None, NOBODY, "*"), NOBODY, []))
    world.add_actors(wanted)


@pytest.fixture(scope="module")
def module_env(server: DevServer) -> Iterator[dict[str, str]]:
    yield from environment(server)


@pytest.fixture(scope="module")
def world(server: DevServer, deployment: Deployment,
          module_env: dict[str, str]) -> Iterator[World]:
    w = open_world(server, deployment)
    try:
        _prepare(w)
        yield w
    finally:
        w.close()


def _addressed(world: World, spec: Spec, allowed: bool) -> tuple[str, bytes]:
    """The object the call names (and the backup for restore)."""
    key = (str(spec.role), spec.scope, spec.op)
    if allowed and spec.verb in CONSUMING:
        return world.fresh[key], world.fresh_blobs.get(key, b"")
    if spec.verb == "restore":
        return world.named("restorable", spec.collection), world.blobs[spec.collection]
    if spec.verb in ("recover", "purge", "get_deleted"):
        return world.named("gone", spec.collection), b""
    if spec.verb == "delete_issuer":
        return world.issuer, b""
    return world.named("target", spec.collection), b""


def _repair(world: World, collection: str) -> None:
    """Put the shared objects back after a call that should not have succeeded."""
    world.forget(collection)
    target, gone = world.named("target", collection), world.named("gone", collection)
    restorable = world.named("restorable", collection)
    if world.deleted(collection, target):
        world.recover(collection, target)
    if world.latest(collection, gone):
        world.delete(collection, gone)
    elif not world.deleted(collection, gone):
        world.make(collection, gone)
        world.delete(collection, gone)
    if world.latest(collection, restorable):
        world.delete(collection, restorable)
    if world.deleted(collection, restorable):
        world.purge(collection, restorable)
    if collection == "certificates":
        if world.issuer not in {i[0] for i in world.issuers()}:
            world.make_issuer(world.issuer)
        if world.contacts() is None:
            world.reset_contacts()


@pytest.mark.parametrize("spec", CELLS, ids=[s.id for s in CELLS])
def test_cell(world: World, spec: Spec) -> None:
    allowed = spec.azure_allows()
    collection = spec.collection
    name, blob = _addressed(world, spec, allowed)
    probe = PROBES.get(spec.op)
    before = world.known_state(probe, collection) if probe and not allowed else None
    cell = Cell(world, world.actors[spec.actor], spec.op, collection, name,
                INDEX[spec], blob)
    try:
        RUNNERS[spec.op](cell)
    except HttpResponseError as e:
        status, code, inner, text = refusal(e)
        if allowed:
            pytest.fail(f"{spec.id}: Azure allows this call; the service refused it with "
                        f"{status} {code}/{inner}")
        assert (status, code, inner) == (403, "Forbidden", "ForbiddenByRbac"), text
        assert SECRET_VALUE not in text
        if probe:
            after = world.state(probe, collection)
            world.remember(probe, collection, after)
            if after != before:
                _repair(world, collection)
            assert after == before, f"{spec.id}: refused, yet the state changed"
        return
    if probe:
        world.forget(collection)
    if not allowed:
        _repair(world, collection)
        pytest.fail(f"{spec.id}: Azure refuses this call; the service allowed it")
