"""Vault access policies: the legacy permission model a vault uses when
`enableRbacAuthorization` is false.

An access policy gives one principal (tenantId, objectId) lists of permissions
per object kind. `PERMISSIONS` is the one table from each permission (ARM's
`Permissions` enum names) to the data actions it grants. The table is coarser
than RBAC where Azure's is: keys `get` and `list` both grant `keys/read`, so the
operation names which of them it needs with an operation hint (the permission
the REST reference names for it, e.g. listing keys needs `list`, getting a
deleted secret needs `get`; `OPERATIONS`). Role assignments play no part in
this mode.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from openkeyvault.access import actions as a
from openkeyvault.access.principals import Principal

KINDS = ("keys", "secrets", "certificates")
ALL = "all"
MAX_POLICIES = 1024  # Azure's limit of access-policy entries per vault
MAX_PERMISSIONS = 64  # names in one permission list (duplicates included)

# (kind, permission) → the data actions it grants. Spellings are ARM's enum values.
PERMISSIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("keys", "encrypt"): (a.KEYS_ENCRYPT,),
    ("keys", "decrypt"): (a.KEYS_DECRYPT,),
    ("keys", "wrapKey"): (a.KEYS_WRAP,),
    ("keys", "unwrapKey"): (a.KEYS_UNWRAP,),
    ("keys", "sign"): (a.KEYS_SIGN,),
    ("keys", "verify"): (a.KEYS_VERIFY,),
    ("keys", "get"): (a.KEYS_READ,),
    ("keys", "list"): (a.KEYS_READ,),
    ("keys", "create"): (a.KEYS_CREATE,),
    ("keys", "update"): (a.KEYS_UPDATE,),
    ("keys", "import"): (a.KEYS_IMPORT,),
    ("keys", "delete"): (a.KEYS_DELETE,),
    ("keys", "backup"): (a.KEYS_BACKUP,),
    ("keys", "restore"): (a.KEYS_RESTORE,),
    ("keys", "recover"): (a.KEYS_RECOVER,),
    ("keys", "purge"): (a.KEYS_PURGE,),
    ("keys", "release"): (a.KEYS_RELEASE,),
    ("keys", "rotate"): (a.KEYS_ROTATE,),
    ("keys", "getrotationpolicy"): (a.KEY_ROTATION_POLICIES_READ,),
    ("keys", "setrotationpolicy"): (a.KEY_ROTATION_POLICIES_WRITE,),
    ("secrets", "get"): (a.SECRETS_GET,),
    ("secrets", "list"): (a.SECRETS_READ_METADATA,),
    ("secrets", "set"): (a.SECRETS_SET, a.SECRETS_UPDATE),
    ("secrets", "delete"): (a.SECRETS_DELETE,),
    ("secrets", "backup"): (a.SECRETS_BACKUP,),
    ("secrets", "restore"): (a.SECRETS_RESTORE,),
    ("secrets", "recover"): (a.SECRETS_RECOVER,),
    ("secrets", "purge"): (a.SECRETS_PURGE,),
    ("certificates", "get"): (a.CERTIFICATES_READ,),
    ("certificates", "list"): (a.CERTIFICATES_READ,),
    ("certificates", "delete"): (a.CERTIFICATES_DELETE,),
    ("certificates", "create"): (a.CERTIFICATES_CREATE,),
    ("certificates", "import"): (a.CERTIFICATES_IMPORT,),
    ("certificates", "update"): (a.CERTIFICATES_UPDATE,),
    ("certificates", "managecontacts"): (a.CERTIFICATE_CONTACTS_WRITE,),
    ("certificates", "getissuers"): (a.CERTIFICATE_CAS_READ,),
    ("certificates", "listissuers"): (a.CERTIFICATE_CAS_READ,),
    ("certificates", "setissuers"): (a.CERTIFICATE_CAS_WRITE,),
    ("certificates", "deleteissuers"): (a.CERTIFICATE_CAS_DELETE,),
    ("certificates", "manageissuers"): (a.CERTIFICATE_CAS_READ, a.CERTIFICATE_CAS_WRITE,
                                        a.CERTIFICATE_CAS_DELETE),
    ("certificates", "recover"): (a.CERTIFICATES_RECOVER,),
    ("certificates", "purge"): (a.CERTIFICATES_PURGE,),
    ("certificates", "backup"): (a.CERTIFICATES_BACKUP,),
    ("certificates", "restore"): (a.CERTIFICATES_RESTORE,),
}

# A permission that stands in for narrower ones sharing its data actions: an operation
# hinted as needing `getissuers` is also allowed by `manageissuers`.
COVERS: dict[tuple[str, str], frozenset[str]] = {
    ("certificates", "manageissuers"): frozenset(
        {"getissuers", "listissuers", "setissuers", "deleteissuers"}),
}

# Where one data action serves operations Azure gates with different permissions: the
# permission each operation needs, as the REST reference states it ("This operation
# requires the secrets/list permission"). Getting a deleted secret needs `get` although
# its data action (as for listing) is readMetadata.
OPERATIONS: dict[tuple[str, str], tuple[str, str]] = {
    (a.KEYS_READ, "get"): ("keys", "get"),
    (a.KEYS_READ, "list"): ("keys", "list"),
    (a.SECRETS_READ_METADATA, "list"): ("secrets", "list"),
    (a.SECRETS_READ_METADATA, "get"): ("secrets", "get"),
    (a.CERTIFICATES_READ, "get"): ("certificates", "get"),
    (a.CERTIFICATES_READ, "list"): ("certificates", "list"),
    (a.CERTIFICATE_CAS_READ, "getissuers"): ("certificates", "getissuers"),
    (a.CERTIFICATE_CAS_READ, "listissuers"): ("certificates", "listissuers"),
    # Azure has no read action for contacts: RBAC reads them with certificates/read, access
    # policies with managecontacts.
    (a.CERTIFICATES_READ, "managecontacts"): ("certificates", "managecontacts"),
}

NAMES: dict[str, tuple[str, ...]] = {
    kind: tuple(p for k, p in PERMISSIONS if k == kind) for kind in KINDS
}
_CANONICAL: dict[tuple[str, str], str] = {
    (k, p.lower()): p for k, p in PERMISSIONS
}


class InvalidAccessPolicy(ValueError):
    """A refused access policy (message safe to show)."""


def permission_names(kind: str, given: Sequence[object]) -> tuple[str, ...]:
    """Validate a permission list (case-insensitive) and return it in ARM's spelling,
    without duplicates, in the order given; `all` stays `all`."""
    if kind not in KINDS:
        raise InvalidAccessPolicy(f"Unknown permission kind '{str(kind)[:40]}'.")
    if not isinstance(given, (list, tuple)) or len(given) > MAX_PERMISSIONS:
        raise InvalidAccessPolicy(f"The {kind} permissions must be a list of at most "
                                  f"{MAX_PERMISSIONS} names.")
    out: list[str] = []
    for raw in given:
        if not isinstance(raw, str):
            raise InvalidAccessPolicy(f"The {kind} permissions must be strings.")
        name = raw.strip().lower()
        canonical = ALL if name == ALL else _CANONICAL.get((kind, name))
        if canonical is None:
            raise InvalidAccessPolicy(
                f"Invalid {kind} permission '{raw[:40]}'. Valid values: "
                f"{', '.join((ALL, *NAMES[kind]))}."
            )
        if canonical not in out:
            out.append(canonical)
    return tuple(out)


def check_guid(value: object, field_name: str) -> str:
    if not isinstance(value, str):
        raise InvalidAccessPolicy(f"{field_name} must be a GUID.")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidAccessPolicy(f"{field_name} '{value[:40]}' is not a GUID.") from None


@dataclass(frozen=True)
class AccessPolicyEntry:
    tenant_id: str
    object_id: str
    keys: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    certificates: tuple[str, ...] = ()

    @classmethod
    def from_wire(cls, body: object) -> AccessPolicyEntry:
        if not isinstance(body, Mapping):
            raise InvalidAccessPolicy("Each access policy must be a JSON object.")
        perms = body.get("permissions")
        perms = {} if perms is None else perms
        if not isinstance(perms, Mapping):
            raise InvalidAccessPolicy("permissions must be a JSON object.")
        lists: dict[str, tuple[str, ...]] = {}
        for kind in KINDS:
            given = perms.get(kind)
            lists[kind] = permission_names(kind, [] if given is None else given)
        return cls(check_guid(body.get("tenantId"), "tenantId"),
                   check_guid(body.get("objectId"), "objectId"), **lists)

    def to_wire(self) -> dict[str, object]:
        return {"tenantId": self.tenant_id, "objectId": self.object_id,
                "permissions": {"keys": list(self.keys), "secrets": list(self.secrets),
                                "certificates": list(self.certificates)}}

    def granted(self) -> frozenset[tuple[str, str]]:
        """Every (kind, permission) this entry holds, with `all` expanded."""
        out: set[tuple[str, str]] = set()
        for kind in KINDS:
            held: tuple[str, ...] = getattr(self, kind)
            out.update((kind, p) for p in (NAMES[kind] if ALL in held else held))
        return frozenset(out)


@functools.lru_cache(maxsize=512)
def granting(data_action: str, operation: str | None = None) -> frozenset[tuple[str, str]]:
    """The (kind, permission) pairs any one of which allows `data_action`; with an
    `operation` hint, the permission `OPERATIONS` names for it (or one covering it).
    A hint `OPERATIONS` does not know allows nothing."""
    if operation is None:
        return frozenset(key for key, granted in PERMISSIONS.items() if data_action in granted)
    target = OPERATIONS.get((data_action, operation))
    if target is None:
        return frozenset()
    return frozenset({target} | {key for key, covered in COVERS.items()
                                 if key[0] == target[0] and target[1] in covered})


def required(data_action: str, operation: str | None = None) -> str:
    """How a refusal names what was missing, e.g. 'secrets get'."""
    options = sorted(granting(data_action, operation),
                     key=lambda kp: (len(PERMISSIONS[kp]) > 1, NAMES[kp[0]].index(kp[1])))
    if not options:
        return f"'{data_action}'"
    kind, permission = options[0]
    return f"{kind} {permission}"


@dataclass(frozen=True)
class AccessPolicies:
    """A vault's access policies, indexed by principal for the decision."""

    entries: tuple[AccessPolicyEntry, ...] = ()
    _by_principal: dict[tuple[str, str], frozenset[tuple[str, str]]] = field(
        init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.entries) > MAX_POLICIES:
            raise InvalidAccessPolicy(f"A vault holds at most {MAX_POLICIES} access policies.")
        index: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for e in self.entries:
            index.setdefault((e.tenant_id.lower(), e.object_id.lower()), set()).update(
                e.granted())
        object.__setattr__(self, "_by_principal",
                           {k: frozenset(v) for k, v in index.items()})

    def allows(self, principal: Principal, data_action: str,
               operation: str | None = None) -> bool:
        """Deny by default: True only if the principal's entry holds a permission that
        grants `data_action` (the hinted one, when the operation gives a hint)."""
        held = self._by_principal.get((principal.tenant_id.lower(),
                                       principal.object_id.lower()))
        return held is not None and not held.isdisjoint(granting(data_action, operation))
