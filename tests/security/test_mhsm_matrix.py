"""A managed HSM pool's local RBAC over its key operations: every Managed HSM built-in role
× every assignment scope × every key operation of a pool; the call succeeds exactly when
Azure's role allows it.

The expectation is computed from Azure's Managed HSM built-in roles (written out in
test_mhsm_rbac.py and tests/unit/test_mhsm_roles.py from Azure's table) and the table
below of the Managed HSM data action each operation needs; it is not read from the
service. Each cell is a real principal (`okv principal create`) with its own role
assignments made by the pool's administrator through the pool's role assignment API, its
token obtained by client credentials for the Managed HSM resource, calling over plain
HTTPS. A refusal must be 403 Forbidden / ForbiddenByRbac and change nothing the
administrator can see.

Scopes: `root` (`/`: everything), `keys` (`/keys`: every key operation), `object`
(`/keys/NAME` of each key the principal's calls name: that key's operations only),
`other` (`/keys/OTHER`, another key), and a principal with no assignment. Listing and
restore name no key: only `/keys` or `/` cover them; random bytes only `/`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from azure.identity import ClientSecretCredential
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openkeyvault.vault import operations
from tests.sdk.keys_support import b64u, b64u_decode, local_encrypt, private_jwk
from tests.security.test_mhsm_rbac import AZURE_HSM_ROLES, H
from tests.support.securitydomain import download_body
from tests.support.server import DevServer
from tests.unit.test_mhsm_roles import EXPECTED as AZURE_HSM_ROLES_REFERENCE
from tests.vectors.api import bearer_token, new_pool

API = {"api-version": "7.5"}
DEFINITION_ID = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"
PLAINTEXT = b"pool matrix plaintext"
WRAPPED_KEY = bytes(range(32))
DIGEST = hashlib.sha256(b"pool matrix").digest()

# ---- Azure's Managed HSM built-in roles: name → (GUID, data actions) ---------------------------
# test_mhsm_rbac.py writes out most of them; Crypto User and Restore are written out in
# tests/unit/test_mhsm_roles.py (actions there without the managedHsm prefix). Both tables
# are Azure's; where both name a role they must agree.
_ROLES_BY_GUID: dict[str, tuple[str, frozenset[str]]] = {
    guid: (name, frozenset(f"{H}/{a}" for a in actions))
    for guid, (name, actions) in AZURE_HSM_ROLES_REFERENCE.items()}
_ROLES_BY_GUID.update({guid: (name, frozenset(actions))
                       for guid, (name, actions) in AZURE_HSM_ROLES.items()})
ROLES: dict[str, tuple[str, frozenset[str]]] = {
    name: (guid, actions) for guid, (name, actions) in _ROLES_BY_GUID.items()}
MATRIX_ROLES = (
    "Managed HSM Administrator", "Managed HSM Crypto Officer", "Managed HSM Crypto User",
    "Managed HSM Policy Administrator", "Managed HSM Crypto Auditor",
    "Managed HSM Crypto Service Encryption User", "Managed HSM Crypto Service Release User",
    "Managed HSM Backup User", "Managed HSM Restore")

# ---- operations: (where Azure evaluates the call, the Managed HSM data action it needs) -------
# `object`: the key the call names (`/keys/NAME`, `/keys` or `/`); `collection`: the call
# names no key (`/keys` or `/`); `root`: the pool itself (`/` only).
ROOT, COLLECTION, OBJECT = "root", "collection", "object"
OPERATIONS: dict[str, tuple[str, str]] = {
    "get": (OBJECT, "keys/read/action"),
    "list": (COLLECTION, "keys/read/action"),
    "list_versions": (OBJECT, "keys/read/action"),
    "create": (OBJECT, "keys/create"),
    "import": (OBJECT, "keys/import/action"),
    "update": (OBJECT, "keys/write/action"),
    "delete": (OBJECT, "keys/delete"),
    "recover": (OBJECT, "keys/deletedKeys/recover/action"),
    "purge": (OBJECT, "keys/deletedKeys/delete"),
    "backup": (OBJECT, "keys/backup/action"),
    "restore": (COLLECTION, "keys/restore/action"),
    "encrypt": (OBJECT, "keys/encrypt/action"),
    "decrypt": (OBJECT, "keys/decrypt/action"),
    "wrap": (OBJECT, "keys/wrap/action"),
    "unwrap": (OBJECT, "keys/unwrap/action"),
    "sign": (OBJECT, "keys/sign/action"),
    "verify": (OBJECT, "keys/verify/action"),
    "rotate": (OBJECT, "keys/rotate/action"),
    "get_rotation_policy": (OBJECT, "keys/read/action"),
    "set_rotation_policy": (OBJECT, "keys/write/action"),
    "list_deleted": (COLLECTION, "keys/deletedKeys/read/action"),
    "get_deleted": (OBJECT, "keys/deletedKeys/read/action"),
    "random_bytes": (ROOT, "rng/action"),
    "release": (OBJECT, "keys/release/action"),
}
# Azure's operationName of each: how the table is compared with the service's own rows.
AZURE_NAMES: dict[str, str] = {
    "get": "KeyGet", "list": "KeyList", "list_versions": "KeyListVersions",
    "create": "KeyCreate", "import": "KeyImport", "update": "KeyUpdate",
    "delete": "KeyDelete", "recover": "KeyRecover", "purge": "KeyPurge",
    "backup": "KeyBackup", "restore": "KeyRestore", "encrypt": "KeyEncrypt",
    "decrypt": "KeyDecrypt", "wrap": "KeyWrap", "unwrap": "KeyUnwrap", "sign": "KeySign",
    "verify": "KeyVerify", "rotate": "KeyRotate", "get_rotation_policy": "KeyRotationPolicyGet",
    "set_rotation_policy": "KeyRotationPolicySet", "list_deleted": "KeyListDeleted",
    "get_deleted": "KeyGetDeleted", "random_bytes": "RandomBytesGet", "release": "KeyRelease",
}

SCOPES = ("root", "keys", "object", "other")
NOBODY = "no-assignment"
# operations that use up their key when they succeed: each allowed cell gets its own
CONSUMING = frozenset({"delete", "recover", "purge", "restore"})
# what the administrator looks at to see that a refused write changed nothing
PROBES = {"create": "target", "import": "target", "update": "target", "delete": "target",
          "rotate": "target", "set_rotation_policy": "target", "recover": "gone",
          "purge": "gone", "restore": "restorable"}


def slug(role: str | None) -> str:
    return NOBODY if role is None else \
        role.removeprefix("Managed HSM ").lower().replace(" ", "-")


@dataclass(frozen=True)
class Spec:
    role: str | None  # None: a principal with no assignment
    scope: str
    op: str

    @property
    def id(self) -> str:
        return f"{slug(self.role)}|{self.scope}|{self.op}"

    @property
    def actor(self) -> tuple[str | None, str]:
        return self.role, self.scope

    def azure_allows(self) -> bool:
        if self.role is None:
            return False
        level, action = OPERATIONS[self.op]
        if f"{H}/{action}" not in ROLES[self.role][1]:
            return False
        return {"root": True, "keys": level != ROOT, "object": level == OBJECT,
                "other": False}[self.scope]


CELLS = [Spec(role, scope, op) for role in MATRIX_ROLES for scope in SCOPES
         for op in OPERATIONS] + [Spec(None, NOBODY, op) for op in OPERATIONS]
INDEX = {spec: i for i, spec in enumerate(CELLS)}


def test_the_table_covers_every_role_and_operation() -> None:
    for guid in set(AZURE_HSM_ROLES) & set(AZURE_HSM_ROLES_REFERENCE):
        name, actions = AZURE_HSM_ROLES_REFERENCE[guid]
        assert AZURE_HSM_ROLES[guid] == (name, {f"{H}/{a}" for a in actions}), name
    assert set(MATRIX_ROLES) == set(ROLES)
    assert set(RUNNERS) == set(OPERATIONS) == set(AZURE_NAMES)
    assert set(PROBES) <= set(OPERATIONS)
    assert set(OPERATIONS) >= CONSUMING
    # every role but Policy Administrator's and the Administrator's is allowed something
    allowed = {s.role for s in CELLS if s.azure_allows()}
    assert allowed == set(MATRIX_ROLES) - {"Managed HSM Administrator",
                                           "Managed HSM Policy Administrator"}


def test_the_table_is_the_pools_operations_table() -> None:
    """The service's rows for a pool name the same data action at the same level."""
    for op, name in AZURE_NAMES.items():
        level, action = OPERATIONS[op]
        row = operations.POOL_OPERATIONS[name]
        assert row.action == f"{H}/{action}", op
        found = ROOT if row.scope == "/" else OBJECT if row.scope == "/keys/{name}" \
            else COLLECTION
        assert found == level, (op, row.scope)


# ---- the pool every cell runs in ----------------------------------------------------------------
class Failed(Exception):  # noqa: N818 (a call that did not succeed)
    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"{response.status_code} {response.text[:300]}")
        self.response = response


@dataclass
class Pool:
    """One activated pool, the dev identity its administrator (and Crypto User and Crypto
    Officer at `/`, to prepare and look at keys); the keys every cell names: `target`
    (an RSA-HSM key, every object operation's), `other` (another key), `gone`
    (soft-deleted), `restorable` (backed up, then purged)."""

    server: DevServer
    name: str
    admin_token: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    v0: str = ""  # `target`'s first version: every cryptographic call uses it
    ciphertext: bytes = b""
    wrapped: bytes = b""
    signature: bytes = b""
    blob: bytes = b""  # `restorable`'s backup
    fresh: dict[tuple[str, str, str], str] = field(default_factory=dict)  # cell → key
    fresh_blobs: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    tokens: dict[tuple[str | None, str], str] = field(default_factory=dict)
    _local: threading.local = field(default_factory=threading.local)

    @property
    def session(self) -> requests.Session:
        """One keep-alive session per thread (set-up runs calls in parallel)."""
        s: requests.Session | None = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.trust_env = False
            s.verify = self.server.ca
            s.headers["Host"] = f"{self.name}.managedhsm.localhost:{self.server.port}"
        return s

    def key(self, role: str) -> str:
        return f"mx{self.run}-{role}"

    @property
    def target(self) -> str:
        return self.key("target")

    def call(self, method: str, path: str, body: Any = None, token: str | None = None
             ) -> requests.Response:
        return self.session.request(
            method, f"https://127.0.0.1:{self.server.port}{path}", params=API, json=body,
            headers={"Authorization": f"Bearer {token or self.admin_token}"}, timeout=60)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """The administrator's call, which must succeed; its answer."""
        r = self.call(method, path, body)
        assert r.status_code in (200, 201, 202, 204), f"{method} {path}: {r.status_code} " \
                                                      f"{r.text}"
        return r.json() if r.content else None

    # ---- the administrator's helpers ---------------------------------------------------------
    def make(self, name: str) -> dict[str, Any]:
        bundle: dict[str, Any] = self.ok("POST", f"/keys/{name}/create",
                                         {"kty": "EC-HSM", "crv": "P-256"})
        return bundle

    def delete(self, name: str) -> None:
        self.ok("DELETE", f"/keys/{name}")

    def purge(self, name: str) -> None:
        self.ok("DELETE", f"/deletedkeys/{name}")

    def backed_up_then_purged(self, name: str) -> bytes:
        self.make(name)
        blob = b64u_decode(self.ok("POST", f"/keys/{name}/backup")["value"])
        self.delete(name)
        self.purge(name)
        return blob

    def assign(self, principal: str, guid: str, scope: str) -> None:
        prefix = "" if scope == "/" else scope
        self.ok("PUT", f"{prefix}/providers/Microsoft.Authorization/roleAssignments/"
                       f"{uuid.uuid4()}",
                {"properties": {"scope": scope, "roleDefinitionId": DEFINITION_ID + guid,
                                "principalId": principal}})

    def status(self, path: str) -> tuple[int, Any]:
        r = self.call("GET", path)
        assert r.status_code in (200, 404), r.text
        return r.status_code, r.json() if r.status_code == 200 else None

    def state(self, probe: str) -> object:
        """What a refused write must leave as it was."""
        if probe == "target":
            _, bundle = self.status(f"/keys/{self.target}")
            _, policy = self.status(f"/keys/{self.target}/rotationpolicy")
            return (bundle and (bundle["key"]["kid"], bundle.get("tags"),
                                bundle["attributes"]), policy)
        name = self.key(probe)
        active, _ = self.status(f"/keys/{name}")
        deleted, record = self.status(f"/deletedkeys/{name}")
        return active, deleted, record and record["key"]["kid"]

    def repair(self) -> None:
        """Put the shared keys back after a call that should not have succeeded."""
        if self.status(f"/keys/{self.target}")[0] == 404:
            self.ok("POST", f"/deletedkeys/{self.target}/recover")
        gone = self.key("gone")
        if self.status(f"/keys/{gone}")[0] == 200:
            self.delete(gone)
        elif self.status(f"/deletedkeys/{gone}")[0] == 404:
            self.make(gone)
            self.delete(gone)
        restorable = self.key("restorable")
        if self.status(f"/keys/{restorable}")[0] == 200:
            self.delete(restorable)
        if self.status(f"/deletedkeys/{restorable}")[0] == 200:
            self.purge(restorable)


def _new_pool(server: DevServer) -> Pool:
    """A pool made through the management API, the dev identity its administrator, and
    activated (its security domain downloaded)."""
    name, oid = new_pool(server, "mx")
    pool = Pool(server, name, bearer_token(server, "managedhsm"))
    for role in ("Managed HSM Crypto User", "Managed HSM Crypto Officer"):
        pool.assign(oid, ROLES[role][0], "/")
    pool.ok("POST", "/securitydomain/download", download_body())
    return pool


def _prepare(pool: Pool) -> None:
    """The shared keys, fresh keys for the consuming cells Azure allows, then one principal
    per (role, scope) with its assignments and its token."""
    key = pool.ok("POST", f"/keys/{pool.target}/create", {"kty": "RSA-HSM", "key_size": 2048})
    pool.v0 = key["key"]["kid"]
    pub = rsa.RSAPublicNumbers(int.from_bytes(b64u_decode(key["key"]["e"]), "big"),
                               int.from_bytes(b64u_decode(key["key"]["n"]), "big")).public_key()
    pool.ciphertext = local_encrypt(pub, "RSA-OAEP-256", PLAINTEXT)
    pool.wrapped = local_encrypt(pub, "RSA-OAEP-256", WRAPPED_KEY)
    path = "/" + pool.v0.split("/", 3)[3]
    pool.signature = b64u_decode(pool.ok("POST", f"{path}/sign",
                                         {"alg": "RS256", "value": b64u(DIGEST)})["value"])
    pool.ok("PUT", f"/keys/{pool.target}/rotationpolicy", {
        "lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"},
                             "action": {"type": "Notify"}}],
        "attributes": {"expiryTime": "P90D"}})

    def shared(which: str) -> None:
        name = pool.key(which)
        if which == "restorable":
            pool.blob = pool.backed_up_then_purged(name)
            return
        pool.make(name)
        if which == "gone":
            pool.delete(name)

    def fresh(spec: Spec) -> None:
        k = (str(spec.role), spec.scope, spec.op)
        name = pool.fresh[k]
        if spec.op == "restore":
            pool.fresh_blobs[k] = pool.backed_up_then_purged(name)
            return
        pool.make(name)
        if spec.op != "delete":
            pool.delete(name)

    consuming = [s for s in CELLS if s.op in CONSUMING and s.azure_allows()]
    for i, spec in enumerate(consuming):
        pool.fresh[(str(spec.role), spec.scope, spec.op)] = pool.key(f"{spec.op}-{i}")

    # principals: `okv` commands run one at a time in this process
    actors = [(role, scope) for role in MATRIX_ROLES for scope in SCOPES] + [(None, NOBODY)]
    made: dict[tuple[str | None, str], tuple[str, ClientSecretCredential]] = {}
    for actor in actors:
        done = pool.server.okv("principal", "create", f"mx{pool.run}-{uuid.uuid4().hex[:8]}")
        assert done.returncode == 0, done.stderr
        p = json.loads(done.stdout)
        made[actor] = p["object_id"], ClientSecretCredential(
            p["tenant_id"], p["client_id"], p["client_secret"],
            authority=f"https://localhost:{pool.server.port}",
            disable_instance_discovery=True, connection_verify=pool.server.ca)

    assignments: list[tuple[str, str, str]] = []
    for (role, scope), (oid, _) in made.items():
        if role is None:
            continue
        guid = ROLES[role][0]
        if scope == "root":
            scopes = ["/"]
        elif scope == "keys":
            scopes = ["/keys"]
        elif scope == "other":
            scopes = [f"/keys/{pool.key('other')}"]
        else:
            mine = [n for (r, s, _), n in pool.fresh.items() if r == role and s == "object"]
            scopes = [f"/keys/{pool.key(k)}" for k in ("target", "gone", "restorable")] + \
                [f"/keys/{n}" for n in mine]
        assignments += [(oid, guid, s) for s in scopes]

    resource = f"https://managedhsm.localhost:{pool.server.port}/.default"

    def token(actor: tuple[str | None, str]) -> None:
        pool.tokens[actor] = made[actor][1].get_token(resource).token

    with ThreadPoolExecutor(8) as ex:
        jobs = [ex.submit(shared, w) for w in ("other", "gone", "restorable")]
        jobs += [ex.submit(fresh, s) for s in consuming]
        jobs += [ex.submit(pool.assign, *a) for a in assignments]
        jobs += [ex.submit(token, a) for a in actors]
        for job in jobs:
            job.result()


@pytest.fixture(scope="module")
def pool(server: DevServer) -> Iterator[Pool]:
    p = _new_pool(server)
    _prepare(p)
    yield p


# ---- one runner per operation ------------------------------------------------------------------
@dataclass
class Cell:
    """One call of the matrix: who, which operation, on which key."""

    pool: Pool
    token: str
    name: str  # the key the call names (unused by the collection-wide operations)
    index: int  # unique per cell: makes every write distinguishable
    blob: bytes = b""  # restore: the backup to restore

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The call as this cell's principal; its answer, or Failed."""
        r = self.pool.call(method, path, body, self.token)
        if not 200 <= r.status_code < 300:
            raise Failed(r)
        return r.json() if r.content else None

    @property
    def v0(self) -> str:
        return "/" + self.pool.v0.split("/", 3)[3]


def _name_of(kid: str) -> str:
    return kid.split("/")[4]


def _get(cell: Cell) -> None:
    assert _name_of(cell.call("GET", f"/keys/{cell.name}")["key"]["kid"]) == cell.name


def _list(cell: Cell) -> None:
    assert all(item["kid"] for item in cell.call("GET", "/keys")["value"])


def _list_versions(cell: Cell) -> None:
    found = cell.call("GET", f"/keys/{cell.name}/versions")["value"]
    assert found and {_name_of(item["kid"]) for item in found} == {cell.name}


def _create(cell: Cell) -> None:
    made = cell.call("POST", f"/keys/{cell.name}/create", {"kty": "EC-HSM", "crv": "P-256"})
    assert _name_of(made["key"]["kid"]) == cell.name and made["key"]["kty"] == "EC-HSM"


def _import(cell: Cell) -> None:
    jwk = private_jwk(ec.generate_private_key(ec.SECP256R1()))
    made = cell.call("PUT", f"/keys/{cell.name}", {"key": jwk, "Hsm": True})
    assert _name_of(made["key"]["kid"]) == cell.name and made["key"]["x"] == jwk["x"]


def _update(cell: Cell) -> None:
    tags = {"cell": str(cell.index)}
    assert cell.call("PATCH", f"/keys/{cell.name}", {"tags": tags})["tags"] == tags


def _delete(cell: Cell) -> None:
    deleted = cell.call("DELETE", f"/keys/{cell.name}")
    assert _name_of(deleted["key"]["kid"]) == cell.name and deleted["deletedDate"]


def _recover(cell: Cell) -> None:
    recovered = cell.call("POST", f"/deletedkeys/{cell.name}/recover")
    assert _name_of(recovered["key"]["kid"]) == cell.name
    assert cell.pool.status(f"/keys/{cell.name}")[0] == 200


def _purge(cell: Cell) -> None:
    cell.call("DELETE", f"/deletedkeys/{cell.name}")
    assert cell.pool.status(f"/deletedkeys/{cell.name}")[0] == 404


def _backup(cell: Cell) -> None:
    assert b64u_decode(cell.call("POST", f"/keys/{cell.name}/backup")["value"])


def _restore(cell: Cell) -> None:
    restored = cell.call("POST", "/keys/restore", {"value": b64u(cell.blob)})
    assert _name_of(restored["key"]["kid"]) == cell.name


def _encrypt(cell: Cell) -> None:
    out = cell.call("POST", f"{cell.v0}/encrypt",
                    {"alg": "RSA-OAEP-256", "value": b64u(PLAINTEXT)})
    assert len(b64u_decode(out["value"])) == 256


def _decrypt(cell: Cell) -> None:
    out = cell.call("POST", f"{cell.v0}/decrypt",
                    {"alg": "RSA-OAEP-256", "value": b64u(cell.pool.ciphertext)})
    assert b64u_decode(out["value"]) == PLAINTEXT


def _wrap(cell: Cell) -> None:
    out = cell.call("POST", f"{cell.v0}/wrapkey",
                    {"alg": "RSA-OAEP-256", "value": b64u(WRAPPED_KEY)})
    assert len(b64u_decode(out["value"])) == 256


def _unwrap(cell: Cell) -> None:
    out = cell.call("POST", f"{cell.v0}/unwrapkey",
                    {"alg": "RSA-OAEP-256", "value": b64u(cell.pool.wrapped)})
    assert b64u_decode(out["value"]) == WRAPPED_KEY


def _sign(cell: Cell) -> None:
    out = cell.call("POST", f"{cell.v0}/sign", {"alg": "RS256", "value": b64u(DIGEST)})
    assert len(b64u_decode(out["value"])) == 256


def _verify(cell: Cell) -> None:
    out = cell.call("POST", f"{cell.v0}/verify", {
        "alg": "RS256", "digest": b64u(DIGEST), "value": b64u(cell.pool.signature)})
    assert out["value"] is True


def _rotate(cell: Cell) -> None:
    rotated = cell.call("POST", f"/keys/{cell.name}/rotate")
    assert _name_of(rotated["key"]["kid"]) == cell.name


def _get_rotation_policy(cell: Cell) -> None:
    assert cell.call("GET", f"/keys/{cell.name}/rotationpolicy")["lifetimeActions"]


def _set_rotation_policy(cell: Cell) -> None:
    expires = f"P{100 + cell.index}D"
    saved = cell.call("PUT", f"/keys/{cell.name}/rotationpolicy", {
        "lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"},
                             "action": {"type": "Notify"}}],
        "attributes": {"expiryTime": expires}})
    assert saved["attributes"]["expiryTime"] == expires


def _list_deleted(cell: Cell) -> None:
    assert all(item["kid"] for item in cell.call("GET", "/deletedkeys")["value"])


def _get_deleted(cell: Cell) -> None:
    assert _name_of(cell.call("GET", f"/deletedkeys/{cell.name}")["key"]["kid"]) == cell.name


def _random_bytes(cell: Cell) -> None:
    assert len(b64u_decode(cell.call("POST", "/rng", {"count": 16})["value"])) == 16


def _release(cell: Cell) -> None:
    """`target` is not exportable: a caller the role lets through is told so (400), after
    the authorization; a refused one gets the matrix's 403."""
    r = cell.pool.call("POST", f"{cell.v0}/release", {"target": "a.b.c"}, cell.token)
    if r.status_code == 403:
        raise Failed(r)
    assert r.status_code == 400, r.text
    assert "not exportable" in r.json()["error"]["message"]


RUNNERS: dict[str, Callable[[Cell], None]] = {
    "get": _get, "list": _list, "list_versions": _list_versions, "create": _create,
    "import": _import, "update": _update, "delete": _delete, "recover": _recover,
    "purge": _purge, "backup": _backup, "restore": _restore, "encrypt": _encrypt,
    "decrypt": _decrypt, "wrap": _wrap, "unwrap": _unwrap, "sign": _sign, "verify": _verify,
    "rotate": _rotate, "get_rotation_policy": _get_rotation_policy,
    "set_rotation_policy": _set_rotation_policy, "list_deleted": _list_deleted,
    "get_deleted": _get_deleted, "random_bytes": _random_bytes, "release": _release,
}


def _addressed(pool: Pool, spec: Spec, allowed: bool) -> tuple[str, bytes]:
    """The key the call names (and the backup for restore)."""
    k = (str(spec.role), spec.scope, spec.op)
    if allowed and spec.op in CONSUMING:
        return pool.fresh[k], pool.fresh_blobs.get(k, b"")
    if spec.op == "restore":
        return pool.key("restorable"), pool.blob
    if spec.op in ("recover", "purge", "get_deleted"):
        return pool.key("gone"), b""
    return pool.target, b""


@pytest.mark.parametrize("spec", CELLS, ids=[s.id for s in CELLS])
def test_cell(pool: Pool, spec: Spec) -> None:
    allowed = spec.azure_allows()
    name, blob = _addressed(pool, spec, allowed)
    probe = None if allowed else PROBES.get(spec.op)
    before = pool.state(probe) if probe else None
    cell = Cell(pool, pool.tokens[spec.actor], name, INDEX[spec], blob)
    try:
        RUNNERS[spec.op](cell)
    except Failed as e:
        r = e.response
        if allowed:
            pytest.fail(f"{spec.id}: Azure allows this call; the service answered "
                        f"{r.status_code} {r.text[:300]}")
        error = (r.json() if r.content else {}).get("error") or {}
        inner = (error.get("innererror") or {}).get("code")
        assert (r.status_code, error.get("code"), inner) == \
            (403, "Forbidden", "ForbiddenByRbac"), r.text
        if probe:
            after = pool.state(probe)
            if after != before:
                pool.repair()
            assert after == before, f"{spec.id}: refused, yet the state changed"
        return
    if not allowed:
        pool.repair()
        pytest.fail(f"{spec.id}: Azure refuses this call; the service allowed it")


def test_cells_are_many() -> None:
    """9 roles × 4 scopes + a principal with no role, × every operation."""
    assert len(CELLS) == (len(MATRIX_ROLES) * len(SCOPES) + 1) * len(OPERATIONS)
