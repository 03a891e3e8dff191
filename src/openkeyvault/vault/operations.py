"""Every operation the service answers, named once: the one table that routes, guards,
audit, metrics, throttling and usage read.

A row names an operation as Azure's diagnostic logs name it (`operationName` of an
AuditEvent record: `SecretGet`, `KeySign`, `VaultPut`, ...), and says

- the action that authorizes it (access/actions.py) and the scope it is checked at: for
  the data plane a path template relative to the vault (`/secrets/{name}`, `/` for the
  vault itself); for role management `{scope}`, the role scope the path names; for the
  management API where ARM checks it (`resource`, `subscription`, `resource group`,
  or `caller`: any authenticated principal, each listing filtering what it shows);
- the access-policy permission where the data action alone does not determine it (keys
  `get` and `list` share `keys/read`): the hint access/policies.py resolves (`permissions`);
- its throttling class (ops/throttle.py: a bucket of Azure's service limits);
- its billing meter (ops/usage.py), and whether it is a key operation, whose meter is
  decided per key (RSA 3072/4096 and EC keys count as advanced key operations).

Where Azure's list has no name for an operation served here, the row coins one in the
same style (noun, then verb) and says so. Names are unique; a route carries its row, and a
test checks that every route has one and that two routes of different meaning never
share one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from openkeyvault.access import actions as a
from openkeyvault.access import policies

# The vault's certificate contacts (one resource of the vault, vault/contacts.py).
CONTACTS = "/certificates/contacts"

# ---- throttling classes (Azure's service limits, azure-behavior.md §1) ----------------------
# Secret CREATE + Certificate IMPORT + Key IMPORT: one bucket
SECRET_CREATE = "secret_create"  # noqa: S105 (a bucket's name)
KEY_CREATE = "key_create"  # CREATE and RELEASE key
KEY_OTHER = "key_other"  # every other key transaction (weighted by key type)
VAULT_OTHER = "vault_other"  # all other transactions of a vault
MANAGEMENT = "management"  # ARM: not throttled by the vault limits
NONE = "none"  # never throttled (the token service, health, the CA certificate)
THROTTLE_CLASSES = frozenset({SECRET_CREATE, KEY_CREATE, KEY_OTHER, VAULT_OTHER, MANAGEMENT,
                              NONE})

# ---- billing meters (azure-behavior.md §7) ------------------------------------------------
OPERATIONS = "operations"  # standard operations
ADVANCED_KEY_OPERATIONS = "advanced_key_operations"  # RSA 3072/4096, EC: decided per key
CERTIFICATE_RENEWAL = "certificate_renewal"
KEY_ROTATION = "key_rotation"  # a scheduled rotation
METERS = frozenset({OPERATIONS, ADVANCED_KEY_OPERATIONS, CERTIFICATE_RENEWAL, KEY_ROTATION})

# ---- planes: who answers the operation ------------------------------------------------------
DATA = "data"  # a vault's or pool's host
MANAGEMENT_PLANE = "management"  # the management API (ARM) on the bare host
IDENTITY = "identity"  # the token service and the dev identity endpoints
SERVICE = "service"  # the node's own endpoints: health, the CA certificate, the dev clock
SCHEDULED = "scheduled"  # done by the scheduler, not asked by a request
OPERATOR = "operator"  # done by the `okv` command on the deployment (cli/acting.py)
NOTIFICATION = "notification"  # an event published to Event Grid subscribers (ops/events.py)

# ---- scopes that are not vault-relative paths --------------------------------------------
ROLE_SCOPE = "{scope}"  # role management: the scope the path names (`/`, `/keys/NAME`)
RESOURCE = "resource"  # ARM: the vault or pool named in the path
SUBSCRIPTION = "subscription"  # ARM: the subscription in the path
RESOURCE_GROUP = "resource group"  # ARM: the resource group in the path
CALLER = "caller"  # any authenticated caller; a listing shows what the caller may read
PUBLIC = "public"  # no authentication
DIRECTORY = "directory"  # the deployment's directory of principals: checked at `/`


@dataclass(frozen=True, slots=True)
class Operation:
    """One row of the table."""

    name: str  # Azure's operationName
    action: str | None  # the action checked (access/actions.py); None: no action decides
    scope: str  # where it is checked (module docstring)
    permission: str | None = None  # access-policy hint (policies.OPERATIONS), if needed
    throttle: str = VAULT_OTHER
    meter: str | None = OPERATIONS
    key_operation: bool = False  # metered per key type (advanced key operations)
    plane: str = DATA

    @property
    def permissions(self) -> frozenset[tuple[str, str]]:
        """The access-policy (kind, permission) pairs that allow it (access/policies.py)."""
        if self.action is None or self.plane != DATA:
            return frozenset()
        return policies.granting(self.action, self.permission)


def _secret(name: str, action: str, scope: str, permission: str | None = None,
            throttle: str = VAULT_OTHER) -> Operation:
    return Operation(name, action, scope, permission, throttle)


def _key(name: str, action: str, scope: str, permission: str | None = None,
         throttle: str = KEY_OTHER, key_operation: bool | None = None) -> Operation:
    """A key transaction; one that uses a named key is metered by its type."""
    return Operation(name, action, scope, permission, throttle,
                     key_operation=scope == KEY if key_operation is None else key_operation)


def _cert(name: str, action: str, scope: str, permission: str | None = None,
          throttle: str = VAULT_OTHER) -> Operation:
    return Operation(name, action, scope, permission, throttle)


def _role(name: str, action: str) -> Operation:
    # Role management is ARM's on a vault and part of a pool's hourly price: not metered
    # per operation; it does count against the vault's transactions.
    return Operation(name, action, ROLE_SCOPE, meter=None)


def _arm(name: str, action: str | None, scope: str) -> Operation:
    return Operation(name, action, scope, throttle=MANAGEMENT, meter=None,
                     plane=MANAGEMENT_PLANE)


def _operator(name: str, action: str, scope: str) -> Operation:
    return Operation(name, action, scope, throttle=NONE, meter=None, plane=OPERATOR)


def _unmetered(name: str, plane: str, scope: str = PUBLIC) -> Operation:
    return Operation(name, None, scope, throttle=NONE, meter=None, plane=plane)


SECRETS, SECRET = "/secrets", "/secrets/{name}"
KEYS, KEY = "/keys", "/keys/{name}"
CERTIFICATES, CERTIFICATE = "/certificates", "/certificates/{name}"
ISSUERS, ISSUER = "/certificates/issuers", "/certificates/issuers/{name}"

TABLE: tuple[Operation, ...] = (
    # ---- secrets ----
    _secret("SecretList", a.SECRETS_READ_METADATA, SECRETS, "list"),
    _secret("SecretSet", a.SECRETS_SET, SECRET, throttle=SECRET_CREATE),
    _secret("SecretDelete", a.SECRETS_DELETE, SECRET),
    _secret("SecretListVersions", a.SECRETS_READ_METADATA, SECRET, "list"),
    _secret("SecretBackup", a.SECRETS_BACKUP, SECRET),
    _secret("SecretRestore", a.SECRETS_RESTORE, SECRETS),
    _secret("SecretGet", a.SECRETS_GET, SECRET),
    _secret("SecretUpdate", a.SECRETS_UPDATE, SECRET),
    _secret("SecretListDeleted", a.SECRETS_READ_METADATA, SECRETS, "list"),
    _secret("SecretGetDeleted", a.SECRETS_READ_METADATA, SECRET, "get"),
    _secret("SecretPurge", a.SECRETS_PURGE, SECRET),
    _secret("SecretRecover", a.SECRETS_RECOVER, SECRET),
    # ---- keys ----
    _key("KeyList", a.KEYS_READ, KEYS, "list"),
    _key("KeyCreate", a.KEYS_CREATE, KEY, throttle=KEY_CREATE),
    _key("KeyImport", a.KEYS_IMPORT, KEY, throttle=SECRET_CREATE),
    _key("KeyDelete", a.KEYS_DELETE, KEY),
    _key("KeyListVersions", a.KEYS_READ, KEY, "list"),
    _key("KeyBackup", a.KEYS_BACKUP, KEY),
    _key("KeyRestore", a.KEYS_RESTORE, KEYS),
    # A rotation makes new key material, as a create does: it shares the create bucket.
    _key("KeyRotate", a.KEYS_ROTATE, KEY, throttle=KEY_CREATE),
    # (a rotation policy is no use of the key: metered as a standard operation)
    _key("KeyRotationPolicyGet", a.KEY_ROTATION_POLICIES_READ, KEY, key_operation=False),
    _key("KeyRotationPolicySet", a.KEY_ROTATION_POLICIES_WRITE, KEY, key_operation=False),
    _key("KeyGet", a.KEYS_READ, KEY, "get"),
    _key("KeyGetAttestation", a.KEYS_READ, KEY, "get"),  # coined: not in Azure's list
    _key("KeyUpdate", a.KEYS_UPDATE, KEY),
    _key("KeyListDeleted", a.KEYS_READ, KEYS, "list"),
    _key("KeyGetDeleted", a.KEYS_READ, KEY, "get"),
    _key("KeyPurge", a.KEYS_PURGE, KEY),
    _key("KeyRecover", a.KEYS_RECOVER, KEY),
    _key("KeyEncrypt", a.KEYS_ENCRYPT, KEY),
    _key("KeyDecrypt", a.KEYS_DECRYPT, KEY),
    _key("KeyWrap", a.KEYS_WRAP, KEY),
    _key("KeyUnwrap", a.KEYS_UNWRAP, KEY),
    _key("KeySign", a.KEYS_SIGN, KEY),
    _key("KeyVerify", a.KEYS_VERIFY, KEY),
    _key("KeyRelease", a.KEYS_RELEASE, KEY),
    # Random bytes belong to the vault, not to its keys collection. Coined (a Managed HSM
    # logs its random bytes; a vault has no name for them).
    Operation("RandomBytesGet", a.RNG, "/"),
    # ---- certificates ----
    _cert("CertificateList", a.CERTIFICATES_READ, CERTIFICATES, "list"),
    _cert("CertificateCreate", a.CERTIFICATES_CREATE, CERTIFICATE),
    _cert("CertificateImport", a.CERTIFICATES_IMPORT, CERTIFICATE, throttle=SECRET_CREATE),
    _cert("CertificateDelete", a.CERTIFICATES_DELETE, CERTIFICATE),
    _cert("CertificateListVersions", a.CERTIFICATES_READ, CERTIFICATE, "list"),
    _cert("CertificatePolicyGet", a.CERTIFICATES_READ, CERTIFICATE, "get"),
    _cert("CertificatePolicyUpdate", a.CERTIFICATES_UPDATE, CERTIFICATE),
    _cert("CertificatePendingGet", a.CERTIFICATES_READ, CERTIFICATE, "get"),
    _cert("CertificatePendingUpdate", a.CERTIFICATES_UPDATE, CERTIFICATE),
    _cert("CertificatePendingDelete", a.CERTIFICATES_DELETE, CERTIFICATE),
    _cert("CertificatePendingMerge", a.CERTIFICATES_CREATE, CERTIFICATE),
    _cert("CertificateBackup", a.CERTIFICATES_BACKUP, CERTIFICATE),
    _cert("CertificateRestore", a.CERTIFICATES_RESTORE, CERTIFICATES),
    _cert("CertificateGet", a.CERTIFICATES_READ, CERTIFICATE, "get"),
    _cert("CertificateUpdate", a.CERTIFICATES_UPDATE, CERTIFICATE),
    _cert("CertificateListDeleted", a.CERTIFICATES_READ, CERTIFICATES, "list"),
    _cert("CertificateGetDeleted", a.CERTIFICATES_READ, CERTIFICATE, "get"),
    _cert("CertificatePurge", a.CERTIFICATES_PURGE, CERTIFICATE),
    _cert("CertificateRecover", a.CERTIFICATES_RECOVER, CERTIFICATE),
    _cert("CertificateIssuersList", a.CERTIFICATE_CAS_READ, ISSUERS, "listissuers"),
    _cert("CertificateIssuerGet", a.CERTIFICATE_CAS_READ, ISSUER, "getissuers"),
    _cert("CertificateIssuerSet", a.CERTIFICATE_CAS_WRITE, ISSUER),
    _cert("CertificateIssuerUpdate", a.CERTIFICATE_CAS_WRITE, ISSUER),
    _cert("CertificateIssuerDelete", a.CERTIFICATE_CAS_DELETE, ISSUER),
    # Contacts have no read action: roles read them with certificates/read, access
    # policies with managecontacts.
    _cert("CertificateContactsGet", a.CERTIFICATES_READ, CONTACTS, "managecontacts"),
    _cert("CertificateContactsSet", a.CERTIFICATE_CONTACTS_WRITE, CONTACTS),
    _cert("CertificateContactsDelete", a.CERTIFICATE_CONTACTS_WRITE, CONTACTS),
    # ---- role management (a vault's, and a managed HSM pool's local RBAC) ----
    # Azure's vault logs have no names for these (ARM does them); coined. The action is the
    # vault's; a pool's is its managedHsm counterpart (access/actions.ROLE_MANAGEMENT).
    _role("RoleAssignmentList", a.ROLE_ASSIGNMENTS_READ),
    _role("RoleAssignmentGet", a.ROLE_ASSIGNMENTS_READ),
    _role("RoleAssignmentCreate", a.ROLE_ASSIGNMENTS_WRITE),
    _role("RoleAssignmentDelete", a.ROLE_ASSIGNMENTS_DELETE),
    _role("RoleDefinitionList", a.ROLE_DEFINITIONS_READ),
    _role("RoleDefinitionGet", a.ROLE_DEFINITIONS_READ),
    _role("RoleDefinitionSet", a.ROLE_DEFINITIONS_WRITE),
    _role("RoleDefinitionDelete", a.ROLE_DEFINITIONS_DELETE),
    # ---- a managed HSM pool's settings (settings.json; vault/hsmsettings.py) ----
    # Coined: Azure's logs name none. Azure defines no data action for settings either
    # (rbac.json's DataAction enum, the Managed HSM built-in roles); its docs have "an
    # authorized Managed HSM administrator" change them. Here the pool's role management
    # decides, at the pool's `/`: whoever may write its role assignments administers the
    # pool (it may assign itself Managed HSM Administrator), so it may change a setting;
    # whoever may read them may read the settings. Part of a pool's hourly price: not
    # metered per operation. A pool serves them only (POOL_ONLY).
    Operation("SettingList", a.HSM_ROLE_ASSIGNMENTS_READ, "/", meter=None),
    Operation("SettingGet", a.HSM_ROLE_ASSIGNMENTS_READ, "/", meter=None),
    Operation("SettingUpdate", a.HSM_ROLE_ASSIGNMENTS_WRITE, "/", meter=None),
    # ---- a managed HSM pool's security domain (securitydomain.json; vault/securitydomain.py)
    # Azure's logs name the download SecurityDomainBackup and its status
    # SecurityDomainBackupStatusGet. Part of a pool's hourly price: not metered. A pool
    # serves them only (POOL_ONLY).
    Operation("SecurityDomainBackup", a.HSM_SECURITY_DOMAIN_DOWNLOAD, "/", meter=None),
    Operation("SecurityDomainBackupStatusGet", a.HSM_SECURITY_DOMAIN_DOWNLOAD_READ, "/",
              meter=None),
    # The recovery side (a new pool's exchange key, the upload of a restore blob and its
    # status): coined after the download's names.
    Operation("SecurityDomainTransferKeyGet", a.HSM_SECURITY_DOMAIN_TRANSFER_KEY_READ, "/",
              meter=None),
    Operation("SecurityDomainRestore", a.HSM_SECURITY_DOMAIN_UPLOAD, "/", meter=None),
    Operation("SecurityDomainRestoreStatusGet", a.HSM_SECURITY_DOMAIN_UPLOAD_READ, "/",
              meter=None),
    # ---- scheduled (no request asks for them) ----
    Operation("KeyRotateIfDue", a.KEYS_ROTATE, KEY, throttle=NONE, meter=KEY_ROTATION,
              key_operation=True, plane=SCHEDULED),
    Operation("CertificateRenew", a.CERTIFICATES_CREATE, CERTIFICATE, throttle=NONE,
              meter=CERTIFICATE_RENEWAL, plane=SCHEDULED),
    # ---- the management API: vaults (Azure's names) ----
    _arm("VaultGet", a.VAULTS_READ, RESOURCE),
    _arm("VaultPut", a.VAULTS_WRITE, RESOURCE),
    _arm("VaultPatch", a.VAULTS_WRITE, RESOURCE),
    _arm("VaultDelete", a.VAULTS_DELETE, RESOURCE),
    # ... and coined where Azure's list has none:
    _arm("VaultAccessPolicyUpdate", a.VAULTS_ACCESS_POLICIES_WRITE, RESOURCE),
    _arm("VaultList", a.VAULTS_READ, CALLER),
    _arm("VaultListByResourceGroup", a.VAULTS_READ, CALLER),
    _arm("DeletedVaultGet", a.DELETED_VAULTS_READ, RESOURCE),
    _arm("DeletedVaultList", a.DELETED_VAULTS_READ, CALLER),
    _arm("DeletedVaultPurge", a.DELETED_VAULTS_PURGE, RESOURCE),
    _arm("VaultCheckNameAvailability", a.CHECK_NAME_AVAILABILITY, SUBSCRIPTION),
    # ---- the management API: managed HSM pools (coined, after the vaults' names) ----
    _arm("ManagedHsmGet", a.MANAGED_HSMS_READ, RESOURCE),
    _arm("ManagedHsmPut", a.MANAGED_HSMS_WRITE, RESOURCE),
    _arm("ManagedHsmPatch", a.MANAGED_HSMS_WRITE, RESOURCE),
    _arm("ManagedHsmDelete", a.MANAGED_HSMS_DELETE, RESOURCE),
    _arm("ManagedHsmList", a.MANAGED_HSMS_READ, CALLER),
    _arm("ManagedHsmListByResourceGroup", a.MANAGED_HSMS_READ, CALLER),
    _arm("DeletedManagedHsmGet", a.DELETED_MANAGED_HSMS_READ, RESOURCE),
    _arm("DeletedManagedHsmList", a.DELETED_MANAGED_HSMS_READ, CALLER),
    _arm("DeletedManagedHsmPurge", a.DELETED_MANAGED_HSMS_PURGE, RESOURCE),
    _arm("ManagedHsmCheckNameAvailability", a.CHECK_MHSM_NAME_AVAILABILITY, SUBSCRIPTION),
    # ---- the management API: ARM's basics (api/arm.py; coined) ----
    _arm("SubscriptionList", None, CALLER),
    _arm("SubscriptionGet", None, CALLER),
    _arm("TenantList", None, CALLER),
    _arm("ResourceGroupList", a.VAULTS_READ, CALLER),
    _arm("ResourceGroupGet", a.VAULTS_READ, RESOURCE_GROUP),
    _arm("ResourceGroupCheckExistence", a.VAULTS_READ, RESOURCE_GROUP),
    _arm("ResourceGroupPut", a.VAULTS_WRITE, RESOURCE_GROUP),
    _arm("ResourceGroupDelete", a.VAULTS_DELETE, RESOURCE_GROUP),
    _arm("ResourceList", a.VAULTS_READ, CALLER),
    _arm("ProviderOperationList", None, CALLER),
    Operation("CloudMetadataGet", None, PUBLIC, throttle=MANAGEMENT, meter=None,
              plane=MANAGEMENT_PLANE),
    # ---- the `okv` command's changes that no API serves (coined). Creating an Event Grid
    # subscription on a vault is Event Grid's own action in Azure; here it is a change of
    # the vault. The directory stands for Entra ID: who may assign roles at the whole
    # deployment may add principals and their credentials.
    _operator("VaultThrottleSet", a.VAULTS_WRITE, RESOURCE),
    _operator("EventSubscriptionPut", a.VAULTS_WRITE, RESOURCE),
    _operator("EventSubscriptionDelete", a.VAULTS_WRITE, RESOURCE),
    _operator("ServicePrincipalCreate", a.ROLE_ASSIGNMENTS_WRITE, DIRECTORY),
    _operator("ServicePrincipalDelete", a.ROLE_ASSIGNMENTS_DELETE, DIRECTORY),
    _operator("ServicePrincipalCredentialAdd", a.ROLE_ASSIGNMENTS_WRITE, DIRECTORY),
    _operator("ServicePrincipalCredentialRemove", a.ROLE_ASSIGNMENTS_WRITE, DIRECTORY),
    _operator("TrustedIssuerPut", a.ROLE_ASSIGNMENTS_WRITE, DIRECTORY),
    _operator("TrustedIssuerDelete", a.ROLE_ASSIGNMENTS_WRITE, DIRECTORY),
    _operator("SigningKeyRotate", a.ROLE_ASSIGNMENTS_WRITE, DIRECTORY),
    # ---- the token service (Azure's name) and its discovery documents (coined) ----
    _unmetered("Authentication", IDENTITY),
    _unmetered("OpenIdConfigurationGet", IDENTITY),
    _unmetered("SigningKeysGet", IDENTITY),
    # ---- the node's own endpoints (coined) ----
    _unmetered("HealthGet", SERVICE),
    _unmetered("IssuingCaGet", SERVICE),
    _unmetered("DevClockSet", SERVICE),
    _unmetered("MetricsGet", SERVICE),  # /metrics on the main port, for [metrics] token_file
    # ---- events published (Azure's names: each publish is an operation of its log) ----
    *(_unmetered(f"{label}{notice}EventGridNotification", NOTIFICATION)
      for label in ("Secret", "Key", "Certificate") for notice in ("NearExpiry", "Expired")),
    _unmetered("VaultAccessPolicyChangedEventGridNotification", NOTIFICATION),
)

BY_NAME: dict[str, Operation] = {op.name: op for op in TABLE}
assert len(BY_NAME) == len(TABLE), "operation names are unique"


def get(name: str) -> Operation:
    """The row named `name` (KeyError for a name not in the table)."""
    return BY_NAME[name]


# A managed HSM pool's key operations: the same rows, decided by Managed HSM's data actions
# at the same scopes (`/keys/NAME`, `/keys`, `/`), by the pool's local RBAC alone (no
# access policies). Its audit, throttling and usage read the same names. Its settings'
# rows (POOL_ONLY) already name Managed HSM's actions: a pool decides them as written.
POOL_ACTIONS: dict[str, str] = {
    "KeyList": a.HSM_KEYS_READ, "KeyGet": a.HSM_KEYS_READ,
    "KeyListVersions": a.HSM_KEYS_READ, "KeyGetAttestation": a.HSM_KEYS_READ,
    "KeyRotationPolicyGet": a.HSM_KEYS_READ,
    "KeyCreate": a.HSM_KEYS_CREATE, "KeyImport": a.HSM_KEYS_IMPORT,
    "KeyUpdate": a.HSM_KEYS_WRITE, "KeyRotationPolicySet": a.HSM_KEYS_WRITE,
    "KeyDelete": a.HSM_KEYS_DELETE, "KeyBackup": a.HSM_KEYS_BACKUP,
    "KeyRestore": a.HSM_KEYS_RESTORE, "KeyRotate": a.HSM_KEYS_ROTATE,
    "KeyListDeleted": a.HSM_DELETED_KEYS_READ, "KeyGetDeleted": a.HSM_DELETED_KEYS_READ,
    "KeyRecover": a.HSM_DELETED_KEYS_RECOVER, "KeyPurge": a.HSM_DELETED_KEYS_DELETE,
    "KeyEncrypt": a.HSM_KEYS_ENCRYPT, "KeyDecrypt": a.HSM_KEYS_DECRYPT,
    "KeyWrap": a.HSM_KEYS_WRAP, "KeyUnwrap": a.HSM_KEYS_UNWRAP, "KeySign": a.HSM_KEYS_SIGN,
    "KeyVerify": a.HSM_KEYS_VERIFY, "KeyRelease": a.HSM_KEYS_RELEASE,
    "RandomBytesGet": a.HSM_RNG,
    "SettingList": a.HSM_ROLE_ASSIGNMENTS_READ, "SettingGet": a.HSM_ROLE_ASSIGNMENTS_READ,
    "SettingUpdate": a.HSM_ROLE_ASSIGNMENTS_WRITE,
    "SecurityDomainBackup": a.HSM_SECURITY_DOMAIN_DOWNLOAD,
    "SecurityDomainBackupStatusGet": a.HSM_SECURITY_DOMAIN_DOWNLOAD_READ,
    "SecurityDomainTransferKeyGet": a.HSM_SECURITY_DOMAIN_TRANSFER_KEY_READ,
    "SecurityDomainRestore": a.HSM_SECURITY_DOMAIN_UPLOAD,
    "SecurityDomainRestoreStatusGet": a.HSM_SECURITY_DOMAIN_UPLOAD_READ,
}

# The rows only a managed HSM pool serves (no vault route names them): decided by Managed
# HSM data actions, by the pool's local RBAC alone, so no access-policy permission grants
# them.
POOL_ONLY: frozenset[str] = frozenset({"SettingList", "SettingGet", "SettingUpdate",
                                       "SecurityDomainBackup",
                                       "SecurityDomainBackupStatusGet",
                                       "SecurityDomainTransferKeyGet",
                                       "SecurityDomainRestore",
                                       "SecurityDomainRestoreStatusGet"})


POOL_OPERATIONS: dict[str, Operation] = {
    name: dataclasses.replace(get(name), action=action, permission=None)
    for name, action in POOL_ACTIONS.items()}


def for_pool(op: Operation) -> Operation:
    """The row as a managed HSM pool decides it (POOL_ACTIONS; KeyError for an operation a
    pool does not serve)."""
    return POOL_OPERATIONS[op.name]


# The key operations of POST /keys/{name}/{version}/{op}, by the path's last segment.
KEY_OPERATIONS: dict[str, Operation] = {
    "encrypt": get("KeyEncrypt"), "decrypt": get("KeyDecrypt"), "wrapkey": get("KeyWrap"),
    "unwrapkey": get("KeyUnwrap"), "sign": get("KeySign"), "verify": get("KeyVerify"),
}
