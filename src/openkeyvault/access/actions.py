"""Azure's data action names: the one list every authorization check reads from."""

from __future__ import annotations

_V = "Microsoft.KeyVault/vaults"

SECRETS_GET = f"{_V}/secrets/getSecret/action"
SECRETS_SET = f"{_V}/secrets/setSecret/action"
SECRETS_READ_METADATA = f"{_V}/secrets/readMetadata/action"
SECRETS_UPDATE = f"{_V}/secrets/update/action"
SECRETS_DELETE = f"{_V}/secrets/delete"
SECRETS_BACKUP = f"{_V}/secrets/backup/action"
SECRETS_RESTORE = f"{_V}/secrets/restore/action"
SECRETS_RECOVER = f"{_V}/secrets/recover/action"
SECRETS_PURGE = f"{_V}/secrets/purge/action"

KEYS_READ = f"{_V}/keys/read"
KEYS_CREATE = f"{_V}/keys/create/action"
KEYS_IMPORT = f"{_V}/keys/import/action"
KEYS_UPDATE = f"{_V}/keys/update/action"
KEYS_DELETE = f"{_V}/keys/delete"
KEYS_BACKUP = f"{_V}/keys/backup/action"
KEYS_RESTORE = f"{_V}/keys/restore/action"
KEYS_RECOVER = f"{_V}/keys/recover/action"
KEYS_PURGE = f"{_V}/keys/purge/action"
KEYS_ENCRYPT = f"{_V}/keys/encrypt/action"
KEYS_DECRYPT = f"{_V}/keys/decrypt/action"
KEYS_WRAP = f"{_V}/keys/wrap/action"
KEYS_UNWRAP = f"{_V}/keys/unwrap/action"
KEYS_SIGN = f"{_V}/keys/sign/action"
KEYS_VERIFY = f"{_V}/keys/verify/action"
KEYS_ROTATE = f"{_V}/keys/rotate/action"
KEYS_RELEASE = f"{_V}/keys/release/action"
KEY_ROTATION_POLICIES_READ = f"{_V}/keyrotationpolicies/read"
KEY_ROTATION_POLICIES_WRITE = f"{_V}/keyrotationpolicies/write"
CERTIFICATES_READ = f"{_V}/certificates/read"
CERTIFICATES_CREATE = f"{_V}/certificates/create/action"
CERTIFICATES_IMPORT = f"{_V}/certificates/import/action"
CERTIFICATES_UPDATE = f"{_V}/certificates/update/action"
CERTIFICATES_DELETE = f"{_V}/certificates/delete"
CERTIFICATES_BACKUP = f"{_V}/certificates/backup/action"
CERTIFICATES_RESTORE = f"{_V}/certificates/restore/action"
CERTIFICATES_RECOVER = f"{_V}/certificates/recover/action"
CERTIFICATES_PURGE = f"{_V}/certificates/purge/action"
CERTIFICATE_CAS_READ = f"{_V}/certificatecas/read"
CERTIFICATE_CAS_WRITE = f"{_V}/certificatecas/write"
CERTIFICATE_CAS_DELETE = f"{_V}/certificatecas/delete"
CERTIFICATE_CONTACTS_WRITE = f"{_V}/certificatecontacts/write"
# Azure defines random bytes for Managed HSM only (managedHsm/rng/action); vaults here use
# the same verb under the vault namespace.
RNG = f"{_V}/rng/action"

# Role management. Azure has no vault data actions for it: on a vault, assignments and
# definitions are guarded by these control-plane actions, granted by a role's `actions`
# (not its `dataActions`).
_A = "Microsoft.Authorization"
ROLE_ASSIGNMENTS_READ = f"{_A}/roleAssignments/read"
ROLE_ASSIGNMENTS_WRITE = f"{_A}/roleAssignments/write"
ROLE_ASSIGNMENTS_DELETE = f"{_A}/roleAssignments/delete"
ROLE_DEFINITIONS_READ = f"{_A}/roleDefinitions/read"
ROLE_DEFINITIONS_WRITE = f"{_A}/roleDefinitions/write"
ROLE_DEFINITIONS_DELETE = f"{_A}/roleDefinitions/delete"

# The control plane (ARM): vaults as resources. Granted by a role's `actions`, like role
# management; Azure's operation names (Microsoft.KeyVault resource provider operations).
_KV = "Microsoft.KeyVault"
VAULTS_READ = f"{_V}/read"
VAULTS_WRITE = f"{_V}/write"
VAULTS_DELETE = f"{_V}/delete"
VAULTS_ACCESS_POLICIES_WRITE = f"{_V}/accessPolicies/write"
DELETED_VAULTS_READ = f"{_KV}/deletedVaults/read"
LOCATIONS_DELETED_VAULTS_READ = f"{_KV}/locations/deletedVaults/read"
DELETED_VAULTS_PURGE = f"{_KV}/locations/deletedVaults/purge/action"
CHECK_NAME_AVAILABILITY = f"{_KV}/checkNameAvailability/read"
LOCATIONS_OPERATION_RESULTS_READ = f"{_KV}/locations/operationResults/read"
# Managed HSM pools as resources.
MANAGED_HSMS_READ = f"{_KV}/managedHSMs/read"
MANAGED_HSMS_WRITE = f"{_KV}/managedHSMs/write"
MANAGED_HSMS_DELETE = f"{_KV}/managedHSMs/delete"
DELETED_MANAGED_HSMS_READ = f"{_KV}/deletedManagedHsms/read"
DELETED_MANAGED_HSMS_PURGE = f"{_KV}/locations/deletedManagedHsms/purge/action"
CHECK_MHSM_NAME_AVAILABILITY = f"{_KV}/checkMhsmNameAvailability/read"
_ARM = frozenset({VAULTS_READ, VAULTS_WRITE, VAULTS_DELETE, VAULTS_ACCESS_POLICIES_WRITE,
                  DELETED_VAULTS_READ, LOCATIONS_DELETED_VAULTS_READ, DELETED_VAULTS_PURGE,
                  CHECK_NAME_AVAILABILITY, LOCATIONS_OPERATION_RESULTS_READ,
                  MANAGED_HSMS_READ, MANAGED_HSMS_WRITE, MANAGED_HSMS_DELETE,
                  DELETED_MANAGED_HSMS_READ, DELETED_MANAGED_HSMS_PURGE,
                  CHECK_MHSM_NAME_AVAILABILITY})

# Managed HSM: role management is made of data actions (rbac.json's DataAction enum).
_H = "Microsoft.KeyVault/managedHsm"
HSM_ROLE_ASSIGNMENTS_READ = f"{_H}/roleAssignments/read/action"
HSM_ROLE_ASSIGNMENTS_WRITE = f"{_H}/roleAssignments/write/action"
HSM_ROLE_ASSIGNMENTS_DELETE = f"{_H}/roleAssignments/delete/action"
HSM_ROLE_DEFINITIONS_READ = f"{_H}/roleDefinitions/read/action"
HSM_ROLE_DEFINITIONS_WRITE = f"{_H}/roleDefinitions/write/action"
HSM_ROLE_DEFINITIONS_DELETE = f"{_H}/roleDefinitions/delete/action"
# A pool's keys (Managed HSM local RBAC).
HSM_KEYS_READ = f"{_H}/keys/read/action"
HSM_KEYS_WRITE = f"{_H}/keys/write/action"
HSM_KEYS_CREATE = f"{_H}/keys/create"
HSM_KEYS_DELETE = f"{_H}/keys/delete"
HSM_KEYS_IMPORT = f"{_H}/keys/import/action"
HSM_KEYS_BACKUP = f"{_H}/keys/backup/action"
HSM_KEYS_RESTORE = f"{_H}/keys/restore/action"
HSM_KEYS_ENCRYPT = f"{_H}/keys/encrypt/action"
HSM_KEYS_DECRYPT = f"{_H}/keys/decrypt/action"
HSM_KEYS_WRAP = f"{_H}/keys/wrap/action"
HSM_KEYS_UNWRAP = f"{_H}/keys/unwrap/action"
HSM_KEYS_SIGN = f"{_H}/keys/sign/action"
HSM_KEYS_VERIFY = f"{_H}/keys/verify/action"
HSM_KEYS_RELEASE = f"{_H}/keys/release/action"
HSM_KEYS_ROTATE = f"{_H}/keys/rotate/action"
HSM_DELETED_KEYS_READ = f"{_H}/keys/deletedKeys/read/action"
HSM_DELETED_KEYS_RECOVER = f"{_H}/keys/deletedKeys/recover/action"
HSM_DELETED_KEYS_DELETE = f"{_H}/keys/deletedKeys/delete"
HSM_RNG = f"{_H}/rng/action"
# A pool's security domain (Managed HSM Administrator holds them).
HSM_SECURITY_DOMAIN_DOWNLOAD = f"{_H}/securitydomain/download/action"
HSM_SECURITY_DOMAIN_DOWNLOAD_READ = f"{_H}/securitydomain/download/read"
HSM_SECURITY_DOMAIN_UPLOAD = f"{_H}/securitydomain/upload/action"
HSM_SECURITY_DOMAIN_UPLOAD_READ = f"{_H}/securitydomain/upload/read"
HSM_SECURITY_DOMAIN_TRANSFER_KEY_READ = f"{_H}/securitydomain/transferkey/read"
# The rest of rbac.json's DataAction enum, known so that roles can name them.
_HSM_OTHER = tuple(f"{_H}/{a}" for a in (
    "keys/read/action", "keys/write/action", "keys/deletedKeys/read/action",
    "keys/deletedKeys/recover/action", "keys/backup/action", "keys/restore/action",
    "keys/encrypt/action", "keys/decrypt/action", "keys/wrap/action", "keys/unwrap/action",
    "keys/sign/action", "keys/verify/action", "keys/create", "keys/delete",
    "keys/export/action", "keys/release/action", "keys/import/action",
    "keys/deletedKeys/delete", "securitydomain/download/action",
    "securitydomain/download/read", "securitydomain/upload/action",
    "securitydomain/upload/read", "securitydomain/transferkey/read", "backup/start/action",
    "restore/start/action", "backup/status/action", "restore/status/action", "rng/action",
))

# (vault kind, "roleAssignments" | "roleDefinitions", "read" | "write" | "delete") → the
# action that guards the operation.
ROLE_MANAGEMENT: dict[tuple[str, str, str], str] = {
    ("vault", "roleAssignments", "read"): ROLE_ASSIGNMENTS_READ,
    ("vault", "roleAssignments", "write"): ROLE_ASSIGNMENTS_WRITE,
    ("vault", "roleAssignments", "delete"): ROLE_ASSIGNMENTS_DELETE,
    ("vault", "roleDefinitions", "read"): ROLE_DEFINITIONS_READ,
    ("vault", "roleDefinitions", "write"): ROLE_DEFINITIONS_WRITE,
    ("vault", "roleDefinitions", "delete"): ROLE_DEFINITIONS_DELETE,
    ("managedhsm", "roleAssignments", "read"): HSM_ROLE_ASSIGNMENTS_READ,
    ("managedhsm", "roleAssignments", "write"): HSM_ROLE_ASSIGNMENTS_WRITE,
    ("managedhsm", "roleAssignments", "delete"): HSM_ROLE_ASSIGNMENTS_DELETE,
    ("managedhsm", "roleDefinitions", "read"): HSM_ROLE_DEFINITIONS_READ,
    ("managedhsm", "roleDefinitions", "write"): HSM_ROLE_DEFINITIONS_WRITE,
    ("managedhsm", "roleDefinitions", "delete"): HSM_ROLE_DEFINITIONS_DELETE,
}

_NAMED = frozenset(
    v for k, v in dict(globals()).items()
    if k.isupper() and not k.startswith("_") and isinstance(v, str)
)
CONTROL = frozenset(v for v in _NAMED if v.startswith(f"{_A}/")) | _ARM
"""Control-plane actions (role management, vault management): a role grants them through
`actions`/`notActions`."""
VAULT_MANAGEMENT = _ARM
"""The control-plane actions on vaults and managed HSMs as ARM resources."""
DATA = (_NAMED - CONTROL) | frozenset(_HSM_OTHER)
"""Data actions: a role grants them through `dataActions`/`notDataActions`."""
ALL = DATA | CONTROL
MANAGED_HSM_DATA = frozenset(a for a in DATA if a.startswith(f"{_H}/"))
"""The data actions of a managed HSM pool (what its custom roles may name)."""
